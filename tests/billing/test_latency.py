"""Latency histograms: merging by adding buckets, and percentiles as Prometheus's
histogram_quantile computes them."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import latency

LE = [0.1, 0.5, 1.0, 5.0]


def hist(counts, total=0.0, le=LE):
    return {"le": list(le), "counts": list(counts), "sum": total}


def test_the_median_interpolates_linearly_within_its_bucket():
    # 10 observations in (0.1, 0.5]: rank 5 of 10 is half-way through that bucket.
    assert latency.quantile(0.5, LE, [0, 10, 0, 0, 0]) == pytest.approx(0.3)
    # 4 in the first bucket (from 0), 4 in the second: rank 6 is 2 of the second's 4 → 0.1 + 0.4 × 2/4.
    assert latency.quantile(0.75, LE, [4, 4, 0, 0, 0]) == pytest.approx(0.3)
    assert latency.quantile(0.25, LE, [4, 4, 0, 0, 0]) == pytest.approx(0.05)


def test_a_rank_in_the_inf_bucket_answers_the_highest_finite_bound():
    assert latency.quantile(0.99, LE, [1, 0, 0, 0, 99]) == 5.0


def test_an_empty_histogram_has_no_percentile():
    assert latency.quantile(0.95, LE, [0, 0, 0, 0, 0]) is None
    assert latency.histogram_quantile(0.95, {}) is None
    assert latency.quantile(0.5, [], [7]) is None  # only +Inf: nothing to say


def test_q_zero_and_one_land_in_the_first_and_last_non_empty_buckets():
    counts = [0, 3, 0, 2, 0]
    assert latency.quantile(0.0, LE, counts) == 0.1  # the lower bound of the first non-empty bucket
    assert latency.quantile(1.0, LE, counts) == 5.0


def test_a_trailing_inf_bound_is_accepted():
    assert latency.quantile(0.5, [*LE, math.inf], [0, 10, 0, 0, 0]) == pytest.approx(0.3)


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_a_quantile_outside_zero_to_one_is_refused(q):
    with pytest.raises(ValueError, match="between 0 and 1"):
        latency.quantile(q, LE, [1, 0, 0, 0, 0])


def test_counts_must_have_the_inf_bucket():
    with pytest.raises(ValueError, match="\\+Inf"):
        latency.quantile(0.5, LE, [1, 2, 3, 4])


def test_same_bounds_merge_by_adding_counts_and_sums():
    merged = latency.merge([hist([1, 2, 0, 0, 1], 3.5), None, {}, hist([0, 1, 1, 0, 0], 1.2)])
    assert merged == {"le": LE, "counts": [1, 3, 1, 0, 1], "sum": pytest.approx(4.7)}
    assert latency.merge([]) == {} and latency.merge([{}, None]) == {}


def test_different_bounds_merge_onto_the_bounds_they_share():
    fine = hist([1, 2, 3, 4, 5], 10.0)  # (0,.1] (.1,.5] (.5,1] (1,5] (5,inf)
    coarse = hist([7, 1, 0], 2.0, le=[0.5, 5.0])  # (0,.5] (.5,5] (5,inf)
    merged = latency.merge([fine, coarse])
    assert merged["le"] == [0.5, 5.0]
    assert merged["counts"] == [1 + 2 + 7, 3 + 4 + 1, 5 + 0]
    assert latency.count(merged) == latency.count(fine) + latency.count(coarse)


def test_from_cumulative_gives_per_bucket_counts_and_refuses_a_decrease():
    assert latency.from_cumulative([0.1, 0.5], [2, 5, 6], 1.5) == {"le": [0.1, 0.5], "counts": [2, 3, 1], "sum": 1.5}
    with pytest.raises(ValueError, match="decrease"):
        latency.from_cumulative([0.1, 0.5], [2, 1, 6], 1.5)


def test_percentiles_of_many_observations_are_close_to_the_exact_ones():
    # Fine buckets: the interpolated p95 of uniform data is within one bucket width of the truth.
    rng = random.Random(5)
    values = [rng.uniform(0, 2) for _ in range(20_000)]
    le = [round(0.05 * i, 2) for i in range(1, 41)]
    counts = [0] * (len(le) + 1)
    for value in values:
        counts[next((i for i, b in enumerate(le) if value <= b), len(le))] += 1
    exact = sorted(values)[int(0.95 * len(values))]
    assert abs(latency.quantile(0.95, le, counts) - exact) < 0.05


histograms = st.lists(st.integers(min_value=0, max_value=50), min_size=len(LE) + 1, max_size=len(LE) + 1)


@given(st.lists(histograms, min_size=1, max_size=6), st.floats(min_value=0, max_value=1))
def test_merging_keeps_every_observation_and_percentiles_stay_within_bounds(parts, q):
    merged = latency.merge([hist(counts, float(sum(counts))) for counts in parts])
    total = sum(sum(counts) for counts in parts)
    assert latency.count(merged) == total
    value = latency.histogram_quantile(q, merged)
    if total == 0:
        assert value is None
    else:
        assert 0.0 <= value <= LE[-1]


@given(histograms, st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1))
def test_percentiles_never_decrease_with_q(counts, q1, q2):
    low, high = sorted((q1, q2))
    if sum(counts) == 0:
        return
    assert latency.quantile(low, LE, counts) <= latency.quantile(high, LE, counts) + 1e-12
