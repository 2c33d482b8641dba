"""Autoscaling: desired replicas from live signals and a policy. Pure: no Django.

(The policy is defined first; the decision function arrives with the autoscaler.)
"""

from dataclasses import asdict, dataclass, fields


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
    """

    target_concurrency_per_replica: float | None = None
    scale_up_delay: float = 0.0
    scale_down_delay: float = 300.0
    window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 0.5
    scale_to_zero_after: float | None = None

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
