"""Fixtures of the fleet-driver tests: a controllable clock, replica specs, simulated fleets."""

from dataclasses import replace

import pytest

from scheduler.catalog import model_templates
from scheduler.fleet import ReplicaSpec, TrafficProfile
from scheduler.fleet.simulated import SimulatedFleet

T0 = 1_790_000_000.0  # a fixed epoch second, on the 10-second tick grid


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_spec(template: str = "llama-3.1-8b", *, replica_id: str = "rep-1", hardware: str = "h100-80gb",
              accelerators: int = 1, rps: float = 2.0, **changes) -> ReplicaSpec:
    chosen = model_templates()[template]
    spec = ReplicaSpec(
        replica_id=replica_id, deployment_id="dep-1", model_source=chosen["source_uri"], model_config=chosen["config"],
        modality=chosen["modality"], hardware=hardware, accelerators=accelerators, node_id="eu1-a-0001",
        region="eu-north1", zone="eu-north1-a", traffic=TrafficProfile(requests_per_s=rps),
    )
    return replace(spec, **changes)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def spec():
    return make_spec()


@pytest.fixture
def new_fleet(tmp_path, clock):
    """new_fleet(name="a", **options): a SimulatedFleet on tmp_path/name, driven by `clock`."""

    def build(name: str = "fleet", **options):
        options.setdefault("clock", clock)
        return SimulatedFleet(tmp_path / name, **options)

    return build
