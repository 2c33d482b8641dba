"""Idempotency-Key on POST: replay, conflict, in-flight duplicates, expiry."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import api_client
from tenants.models import ApiKey, IdempotencyRecord, Invitation

BODY = {"name": "ci", "scopes": ["read"]}


def _post(client, body=BODY, key="k-1"):
    return client.post("/api/v1/api-keys", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_replay_returns_the_first_response_and_creates_nothing_new(tenant_a):
    first = _post(tenant_a.api)
    second = _post(tenant_a.api)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert ApiKey.objects.filter(name="ci").count() == 1


def test_same_key_with_another_body_is_422(tenant_a):
    _post(tenant_a.api)
    response = _post(tenant_a.api, body={"name": "other", "scopes": ["read"]})
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert ApiKey.objects.filter(name="other").count() == 0


def test_keys_are_scoped_to_the_credential(tenant_a):
    other = tenant_a.client_with_scopes("read", "admin")
    assert _post(tenant_a.api).status_code == 201
    assert _post(other).status_code == 201
    assert ApiKey.objects.filter(name="ci").count() == 2


def test_failed_request_does_not_use_up_the_key(tenant_a):
    bad = _post(tenant_a.api, body={"name": "", "scopes": ["read"]}, key="k-2")
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.filter(key="k-2").exists()
    good = _post(tenant_a.api, body={"name": "", "scopes": ["read"]}, key="k-2")
    assert good.status_code == 400  # re-validated, not replayed as stored


def test_in_flight_duplicate_is_409(tenant_a):
    from tenants.idempotency import request_fingerprint

    IdempotencyRecord.objects.create(
        tenant=tenant_a.tenant, principal=f"key:{tenant_a.key.prefix}", key="k-3",
        request_fingerprint=request_fingerprint("POST", "/api/v1/invitations", b'{"email":"a@b.co","role":"viewer"}'),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    response = tenant_a.api.generic("POST", "/api/v1/invitations", '{"email":"a@b.co","role":"viewer"}',
                                    content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert response.status_code == 409
    assert not Invitation.objects.exists()


def test_expired_record_is_not_replayed(tenant_a):
    _post(tenant_a.api, key="k-4")
    IdempotencyRecord.objects.filter(key="k-4").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _post(tenant_a.api, key="k-4").status_code == 201
    assert ApiKey.objects.filter(name="ci").count() == 2


def test_overlong_key_is_400(tenant_a):
    assert _post(tenant_a.api, key="x" * 300).status_code == 400


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_exactly_once(tenant_a):
    """Eight clients send the same POST at once: one creates, the others replay or get 409."""
    statuses, barrier = [], threading.Barrier(8)

    def send():
        barrier.wait()
        try:
            statuses.append(_post(api_client(tenant_a.plaintext), key="race").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(statuses) == 8
    assert ApiKey.objects.filter(name="ci").count() == 1
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
