"""The pure core behind a deployment's metrics: steps, percentiles per step, replicas per step."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing import latency
from billing.metrics import (
    MinuteRow,
    Percentiles,
    ReplicaSpan,
    deployment_steps,
    merged,
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
