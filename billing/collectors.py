"""The metering collectors: services run by Celery beat (billing/tasks.py) that turn the fleet
into usage events, through `billing.services.usage_ingest` like every other event.

- `accelerator_usage_collect`: every closed minute since the committed watermark, one
  `accelerator.usage` event per replica that held accelerators in it (billing/accelerators.py).
  Each minute's events and the watermark's advance are one transaction, so a run killed
  half-way is taken up by the next run at the first minute it did not commit, and the
  deterministic ids (`<replica>:<minute>`) make any minute computed twice count once.
- `replica_metrics_collect`: every serving replica's /metrics, through its fleet driver, into
  an `inference.request` event (token and request deltas, for deployments whose token usage
  comes from the scrape) and the deployment's LatencyRollup of the minute and LatencyHourRollup
  of the hour (histogram deltas, `latency_delta_add`). The events, the rollups and the replica's
  ScrapeState are one transaction per replica.

docs/metering.md ("Collectors") states the policies: which replica states are billed, where the
first run starts, how counter resets are handled.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from billing import latency
from billing import scrape as scrape_core
from billing.accelerators import MINUTE, Holding, minute_floor, minutes, rfc3339, usage_events
from billing.metering import ACCELERATOR_COLLECTOR_SOURCE, SCRAPE_COLLECTOR_SOURCE
from billing.metrics import floor_hour
from billing.models import CollectorWatermark, LatencyHourRollup, LatencyRollup, ScrapeState
from billing.services import usage_ingest
from scheduler.fleet.base import SERVING_STATES, FleetDriver, FleetError
from scheduler.models import Deployment, Replica
from scheduler.reconcile import fleet_driver

logger = logging.getLogger(__name__)

ACCELERATOR_WATERMARK = "accelerator-seconds"
# A minute is metered once it closed this long ago: the reconcile pass stamps a replica's
# created_at / stopped_at with the time the pass started, and commits them a little later.
SETTLE_SECONDS = 30
# Minutes metered per run at most: a collector that was down catches up in chunks, one run
# per beat, each well inside the task time limit.
MAX_MINUTES_PER_RUN = 60
# Where the very first run starts: the earliest placement of a replica that held accelerators
# within this long before now (so a fresh install bills from its first replica, and an install
# that predates the collector is billed for at most this much of its past).
FIRST_RUN_LOOKBACK = timedelta(hours=1)
# Events older than the accepted age (settings.USAGE_MAX_AGE_DAYS) are refused by ingestion:
# minutes that old are skipped, loudly. This margin keeps the oldest minute sent inside it.
AGE_MARGIN = timedelta(minutes=10)


# --- accelerator-seconds --------------------------------------------------------------------


@dataclass
class AcceleratorRunReport:
    minutes: int = 0  # minutes metered (committed) by this run
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    position: datetime | None = None  # the watermark after the run: metered up to here
    behind: bool = False  # closed minutes remain: the next run carries on

    def summary(self) -> dict:
        return {"minutes": self.minutes, "events": self.events, "accepted": self.accepted,
                "duplicates": self.duplicates, "rejected": self.rejected,
                "position": rfc3339(self.position) if self.position else None, "behind": self.behind}


def accelerator_usage_collect(*, now: datetime | None = None,
                              max_minutes: int = MAX_MINUTES_PER_RUN) -> AcceleratorRunReport:
    """Meter the accelerator-seconds of every closed minute since the watermark (at most
    `max_minutes` of them). Safe to run twice, concurrently, or after a run that was killed."""
    now = now or timezone.now()
    report = AcceleratorRunReport()
    closed_until = minute_floor(now - timedelta(seconds=SETTLE_SECONDS))
    start = _accelerator_watermark(now, closed_until)
    start = _skip_unacceptably_old(start, now)
    end = min(closed_until, start + max_minutes * MINUTE)
    report.position, report.behind = start, end < closed_until
    if end <= start:
        return report
    holdings = _holdings(start, end)
    for minute in minutes(start, end):
        if not _meter_minute(minute, holdings, now, report):
            break
        report.position = minute + MINUTE
    return report


def _accelerator_watermark(now: datetime, closed_until: datetime) -> datetime:
    """The watermark's position; on the very first run, where metering starts (see
    FIRST_RUN_LOOKBACK), committed before any minute is metered."""
    watermark = CollectorWatermark.objects.filter(name=ACCELERATOR_WATERMARK).first()
    if watermark is not None:
        return watermark.position
    since = now - FIRST_RUN_LOOKBACK
    earliest = (Replica.objects.filter(Q(stopped_at__isnull=True, state__in=Replica.HOLDING_STATES)
                                       | Q(stopped_at__gt=since))
                .aggregate(earliest=Min("created_at"))["earliest"])
    start = closed_until if earliest is None else min(closed_until, minute_floor(max(earliest, since)))
    watermark, created = CollectorWatermark.objects.get_or_create(name=ACCELERATOR_WATERMARK,
                                                                  defaults={"position": start, "updated_at": now})
    if created:
        logger.info("accelerator-seconds: first run, metering from %s", rfc3339(start))
    return watermark.position


def _skip_unacceptably_old(start: datetime, now: datetime) -> datetime:
    oldest = minute_floor(now - timedelta(days=settings.USAGE_MAX_AGE_DAYS) + AGE_MARGIN) + MINUTE
    if start >= oldest:
        return start
    with transaction.atomic():
        watermark = CollectorWatermark.objects.select_for_update().get(name=ACCELERATOR_WATERMARK)
        if watermark.position < oldest:
            logger.error("accelerator-seconds: minutes %s to %s are older than the %s days events are accepted "
                         "for; they are skipped, not billed (the collector was stopped that long)",
                         rfc3339(watermark.position), rfc3339(oldest), settings.USAGE_MAX_AGE_DAYS)
            watermark.position, watermark.updated_at = oldest, now
            watermark.save(update_fields=["position", "updated_at"])
        return watermark.position


def _holdings(start: datetime, end: datetime) -> list[Holding]:
    """Every replica that held accelerators at some time in [start, end).

    Billable policy (docs/metering.md): a replica holds its accelerators from placement
    (`created_at`: pending, starting, ready, draining) until it stopped or failed (`stopped_at`).
    A stopped or failed row without a stop time is left out, with a warning: its end is unknown.
    """
    replicas = (Replica.objects.filter(created_at__lt=end)
                .filter(Q(stopped_at__gt=start) | Q(stopped_at__isnull=True))
                .select_related("tier__accelerator", "deployment").order_by("pk"))
    holdings = []
    for replica in replicas:
        if replica.stopped_at is None and replica.state not in Replica.HOLDING_STATES:
            if replica.created_at >= start:  # once, in the run that meters its placement
                logger.warning("accelerator-seconds: replica %s is %s without a stop time; not metered",
                               replica.public_id, replica.state)
            continue
        holdings.append(Holding(replica=str(replica.public_id), deployment=str(replica.deployment.public_id),
                                tier=replica.tier.slug, hardware=replica.tier.accelerator.slug,
                                accelerators=replica.accelerators, start=replica.created_at,
                                end=replica.stopped_at))
    return holdings


def _meter_minute(minute: datetime, holdings: list[Holding], now: datetime, report: AcceleratorRunReport) -> bool:
    """Ingest one minute's events and move the watermark past it, in one transaction. False
    when the watermark is not at this minute (another run is ahead, or moved it): stop."""
    with transaction.atomic():
        watermark = CollectorWatermark.objects.select_for_update().get(name=ACCELERATOR_WATERMARK)
        if watermark.position != minute:
            logger.info("accelerator-seconds: the watermark is at %s, not %s: another run has it",
                        rfc3339(watermark.position), rfc3339(minute))
            return False
        events = usage_events(holdings, minute, source=ACCELERATOR_COLLECTOR_SOURCE)
        if events:
            result = usage_ingest(events, now=now)
            _log_rejections("accelerator-seconds", result, events)
            report.accepted += result.accepted
            report.duplicates += len(result.duplicates)
            report.rejected += len(result.rejected)
        report.events += len(events)
        watermark.position, watermark.updated_at = minute + MINUTE, now
        watermark.save(update_fields=["position", "updated_at"])
    report.minutes += 1
    return True


def _log_rejections(collector: str, result, events: list[dict]) -> None:
    # A rejection is deterministic (the same event is refused again on a retry), so the
    # collector does not stall on it: it is logged as an error, for an operator to fix.
    for index, event_id, reason in result.rejected:
        logger.error("%s: event %s (%s) was refused: %s", collector, event_id, events[index]["subject"], reason)


# --- the Prometheus scrape ------------------------------------------------------------------


@dataclass
class ScrapeRunReport:
    replicas: int = 0  # serving replicas found
    scraped: int = 0  # whose deltas were recorded
    failed: int = 0  # fetch or parse failed: retried next run (their deltas wait in the counters)
    stale: int = 0  # a later scrape of the same replica was recorded first
    events: int = 0
    resets: int = 0  # counter series found reset (a server restart)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"replicas": self.replicas, "scraped": self.scraped, "failed": self.failed, "stale": self.stale,
                "events": self.events, "resets": self.resets, "notes": self.notes[:10]}


def replica_metrics_collect(*, now: datetime | None = None, driver: FleetDriver | None = None) -> ScrapeRunReport:
    """Scrape every serving replica (ready or draining) once. `now` pins the scrape time (tests
    and replays; by default each replica's scrape is stamped when it is fetched)."""
    driver = driver or fleet_driver(now)
    report = ScrapeRunReport()
    replicas = list(Replica.objects.filter(state__in=SERVING_STATES).select_related("deployment").order_by("pk"))
    report.replicas = len(replicas)
    for replica in replicas:
        replica_id = str(replica.public_id)
        try:
            page = scrape_core.parse(driver.fetch_metrics(replica_id))
            # Stamped once the page is in hand: of two crossing scrapes, the later stamp is
            # (nearly always) the later page; scrape.deltas copes with the rare exception.
            scraped_at = now or timezone.now()
        except (FleetError, scrape_core.ScrapeError) as error:
            # Nothing is lost: the counters keep counting, and the next scrape takes the delta.
            logger.warning("scrape: replica %s skipped, retried next run: %s", replica_id, error)
            report.failed += 1
            report.notes.append(f"{replica_id}: {error}")
            continue
        try:
            _record_scrape(replica, page, scraped_at, report)
        except IntegrityError as error:
            # Another run recorded this replica's first scrape at the same moment; its
            # transaction counted the deltas, this one rolled back whole.
            logger.info("scrape: replica %s was recorded by a concurrent run (%s)", replica_id, error)
            report.stale += 1
    return report


def _record_scrape(replica: Replica, page: scrape_core.Scrape, scraped_at: datetime,
                   report: ScrapeRunReport) -> None:
    """The deltas since the replica's last recorded scrape → an event, the latency rollup and
    the new ScrapeState, in one transaction (the ScrapeState row lock orders concurrent runs)."""
    replica_id = str(replica.public_id)
    with transaction.atomic():
        state = ScrapeState.objects.select_for_update().filter(replica=replica).first()
        if state is None:
            # Created first, so a concurrent first scrape fails here (IntegrityError) before
            # it could count anything.
            state = ScrapeState.objects.create(replica=replica, scraped_at=scraped_at, samples={})
            previous = None
        elif state.scraped_at >= scraped_at:
            report.stale += 1
            return
        else:
            previous = state.samples
        try:
            deltas = scrape_core.deltas(previous, page)
        except scrape_core.ScrapeError as error:
            # A state this code cannot read: start again from this scrape rather than count
            # the counters' whole history twice.
            logger.warning("scrape: replica %s: %s; the counters are taken as a new baseline", replica_id, error)
            deltas = scrape_core.Deltas(state=scrape_core.state(page))
        if deltas.resets:
            logger.info("scrape: replica %s restarted (%s): the reset counters count from zero",
                        replica_id, ", ".join(deltas.resets[:4]))
            report.resets += len(deltas.resets)
        deployment = replica.deployment
        if deltas.has_usage and deployment.token_usage_source == Deployment.TokenUsageSource.SCRAPE:
            event = _inference_event(replica_id, deployment, page, deltas, scraped_at)
            result = usage_ingest([event], now=scraped_at)
            _log_rejections("scrape", result, [event])
            report.events += result.accepted
        if not all(latency.is_empty(h) for h in deltas.histograms.values()):
            latency_delta_add(deployment=deployment, minute=minute_floor(scraped_at),
                              request_count=deltas.request_count, histograms=deltas.histograms, now=scraped_at)
        if deltas.behind:
            logger.info("scrape: replica %s: a page older than the last one recorded (%s): nothing counted",
                        replica_id, ", ".join(deltas.behind[:4]))
        state.scraped_at, state.samples = scraped_at, deltas.state
        state.save(update_fields=["scraped_at", "samples"])
    report.scraped += 1


def _inference_event(replica_id: str, deployment: Deployment, page: scrape_core.Scrape,
                     deltas: scrape_core.Deltas, scraped_at: datetime) -> dict:
    # Named by the counters' position: a retried scrape of the same counters is the same event.
    return {"specversion": "1.0", "id": f"{replica_id}:{scrape_core.position(page)}",
            "source": SCRAPE_COLLECTOR_SOURCE, "type": "inference.request", "subject": str(deployment.public_id),
            "time": rfc3339(scraped_at), "data": {**deltas.usage, "replica": replica_id}}


LATENCY_FIELDS = ("ttft", "tpot", "e2e")


def latency_delta_add(*, deployment: Deployment, minute: datetime, request_count: int,
                      histograms: dict[str, dict], now: datetime) -> None:
    """Add one scrape's latency deltas (`histograms`: "ttft", "tpot", "e2e" → stored histogram)
    to the deployment's LatencyRollup of `minute` and to its LatencyHourRollup of that minute's
    hour, in one transaction (the caller's, when there is one).

    This is the only writer of both tables, so every hour row stays the merge of its hour's
    minute rows: request counts equal, bucket counts equal (merging is exact and does not depend
    on order or grouping; differing bounds coarsen the same way either way), `sum` equal up to
    float rounding. Rows are locked minute first, then hour, by every writer: concurrent scrapes
    queue rather than deadlock.
    """
    with transaction.atomic():
        _rollup_add(LatencyRollup, deployment, {"minute": minute}, request_count, histograms, now)
        _rollup_add(LatencyHourRollup, deployment, {"hour": floor_hour(minute)}, request_count, histograms, now)


def _rollup_add(model, deployment: Deployment, period: dict, request_count: int, histograms: dict[str, dict],
                now: datetime) -> None:
    rollup, _ = model.objects.get_or_create(deployment=deployment, **period,
                                            defaults={"tenant_id": deployment.tenant_id, "updated_at": now})
    rollup = model.objects.select_for_update().get(pk=rollup.pk)
    for name in LATENCY_FIELDS:
        setattr(rollup, name, latency.merge([getattr(rollup, name), histograms.get(name)]))
    rollup.request_count += request_count
    rollup.updated_at = now
    rollup.save(update_fields=[*LATENCY_FIELDS, "request_count", "updated_at"])
