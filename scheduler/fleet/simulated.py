"""The simulated fleet: a digital twin of replicas serving synthetic traffic. Pure: no Django.

Each replica runs the performance model (scheduler/perf.py) of its model on its
hardware and receives synthetic traffic from its `TrafficProfile`. Time is cut into
ticks of `tick_seconds` on a fixed grid (tick k covers [k·T, (k+1)·T) in epoch
seconds); a tick is simulated once it has fully elapsed, in aggregate:

- *arrivals*: a renewal process with Gamma inter-arrival times of the profile's CV,
  run in "operational time" (the integral of the rate, so the daily curve and spikes
  bend it); a tick expecting more than `EXACT_ARRIVALS_LIMIT` arrivals draws its count
  at once from a Gamma with the renewal count's mean m and variance CV²·m;
- *engine*: continuous batching at the concurrency c whose closed-loop throughput
  X(c) (perf `_under_load`) carries the tick's load; past the memory limit (the
  largest concurrency whose KV cache fits, capped at vLLM's max_num_seqs) requests
  queue and carry to the next tick, and a queued request's TTFT includes its wait
  (clients give up after CLIENT_TIMEOUT_SECONDS: the queue never holds more work);
- *requests*: up to `representatives_per_tick` requests are drawn (log-normal token
  lengths fitted to median/p90), each standing for an integer share of the tick's
  requests; their TTFT, TPOT and E2E at concurrency c fill vLLM's histograms and
  their tokens the counters. A request is recorded in the tick it is admitted.

Every random draw of tick k comes from an RNG seeded by (fleet seed, replica id,
incarnation, k), so a replica's history does not depend on how often or in which
chunks time is advanced, advancing to the same time twice changes nothing, and a new
process continues from the state files exactly where the last one stopped.

Lifecycle (simulated time follows the clock, wall-clock by default): pending for
`pending_seconds` (scheduling, image on the node), starting while the weights load
(weight bytes ÷ the hardware's load_bandwidth_gbs) plus `engine_start_seconds`
(engine init, KV-cache profiling, graph capture), then ready. A model that does not
fit fails at the end of start-up, as vLLM does. Node failures are injected at
`failure_rate_per_node_hour` (a Poisson process per node id, the same draw for every
replica on the node): its replicas go to `failed`. Delete drains: no new requests,
the queue is served, then stopped.
"""

import fcntl
import hashlib
import json
import math
import os
import random
import re
import time
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cached_property
from pathlib import Path

from scheduler.architecture import Architecture, ConfigError, parse_config
from scheduler.catalog import accelerator_specs, efficiency_for, hardware_catalog
from scheduler.fleet import metrics
from scheduler.fleet.base import (
    SERVING_STATES,
    FleetError,
    MetricsUnavailable,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaStatus,
    SpecError,
    served_model_name,
    to_datetime,
    to_epoch,
)
from scheduler.perf import (
    GB,
    MAX_NUM_SEQS,
    Workload,
    _under_load,
    decode_step_seconds,
    fit_reason,
    max_concurrency,
    prefill_seconds,
)

STATE_VERSION = 1
Z90 = 1.2815515655446004  # standard normal quantile of 0.9
EXACT_ARRIVALS_LIMIT = 32  # expected arrivals per tick above which the count is drawn at once
ARRIVALS_CAP = 100_000  # per replica per tick: a guard against a pathological burst draw
STOPPED_RETENTION_SECONDS = 3600.0  # a stopped replica is still listed this long, then forgotten
DEFAULT_LOAD_BANDWIDTH_GBS = 2.0
MEMO_LIMIT = 200_000  # memoised latencies per replica shape
# Clients give up on a request queued this long (the OpenAI Python SDK's default timeout):
# the queue never holds more than this many seconds of work; the rest is aborted.
CLIENT_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class _CachedArchitecture(Architecture):
    """An Architecture whose derived counts are computed once: the simulator asks the
    performance model for thousands of latencies per simulated hour."""

    total_params = cached_property(Architecture.total_params.fget)
    active_params = cached_property(Architecture.active_params.fget)
    expert_params = cached_property(Architecture.expert_params.fget)
    embedding_params = cached_property(Architecture.embedding_params.fget)
    is_moe = cached_property(Architecture.is_moe.fget)

    def weight_bytes(self, dtype: str) -> float:
        cache = self.__dict__.setdefault("_weight_bytes", {})
        if dtype not in cache:
            cache[dtype] = super().weight_bytes(dtype)
        return cache[dtype]

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        cache = self.__dict__.setdefault("_kv_bytes_per_token", {})
        if kv_dtype_bytes not in cache:
            cache[kv_dtype_bytes] = super().kv_bytes_per_token(kv_dtype_bytes)
        return cache[kv_dtype_bytes]


def _lognormal_parameters(median: int, p90: int) -> tuple[float, float]:
    return math.log(median), math.log(p90 / median) / Z90


@dataclass
class _Engine:
    """What the performance model says about one replica shape; built once per process."""

    spec: ReplicaSpec
    engine_start_seconds: float

    @cached_property
    def arch(self):
        try:
            parsed = parse_config(self.spec.model_config, modality=self.spec.modality)
        except ConfigError as error:
            raise SpecError(f"model_config.{error.field}", error.message) from None
        return _CachedArchitecture(**{f.name: getattr(parsed, f.name) for f in fields(Architecture)})

    @cached_property
    def hardware(self):
        catalog = hardware_catalog()
        if self.spec.hardware not in catalog:
            raise SpecError("hardware", f"unknown hardware {self.spec.hardware!r}; the catalog has "
                                        f"{', '.join(sorted(catalog))}.")
        return catalog[self.spec.hardware]

    @cached_property
    def efficiency(self):
        return efficiency_for(self.hardware)

    @property
    def dtype(self) -> str:
        return "bf16" if self.spec.dtype == "fp16" else self.spec.dtype  # same bytes, same speed

    @property
    def tp(self) -> int:
        return self.spec.accelerators

    @cached_property
    def max_model_len(self) -> int:
        return min(self.spec.max_model_len or self.arch.context_length, self.arch.context_length)

    @cached_property
    def token_parameters(self):
        t = self.spec.traffic
        return (_lognormal_parameters(t.input_tokens_median, t.input_tokens_p90),
                _lognormal_parameters(t.output_tokens_median, t.output_tokens_p90))

    @cached_property
    def typical(self) -> Workload:
        """The mean request (log-normal means, clipped to the context)."""
        (in_mu, in_sigma), (out_mu, out_sigma) = self.token_parameters
        output = 0 if self.arch.is_embedding else min(round(math.exp(out_mu + out_sigma ** 2 / 2)),
                                                      self.spec.traffic.max_output_tokens)
        prompt = min(round(math.exp(in_mu + in_sigma ** 2 / 2)), self.max_model_len - max(output, 1))
        return Workload(max(prompt, 1), max(output, 1) if not self.arch.is_embedding else 1)

    @cached_property
    def weight_bytes(self) -> float:
        return self.arch.weight_bytes(self.dtype)

    @cached_property
    def load_seconds(self) -> float:
        """Weights streamed from storage onto the node's accelerators, then the engine's own start."""
        spec = accelerator_specs().get(self.spec.hardware, {})
        bandwidth = float(spec.get("load_bandwidth_gbs") or DEFAULT_LOAD_BANDWIDTH_GBS)
        return self.weight_bytes / (bandwidth * GB) + self.engine_start_seconds

    @cached_property
    def start_error(self) -> str:
        context = self.typical.input_tokens + self.typical.output_tokens
        return fit_reason(self.arch, self.dtype, self.hardware, self.tp, context, 1)

    @cached_property
    def kv_room(self) -> int:
        """How many mean requests' KV caches fit beside the weights."""
        if self.start_error:
            return 0
        context = self.typical.input_tokens + self.typical.output_tokens
        return max_concurrency(self.arch, self.dtype, self.hardware, self.tp, context)

    @cached_property
    def max_running(self) -> int:
        return max(1, min(MAX_NUM_SEQS, self.kv_room)) if self.kv_room else 0

    @cached_property
    def curve(self) -> list[tuple[float, float, float]]:
        """(throughput X(c) requests/s, stretch s(c), service time S(c)) for c = 1 … max_running;
        X is made non-decreasing so the smallest c carrying a rate is found by bisection."""
        rows, best = [], 0.0
        base = prefill_seconds(self.arch, self.dtype, self.hardware, self.efficiency, self.tp,
                               self.typical.input_tokens)
        for c in range(1, self.max_running + 1):
            loaded = _under_load(self.arch, self.dtype, self.hardware, self.efficiency, self.tp,
                                 Workload(self.typical.input_tokens, self.typical.output_tokens, c))
            best = max(best, loaded.requests_per_s)
            rows.append((best, loaded.ttft / base, c / loaded.requests_per_s))
        return rows

    @property
    def max_throughput(self) -> float:
        """Requests/s of the mean request at saturation (max_running in flight): what the
        engine gets through when overloaded, latency aside. Above the estimator's
        `rps_per_replica`, which is the rate at the largest concurrency still within the SLO;
        the two agree when memory or MAX_NUM_SEQS, not latency, bounds the concurrency."""
        return self.curve[-1][0]

    def concurrency_for(self, rate: float) -> int:
        """The smallest concurrency whose throughput carries `rate` (max_running if none does)."""
        low, high = 0, len(self.curve) - 1
        while low < high:
            middle = (low + high) // 2
            if self.curve[middle][0] >= rate:
                high = middle
            else:
                low = middle + 1
        return low + 1

    @cached_property
    def histogram_definitions(self) -> dict[str, metrics.HistogramDef]:
        return {**metrics.LATENCY_HISTOGRAMS, **metrics.token_histograms(self.max_model_len)}

    def validate(self) -> None:
        """Raise SpecError now for a config or hardware the simulator cannot run."""
        _ = self.arch, self.hardware

    def kv_usage(self, running: int) -> float:
        """vllm:kv_cache_usage_perc: the share of the KV cache `running` mean requests hold."""
        return min(1.0, running / self.kv_room) if self.kv_room else 0.0

    def draw_request(self, rng: random.Random) -> tuple[int, int, str]:
        """One request's prompt and output tokens and how it finishes."""
        (in_mu, in_sigma), (out_mu, out_sigma) = self.token_parameters
        prompt = min(max(1, round(math.exp(in_mu + in_sigma * rng.gauss()))), self.max_model_len - 1)
        if self.arch.is_embedding:
            return prompt, 0, "stop"
        wanted = max(1, round(math.exp(out_mu + out_sigma * rng.gauss())))
        limit = min(self.spec.traffic.max_output_tokens, self.max_model_len - prompt)
        return prompt, min(wanted, limit), "length" if wanted >= limit else "stop"

    @cached_property
    def _memo(self) -> dict:
        return {}

    def latencies(self, prompt: int, output: int, concurrency: int, wait: float) -> tuple[float, float, float]:
        """TTFT, TPOT and E2E of one request at the engine's current concurrency.

        Prefill and decode-step times are memoised (the decode step per 8 tokens of
        context, a difference below 0.1 %): a simulated day asks for ~10⁵ of them."""
        memo = self._memo
        if len(memo) > MEMO_LIMIT:
            memo.clear()
        stretch = self.curve[concurrency - 1][1]
        prefill = memo.get(prompt)
        if prefill is None:
            prefill = memo[prompt] = prefill_seconds(self.arch, self.dtype, self.hardware, self.efficiency, self.tp,
                                                     prompt)
        ttft = prefill * stretch + wait
        if output <= 1:
            return ttft, 0.0, ttft
        context = (prompt + output // 2) // 8 * 8 + 4
        step = memo.get((concurrency, context))
        if step is None:
            step = memo[(concurrency, context)] = decode_step_seconds(
                self.arch, self.dtype, self.hardware, self.efficiency, self.tp, concurrency, context)
        tpot = step * stretch
        return ttft, tpot, ttft + (output - 1) * tpot


def _observe(histogram: tuple[dict, tuple], value: float, weight: int) -> None:
    stored, buckets = histogram
    stored["counts"][bisect_left(buckets, value)] += weight
    stored["sum"] += value * weight


def _rng(*parts) -> random.Random:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _uniforms(*parts) -> tuple[float, float]:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64, int.from_bytes(digest[8:], "big") / 2 ** 64


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _file_name(replica_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", replica_id)[:80]
    return f"{safe}-{hashlib.sha256(replica_id.encode()).hexdigest()[:16]}.json"


class SimulatedFleet:
    """The digital twin. State lives in `state_dir` (one JSON file per replica, plus
    fleet.json); every call takes a file lock on the directory, so worker processes
    sharing it never double-count.

    `clock` returns epoch seconds (wall clock by default); a benchmark or a test passes
    its own to run simulated time at any speed.
    """

    def __init__(self, state_dir: str | Path, *, seed: int = 1, tick_seconds: float = 10.0,
                 failure_rate_per_node_hour: float = 0.0, pending_seconds: float = 5.0,
                 engine_start_seconds: float = 30.0, representatives_per_tick: int = 4, clock=time.time):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SpecError("seed", f"must be an integer, not {seed!r}.")
        for name, value, low in (("tick_seconds", tick_seconds, 0.1), ("pending_seconds", pending_seconds, 0.0),
                                 ("engine_start_seconds", engine_start_seconds, 0.0),
                                 ("failure_rate_per_node_hour", failure_rate_per_node_hour, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise SpecError(name, f"must be a number of at least {low:g}, not {value!r}.")
        if isinstance(representatives_per_tick, bool) or not isinstance(representatives_per_tick, int) \
                or representatives_per_tick < 1:
            raise SpecError("representatives_per_tick",
                            f"must be a positive integer, not {representatives_per_tick!r}.")
        self.state_dir = Path(state_dir)
        self.seed = seed
        self.tick_seconds = float(tick_seconds)
        self.failure_rate_per_node_hour = float(failure_rate_per_node_hour)
        self.pending_seconds = float(pending_seconds)
        self.engine_start_seconds = float(engine_start_seconds)
        self.representatives_per_tick = representatives_per_tick
        self.clock = clock
        self._engines: dict[str, _Engine] = {}
        (self.state_dir / "replicas").mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._check_fleet_file()

    # --- the protocol ---------------------------------------------------------------------

    def create_replica(self, spec: ReplicaSpec) -> ReplicaStatus:
        if not isinstance(spec, ReplicaSpec):
            raise TypeError("create_replica takes a ReplicaSpec")
        engine = _Engine(spec, self.engine_start_seconds)
        engine.validate()  # a bad config or hardware fails here, not in a later tick
        with self._locked():
            now = self._now()
            state = self._load(spec.replica_id)
            if state is not None:
                self._simulate(state, now)
                same = ReplicaSpec.from_dict(state["spec"]).without_traffic() == spec.without_traffic()
                if same and self._state_at(state, now) not in ("stopped", "failed"):
                    if state["spec"] != spec.to_dict():
                        state["spec"] = spec.to_dict()  # new traffic: takes effect from the next tick
                        self._engines.pop(self._engine_key(state), None)
                    self._save(state)
                    return self._status(state, now)
            state = self._new_state(spec, engine, now, incarnation=state["incarnation"] + 1 if state else 0)
            self._engines[self._engine_key(state)] = engine
            self._save(state)
            return self._status(state, now)

    def delete_replica(self, replica_id: str) -> None:
        with self._locked():
            now = self._now()
            state = self._load(replica_id)
            if state is None:
                return
            self._simulate(state, now)
            current = self._state_at(state, now)
            if current in ("stopped", "draining"):
                return
            if current == "ready":
                state["drain_started_at"] = now
                state["stopped_at"] = now + self._drain_seconds(state)
            else:  # pending, starting, failed: nothing to drain
                state["stopped_at"] = now
            self._save(state)

    def list_replicas(self) -> list[ReplicaStatus]:
        with self._locked():
            now = self._now()
            statuses = []
            for path in sorted((self.state_dir / "replicas").glob("*.json")):
                state = self._read(path)
                moved = self._simulate(state, now)
                if state["stopped_at"] is not None and now - state["stopped_at"] > STOPPED_RETENTION_SECONDS:
                    path.unlink(missing_ok=True)
                    continue
                if moved:
                    self._save(state)
                statuses.append(self._status(state, now))
            return statuses

    def fetch_metrics(self, replica_id: str) -> str:
        with self._locked():
            now = self._now()
            state = self._caught_up(replica_id, now)
            current = self._state_at(state, now)
            if current not in SERVING_STATES:
                raise MetricsUnavailable(f"replica {replica_id!r} is {current}: its server does not answer /metrics")
            return metrics.exposition(self._snapshot(state))

    def advance(self, now: float | datetime | None = None) -> None:
        """Simulate every replica up to `now` (default: the clock). Time never goes back:
        an earlier `now` than already reached changes nothing."""
        with self._locked():
            now = self._now(None if now is None else to_epoch(now))
            for path in (self.state_dir / "replicas").glob("*.json"):
                state = self._read(path)
                if self._simulate(state, now):
                    self._save(state)

    def status(self, replica_id: str) -> ReplicaStatus:
        """One replica's status (a convenience beside list_replicas)."""
        with self._locked():
            now = self._now()
            return self._status(self._caught_up(replica_id, now), now)

    def _caught_up(self, replica_id: str, now: float):
        """The replica's state simulated up to `now` (and saved if that moved it). Hold the lock."""
        state = self._load(replica_id)
        if state is None:
            raise ReplicaNotFound(f"no replica {replica_id!r} in the simulated fleet")
        if self._simulate(state, now):
            self._save(state)
        return state

    # --- time and files -------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        with open(self.state_dir / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _check_fleet_file(self):
        path = self.state_dir / "fleet.json"
        if path.exists():
            fleet = json.loads(path.read_text())
            for key in ("seed", "tick_seconds"):
                if fleet[key] != getattr(self, key):
                    raise FleetError(f"the fleet state in {self.state_dir} was made with {key}={fleet[key]!r}, "
                                     f"not {getattr(self, key)!r}: use that value or another state directory")
        else:
            self._write(path, {"version": STATE_VERSION, "seed": self.seed, "tick_seconds": self.tick_seconds,
                               "now": None})

    def _now(self, requested: float | None = None) -> float:
        """The fleet's time: the clock (or `requested`), never earlier than a time already reached."""
        path = self.state_dir / "fleet.json"
        fleet = json.loads(path.read_text())
        candidate = float(self.clock()) if requested is None else requested
        now = candidate if fleet["now"] is None else max(candidate, fleet["now"])
        if now != fleet["now"]:
            fleet["now"] = now
            self._write(path, fleet)
        return now

    @staticmethod
    def _write(path: Path, data: dict) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(temporary, path)  # atomic: a reader sees the old file or the new one

    @staticmethod
    def _read(path: Path) -> dict:
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise FleetError(f"{path} has state version {state.get('version')!r}, this code reads {STATE_VERSION}")
        return state

    def _path(self, replica_id: str) -> Path:
        return self.state_dir / "replicas" / _file_name(replica_id)

    def _load(self, replica_id: str) -> dict | None:
        path = self._path(replica_id)
        return self._read(path) if path.exists() else None

    def _save(self, state: dict) -> None:
        self._write(self._path(state["spec"]["replica_id"]), state)

    # --- one replica ----------------------------------------------------------------------

    @staticmethod
    def _engine_key(state: dict) -> str:
        spec = json.dumps(state["spec"], sort_keys=True)
        return f"{state['spec']['replica_id']}#{state['incarnation']}#{hashlib.sha256(spec.encode()).hexdigest()}"

    def _engine(self, state: dict) -> _Engine:
        key = self._engine_key(state)
        if key not in self._engines:
            self._engines[key] = _Engine(ReplicaSpec.from_dict(state["spec"]), self.engine_start_seconds)
        return self._engines[key]

    def _new_state(self, spec: ReplicaSpec, engine: _Engine, now: float, incarnation: int) -> dict:
        starting_at = now + self.pending_seconds
        ready_at = starting_at + engine.load_seconds
        return {
            "version": STATE_VERSION,
            "spec": spec.to_dict(),
            "incarnation": incarnation,
            "created_at": now,
            "starting_at": starting_at,
            "ready_at": ready_at,
            "failed_at": ready_at if engine.start_error else None,
            "failure": f"engine failed to start: {engine.start_error}" if engine.start_error else "",
            "drain_started_at": None,
            "stopped_at": None,
            "simulated_until": now,
            "residual": None,  # operational time to the next arrival (renewal process)
            "backlog": 0,  # requests waiting for a slot
            "capacity_credit": 0.0,  # fraction of a request the engine could still admit
            "running": 0,
            "counters": {"prompt_tokens": 0, "generation_tokens": 0, "preemptions": 0,
                         "success": {reason: 0 for reason in metrics.FINISHED_REASONS}},
            "histograms": {key: metrics.empty_histogram(definition)
                           for key, definition in engine.histogram_definitions.items()},
        }

    @staticmethod
    def _state_at(state: dict, now: float) -> str:
        if state["stopped_at"] is not None and now >= state["stopped_at"]:
            return "stopped"
        if state["failed_at"] is not None and now >= state["failed_at"]:
            return "failed"
        if state["drain_started_at"] is not None and now >= state["drain_started_at"]:
            return "draining"
        if now < state["starting_at"]:
            return "pending"
        if now < state["ready_at"]:
            return "starting"
        return "ready"

    def _status(self, state: dict, now: float) -> ReplicaStatus:
        spec = state["spec"]
        current = self._state_at(state, now)
        engine = self._engine(state)
        messages = {
            "pending": f"scheduled on {spec['node_id'] or 'a node'}; starting in "
                       f"{state['starting_at'] - now:.0f} s",
            "starting": f"loading {engine.weight_bytes / GB:.1f} GB of weights and starting the engine; ready in "
                        f"{state['ready_at'] - now:.0f} s",
            "ready": "",
            "draining": f"draining: {state['backlog'] + state['running']} requests in flight",
            "stopped": "deleted",
            "failed": state["failure"],
        }
        served = state["failed_at"] is None or state["failed_at"] > state["ready_at"]
        return ReplicaStatus(
            replica_id=spec["replica_id"], state=current,
            endpoint=f"sim://{spec['replica_id']}" if current in SERVING_STATES else "",
            started_at=to_datetime(state["created_at"]),
            ready_at=to_datetime(state["ready_at"]) if served and now >= state["ready_at"] else None,
            message=messages[current], deployment_id=spec["deployment_id"], node_id=spec["node_id"],
        )

    def _drain_seconds(self, state: dict) -> float:
        """Time to finish what is queued and running: the queue at full throughput, then one request."""
        engine = self._engine(state)
        if not engine.max_running:
            return 0.0
        concurrency = max(1, min(state["running"], engine.max_running))
        return state["backlog"] / engine.max_throughput + engine.curve[concurrency - 1][2]

    def _simulate(self, state: dict, now: float) -> bool:
        """Simulate every tick of this replica that has fully elapsed by `now`. True if anything moved."""
        step = self.tick_seconds
        engine = None
        moved = False
        while True:
            start = state["simulated_until"]
            index = math.floor(start / step)
            end = (index + 1) * step
            if end > now:
                return moved
            gone = min((t for t in (state["stopped_at"], state["failed_at"]) if t is not None), default=math.inf)
            if gone <= start:
                # Stopped or failed: nothing more happens to it. Jump to the last elapsed tick boundary.
                state["simulated_until"] = math.floor(now / step) * step
                state["running"] = 0
                return True
            engine = engine or self._engine(state)
            self._tick(state, engine, index, start, end)
            state["simulated_until"] = end
            moved = True

    def _tick(self, state: dict, engine: _Engine, index: int, start: float, end: float) -> None:
        spec = state["spec"]
        self._inject_failure(state, index, start, end)
        if not engine.max_running:
            return
        stop = min(t for t in (end, state["failed_at"], state["stopped_at"]) if t is not None)
        serving_from = max(start, state["ready_at"])
        serving = max(0.0, stop - serving_from)
        taking_until = min(stop, state["drain_started_at"]) if state["drain_started_at"] is not None else stop
        taking = max(0.0, taking_until - serving_from)
        expected = engine.spec.traffic.rate_at(serving_from + taking / 2) * taking if taking else 0.0
        if serving <= 0 or (expected <= 0 and not state["backlog"]):  # idle: no draw needed
            state["running"] = 0
            self._abort_if_stopped(state, end)
            return
        rng = _rng(self.seed, spec["replica_id"], state["incarnation"], index)
        arrivals = self._arrivals(state, rng, expected, engine.spec.traffic.burstiness)
        demand = state["backlog"] + arrivals
        if demand == 0:
            state["running"] = 0
            self._abort_if_stopped(state, end)
            return
        capacity = engine.max_throughput * serving + state["capacity_credit"]
        backlog_before = state["backlog"]
        if demand <= capacity:
            admitted, state["backlog"], state["capacity_credit"] = demand, 0, 0.0
            concurrency = engine.concurrency_for(demand / serving)
        else:
            admitted = math.floor(capacity)
            state["capacity_credit"] = capacity - admitted
            state["backlog"] = demand - admitted
            concurrency = engine.max_running
            patience = math.floor(CLIENT_TIMEOUT_SECONDS * engine.max_throughput)
            if state["backlog"] > patience:
                state["counters"]["success"]["abort"] += state["backlog"] - patience
                state["backlog"] = patience
        self._record(state, engine, rng, admitted, concurrency, backlog_before)
        rate = admitted / serving
        in_flight = rate * engine.curve[concurrency - 1][2]  # Little's law: rate × service time
        state["running"] = min(engine.max_running, _poisson(rng, in_flight))
        self._abort_if_stopped(state, end)

    def _inject_failure(self, state: dict, index: int, start: float, end: float) -> None:
        rate = self.failure_rate_per_node_hour
        if rate <= 0 or state["failed_at"] is not None:
            return
        node = state["spec"]["node_id"] or f"replica:{state['spec']['replica_id']}"
        probability = 1 - math.exp(-rate * self.tick_seconds / 3600)
        chance, position = _uniforms(self.seed, "node", node, index)
        when = index * self.tick_seconds + position * self.tick_seconds
        gone = state["stopped_at"] if state["stopped_at"] is not None else math.inf
        if chance < probability and start <= when < min(end, gone):
            state["failed_at"] = when
            node_name = state["spec"]["node_id"] or "(unnamed)"
            state["failure"] = f"node {node_name} failed at {to_datetime(when):%Y-%m-%d %H:%M:%S} UTC"

    @staticmethod
    def _arrivals(state: dict, rng: random.Random, expected: float, burstiness: float) -> int:
        """Arrivals in `expected` units of operational time of a Gamma renewal process (mean gap 1)."""
        if expected <= 0:
            return 0
        variance = burstiness ** 2
        if expected > EXACT_ARRIVALS_LIMIT:
            state["residual"] = None  # the renewal restarts after an aggregated tick
            return min(ARRIVALS_CAP, round(rng.gammavariate(expected / variance, variance)))
        shape = 1 / variance
        residual = state["residual"]
        if residual is None:
            residual = rng.gammavariate(shape, variance)
        count = 0
        while residual <= expected and count < ARRIVALS_CAP:
            count += 1
            residual += rng.gammavariate(shape, variance)
        state["residual"] = max(0.0, residual - expected)
        return count

    def _record(self, state: dict, engine: _Engine, rng: random.Random, admitted: int, concurrency: int,
                backlog_before: int) -> None:
        """Draw representatives of the admitted requests and add them to counters and histograms."""
        if admitted <= 0:
            return
        representatives = min(admitted, self.representatives_per_tick)
        share, extra = divmod(admitted, representatives)
        counters, success = state["counters"], state["counters"]["success"]
        histograms = {key: (state["histograms"][key], definition.buckets)
                      for key, definition in engine.histogram_definitions.items()}
        ttft_h, tpot_h, itl_h, request_tpot_h = (histograms[k] for k in ("ttft", "tpot", "itl", "request_tpot"))
        e2e_h, queue_h, prompt_h, output_h = (histograms[k] for k in ("e2e", "queue", "prompt_tokens",
                                                                       "generation_tokens"))
        backlog_after = state["backlog"]
        prompt_total = output_total = 0
        for index in range(representatives):
            weight = share + (1 if index < extra else 0)
            prompt, output, reason = engine.draw_request(rng)
            queued = backlog_before + rng.random() * (backlog_after - backlog_before)
            wait = queued / engine.max_throughput if queued > 0 else 0.0
            ttft, tpot, e2e = engine.latencies(prompt, output, concurrency, wait)
            prompt_total += weight * prompt
            output_total += weight * output
            success[reason] += weight
            _observe(ttft_h, ttft, weight)
            _observe(e2e_h, e2e, weight)
            _observe(queue_h, wait, weight)
            _observe(prompt_h, prompt, weight)
            _observe(output_h, output, weight)
            if output > 1:
                _observe(request_tpot_h, tpot, weight)
                # vLLM observes one inter-token latency per generated token after the first.
                _observe(tpot_h, tpot, weight * (output - 1))
                _observe(itl_h, tpot, weight * (output - 1))
        counters["prompt_tokens"] += prompt_total
        counters["generation_tokens"] += output_total

    @staticmethod
    def _abort_if_stopped(state: dict, end: float) -> None:
        """Requests still queued when the server stops are aborted (finished_reason="abort")."""
        stop = state["stopped_at"]
        if stop is not None and stop <= end and state["backlog"]:
            state["counters"]["success"]["abort"] += state["backlog"]
            state["backlog"] = 0
            state["running"] = 0

    def _snapshot(self, state: dict) -> metrics.Snapshot:
        engine = self._engine(state)
        counters = state["counters"]
        return metrics.Snapshot(
            model_name=served_model_name(engine.spec), created=state["ready_at"], running=state["running"],
            waiting=state["backlog"], kv_cache_usage=engine.kv_usage(state["running"]),
            prompt_tokens=counters["prompt_tokens"], generation_tokens=counters["generation_tokens"],
            success=counters["success"], preemptions=counters["preemptions"], histograms=state["histograms"],
            definitions=engine.histogram_definitions,
        )
