"""The protocol's values and the settings factory."""

import json

import pytest

from scheduler.fleet import (
    FleetError,
    ReplicaSpec,
    ReplicaStatus,
    SpecError,
    Spike,
    TrafficProfile,
    driver_from_settings,
    fleet_config_from_env,
)
from scheduler.fleet.base import model_argument, served_model_name
from scheduler.fleet.simulated import SimulatedFleet
from tests.scheduler.fleet.conftest import make_spec


def test_a_spec_round_trips_through_json():
    spec = make_spec(traffic=TrafficProfile(requests_per_s=3.0, daily_curve=tuple(range(1, 25)),
                                            spikes=(Spike(start=1.0, duration_s=60, multiplier=4),)))
    assert ReplicaSpec.from_dict(json.loads(spec.to_json())) == spec


def test_traffic_defaults_are_the_azure_conversation_trace():
    traffic = TrafficProfile()
    assert (traffic.input_tokens_median, traffic.input_tokens_p90) == (1020, 2734)
    assert (traffic.output_tokens_median, traffic.output_tokens_p90) == (129, 424)
    assert traffic.burstiness == 1.09


@pytest.mark.parametrize(("changes", "field"), [
    ({"replica_id": ""}, "replica_id"),
    ({"model_source": "ftp://host/model"}, "model_source"),
    ({"accelerators": 0}, "accelerators"),
    ({"dtype": "fp4"}, "dtype"),
    ({"modality": "audio"}, "modality"),
    ({"credential_ref": "Has Spaces"}, "credential_ref"),
    ({"model_config": "not a dict"}, "model_config"),
    ({"max_model_len": 3}, "max_model_len"),
])
def test_a_bad_spec_names_its_field(changes, field):
    with pytest.raises(SpecError) as raised:
        make_spec(**changes)
    assert raised.value.field == field


@pytest.mark.parametrize(("traffic", "field"), [
    ({"requests_per_s": -1}, "traffic.requests_per_s"),
    ({"input_tokens_median": 100, "input_tokens_p90": 50}, "traffic.input_tokens_p90"),
    ({"burstiness": 0}, "traffic.burstiness"),
    ({"daily_curve": [1, 2, 3]}, "traffic.daily_curve"),
    ({"spikes": [{"start": 0}]}, "traffic.spikes"),
    ({"rps": 3}, "rps"),
])
def test_bad_traffic_names_its_field(traffic, field):
    data = json.loads(make_spec().to_json())
    data["traffic"] = traffic
    with pytest.raises(SpecError) as raised:
        ReplicaSpec.from_dict(data)
    assert raised.value.field == field


def test_from_dict_lists_what_is_missing_and_refuses_unknown_fields():
    with pytest.raises(SpecError, match="missing: model_source, model_config, hardware"):
        ReplicaSpec.from_dict({"replica_id": "r", "deployment_id": "d"})
    data = json.loads(make_spec().to_json())
    with pytest.raises(SpecError, match="gpu_count"):
        ReplicaSpec.from_dict({**data, "gpu_count": 2})


def test_status_states_are_checked():
    with pytest.raises(ValueError, match="state"):
        ReplicaStatus(replica_id="r", state="running")


def test_model_argument_and_served_name():
    assert model_argument("hf://meta-llama/Llama-3.1-8B-Instruct@v2") == ("meta-llama/Llama-3.1-8B-Instruct", "v2")
    assert model_argument("s3://bucket/models/llama") == ("s3://bucket/models/llama", "")
    assert served_model_name(make_spec()) == "meta-llama/Llama-3.1-8B-Instruct"
    assert served_model_name(make_spec(served_model_name="chat")) == "chat"


def test_settings_from_the_environment_are_typed():
    config = fleet_config_from_env({
        "SWITCHYARD_FLEET_DRIVER": "simulated", "SWITCHYARD_FLEET_SEED": "42",
        "SWITCHYARD_FLEET_TICK_SECONDS": "5", "SWITCHYARD_K8S_PIN_TO_NODES": "false",
        "SWITCHYARD_VLLM_IMAGE_AMD": "registry.example/vllm-rocm:1", "UNRELATED": "x",
    })
    assert config == {"driver": "simulated", "seed": 42, "tick_seconds": 5.0, "pin_to_nodes": False,
                      "vllm_images": {"amd": "registry.example/vllm-rocm:1"}}
    with pytest.raises(SpecError, match="SWITCHYARD_FLEET_SEED"):
        fleet_config_from_env({"SWITCHYARD_FLEET_SEED": "one"})
    with pytest.raises(SpecError, match="SWITCHYARD_K8S_IN_CLUSTER"):
        fleet_config_from_env({"SWITCHYARD_K8S_IN_CLUSTER": "maybe"})


def test_the_simulated_fleet_is_the_default(tmp_path):
    driver = driver_from_settings({"state_dir": str(tmp_path), "seed": 3})
    assert isinstance(driver, SimulatedFleet)
    assert driver.seed == 3


def test_settings_fail_loudly(tmp_path):
    with pytest.raises(SpecError, match="state_dir"):
        driver_from_settings({})
    with pytest.raises(SpecError, match="driver"):
        driver_from_settings({"driver": "slurm"})
    with pytest.raises(SpecError, match="sed"):
        driver_from_settings({"state_dir": str(tmp_path), "sed": 1})


def test_a_configured_cluster_selects_kubernetes(tmp_path):
    with pytest.raises(FleetError, match="cannot configure the Kubernetes client"):
        driver_from_settings({"kubeconfig": str(tmp_path / "missing-kubeconfig"), "state_dir": str(tmp_path)})
