"""Fleet drivers: where replicas run. `base` holds the protocol and its plain values;
`simulated` the digital twin (default); `kubernetes` a real cluster (the [k8s] extra).
Pure: nothing here imports Django; the reconcile service maps rows to these values."""

from scheduler.fleet.base import (
    FleetDriver,
    FleetError,
    MetricsUnavailable,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaStatus,
    SpecError,
    Spike,
    TrafficProfile,
    driver_from_settings,
    fleet_config_from_env,
)

__all__ = [
    "FleetDriver",
    "FleetError",
    "MetricsUnavailable",
    "ReplicaNotFound",
    "ReplicaSpec",
    "ReplicaStatus",
    "SpecError",
    "Spike",
    "TrafficProfile",
    "driver_from_settings",
    "fleet_config_from_env",
]
