"""The model registry and the hardware tiers through the API."""

import copy

import pytest

from scheduler.catalog import model_templates
from scheduler.models import HardwareTier, RegisteredModel
from tenants.models import AuditEvent


def _create(world, **body):
    return world.api.post("/api/v1/models", {"name": "llama", "template": "llama-3.1-8b", **body}, format="json")


def test_register_from_template_derives_the_architecture(tenant_a):
    response = _create(tenant_a)
    assert response.status_code == 201, response.content
    model = response.json()
    assert model["source_uri"] == "hf://meta-llama/Llama-3.1-8B-Instruct"
    assert model["total_params"] == pytest.approx(8.03e9, rel=0.01)
    assert model["kv_bytes_per_token"] == 131072
    assert model["context_length"] == 131072
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="model.create").exists()


def test_register_from_pasted_config_with_a_private_source(tenant_a):
    config = copy.deepcopy(model_templates()["mixtral-8x7b"]["config"])
    response = tenant_a.api.post("/api/v1/models", {
        "name": "our-mixtral", "source_uri": "s3://models/mixtral/", "credential_ref": "s3-model-reader",
        "config": config, "dtype": "fp8"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["active_params"] < body["total_params"] / 3
    assert body["credential_ref"] == "s3-model-reader"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"config": {"model_type": "llama", "hidden_size": "big"}, "template": ""}, "config.num_hidden_layers"),
        ({"config": [1, 2], "template": ""}, "config.config"),
        ({"template": "gpt-5"}, "template"),
        ({"source_uri": "ftp://x/y"}, "source_uri"),
        ({"credential_ref": "hf_SecretTokenValue123"}, "credential_ref"),
        ({"dtype": "fp4"}, "dtype"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_model_input_names_the_field_and_saves_nothing(tenant_a, body, field):
    response = _create(tenant_a, **body)
    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    assert not RegisteredModel.objects.exists()


def test_config_errors_name_the_config_field(tenant_a):
    config = copy.deepcopy(model_templates()["llama-3.1-8b"]["config"])
    config["num_key_value_heads"] = 7
    response = _create(tenant_a, config=config, template="")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "config.num_key_value_heads" and "divide" in error["message"]


def test_oversized_config_is_refused(tenant_a):
    config = copy.deepcopy(model_templates()["llama-3.1-8b"]["config"])
    config["padding"] = "x" * 300_000
    response = _create(tenant_a, config=config, template="")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "config" and "KiB" in response.json()["detail"]
    assert not RegisteredModel.objects.exists()


def test_duplicate_name_is_409(tenant_a):
    assert _create(tenant_a).status_code == 201
    assert _create(tenant_a).status_code == 409


def test_update_rederives_and_delete_removes(tenant_a):
    model = _create(tenant_a).json()
    response = tenant_a.api.patch(f"/api/v1/models/{model['id']}", {"dtype": "int4"}, format="json")
    assert response.status_code == 200
    assert response.json()["weight_bytes"] < model["weight_bytes"] / 2.5  # embeddings stay 16-bit
    assert tenant_a.api.delete(f"/api/v1/models/{model['id']}").status_code == 204
    assert not RegisteredModel.objects.exists()


def test_developer_key_can_register_viewer_cannot(tenant_a):
    assert _create(tenant_a).status_code == 201
    viewer = tenant_a.client_with_scopes("read")
    response = viewer.post("/api/v1/models", {"name": "x", "template": "mistral-7b"}, format="json")
    assert response.status_code == 403


def test_hardware_tiers_list_every_catalog_accelerator(tenant_a):
    response = tenant_a.api.get("/api/v1/hardware-tiers?page_size=200")
    assert response.status_code == 200
    tiers = response.json()["results"]
    slugs = {tier["accelerator"]["slug"] for tier in tiers}
    assert {"h200-141gb", "h100-80gb", "a100-80gb", "l40s-48gb", "l4-24gb", "a10g-24gb", "mi300x-192gb",
            "gaudi3-128gb", "inf2-32gb", "tpu-v5e-16gb"} <= slugs
    assert {tier["capacity_class"] for tier in tiers} == {"on-demand", "spot", "reserved"}
    h100 = next(t for t in tiers if t["slug"] == "h100-80gb-on-demand")
    assert h100["price_per_accelerator_hour"] == "4.500000" and h100["currency"] == "USD"
    assert h100["accelerator"]["memory_gb"] == "80.00"


def test_inactive_tiers_are_not_offered(tenant_a):
    HardwareTier.objects.filter(slug="l4-24gb-spot").update(active=False)
    slugs = {t["slug"] for t in tenant_a.api.get("/api/v1/hardware-tiers?page_size=200").json()["results"]}
    assert "l4-24gb-spot" not in slugs and "l4-24gb-on-demand" in slugs


def test_templates_endpoint(tenant_a):
    templates = tenant_a.api.get("/api/v1/model-templates").json()
    assert {t["slug"] for t in templates} >= {"llama-3.1-70b", "qwen2-vl-7b", "bge-large-en-v1.5"}
