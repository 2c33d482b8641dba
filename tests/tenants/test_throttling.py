"""Per-credential rate limits hold under concurrent requests."""

import threading

import pytest
from django.db import connection
from django.test import override_settings

from tests.conftest import api_client
from tenants.rate_limits import parse_rate


def test_parse_rate():
    assert parse_rate("1200/minute") == (1200, 60)
    with pytest.raises(ValueError):
        parse_rate("fast")


@override_settings(API_RATE_LIMIT="3/hour")
def test_limit_gives_429_problem_with_retry_after(tenant_a, tenant_b):
    for _ in range(3):
        assert tenant_a.api.get("/api/v1/tenant").status_code == 200
    response = tenant_a.api.get("/api/v1/tenant")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    # Another credential has its own budget.
    assert tenant_b.api.get("/api/v1/tenant").status_code == 200


def _hammer(plaintext: str, requests: int, threads: int) -> list[int]:
    statuses, lock, barrier = [], threading.Lock(), threading.Barrier(threads)

    def worker():
        client = api_client(plaintext)
        barrier.wait()
        try:
            for _ in range(requests // threads):
                status = client.get("/api/v1/tenant").status_code
                with lock:
                    statuses.append(status)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return statuses


@pytest.mark.django_db(transaction=True)
@override_settings(API_RATE_LIMIT="25/hour")
def test_concurrent_requests_never_exceed_the_limit(tenant_a):
    statuses = _hammer(tenant_a.plaintext, requests=60, threads=6)
    assert len(statuses) == 60
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@override_settings(API_RATE_LIMIT="25/hour")
def test_concurrent_requests_never_exceed_the_limit_in_redis(tenant_a):
    from django.conf import settings

    assert settings.REDIS_URL  # each test's key is new, so its buckets start at zero
    statuses = _hammer(tenant_a.plaintext, requests=60, threads=6)
    assert statuses.count(200) == 25 and statuses.count(429) == 35
