"""Autoscaling: desired replicas from live signals and a policy. Pure: no Django.

The autoscaler follows Knative's KPA. Every decision (one per reconcile beat) adds the
demand it sees — requests in flight on the ready replicas plus requests queued before
any replica, and the arrival rate — to a sample history, and asks for ceil(average load
÷ target) replicas, where the target is the concurrency one replica carries within the
SLO and the load is the in-flight demand or, when the caller knows what a replica
serves per second, the arrivals' in-flight equivalent at capacity, whichever is higher
(continuous batching makes in-flight alone understate the need; see `_load`):

- *stable* mode averages over `window`; a higher count is acted on once it has held for
  `scale_up_delay`, a lower one once it has held for `scale_down_delay` (the count acted
  on is the lowest, resp. highest, recommendation of that hold), and at most
  `max_scale_down_rate` of the replicas go per decision;
- *panic* mode starts when the `panic_window` average exceeds `panic_threshold` × target ×
  ready replicas: the short window's count is acted on at once, only upwards, and nothing
  is removed until the panic window has been calm for a whole `window`;
- *headroom* (needs `rps_per_replica`): the stable count plans for the window's mean arrival
  rate plus `headroom_sigmas` standard deviations of the mean rate over the next cold start,
  the deviation estimated from the window's beat-to-beat variability (square-root staffing:
  bursty arrivals keep more headroom than steady ones), and never for less than the level a
  *surge* reached within `surge_memory` — a rise within one cold start by more than
  `surge_threshold` of the rate before it and beyond three deviations of noise (a surge
  that came once is covered if it comes again; see `_planned_rate`);
- *idle*: with min_replicas 0 and `scale_to_zero_after` set, a deployment without traffic
  for that long goes to zero; the first request (activation) brings one replica back.

An observed p95 TTFT above the SLO (optional signal) adds one replica when none is
starting. `decide` takes and returns a `ScalerState`, a plain value the caller stores
between beats (`ScalerState.to_dict` / `from_dict`). docs/autoscaling.md has the details.
"""

import math
from dataclasses import asdict, dataclass, field, fields, replace


@dataclass(frozen=True)
class Policy:
    """How a deployment scales. Times are seconds.

    - `target_concurrency_per_replica`: in-flight requests one replica should carry; None
      means "what the performance model says a replica serves within the SLO".
    - `scale_up_delay` / `scale_down_delay`: how long a higher / lower desired count must
      hold before acting (stable mode).
    - `window`: look-back over which signals are averaged in stable mode.
    - `panic_window` / `panic_threshold`: when load over the short panic window exceeds
      `panic_threshold` × target, scale up at once and do not scale down until it passes.
    - `max_scale_down_rate`: at most this share of current replicas removed per decision.
    - `scale_to_zero_after`: idle seconds before going to zero replicas (None: never;
      needs min_replicas = 0); the first request brings one back.
    - `headroom_sigmas`: standard deviations of the mean arrival rate over the next cold start
      kept as headroom (0: none).
    - `surge_memory`: how long the level a surge reached is kept provisioned (0: surges are
      not remembered); `surge_threshold`: the rise within one cold start, as a share of the
      rate before it, that makes a surge.
    """

    target_concurrency_per_replica: float | None = None
    scale_up_delay: float = 0.0
    # 60 s, not 300 s: on `python -m bench autoscale` 300 s cost 6 % (steady) and 56 % (bursty)
    # more accelerator-seconds for no attainment gain; 60 s still outlasts a cold start (38 s
    # for an 8B model), so a dip shorter than a restart does not cost one.
    scale_down_delay: float = 60.0
    window: float = 60.0
    # KPA's 10 % of the window. 2 s (the newest beat alone) gained 0.2 points of attainment on
    # the benchmark's bursty trace but doubled the accelerator-seconds on its very bursty one
    # (CV 13.2): every burst beat panicked (docs/autoscaling.md, "Measured").
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 0.5
    scale_to_zero_after: float | None = None
    # Two deviations: the arrivals of ~98 % of cold starts fit (if the rate holds its mean).
    headroom_sigmas: float = 2.0
    # 30 min: on `python -m bench autoscale` the bursty trace's second 4× spike, 25 min after
    # the first, is then served (20 min: not); the price is holding the first spike's level
    # meanwhile (docs/autoscaling.md, "Measured").
    surge_memory: float = 1800.0
    # A rise by half the rate within one cold start: far above a ramp an autoscaler follows
    # (the steady trace's steepest: 3.5 % per cold start), far below a 4× step.
    surge_threshold: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


class PolicyError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _number(name: str, value, *, minimum: float, maximum: float, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(name, f"must be a number, not {value!r}.")
    if not minimum <= value <= maximum:
        raise PolicyError(name, f"must be between {minimum:g} and {maximum:g}, not {value:g}.")
    return float(value)


LIMITS = {
    "target_concurrency_per_replica": (0.1, 10_000, True),
    "scale_up_delay": (0, 3600, False),
    "scale_down_delay": (0, 86_400, False),
    "window": (1, 3600, False),
    "panic_window": (1, 600, False),
    "panic_threshold": (1.1, 100, False),
    "max_scale_down_rate": (0.01, 1.0, False),
    "scale_to_zero_after": (30, 30 * 86_400, True),
    "headroom_sigmas": (0, 10, False),
    "surge_memory": (0, 7 * 86_400, False),
    "surge_threshold": (0.05, 100, False),
}


def policy_from_dict(data: dict | None) -> Policy:
    """A validated Policy from JSON (missing fields take their defaults); PolicyError names the field."""
    if data is None:
        return Policy()
    if not isinstance(data, dict):
        raise PolicyError("autoscaling", "must be an object.")
    known = {field.name for field in fields(Policy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(unknown[0], f"is not a policy field; known: {', '.join(sorted(known))}.")
    values = {}
    for name, value in data.items():
        low, high, optional = LIMITS[name]
        values[name] = _number(name, value, minimum=low, maximum=high, optional=optional)
    policy = Policy(**values)
    if policy.panic_window > policy.window:
        raise PolicyError("panic_window", "must not be longer than window.")
    return policy


# --- the autoscaler -------------------------------------------------------------------------

STABLE, PANIC, IDLE = "stable", "panic", "idle"
UP, DOWN = "up", "down"
# Demand a hair above a multiple of the target must not ask for one more replica
# because of float noise (3 × 98.0 in flight is 3 replicas, not 4).
_EPS = 1e-9


@dataclass(frozen=True)
class Signals:
    """What the reconcile loop observed at time `now` (seconds, any epoch)."""

    in_flight: float  # running + waiting requests, summed over ready replicas
    queue_length: float = 0.0  # requests held before any replica (gateway / activator buffer)
    request_rate: float = 0.0  # arrivals per second over the last beat
    ready_replicas: int = 0
    starting_replicas: int = 0  # placed but not ready yet (loading weights, starting the engine)
    ttft_p95_ms: float | None = None  # observed p95 time to first token, when the caller has it

    @property
    def demand(self) -> float:
        """Concurrency the deployment must carry: what the replicas hold plus what waits for one."""
        return max(self.in_flight, 0.0) + max(self.queue_length, 0.0)

    @property
    def current_replicas(self) -> int:
        return self.ready_replicas + self.starting_replicas

    @property
    def has_traffic(self) -> bool:
        return self.demand > 0 or self.request_rate > 0


@dataclass(frozen=True)
class ScalerState:
    """What the autoscaler carries from one decision to the next. A plain value: the caller
    stores `to_dict()` (JSON-safe) and passes `from_dict(...)` back next beat.

    - `samples`: (time, demand in flight + queued, arrivals/s) over the last `window`
      seconds (two cold starts when that is longer and surges are remembered) — the stable
      and panic averages, the rate's noise, and the rise that makes a surge.
    - `recommendations`: (time, replicas the load asked for) over the longer of the two
      delays, plus the one in force at the start of that span — for "has it held?".
    - `panic_since` / `panic_last_over`: panic mode started / the panic threshold was last
      exceeded (None: not in panic); `panic_peak`: the highest count asked for in this panic.
    - `last_traffic_at`: when any demand or arrival was last seen (for scale to zero).
    - `direction` / `direction_since`: which way the desired count last moved, and since when
      it has moved that way (for the dashboard and the reason text).
    - `surges`: (time, arrivals/s) levels surges reached within `surge_memory`, each lower
      than the one before it: the first is the highest still remembered, and each later one
      takes over when those before it expire (a sliding-window maximum; a few per surge).
    """

    samples: tuple[tuple[float, float, float], ...] = ()
    recommendations: tuple[tuple[float, int], ...] = ()
    panic_since: float | None = None
    panic_last_over: float | None = None
    panic_peak: int = 0
    last_traffic_at: float | None = None
    direction: str = ""
    direction_since: float | None = None
    surges: tuple[tuple[float, float], ...] = ()

    @property
    def in_panic(self) -> bool:
        return self.panic_since is not None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["samples"] = [list(sample) for sample in self.samples]
        data["recommendations"] = [list(item) for item in self.recommendations]
        data["surges"] = [list(item) for item in self.surges]
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> "ScalerState":
        """The state `to_dict` wrote; None or {} is a fresh state. A malformed dict raises
        ValueError naming the key (the database row was edited or corrupted)."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            # ValueError like every other malformed state: callers catch one exception.
            raise ValueError(f"scaler state must be an object, not {type(data).__name__}.")  # noqa: TRY004
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a scaler state key.")
        try:
            values = {
                "samples": tuple((float(t), float(d), float(r)) for t, d, r in data.get("samples", ())),
                "recommendations": tuple((float(t), int(n)) for t, n in data.get("recommendations", ())),
                # Absent from states written before surges were remembered: none then.
                "surges": tuple((float(t), float(rate)) for t, rate in data.get("surges", ())),
                "panic_peak": int(data.get("panic_peak", 0)),
                "direction": str(data.get("direction", "")),
            }
            for name in ("panic_since", "panic_last_over", "last_traffic_at", "direction_since"):
                value = data.get(name)
                values[name] = None if value is None else float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scaler state is malformed: {exc}") from None
        if values["direction"] not in ("", UP, DOWN):
            raise ValueError(f"direction: must be 'up', 'down' or '', not {values['direction']!r}.")
        return cls(**values)


@dataclass(frozen=True)
class Decision:
    desired_replicas: int
    mode: str  # stable | panic | idle
    reason: str
    state: ScalerState = field(repr=False)


@dataclass(frozen=True)
class _Plan:
    """The arrival rate (requests/s) a count provisions for, and how to say it."""

    rate: float
    words: str


def _load(samples, since: float, seconds_at_capacity: float | None, plan: _Plan | None = None) -> tuple[float, str]:
    """Average load since `since` in in-flight requests, and how to say it.

    The load is the average demand (in flight + queued) or, when the caller gave the rate
    a replica serves at capacity, the arrival rate × the time a request takes on a replica
    at capacity (Little's law: the concurrency those arrivals would have on replicas
    running at capacity) — whichever is higher. The arrival rate is the average since
    `since`, or `plan`'s (the average with headroom, see `_planned_rate`). On a
    continuous-batching engine a request is faster on a lightly loaded replica, so
    in-flight alone understates what fewer replicas would carry (docs/autoscaling.md,
    "Why arrivals count too")."""
    inside = [(demand, rate) for t, demand, rate in samples if t > since] or [samples[-1][1:]]
    demand = sum(d for d, _ in inside) / len(inside)
    if seconds_at_capacity is not None:
        if plan is None:
            rate = sum(r for _, r in inside) / len(inside)
            plan = _Plan(rate, f"{rate:.1f} req/s")
        if plan.rate * seconds_at_capacity > demand:
            return plan.rate * seconds_at_capacity, (f"{plan.rate * seconds_at_capacity:.1f} in flight at capacity "
                                                      f"({plan.words} × {seconds_at_capacity:.2f} s)")
    return demand, f"{demand:.1f} in flight"


# A rise counts as a surge only beyond this many deviations of the difference of two means
# (a lucky beat is not a surge); the same allowance is taken off the level remembered.
SURGE_NOISE_SIGMAS = 3.0


def _rate_noise(samples, horizon: float) -> float | None:
    """Standard deviation of the mean arrival rate over the next `horizon` seconds, from the
    beats in `samples`: the spread of their rates around a least-squares line (a ramp is a
    trend, not noise), × √(beat ÷ horizon) — the mean of horizon ÷ beat independent beats
    varies that much less than one beat. None with fewer than three beats (no spread yet)."""
    count = len(samples)
    if count < 3 or samples[-1][0] <= samples[0][0]:
        return None
    times = [t for t, _, _ in samples]
    rates = [rate for _, _, rate in samples]
    mean_time, mean_rate = sum(times) / count, sum(rates) / count
    spread = sum((t - mean_time) ** 2 for t in times)
    slope = sum((t - mean_time) * (rate - mean_rate) for t, rate in zip(times, rates, strict=True)) / spread
    residual = sum((rate - mean_rate - slope * (t - mean_time)) ** 2
                   for t, rate in zip(times, rates, strict=True)) / (count - 2)
    beat = (times[-1] - times[0]) / (count - 1)
    return math.sqrt(residual * min(1.0, beat / horizon))


def _surge_level(samples, now: float, window: float, horizon: float, threshold: float) -> float:
    """The level a surge reached, or 0 when the last `horizon` seconds are no surge.

    A surge: the mean rate of the last horizon rose over that of the horizon before it by
    more than the noise allowance (SURGE_NOISE_SIGMAS × √2 × the noise of a horizon's mean,
    measured on the `window`'s beats before the last horizon: the rise is not noise) plus
    `threshold` × the earlier rate. Its level is the recent mean less the noise allowance.
    No surge is told before the noise is known (three beats before the last horizon)."""
    recent = [rate for t, _, rate in samples if t > now - horizon]
    before = [rate for t, _, rate in samples if now - 2 * horizon < t <= now - horizon]
    noise = _rate_noise([sample for sample in samples if now - window < sample[0] <= now - horizon], horizon)
    if not recent or not before or noise is None:
        return 0.0
    earlier = sum(before) / len(before)
    level = sum(recent) / len(recent) - SURGE_NOISE_SIGMAS * math.sqrt(2) * noise
    return level if level - earlier > threshold * earlier and level > 0 else 0.0


def _remember(surges, now: float, memory: float, level: float) -> tuple[tuple[float, float], ...]:
    """The surge levels of the last `memory` seconds as a sliding-window maximum: a new level
    drops the remembered ones it equals or exceeds (they would expire first), so levels fall
    and times rise along the tuple, and the first is the highest still remembered."""
    kept = [item for item in surges if item[0] > now - memory]
    if level > 0:
        kept = [item for item in kept if item[1] > level] + [(now, level)]
    return tuple(kept)


def _planned_rate(policy: Policy, samples, now: float, horizon: float, surges) -> tuple[_Plan, tuple]:
    """The arrival rate the stable count provisions for, and the surges to remember.

    The window's mean rate, plus `headroom_sigmas` × the noise of the mean rate over the
    next `horizon` (the time a new replica takes to serve): square-root staffing, so
    bursty arrivals keep more headroom than steady ones at the same mean. Never below the
    highest surge level of the last `surge_memory` seconds: a surge faster than a cold
    start cannot be followed, so once seen its level stays provisioned for a while.

    The noise comes from the past beats only: the newest rate moves the mean and the rise,
    never the headroom, so more arrivals never give fewer replicas."""
    since = now - policy.window
    inside = [rate for t, _, rate in samples if t > since]
    mean = sum(inside) / len(inside)
    noise = _rate_noise([sample for sample in samples[:-1] if sample[0] > since], horizon)
    planned, words = mean, f"{mean:.1f} req/s"
    if policy.headroom_sigmas and noise:
        planned += policy.headroom_sigmas * noise
        words = f"({mean:.1f} + {policy.headroom_sigmas:g} × σ {noise:.1f}) req/s"
    if not policy.surge_memory:
        return _Plan(planned, words), ()
    level = _surge_level(samples, now, max(policy.window, 2 * horizon), horizon, policy.surge_threshold)
    surges = _remember(surges, now, policy.surge_memory, level)
    if surges and surges[0][1] > planned:
        seen, level = surges[0]
        return _Plan(level, f"{level:.1f} req/s, a surge's level {now - seen:.0f} s ago (now {words}),"), surges
    return _Plan(planned, words), surges


def _held(recommendations, now: float, delay: float, pick) -> int | None:
    """The lowest (pick=min) or highest (pick=max) recommendation in force over the last
    `delay` seconds, or None when the history does not reach back that far (not held yet).

    Recommendations are a step function: each holds from its time until the next one, so
    the one in force at `now - delay` counts too."""
    start = now - delay
    older = [n for t, n in recommendations if t <= start]
    if not older:
        return None
    return pick([older[-1], *(n for t, n in recommendations if t > start)])


def _prune_recommendations(recommendations, now: float, span: float):
    """Keep what `_held` can still need: the last span seconds and the entry in force at its start."""
    start = now - span
    older = [item for item in recommendations if item[0] <= start]
    return tuple(older[-1:] + [item for item in recommendations if item[0] > start])


def _replicas_for(concurrency: float, target: float) -> int:
    return max(0, math.ceil(concurrency / target - _EPS))


def _check_arguments(capacity_per_replica, min_replicas, max_replicas, budget_cap, target, rps_per_replica,
                     cold_start_seconds):
    if not (isinstance(min_replicas, int) and isinstance(max_replicas, int)) or not 0 <= min_replicas <= max_replicas:
        raise ValueError(f"replica bounds must be integers with 0 ≤ min ≤ max, not [{min_replicas}, {max_replicas}].")
    if budget_cap is not None and (not isinstance(budget_cap, int) or budget_cap < 0):
        raise ValueError(f"budget_cap must be a non-negative integer or None, not {budget_cap!r}.")
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"target concurrency per replica must be positive: policy target is unset and "
                         f"capacity_per_replica is {capacity_per_replica!r}.")
    if rps_per_replica is not None and not (rps_per_replica > 0 and math.isfinite(rps_per_replica)):
        raise ValueError(f"rps_per_replica must be positive or None, not {rps_per_replica!r}.")
    if cold_start_seconds is not None and not (cold_start_seconds > 0 and math.isfinite(cold_start_seconds)):
        raise ValueError(f"cold_start_seconds must be positive or None, not {cold_start_seconds!r}.")


def decide(policy: Policy, signals: Signals, state: ScalerState, *, capacity_per_replica: float,
           min_replicas: int, max_replicas: int, now: float, budget_cap: int | None = None,
           ttft_slo_ms: float | None = None, rps_per_replica: float | None = None,
           cold_start_seconds: float | None = None) -> Decision:
    """Desired replicas for one deployment at time `now`, and the state for the next call.

    `capacity_per_replica`: in-flight requests one replica carries within the SLO (the
    target unless the policy sets one). `rps_per_replica` (optional, the figure placement
    uses): requests/s one replica serves when carrying `capacity_per_replica` — with it,
    arrivals count as load too (see `_load`). `ttft_slo_ms` (optional): with
    `signals.ttft_p95_ms` above it and no replica starting, one replica more than the
    ready ones is asked for. `budget_cap` (optional, set by billing): at most this many.
    `cold_start_seconds` (optional): how long a new replica takes from being asked for to
    serving — the horizon of the headroom and of a surge (without it, `policy.window`).

    Contract: `desired_replicas` ≤ `budget_cap` (when given) and lies in
    [min(min_replicas, budget_cap), max_replicas] — a budget cap below min_replicas wins
    (billing's "scale to minimum" / "pause" actions). For the same state, more demand never
    gives fewer replicas. `now` must not go backwards between calls on one state.
    """
    target = policy.target_concurrency_per_replica or capacity_per_replica
    _check_arguments(capacity_per_replica, min_replicas, max_replicas, budget_cap, target, rps_per_replica,
                     cold_start_seconds)
    demand = signals.demand
    ready, current = signals.ready_replicas, signals.current_replicas
    # Little's law: a request takes capacity / rps seconds on a replica at capacity, so arrivals ×
    # that is the in-flight count they would make there (divided by a policy target below
    # capacity, it keeps the same headroom as the in-flight count does).
    seconds_at_capacity = capacity_per_replica / rps_per_replica if rps_per_replica else None

    horizon = policy.window if cold_start_seconds is None else cold_start_seconds
    # A surge compares the last horizon with the one before it: keep both.
    keep_samples = max(policy.window, policy.panic_window, 2 * horizon if policy.surge_memory else 0.0)
    samples = tuple(sample for sample in state.samples if sample[0] > now - keep_samples) \
        + ((now, demand, max(signals.request_rate, 0.0)),)
    plan, surges = None, ()  # headroom and surges are arrival rates: only with rps_per_replica
    if seconds_at_capacity is not None:
        plan, surges = _planned_rate(policy, samples, now, horizon, state.surges)
    stable_average, stable_load = _load(samples, now - policy.window, seconds_at_capacity, plan)
    panic_average, panic_load = _load(samples, now - policy.panic_window, seconds_at_capacity)
    stable_count = _replicas_for(stable_average, target)
    panic_count = _replicas_for(panic_average, target)

    last_traffic_at = now if signals.has_traffic or state.last_traffic_at is None else state.last_traffic_at

    # What the load asks for, in stable mode. Below one replica only when scale to zero is
    # allowed and due: an idle deployment keeps its last replica until then.
    recommended = stable_count
    reason = (f"stable: {stable_load} over {policy.window:g} s ÷ target {target:.1f} "
              f"= {stable_count} replica{'s' if stable_count != 1 else ''}")
    if (signals.ttft_p95_ms is not None and ttft_slo_ms is not None and signals.ttft_p95_ms > ttft_slo_ms
            and signals.starting_replicas == 0 and ready + 1 > recommended):
        # Concurrency says the replicas suffice, latency says they do not (long prompts, a
        # replica slower than the model): one more at a time, one cold start at a time.
        recommended = ready + 1
        reason = (f"stable: p95 TTFT {signals.ttft_p95_ms:.0f} ms > SLO {ttft_slo_ms:g} ms "
                  f"with no replica starting: one more than the {ready} ready")
    idle_for = now - last_traffic_at
    scale_to_zero = (min_replicas == 0 and policy.scale_to_zero_after is not None
                     and not signals.has_traffic and (idle_for >= policy.scale_to_zero_after or current == 0))
    if not scale_to_zero:
        recommended = max(recommended, 1)
    span = max(policy.scale_up_delay, policy.scale_down_delay)
    recommendations = _prune_recommendations(state.recommendations + ((now, recommended),), now, span)

    # Panic: the short window over the threshold, measured against the ready replicas (at
    # least one, so a deployment with none ready panics on any real load).
    per_replica = panic_average / max(ready, 1)
    over = panic_average > policy.panic_threshold * target * max(ready, 1)
    panic_since, panic_last_over, panic_peak = state.panic_since, state.panic_last_over, state.panic_peak
    if over:
        panic_since = now if panic_since is None else panic_since
        panic_last_over = now
    elif panic_since is not None and now - panic_last_over >= policy.window:
        panic_since, panic_last_over, panic_peak = None, None, 0

    if panic_since is not None:
        mode = PANIC
        desired = max(panic_count, recommended, current, panic_peak)
        if over:
            reason = (f"panic: {per_replica:.1f} in flight per replica > {policy.panic_threshold:g} × target "
                      f"{target:.1f} over {policy.panic_window:g} s ({panic_load} on {max(ready, 1)} ready); "
                      f"asking for {max(panic_count, recommended)}")
        else:
            reason = (f"panic: holding {desired} (no scale-down) until {policy.window:g} s calm; over the "
                      f"threshold {now - panic_last_over:.0f} s ago")
    elif scale_to_zero:
        mode = IDLE
        desired = 0
        reason = (f"idle: no traffic for {idle_for:.0f} s ≥ {policy.scale_to_zero_after:g} s; scaling to zero"
                  if current else "idle: no traffic, no replica")
    else:
        mode = STABLE
        desired = current
        if current == 0:
            desired = recommended  # activation: traffic (or a deployment that may not sit at zero)
            if signals.has_traffic:
                reason = f"activation: {demand:g} request(s) waiting and no replica; {reason}"
            else:
                reason = f"no replica, and scale to zero is not allowed; {reason}"
        elif recommended > current:
            held = recommended if policy.scale_up_delay == 0 else _held(recommendations, now,
                                                                          policy.scale_up_delay, min)
            if held is not None and held > current:
                desired = held
            else:
                reason += f"; waiting for it to hold {policy.scale_up_delay:g} s before scaling up"
        elif recommended < current:
            held = recommended if policy.scale_down_delay == 0 else _held(recommendations, now,
                                                                            policy.scale_down_delay, max)
            if held is not None and held < current:
                desired = held
                if policy.scale_down_delay:
                    reason += f"; at most {held} over the last {policy.scale_down_delay:g} s"
            else:
                reason += f"; keeping {current} until a lower count holds {policy.scale_down_delay:g} s"

    # At most max_scale_down_rate of the replicas go per decision (at least one may, so small
    # deployments can shrink).
    if desired < current:
        floor = current - max(1, math.floor(current * policy.max_scale_down_rate + _EPS))
        if desired < floor:
            reason += f"; removing at most {current - floor} of {current} per decision"
            desired = floor

    bounded = min(max(desired, min_replicas), max_replicas)
    if bounded != desired:
        reason += f"; {'raised to min_replicas' if bounded > desired else 'lowered to max_replicas'} {bounded}"
    if mode == PANIC:
        panic_peak = bounded  # what panic holds: never below this until it ends (a budget cap aside)
    if budget_cap is not None and bounded > budget_cap:
        reason += f"; capped by budget at {budget_cap}"
        bounded = budget_cap
    desired = bounded

    direction, direction_since = state.direction, state.direction_since
    if desired != current:
        moved = UP if desired > current else DOWN
        if moved != direction:
            direction, direction_since = moved, now
    reason += f" ({current} → {desired})" if desired != current else f" (stays {desired})"

    new_state = replace(state, samples=samples, recommendations=recommendations, surges=surges,
                        panic_since=panic_since,
                        panic_last_over=panic_last_over, panic_peak=panic_peak if panic_since is not None else 0,
                        last_traffic_at=last_traffic_at, direction=direction, direction_since=direction_since)
    return Decision(desired, mode, reason, new_state)


def demand_rps(desired_replicas: int, rps_per_replica: float) -> float:
    """The `demand_rps` placement needs so that it keeps `desired_replicas` of a shape serving
    `rps_per_replica` each (placement compares with a 1e-9 tolerance, so float rounding of the
    product never asks for one replica more)."""
    if desired_replicas < 0 or rps_per_replica < 0:
        raise ValueError("desired replicas and rps per replica must not be negative.")
    return desired_replicas * rps_per_replica
