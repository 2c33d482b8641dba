"""The database mechanics of usage ingestion: store new events once, merge rollups, lock periods.

Called by `billing.services.usage_ingest` inside its transaction; nothing here commits.

PostgreSQL: the batch is `COPY`ed into a session-local staging table, then one
`INSERT … SELECT … ON CONFLICT (source, event_id) DO NOTHING RETURNING` moves it into
billing_usageevent; the rows it returns are the events that are new. Rows are inserted in
(source, id) order, so two transactions storing overlapping batches take the unique index's
entries in the same order and cannot deadlock; a transaction that meets an uncommitted copy
of its event waits for it, and then skips it (committed) or stores it (rolled back): an event
is counted once, and an id is never used up by a write that failed.

SQLite: the same `INSERT … ON CONFLICT DO NOTHING RETURNING` from a VALUES list (SQLite
≥ 3.35); its writers are serialised (IMMEDIATE transactions), which gives the same answer.
"""

from __future__ import annotations

import json
import uuid
import weakref
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

import orjson
import psycopg
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.metering import BILLING_PERIOD_LOCK_KEY, MeterSpec, RollupDelta, RollupKey, ValidEvent, month_of
from billing.models import Meter, UsageEvent
from scheduler.models import Deployment

# --- what a batch reads ---------------------------------------------------------------------------
# Two small queries per batch, in SQL: building them through the ORM cost more CPU than running them.


def active_meters() -> list[MeterSpec]:
    """The active meters, as the pure core takes them."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, slug, event_type, aggregation, value_property, dimensions, per_tier "
                       f"FROM {Meter._meta.db_table} WHERE active ORDER BY id")
        rows = cursor.fetchall()
    return [MeterSpec(id=pk, slug=slug, event_type=event_type, aggregation=aggregation, value_property=value_property,
                      dimensions=tuple(json.loads(dimensions) if isinstance(dimensions, str) else dimensions or ()),
                      per_tier=bool(per_tier))
            for pk, slug, event_type, aggregation, value_property, dimensions, per_tier in rows]


def deployments_by_public_id(public_ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int, str]]:
    """public id → (id, tenant id, token_usage_source) of these deployments, deleted ones included."""
    if not public_ids:
        return {}
    select = f"SELECT public_id, id, tenant_id, token_usage_source FROM {Deployment._meta.db_table} WHERE public_id"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"{select} = ANY(%s)", [list(public_ids)])
        else:  # SQLite keeps UUIDs as 32 hex digits
            cursor.execute(f"{select} IN ({', '.join(['%s'] * len(public_ids))})", [i.hex for i in public_ids])
        rows = cursor.fetchall()
    return {public_id if isinstance(public_id, uuid.UUID) else uuid.UUID(public_id): (pk, tenant_id, source)
            for public_id, pk, tenant_id, source in rows}


# Only months before the current one can be closed, and a transaction outlives the turn of a month
# by far less than this margin: a batch whose events are all in a later month needs no lock.
CLOSABLE_MARGIN = timedelta(hours=1)


def lock_closable_periods(months: Iterable[date]) -> None:
    """Hold the billing-period lock (billing.metering.BILLING_PERIOD_LOCK_KEY) shared until the
    transaction ends, if any of `months` may be closing now. PostgreSQL only: SQLite's writers are
    serialised already. Take it before reading ClosedPeriod."""
    if connection.vendor != "postgresql":
        return
    open_month = month_of(timezone.now() + CLOSABLE_MARGIN)
    if any(month < open_month for month in months):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [BILLING_PERIOD_LOCK_KEY])


# --- storing events -------------------------------------------------------------------------------

EVENT_COLUMNS = "source, event_id, type, tenant_id, deployment_id, time, billing_period, data"
STAGING_TABLE = "billing_usageevent_staging"
# Temporary: one per database session, invisible to others, not WAL-logged, emptied at commit
# (and by the rollback of a transaction that failed after its COPY).
STAGING_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} (
    source varchar(255) NOT NULL,
    event_id varchar(255) NOT NULL,
    type varchar(100) NOT NULL,
    tenant_id bigint NOT NULL,
    deployment_id bigint NOT NULL,
    time timestamptz NOT NULL,
    billing_period date NOT NULL,
    data jsonb NOT NULL
) ON COMMIT DELETE ROWS"""
COPY_SQL = f"COPY {STAGING_TABLE} ({EVENT_COLUMNS}) FROM STDIN"
MOVE_SQL = f"""
INSERT INTO billing_usageevent ({EVENT_COLUMNS}, received_at)
SELECT {EVENT_COLUMNS}, %s FROM {STAGING_TABLE} ORDER BY source, event_id
ON CONFLICT (source, event_id) DO NOTHING
RETURNING source, event_id"""


class _StagingState:
    """What is known of one database session's staging table."""

    def __init__(self):
        self.created = False  # the CREATE was committed (a rolled-back one takes the table with it)
        self.used = False  # it may hold an earlier batch of this transaction (emptied only at commit)


# psycopg connection → its staging table's state (a reconnect is a new session, with no table).
_staging: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def store_events(events: Sequence[ValidEvent], *, received_at: datetime) -> set[tuple[str, str]]:
    """Insert the events that are not stored yet; the (source, id) of those inserted.

    `events` must have distinct (source, id) and be placed (tenant, deployment, billing period).
    """
    if not events:
        return set()
    if connection.vendor == "postgresql":
        return _store_postgresql(events, received_at)
    return _store_sqlite(events, received_at)


def _store_postgresql(events: Sequence[ValidEvent], received_at: datetime) -> set[tuple[str, str]]:
    connection.ensure_connection()
    session = connection.connection
    state = _staging.get(session)
    if state is None:
        state = _staging[session] = _StagingState()
    # A server-side-binding cursor: the move is prepared once per session, not planned per batch.
    with psycopg.Cursor(session) as cursor:
        if not state.created:
            cursor.execute(STAGING_DDL)
        if state.used:
            # A second batch in one transaction (a caller's larger transaction; tests): its first
            # batch is still staged. After a rollback this runs once more than needed, on an empty table.
            cursor.execute(f"DELETE FROM {STAGING_TABLE}")
        state.used = True
        transaction.on_commit(lambda: _committed(state))
        with cursor.copy(COPY_SQL) as copy:
            copy.write(copy_text(events))
        cursor.execute(MOVE_SQL, (received_at,), prepare=True)
        return set(cursor.fetchall())


def _committed(state: _StagingState) -> None:
    state.created, state.used = True, False


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(text: str) -> str:
    if "\\" in text or not text.isprintable():
        return text.translate(_COPY_ESCAPES)
    return text


def copy_text(events: Iterable[ValidEvent]) -> bytes:
    """The events as COPY text-format rows (tab-separated, backslash escapes) in EVENT_COLUMNS order."""
    parts = []
    append = parts.append
    # A batch has few distinct sources, types, deployments and periods: each is formatted once.
    sources: dict[str, str] = {}
    placements: dict[tuple, str] = {}
    periods: dict[date, str] = {}
    for event in events:
        source = sources.get(event.source)
        if source is None:
            source = sources[event.source] = _copy_field(event.source)
        placement_key = (event.type, event.tenant_id, event.deployment_id)
        placement = placements.get(placement_key)
        if placement is None:
            placement = placements[placement_key] = \
                f"{_copy_field(event.type)}\t{event.tenant_id}\t{event.deployment_id}"
        period = periods.get(event.billing_period)
        if period is None:
            period = periods[event.billing_period] = event.billing_period.isoformat()
        # JSON text has no raw tabs or newlines (orjson escapes them); only backslashes need doubling.
        data = event.data_json
        append(f"{source}\t{_copy_field(event.id)}\t{placement}\t{event.time_text or event.time.isoformat()}"
               f"\t{period}\t".encode())
        append(data.replace(b"\\", b"\\\\") if b"\\" in data else data)
        append(b"\n")
    return b"".join(parts)


SQLITE_ROWS_PER_INSERT = 500  # 9 parameters a row: well under SQLite's 32,766


def _store_sqlite(events: Sequence[ValidEvent], received_at: datetime) -> set[tuple[str, str]]:
    ops = connection.ops
    received = ops.adapt_datetimefield_value(received_at)
    inserted: set[tuple[str, str]] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(events), SQLITE_ROWS_PER_INSERT):
            chunk = events[start:start + SQLITE_ROWS_PER_INSERT]
            params = []
            for event in chunk:
                params += [event.source, event.id, event.type, event.tenant_id, event.deployment_id,
                           ops.adapt_datetimefield_value(event.time), ops.adapt_datefield_value(event.billing_period),
                           event.data_json.decode(), received]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(f"INSERT INTO billing_usageevent ({EVENT_COLUMNS}, received_at) VALUES {values} "
                           f"ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id", params)
            inserted.update((source, event_id) for source, event_id in cursor.fetchall())
    return inserted


# --- rollups --------------------------------------------------------------------------------------

ROLLUP_COLUMNS = ("tenant_id, deployment_id, meter_id, tier, dimensions_key, dimensions, hour, billing_period, "
                  "quantity, event_count, latest_time, updated_at")
ROLLUP_KEY = "deployment_id, meter_id, tier, dimensions_key, hour, billing_period"
# How a stored row takes a delta, by how the delta merges (billing.metering's table).
MERGE_ADD = "quantity = r.quantity + excluded.quantity, event_count = r.event_count + excluded.event_count"
MERGE_MAX = "quantity = {greatest}(r.quantity, excluded.quantity), event_count = r.event_count + excluded.event_count"
MERGE_REPLACE = "quantity = excluded.quantity, event_count = excluded.event_count, latest_time = excluded.latest_time"


def merge_rollups(deltas: dict[RollupKey, RollupDelta], *, now: datetime, replace: bool = False) -> None:
    """Merge deltas into UsageRollup: added (sum, count), the greater (max), or — `replace` — the
    delta is the key's whole value (recomputed unique counts and latest values).

    One INSERT … ON CONFLICT DO UPDATE per kind of merge, rows in key order (concurrent batches
    lock shared rollup rows in the same order, so they cannot deadlock on them).
    """
    groups: dict[str, list[tuple[RollupKey, RollupDelta]]] = {}
    for key, delta in sorted(deltas.items(), key=lambda item: item[0][1:]):
        merge = MERGE_REPLACE if replace else MERGE_MAX if delta.aggregation == "max" else MERGE_ADD
        groups.setdefault(merge, []).append((key, delta))
    for merge, rows in groups.items():
        if connection.vendor == "postgresql":
            _upsert_rollups_postgresql(merge, rows, now)
        else:
            _upsert_rollups(merge.format(greatest="MAX"), rows, now)


# Arrays bound server-side: one statement text whatever the number of rows.
_UPSERT_FROM_ARRAYS = (
    f"INSERT INTO billing_usagerollup AS r ({ROLLUP_COLUMNS}) "
    "SELECT tenant_id, deployment_id, meter_id, tier, dimensions_key, dimensions::jsonb, hour, billing_period, "
    "quantity, event_count, latest_time, %s "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], "
    "%s::date[], %s::numeric[], %s::bigint[], %s::timestamptz[]) WITH ORDINALITY "
    "AS v(tenant_id, deployment_id, meter_id, tier, dimensions_key, dimensions, hour, billing_period, quantity, "
    "event_count, latest_time, position) ORDER BY position "
    f"ON CONFLICT ({ROLLUP_KEY}) DO UPDATE SET {{merge}}, updated_at = excluded.updated_at")


def _upsert_rollups_postgresql(merge: str, rows: list[tuple[RollupKey, RollupDelta]], now: datetime) -> None:
    columns = [[], [], [], [], [], [], [], [], [], [], []]
    for key, delta in rows:
        for column, value in zip(columns, (
                key.tenant_id, key.deployment_id, key.meter_id, key.tier, key.dimensions_key,
                orjson.dumps(delta.dimensions).decode(), key.hour, key.billing_period, delta.quantity,
                delta.event_count, delta.latest_time), strict=True):
            column.append(value)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_UPSERT_FROM_ARRAYS.format(merge=merge.format(greatest="GREATEST")), [now, *columns],
                       prepare=True)


def _upsert_rollups(merge: str, rows: list[tuple[RollupKey, RollupDelta]], now: datetime) -> None:
    ops = connection.ops
    updated = ops.adapt_datetimefield_value(now)
    params = []
    for key, delta in rows:
        params += [key.tenant_id, key.deployment_id, key.meter_id, key.tier, key.dimensions_key,
                   orjson.dumps(delta.dimensions).decode(), ops.adapt_datetimefield_value(key.hour),
                   ops.adapt_datefield_value(key.billing_period), ops.adapt_decimalfield_value(delta.quantity, 30, 9),
                   delta.event_count, ops.adapt_datetimefield_value(delta.latest_time), updated]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO billing_usagerollup AS r ({ROLLUP_COLUMNS}) VALUES {values} "
                       f"ON CONFLICT ({ROLLUP_KEY}) DO UPDATE SET {merge}, updated_at = excluded.updated_at", params)


def raw_events_of_hours(keys: Iterable[RollupKey], event_types: dict[int, str]) -> list[ValidEvent]:
    """The stored events that may count towards these rollup keys: same deployment, event type
    (`event_types`: meter id → type), hour and billing period. For recomputing keys that cannot
    be merged from deltas."""
    groups = {(key.deployment_id, event_types[key.meter_id], key.hour, key.billing_period) for key in keys}
    if not groups:
        return []
    condition = Q()
    for deployment_id, event_type, hour, period in sorted(groups):
        condition |= Q(deployment_id=deployment_id, type=event_type, time__gte=hour,
                       time__lt=hour + timedelta(hours=1), billing_period=period)
    rows = UsageEvent.objects.filter(condition).values_list(
        "source", "event_id", "type", "tenant_id", "deployment_id", "time", "billing_period", "data")
    return [ValidEvent(index=-1, id=event_id, source=source, type=event_type, subject="", time=time, data=data,
                       data_json=b"", tenant_id=tenant_id, deployment_id=deployment_id, billing_period=period)
            for source, event_id, event_type, tenant_id, deployment_id, time, period, data in rows]
