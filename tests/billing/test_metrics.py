"""The pure core behind a deployment's metrics: steps, percentiles per step, replicas per step."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing import latency
from billing.metrics import (
    HourRow,
    MinuteRow,
    Percentiles,
    ReplicaSpan,
    RollupPlan,
    deployment_steps,
    merged,
    rollup_plan,
    smallest_step_for,
    within_slo,
)

LE = [0.1, 0.2, 0.5, 1.0]
START = datetime(2025, 3, 1, 10, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SLO = {"slo_ttft_p95_ms": 500.0, "slo_tpot_p95_ms": 100.0}

counts = st.lists(st.integers(min_value=0, max_value=50), min_size=len(LE) + 1, max_size=len(LE) + 1)
rows = st.lists(st.tuples(st.integers(min_value=-5, max_value=70), counts), max_size=40, unique_by=lambda r: r[0])
spans = st.lists(st.tuples(st.integers(min_value=-30, max_value=80), st.one_of(st.none(), st.integers(0, 120))),
                 max_size=15)


def minute_rows(drawn) -> list[MinuteRow]:
    return [MinuteRow(START + offset * MINUTE, sum(bucket_counts),
                      {"le": LE, "counts": bucket_counts, "sum": 0.0}, {}, {}) for offset, bucket_counts in drawn]


def replica_spans(drawn) -> list[ReplicaSpan]:
    return [ReplicaSpan(START + created * MINUTE, None if length is None else START + (created + length) * MINUTE)
            for created, length in drawn]


@settings(max_examples=200, deadline=None)
@given(rows=rows, step_minutes=st.integers(min_value=1, max_value=17), span_minutes=st.integers(1, 60))
def test_every_row_in_the_window_is_in_exactly_one_step(rows, step_minutes, span_minutes):
    end = START + span_minutes * MINUTE
    made = minute_rows(rows)
    steps, summary = deployment_steps(made, [], start=START, end=end, step=step_minutes * MINUTE, **SLO)
    inside = [row for row in made if START <= row.minute < end]
    assert sum(step.requests for step in steps) == summary.requests == sum(row.requests for row in inside)
    assert len(steps) == -(-span_minutes // step_minutes)
    assert sum(step.seconds for step in steps) == span_minutes * 60
    # The window's percentiles are those of every row inside it merged, whatever the steps.
    merged = latency.merge(row.ttft for row in inside)
    expected = latency.histogram_quantile(0.95, merged)
    assert summary.ttft.p95 == (None if expected is None else pytest.approx(round(expected * 1000, 3)))


@settings(max_examples=200, deadline=None)
@given(spans=spans, step_minutes=st.integers(min_value=1, max_value=13), span_minutes=st.integers(1, 60))
def test_replicas_per_step_count_every_replica_overlapping_it(spans, step_minutes, span_minutes):
    end, step = START + span_minutes * MINUTE, step_minutes * MINUTE
    made = replica_spans(spans)
    steps, _summary = deployment_steps([], made, start=START, end=end, step=step, **SLO)
    for result in steps:
        step_end = min(result.start + step, end)
        overlapping = [span for span in made
                       if span.start < step_end and (span.end is None or span.end > result.start)
                       and (span.end is None or span.end > span.start)]
        assert result.replicas == len(overlapping)


def test_a_step_without_requests_has_no_percentiles_and_no_verdict():
    steps, summary = deployment_steps([], [], start=START, end=START + 3 * MINUTE, step=MINUTE, **SLO)
    assert [step.within_slo for step in steps] == [None, None, None]
    assert steps[0].ttft == Percentiles(None, None, None) and steps[0].request_rate == 0.0
    assert summary.within_slo is None and summary.steps_with_traffic == 0


def test_only_known_percentiles_are_judged():
    assert within_slo(Percentiles(1, 400, 900), Percentiles(None, None, None), **SLO) is True
    assert within_slo(Percentiles(1, 600, 900), Percentiles(None, None, None), **SLO) is False
    assert within_slo(Percentiles(1, 400, 900), Percentiles(1, 101, 200), **SLO) is False
    assert within_slo(Percentiles(1, 500, 900), Percentiles(1, 100, 200), **SLO) is True  # "at most"


def test_the_smallest_step_that_fits_is_suggested_in_whole_minutes():
    assert smallest_step_for(timedelta(days=2), 1440) == timedelta(minutes=2)
    assert smallest_step_for(timedelta(days=31), 1440) == timedelta(minutes=31)
    assert smallest_step_for(timedelta(hours=1), 1440) == timedelta(minutes=1)


OTHER_LE = [0.1, 0.5, 2.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(lambda c: {"le": LE, "counts": c, "sum": 1.0}, counts),
    st.builds(lambda c: {"le": OTHER_LE, "counts": c, "sum": 2.0},
              st.lists(st.integers(0, 50), min_size=len(OTHER_LE) + 1, max_size=len(OTHER_LE) + 1)),
    st.just({})), max_size=30))
def test_the_fast_merge_equals_the_reference_merge(histograms):
    # Bucket counts are exact; only the order of float additions of `sum` may differ.
    fast, reference = merged(histograms), latency.merge(histograms)
    assert {k: v for k, v in fast.items() if k != "sum"} == {k: v for k, v in reference.items() if k != "sum"}
    assert fast.get("sum", 0.0) == pytest.approx(reference.get("sum", 0.0))


def test_a_malformed_histogram_is_refused_not_miscounted():
    with pytest.raises(ValueError):
        merged([{"le": LE, "counts": [1] * 5, "sum": 0.0}, {"le": LE, "counts": [1, 2], "sum": 0.0}])


# --- hour rows: the same answers from fewer rows ----------------------------------------------

HOUR = timedelta(hours=1)
DAY_START = datetime(2025, 3, 1, tzinfo=UTC)


def minutes_of(ranges) -> list[datetime]:
    return [low + offset * MINUTE for low, high in ranges for offset in range((high - low) // MINUTE)]


def hours_of(ranges) -> list[datetime]:
    return [low + offset * HOUR for low, high in ranges for offset in range((high - low) // HOUR)]


whole_hour_steps = st.integers(1, 5).map(lambda hours: hours * HOUR)
any_steps = st.one_of(whole_hour_steps, st.integers(1, 200).map(lambda minutes: minutes * MINUTE))


@settings(max_examples=300, deadline=None)
@given(offset=st.integers(0, 24 * 60), span=st.integers(1, 30 * 60), step=any_steps)
def test_the_plan_reads_every_minute_of_the_window_once(offset, span, step):
    start = DAY_START + offset * MINUTE
    end = start + span * MINUTE
    plan = rollup_plan(start, end, step)
    by_minute = minutes_of(plan.minute_ranges)
    by_hour = [hour + offset * MINUTE for hour in hours_of(plan.hour_ranges) for offset in range(60)]
    assert sorted(by_minute + by_hour) == [start + offset * MINUTE for offset in range(span)]
    for hour in hours_of(plan.hour_ranges):  # each hour inside one step
        assert (hour - start) // step == (hour + HOUR - MINUTE - start) // step
    if step % HOUR:
        assert plan.hour_ranges == ()


def test_a_month_in_days_on_the_hour_reads_hour_rows_only():
    start = DAY_START
    plan = rollup_plan(start, start + timedelta(days=31), timedelta(days=1))
    assert plan == RollupPlan(hour_ranges=((start, start + timedelta(days=31)),), minute_ranges=())


def test_a_month_in_days_off_the_hour_reads_minutes_only_around_the_step_edges():
    start = DAY_START + timedelta(hours=10, minutes=37)
    plan = rollup_plan(start, start + timedelta(days=31), timedelta(days=1))
    assert len(hours_of(plan.hour_ranges)) == 31 * 23
    # Before the first whole hour, across each of the 30 step edges, after the last whole hour.
    assert len(plan.minute_ranges) == 32 and len(minutes_of(plan.minute_ranges)) == 31 * 60


def test_an_hour_row_across_a_step_edge_is_refused():
    row = HourRow(START, 1, {"le": LE, "counts": [1, 0, 0, 0, 0], "sum": 0.05}, {}, {})
    with pytest.raises(ValueError, match="not inside one step"):
        deployment_steps([row], [], start=START - 30 * MINUTE, end=START + 2 * HOUR, step=HOUR, **SLO)
    with pytest.raises(ValueError, match="not inside one step"):
        deployment_steps([row], [], start=START, end=START + 30 * MINUTE, step=HOUR, **SLO)


def latency_histogram(le):
    return st.builds(lambda c, s: {"le": le, "counts": c, "sum": s},
                     st.lists(st.integers(0, 40), min_size=len(le) + 1, max_size=len(le) + 1),
                     st.floats(0, 100, allow_nan=False))


# Mostly one set of bounds, sometimes another (a vLLM upgrade), sometimes nothing observed.
histograms = st.one_of(latency_histogram(LE), latency_histogram(LE), latency_histogram(OTHER_LE), st.just({}))
minute_rows_over_hours = st.lists(
    st.tuples(st.integers(0, 8 * 60 - 1), st.integers(0, 500), histograms, histograms, histograms),
    max_size=80, unique_by=lambda row: row[0])


def hour_rows_merging(rows: list[MinuteRow]) -> list[HourRow]:
    """What LatencyHourRollup holds: each hour's minute rows merged."""
    hours: dict[datetime, list[MinuteRow]] = {}
    for row in rows:
        hours.setdefault(row.minute.replace(minute=0), []).append(row)
    return [HourRow(hour, sum(row.requests for row in group),
                    *(latency.merge(getattr(row, name) for row in group) for name in ("ttft", "tpot", "e2e")))
            for hour, group in hours.items()]


@settings(max_examples=300, deadline=None)
@given(drawn=minute_rows_over_hours, offset=st.integers(0, 3 * 60), span=st.integers(1, 6 * 60), step=any_steps,
       slo_ms=st.sampled_from([150.0, 400.0, 800.0]))
def test_hour_rows_give_the_same_steps_and_summary_as_minute_rows(drawn, offset, span, step, slo_ms):
    rows = [MinuteRow(DAY_START + minute * MINUTE, requests, ttft, tpot, e2e)
            for minute, requests, ttft, tpot, e2e in drawn]
    start = DAY_START + offset * MINUTE
    end = start + span * MINUTE
    plan = rollup_plan(start, end, step)
    hour_starts = set(hours_of(plan.hour_ranges))
    planned = ([row for row in hour_rows_merging(rows) if row.hour in hour_starts]
               + [row for row in rows if any(low <= row.minute < high for low, high in plan.minute_ranges)])
    slo = {"slo_ttft_p95_ms": slo_ms, "slo_tpot_p95_ms": slo_ms / 4}
    spans = [ReplicaSpan(DAY_START + HOUR, None)]
    assert deployment_steps(planned, spans, start=start, end=end, step=step, **slo) == \
        deployment_steps(rows, spans, start=start, end=end, step=step, **slo)
