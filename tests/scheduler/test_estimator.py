"""The quote's arithmetic: request sizes as log-normals, a replica's capacity on the mean request."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.architecture import parse_config
from scheduler.catalog import efficiency_for, hardware_catalog, model_templates
from scheduler.estimator import Slo, Traffic, best_option, lognormal_mean, lognormal_p90, replica_options
from scheduler.perf import MAX_NUM_SEQS, Workload, replica_capacity

LLAMA_8B = parse_config(model_templates()["llama-3.1-8b"]["config"])
H100 = hardware_catalog()["h100-80gb"]


def test_the_mean_and_p90_of_the_azure_conversation_sizes():
    # Median 1,020 / p90 2,734 (the Azure 2023 conversation trace) has p95 3,616 and mean 1,371.
    assert lognormal_mean(1020, 3616) == 1371
    assert lognormal_p90(1020, 3616) == 2734
    assert (lognormal_mean(512, 1024), lognormal_p90(512, 1024)) == (560, 879)


@given(st.integers(1, 100_000), st.floats(1.0, 50.0))
def test_the_mean_and_p90_lie_between_the_median_and_the_p95(median, spread):
    p95 = math.ceil(median * spread)
    assert median <= lognormal_mean(median, p95) <= p95
    assert median <= lognormal_p90(median, p95) <= p95


def test_a_p95_at_or_below_the_median_is_a_fixed_size():
    assert lognormal_mean(700, 700) == lognormal_p90(700, 700) == 700
    assert lognormal_mean(700, 100) == 700


def test_capacity_is_counted_on_the_mean_request_not_the_median():
    traffic = Traffic(requests_per_s=1, input_tokens=512, output_tokens=256, input_tokens_p95=1024,
                      output_tokens_p95=512)
    option = best_option(replica_options(LLAMA_8B, "bf16", H100, efficiency_for(H100), traffic, Slo(2000, 100)))
    assert traffic.mean == Workload(560, 280)
    on_the_median = replica_capacity(LLAMA_8B, "bf16", H100, efficiency_for(H100), 1, typical=traffic.typical,
                                     p95=traffic.p95, ttft_slo_ms=2000, tpot_slo_ms=100)
    # Bigger requests on average: fewer of them per second (27.8 req/s, not the median's 30.9).
    assert option.capacity.requests_per_s == pytest.approx(27.83, abs=0.01)
    assert on_the_median.requests_per_s > 1.1 * option.capacity.requests_per_s


def test_capacity_never_assumes_more_running_requests_than_the_engine_allows():
    # Memory holds 268 p95 requests of 1,536 tokens beside the weights; vLLM runs at most 256.
    capacity = replica_capacity(LLAMA_8B, "bf16", H100, efficiency_for(H100), 1, typical=Workload(560, 280),
                                p95=Workload(1024, 512), ttft_slo_ms=2000, tpot_slo_ms=100)
    assert capacity.concurrency == MAX_NUM_SEQS
