"""The fleet driver protocol and the plain values it speaks. Pure: no Django.

A *fleet driver* runs replicas of model servers somewhere: in the simulated fleet (a
digital twin, the default) or on a Kubernetes cluster. The reconcile service maps
its rows (deployments, replicas, nodes) to `ReplicaSpec`s, asks the driver to create
or delete replicas, and maps the `ReplicaStatus`es the driver reports back to rows.
The scrape task reads each ready replica's Prometheus text with `fetch_metrics`.

Contract every driver keeps:

- `create_replica(spec)` is an *apply*: creating an existing replica with the same
  spec changes nothing; with another spec it replaces the replica (a restart). A
  change of `spec.traffic` alone never restarts anything (a real cluster ignores it).
- `delete_replica(id)` is idempotent and graceful: the replica drains (finishes what
  it is serving, takes nothing new) and then stops. Deleting an unknown id is a no-op.
- `list_replicas()` reports every replica the driver knows. A replica that is absent,
  or `stopped`, is gone.
- `fetch_metrics(id)` returns the replica's Prometheus text exposition (vLLM's metric
  names); it raises `MetricsUnavailable` while the server is not serving (pending,
  starting, failed, stopped) and `ReplicaNotFound` for an unknown id.
- `advance(now)` moves the driver's notion of time forward; drivers that follow a
  real system (Kubernetes) ignore it. Every other call advances to the driver's clock
  first, so a reconcile loop that only calls the four methods above sees time pass.
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

REPLICA_STATES = ("pending", "starting", "ready", "draining", "stopped", "failed")
LIVE_STATES = ("pending", "starting", "ready", "draining")
SERVING_STATES = ("ready", "draining")
MODALITIES = ("text", "vision-language", "embedding")
DTYPES = ("bf16", "fp16", "fp8", "int8", "int4")

# Azure LLM inference trace 2023, conversation (shared/reference/README.md): token
# medians and p90s, inter-arrival CV 1.09.
AZURE_CONV_INPUT_MEDIAN, AZURE_CONV_INPUT_P90 = 1020, 2734
AZURE_CONV_OUTPUT_MEDIAN, AZURE_CONV_OUTPUT_P90 = 129, 424
AZURE_CONV_BURSTINESS = 1.09


class FleetError(Exception):
    """A driver could not do what was asked; the message says why, for a person."""


class SpecError(FleetError, ValueError):
    """A ReplicaSpec (or a driver setting) is not valid; `field` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ReplicaNotFound(FleetError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else "replica not found"


class MetricsUnavailable(FleetError):
    """The replica exists but its server does not answer /metrics (not started, or gone)."""


@dataclass(frozen=True)
class Spike:
    """A burst of demand: the request rate is multiplied by `multiplier` for `duration_s`
    seconds from `start` (epoch seconds)."""

    start: float
    duration_s: float
    multiplier: float


@dataclass(frozen=True)
class TrafficProfile:
    """Synthetic traffic the simulated fleet sends to one replica (drivers of real fleets
    ignore it: real users send real traffic).

    - `requests_per_s`: mean arrival rate this replica receives (the reconcile service
      divides a deployment's demand by its replicas).
    - token lengths are log-normal, fitted to the median and p90 given.
    - `burstiness`: coefficient of variation of inter-arrival times (Gamma-distributed);
      1 is Poisson, above 1 is bursty (Azure code trace: 13.2).
    - `daily_curve`: 24 multipliers of the rate, one per UTC hour, interpolated linearly
      between hour midpoints; empty = flat.
    - `spikes`: extra multipliers over given time windows.
    - `max_output_tokens`: a request stops at this length (finished_reason="length").
    """

    requests_per_s: float = 1.0
    input_tokens_median: int = AZURE_CONV_INPUT_MEDIAN
    input_tokens_p90: int = AZURE_CONV_INPUT_P90
    output_tokens_median: int = AZURE_CONV_OUTPUT_MEDIAN
    output_tokens_p90: int = AZURE_CONV_OUTPUT_P90
    burstiness: float = AZURE_CONV_BURSTINESS
    daily_curve: tuple[float, ...] = ()
    spikes: tuple[Spike, ...] = ()
    max_output_tokens: int = 2048

    def __post_init__(self):
        _require_number("traffic.requests_per_s", self.requests_per_s, minimum=0.0, maximum=100_000.0)
        for name in ("input_tokens_median", "output_tokens_median", "max_output_tokens"):
            _require_int(f"traffic.{name}", getattr(self, name), minimum=1)
        if _require_int("traffic.input_tokens_p90", self.input_tokens_p90, minimum=1) < self.input_tokens_median:
            raise SpecError("traffic.input_tokens_p90", "must be at least the median.")
        if _require_int("traffic.output_tokens_p90", self.output_tokens_p90, minimum=1) < self.output_tokens_median:
            raise SpecError("traffic.output_tokens_p90", "must be at least the median.")
        _require_number("traffic.burstiness", self.burstiness, minimum=0.05, maximum=50.0)
        if self.daily_curve and len(self.daily_curve) != 24:
            raise SpecError("traffic.daily_curve", f"needs 24 hourly multipliers (UTC), not {len(self.daily_curve)}.")
        for hour, value in enumerate(self.daily_curve):
            _require_number(f"traffic.daily_curve[{hour}]", value, minimum=0.0, maximum=1000.0)
        for index, spike in enumerate(self.spikes):
            if not isinstance(spike, Spike):
                raise SpecError(f"traffic.spikes[{index}]", "must be a Spike.")
            _require_number(f"traffic.spikes[{index}].duration_s", spike.duration_s, minimum=0.0, maximum=1e9)
            _require_number(f"traffic.spikes[{index}].multiplier", spike.multiplier, minimum=0.0, maximum=1000.0)

    def rate_at(self, t: float) -> float:
        """Requests/s at epoch second `t`: the base rate × the daily curve × active spikes."""
        rate = self.requests_per_s
        if self.daily_curve:
            hour = (t % 86_400) / 3600 - 0.5  # curve values sit at hour midpoints
            low = int(hour // 1) % 24
            weight = hour - hour // 1
            rate *= self.daily_curve[low] * (1 - weight) + self.daily_curve[(low + 1) % 24] * weight
        for spike in self.spikes:
            if spike.start <= t < spike.start + spike.duration_s:
                rate *= spike.multiplier
        return rate

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrafficProfile":
        if not isinstance(data, Mapping):
            raise SpecError("traffic", "must be an object.")
        _reject_unknown("traffic", data, {f.name for f in fields(cls)})
        values = dict(data)
        if "daily_curve" in values:
            values["daily_curve"] = tuple(values["daily_curve"] or ())
        if "spikes" in values:
            spikes = values["spikes"] or ()
            if not isinstance(spikes, (list, tuple)):
                raise SpecError("traffic.spikes", "must be a list.")
            try:
                values["spikes"] = tuple(s if isinstance(s, Spike) else Spike(**s) for s in spikes)
            except TypeError as error:
                raise SpecError("traffic.spikes", f"each spike is {{start, duration_s, multiplier}}: {error}") from None
        return cls(**values)


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a driver needs to run one replica.

    - `replica_id`, `deployment_id`: the control plane's ids (any string; drivers derive
      their own names from them).
    - `model_source`: hf://org/name[@revision], s3://bucket/path, gs://bucket/path,
      pvc://claim/path or oci://registry/repository:tag.
    - `credential_ref`: the *name* of a secret holding the source's credentials (never a
      secret value); "" for a public source.
    - `model_config`: the model's Hugging Face config.json (the simulator derives the
      architecture from it and refuses {}; the Kubernetes driver reads its
      quantization_config and weight size, and with {} trusts the checkpoint and allows
      a 30-minute start-up).
    - `accelerators`: the tensor-parallel degree, counted in the catalog's accelerators.
    - `served_model_name`: the name clients ask for (vLLM's `model_name` label); "" means
      vLLM's default, the model argument.
    - `max_model_len`: the context limit to run with; None = the model's own.
    """

    replica_id: str
    deployment_id: str
    model_source: str
    model_config: dict
    hardware: str
    accelerators: int = 1
    dtype: str = "bf16"
    modality: str = "text"
    credential_ref: str = ""
    node_id: str = ""
    region: str = ""
    zone: str = ""
    served_model_name: str = ""
    max_model_len: int | None = None
    traffic: TrafficProfile = field(default_factory=TrafficProfile)

    def __post_init__(self):
        for name in ("replica_id", "deployment_id", "model_source", "hardware"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(name, "is required (a non-empty string).")
        if not SOURCE_PATTERN.match(self.model_source):
            raise SpecError("model_source", f"must look like hf://org/name or s3://bucket/path "
                                            f"(schemes: {', '.join(SOURCE_SCHEMES)}), not {self.model_source!r}.")
        if not isinstance(self.model_config, dict):
            raise SpecError("model_config", "must be the model's config.json as an object.")
        _require_int("accelerators", self.accelerators, minimum=1)
        if self.dtype not in DTYPES:
            raise SpecError("dtype", f"must be one of {', '.join(DTYPES)}, not {self.dtype!r}.")
        if self.modality not in MODALITIES:
            raise SpecError("modality", f"must be one of {', '.join(MODALITIES)}, not {self.modality!r}.")
        if self.credential_ref and not CREDENTIAL_REF_PATTERN.match(self.credential_ref):
            raise SpecError("credential_ref", "must name a secret (lower-case letters, digits, '-' and '.'), "
                                              f"not {self.credential_ref!r}.")
        if self.max_model_len is not None:
            _require_int("max_model_len", self.max_model_len, minimum=16)
        if not isinstance(self.traffic, TrafficProfile):
            raise SpecError("traffic", "must be a TrafficProfile.")

    def without_traffic(self) -> dict:
        """The spec minus its traffic: what a running replica is (a change here restarts it)."""
        data = self.to_dict()
        data.pop("traffic")
        return data

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReplicaSpec":
        if not isinstance(data, Mapping):
            raise SpecError("spec", "must be a JSON object.")
        known = {f.name for f in fields(cls)}
        _reject_unknown("spec", data, known)
        missing = [name for name in ("replica_id", "deployment_id", "model_source", "model_config", "hardware")
                   if name not in data]
        if missing:
            raise SpecError(missing[0], f"is required (missing: {', '.join(missing)}).")
        values = dict(data)
        if "traffic" in values:
            values["traffic"] = TrafficProfile.from_dict(values["traffic"] or {})
        return cls(**values)


@dataclass(frozen=True)
class ReplicaStatus:
    """What a driver reports about one replica. Times are aware UTC datetimes."""

    replica_id: str
    state: str  # pending | starting | ready | draining | stopped | failed
    endpoint: str = ""  # base URL of the OpenAI-compatible server; "" until it serves
    started_at: datetime | None = None  # when the driver created it
    ready_at: datetime | None = None  # when it first served
    message: str = ""  # why it is pending or failed, for a person
    deployment_id: str = ""
    node_id: str = ""

    def __post_init__(self):
        if self.state not in REPLICA_STATES:
            raise ValueError(f"state must be one of {', '.join(REPLICA_STATES)}, not {self.state!r}")


@runtime_checkable
class FleetDriver(Protocol):
    """The one protocol every fleet driver implements (see the module docstring)."""

    def create_replica(self, spec: ReplicaSpec) -> ReplicaStatus: ...

    def delete_replica(self, replica_id: str) -> None: ...

    def list_replicas(self) -> list[ReplicaStatus]: ...

    def fetch_metrics(self, replica_id: str) -> str: ...

    def advance(self, now: float | datetime | None = None) -> None: ...


# --- settings -----------------------------------------------------------------------------

DRIVERS = ("simulated", "kubernetes")
SIMULATED_KEYS = {"state_dir", "seed", "tick_seconds", "failure_rate_per_node_hour", "pending_seconds",
                  "engine_start_seconds", "representatives_per_tick"}
KUBERNETES_KEYS = {"kubeconfig", "context", "in_cluster", "namespace", "vllm_image", "vllm_images", "pin_to_nodes",
                   "vendor_node_labels", "metrics_via", "cache_claim", "service_domain"}

# Environment variable → (config key, type). The Django settings read these (typed, loud on
# bad values) and hand the dict to `driver_from_settings`; see docs/fleet-drivers.md.
ENVIRONMENT = {
    "SWITCHYARD_FLEET_DRIVER": ("driver", str),
    "SWITCHYARD_FLEET_STATE_DIR": ("state_dir", str),
    "SWITCHYARD_FLEET_SEED": ("seed", int),
    "SWITCHYARD_FLEET_TICK_SECONDS": ("tick_seconds", float),
    "SWITCHYARD_FLEET_FAILURE_RATE": ("failure_rate_per_node_hour", float),
    "SWITCHYARD_FLEET_PENDING_SECONDS": ("pending_seconds", float),
    "SWITCHYARD_FLEET_ENGINE_START_SECONDS": ("engine_start_seconds", float),
    "SWITCHYARD_KUBECONFIG": ("kubeconfig", str),
    "SWITCHYARD_K8S_CONTEXT": ("context", str),
    "SWITCHYARD_K8S_IN_CLUSTER": ("in_cluster", bool),
    "SWITCHYARD_K8S_NAMESPACE": ("namespace", str),
    "SWITCHYARD_VLLM_IMAGE": ("vllm_image", str),
    "SWITCHYARD_K8S_PIN_TO_NODES": ("pin_to_nodes", bool),
    "SWITCHYARD_K8S_VENDOR_NODE_LABELS": ("vendor_node_labels", bool),
    "SWITCHYARD_K8S_METRICS_VIA": ("metrics_via", str),
    "SWITCHYARD_K8S_MODEL_CACHE_CLAIM": ("cache_claim", str),
    "SWITCHYARD_K8S_SERVICE_DOMAIN": ("service_domain", str),
}
# Per-vendor vLLM images: SWITCHYARD_VLLM_IMAGE_AMD, _INTEL, _AWS, _GOOGLE (and _NVIDIA).
VENDOR_IMAGE_PREFIX = "SWITCHYARD_VLLM_IMAGE_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def fleet_config_from_env(environ: Mapping[str, str]) -> dict:
    """The driver config from environment variables (only those set). Raises SpecError
    naming the variable when a value has the wrong type."""
    config: dict[str, Any] = {}
    for variable, (key, kind) in ENVIRONMENT.items():
        if variable not in environ:
            continue
        raw = environ[variable].strip()
        if kind is bool:
            if raw.lower() not in _TRUE | _FALSE:
                raise SpecError(variable, f"must be true or false, not {raw!r}.")
            config[key] = raw.lower() in _TRUE
        elif kind is str:
            if raw:
                config[key] = raw
        else:
            try:
                config[key] = kind(raw)
            except ValueError:
                raise SpecError(variable, f"must be a {kind.__name__}, not {raw!r}.") from None
    images = {name[len(VENDOR_IMAGE_PREFIX):].lower(): value.strip() for name, value in environ.items()
              if name.startswith(VENDOR_IMAGE_PREFIX) and value.strip()}
    if images:
        config["vllm_images"] = images
    return config


def driver_kind(config: Mapping[str, Any]) -> str:
    """`simulated` unless the config names a driver or configures a cluster."""
    kind = config.get("driver")
    if kind is None:
        configured = any(config.get(key) for key in ("kubeconfig", "in_cluster", "namespace", "context"))
        kind = "kubernetes" if configured else "simulated"
    if kind not in DRIVERS:
        raise SpecError("driver", f"must be one of {', '.join(DRIVERS)}, not {kind!r}.")
    return kind


def driver_from_settings(config: Mapping[str, Any], **overrides) -> FleetDriver:
    """Build the configured driver from plain values (no Django settings are read here).

    Simulated keys: state_dir (required), seed, tick_seconds, failure_rate_per_node_hour,
    pending_seconds, engine_start_seconds, representatives_per_tick. Kubernetes keys:
    kubeconfig, context, in_cluster, namespace, vllm_image, vllm_images, pin_to_nodes,
    vendor_node_labels, metrics_via, cache_claim, service_domain. `overrides` go to the
    driver's constructor (a test's clock, a ready-made Kubernetes ApiClient).
    """
    config = dict(config)
    kind = driver_kind(config)
    config.pop("driver", None)
    allowed = SIMULATED_KEYS if kind == "simulated" else KUBERNETES_KEYS
    # Keys of the other driver are tolerated (one settings dict serves both); unknown ones are typos.
    _reject_unknown("fleet settings", config, SIMULATED_KEYS | KUBERNETES_KEYS)
    options = {key: value for key, value in config.items() if key in allowed}
    if kind == "simulated":
        from scheduler.fleet.simulated import SimulatedFleet

        if not options.get("state_dir"):
            raise SpecError("state_dir", "the simulated fleet needs a state directory (SWITCHYARD_FLEET_STATE_DIR).")
        return SimulatedFleet(**options, **overrides)
    try:
        from scheduler.fleet.kubernetes import KubernetesDriver
    except ImportError as error:  # the client is the optional [k8s] extra
        raise FleetError(f"the Kubernetes driver needs the kubernetes client: pip install 'switchyard[k8s]' "
                         f"({error})") from None
    return KubernetesDriver.from_config(**options, **overrides)


# --- helpers ------------------------------------------------------------------------------

SOURCE_SCHEMES = ("hf", "s3", "gs", "https", "oci", "pvc")
SOURCE_PATTERN = re.compile(r"^(hf|s3|gs|https|oci|pvc)://[A-Za-z0-9][\w.\-/:@]*$")
CREDENTIAL_REF_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def model_argument(source: str) -> tuple[str, str]:
    """What vLLM's --model gets for a source, and the revision ("" = default branch)."""
    scheme, _, rest = source.partition("://")
    if scheme == "hf":
        repository, _, revision = rest.partition("@")
        return repository, revision
    return source, ""


def served_model_name(spec: ReplicaSpec) -> str:
    """The name vLLM serves (and labels its metrics with): the spec's, else the model argument."""
    return spec.served_model_name or model_argument(spec.model_source)[0]


def to_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def to_epoch(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous: pass an aware (UTC) datetime")
        return value.timestamp()
    return float(value)


def _require_number(name: str, value, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SpecError(name, f"must be a number, not {value!r}.")
    if not minimum <= value <= maximum:
        raise SpecError(name, f"must be between {minimum:g} and {maximum:g}, not {value:g}.")
    return float(value)


def _require_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"must be an integer, not {value!r}.")
    if value < minimum:
        raise SpecError(name, f"must be at least {minimum}, not {value}.")
    return value


def _reject_unknown(where: str, data: Mapping, known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(unknown[0], f"is not a field of {where} (known: {', '.join(sorted(known))}).")
