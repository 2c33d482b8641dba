"""The metering collectors in-process: accelerator-seconds per closed minute from the replica
rows, and the Prometheus scrape of the simulated fleet into usage events and latency rollups.
(Real worker processes killed mid-run: test_exactly_once.py.)"""

import logging
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import latency
from billing.collectors import (
    ACCELERATOR_WATERMARK,
    MAX_MINUTES_PER_RUN,
    accelerator_usage_collect,
    latency_delta_add,
    replica_metrics_collect,
)
from billing.metering import SCRAPE_COLLECTOR_SOURCE
from billing.models import (
    CollectorWatermark,
    LatencyHourRollup,
    LatencyRollup,
    ScrapeState,
    UsageEvent,
    UsageRollup,
)
from billing.tasks import accelerator_usage_collect_task
from scheduler.fleet.base import MetricsUnavailable
from scheduler.models import Deployment, HardwareTier, Replica
from scheduler.reconcile import fleet_driver, reconcile_pass
from tests.billing.fleet_usage import (
    billed_accelerator_seconds,
    expected_accelerator_seconds,
    expected_replica_minutes,
    make_replicas,
)
from tests.cross_tenant_objects import make_deployment, small_fleet

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TIER = "h100-80gb-on-demand"


@pytest.fixture
def placed(tenant_a):
    """A deployment, a node and a tier to hang replica rows on."""
    deployment = make_deployment(tenant_a, tiers=[TIER], regions=["test-1"])
    node = small_fleet(nodes=1)[0]
    return deployment, node, HardwareTier.objects.get(slug=TIER)


def start_watermark(at: datetime) -> None:
    CollectorWatermark.objects.update_or_create(name=ACCELERATOR_WATERMARK, defaults={"position": at})


def random_spans(rng: random.Random, count: int, start: datetime, hours: float):
    """Replicas placed and stopped at random microseconds over the window (some still running)."""
    window = int(hours * 3600 * 1_000_000)
    spans = []
    for _ in range(count):
        created = start + timedelta(microseconds=rng.randrange(-window // 4, window))
        stopped = None if rng.random() < 0.3 else created + timedelta(microseconds=rng.randrange(1, window))
        spans.append((created, stopped, rng.choice([1, 2, 4, 8])))
    return spans


# --- accelerator-seconds ----------------------------------------------------------------------


def test_every_closed_minute_bills_each_replica_the_exact_seconds_it_held(placed):
    replicas = make_replicas(*placed, random_spans(random.Random(1), 12, T0, hours=0.75))
    start_watermark(T0)
    now = T0 + timedelta(minutes=45, seconds=40)  # minutes up to 12:45 are closed and settled

    report = accelerator_usage_collect(now=now)

    end = T0 + timedelta(minutes=45)
    assert report.minutes == 45 and report.position == end and not report.behind
    raw, rolled, events = billed_accelerator_seconds()
    assert raw == rolled == expected_accelerator_seconds(replicas, T0, end)
    assert events == report.accepted == expected_replica_minutes(replicas, T0, end) > 0
    assert CollectorWatermark.objects.get(name=ACCELERATOR_WATERMARK).position == end


def test_running_again_over_the_same_minutes_counts_nothing_twice(placed):
    replicas = make_replicas(*placed, random_spans(random.Random(2), 6, T0, hours=0.5))
    start_watermark(T0)
    now = T0 + timedelta(minutes=31)
    first = accelerator_usage_collect(now=now)
    before = billed_accelerator_seconds()

    start_watermark(T0)  # as if the commit of every minute had been lost after ingestion
    again = accelerator_usage_collect(now=now)

    assert again.minutes == first.minutes and again.accepted == 0 and again.duplicates == first.accepted
    assert billed_accelerator_seconds() == before
    assert before[0] == expected_accelerator_seconds(replicas, T0, T0 + timedelta(minutes=30))


def test_a_collector_that_was_down_catches_up_in_chunks(placed):
    replicas = make_replicas(*placed, [(T0 - timedelta(minutes=1), None, 2)])
    start_watermark(T0)
    now = T0 + timedelta(hours=2, minutes=30, seconds=45)

    runs = []
    while not runs or runs[-1].behind:
        runs.append(accelerator_usage_collect(now=now))
    assert [r.minutes for r in runs] == [MAX_MINUTES_PER_RUN, MAX_MINUTES_PER_RUN, 30]
    raw, rolled, events = billed_accelerator_seconds()
    assert raw == rolled == expected_accelerator_seconds(replicas, T0, T0 + timedelta(hours=2, minutes=30)) == 2 * 9000
    assert events == 150


def test_a_minute_is_metered_only_once_it_has_settled(placed):
    make_replicas(*placed, [(T0 - timedelta(hours=1), None, 1)])
    start_watermark(T0)
    assert accelerator_usage_collect(now=T0 + timedelta(seconds=75)).minutes == 0  # 12:00 closed 15 s ago
    assert accelerator_usage_collect(now=T0 + timedelta(seconds=95)).minutes == 1


def test_the_first_run_starts_at_the_earliest_placement_within_the_last_hour(placed):
    placed_at = T0 + timedelta(minutes=20, seconds=10)
    replicas = make_replicas(*placed, [(placed_at, None, 1), (T0 - timedelta(hours=5), T0 - timedelta(hours=4), 8)])
    now = T0 + timedelta(minutes=50, seconds=40)

    report = accelerator_usage_collect(now=now)

    assert CollectorWatermark.objects.get(name=ACCELERATOR_WATERMARK).position == T0 + timedelta(minutes=50)
    assert report.minutes == 30  # from 12:20, the minute of the only replica that holds anything recent
    assert billed_accelerator_seconds()[0] == expected_accelerator_seconds(replicas, T0, T0 + timedelta(minutes=50))


def test_the_first_run_with_no_replicas_starts_now(db):
    report = accelerator_usage_collect(now=T0 + timedelta(seconds=40))
    assert report.minutes == 0
    assert CollectorWatermark.objects.get(name=ACCELERATOR_WATERMARK).position == T0


def test_minutes_older_than_events_are_accepted_are_skipped_loudly(placed, settings, caplog):
    make_replicas(*placed, [(T0 - timedelta(days=60), None, 1)])
    start_watermark(T0 - timedelta(days=50))
    now = T0 + timedelta(seconds=40)
    with caplog.at_level(logging.ERROR, logger="billing.collectors"):
        report = accelerator_usage_collect(now=now)
    assert "skipped, not billed" in caplog.text
    assert report.rejected == 0 and report.accepted == report.minutes == MAX_MINUTES_PER_RUN
    oldest_sent = UsageEvent.objects.order_by("time").values_list("time", flat=True).first()
    assert oldest_sent >= now - timedelta(days=settings.USAGE_MAX_AGE_DAYS)


def test_a_replica_row_stopped_without_a_stop_time_is_not_metered_and_is_logged(placed, caplog):
    [replica] = make_replicas(*placed, [(T0 + timedelta(seconds=5), None, 1)])
    Replica.objects.filter(pk=replica.pk).update(state="failed")
    start_watermark(T0)
    with caplog.at_level(logging.WARNING, logger="billing.collectors"):
        report = accelerator_usage_collect(now=T0 + timedelta(minutes=2))
    assert report.minutes == 1 and report.events == 0
    assert "without a stop time" in caplog.text


def test_the_task_runs_the_collector_and_returns_its_summary(db):
    summary = accelerator_usage_collect_task()
    assert set(summary) >= {"minutes", "events", "accepted", "duplicates", "rejected", "position", "behind"}


# --- the Prometheus scrape of the simulated fleet ---------------------------------------------


@pytest.fixture
def fleet(settings, tmp_path):
    settings.SWITCHYARD_FLEET = {"driver": "simulated", "state_dir": str(tmp_path / "fleet"), "seed": 7,
                                 "tick_seconds": 5, "pending_seconds": 5, "engine_start_seconds": 10}
    return small_fleet(nodes=2)


class Clock:
    """Drives the reconcile loop and the simulated fleet in simulated time (as test_reconcile.py)."""

    def __init__(self, capture):
        self.now = T0
        self.capture = capture

    def reconcile(self, advance=timedelta(seconds=15)):
        self.now += advance
        with self.capture(execute=True):
            return reconcile_pass(now=self.now)

    def until_ready(self, deployment, passes=40):
        for _ in range(passes):
            self.reconcile()
            if Deployment.objects.get(pk=deployment.pk).status == "ready":
                return
        raise AssertionError("the deployment never became ready")

    def scrape(self, advance=timedelta(seconds=15), driver=None):
        self.now += advance
        return replica_metrics_collect(now=self.now, driver=driver or fleet_driver(self.now))


@pytest.fixture
def clock(django_capture_on_commit_callbacks):
    return Clock(django_capture_on_commit_callbacks)


def serving_deployment(tenant, clock, **overrides):
    deployment = make_deployment(tenant, tiers=[TIER], regions=["test-1"], **overrides)
    clock.until_ready(deployment)
    return deployment


def scraped_usage(deployment) -> dict:
    totals = {"input_tokens": 0, "output_tokens": 0, "requests": 0}
    for data in UsageEvent.objects.filter(deployment=deployment, type="inference.request").values_list("data",
                                                                                                      flat=True):
        for key in totals:
            totals[key] += data[key]
    return totals


def counters_now(replica, now) -> dict:
    """What the replica's server has counted since it started, read straight from its page."""
    from billing import scrape

    page = scrape.parse(fleet_driver(now).fetch_metrics(str(replica.public_id)))
    return scrape.deltas(None, page).usage


def test_a_simulated_deployment_gets_usage_events_and_latency_rollups(tenant_a, fleet, clock):
    deployment = serving_deployment(tenant_a, clock)
    [replica] = Replica.objects.filter(deployment=deployment, state="ready")

    for _ in range(8):  # two minutes of scrapes
        report = clock.scrape()
        assert report.failed == 0 and report.scraped == 1

    usage = scraped_usage(deployment)
    assert usage == counters_now(replica, clock.now)  # every token since the server started, once
    assert usage["requests"] > 0 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    events = UsageEvent.objects.filter(deployment=deployment, type="inference.request")
    assert set(events.values_list("source", flat=True)) == {SCRAPE_COLLECTOR_SOURCE}
    rolled = {r.meter.slug: r.quantity for r in UsageRollup.objects.filter(deployment=deployment)
              .select_related("meter")}
    assert {slug: int(rolled.get(slug, 0)) for slug in usage} == usage  # rollups = raw events

    rollups = list(LatencyRollup.objects.filter(deployment=deployment).order_by("minute"))
    assert rollups and all(r.minute.second == 0 for r in rollups)
    assert sum(r.request_count for r in rollups) == usage["requests"]
    merged = latency.merge(r.ttft for r in rollups)
    assert latency.count(merged) == usage["requests"]
    p50, p95 = latency.histogram_quantile(0.5, merged), latency.histogram_quantile(0.95, merged)
    assert 0 < p50 <= p95
    assert latency.count(latency.merge(r.tpot for r in rollups)) > 0
    assert_hour_rows_merge_their_minutes(deployment)


def test_a_simulated_deployment_is_billed_its_accelerator_seconds_from_placement(tenant_a, fleet, clock):
    start_watermark(T0)
    deployment = serving_deployment(tenant_a, clock)
    for _ in range(10):
        clock.reconcile()
    report = accelerator_usage_collect(now=clock.now)

    replicas = list(Replica.objects.filter(deployment=deployment))
    assert replicas and all(r.created_at >= T0 for r in replicas)
    raw, rolled, events = billed_accelerator_seconds()
    assert raw == rolled == expected_accelerator_seconds(replicas, T0, report.position) > 0
    assert set(UsageEvent.objects.filter(type="accelerator.usage").values_list("deployment", flat=True)) == \
        {deployment.pk}
    assert events == report.accepted


def test_scraping_the_same_counters_again_counts_nothing(tenant_a, fleet, clock):
    deployment = serving_deployment(tenant_a, clock)
    clock.scrape()
    before = (scraped_usage(deployment), UsageEvent.objects.count(),
              list(LatencyRollup.objects.values_list("minute", "request_count", "ttft")))
    # The fleet's clock stays put, so the page is the same; only the collector's time moves on.
    pinned = fleet_driver(clock.now)
    report = clock.scrape(advance=timedelta(seconds=1), driver=pinned)
    assert report.scraped == 1 and report.events == 0
    assert (scraped_usage(deployment), UsageEvent.objects.count(),
            list(LatencyRollup.objects.values_list("minute", "request_count", "ttft"))) == before


def test_an_older_scrape_recorded_after_a_newer_one_is_dropped(tenant_a, fleet, clock):
    serving_deployment(tenant_a, clock)
    clock.scrape()
    state = ScrapeState.objects.get()
    report = replica_metrics_collect(now=state.scraped_at - timedelta(seconds=5), driver=fleet_driver(clock.now))
    assert report.stale == 1 and report.scraped == 0
    assert ScrapeState.objects.get().scraped_at == state.scraped_at


def test_an_external_deployment_gets_latency_rollups_but_no_scraped_token_events(tenant_a, fleet, clock):
    deployment = serving_deployment(tenant_a, clock, token_usage_source="external")
    for _ in range(4):
        clock.scrape()
    assert not UsageEvent.objects.filter(deployment=deployment, type="inference.request").exists()
    assert sum(LatencyRollup.objects.filter(deployment=deployment).values_list("request_count", flat=True)) > 0


class OneReplicaDown:
    """The configured driver, except that one replica's /metrics does not answer (a network
    partition, a crashed exporter): the failure real fleets have and the twin does not."""

    def __init__(self, driver, replica_id):
        self.driver, self.replica_id = driver, replica_id

    def fetch_metrics(self, replica_id):
        if replica_id == self.replica_id:
            raise MetricsUnavailable(f"replica {replica_id!r}: connection refused")
        return self.driver.fetch_metrics(replica_id)


def test_a_replica_that_does_not_answer_is_skipped_and_its_tokens_are_counted_next_time(tenant_a, fleet, clock,
                                                                                         caplog):
    deployment = serving_deployment(tenant_a, clock)
    [replica] = Replica.objects.filter(deployment=deployment, state="ready")
    clock.scrape()
    clock.now += timedelta(seconds=45)
    with caplog.at_level(logging.WARNING, logger="billing.collectors"):
        report = clock.scrape(driver=OneReplicaDown(fleet_driver(clock.now + timedelta(seconds=15)),
                                                    str(replica.public_id)))
    assert report.failed == 1 and report.scraped == 0
    assert str(replica.public_id) in caplog.text and "connection refused" in caplog.text

    clock.scrape()
    assert scraped_usage(deployment) == counters_now(replica, clock.now)  # nothing lost


def test_concurrent_scrapes_of_the_same_replicas_count_every_token_once(transactional_db, tenant_a, fleet,
                                                                        django_capture_on_commit_callbacks):
    import threading

    from django.db import connection

    from scheduler.services import catalog_sync
    from tests.billing.factories import ensure_built_in_meters

    catalog_sync()
    ensure_built_in_meters()
    clock = Clock(django_capture_on_commit_callbacks)
    deployment = serving_deployment(tenant_a, clock, min_replicas=3, max_replicas=3)
    replicas = list(Replica.objects.filter(deployment=deployment, state="ready"))
    assert len(replicas) == 3
    errors = []

    def scrape(at, driver):
        try:
            replica_metrics_collect(now=at, driver=driver)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    for _ in range(4):
        clock.now += timedelta(seconds=15)
        driver = fleet_driver(clock.now)
        # Three runs at once, stamped a microsecond apart, over the same pages.
        threads = [threading.Thread(target=scrape, args=(clock.now + timedelta(microseconds=i), driver))
                   for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    usage = scraped_usage(deployment)
    expected = {"input_tokens": 0, "output_tokens": 0, "requests": 0}
    for replica in replicas:
        for key, value in counters_now(replica, clock.now).items():
            expected[key] += value
    assert usage == expected and usage["requests"] > 0
    assert sum(LatencyRollup.objects.filter(deployment=deployment).values_list("request_count", flat=True)) == \
        usage["requests"]
    assert_hour_rows_merge_their_minutes(deployment)


# --- hourly latency rollups: always the merge of their minutes --------------------------------

LATENCY = ("ttft", "tpot", "e2e")


def assert_hour_rows_merge_their_minutes(deployment) -> None:
    """The LatencyHourRollup invariant: each hour row is its minute rows merged (bucket counts
    exactly, `sum` up to float rounding), and no hour has minutes without an hour row."""
    minutes: dict[datetime, list[LatencyRollup]] = {}
    for row in LatencyRollup.objects.filter(deployment=deployment):
        minutes.setdefault(row.minute.replace(minute=0), []).append(row)
    hours = {row.hour: row for row in LatencyHourRollup.objects.filter(deployment=deployment)}
    assert set(hours) == set(minutes)
    for hour, row in hours.items():
        assert row.tenant_id == deployment.tenant_id
        assert row.request_count == sum(minute.request_count for minute in minutes[hour])
        for name in LATENCY:
            stored, expected = getattr(row, name), latency.merge(getattr(minute, name) for minute in minutes[hour])
            assert without_sum(stored) == without_sum(expected)
            assert stored.get("sum", 0.0) == pytest.approx(expected.get("sum", 0.0))


def without_sum(histogram: dict) -> dict:
    return {key: value for key, value in histogram.items() if key != "sum"}


LE = [0.1, 0.2, 0.5, 1.0]
UPGRADED_LE = [0.1, 0.25, 0.5, 2.0]  # a vLLM upgrade changed the bounds: merges coarsen onto the shared ones


def histogram_delta(le):
    return st.builds(lambda counts, total: {"le": le, "counts": counts, "sum": total},
                     st.lists(st.integers(0, 30), min_size=len(le) + 1, max_size=len(le) + 1),
                     st.floats(0, 50, allow_nan=False))


deltas = st.lists(st.tuples(
    st.integers(0, 3 * 60 - 1),  # the minute, over three hours
    st.one_of(histogram_delta(LE), histogram_delta(LE), histogram_delta(UPGRADED_LE), st.just({})),
    st.one_of(histogram_delta(LE), st.just({})),
), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=deltas)
def test_an_hour_row_is_always_the_merge_of_its_minute_rows(placed, drawn):
    deployment = placed[0]
    LatencyRollup.objects.filter(deployment=deployment).delete()  # examples share the test's transaction
    LatencyHourRollup.objects.filter(deployment=deployment).delete()
    for minute, ttft, e2e in drawn:
        latency_delta_add(deployment=deployment, minute=T0 + timedelta(minutes=minute),
                          request_count=int(latency.count(e2e)), histograms={"ttft": ttft, "e2e": e2e}, now=T0)
    assert_hour_rows_merge_their_minutes(deployment)
    assert sum(LatencyHourRollup.objects.filter(deployment=deployment).values_list("request_count", flat=True)) == \
        sum(latency.count(e2e) for _minute, _ttft, e2e in drawn)


def test_upgrading_fills_the_hour_rows_from_the_minute_rows(placed, tenant_b):
    import importlib

    from django.apps import apps

    from tests.billing.factories import LatencyRollupFactory

    fill = importlib.import_module("billing.migrations.0008_latency_hour_rollups").fill_hours_from_minutes
    deployment = placed[0]
    other = make_deployment(tenant_b, name="other")
    rows = [(deployment, T0, [3, 1, 0, 0, 0], LE), (deployment, T0 + timedelta(minutes=59), [0, 2, 2, 0, 1], LE),
            (deployment, T0 + timedelta(minutes=60), [1, 0, 0, 0, 0], LE),
            (deployment, T0 + timedelta(minutes=61), [0, 0, 4, 0, 0], UPGRADED_LE),
            (other, T0 + timedelta(minutes=30), [5, 0, 0, 0, 0], LE)]
    for owner, minute, counts, le in rows:
        LatencyRollupFactory(deployment=owner, minute=minute, request_count=sum(counts),
                             ttft={"le": le, "counts": counts, "sum": 1.5}, e2e={"le": le, "counts": counts, "sum": 3.0})
    fill(apps, None)
    assert_hour_rows_merge_their_minutes(deployment)
    assert_hour_rows_merge_their_minutes(other)
    assert LatencyHourRollup.objects.count() == 3
    # 12:00 and 13:00: the second hour's bounds coarsened onto those the two sets share.
    assert LatencyHourRollup.objects.get(deployment=deployment, hour=T0 + timedelta(hours=1)).ttft == \
        {"le": [0.1, 0.5], "counts": [1, 4, 0], "sum": 3.0}
