"""`python manage.py render_manifests`: from a spec file today, from a deployment once deployments exist."""

import json
from types import SimpleNamespace

import pytest
import yaml
from django.core.management import CommandError, call_command

from scheduler import selectors
from tests.scheduler.fleet.conftest import make_spec


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "replica.json"
    path.write_text(make_spec(credential_ref="hf-token").to_json())
    return path


def test_it_renders_a_spec_file_as_yaml(spec_file, capsys):
    call_command("render_manifests", "--spec", str(spec_file))
    deployment, service = yaml.safe_load_all(capsys.readouterr().out)
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "sy-rep-1"
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_namespace_and_image_can_be_overridden(spec_file, capsys):
    call_command("render_manifests", "--spec", str(spec_file), "--namespace", "inference",
                 "--image", "vllm/vllm-openai:v0.33.0-custom")
    deployment, service = yaml.safe_load_all(capsys.readouterr().out)
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "inference"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.33.0-custom"


def test_it_reads_the_fleet_settings(spec_file, capsys, settings):
    settings.SWITCHYARD_FLEET = {"driver": "kubernetes", "namespace": "models", "pin_to_nodes": False}
    call_command("render_manifests", "--spec", str(spec_file))
    deployment, _ = yaml.safe_load_all(capsys.readouterr().out)
    assert deployment["metadata"]["namespace"] == "models"
    assert "kubernetes.io/hostname" not in deployment["spec"]["template"]["spec"]["nodeSelector"]


def test_a_list_of_specs_renders_every_replica(tmp_path, capsys):
    path = tmp_path / "replicas.json"
    path.write_text(json.dumps([json.loads(make_spec(replica_id=f"r{n}").to_json()) for n in range(3)]))
    call_command("render_manifests", "--spec", str(path))
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in documents] == ["sy-r0", "sy-r0", "sy-r1", "sy-r1", "sy-r2", "sy-r2"]


@pytest.mark.parametrize(("content", "message"), [
    ("{", "is not JSON"),
    ('{"replica_id": "r"}', "missing: deployment_id"),
    ("[]", "holds no replica spec"),
])
def test_bad_spec_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("render_manifests", "--spec", str(path))


def test_a_spec_that_cannot_run_is_refused(tmp_path):
    path = tmp_path / "amd.json"
    path.write_text(make_spec(hardware="mi300x-192gb").to_json())
    with pytest.raises(CommandError, match="SWITCHYARD_VLLM_IMAGE_AMD"):
        call_command("render_manifests", "--spec", str(path))


def test_it_needs_exactly_one_source(spec_file):
    with pytest.raises(CommandError, match="either a DEPLOYMENT"):
        call_command("render_manifests")
    with pytest.raises(CommandError, match="either a DEPLOYMENT"):
        call_command("render_manifests", "dep-1", "--spec", str(spec_file))


def test_a_deployment_id_renders_its_replicas(monkeypatch, capsys):
    asked = []

    def deployment_for_manifests(deployment_id):
        asked.append(deployment_id)
        return [make_spec(replica_id="a"), make_spec(replica_id="b")] if deployment_id == "dep-1" else None

    monkeypatch.setattr(selectors, "deployment_for_manifests", deployment_for_manifests, raising=False)
    call_command("render_manifests", "dep-1")
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert names == ["sy-a", "sy-a", "sy-b", "sy-b"]
    with pytest.raises(CommandError, match="no deployment 'dep-9'"):
        call_command("render_manifests", "dep-9")
    assert asked == ["dep-1", "dep-9"]


def test_a_deployment_summary_renders_one_replica_per_placed_node(monkeypatch, capsys):
    """The selector may summarise a deployment as replica groups (shape × nodes) without ids or config."""
    group = SimpleNamespace(hardware="h100-80gb", vendor="nvidia", kind="gpu", resource_name="nvidia.com/gpu",
                            accelerators=2, generation=3, replicas=2, nodes=["gpu-node-1", "gpu-node-2"])
    summary = SimpleNamespace(deployment_id="5a0c6a0e-3f7e-4a8e-9b1e-0d2a4c6e8f10", source_uri="hf://org/model",
                              credential_ref="hf-token", dtype="bf16", modality="text", groups=[group])
    monkeypatch.setattr(selectors, "deployment_for_manifests", lambda deployment_id: summary, raising=False)
    call_command("render_manifests", summary.deployment_id)
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert [d["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"] for d in deployments] == [
        "gpu-node-1", "gpu-node-2"]
    server = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert server["args"][:2] == ["--model", "org/model"]
    assert deployments[0]["metadata"]["annotations"]["switchyard.io/deployment-id"] == summary.deployment_id


@pytest.mark.django_db
def test_an_unknown_deployment_id_is_a_clear_error():
    with pytest.raises(CommandError, match="no deployment"):
        call_command("render_manifests", "5a0c6a0e-3f7e-4a8e-9b1e-0d2a4c6e8f10")
