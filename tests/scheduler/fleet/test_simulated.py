"""The simulated fleet: lifecycle in simulated time, determinism, persistence, vLLM metrics, failures."""

import math
import random
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from scheduler.architecture import parse_config
from scheduler.catalog import accelerator_specs, efficiency_for, hardware_catalog, model_templates
from scheduler.estimator import Slo, Traffic, best_option, lognormal_p90, replica_options
from scheduler.fleet import FleetDriver, FleetError, MetricsUnavailable, ReplicaNotFound, Spike, TrafficProfile
from scheduler.fleet.metrics import REQUEST_LATENCY_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS
from scheduler.fleet.simulated import SimulatedFleet, _Engine
from scheduler.perf import MAX_NUM_SEQS
from tests.scheduler.fleet.conftest import T0, Clock, make_spec

HOUR = 3600.0
LLAMA_8B = parse_config(model_templates()["llama-3.1-8b"]["config"])
H100 = hardware_catalog()["h100-80gb"]


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels) -> float:
    return sum(v for (sample, sample_labels), v in samples(text).items()
               if sample == name and all((k, str(x)) in sample_labels for k, x in labels.items()))


def startup_seconds(spec, fleet: SimulatedFleet) -> float:
    engine = _Engine(spec, fleet.engine_start_seconds)
    bandwidth = accelerator_specs()[spec.hardware]["load_bandwidth_gbs"]
    return fleet.pending_seconds + engine.weight_bytes / (bandwidth * 1e9) + fleet.engine_start_seconds


def test_it_is_a_fleet_driver(new_fleet):
    assert isinstance(new_fleet(), FleetDriver)


def test_replica_goes_pending_starting_ready_after_the_computed_startup_time(new_fleet, clock, spec):
    fleet = new_fleet()
    created = fleet.create_replica(spec)
    assert created.state == "pending" and created.endpoint == "" and created.ready_at is None
    startup = startup_seconds(spec, fleet)
    # Llama 3.1 8B in BF16 is ~16 GB: 8 s at the catalog's 2 GB/s, plus pending and engine start.
    assert 40 < startup < 50

    clock.tick(fleet.pending_seconds + 1)
    assert fleet.status(spec.replica_id).state == "starting"
    clock.now = T0 + startup - 0.5
    assert fleet.status(spec.replica_id).state == "starting"
    with pytest.raises(MetricsUnavailable):
        fleet.fetch_metrics(spec.replica_id)
    clock.now = T0 + startup + 0.5
    ready = fleet.status(spec.replica_id)
    assert ready.state == "ready"
    assert ready.endpoint == f"sim://{spec.replica_id}"
    assert ready.ready_at.timestamp() == pytest.approx(T0 + startup)
    assert ready.started_at.timestamp() == T0
    assert (ready.deployment_id, ready.node_id) == ("dep-1", "eu1-a-0001")


def test_bigger_weights_start_slower(new_fleet, clock):
    fleet = new_fleet()
    small = make_spec("llama-3.1-8b", replica_id="small")
    large = make_spec("llama-3.1-70b", replica_id="large", accelerators=4)
    assert startup_seconds(large, fleet) > startup_seconds(small, fleet) + 50
    fleet.create_replica(small)
    fleet.create_replica(large)
    clock.tick(startup_seconds(small, fleet) + 1)
    states = {s.replica_id: s.state for s in fleet.list_replicas()}
    assert states == {"small": "ready", "large": "starting"}


def test_delete_drains_then_stops_and_is_idempotent(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(spec)
    clock.tick(HOUR)
    fleet.delete_replica(spec.replica_id)
    draining = fleet.status(spec.replica_id)
    assert draining.state == "draining"
    assert draining.endpoint  # still serving what it has
    fleet.fetch_metrics(spec.replica_id)  # and still answering /metrics
    fleet.delete_replica(spec.replica_id)  # again: no change
    clock.tick(600)
    assert fleet.status(spec.replica_id).state == "stopped"
    with pytest.raises(MetricsUnavailable):
        fleet.fetch_metrics(spec.replica_id)
    fleet.delete_replica(spec.replica_id)
    fleet.delete_replica("never-existed")
    assert fleet.status(spec.replica_id).state == "stopped"


def test_deleting_a_starting_replica_stops_it_at_once(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(spec)
    clock.tick(10)
    fleet.delete_replica(spec.replica_id)
    assert fleet.status(spec.replica_id).state == "stopped"


def test_stopped_replicas_are_forgotten_after_an_hour(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(spec)
    fleet.delete_replica(spec.replica_id)
    clock.tick(10)
    assert [s.state for s in fleet.list_replicas()] == ["stopped"]
    clock.tick(2 * HOUR)
    assert fleet.list_replicas() == []


def test_unknown_replica_is_not_found(new_fleet):
    fleet = new_fleet()
    with pytest.raises(ReplicaNotFound):
        fleet.fetch_metrics("nope")
    with pytest.raises(ReplicaNotFound):
        fleet.status("nope")


def test_metrics_parse_with_vllm_names_labels_created_and_inf(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(spec)
    clock.tick(HOUR)
    text = fleet.fetch_metrics(spec.replica_id)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    expected_types = {
        "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter", "vllm:request_success": "counter",
        "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
        "vllm:time_to_first_token_seconds": "histogram", "vllm:time_per_output_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    }
    for name, kind in expected_types.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert sample.labels["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
            assert sample.labels["engine"] == "0"
    for line in ("# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
                 "# TYPE vllm:prompt_tokens_total counter",
                 "# TYPE vllm:time_to_first_token_seconds histogram"):
        assert line in text
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples
               if s.name == "vllm:request_success_total"}
    assert reasons == {"stop", "length", "abort"}
    # _created: the server's start, on every counter and histogram.
    for name in ("vllm:prompt_tokens_created", "vllm:request_success_created",
                 "vllm:time_to_first_token_seconds_created", "vllm:e2e_request_latency_seconds_created"):
        assert value(text, name) > T0, name
    # vLLM's bucket boundaries, up to +Inf, cumulative; +Inf equals _count.
    for name, buckets in (("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
                          ("vllm:time_per_output_token_seconds", TPOT_BUCKETS),
                          ("vllm:e2e_request_latency_seconds", REQUEST_LATENCY_BUCKETS)):
        rows = [(s.labels["le"], s.value) for s in families[name].samples if s.name == f"{name}_bucket"]
        assert [le for le, _ in rows] == [*(str(float(b)) for b in buckets), "+Inf"]
        counts = [count for _, count in rows]
        assert counts == sorted(counts) and counts[-1] > 0
        assert counts[-1] == value(text, f"{name}_count")
    requests = value(text, "vllm:request_success_total")
    assert value(text, "vllm:e2e_request_latency_seconds_count") == requests
    assert value(text, "vllm:time_to_first_token_seconds_count") == requests


def test_traffic_matches_the_profile(new_fleet, clock, spec):
    """2 req/s for an hour; token means of the Azure conversation trace's log-normals."""
    fleet = new_fleet()
    fleet.create_replica(spec)
    ready = startup_seconds(spec, fleet)
    clock.tick(ready + HOUR)
    text = fleet.fetch_metrics(spec.replica_id)
    requests = value(text, "vllm:request_success_total")
    assert requests == pytest.approx(2 * HOUR, rel=0.1)
    sigma_in, sigma_out = math.log(2734 / 1020) / 1.2816, math.log(424 / 129) / 1.2816
    mean_in, mean_out = 1020 * math.exp(sigma_in ** 2 / 2), 129 * math.exp(sigma_out ** 2 / 2)
    assert value(text, "vllm:prompt_tokens_total") / requests == pytest.approx(mean_in, rel=0.1)
    assert value(text, "vllm:generation_tokens_total") / requests == pytest.approx(mean_out, rel=0.12)
    # One inter-token latency per generated token after the first, as vLLM counts them.
    tokens_after_first = value(text, "vllm:generation_tokens_total") - requests
    assert value(text, "vllm:time_per_output_token_seconds_count") == pytest.approx(tokens_after_first, rel=0.01)


def test_latencies_follow_the_performance_model(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(replace(spec, traffic=TrafficProfile(requests_per_s=0.5)))
    clock.tick(HOUR)
    text = fleet.fetch_metrics(spec.replica_id)
    ttft, tpot = "vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds"
    mean_ttft = value(text, f"{ttft}_sum") / value(text, f"{ttft}_count")
    mean_tpot = value(text, f"{tpot}_sum") / value(text, f"{tpot}_count")
    # An 8B model on one H100 at light load: tens of ms to the first token, single-digit ms per token.
    assert 0.01 < mean_ttft < 0.3
    assert 0.004 < mean_tpot < 0.02
    assert value(text, "vllm:num_requests_waiting") == 0


def test_requests_beyond_the_memory_limit_wait(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(replace(spec, traffic=TrafficProfile(requests_per_s=200.0)))
    clock.tick(600)
    text = fleet.fetch_metrics(spec.replica_id)
    assert value(text, "vllm:num_requests_waiting") > 0
    assert value(text, "vllm:num_requests_running") > 100
    slow = value(text, "vllm:time_to_first_token_seconds_count") - value(
        text, "vllm:time_to_first_token_seconds_bucket", le="10.0")
    assert slow > 0.5 * value(text, "vllm:time_to_first_token_seconds_count")  # most waited in the queue


def test_more_traffic_makes_more_tokens(new_fleet, clock):
    fleet = new_fleet()
    fleet.create_replica(make_spec(replica_id="quiet", rps=0.5))
    fleet.create_replica(make_spec(replica_id="busy", rps=5.0))
    clock.tick(HOUR)
    quiet, busy = fleet.fetch_metrics("quiet"), fleet.fetch_metrics("busy")
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total"):
        assert value(busy, name) > 5 * value(quiet, name), name


def test_spikes_and_the_daily_curve_shape_the_rate():
    flat = TrafficProfile(requests_per_s=2.0)
    curve = TrafficProfile(requests_per_s=2.0, daily_curve=tuple([0.5] * 12 + [2.0] * 12),
                           spikes=(Spike(start=T0, duration_s=60, multiplier=10),))
    noon_utc = (T0 // 86_400) * 86_400 + 12.5 * 3600 + 86_400
    assert flat.rate_at(noon_utc) == 2.0
    assert curve.rate_at(noon_utc) == pytest.approx(4.0)
    assert curve.rate_at(noon_utc - 6 * 3600) == pytest.approx(1.0)
    assert curve.rate_at(T0 + 30) == pytest.approx(10 * curve.rate_at(T0 + 90), rel=0.01)


def test_a_spike_adds_requests(new_fleet, clock):
    fleet = new_fleet()
    fleet.create_replica(make_spec(replica_id="flat", rps=1.0))
    spiky = TrafficProfile(requests_per_s=1.0, spikes=(Spike(start=T0 + 600, duration_s=600, multiplier=8),))
    fleet.create_replica(make_spec(replica_id="spiky", traffic=spiky))
    clock.tick(1800)
    extra = value(fleet.fetch_metrics("spiky"), "vllm:request_success_total") - \
        value(fleet.fetch_metrics("flat"), "vllm:request_success_total")
    assert extra == pytest.approx(7 * 600, rel=0.25)


def test_burstiness_is_the_coefficient_of_variation_of_arrivals():
    def counts(cv):
        state = {"residual": None}
        rng = random.Random(7)
        return [SimulatedFleet._arrivals(state, rng, 10.0, cv) for _ in range(4000)]

    poisson, bursty = counts(1.0), counts(3.0)
    assert statistics.mean(poisson) == pytest.approx(10, rel=0.05)
    assert statistics.mean(bursty) == pytest.approx(10, rel=0.15)
    # Counts of a renewal process over long windows: variance ≈ CV² × mean.
    assert statistics.variance(poisson) == pytest.approx(10, rel=0.2)
    assert statistics.variance(bursty) > 4 * statistics.variance(poisson)


def test_same_seed_same_history_other_seed_another(new_fleet, clock, spec):
    fleets = [new_fleet("a", seed=7), new_fleet("b", seed=7), new_fleet("c", seed=8)]
    for fleet in fleets:
        fleet.create_replica(spec)
    clock.tick(HOUR)
    a, b, c = (fleet.fetch_metrics(spec.replica_id) for fleet in fleets)
    assert a == b
    assert value(a, "vllm:prompt_tokens_total") != value(c, "vllm:prompt_tokens_total")


def test_history_does_not_depend_on_how_time_is_advanced(new_fleet, clock, spec):
    once, often = new_fleet("once"), new_fleet("often", clock=lambda: T0)
    once.create_replica(spec)
    often.create_replica(spec)
    for step in range(1, 361):
        often.advance(T0 + step * 10 + 3)  # odd steps: ticks complete at different calls
    clock.tick(3603)
    assert once.fetch_metrics(spec.replica_id) == often.fetch_metrics(spec.replica_id)


def test_advancing_to_the_same_time_twice_changes_nothing(new_fleet, clock, spec, tmp_path):
    fleet = new_fleet()
    fleet.create_replica(spec)
    clock.tick(HOUR)
    fleet.advance()
    before = {p.name: p.read_bytes() for p in (tmp_path / "fleet" / "replicas").iterdir()}
    first = fleet.fetch_metrics(spec.replica_id)
    fleet.advance()
    fleet.advance(T0 + 10)  # earlier: time does not go back
    assert fleet.fetch_metrics(spec.replica_id) == first
    assert {p.name: p.read_bytes() for p in (tmp_path / "fleet" / "replicas").iterdir()} == before


def test_state_survives_a_restart_without_double_counting(new_fleet, clock, spec):
    uninterrupted = new_fleet("uninterrupted")
    uninterrupted.create_replica(spec)
    first = new_fleet("restarted")
    first.create_replica(spec)
    clock.tick(HOUR)
    at_one_hour = first.fetch_metrics(spec.replica_id)
    del first  # the worker process goes away

    second = new_fleet("restarted")  # a new process on the same state directory
    assert second.fetch_metrics(spec.replica_id) == at_one_hour  # same time: nothing counted twice
    assert [s.state for s in second.list_replicas()] == ["ready"]
    clock.tick(HOUR)
    continued = second.fetch_metrics(spec.replica_id)
    assert value(continued, "vllm:prompt_tokens_total") > value(at_one_hour, "vllm:prompt_tokens_total")
    assert continued == uninterrupted.fetch_metrics(spec.replica_id)


def test_a_state_directory_keeps_its_seed(new_fleet):
    new_fleet("shared", seed=1)
    with pytest.raises(FleetError, match="seed=1"):
        new_fleet("shared", seed=2)


def test_counters_only_grow(new_fleet, clock):
    fleet = new_fleet()
    fleet.create_replica(make_spec(traffic=TrafficProfile(requests_per_s=3.0, burstiness=4.0)))
    counters = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
                "vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_sum")
    previous = dict.fromkeys(counters, 0.0)
    clock.tick(60)
    for _ in range(40):
        clock.tick(97)
        parsed = samples(fleet.fetch_metrics("rep-1"))
        for name in counters:
            current = sum(v for (sample, _labels), v in parsed.items() if sample == name)
            assert current >= previous[name], name
            previous[name] = current
    assert previous["vllm:request_success_total"] > 1000


def test_a_traffic_change_does_not_restart_but_a_spec_change_does(new_fleet, clock, spec):
    fleet = new_fleet()
    fleet.create_replica(spec)
    clock.tick(HOUR)
    before = value(fleet.fetch_metrics(spec.replica_id), "vllm:request_success_total")
    same = fleet.create_replica(replace(spec, traffic=TrafficProfile(requests_per_s=8.0)))
    assert same.state == "ready"
    clock.tick(600)
    after = value(fleet.fetch_metrics(spec.replica_id), "vllm:request_success_total")
    assert after - before == pytest.approx(8 * 600, rel=0.15)  # the new rate, same counters

    restarted = fleet.create_replica(replace(spec, accelerators=2))
    assert restarted.state == "pending"  # a new server: counters start again from zero
    clock.tick(120)
    fresh = fleet.fetch_metrics(spec.replica_id)
    assert value(fresh, "vllm:request_success_total") < after
    assert value(fresh, "vllm:prompt_tokens_created") > T0 + HOUR


def test_a_model_that_does_not_fit_fails_at_startup(new_fleet, clock):
    fleet = new_fleet()
    too_big = make_spec("llama-3.1-70b", hardware="l4-24gb")
    fleet.create_replica(too_big)
    clock.tick(10)
    assert fleet.status(too_big.replica_id).state == "starting"
    clock.tick(HOUR)
    failed = fleet.status(too_big.replica_id)
    assert failed.state == "failed"
    assert "does not fit" in failed.message or "weights need" in failed.message
    with pytest.raises(MetricsUnavailable):
        fleet.fetch_metrics(too_big.replica_id)
    fleet.delete_replica(too_big.replica_id)
    assert fleet.status(too_big.replica_id).state == "stopped"


def test_node_failures_happen_at_the_configured_rate(new_fleet, clock):
    fleet = new_fleet(failure_rate_per_node_hour=0.5)
    replicas = 200
    for number in range(replicas):
        fleet.create_replica(make_spec(replica_id=f"r{number}", node_id=f"node-{number}", rps=0.0))
    clock.tick(2 * HOUR)
    failed = [s for s in fleet.list_replicas() if s.state == "failed"]
    expected = replicas * (1 - math.exp(-0.5 * 2))  # P(at least one failure in 2 h) = 63 %
    spread = math.sqrt(replicas * 0.632 * 0.368)
    assert abs(len(failed) - expected) < 4 * spread
    assert all(s.message.startswith(f"node {s.node_id} failed at") for s in failed)


def test_a_node_failure_takes_down_every_replica_on_the_node(new_fleet, clock):
    fleet = new_fleet(failure_rate_per_node_hour=2.0)
    for number in range(4):
        fleet.create_replica(make_spec(replica_id=f"a{number}", node_id="node-a", rps=0.0))
    for number in range(4):
        fleet.create_replica(make_spec(replica_id=f"b{number}", node_id="node-b", rps=0.0))
    clock.tick(3 * HOUR)
    states = {s.replica_id: s.state for s in fleet.list_replicas()}
    for node in "ab":
        assert len({states[f"{node}{n}"] for n in range(4)}) == 1  # all or none


def test_no_failures_without_a_rate(new_fleet, clock):
    fleet = new_fleet()
    for number in range(20):
        fleet.create_replica(make_spec(replica_id=f"r{number}", node_id=f"node-{number}", rps=0.0))
    clock.tick(24 * HOUR)
    assert {s.state for s in fleet.list_replicas()} == {"ready"}


def test_embedding_models_count_prompt_tokens_only(new_fleet, clock):
    fleet = new_fleet()
    fleet.create_replica(make_spec("bge-large-en-v1.5", hardware="l4-24gb", rps=5.0))
    clock.tick(600)
    text = fleet.fetch_metrics("rep-1")
    assert value(text, "vllm:prompt_tokens_total") > 0
    assert value(text, "vllm:generation_tokens_total") == 0
    assert value(text, "vllm:time_per_output_token_seconds_count") == 0


def test_bad_specs_fail_when_created(new_fleet):
    fleet = new_fleet()
    with pytest.raises(FleetError, match="hardware"):
        fleet.create_replica(make_spec(hardware="quantum-9000"))
    with pytest.raises(FleetError, match="num_hidden_layers"):
        fleet.create_replica(make_spec(model_config={"model_type": "llama"}))
    assert fleet.list_replicas() == []


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(FleetError, match="tick_seconds"):
        SimulatedFleet(tmp_path, tick_seconds=0)
    with pytest.raises(FleetError, match="seed"):
        SimulatedFleet(tmp_path, seed="1")


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.floats(min_value=0.0, max_value=400.0), min_size=1, max_size=12),
       burstiness=st.sampled_from([0.5, 1.09, 4.0, 13.2]))
def test_any_schedule_of_advances_gives_the_same_history(steps, burstiness):
    spec = make_spec(traffic=TrafficProfile(requests_per_s=3.0, burstiness=burstiness))
    with tempfile.TemporaryDirectory() as directory:
        stepped_clock, once_clock = Clock(), Clock()
        stepped = SimulatedFleet(Path(directory) / "stepped", clock=stepped_clock)
        once = SimulatedFleet(Path(directory) / "once", clock=once_clock)
        stepped.create_replica(spec)
        once.create_replica(spec)
        seen = 0.0
        for step in steps:
            stepped_clock.tick(step)
            stepped.advance()
            if stepped.status(spec.replica_id).state == "ready":
                current = value(stepped.fetch_metrics(spec.replica_id), "vllm:prompt_tokens_total")
                assert current >= seen  # counters never go back
                seen = current
        once_clock.now = stepped_clock.now
        if once.status(spec.replica_id).state == "ready":
            assert once.fetch_metrics(spec.replica_id) == stepped.fetch_metrics(spec.replica_id)


def test_processes_sharing_a_state_directory_never_double_count(new_fleet, clock, spec):
    alone = new_fleet("alone")
    alone.create_replica(spec)
    workers = [new_fleet("shared") for _ in range(4)]
    workers[0].create_replica(spec)
    clock.tick(HOUR)
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda fleet: fleet.fetch_metrics(spec.replica_id), workers * 3))
    assert set(texts) == {alone.fetch_metrics(spec.replica_id)}


# --- capacity: the simulated replica and the estimator ------------------------------------------


def _served_per_second(fleet, replica_id: str, clock, seconds: float) -> float:
    """Requests finished per second over the next `seconds` (not those clients gave up on)."""
    def finished() -> float:
        text = fleet.fetch_metrics(replica_id)
        return sum(value(text, "vllm:request_success_total", finished_reason=reason) for reason in ("stop", "length"))

    before = finished()
    clock.tick(seconds)
    return (finished() - before) / seconds


def test_an_overloaded_replica_serves_what_the_estimator_plans_when_latency_does_not_bind(new_fleet, clock):
    """Sizes median 512 / p95 1,024 in and 256 / 512 out with a loose SLO: the estimator's
    replica runs 256 requests (vLLM's limit, not the SLO, binds) at 27.8 req/s of the mean
    request. A simulated replica given the same sizes (p90 from the p95 on the same
    log-normal) and twice that traffic gets through the same rate."""
    traffic = Traffic(requests_per_s=60.0, input_tokens=512, output_tokens=256, input_tokens_p95=1024,
                      output_tokens_p95=512)
    option = best_option(replica_options(LLAMA_8B, "bf16", H100, efficiency_for(H100), traffic, Slo(2000, 100)))
    assert option.capacity.concurrency == MAX_NUM_SEQS
    profile = TrafficProfile(requests_per_s=traffic.requests_per_s, input_tokens_median=512,
                             input_tokens_p90=lognormal_p90(512, 1024), output_tokens_median=256,
                             output_tokens_p90=lognormal_p90(256, 512), max_output_tokens=4096)
    fleet = new_fleet()
    spec = make_spec(traffic=profile)
    fleet.create_replica(spec)
    clock.tick(startup_seconds(spec, fleet) + 120)  # ready, and the backlog built up
    assert _served_per_second(fleet, spec.replica_id, clock, 600) == pytest.approx(option.capacity.requests_per_s,
                                                                                   rel=0.02)


def test_where_latency_binds_the_estimator_plans_below_what_a_saturated_replica_gets_through(new_fleet, clock):
    """The Azure conversation sizes with p95 TTFT 2 s and TPOT 80 ms: the SLO holds up to 97
    running requests, 15.0 req/s — the planning figure. Overloaded, a replica runs 256 and
    gets through 17.7 req/s, every request late."""
    traffic = Traffic(requests_per_s=40.0, input_tokens=1020, output_tokens=129, input_tokens_p95=3616,
                      output_tokens_p95=594)
    option = best_option(replica_options(LLAMA_8B, "bf16", H100, efficiency_for(H100), traffic, Slo(2000, 80)))
    assert option.capacity.concurrency == 97 and option.capacity.requests_per_s == pytest.approx(15.05, abs=0.01)
    fleet = new_fleet()
    spec = make_spec(traffic=TrafficProfile(requests_per_s=traffic.requests_per_s, max_output_tokens=4096))
    fleet.create_replica(spec)
    clock.tick(startup_seconds(spec, fleet) + 120)
    saturated = _served_per_second(fleet, spec.replica_id, clock, 600)
    assert saturated == pytest.approx(17.7, rel=0.02) and saturated > 1.15 * option.capacity.requests_per_s
