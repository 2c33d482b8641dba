"""Deployments through the API: validation, lifecycle statuses, the timeline, generations,
replicas with their placement decisions, and models that cannot be deleted while in use."""

from decimal import Decimal

import pytest

from scheduler import selectors, services
from scheduler.autoscaling import Policy
from scheduler.models import (
    Deployment,
    DeploymentEvent,
    HardwareTier,
    PlacementDecision,
    RegisteredModel,
    Replica,
)
from tests.cross_tenant_objects import make_deployment, small_fleet
from tenants.context import system_actor
from tenants.models import AuditEvent

SLO = {"ttft_p95_ms": 2000, "tpot_p95_ms": 100}
TRAFFIC = {"requests_per_s": 2, "input_tokens": {"typical": 512, "p95": 1024},
           "output_tokens": {"typical": 256, "p95": 512}}


@pytest.fixture
def model(tenant_a) -> dict:
    small_fleet()
    small_fleet(region="test-2", hardware="l4-24gb")
    response = tenant_a.api.post("/api/v1/models", {"name": "llama", "template": "llama-3.1-8b"}, format="json")
    return response.json()


def _body(served: dict, /, **changes) -> dict:
    return {"name": "chat", "model": served["id"], "slo": SLO, "traffic": TRAFFIC, **changes}


def _create(world, served: dict, /, **changes):
    return world.api.post("/api/v1/deployments", _body(served, **changes), format="json")


def _fields(response) -> set:
    return {error["field"] for error in response.json().get("errors", [])}


# --- creation -------------------------------------------------------------------------------


def test_create_stores_a_pending_deployment_with_its_replica_options(tenant_a, model):
    response = _create(tenant_a, model, tiers=["h100-80gb-on-demand"], regions=["test-1"], min_replicas=1,
                       max_replicas=4)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending" and body["generation"] == 1
    assert body["tiers"] == ["h100-80gb-on-demand"] and body["regions"] == ["test-1"]
    assert body["model"] == {"id": model["id"], "name": "llama"}
    assert body["slo"] == {"ttft_p95_ms": 2000.0, "tpot_p95_ms": 100.0}
    assert body["traffic"]["input_tokens"] == {"typical": 512, "p95": 1024}
    [option] = body["replica_options"]
    assert option["hardware"] == "h100-80gb" and option["accelerators"] >= 1 and option["rps_per_replica"] > 0
    assert option["ttft_p95_ms"] <= 2000 and option["tpot_p95_ms"] <= 100
    assert body["replicas"] == {"total": 0, "ready": 0, "accelerators": 0}
    assert body["autoscaling"] == Policy().to_dict()  # the effective policy, defaults filled in
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="deployment.create").exists()


def test_defaults_are_auto_tiers_every_region_and_one_replica(tenant_a, model):
    body = _create(tenant_a, model).json()
    assert body["tiers"] == "auto"
    assert body["regions"] == ["test-1", "test-2"]
    assert (body["min_replicas"], body["max_replicas"]) == (1, 1)
    assert body["token_usage_source"] == "scrape" and body["priority"] == 0
    hardware = {option["hardware"] for option in body["replica_options"]}
    assert {"h100-80gb", "l4-24gb"} <= hardware


def test_max_replicas_defaults_to_min_replicas(tenant_a, model):
    body = _create(tenant_a, model, min_replicas=3).json()
    assert (body["min_replicas"], body["max_replicas"]) == (3, 3)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": "Chat Bot"}, "name"),
        ({"name": "-chat"}, "name"),
        ({"model": "00000000-0000-0000-0000-000000000000"}, "model"),
        ({"model": "not-a-uuid"}, "model"),
        ({"tiers": []}, "tiers"),
        ({"tiers": "cheapest"}, "tiers"),
        ({"tiers": ["h900-on-demand"]}, "tiers"),
        ({"regions": ["mars-1"]}, "regions"),
        ({"regions": []}, "regions"),
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas"),
        ({"min_replicas": -1}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"max_replicas": 100_000}, "max_replicas"),
        ({"slo": {"ttft_p95_ms": 0, "tpot_p95_ms": 50}}, "slo.ttft_p95_ms"),
        ({"slo": {"ttft_p95_ms": 500}}, "slo.tpot_p95_ms"),
        ({"traffic": {**TRAFFIC, "requests_per_s": 0}}, "traffic.requests_per_s"),
        ({"traffic": {**TRAFFIC, "input_tokens": {"typical": 512, "p95": 100}}}, "traffic.input_tokens.p95"),
        ({"autoscaling": {"window": 0}}, "autoscaling.window"),
        ({"autoscaling": {"speed": "fast"}}, "autoscaling.speed"),
        ({"autoscaling": [1, 2]}, "autoscaling"),
        ({"autoscaling": {"scale_to_zero_after": 600}}, "autoscaling.scale_to_zero_after"),
        ({"token_usage_source": "guess"}, "token_usage_source"),
        ({"priority": -1}, "priority"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_saves_nothing(tenant_a, model, changes, field):
    response = _create(tenant_a, model, **changes)
    assert response.status_code == 400, response.content
    assert field in _fields(response), response.json()
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.filter(action="deployment.create").exists()


def test_inactive_tier_is_refused(tenant_a, model):
    HardwareTier.objects.filter(slug="h100-80gb-spot").update(active=False)
    response = _create(tenant_a, model, tiers=["h100-80gb-spot"])
    assert response.status_code == 400 and "No longer offered" in response.json()["detail"]


def test_scale_to_zero_with_min_replicas_zero_is_accepted(tenant_a, model):
    response = _create(tenant_a, model, min_replicas=0, max_replicas=3, autoscaling={"scale_to_zero_after": 600})
    assert response.status_code == 201, response.content
    assert response.json()["autoscaling"]["scale_to_zero_after"] == 600


def test_unachievable_slo_names_the_closest_tier_and_its_predicted_latencies(tenant_a, model):
    response = _create(tenant_a, model, slo={"ttft_p95_ms": 5, "tpot_p95_ms": 0.5},
                       tiers=["l4-24gb-on-demand", "h100-80gb-on-demand"])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "No allowed tier meets the SLO" in detail
    assert "Closest: h100-80gb-on-demand" in detail  # faster than an L4
    assert "predicted p95 TTFT" in detail and "p95 TPOT" in detail
    assert _fields(response) == {"slo.ttft_p95_ms"}
    assert not Deployment.objects.exists()


def test_tpot_miss_names_the_tpot_field(tenant_a, model):
    response = _create(tenant_a, model, slo={"ttft_p95_ms": 60_000, "tpot_p95_ms": 1}, tiers=["l4-24gb-on-demand"])
    assert response.status_code == 400
    assert _fields(response) == {"slo.tpot_p95_ms"}


def test_a_model_that_fits_no_allowed_tier_is_refused(tenant_a):
    small_fleet()
    big = tenant_a.api.post("/api/v1/models", {"name": "big", "template": "llama-3.1-70b"}, format="json").json()
    response = _create(tenant_a, big, tiers=["tpu-v5e-16gb-on-demand"])
    assert response.status_code == 400
    assert _fields(response) == {"tiers"} and "does not fit" in response.json()["detail"]


def test_another_tenants_model_is_refused_like_a_missing_one(tenant_a, tenant_b, model):
    theirs = tenant_b.api.post("/api/v1/models", {"name": "theirs", "template": "mistral-7b"}, format="json").json()
    response = _create(tenant_a, theirs)
    assert response.status_code == 400 and _fields(response) == {"model"}
    missing = _create(tenant_a, {"id": "00000000-0000-0000-0000-000000000000"})
    assert response.json()["detail"] == missing.json()["detail"]


def test_duplicate_name_is_409(tenant_a, model):
    assert _create(tenant_a, model).status_code == 201
    response = _create(tenant_a, model)
    assert response.status_code == 409 and _fields(response) == {"name"}


def test_names_are_per_tenant(tenant_a, tenant_b, model):
    assert _create(tenant_a, model).status_code == 201
    theirs = tenant_b.api.post("/api/v1/models", {"name": "llama", "template": "llama-3.1-8b"}, format="json").json()
    assert _create(tenant_b, theirs).status_code == 201


def test_creating_needs_the_deploy_scope(tenant_a, model):
    response = tenant_a.client_with_scopes("read").post("/api/v1/deployments", _body(model), format="json")
    assert response.status_code == 403


def test_a_fleet_without_regions_is_explained(tenant_a):
    response = tenant_a.api.post("/api/v1/models", {"name": "llama", "template": "llama-3.1-8b"}, format="json")
    response = _create(tenant_a, response.json())
    assert response.status_code == 400 and "no regions" in response.json()["detail"]


def test_create_is_idempotent_with_a_key(tenant_a, model):
    headers = {"HTTP_IDEMPOTENCY_KEY": "deploy-chat-1"}
    first = tenant_a.api.post("/api/v1/deployments", _body(model), format="json", **headers)
    again = tenant_a.api.post("/api/v1/deployments", _body(model), format="json", **headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and Deployment.objects.count() == 1


# --- reading --------------------------------------------------------------------------------


def test_list_and_filter_by_status(tenant_a, model):
    chat = _create(tenant_a, model).json()
    _create(tenant_a, model, name="batch")
    tenant_a.api.post(f"/api/v1/deployments/{chat['id']}/pause")
    listing = tenant_a.api.get("/api/v1/deployments").json()
    assert [d["name"] for d in listing["results"]] == ["batch", "chat"]
    paused = tenant_a.api.get("/api/v1/deployments?status=paused").json()
    assert [d["name"] for d in paused["results"]] == ["chat"]
    assert tenant_a.api.get("/api/v1/deployments?status=sleeping").status_code == 400


def test_list_costs_the_same_queries_for_one_deployment_or_many(tenant_a, model, django_assert_max_num_queries):
    for n in range(5):
        _create(tenant_a, model, name=f"d{n}")
    with django_assert_max_num_queries(12):
        response = tenant_a.api.get("/api/v1/deployments")
    assert response.json()["count"] == 5


def test_regions_are_listed_for_tenants(tenant_a, model):
    regions = tenant_a.api.get("/api/v1/regions").json()["results"]
    assert [(r["slug"], r["zones"]) for r in regions] == [("test-1", ["test-1-a"]), ("test-2", ["test-2-a"])]


# --- changing -------------------------------------------------------------------------------


def test_patch_of_replica_counts_keeps_the_generation(tenant_a, model):
    chat = _create(tenant_a, model, max_replicas=2).json()
    response = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"max_replicas": 6}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["max_replicas"] == 6 and response.json()["generation"] == 1
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="deployment.update")
    assert event.changes == {"max_replicas": [2, 6]}


@pytest.mark.parametrize("changes", [
    {"tiers": ["l4-24gb-on-demand"]},
    {"slo": {"ttft_p95_ms": 2000, "tpot_p95_ms": 20}},  # a tighter TPOT needs more tensor parallelism
])
def test_a_new_tier_choice_or_replica_shape_starts_a_new_generation(tenant_a, model, changes):
    chat = _create(tenant_a, model, tiers=["h100-80gb-on-demand"]).json()
    Deployment.objects.filter(public_id=chat["id"]).update(status="ready")
    response = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", changes, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["generation"] == 2 and body["status"] == "deploying"
    kinds = [e["kind"] for e in tenant_a.api.get(f"/api/v1/deployments/{chat['id']}/events").json()["results"]]
    assert kinds[:2] == ["rollout", "updated"]


def test_a_new_model_starts_a_new_generation(tenant_a, model):
    chat = _create(tenant_a, model).json()
    other = tenant_a.api.post("/api/v1/models", {"name": "qwen", "template": "qwen2.5-7b"}, format="json").json()
    body = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"model": other["id"]}, format="json").json()
    assert body["model"]["name"] == "qwen" and body["generation"] == 2


def test_patch_checks_everything_again_and_saves_nothing_on_error(tenant_a, model):
    chat = _create(tenant_a, model, max_replicas=4).json()
    response = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"min_replicas": 9}, format="json")
    assert response.status_code == 400 and _fields(response) == {"min_replicas"}
    response = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}",
                                  {"slo": {"ttft_p95_ms": 1, "tpot_p95_ms": 0.1}}, format="json")
    assert response.status_code == 400 and "Closest" in response.json()["detail"]
    deployment = Deployment.objects.get(public_id=chat["id"])
    assert (deployment.min_replicas, deployment.slo_ttft_p95_ms) == (1, 2000)


def test_the_name_cannot_change(tenant_a, model):
    chat = _create(tenant_a, model).json()
    response = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"name": "other"}, format="json")
    assert response.status_code == 400 and _fields(response) == {"name"}
    same = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"name": "chat"}, format="json")
    assert same.status_code == 200


def test_a_failed_deployment_that_is_changed_is_tried_again(tenant_a, model):
    chat = _create(tenant_a, model, max_replicas=2).json()
    Deployment.objects.filter(public_id=chat["id"]).update(status="failed")
    body = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"max_replicas": 3}, format="json").json()
    assert body["status"] == "pending"


# --- lifecycle ------------------------------------------------------------------------------


def test_pause_resume_and_delete_statuses(tenant_a, model):
    chat = _create(tenant_a, model).json()
    url = f"/api/v1/deployments/{chat['id']}"
    assert tenant_a.api.post(f"{url}/pause").json()["status"] == "paused"
    assert tenant_a.api.post(f"{url}/pause").json()["status"] == "paused"  # twice: no change
    assert tenant_a.api.post(f"{url}/resume").json()["status"] == "pending"
    assert tenant_a.api.post(f"{url}/resume").json()["status"] == "pending"
    response = tenant_a.api.delete(url)
    assert response.status_code == 202 and response.json()["status"] == "deleting"
    assert tenant_a.api.delete(url).status_code == 202
    assert tenant_a.api.get(url).json()["status"] == "deleting"  # the reconcile loop removes the row


def test_a_deployment_being_deleted_cannot_change(tenant_a, model):
    chat = _create(tenant_a, model).json()
    url = f"/api/v1/deployments/{chat['id']}"
    tenant_a.api.delete(url)
    for response in (tenant_a.api.post(f"{url}/pause"), tenant_a.api.post(f"{url}/resume"),
                     tenant_a.api.patch(url, {"max_replicas": 2}, format="json")):
        assert response.status_code == 409, response.content
        assert "being deleted" in response.json()["detail"]


def test_the_timeline_and_the_audit_log_record_every_change(tenant_a, model):
    chat = _create(tenant_a, model, max_replicas=2).json()
    url = f"/api/v1/deployments/{chat['id']}"
    tenant_a.api.patch(url, {"max_replicas": 3}, format="json")
    tenant_a.api.post(f"{url}/pause")
    tenant_a.api.post(f"{url}/resume")
    tenant_a.api.delete(url)
    events = tenant_a.api.get(f"{url}/events").json()
    assert [e["kind"] for e in events["results"]] == ["deleting", "resumed", "paused", "updated", "created"]
    assert "count" not in events  # cursor pagination: the timeline grows
    created = events["results"][-1]
    assert created["message"].startswith("Created: llama on auto") and created["data"]["max_replicas"] == 2
    assert {"time", "id", "data"} <= set(created)
    actions = set(AuditEvent.objects.filter(tenant=tenant_a.tenant).values_list("action", flat=True))
    assert {"deployment.create", "deployment.update", "deployment.pause", "deployment.resume",
            "deployment.delete"} <= actions


def test_a_model_in_use_cannot_be_deleted(tenant_a, model):
    _create(tenant_a, model)
    _create(tenant_a, model, name="batch")
    response = tenant_a.api.delete(f"/api/v1/models/{model['id']}")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "a model in use by a deployment cannot be deleted" in detail.lower()
    assert "batch" in detail and "chat" in detail
    assert RegisteredModel.objects.filter(public_id=model["id"]).exists()
    assert not AuditEvent.objects.filter(action="model.delete").exists()


def test_a_model_no_deployment_uses_can_be_deleted(tenant_a, model):
    assert tenant_a.api.delete(f"/api/v1/models/{model['id']}").status_code == 204


# --- replicas and placement decisions -------------------------------------------------------


def _place(deployment: Deployment, node, state="ready", with_decision=True) -> Replica:
    """What the reconcile loop will do: a replica on a node, and why it went there."""
    option = deployment.replica_options[0]
    tier = HardwareTier.objects.get(slug=f"{option['hardware']}-on-demand")
    replica = Replica.objects.create(tenant=deployment.tenant, deployment=deployment, node=node, tier=tier,
                                     accelerators=option["accelerators"], generation=deployment.generation,
                                     state=state, endpoint="http://10.0.0.7:8000")
    if with_decision:
        PlacementDecision.objects.create(
            tenant=deployment.tenant, replica=replica, hardware=option["hardware"],
            accelerators=option["accelerators"], rps_per_replica=option["rps_per_replica"],
            cost_per_hour=tier.price_per_accelerator_hour * option["accelerators"], currency="USD",
            alternatives=[{"option": {"hardware": "l4-24gb", "accelerators": 2, "rps_per_replica": 0.9},
                           "why": "needs 3 replicas: costs 4.80/h more"}])
    return replica


def test_replicas_show_node_tier_state_and_placement_decision(tenant_a, model):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    [node, other] = small_fleet()
    _place(deployment, node)
    _place(deployment, other, state="starting", with_decision=False)
    response = tenant_a.api.get(f"/api/v1/deployments/{deployment.public_id}/replicas")
    assert response.status_code == 200
    [starting, ready] = response.json()["results"]
    assert ready["node"] == node.name and ready["region"] == "test-1" and ready["zone"] == "test-1-a"
    assert ready["tier"] == "h100-80gb-on-demand" and ready["hardware"] == "h100-80gb"
    assert ready["state"] == "ready" and ready["generation"] == 1
    placement = ready["placement"]
    assert placement["chosen"]["hardware"] == "h100-80gb"
    assert Decimal(placement["cost_per_hour"]) == Decimal("4.5") * ready["accelerators"]
    assert placement["alternatives"][0]["why"].startswith("needs 3 replicas")
    assert starting["placement"] is None
    only_ready = tenant_a.api.get(f"/api/v1/deployments/{deployment.public_id}/replicas?state=ready").json()
    assert [r["node"] for r in only_ready["results"]] == [node.name]
    assert tenant_a.api.get(f"/api/v1/deployments/{deployment.public_id}/replicas?state=asleep").status_code == 400
    detail = tenant_a.api.get(f"/api/v1/deployments/{deployment.public_id}").json()
    assert detail["replicas"]["total"] == 2 and detail["replicas"]["ready"] == 1


def test_replica_accelerators_must_be_at_least_one(tenant_a, model):
    from django.db import IntegrityError, transaction

    deployment = make_deployment(tenant_a)
    [node, _] = small_fleet()
    tier = HardwareTier.objects.get(slug="h100-80gb-on-demand")
    with pytest.raises(IntegrityError), transaction.atomic():
        Replica.objects.create(tenant=deployment.tenant, deployment=deployment, node=node, tier=tier,
                               accelerators=0, generation=1)


def test_free_accelerators_count_only_replicas_holding_them(tenant_a, model):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    [node, _] = small_fleet()
    held = _place(deployment, node).accelerators + _place(deployment, node, state="draining").accelerators
    _place(deployment, node, state="stopped")
    _place(deployment, node, state="failed")
    row = selectors.node_free_accelerators().get(pk=node.pk)
    assert row.used_accelerators == held and row.free_accelerators == 8 - held


def test_manifest_spec_has_what_the_renderer_needs(tenant_a, model):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    [node, other] = small_fleet()
    _place(deployment, node)
    _place(deployment, other)
    spec = selectors.deployment_for_manifests(deployment.public_id)
    assert spec.name == deployment.name and spec.tenant_slug == tenant_a.tenant.slug
    assert spec.source_uri == "hf://meta-llama/Llama-3.1-8B-Instruct" and spec.generation == 1
    [group] = spec.groups
    assert group.resource_name == "nvidia.com/gpu" and group.replicas == 2
    assert group.nodes == [node.name, other.name]
    with pytest.raises(Exception, match="not found"):
        selectors.deployment_for_manifests("00000000-0000-0000-0000-000000000000")


def test_placement_options_use_the_cheapest_allowed_tier_of_each_hardware(tenant_a, model):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand", "h100-80gb-reserved"])
    [option] = selectors.deployment_placement_options(deployment)
    assert option.tier == "h100-80gb-reserved" and option.hardware == "h100-80gb"
    assert option.rps_per_replica == deployment.replica_options[0]["rps_per_replica"]


def test_model_delete_service_refuses_a_model_in_use(tenant_a, model):
    deployment = make_deployment(tenant_a)
    with pytest.raises(services.Conflict, match="in use by a deployment"):
        services.model_delete(actor=system_actor(tenant_a.tenant), model=deployment.model)
    assert DeploymentEvent.objects.filter(deployment=deployment, kind="created").exists()


def test_autoscaling_null_goes_back_to_the_defaults(tenant_a, model):
    chat = _create(tenant_a, model, autoscaling={"window": 120}).json()
    assert chat["autoscaling"]["window"] == 120
    body = tenant_a.api.patch(f"/api/v1/deployments/{chat['id']}", {"autoscaling": None}, format="json").json()
    assert body["autoscaling"] == Policy().to_dict()
