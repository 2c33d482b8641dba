"""GET /api/v1/deployments/{id}/metrics: request rate, latency percentiles from merged histogram
buckets against the SLO, replicas and accelerator-seconds, per step and over the window."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest

from billing import metrics as metrics_core
from billing.collectors import latency_delta_add
from billing.models import LatencyRollup
from billing.selectors import deployment_metrics
from scheduler.models import HardwareTier, Replica
from tests.billing.factories import (
    TPOT_LE,
    TTFT_LE,
    LatencyHourRollupFactory,
    LatencyRollupFactory,
    UsageRollupFactory,
    at,
    histogram,
)
from tests.cross_tenant_objects import make_deployment, small_fleet

WINDOW = {"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T10:05:00Z"}
START = at("2025-03-01T10:00")
MINUTE = timedelta(minutes=1)
# TPOT histograms (seconds): p95 48.75 ms (within the 100 ms SLO) and 150 ms (missing it).
TPOT_FAST = histogram(TPOT_LE, [0, 100, 0, 0, 0])
TPOT_SLOW = histogram(TPOT_LE, [0, 50, 40, 10, 0])


@pytest.fixture
def chat(tenant_a):
    return make_deployment(tenant_a, name="chat")  # SLO: p95 TTFT ≤ 2000 ms, p95 TPOT ≤ 100 ms


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.public_id}/metrics"


def metrics(world, deployment, **params) -> dict:
    response = world.api.get(url(deployment), params)
    assert response.status_code == 200, response.content
    return response.json()


def test_percentiles_come_from_the_merged_buckets_of_the_steps_minutes(tenant_a, chat):
    # 100 TTFT observations over two minutes: 10 ≤ 0.1 s, 20 in (0.1, 0.2], 60 in (0.2, 0.5], 10 in (0.5, 1].
    # p50: rank 50 is the 20th of 60 in (0.2, 0.5] → 0.2 + 0.3 × 20/60 = 0.3 s; p95: the 5th of 10 in
    # (0.5, 1] → 0.75 s; p99: the 9th → 0.95 s.
    LatencyRollupFactory(deployment=chat, minute=START, request_count=40, ttft=histogram(TTFT_LE, [10, 0, 30, 0, 0]))
    LatencyRollupFactory(deployment=chat, minute=START + MINUTE, request_count=60,
                         ttft=histogram(TTFT_LE, [0, 20, 30, 10, 0]))
    body = metrics(tenant_a, chat, step="2m", **WINDOW)
    first = body["steps"][0]
    assert first["time"] == "2025-03-01T10:00:00Z"
    assert first["requests"] == 100
    assert first["ttft_ms"] == {"p50": pytest.approx(300), "p95": pytest.approx(750), "p99": pytest.approx(950)}
    assert first["tpot_ms"] == {"p50": None, "p95": None, "p99": None}  # no TPOT observations
    assert body["totals"]["ttft_ms"]["p95"] == pytest.approx(750)
    assert body["step_seconds"] == 120
    # 5 minutes in steps of 2: 10:00, 10:02, 10:04 (the last one cut to one minute).
    assert [step["time"][11:16] for step in body["steps"]] == ["10:00", "10:02", "10:04"]


def test_each_step_is_judged_against_the_slo_on_p95(tenant_a, chat):
    ttft = histogram(TTFT_LE, [10, 0, 0, 0, 0])
    LatencyRollupFactory(deployment=chat, minute=START, request_count=10, ttft=ttft, tpot=TPOT_FAST)
    LatencyRollupFactory(deployment=chat, minute=START + MINUTE, request_count=10, ttft=ttft, tpot=TPOT_SLOW)
    body = metrics(tenant_a, chat, **WINDOW)
    assert body["slo"] == {"ttft_p95_ms": 2000.0, "tpot_p95_ms": 100.0}
    assert [step["within_slo"] for step in body["steps"]] == [True, False, None, None, None]
    assert body["steps"][0]["tpot_ms"]["p95"] == pytest.approx(48.75)
    assert body["steps"][1]["tpot_ms"] == {"p50": pytest.approx(50), "p95": pytest.approx(150),
                                           "p99": pytest.approx(190)}
    totals = body["totals"]
    assert (totals["steps_with_traffic"], totals["steps_within_slo"]) == (2, 1)
    # Over the window: TPOT counts [0, 150, 40, 10, 0]; rank 190 of 200 is the last of the 40 in
    # (0.05, 0.1] → exactly 100 ms: the window as a whole meets the SLO although one step missed it.
    assert totals["tpot_ms"]["p95"] == pytest.approx(100)
    assert totals["within_slo"] is True


def test_a_slow_first_token_misses_the_slo_too(tenant_a, chat):
    LatencyRollupFactory(deployment=chat, minute=START, request_count=10,
                         ttft=histogram([1.0, 2.5, 5.0], [0, 0, 10, 0]), tpot=TPOT_FAST)
    assert metrics(tenant_a, chat, **WINDOW)["steps"][0]["within_slo"] is False


def test_request_rate_is_requests_per_second_of_the_step(tenant_a, chat):
    LatencyRollupFactory(deployment=chat, minute=START, request_count=120)
    LatencyRollupFactory(deployment=chat, minute=START + 3 * MINUTE, request_count=30)
    per_minute = metrics(tenant_a, chat, **WINDOW)
    assert [step["request_rate"] for step in per_minute["steps"]] == [2.0, 0.0, 0.0, 0.5, 0.0]
    assert per_minute["totals"]["requests"] == 150
    assert per_minute["totals"]["request_rate"] == pytest.approx(0.5)
    assert metrics(tenant_a, chat, step="5m", **WINDOW)["steps"][0]["request_rate"] == pytest.approx(0.5)


def test_rows_outside_the_window_are_not_counted(tenant_a, chat):
    LatencyRollupFactory(deployment=chat, minute=START - MINUTE, request_count=1000)
    LatencyRollupFactory(deployment=chat, minute=START + 5 * MINUTE, request_count=1000)
    LatencyRollupFactory(deployment=chat, minute=START + 4 * MINUTE, request_count=7)
    assert metrics(tenant_a, chat, **WINDOW)["totals"]["requests"] == 7


def test_replicas_count_those_holding_accelerators_during_each_step(tenant_a, chat):
    node = small_fleet()[0]
    tier = node.accelerator.tiers.get(capacity_class="on-demand")

    def replica(created, stopped=None, state=Replica.State.READY):
        Replica.objects.create(tenant=chat.tenant, deployment=chat, node=node, tier=tier, accelerators=1,
                               generation=1, state=state, created_at=created, stopped_at=stopped)

    replica(START - timedelta(hours=1))  # held throughout
    replica(START + MINUTE + timedelta(seconds=30), START + 3 * MINUTE, Replica.State.STOPPED)
    replica(START - timedelta(hours=2), START - timedelta(hours=1), Replica.State.STOPPED)  # gone before
    replica(START + 10 * MINUTE)  # after the window
    assert [step["replicas"] for step in metrics(tenant_a, chat, **WINDOW)["steps"]] == [1, 2, 2, 1, 1]


def test_accelerator_seconds_are_reported_per_hour_with_a_cost_per_million_output_tokens(tenant_a, chat):
    tier = HardwareTier.objects.get(slug="h100-80gb-on-demand")
    for hour in ("2025-03-01T09:00", "2025-03-01T10:00", "2025-03-01T11:00"):
        UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier=tier.slug, hour=at(hour), quantity="7200")
        UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at(hour), quantity="2000000")
    body = metrics(tenant_a, chat, **WINDOW)
    # Only the hour overlapping 10:00–10:05 counts: usage rollups are hourly.
    assert body["accelerator_hours"] == [{"hour": "2025-03-01T10:00:00Z", "accelerator_seconds": "7200.000000000"}]
    totals = body["totals"]
    assert Decimal(totals["accelerator_seconds"]) == 7200
    assert Decimal(totals["output_tokens"]) == 2_000_000
    # 7200 s = 2 accelerator-hours at the tier's price, for 2 M output tokens: the price per million.
    assert Decimal(totals["accelerator_cost"]) == 2 * tier.price_per_accelerator_hour
    assert Decimal(totals["cost_per_million_output_tokens"]) == tier.price_per_accelerator_hour
    assert totals["currency"] == tier.currency


def test_an_empty_window_answers_nulls_not_errors(tenant_a, chat):
    body = metrics(tenant_a, chat, **WINDOW)
    assert len(body["steps"]) == 5
    assert body["steps"][0] == {"time": "2025-03-01T10:00:00Z", "requests": 0, "request_rate": 0.0,
                                "ttft_ms": {"p50": None, "p95": None, "p99": None},
                                "tpot_ms": {"p50": None, "p95": None, "p99": None},
                                "e2e_ms": {"p50": None, "p95": None, "p99": None},
                                "within_slo": None, "replicas": 0}
    totals = body["totals"]
    assert totals["requests"] == 0 and totals["within_slo"] is None and totals["ttft_ms"]["p95"] is None
    assert Decimal(totals["accelerator_seconds"]) == 0 and totals["cost_per_million_output_tokens"] is None
    assert body["accelerator_hours"] == []


def test_the_default_window_is_the_last_hour_in_minutes(tenant_a, chat):
    body = metrics(tenant_a, chat)
    assert len(body["steps"]) == 60 and body["step_seconds"] == 60
    assert at(body["end"][:16]) - at(body["start"][:16]) == timedelta(hours=1)


def test_a_window_may_end_at_a_chosen_time(tenant_a, chat):
    LatencyRollupFactory(deployment=chat, minute=START, request_count=6)
    body = metrics(tenant_a, chat, window="15m", end="2025-03-01T10:10:20Z", step="5m")
    assert (body["start"], body["end"]) == ("2025-03-01T09:56:00Z", "2025-03-01T10:11:00Z")  # whole minutes
    assert [step["requests"] for step in body["steps"]] == [6, 0, 0]


@pytest.mark.parametrize("params, field, message", [
    ({"step": "30s"}, "step", "whole number of minutes"),
    ({"step": "fast"}, "step", "number and a unit"),
    ({"window": "32d", "step": "1h"}, "window", "At most 31 days"),
    ({"window": "2d"}, "step", "2880 points; at most 1440: use step=2m"),
    ({"window": "1h", "start": "2025-03-01T10:00:00Z"}, "window", "not both"),
    ({"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T09:00:00Z"}, "end", "Must be after start"),
    ({"window": "0m"}, "window", "number and a unit"),
    ({"colour": "blue"}, "colour", "Unknown field"),
])
def test_bad_parameters_are_400_problems(tenant_a, chat, params, field, message):
    response = tenant_a.api.get(url(chat), params)
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == field
    assert message in response.json()["detail"]


def test_another_tenants_deployment_is_not_found(tenant_a, tenant_b):
    theirs = make_deployment(tenant_b, name="theirs")
    LatencyRollupFactory(deployment=theirs, minute=START, request_count=5)
    response = tenant_a.api.get(url(theirs), WINDOW)
    assert response.status_code == 404
    assert tenant_b.api.get(url(theirs), WINDOW).json()["totals"]["requests"] == 5


def test_the_metrics_of_one_deployment_never_include_anothers(tenant_a, chat):
    search = make_deployment(tenant_a, name="search")
    LatencyRollupFactory(deployment=search, minute=START, request_count=50)
    UsageRollupFactory(deployment=search, meter="accelerator_seconds", tier="h100-80gb-on-demand",
                       hour=at("2025-03-01T10:00"), quantity="3600")
    body = metrics(tenant_a, chat, **WINDOW)
    assert body["totals"]["requests"] == 0 and body["accelerator_hours"] == []


# --- long windows: hourly rollups, the same answers ---------------------------------------------

HOUR = timedelta(hours=1)


def random_latency(rng: random.Random, deployment, start, minutes: int, scrapes: int) -> None:
    """`scrapes` latency deltas at random minutes, written as the scrape collector writes them
    (minute and hour rows together); a few minutes get several, a few carry upgraded bounds."""
    for _ in range(scrapes):
        le = TTFT_LE if rng.random() < 0.9 else [0.1, 0.25, 0.5, 2.0]
        ttft = histogram(le, [rng.randrange(12) for _ in range(len(le) + 1)], rng.uniform(0, 9))
        tpot = histogram(TPOT_LE, [rng.randrange(12) for _ in range(len(TPOT_LE) + 1)], rng.uniform(0, 1))
        latency_delta_add(deployment=deployment, minute=start + rng.randrange(minutes) * MINUTE,
                          request_count=sum(ttft["counts"]), histograms={"ttft": ttft, "tpot": tpot, "e2e": ttft},
                          now=start)


def minutes_only(deployment, start, end, step):
    """The answer from minute rows alone: what the endpoint computed before hour rows existed."""
    rows = [metrics_core.MinuteRow(*row) for row in LatencyRollup.objects.filter(
        deployment=deployment, minute__gte=start, minute__lt=end).values_list(
        "minute", "request_count", "ttft", "tpot", "e2e")]
    return metrics_core.deployment_steps(rows, [], start=start, end=end, step=step,
                                         slo_ttft_p95_ms=deployment.slo_ttft_p95_ms,
                                         slo_tpot_p95_ms=deployment.slo_tpot_p95_ms)


@pytest.mark.parametrize("seed", [1, 2])
def test_hour_rollups_answer_exactly_as_the_minutes_would(chat, seed):
    rng = random.Random(seed)
    chat.slo_ttft_p95_ms = 600.0  # near the data's p95s, so steps fall on both sides of the SLO
    random_latency(rng, chat, START, minutes=4 * 24 * 60, scrapes=700)
    windows = [
        (START, START + timedelta(days=3), timedelta(days=1)),  # on the hour: hour rows only
        (START + 37 * MINUTE, START + timedelta(days=3, minutes=11), timedelta(days=1)),  # part-hours at the edges
        (START + 37 * MINUTE, START + timedelta(days=2), 6 * HOUR),
        (START + 5 * MINUTE, START + timedelta(days=1), 2 * HOUR),
        (START - timedelta(hours=3), START + timedelta(days=4, hours=3), HOUR),
        (START + 13 * MINUTE, START + timedelta(days=1), HOUR),  # no hour inside a step: minutes only
        (START, START + timedelta(days=2), 90 * MINUTE),  # not whole hours: minutes only
    ]
    for _ in range(6):
        start = START + rng.randrange(3 * 24 * 60) * MINUTE
        windows.append((start, start + rng.randrange(60, 3 * 24 * 60) * MINUTE, rng.randrange(1, 30) * HOUR))
    for start, end, step in windows:
        answer = deployment_metrics(chat, start=start, end=end, step=step)
        steps, summary = minutes_only(chat, start, end, step)
        assert (answer.steps, answer.summary) == (steps, summary), (start, end, step)
        assert summary.requests > 0


def test_whole_hours_of_a_step_are_read_from_the_hour_rows(tenant_a, chat):
    # Made directly, without their minutes: only an hour row can answer 10:00-11:00, only minute
    # rows the part-hour 11:00-11:30 of the window's end.
    LatencyHourRollupFactory(deployment=chat, hour=START, request_count=40, ttft=histogram(TTFT_LE, [0, 0, 0, 40, 0]))
    LatencyRollupFactory(deployment=chat, minute=START + 70 * MINUTE, request_count=10,
                         ttft=histogram(TTFT_LE, [10, 0, 0, 0, 0]))
    body = metrics(tenant_a, chat, start="2025-03-01T10:00:00Z", end="2025-03-01T11:30:00Z", step="1h")
    assert [step["requests"] for step in body["steps"]] == [40, 10]
    assert [step["ttft_ms"]["p50"] for step in body["steps"]] == [pytest.approx(750), pytest.approx(50)]
