"""A per-process cache of verified API keys (with their tenant) and service tokens, so a
busy credential costs no database query.

Revocation, expiry and tenant changes still take effect on the next request: every
change to a key, a service token or a tenant bumps a global *credential epoch*, and a cached entry is
used only while the epoch is the one read before the entry was loaded. The epoch
lives in Redis when it is configured; without Redis Switchyard runs on one host (the
broker is a folder too), so a file in the data folder serves. Reading the epoch costs
one Redis round trip, which the rate limiter shares (see `epoch_and_rate_hit`).
"""

import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from tenants.models import ApiKey, ServiceToken
from tenants.rate_limits import redis_client

EPOCH_REDIS_KEY = "switchyard:credential-epoch"
# An entry is reloaded at least this often, whatever the epoch says (belt and braces).
MAX_AGE_SECONDS = 300.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Entry:
    key: ApiKey | ServiceToken  # service tokens are filed under "svc:<prefix>"
    epoch: str
    loaded_at: float


_entries: dict[str, Entry] = {}
_lock = threading.Lock()


def _epoch_file():
    return settings.DATA_DIR / "credential-epoch"


def read_epoch() -> str:
    if settings.REDIS_URL:
        value = redis_client().get(EPOCH_REDIS_KEY)
        return value.decode() if value else "0"
    try:
        return str(os.stat(_epoch_file()).st_mtime_ns)
    except FileNotFoundError:
        return "0"


def bump_epoch() -> None:
    """Invalidate every process's cached credentials: call after any change to a key, a
    service token or a tenant."""
    if settings.REDIS_URL:
        redis_client().incr(EPOCH_REDIS_KEY)
        return
    path = _epoch_file()
    path.touch()
    # Two bumps within the file system's timestamp resolution must still differ.
    now = time.time_ns()
    stat = os.stat(path)
    os.utime(path, ns=(now, max(now, stat.st_mtime_ns + 1)))


def credentials_changed() -> None:
    """Call inside the transaction that changes a key or a tenant.

    Bumps now (so this process, and a test's transaction, sees it at once) and again
    after commit (so a request that cached the old row between the two bumps is
    refreshed): whoever reads the committed change meets a new epoch.
    """
    from django.db import transaction

    bump_epoch()
    transaction.on_commit(bump_epoch)


# One atomic command: read the epoch, count the request, and give a new window its expiry.
_EPOCH_AND_COUNT = """
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {redis.call('GET', KEYS[1]), count}
"""


@lru_cache(maxsize=1)
def _epoch_and_count_script():
    return redis_client().register_script(_EPOCH_AND_COUNT)


def epoch_and_rate_hit(bucket: str | None, ttl: int) -> tuple[str, int | None]:
    """The current epoch and, when a rate bucket is given, its count after this request,
    in one Redis command (without Redis: the file's epoch, and no count)."""
    if not settings.REDIS_URL:
        return read_epoch(), None
    if bucket is None:
        return read_epoch(), None
    epoch, count = _epoch_and_count_script()(keys=[EPOCH_REDIS_KEY, bucket], args=[ttl])
    return (epoch.decode() if epoch else "0"), int(count)


def cached(prefix: str) -> Entry | None:
    entry = _entries.get(prefix)
    if entry is None or time.monotonic() - entry.loaded_at > MAX_AGE_SECONDS:
        return None
    return entry


def remember(prefix: str, key: ApiKey | ServiceToken, epoch: str) -> None:
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[prefix] = Entry(key=key, epoch=epoch, loaded_at=time.monotonic())


def forget_all() -> None:
    with _lock:
        _entries.clear()
