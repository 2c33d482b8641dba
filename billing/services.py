"""Billing's writes. Metering: `usage_ingest` (every usage event enters here: the API, the
collectors) and `usage_event_purge` (retention)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.ingest import (
    active_meters,
    deployments_by_public_id,
    lock_closable_periods,
    merge_rollups,
    raw_events_of_hours,
    store_events,
)
from billing.metering import (
    RECOMPUTED_AGGREGATIONS,
    TOKEN_EVENT_TYPES,
    TOKEN_SOURCE_SCRAPE,
    Duplicate,
    EventValidator,
    MeterSpec,
    Rejection,
    ValidEvent,
    aggregate,
    first_occurrences,
    month_of,
    rollup_deltas,
    shapes_for,
    token_source_of,
)
from billing.models import ClosedPeriod, UsageEvent
from scheduler.models import Deployment


@dataclass(frozen=True)
class IngestResult:
    """What became of a batch: every event is exactly one of accepted, duplicate or rejected.

    `duplicates`: (index, id) of events stored before, or earlier in the same batch.
    `rejected`: (index, id or None, reason), in batch order.
    """

    accepted: int
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def meter_specs() -> list[MeterSpec]:
    """The active meters, as the pure core takes them."""
    return active_meters()


def usage_ingest(raw_events: list, *, now: datetime | None = None) -> IngestResult:
    """Validate a batch of usage events (decoded CloudEvents), store each new one exactly once,
    and add it to the usage rollups — in one transaction.

    Each event is judged on its own: a bad one is rejected with its index and a reason, the rest
    go on. An event whose (source, id) is stored already, or appeared earlier in the batch, is a
    duplicate. The subject is a deployment's id (a deleted deployment is still metered); its
    tenant is the deployment's. Token events must come from the deployment's token-usage
    source. An event is billed in its own month, or — if its tenant's month is closed — in the
    month open now (an adjustment).
    """
    now = now or timezone.now()
    meters = meter_specs()
    validate = EventValidator(now=now, max_age=timedelta(days=settings.USAGE_MAX_AGE_DAYS),
                              known_types=shapes_for(meters))
    valid: list[ValidEvent] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        result = validate(index, raw)
        if type(result) is Rejection:
            rejected.append(result)
        else:
            valid.append(result)
    placed = _place_on_deployments(valid, rejected)
    firsts, duplicates = first_occurrences(placed)
    with transaction.atomic(savepoint=False):
        _set_billing_periods(firsts, now)
        inserted = store_events(firsts, received_at=now)
        accepted = []
        for event in firsts:
            if (event.source, event.id) in inserted:
                accepted.append(event)
            else:
                duplicates.append(Duplicate(event.index, event.id))
        _add_to_rollups(accepted, meters, now)
    duplicates.sort()
    rejected.sort()
    return IngestResult(accepted=len(accepted), duplicates=duplicates, rejected=rejected)


def _place_on_deployments(events: list[ValidEvent], rejected: list[Rejection]) -> list[ValidEvent]:
    """Set each event's deployment and tenant from its subject, in one query; events naming no
    deployment, or reporting tokens from the wrong source, go to `rejected`."""
    subject_ids: dict[str, uuid.UUID] = {}
    for subject in {event.subject for event in events}:
        try:
            subject_ids[subject] = uuid.UUID(subject)
        except ValueError:
            continue
    by_public_id = deployments_by_public_id(set(subject_ids.values()))
    # A batch has few distinct (subject, source, type): each is judged once.
    outcomes: dict[tuple[str, str, str], tuple[int, int] | str] = {}
    placed = []
    for event in events:
        outcome = outcomes.get((event.subject, event.source, event.type))
        if outcome is None:
            outcome = outcomes[(event.subject, event.source, event.type)] = _placement(
                event, by_public_id.get(subject_ids.get(event.subject)))
        if type(outcome) is str:
            rejected.append(Rejection(event.index, event.id, outcome))
        else:
            event.deployment_id, event.tenant_id = outcome
            placed.append(event)
    return placed


def _placement(event: ValidEvent, deployment: tuple[int, int, str] | None) -> tuple[int, int] | str:
    """(deployment id, tenant id) for events like this one, or the reason they are refused."""
    if deployment is None:
        return f"unknown deployment {event.subject!r}: the subject must be the id of one of the fleet's deployments"
    deployment_id, tenant_id, token_source = deployment
    if event.type in TOKEN_EVENT_TYPES and token_source_of(event.source) != token_source:
        return _wrong_token_source(event, token_source)
    return deployment_id, tenant_id


def _wrong_token_source(event: ValidEvent, token_source: str) -> str:
    if token_source == TOKEN_SOURCE_SCRAPE:
        return (f"deployment {event.subject} takes its token usage from its replicas' metrics "
                f"(token_usage_source scrape), so token events from {event.source!r} are refused and no token "
                f"is billed twice; set its token_usage_source to external to report tokens here")
    return (f"deployment {event.subject} takes its token usage from an external reporter "
            f"(token_usage_source external), so the replica scrape's token events are refused and no token is "
            f"billed twice")


def _set_billing_periods(events: list[ValidEvent], now: datetime) -> None:
    """Move events whose month is closed for their tenant to the month open now (each starts in its
    own month). Holds the billing-period lock shared from before reading ClosedPeriod to the commit
    (when a month may be closing), so a period cannot close between the read and the write."""
    months = {event.billing_period for event in events}
    lock_closable_periods(months)
    current = month_of(now)
    earlier = {month for month in months if month < current}
    if not earlier:
        return
    closed = set(ClosedPeriod.objects.filter(tenant_id__in={event.tenant_id for event in events}, period__in=earlier)
                 .values_list("tenant_id", "period"))
    if closed:
        for event in events:
            if (event.tenant_id, event.billing_period) in closed:
                event.billing_period = current


def _add_to_rollups(accepted: list[ValidEvent], meters: list[MeterSpec], now: datetime) -> None:
    """Merge the new events' deltas into the rollups; recompute the keys of unique-count and
    latest meters from their raw events (which now include the new ones)."""
    deltas = rollup_deltas(accepted, meters)
    merge_rollups({key: delta for key, delta in deltas.items()
                   if delta.aggregation not in RECOMPUTED_AGGREGATIONS}, now=now)
    recompute = [key for key, delta in deltas.items() if delta.aggregation in RECOMPUTED_AGGREGATIONS]
    if recompute:
        recomputed_meters = [meter for meter in meters if meter.aggregation in RECOMPUTED_AGGREGATIONS]
        raw = raw_events_of_hours(recompute, {meter.id: meter.event_type for meter in meters})
        totals = aggregate(raw, recomputed_meters)
        merge_rollups({key: totals[key] for key in recompute}, now=now, replace=True)


def usage_event_purge(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete raw usage events older than SWITCHYARD_USAGE_RETENTION_DAYS; rollups are kept.

    Per deployment, through the (deployment, time) index, in short transactions of at most
    `batch_size` rows, so the purge never holds a large lock or a long transaction. Retention
    is at least the accepted age, so a purged event's id can no longer be sent again.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.USAGE_RETENTION_DAYS)
    deleted = 0
    for deployment_id in Deployment.all_objects.order_by("pk").values_list("pk", flat=True):
        while True:
            ids = list(UsageEvent.objects.filter(deployment_id=deployment_id, time__lt=cutoff)
                       .values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            count, _ = UsageEvent.objects.filter(pk__in=ids).delete()
            deleted += count
    return deleted
