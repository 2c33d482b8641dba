"""The autoscaler (KPA-style): each policy behaviour, then properties on random histories."""

import json
import math
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.autoscaling import (
    IDLE,
    PANIC,
    STABLE,
    Policy,
    PolicyError,
    ScalerState,
    Signals,
    decide,
    demand_rps,
    policy_from_dict,
)

TARGET = 10.0  # in-flight requests one replica carries within the SLO, in these tests
BEAT = 2.0  # seconds between decisions


class Scaler:
    """Drives `decide` the way the reconcile loop does: one call per beat, the state stored as a
    dict in between, and the replica count following the decision (instant start unless told)."""

    def __init__(self, policy=None, *, replicas=1, min_replicas=1, max_replicas=100, now=0.0, **options):
        self.policy = policy or Policy()
        self.replicas = replicas
        self.starting = 0
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.now = now
        self.options = options
        self.stored: dict = {}
        self.decision = None

    def beat(self, in_flight=0.0, *, queue=0.0, rate=0.0, ttft=None, follow=True, seconds=BEAT, **overrides):
        self.now += seconds
        signals = Signals(in_flight=in_flight, queue_length=queue, request_rate=rate, ready_replicas=self.replicas,
                          starting_replicas=self.starting, ttft_p95_ms=ttft)
        options = {**self.options, **overrides}
        self.decision = decide(self.policy, signals, ScalerState.from_dict(self.stored),
                               capacity_per_replica=TARGET, min_replicas=self.min_replicas,
                               max_replicas=self.max_replicas, now=self.now, **options)
        self.stored = json.loads(json.dumps(self.decision.state.to_dict()))
        if follow:
            self.replicas = self.decision.desired_replicas
        return self.decision

    def hold(self, seconds, in_flight=0.0, **kwargs):
        """The same signals every beat for `seconds`; the last decision."""
        for _ in range(round(seconds / BEAT)):
            decision = self.beat(in_flight, **kwargs)
        return decision


# --- stable mode ------------------------------------------------------------------------------


def test_stable_scale_up_acts_at_once_without_a_delay():
    scaler = Scaler(replicas=2)
    scaler.hold(60, in_flight=20)  # exactly 2 × target: stays
    assert scaler.replicas == 2
    decision = scaler.beat(in_flight=60)  # the 60 s average rises just above 20
    assert decision.mode == STABLE
    assert decision.desired_replicas == 3
    assert "stable" in decision.reason and "target 10.0" in decision.reason


def test_stable_desired_is_the_window_average_over_the_target():
    scaler = Scaler(replicas=1)
    decision = scaler.hold(60, in_flight=35)
    assert decision.desired_replicas == 4  # ceil(35 / 10)


def test_stable_scale_up_waits_for_scale_up_delay():
    scaler = Scaler(Policy(scale_up_delay=10.0), replicas=2)
    scaler.hold(60, in_flight=20)
    decisions = [scaler.beat(in_flight=40) for _ in range(6)]
    # The higher count must hold 10 s before acting: 5 beats of 2 s.
    assert [d.desired_replicas for d in decisions[:4]] == [2, 2, 2, 2]
    assert decisions[5].desired_replicas > 2
    assert "hold 10 s" in decisions[0].reason


def test_stable_scale_down_waits_for_scale_down_delay_and_goes_to_the_highest_count_of_the_hold():
    scaler = Scaler(Policy(scale_down_delay=30.0), replicas=6)
    scaler.hold(60, in_flight=60)
    assert scaler.replicas == 6
    # The load drops; the 60 s average falls over the following minute, so the recommendation
    # falls step by step. No scale-down until a lower count has held 30 s, and then only to
    # the highest recommendation of the last 30 s.
    decisions = [scaler.beat(in_flight=10) for _ in range(15)]
    assert all(d.desired_replicas == 6 for d in decisions[:10])
    assert any("until a lower count holds 30 s" in d.reason for d in decisions)
    decision = scaler.hold(120, in_flight=10)
    assert decision.desired_replicas == 1
    assert scaler.replicas == 1


def test_scale_down_with_no_delay_follows_the_window():
    scaler = Scaler(Policy(scale_down_delay=0.0, max_scale_down_rate=1.0), replicas=4)
    scaler.hold(60, in_flight=40)
    decision = scaler.hold(60, in_flight=10)
    assert decision.desired_replicas == 1


def test_a_short_dip_does_not_scale_down():
    scaler = Scaler(Policy(scale_down_delay=60.0), replicas=5)
    scaler.hold(60, in_flight=50)
    scaler.hold(20, in_flight=0)  # a 20 s dip; the count it asks for never holds 60 s
    decision = scaler.hold(60, in_flight=50)
    assert decision.desired_replicas == 5


# --- panic mode -------------------------------------------------------------------------------


def test_panic_reacts_within_one_decision():
    scaler = Scaler(replicas=2)
    scaler.hold(60, in_flight=20)
    decision = scaler.beat(in_flight=200)  # 100 per replica > 2 × target
    assert decision.mode == PANIC
    # The 6 s panic window holds this sample and two at 20: average 80 → 8 replicas, at once.
    assert decision.desired_replicas == 8
    assert decision.reason.startswith("panic: ")
    assert "in flight per replica > 2 × target 10.0 over 6 s" in decision.reason


def test_panic_threshold_is_against_ready_replicas_not_starting_ones():
    scaler = Scaler(replicas=2)
    scaler.starting = 3
    decision = scaler.hold(6, in_flight=45, follow=False)  # 22.5 per ready replica > 2 × 10
    assert decision.mode == PANIC


def test_no_scale_down_during_panic_and_panic_ends_after_a_calm_window():
    scaler = Scaler(Policy(scale_down_delay=0.0), replicas=2)
    scaler.hold(60, in_flight=20)
    scaler.hold(6, in_flight=200)
    peak = scaler.replicas
    assert scaler.decision.mode == PANIC and peak >= 10
    last_over = scaler.decision.state.panic_last_over
    # Load collapses: panic holds the count (no scale-down) until a whole stable window is calm.
    calm = []
    while (decision := scaler.beat(in_flight=5)).mode == PANIC and len(calm) < 100:
        calm.append(decision)
    assert calm and all(d.desired_replicas == peak for d in calm)
    assert "(no scale-down) until 60 s calm" in calm[-1].reason
    assert 60 <= scaler.now - last_over < 60 + BEAT
    assert decision.mode == STABLE
    assert decision.desired_replicas < peak


def test_panic_scales_up_again_while_in_panic():
    scaler = Scaler(replicas=1)
    scaler.hold(60, in_flight=10)
    first = scaler.beat(in_flight=100).desired_replicas
    second = scaler.hold(6, in_flight=300).desired_replicas
    assert second > first
    assert scaler.decision.mode == PANIC


# --- scale-down rate --------------------------------------------------------------------------


def test_at_most_max_scale_down_rate_removed_per_decision():
    # A 2 s window, so the load drops at once and only the rate limit paces the scale-down.
    policy = Policy(window=2.0, panic_window=2.0, scale_down_delay=0.0, max_scale_down_rate=0.25)
    scaler = Scaler(policy, replicas=20)
    scaler.hold(10, in_flight=200)
    counts = [scaler.beat(in_flight=0).desired_replicas for _ in range(12)]
    # 25 % of the current count per decision, rounded down, and at least one.
    assert counts == [15, 12, 9, 7, 6, 5, 4, 3, 2, 1, 1, 1]


def test_one_replica_may_always_be_removed_however_small_the_rate():
    scaler = Scaler(Policy(scale_down_delay=0.0, max_scale_down_rate=0.01), replicas=3)
    decision = scaler.hold(120, in_flight=0)
    assert decision.desired_replicas == 1


def test_rate_limit_reason_says_so():
    scaler = Scaler(Policy(scale_down_delay=0.0, max_scale_down_rate=0.5), replicas=10)
    scaler.hold(60, in_flight=100)
    scaler.hold(60, in_flight=0, follow=False)
    assert "removing at most 5 of 10 per decision" in scaler.decision.reason
    assert scaler.decision.desired_replicas == 5


# --- scale to zero and activation -----------------------------------------------------------


def test_scale_to_zero_only_after_the_idle_time():
    scaler = Scaler(Policy(scale_to_zero_after=120.0), replicas=1, min_replicas=0)
    scaler.hold(10, in_flight=3, rate=1.0)
    decisions = [scaler.beat() for _ in range(60)]  # 120 s without traffic
    assert all(d.desired_replicas == 1 for d in decisions[:59])
    assert decisions[-1].desired_replicas == 0
    assert decisions[-1].mode == IDLE
    assert "no traffic for 120 s" in decisions[-1].reason
    assert scaler.beat().desired_replicas == 0  # stays at zero while idle


def test_no_scale_to_zero_with_min_replicas_or_without_the_setting():
    with_minimum = Scaler(Policy(scale_to_zero_after=30.0), replicas=1, min_replicas=1)
    assert with_minimum.hold(300).desired_replicas == 1
    never = Scaler(Policy(scale_to_zero_after=None), replicas=1, min_replicas=0)
    assert never.hold(300).desired_replicas == 1


def test_activation_brings_one_replica_back_on_the_first_request():
    scaler = Scaler(Policy(scale_to_zero_after=60.0), replicas=1, min_replicas=0)
    scaler.hold(120)
    assert scaler.replicas == 0
    decision = scaler.beat(queue=1, rate=0.5)
    assert decision.desired_replicas == 1
    assert "activation" in decision.reason


def test_activation_with_a_backlog_asks_for_what_it_needs():
    scaler = Scaler(Policy(scale_to_zero_after=60.0), replicas=0, min_replicas=0)
    decision = scaler.beat(queue=45)
    assert decision.desired_replicas >= 5


# --- bounds and budget ------------------------------------------------------------------------


def test_clamped_to_max_replicas():
    scaler = Scaler(replicas=2, max_replicas=4)
    decision = scaler.hold(60, in_flight=500)
    assert decision.desired_replicas == 4
    assert "lowered to max_replicas 4" in decision.reason


def test_clamped_to_min_replicas():
    scaler = Scaler(Policy(scale_down_delay=0.0), replicas=3, min_replicas=3)
    decision = scaler.hold(120, in_flight=0)
    assert decision.desired_replicas == 3


def test_budget_cap_limits_desired_replicas():
    scaler = Scaler(replicas=2, budget_cap=3)
    decision = scaler.hold(60, in_flight=500)
    assert decision.desired_replicas == 3
    assert "capped by budget at 3" in decision.reason


def test_budget_cap_below_min_replicas_wins():
    scaler = Scaler(replicas=4, min_replicas=2, budget_cap=0)
    assert scaler.beat(in_flight=40).desired_replicas == 0


# --- latency signal -------------------------------------------------------------------------


def test_ttft_over_the_slo_adds_one_replica():
    scaler = Scaler(replicas=3, ttft_slo_ms=2000.0)
    scaler.hold(60, in_flight=20)  # 2 replicas' worth: concurrency alone would not scale up
    decision = scaler.beat(in_flight=20, ttft=3500.0)
    assert decision.desired_replicas == 4
    assert "p95 TTFT 3500 ms > SLO 2000 ms" in decision.reason


def test_ttft_over_the_slo_waits_for_a_starting_replica():
    scaler = Scaler(replicas=3, ttft_slo_ms=2000.0)
    scaler.starting = 1
    decision = scaler.beat(in_flight=20, ttft=3500.0, follow=False)
    assert decision.desired_replicas == 4  # the starting one counts; no second one asked for


def test_ttft_within_the_slo_or_without_an_slo_changes_nothing():
    within = Scaler(replicas=2, ttft_slo_ms=2000.0)
    within.hold(60, in_flight=20)
    assert within.beat(in_flight=20, ttft=1500.0).desired_replicas == 2
    no_slo = Scaler(replicas=2)
    no_slo.hold(60, in_flight=20)
    assert no_slo.beat(in_flight=20, ttft=9000.0).desired_replicas == 2


# --- arrivals as load -----------------------------------------------------------------------


def test_arrivals_count_when_the_replica_rate_is_known():
    # At capacity a replica carries 10 in flight at 2 req/s: a request takes 5 s there. 12 req/s
    # need 6 replicas even though the lightly loaded replicas hold only 20 in flight.
    scaler = Scaler(replicas=8, rps_per_replica=2.0, policy=Policy(scale_down_delay=0.0))
    decision = scaler.hold(120, in_flight=20, rate=12.0)
    assert decision.desired_replicas == 6
    assert "12.0 req/s × 5.00 s" in decision.reason
    plain = Scaler(replicas=8, policy=Policy(scale_down_delay=0.0))
    assert plain.hold(120, in_flight=20, rate=12.0).desired_replicas == 2


def test_arrivals_keep_a_policy_target_below_capacity_as_headroom():
    # Policy target 5 (half of capacity 10): arrivals worth 6 replicas at capacity ask for 12.
    scaler = Scaler(Policy(target_concurrency_per_replica=5.0, scale_down_delay=0.0), replicas=12,
                    rps_per_replica=2.0)
    assert scaler.hold(120, in_flight=0, rate=12.0).desired_replicas == 12


# --- headroom and surges -----------------------------------------------------------------------
# rps_per_replica 2 with capacity 10: a request takes 5 s at capacity, so each 2 req/s planned
# for is one replica. Without a surge memory or headroom unless a test is about them.

PLAIN = Policy(scale_down_delay=0.0, max_scale_down_rate=1.0, headroom_sigmas=0.0, surge_memory=0.0)


def _arrivals_scaler(policy, **options):
    return Scaler(policy, replicas=1, rps_per_replica=2.0, **options)


def _alternating(scaler, seconds, mean, spread):
    """Arrivals alternating mean ± spread, beat by beat, for `seconds`; the last decision."""
    for index in range(round(seconds / BEAT)):
        decision = scaler.beat(rate=mean + (spread if index % 2 else -spread))
    return decision


def test_headroom_is_sigmas_times_the_beat_to_beat_spread_scaled_to_the_cold_start():
    # ±2 req/s from beat to beat (a sample spread of 2.07 over 30 beats); the cold start is 4
    # beats, so the mean over it varies 2.07 × √(2/8) = 1.04 req/s: two sigmas plan for
    # 11 + 2.07 req/s, 7 replicas (6 without).
    policy = Policy(scale_down_delay=0.0, max_scale_down_rate=1.0, headroom_sigmas=2.0, surge_memory=0.0)
    decision = _alternating(_arrivals_scaler(policy, cold_start_seconds=8.0), 120, 11.0, 2.0)
    assert decision.desired_replicas == 7
    assert "((11.0 + 2 × σ 1.0) req/s × 5.00 s)" in decision.reason
    assert _alternating(_arrivals_scaler(PLAIN, cold_start_seconds=8.0), 120, 11.0, 2.0).desired_replicas == 6


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 10), st.floats(0, 10), st.sampled_from([None, 4.0, 40.0]))
def test_headroom_grows_with_observed_variance(spread, more, cold_start):
    policy = Policy(scale_down_delay=0.0, surge_memory=0.0)
    calm = _alternating(_arrivals_scaler(policy, cold_start_seconds=cold_start), 60, 12.0, spread)
    noisy = _alternating(_arrivals_scaler(policy, cold_start_seconds=cold_start), 60, 12.0, spread + more)
    assert noisy.desired_replicas >= calm.desired_replicas


@settings(max_examples=40, deadline=None)
@given(st.floats(1, 200), st.floats(-1, 1), st.sampled_from([None, 10.0, 40.0]))
def test_steady_or_ramping_arrivals_get_no_headroom(rate, trend, cold_start):
    """A constant rate, or a ramp too slow to be a surge (at most a tenth of the rate per
    minute), is planned for as it is: the same counts as without headroom and surges."""
    slope = trend * rate / 600  # req/s per second: ≤ 10 % per minute, ≤ 50 % over 5 minutes
    defaults = _arrivals_scaler(Policy(scale_down_delay=0.0, max_scale_down_rate=1.0), cold_start_seconds=cold_start)
    plain = _arrivals_scaler(PLAIN, cold_start_seconds=cold_start)
    for step in range(150):
        now_rate = rate + slope * step * BEAT
        assert defaults.beat(rate=now_rate).desired_replicas == plain.beat(rate=now_rate).desired_replicas
    assert not defaults.decision.state.surges


def test_poisson_arrivals_get_little_headroom():
    """50 req/s of Poisson arrivals on replicas serving 15 req/s (the benchmark's shape): the
    mean over a 38 s cold start varies by √(50/38) = 1.15 req/s, so two sigmas are 2.3 req/s
    — at most one replica more than without headroom, and no surge."""
    rng = random.Random(7)
    policy = Policy(scale_down_delay=0.0, max_scale_down_rate=1.0)
    defaults = Scaler(policy, replicas=4, rps_per_replica=15.0, cold_start_seconds=38.0)
    plain = Scaler(PLAIN, replicas=4, rps_per_replica=15.0, cold_start_seconds=38.0)
    extra = []
    for _ in range(300):  # 10 minutes, counted per 2 s beat
        count, clock = 0, rng.expovariate(50.0)
        while clock < BEAT:
            count, clock = count + 1, clock + rng.expovariate(50.0)
        extra.append(defaults.beat(rate=count / BEAT).desired_replicas - plain.beat(rate=count / BEAT).desired_replicas)
    assert max(extra) <= 1 and sum(extra) / len(extra) < 0.5
    assert not defaults.decision.state.surges


def test_headroom_needs_the_replica_rate():
    policy = Policy(scale_down_delay=0.0, surge_memory=0.0)
    scaler = Scaler(policy, replicas=1)
    decision = _alternating(scaler, 60, 12.0, 10.0)
    assert decision.desired_replicas == 1 and "σ" not in decision.reason


def _surge(policy, *, after=0.0):
    """Base 4 req/s (±0.2) for 2 min, 20 req/s for 30 s, back to 4; the decision `after`
    seconds past the end of the step."""
    scaler = _arrivals_scaler(policy, cold_start_seconds=10.0, max_replicas=40)
    _alternating(scaler, 120, 4.0, 0.2)
    _alternating(scaler, 30, 20.0, 0.2)
    return _alternating(scaler, after, 4.0, 0.2) if after else scaler.decision


def test_a_surge_keeps_its_level_provisioned_for_the_surge_memory():
    policy = Policy(scale_down_delay=0.0, max_scale_down_rate=1.0, headroom_sigmas=0.0, surge_memory=300.0)
    during = _surge(policy)
    assert during.state.surges and during.desired_replicas >= 9
    level = during.state.surges[0][1]
    assert 15 < level <= 20.2  # the level reached, less the noise allowance
    later = _surge(policy, after=200)
    assert later.desired_replicas == math.ceil(level / 2 - 1e-9)
    assert "a surge's level" in later.reason
    expired = _surge(policy, after=400)
    assert expired.desired_replicas == 2 and not expired.state.surges


def test_without_a_surge_memory_a_surge_is_followed_down():
    assert _surge(PLAIN, after=120).desired_replicas == 2


def test_a_rise_below_the_surge_threshold_is_no_surge():
    policy = Policy(scale_down_delay=0.0, max_scale_down_rate=1.0, headroom_sigmas=0.0, surge_memory=300.0,
                    surge_threshold=5.0)
    assert not _surge(policy).state.surges  # 4 → 20 req/s is a rise of 4 × the rate, not 5 ×
    assert _surge(policy, after=120).desired_replicas == 2


def test_surges_are_never_told_before_the_noise_is_known():
    scaler = _arrivals_scaler(Policy(surge_memory=300.0), cold_start_seconds=2.0)
    scaler.beat(rate=1.0)
    scaler.beat(rate=100.0)  # a rise from one beat to the next, with no spread measured yet
    assert not scaler.decision.state.surges


def test_headroom_and_surges_never_exceed_max_replicas():
    policy = Policy(surge_memory=300.0, headroom_sigmas=10.0)
    scaler = _arrivals_scaler(policy, cold_start_seconds=10.0, max_replicas=5)
    _alternating(scaler, 60, 4.0, 3.0)
    decision = _alternating(scaler, 60, 200.0, 100.0)
    assert decision.desired_replicas == 5 and "lowered to max_replicas 5" in decision.reason


@pytest.mark.parametrize("field, value, words", [
    ("headroom_sigmas", -1, "between 0 and 10"),
    ("headroom_sigmas", "2", "must be a number"),
    ("surge_memory", 8 * 86_400, "between 0 and 604800"),
    ("surge_threshold", 0, "between 0.05 and 100"),
    ("surge_threshold", None, "must be a number"),
])
def test_new_policy_fields_are_validated(field, value, words):
    with pytest.raises(PolicyError, match=words) as error:
        policy_from_dict({field: value})
    assert error.value.field == field


def test_new_policy_fields_have_defaults_and_can_be_turned_off():
    policy = Policy()
    assert (policy.headroom_sigmas, policy.surge_memory, policy.surge_threshold) == (2.0, 1800.0, 0.5)
    off = policy_from_dict({"headroom_sigmas": 0, "surge_memory": 0})
    assert off.headroom_sigmas == 0.0 and off.surge_memory == 0.0


# --- state, arguments, demand_rps -------------------------------------------------------------


def test_state_round_trips_through_a_dict_and_json():
    scaler = Scaler(Policy(scale_to_zero_after=60.0), replicas=2, min_replicas=0)
    scaler.hold(60, in_flight=20, rate=3.0)
    scaler.hold(6, in_flight=200, rate=30.0)
    state = scaler.decision.state
    assert state.in_panic and state.samples and state.recommendations
    data = json.loads(json.dumps(state.to_dict()))
    assert ScalerState.from_dict(data) == state
    assert ScalerState.from_dict(None) == ScalerState() == ScalerState.from_dict({})
    surged = _surge(Policy(surge_memory=300.0)).state
    assert surged.surges and ScalerState.from_dict(json.loads(json.dumps(surged.to_dict()))) == surged


def test_a_state_from_before_surges_reads_as_none_remembered():
    data = ScalerState(samples=((1.0, 2.0, 3.0),)).to_dict()
    del data["surges"]
    assert ScalerState.from_dict(data).surges == ()


@pytest.mark.parametrize("data, words", [
    ({"bogus": 1}, "bogus"),
    ({"samples": [[1.0, "x", 0.0]]}, "malformed"),
    ({"samples": [[1.0]]}, "malformed"),
    ({"surges": [[1.0, "high"]]}, "malformed"),
    ({"direction": "sideways"}, "direction"),
    ([1, 2], "object"),
])
def test_malformed_state_is_refused_with_a_reason(data, words):
    with pytest.raises(ValueError, match=words):
        ScalerState.from_dict(data)


@pytest.mark.parametrize("kwargs, words", [
    ({"min_replicas": 3, "max_replicas": 2}, "min ≤ max"),
    ({"min_replicas": -1}, "min ≤ max"),
    ({"capacity_per_replica": 0.0}, "positive"),
    ({"budget_cap": -1}, "budget_cap"),
    ({"rps_per_replica": 0.0}, "rps_per_replica"),
    ({"cold_start_seconds": 0.0}, "cold_start_seconds"),
    ({"cold_start_seconds": math.inf}, "cold_start_seconds"),
])
def test_bad_arguments_raise(kwargs, words):
    arguments = {"capacity_per_replica": TARGET, "min_replicas": 1, "max_replicas": 5, "now": 0.0, **kwargs}
    with pytest.raises(ValueError, match=words):
        decide(Policy(), Signals(in_flight=1), ScalerState(), **arguments)


def test_policy_target_overrides_capacity():
    decision = decide(Policy(target_concurrency_per_replica=5.0), Signals(in_flight=50, ready_replicas=10),
                      ScalerState(), capacity_per_replica=0.0, min_replicas=1, max_replicas=100, now=0.0)
    assert decision.desired_replicas == 10


def test_demand_rps_is_what_placement_needs_for_the_desired_replicas():
    assert demand_rps(3, 2.5) == 7.5
    assert demand_rps(0, 2.5) == 0.0
    with pytest.raises(ValueError):
        demand_rps(-1, 2.5)


def test_policy_from_dict_keeps_its_contract():
    assert policy_from_dict(None) == Policy()
    assert policy_from_dict({"scale_down_delay": 120}).scale_down_delay == 120.0
    with pytest.raises(PolicyError) as error:
        policy_from_dict({"panic_window": 90, "window": 60})
    assert error.value.field == "panic_window"


# --- properties -------------------------------------------------------------------------------

policies = st.builds(
    Policy,
    target_concurrency_per_replica=st.one_of(st.none(), st.floats(0.5, 200)),
    scale_up_delay=st.sampled_from([0.0, 4.0, 30.0]),
    scale_down_delay=st.sampled_from([0.0, 10.0, 60.0, 300.0]),
    window=st.sampled_from([10.0, 60.0]),
    panic_window=st.sampled_from([2.0, 6.0]),
    panic_threshold=st.floats(1.1, 5.0),
    max_scale_down_rate=st.floats(0.01, 1.0),
    scale_to_zero_after=st.one_of(st.none(), st.sampled_from([30.0, 120.0])),
    headroom_sigmas=st.sampled_from([0.0, 2.0, 5.0]),
    surge_memory=st.sampled_from([0.0, 60.0, 1800.0]),
    surge_threshold=st.floats(0.05, 3.0),
)
loads = st.tuples(st.floats(0, 2000), st.floats(0, 300), st.floats(0, 100))  # in flight, queue, rate
histories = st.lists(st.tuples(st.sampled_from([1.0, 2.0, 15.0]), loads, st.integers(0, 40), st.integers(0, 5),
                               st.one_of(st.none(), st.floats(0, 10_000))), max_size=25)


@st.composite
def situations(draw):
    """A policy, bounds and a state reached by a random history of decisions."""
    policy = draw(policies)
    min_replicas = draw(st.integers(0, 5))
    max_replicas = draw(st.integers(max(min_replicas, 1), 50))
    options = {
        "capacity_per_replica": draw(st.floats(1, 200)),
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "budget_cap": draw(st.one_of(st.none(), st.integers(0, 60))),
        "ttft_slo_ms": draw(st.one_of(st.none(), st.just(2000.0))),
        "rps_per_replica": draw(st.one_of(st.none(), st.floats(0.5, 50))),
        "cold_start_seconds": draw(st.one_of(st.none(), st.sampled_from([5.0, 40.0]))),
    }
    state, now = ScalerState(), 0.0
    for step, (in_flight, queue, rate), ready, starting, ttft in draw(histories):
        now += step
        signals = Signals(in_flight, queue, rate, ready, starting, ttft)
        state = decide(policy, signals, state, now=now, **options).state
    return policy, options, state, now


def _signals(load, ready, starting, ttft=None):
    in_flight, queue, rate = load
    return Signals(in_flight=in_flight, queue_length=queue, request_rate=rate, ready_replicas=ready,
                   starting_replicas=starting, ttft_p95_ms=ttft)


@settings(max_examples=300, deadline=None)
@given(situations(), loads, st.integers(0, 40), st.integers(0, 5), st.one_of(st.none(), st.floats(0, 10_000)))
def test_desired_always_within_bounds_and_budget(situation, load, ready, starting, ttft):
    policy, options, state, now = situation
    decision = decide(policy, _signals(load, ready, starting, ttft), state, now=now + BEAT, **options)
    cap = options["budget_cap"]
    assert decision.desired_replicas <= options["max_replicas"]
    assert decision.desired_replicas >= min(options["min_replicas"], cap if cap is not None else math.inf)
    if cap is not None:
        assert decision.desired_replicas <= cap
    assert decision.mode in (STABLE, PANIC, IDLE)
    assert decision.reason


@settings(max_examples=300, deadline=None)
@given(situations(), loads, loads, st.integers(0, 40), st.integers(0, 5), st.one_of(st.none(), st.floats(0, 10_000)))
def test_more_load_never_gives_fewer_replicas(situation, load, extra, ready, starting, ttft):
    policy, options, state, now = situation
    more = tuple(a + b for a, b in zip(load, extra, strict=True))
    less = decide(policy, _signals(load, ready, starting, ttft), state, now=now + BEAT, **options)
    most = decide(policy, _signals(more, ready, starting, ttft), state, now=now + BEAT, **options)
    assert most.desired_replicas >= less.desired_replicas


@settings(max_examples=300, deadline=None)
@given(situations(), loads, st.integers(0, 40), st.integers(0, 5))
def test_panic_never_scales_down(situation, load, ready, starting):
    policy, options, state, now = situation
    decision = decide(policy, _signals(load, ready, starting), state, now=now + BEAT, **options)
    if decision.mode == PANIC:
        cap = options["budget_cap"] if options["budget_cap"] is not None else math.inf
        assert decision.desired_replicas >= min(ready + starting, options["max_replicas"], cap)


@settings(max_examples=300, deadline=None)
@given(situations(), st.floats(1, 5000), st.integers(0, 40))
def test_load_over_the_panic_threshold_panics_and_gets_what_it_needs(situation, in_flight, ready):
    """Hold an in-flight count over the whole panic window: if it is over the threshold the
    decision is panic, and it asks for at least ceil(in flight / target) (bounds permitting)."""
    policy, options, state, now = situation
    target = policy.target_concurrency_per_replica or options["capacity_per_replica"]
    assume(in_flight > policy.panic_threshold * target * max(ready, 1) * 1.0001)
    signals = Signals(in_flight=in_flight, ready_replicas=ready)
    steps = math.ceil(policy.panic_window / BEAT) + 1
    for _ in range(steps):
        now += BEAT
        decision = decide(policy, signals, state, now=now, **options)
        state = decision.state
    assert decision.mode == PANIC
    cap = options["budget_cap"] if options["budget_cap"] is not None else math.inf
    needed = math.ceil(in_flight / target - 1e-9)
    assert decision.desired_replicas >= min(needed, options["max_replicas"], cap)


@settings(max_examples=300, deadline=None)
@given(situations(), loads, st.integers(1, 40), st.integers(0, 5))
def test_scale_down_per_decision_respects_the_rate(situation, load, ready, starting):
    policy, options, state, now = situation
    decision = decide(policy, _signals(load, ready, starting), state, now=now + BEAT, **options)
    current = ready + starting
    forced_by_bounds = current > options["max_replicas"] or (
        options["budget_cap"] is not None and current > options["budget_cap"])
    if not forced_by_bounds and decision.desired_replicas < current:
        assert current - decision.desired_replicas <= max(1, math.floor(current * policy.max_scale_down_rate + 1e-9))


@settings(max_examples=200, deadline=None)
@given(situations())
def test_any_reachable_state_round_trips_through_json(situation):
    _, _, state, _ = situation
    assert ScalerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@settings(max_examples=200, deadline=None)
@given(situations())
def test_remembered_surges_are_a_sliding_window_maximum(situation):
    """Times rise and levels fall along `surges`, all within the memory: the first is the
    highest level still remembered."""
    policy, _, state, now = situation
    surges = state.surges
    assert all(earlier[0] < later[0] and earlier[1] > later[1] for earlier, later in zip(surges, surges[1:]))
    assert all(level > 0 and now - policy.surge_memory < t <= now for t, level in surges)
