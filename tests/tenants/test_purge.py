from datetime import timedelta

from django.utils import timezone

from tenants.models import RateCounter
from tenants.tasks import idempotency_purge_task, rate_counter_purge_task


def test_expired_rate_counters_are_purged_and_live_ones_kept(db):
    now = timezone.now()
    RateCounter.objects.create(bucket="old", count=3, expires_at=now - timedelta(seconds=1))
    RateCounter.objects.create(bucket="live", count=3, expires_at=now + timedelta(minutes=1))
    assert rate_counter_purge_task() == 1
    assert list(RateCounter.objects.values_list("bucket", flat=True)) == ["live"]


def test_expired_idempotency_records_are_purged(tenant_a):
    tenant_a.api.post("/api/v1/api-keys", {"name": "a", "scopes": ["read"]}, format="json",
                      HTTP_IDEMPOTENCY_KEY="old")
    from tenants.models import IdempotencyRecord

    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert idempotency_purge_task() == 1
    assert not IdempotencyRecord.objects.exists()
