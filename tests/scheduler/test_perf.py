"""Properties of the roofline performance model, on random hardware, models and workloads."""

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.architecture import parse_config
from scheduler.catalog import efficiency_for, hardware_catalog, model_templates
from scheduler.perf import (
    Efficiency,
    Hardware,
    Workload,
    estimate,
    fit_reason,
    max_throughput_within_tpot,
    replica_capacity,
    smallest_fitting_degree,
)

TEXT_MODELS = [slug for slug, t in model_templates().items() if t["modality"] == "text"]
ARCHS = {slug: parse_config(model_templates()[slug]["config"]) for slug in TEXT_MODELS}

hardware = st.builds(
    Hardware,
    slug=st.just("test-hw"), vendor=st.sampled_from(["nvidia", "amd", "intel"]), kind=st.just("gpu"),
    memory_gb=st.floats(16, 256), bandwidth_tbs=st.floats(0.2, 8), bf16_tflops=st.floats(50, 2500),
    fp8_tflops=st.one_of(st.none(), st.floats(100, 5000)), int8_tops=st.none(),
    interconnect_gbs=st.floats(32, 1800), accelerators_per_node=st.sampled_from([1, 2, 4, 8]),
)
efficiency = st.builds(
    Efficiency, bandwidth=st.floats(0.3, 0.95), prefill=st.floats(0.2, 0.8), decode_compute=st.floats(0.1, 0.8),
    step_overhead_ms=st.floats(0, 10), allreduce_latency_us=st.floats(1, 100),
)
workloads = st.builds(Workload, input_tokens=st.integers(1, 8000), output_tokens=st.integers(1, 2000),
                      concurrency=st.integers(1, 256))
models = st.sampled_from(TEXT_MODELS)
dtypes = st.sampled_from(["bf16", "fp8", "int8", "int4"])


def _fitting_degree(arch, dtype, hw, workload):
    degree = smallest_fitting_degree(arch, dtype, hw, workload.input_tokens + workload.output_tokens)
    assume(degree is not None)
    return degree


@settings(max_examples=150, deadline=None)
@given(models, dtypes, hardware, efficiency, workloads, st.floats(1.01, 4))
def test_more_bandwidth_never_makes_tpot_worse(slug, dtype, hw, eff, workload, factor):
    arch = ARCHS[slug]
    degree = _fitting_degree(arch, dtype, hw, workload)
    slow = estimate(arch, dtype, hw, eff, workload, accelerators=degree)
    fast = estimate(arch, dtype, replace(hw, bandwidth_tbs=hw.bandwidth_tbs * factor), eff, workload,
                    accelerators=degree)
    assert fast.tpot_ms <= slow.tpot_ms * (1 + 1e-9)
    # (Not TTFT: in a closed loop, faster decode cycles requests faster and queues more prefills.)


@settings(max_examples=150, deadline=None)
@given(models, dtypes, hardware, efficiency, workloads, st.integers(1, 256))
def test_more_concurrency_never_lowers_throughput_or_tpot(slug, dtype, hw, eff, workload, extra):
    arch = ARCHS[slug]
    degree = _fitting_degree(arch, dtype, hw, workload)
    low = estimate(arch, dtype, hw, eff, workload, accelerators=degree)
    high = estimate(arch, dtype, hw, eff, replace(workload, concurrency=workload.concurrency + extra),
                    accelerators=degree)
    assert high.output_tokens_per_s >= low.output_tokens_per_s * (1 - 1e-9)
    assert high.tpot_ms >= low.tpot_ms * (1 - 1e-9)


@settings(max_examples=150, deadline=None)
@given(models, hardware, workloads)
def test_fp8_needs_no_more_accelerators_than_bf16(slug, hw, workload):
    arch = ARCHS[slug]
    context = workload.input_tokens + workload.output_tokens
    bf16 = smallest_fitting_degree(arch, "bf16", hw, context, workload.concurrency)
    fp8 = smallest_fitting_degree(arch, "fp8", hw, context, workload.concurrency)
    if bf16 is not None:
        assert fp8 is not None and fp8 <= bf16


@settings(max_examples=100, deadline=None)
@given(models, dtypes, hardware, efficiency, workloads)
def test_throughput_within_a_tpot_slo_respects_it(slug, dtype, hw, eff, workload):
    arch = ARCHS[slug]
    degree = _fitting_degree(arch, dtype, hw, workload)
    at_one = estimate(arch, dtype, hw, eff, replace(workload, concurrency=1), accelerators=degree)
    slo = at_one.tpot_ms * 2
    best = max_throughput_within_tpot(arch, dtype, hw, eff, degree, workload, slo)
    assert best >= at_one.output_tokens_per_s * (1 - 1e-9)
    assert best <= estimate(arch, dtype, hw, eff, workload, accelerators=degree).max_output_tokens_per_s \
        * (1 + 1e-9) or best <= at_one.output_tokens_per_s * 1e6


def test_a_model_that_does_not_fit_says_so_and_why():
    l4 = hardware_catalog()["l4-24gb"]
    arch = ARCHS["llama-3.1-70b"]
    result = estimate(arch, "bf16", l4, efficiency_for(l4), Workload(1000, 100), accelerators=1)
    assert not result.fits
    assert "weights need" in result.reason and "GB" in result.reason
    assert math.isnan(result.ttft_ms) and result.output_tokens_per_s == 0
    too_long = fit_reason(ARCHS["mistral-7b"], "bf16", hardware_catalog()["h100-80gb"], 1, 40_000, 1)
    assert "context length" in too_long


def test_tensor_parallelism_must_divide_the_heads():
    h100 = hardware_catalog()["h100-80gb"]
    assert "does not divide" in fit_reason(ARCHS["qwen2.5-7b"], "bf16", replace(h100, accelerators_per_node=8), 8,
                                           1000, 1) or ARCHS["qwen2.5-7b"].num_attention_heads % 8 == 0


def test_seventy_billion_needs_several_h100s_in_bf16_and_fewer_in_fp8():
    h100 = hardware_catalog()["h100-80gb"]
    arch = ARCHS["llama-3.1-70b"]
    assert smallest_fitting_degree(arch, "bf16", h100, 2048) == 4  # 141 GB of weights
    assert smallest_fitting_degree(arch, "fp8", h100, 2048) == 2


def test_replica_capacity_meets_the_slo_it_was_asked_for():
    h100 = hardware_catalog()["h100-80gb"]
    arch = ARCHS["llama-3.1-8b"]
    capacity = replica_capacity(arch, "bf16", h100, efficiency_for(h100), 1, typical=Workload(1000, 130),
                                p95=Workload(3000, 420), ttft_slo_ms=1000, tpot_slo_ms=50)
    assert capacity.meets_slo and capacity.requests_per_s > 0
    assert capacity.ttft_ms <= 1000 and capacity.tpot_ms <= 50
    impossible = replica_capacity(arch, "bf16", h100, efficiency_for(h100), 1, typical=Workload(1000, 130),
                                  p95=Workload(3000, 420), ttft_slo_ms=1, tpot_slo_ms=50)
    assert not impossible.meets_slo and "TTFT" in impossible.reason


@pytest.mark.parametrize("slug", sorted(hardware_catalog()))
def test_every_catalog_accelerator_serves_llama_8b(slug):
    hw = hardware_catalog()[slug]
    result = estimate(ARCHS["llama-3.1-8b"], "bf16", hw, efficiency_for(hw), Workload(512, 128, 4))
    assert result.fits, result.reason
    assert result.ttft_ms > 0 and result.tpot_ms > 0 and result.output_tokens_per_s > 0
