"""Roofline performance model of LLM serving. Pure: no Django, no I/O.

For a model (its Architecture and dtype) on a hardware type with a tensor-parallel
degree, it estimates memory fit, time to first token (prefill), time per output
token (decode), throughput at a concurrency, the largest concurrency memory
allows, and a replica's capacity in requests/s within a latency SLO — the
`rps_per_replica` placement consumes.

The model, in one paragraph. Prefill is compute-bound: 2 FLOPs per active
parameter per prompt token plus causal attention, at `prefill_efficiency` of peak.
A decode step reads the weights (÷ TP) and every running request's KV cache at
`bandwidth_efficiency` of peak bandwidth, or is compute-bound at large batch,
whichever is slower; tensor parallelism adds two all-reduces per layer over the
interconnect; each step has a fixed `step_overhead_ms` (scheduling, kernel
launches). Under a closed loop of `c` concurrent requests, the engine shares its
time between prefills and decode steps: the other requests' prefills stretch
TTFT and TPOT, and Little's law gives the request rate (see `_under_load`).

Efficiency factors per vendor family are calibrated against published
measurements (scheduler/data/efficiency.yaml cites them; `python -m bench
perf-model` tests the model on points held out of the calibration).
"""

import math
from dataclasses import dataclass, replace

from scheduler.architecture import Architecture

GB = 1e9
TERA = 1e12

# The fraction of accelerator memory the serving engine may use (vLLM's default
# gpu_memory_utilization) and what it keeps back for the runtime and activations.
MEMORY_UTILIZATION = 0.90
RUNTIME_RESERVE_BYTES = 1.0 * GB
# Activations of one scheduler step: vLLM's default max_num_batched_tokens (8192)
# tokens × hidden × a handful of live 2-byte tensors.
ACTIVATION_TOKENS = 8192
ACTIVATION_TENSORS = 12

TENSOR_PARALLEL_DEGREES = (1, 2, 4, 8, 16)

# vLLM's max_num_seqs: a replica never runs more requests at once, whatever memory allows.
# 256 is vLLM's default on most GPUs, but recent vLLM defaults to 1024 on GPUs of ≥ 70 GiB
# other than A100, so the Kubernetes driver passes it to GPU engines explicitly. The simulated
# fleet and the autoscaling benchmark run their engines with it too.
MAX_NUM_SEQS = 256


@dataclass(frozen=True)
class Hardware:
    slug: str
    vendor: str
    kind: str  # gpu | npu
    memory_gb: float  # decimal GB, as vendors state it
    bandwidth_tbs: float
    bf16_tflops: float
    fp8_tflops: float | None
    int8_tops: float | None
    interconnect_gbs: float  # per accelerator, bidirectional
    accelerators_per_node: int


@dataclass(frozen=True)
class Efficiency:
    """How close a serving stack on this hardware gets to the roofline."""

    bandwidth: float  # of peak memory bandwidth, in decode
    prefill: float  # of peak dense FLOPS, in prefill
    decode_compute: float  # of peak dense FLOPS, in decode at large batch
    step_overhead_ms: float  # fixed cost of one decode step
    allreduce_latency_us: float  # fixed cost of one all-reduce
    # Launch cost of one layer's kernels in prefill, which (unlike decode) runs without
    # CUDA graphs: it dominates the first token of short prompts.
    prefill_layer_overhead_us: float = 0.0


@dataclass(frozen=True)
class Workload:
    input_tokens: int
    output_tokens: int
    concurrency: int = 1


@dataclass(frozen=True)
class Estimate:
    hardware: str
    accelerators: int
    dtype: str
    fits: bool
    reason: str  # why it does not fit; "" when it does
    weight_bytes_per_accelerator: float
    kv_bytes_per_request: float
    max_concurrency: int
    concurrency: int
    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s: float
    requests_per_s: float
    max_output_tokens_per_s: float


@dataclass(frozen=True)
class ReplicaCapacity:
    """What one replica serves within the SLO: the concurrency it runs at and its request rate."""

    meets_slo: bool
    concurrency: int
    requests_per_s: float
    ttft_ms: float
    tpot_ms: float
    reason: str


# --- memory -------------------------------------------------------------------------------


def _kv_dtype_bytes(dtype: str) -> float:
    # FP8 deployments run an FP8 KV cache (vLLM kv_cache_dtype=fp8, TensorRT-LLM FP8 KV);
    # weight-only int8/int4 keep a 16-bit cache.
    return 1.0 if dtype == "fp8" else 2.0


def kv_bytes_per_request(arch: Architecture, dtype: str, tokens: int, accelerators: int) -> float:
    """KV cache of one request on one accelerator. KV heads split across TP; when TP exceeds
    the number of KV heads, heads are replicated, so the split stops at that number."""
    split = min(accelerators, arch.num_kv_heads)
    return tokens * arch.kv_bytes_per_token(_kv_dtype_bytes(dtype)) / split


def _usable_bytes(hw: Hardware, arch: Architecture, accelerators: int) -> float:
    activations = ACTIVATION_TOKENS * (arch.hidden_size + arch.intermediate_size / accelerators) * 2 \
        * ACTIVATION_TENSORS / 4
    return hw.memory_gb * GB * MEMORY_UTILIZATION - RUNTIME_RESERVE_BYTES - activations


def max_concurrency(arch: Architecture, dtype: str, hw: Hardware, accelerators: int, context_tokens: int) -> int:
    """How many requests of `context_tokens` (prompt + output) fit in memory at once (0 = none)."""
    free = _usable_bytes(hw, arch, accelerators) - arch.weight_bytes(dtype) / accelerators
    if free <= 0:
        return 0
    per_request = kv_bytes_per_request(arch, dtype, context_tokens, accelerators)
    if per_request == 0:  # embedding models keep no cache: bounded by the batch the engine runs
        return 256
    return int(free // per_request)


def _valid_degree(arch: Architecture, hw: Hardware, accelerators: int) -> str:
    if accelerators > hw.accelerators_per_node:
        return f"{accelerators} accelerators exceed the {hw.accelerators_per_node} of one {hw.slug} node"
    # GPU engines (vLLM, TensorRT-LLM) shard attention heads evenly; NPU compilers (Neuron,
    # SynapseAI, XLA) shard at their own granularity, so the rule is not theirs.
    if hw.kind == "gpu" and arch.num_attention_heads % accelerators:
        return f"tensor parallelism {accelerators} does not divide {arch.num_attention_heads} attention heads"
    return ""


def fit_reason(arch: Architecture, dtype: str, hw: Hardware, accelerators: int, context_tokens: int,
               concurrency: int) -> str:
    """Why this shape cannot serve `concurrency` requests ("" when it can)."""
    invalid = _valid_degree(arch, hw, accelerators)
    if invalid:
        return invalid
    if context_tokens > arch.context_length:
        return f"{context_tokens} tokens exceed the model's context length of {arch.context_length}"
    weights = arch.weight_bytes(dtype) / accelerators
    usable = _usable_bytes(hw, arch, accelerators)
    if weights >= usable:
        return (f"weights need {weights / GB:.1f} GB per accelerator; {hw.slug} has {usable / GB:.1f} GB usable "
                f"of {hw.memory_gb:g} GB at tensor parallelism {accelerators}")
    room = max_concurrency(arch, dtype, hw, accelerators, context_tokens)
    if room < concurrency:
        return (f"KV cache for {concurrency} requests of {context_tokens} tokens does not fit beside the weights "
                f"(room for {room})")
    return ""


def smallest_fitting_degree(arch: Architecture, dtype: str, hw: Hardware, context_tokens: int,
                            concurrency: int = 1) -> int | None:
    for degree in TENSOR_PARALLEL_DEGREES:
        if degree <= hw.accelerators_per_node and not fit_reason(arch, dtype, hw, degree, context_tokens,
                                                                 concurrency):
            return degree
    return None


# --- time ---------------------------------------------------------------------------------


def _peak_flops(hw: Hardware, dtype: str) -> float:
    # FP8 runs on FP8 units where they exist; weight-only int8/int4 (and FP8 on hardware
    # without FP8 units, e.g. A100 via Marlin kernels) dequantise and compute in BF16.
    if dtype == "fp8" and hw.fp8_tflops:
        return hw.fp8_tflops * TERA
    return hw.bf16_tflops * TERA


def _allreduce_seconds(hw: Hardware, eff: Efficiency, accelerators: int, tokens: int, hidden: int) -> float:
    """One ring all-reduce of `tokens` hidden states across the tensor-parallel group."""
    if accelerators == 1:
        return 0.0
    payload = tokens * hidden * 2.0
    link = hw.interconnect_gbs * GB / 2  # one direction
    return 2 * (accelerators - 1) / accelerators * payload / link + eff.allreduce_latency_us * 1e-6


def prefill_seconds(arch: Architecture, dtype: str, hw: Hardware, eff: Efficiency, accelerators: int,
                    input_tokens: int) -> float:
    """Time to process one prompt: compute-bound, but never faster than reading the weights once."""
    attention = 2 * arch.num_layers * input_tokens ** 2 * arch.num_attention_heads * arch.head_dim
    flops = 2 * arch.active_params * input_tokens + attention
    compute = flops / (accelerators * _peak_flops(hw, dtype) * eff.prefill)
    weights = arch.weight_bytes(dtype) / accelerators / (hw.bandwidth_tbs * TERA * eff.bandwidth)
    communication = 2 * arch.num_layers * _allreduce_seconds(hw, eff, accelerators, input_tokens, arch.hidden_size)
    launches = arch.num_layers * eff.prefill_layer_overhead_us * 1e-6
    return max(compute, weights) + communication + launches + eff.step_overhead_ms / 1000


def _expert_fraction_read(arch: Architecture, batch: int) -> float:
    """Share of a MoE layer's experts a decode step of `batch` tokens touches (uniform routing)."""
    if not arch.is_moe:
        return 1.0
    untouched = (1 - arch.experts_per_token / arch.num_experts) ** batch
    return 1 - untouched


def decode_step_seconds(arch: Architecture, dtype: str, hw: Hardware, eff: Efficiency, accelerators: int,
                        batch: int, context_tokens: float) -> float:
    """One decode step producing one token for each of `batch` running requests."""
    bytes_per_weight = arch.weight_bytes(dtype) / max(arch.total_params, 1)
    dense_weights = (arch.total_params - arch.expert_params) * bytes_per_weight
    expert_weights = arch.expert_params * bytes_per_weight * _expert_fraction_read(arch, batch)
    kv = batch * kv_bytes_per_request(arch, dtype, int(context_tokens), accelerators)
    memory = ((dense_weights + expert_weights) / accelerators + kv) / (hw.bandwidth_tbs * TERA * eff.bandwidth)
    attention = 4 * arch.num_layers * context_tokens * arch.num_attention_heads * arch.head_dim * batch
    compute = (2 * arch.active_params * batch + attention) / (
        accelerators * _peak_flops(hw, dtype) * eff.decode_compute)
    communication = 2 * arch.num_layers * _allreduce_seconds(hw, eff, accelerators, batch, arch.hidden_size)
    return max(memory, compute) + communication + eff.step_overhead_ms / 1000


@dataclass(frozen=True)
class _Loaded:
    ttft: float
    tpot: float
    requests_per_s: float


def _under_load(arch, dtype, hw, eff, accelerators, workload: Workload) -> _Loaded:
    """Closed loop of `concurrency` requests: prefill and decode share the engine.

    A request's own prefill and decode are sequential; the other c − 1 requests'
    prefills interleave with them and stretch both TTFT and TPOT by
    s = 1 + (c − 1)·t_p / (t_p + O·t_step). Little's law then gives the request
    rate X = c / (c·t_p + O·t_step). At c = 1: TTFT = t_p, TPOT = t_step.
    """
    c = workload.concurrency
    output = 0 if arch.is_embedding else max(workload.output_tokens, 1)
    t_prefill = prefill_seconds(arch, dtype, hw, eff, accelerators, workload.input_tokens)
    t_step = decode_step_seconds(arch, dtype, hw, eff, accelerators, c, workload.input_tokens + output / 2) \
        if output else 0.0
    stretch = 1 + (c - 1) * t_prefill / (t_prefill + output * t_step)
    rate = c / (c * t_prefill + output * t_step)
    return _Loaded(ttft=t_prefill * stretch, tpot=t_step * stretch, requests_per_s=rate)


def estimate(arch: Architecture, dtype: str, hw: Hardware, eff: Efficiency, workload: Workload,
             accelerators: int | None = None) -> Estimate:
    """The estimate of one replica shape; without `accelerators`, the smallest degree that fits."""
    context = workload.input_tokens + workload.output_tokens
    if accelerators is None:
        accelerators = smallest_fitting_degree(arch, dtype, hw, context, workload.concurrency) or \
            smallest_fitting_degree(arch, dtype, hw, context, 1) or min(hw.accelerators_per_node, 8)
    reason = fit_reason(arch, dtype, hw, accelerators, context, workload.concurrency)
    room = 0 if _valid_degree(arch, hw, accelerators) else max_concurrency(arch, dtype, hw, accelerators, context)
    weights = arch.weight_bytes(dtype) / accelerators
    kv = kv_bytes_per_request(arch, dtype, context, accelerators)
    if reason and room < 1:
        return Estimate(hw.slug, accelerators, dtype, False, reason, weights, kv, room, workload.concurrency,
                        math.nan, math.nan, 0.0, 0.0, 0.0)
    loaded = _under_load(arch, dtype, hw, eff, accelerators, workload)
    at_max = _under_load(arch, dtype, hw, eff, accelerators, replace(workload, concurrency=max(room, 1)))
    return Estimate(
        hardware=hw.slug, accelerators=accelerators, dtype=dtype, fits=not reason, reason=reason,
        weight_bytes_per_accelerator=weights, kv_bytes_per_request=kv, max_concurrency=room,
        concurrency=workload.concurrency, ttft_ms=loaded.ttft * 1000, tpot_ms=loaded.tpot * 1000,
        output_tokens_per_s=loaded.requests_per_s * workload.output_tokens,
        requests_per_s=loaded.requests_per_s,
        max_output_tokens_per_s=at_max.requests_per_s * workload.output_tokens,
    )


# --- SLO ----------------------------------------------------------------------------------


def _largest(predicate, upper: int) -> int:
    """Largest c in [1, upper] with predicate(c), assuming it holds up to some point and then fails."""
    if upper < 1 or not predicate(1):
        return 0
    low, high = 1, upper
    while low < high:
        middle = (low + high + 1) // 2
        if predicate(middle):
            low = middle
        else:
            high = middle - 1
    return low


def max_throughput_within_tpot(arch, dtype, hw, eff, accelerators, workload: Workload, tpot_slo_ms: float) -> float:
    """Output tokens/s of the largest concurrency whose TPOT stays within the SLO (0 if none does)."""
    room = max_concurrency(arch, dtype, hw, accelerators, workload.input_tokens + workload.output_tokens)

    def within(c):
        return _under_load(arch, dtype, hw, eff, accelerators, replace(workload, concurrency=c)).tpot * 1000 \
            <= tpot_slo_ms

    best = _largest(within, room)
    if not best:
        return 0.0
    return _under_load(arch, dtype, hw, eff, accelerators, replace(workload, concurrency=best)).requests_per_s \
        * workload.output_tokens


# p95 latencies sit above the mean of a steady closed loop: queueing variance of
# arrivals and of request sizes. Margins applied to the mean estimates.
P95_TTFT_MARGIN = 1.5
P95_TPOT_MARGIN = 1.15


def replica_capacity(arch: Architecture, dtype: str, hw: Hardware, eff: Efficiency, accelerators: int, *,
                     typical: Workload, p95: Workload, ttft_slo_ms: float, tpot_slo_ms: float) -> ReplicaCapacity:
    """Requests/s one replica serves with p95 TTFT and TPOT within the SLO.

    Latency is checked on the p95 request shape (long prompts make slow first
    tokens); throughput is that of the `typical` shape at the chosen concurrency — pass
    the *mean* request: a replica's request rate is its token rate ÷ the mean tokens per
    request (a median understates the work of skewed sizes). The concurrency is at most
    what memory holds of p95 requests and at most MAX_NUM_SEQS (the engine runs no more).
    This is the planning figure, at the SLO; a saturated replica serves more, late
    (the simulated fleet's `max_throughput`).
    """
    context = p95.input_tokens + p95.output_tokens
    reason = fit_reason(arch, dtype, hw, accelerators, context, 1)
    if reason:
        return ReplicaCapacity(False, 0, 0.0, math.nan, math.nan, reason)
    room = min(MAX_NUM_SEQS, max_concurrency(arch, dtype, hw, accelerators, context))

    def latencies(c):
        slow = _under_load(arch, dtype, hw, eff, accelerators, replace(p95, concurrency=c))
        return slow.ttft * 1000 * P95_TTFT_MARGIN, slow.tpot * 1000 * P95_TPOT_MARGIN

    def within(c):
        ttft, tpot = latencies(c)
        return ttft <= ttft_slo_ms and tpot <= tpot_slo_ms

    best = _largest(within, room)
    if not best:
        ttft, tpot = latencies(1)
        missed = []
        if ttft > ttft_slo_ms:
            missed.append(f"p95 TTFT {ttft:.0f} ms > {ttft_slo_ms:g} ms")
        if tpot > tpot_slo_ms:
            missed.append(f"p95 TPOT {tpot:.1f} ms > {tpot_slo_ms:g} ms")
        return ReplicaCapacity(False, 0, 0.0, ttft, tpot, "even one request misses the SLO: " + ", ".join(missed))
    ttft, tpot = latencies(best)
    rate = _under_load(arch, dtype, hw, eff, accelerators, replace(typical, concurrency=best)).requests_per_s
    return ReplicaCapacity(True, best, rate, ttft, tpot, "")
