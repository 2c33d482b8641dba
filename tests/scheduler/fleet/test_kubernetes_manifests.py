"""Kubernetes manifests of a replica: per accelerator vendor, model source and dtype."""

import re

import pytest
import yaml

from scheduler.catalog import model_templates
from scheduler.fleet import SpecError
from scheduler.fleet.kubernetes import (
    DEFAULT_VLLM_IMAGE,
    KubernetesOptions,
    build_manifests,
    label_value,
    render_manifests,
    resource_name,
)
from scheduler.perf import MAX_NUM_SEQS
from tests.scheduler.fleet.conftest import make_spec

IMAGES = {"amd": "registry.example/vllm-rocm:1", "intel": "registry.example/vllm-gaudi:1",
          "aws": "registry.example/vllm-neuron:1", "google": "registry.example/vllm-tpu:1"}
OPTIONS = KubernetesOptions(vllm_images=IMAGES)


def rendered(spec, options=OPTIONS) -> tuple[dict, dict]:
    deployment, service = yaml.safe_load_all(render_manifests(spec, options))
    return deployment, service


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


VENDOR_CASES = [
    # hardware, accelerators, resource, taint, image, tensor-parallel size, vendor selector labels
    ("h100-80gb", 2, "nvidia.com/gpu", "nvidia.com/gpu", DEFAULT_VLLM_IMAGE, "2",
     {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
    ("l4-24gb", 1, "nvidia.com/gpu", "nvidia.com/gpu", DEFAULT_VLLM_IMAGE, "1",
     {"nvidia.com/gpu.product": "NVIDIA-L4"}),
    ("mi300x-192gb", 1, "amd.com/gpu", "amd.com/gpu", IMAGES["amd"], "1", {}),
    ("gaudi3-128gb", 2, "habana.ai/gaudi", "habana.ai/gaudi", IMAGES["intel"], "2", {}),
    ("inf2-32gb", 2, "aws.amazon.com/neuron", "aws.amazon.com/neuron", IMAGES["aws"], "4", {}),
    ("tpu-v5e-16gb", 4, "google.com/tpu", "google.com/tpu", IMAGES["google"], "4",
     {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "2x2"}),
]


@pytest.mark.parametrize(("hardware", "count", "resource", "taint", "image", "tp", "vendor_labels"), VENDOR_CASES)
def test_manifests_per_accelerator_vendor(hardware, count, resource, taint, image, tp, vendor_labels):
    spec = make_spec(hardware=hardware, accelerators=count, credential_ref="hf-token")
    deployment, service = rendered(spec)
    pod = deployment["spec"]["template"]["spec"]
    server = container(deployment)

    assert server["image"] == image
    assert server["resources"]["limits"] == {resource: str(count)}
    assert server["resources"]["requests"][resource] == str(count)
    assert pod["nodeSelector"] == {"switchyard.io/accelerator": hardware, **vendor_labels,
                                   "kubernetes.io/hostname": "eu1-a-0001"}
    assert {"key": taint, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "switchyard.io/accelerator", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Neuron: vLLM's tensor parallelism counts NeuronCores, two per Inferentia2 device.
    assert arg(server["args"], "--tensor-parallel-size") == tp
    assert arg(server["args"], "--model") == "meta-llama/Llama-3.1-8B-Instruct"
    assert arg(server["args"], "--port") == "8000"
    assert arg(server["args"], "--dtype") == "bfloat16"
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("8000", "/metrics")
    for obj in (deployment, service):
        assert obj["metadata"]["labels"]["switchyard.io/deployment"] == "dep-1"
        assert obj["metadata"]["labels"]["switchyard.io/replica"] == "sy-rep-1"
        assert obj["metadata"]["annotations"]["switchyard.io/replica-id"] == "rep-1"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["selector"]["matchLabels"] == {"switchyard.io/replica": "sy-rep-1"}
    assert service["spec"]["selector"] == {"switchyard.io/replica": "sy-rep-1"}
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": "http"}]


def test_no_secret_value_is_ever_in_a_manifest():
    text = render_manifests(make_spec(credential_ref="hf-token"), OPTIONS)
    assert "hf-token" in text
    assert not re.search(r"HF_TOKEN|AWS_SECRET|password", text, re.IGNORECASE)
    deployment, _ = rendered(make_spec())  # a public model: no envFrom at all
    assert "envFrom" not in container(deployment)


def test_other_vendors_need_their_own_image():
    with pytest.raises(SpecError, match="SWITCHYARD_VLLM_IMAGE_AMD"):
        render_manifests(make_spec(hardware="mi300x-192gb"), KubernetesOptions())


def test_tpu_slices_have_fixed_sizes():
    with pytest.raises(SpecError, match="accelerators"):
        render_manifests(make_spec(hardware="tpu-v5e-16gb", accelerators=2), OPTIONS)


def test_start_up_budget_grows_with_the_weights():
    small, _ = rendered(make_spec())
    large, _ = rendered(make_spec("llama-3.1-70b", accelerators=4))
    assert container(large)["startupProbe"]["failureThreshold"] > container(small)["startupProbe"]["failureThreshold"]
    assert large["spec"]["progressDeadlineSeconds"] > small["spec"]["progressDeadlineSeconds"]


def test_graceful_drain_before_termination():
    deployment, _ = rendered(make_spec())
    assert container(deployment)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "30"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 330


@pytest.mark.parametrize(("source", "model", "extra"), [
    ("hf://meta-llama/Llama-3.1-8B-Instruct@0e9e39f", "meta-llama/Llama-3.1-8B-Instruct", ["--revision", "0e9e39f"]),
    ("s3://models/llama-3.1-8b", "s3://models/llama-3.1-8b", ["--load-format", "runai_streamer"]),
    ("gs://models/llama-3.1-8b", "gs://models/llama-3.1-8b", ["--load-format", "runai_streamer"]),
    ("pvc://model-store/llama/3.1-8b", "/models/llama/3.1-8b", []),
    ("oci://registry.example/models/llama:3.1", "/models", []),
])
def test_model_sources(source, model, extra):
    deployment, _ = rendered(make_spec(model_source=source))
    args = container(deployment)["args"]
    assert arg(args, "--model") == model
    for flag, expected in zip(extra[::2], extra[1::2], strict=True):
        assert arg(args, flag) == expected
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    if source.startswith("pvc://"):
        assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    if source.startswith("oci://"):
        assert volumes["model"]["image"]["reference"] == "registry.example/models/llama:3.1"


def test_https_sources_are_refused_with_a_reason():
    with pytest.raises(SpecError, match="mirror it"):
        render_manifests(make_spec(model_source="https://example.com/model.tar"), OPTIONS)


def test_dtypes_map_to_vllm_flags():
    fp8, _ = rendered(make_spec(dtype="fp8"))
    args = container(fp8)["args"]
    assert (arg(args, "--quantization"), arg(args, "--kv-cache-dtype")) == ("fp8", "fp8")

    config = dict(model_templates()["llama-3.1-8b"]["config"], quantization_config={"quant_method": "awq", "bits": 4})
    awq, _ = rendered(make_spec(dtype="int4", model_config=config))
    args = container(awq)["args"]
    assert "--quantization" not in args and "--dtype" not in args  # vLLM reads quantization_config

    with pytest.raises(SpecError, match="pre-quantized"):
        render_manifests(make_spec(dtype="int4"), OPTIONS)


def test_optional_arguments():
    deployment, _ = rendered(make_spec(served_model_name="chat", max_model_len=8192))
    args = container(deployment)["args"]
    assert (arg(args, "--served-model-name"), arg(args, "--max-model-len")) == ("chat", "8192")


@pytest.mark.parametrize(("hardware", "expected"), [
    # vLLM's own default would be 1024 on the ≥ 70 GiB GPUs: the model assumes MAX_NUM_SEQS.
    ("h100-80gb", str(MAX_NUM_SEQS)), ("l4-24gb", str(MAX_NUM_SEQS)), ("mi300x-192gb", str(MAX_NUM_SEQS)),
    # NPU backends compile batch shapes from it: their images keep their own defaults.
    ("gaudi3-128gb", None), ("inf2-32gb", None), ("tpu-v5e-16gb", None),
])
def test_gpu_engines_run_at_most_the_requests_the_performance_model_assumes(hardware, expected):
    deployment, _ = rendered(make_spec(hardware=hardware))
    assert arg(container(deployment)["args"], "--max-num-seqs") == expected


def test_unpinned_replicas_select_their_zone():
    deployment, _ = rendered(make_spec(), KubernetesOptions(pin_to_nodes=False, vendor_node_labels=False))
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {
        "switchyard.io/accelerator": "h100-80gb", "topology.kubernetes.io/zone": "eu-north1-a"}


def test_names_are_valid_kubernetes_names_for_any_id():
    for replica_id in ("rep-1", "7f9c2a3e-1b2d-4c5e-9f00-123456789abc", "Replica_With.Odd/Chars", "x" * 200):
        name = resource_name(replica_id)
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert resource_name("A") != resource_name("a")
    assert label_value("dep-1") == "dep-1"
    for value in ("dep/with/slashes", "y" * 100, "-leading"):
        assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]", label_value(value)), value


def test_the_spec_hash_ignores_traffic_but_not_the_image():
    from dataclasses import replace

    from scheduler.fleet import TrafficProfile

    spec = make_spec()
    base, _ = build_manifests(spec, OPTIONS)
    busier, _ = build_manifests(replace(spec, traffic=TrafficProfile(requests_per_s=50)), OPTIONS)
    newer, _ = build_manifests(spec, KubernetesOptions(vllm_image="vllm/vllm-openai:v9.9.9"))
    key = "switchyard.io/spec-hash"
    assert base.metadata.annotations[key] == busier.metadata.annotations[key]
    assert base.metadata.annotations[key] != newer.metadata.annotations[key]
