"""Rate-limit counters: atomic, shared by every process.

Fixed windows: each credential may make N requests per window. The counter is a
Redis INCR when Redis is configured, else an upsert in the database; either way
the increment and the read are one atomic step, so concurrent requests from many
processes cannot all slip under the limit.
"""

import time
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.utils import timezone

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'1200/minute' → (1200, 60)."""
    count, _, period = rate.partition("/")
    try:
        return int(count), PERIODS[period]
    except (ValueError, KeyError):
        raise ValueError(f"Bad rate {rate!r}: expected '<count>/<second|minute|hour|day>'") from None


@lru_cache(maxsize=1)
def redis_client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def _hit_redis(bucket: str, ttl: int) -> int:
    pipe = redis_client().pipeline(transaction=True)
    pipe.incr(bucket)
    pipe.expire(bucket, ttl, nx=True)
    count, _ = pipe.execute()
    return int(count)


def _hit_database(bucket: str, ttl: int) -> int:
    expires_at = timezone.now() + timezone.timedelta(seconds=ttl)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants_ratecounter (bucket, count, expires_at) VALUES (%s, 1, %s) "
            "ON CONFLICT (bucket) DO UPDATE SET count = tenants_ratecounter.count + 1 RETURNING count",
            [bucket, expires_at],
        )
        return cursor.fetchone()[0]


def rate_counter_hit(bucket: str, ttl: int) -> int:
    """Add one to the bucket's counter; return the new count."""
    return _hit_redis(bucket, ttl) if settings.REDIS_URL else _hit_database(bucket, ttl)


def rate_bucket(principal: str, rate: str | None = None) -> tuple[str, int, float]:
    """(bucket name, its TTL, seconds until the window ends) for a principal, now, under `rate`
    (default: the API's)."""
    _limit, period = parse_rate(rate or settings.API_RATE_LIMIT)
    now = time.time()
    window = int(now // period)
    return f"throttle:{principal}:{period}:{window}", period * 2, (window + 1) * period - now


def attempts_exceeded(principals: list[str], rate: str) -> float | None:
    """Count one attempt for each principal (e.g. the client's address and the account it names)
    under `rate`; the seconds to wait when any of them is over its limit, else None."""
    limit, _period = parse_rate(rate)
    wait = None
    for principal in principals:
        bucket, ttl, retry_after = rate_bucket(principal, rate)
        if rate_counter_hit(bucket, ttl) > limit:
            wait = max(wait or 0.0, retry_after)
    return wait


# Where API-key authentication leaves the count it already took, in the Redis round trip
# it makes anyway (tenants.key_cache.epoch_and_rate_hit), so the throttle need not make another.
COUNTED_ATTRIBUTE = "switchyard_rate_count"


def rate_counter_purge() -> int:
    """Drop database counters of windows that are over (Redis expires its own)."""
    from tenants.models import RateCounter

    deleted, _ = RateCounter.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
