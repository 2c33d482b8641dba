"""The fleet through the operator API: nodes and their filters, node actions, regions with capacity,
the fleet event log, and the free capacity tenants see on /api/v1/hardware-tiers."""

import pytest

from scheduler import services
from scheduler.models import Deployment, DeploymentEvent, FleetEvent, HardwareTier, Node, Replica
from tests.conftest import api_client
from tests.cross_tenant_objects import make_deployment, small_fleet
from tenants.errors import Conflict
from tenants.services import service_token_create


@pytest.fixture
def operator(db):
    _token, plaintext = service_token_create(name="fleet bot", scopes=["fleet"])
    return api_client(plaintext)


@pytest.fixture
def fleet(db):
    return small_fleet() + small_fleet(region="test-2", hardware="l4-24gb", nodes=3)


def _replica(deployment, node, accelerators=2, state="ready") -> Replica:
    tier = HardwareTier.objects.get(accelerator=node.accelerator, capacity_class="on-demand")
    return Replica.objects.create(tenant=deployment.tenant, deployment=deployment, node=node, tier=tier,
                                  accelerators=accelerators, generation=deployment.generation, state=state)


# --- nodes ----------------------------------------------------------------------------------


def test_nodes_list_with_free_accelerators_and_filters(operator, fleet, tenant_a):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"])
    _replica(deployment, fleet[0], accelerators=3)
    body = operator.get("/api/v1/fleet/nodes").json()
    assert body["count"] == 5
    first = body["results"][0]
    assert first == {**first, "name": fleet[0].name, "region": "test-1", "zone": "test-1-a", "hardware": "h100-80gb",
                     "accelerators": 8, "used_accelerators": 3, "free_accelerators": 5, "state": "ready"}
    by_region = operator.get("/api/v1/fleet/nodes?region=test-2").json()
    assert by_region["count"] == 3 and {n["hardware"] for n in by_region["results"]} == {"l4-24gb"}
    assert operator.get("/api/v1/fleet/nodes?hardware=h100-80gb").json()["count"] == 2
    services.node_cordon(operator=services.system_operator(), node=fleet[1])
    cordoned = operator.get("/api/v1/fleet/nodes?state=cordoned").json()
    assert [n["name"] for n in cordoned["results"]] == [fleet[1].name]
    assert operator.get("/api/v1/fleet/nodes?state=asleep").status_code == 400
    assert operator.get("/api/v1/fleet/nodes?colour=red").status_code == 400


def test_node_detail_lists_every_tenants_replicas_on_it(operator, fleet, tenant_a, tenant_b):
    _replica(make_deployment(tenant_a), fleet[0])
    _replica(make_deployment(tenant_b), fleet[0], accelerators=4)
    body = operator.get(f"/api/v1/fleet/nodes/{fleet[0].name}").json()
    assert body["used_accelerators"] == 6 and body["free_accelerators"] == 2
    assert sorted(r["tenant"] for r in body["replicas"]) == sorted([tenant_a.tenant.slug, tenant_b.tenant.slug])
    assert operator.get("/api/v1/fleet/nodes/no-such-node").status_code == 404


@pytest.mark.parametrize("action, state", [("cordon", "cordoned"), ("drain", "draining"), ("mark-down", "down")])
def test_node_actions_change_the_state_and_are_logged(operator, fleet, action, state):
    node = fleet[0]
    response = operator.post(f"/api/v1/fleet/nodes/{node.name}/{action}", {"reason": "firmware"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == state
    event = FleetEvent.objects.get(action=f"node.{action.replace('-', '_')}")
    assert event.object_id == node.name and event.changes == {"state": ["ready", state], "reason": "firmware"}
    assert event.actor.startswith("service token fleet bot")
    again = operator.post(f"/api/v1/fleet/nodes/{node.name}/{action}")
    assert again.status_code == 200  # a state set twice is set once:
    assert FleetEvent.objects.filter(action__startswith="node.").count() == 1
    back = operator.post(f"/api/v1/fleet/nodes/{node.name}/uncordon")
    assert back.json()["state"] == "ready"


def test_a_down_node_cannot_be_drained(operator, fleet):
    name = fleet[0].name
    operator.post(f"/api/v1/fleet/nodes/{name}/mark-down")
    response = operator.post(f"/api/v1/fleet/nodes/{name}/drain")
    assert response.status_code == 409 and "down" in response.json()["detail"]
    assert Node.objects.get(name=name).state == "down"


def test_marking_a_node_down_fails_its_replicas_and_tells_their_deployments(operator, fleet, tenant_a):
    deployment = make_deployment(tenant_a)
    Deployment.objects.filter(pk=deployment.pk).update(status="ready")
    held = _replica(deployment, fleet[0])
    elsewhere = _replica(deployment, fleet[1])
    stopped = _replica(deployment, fleet[0], state="stopped")
    operator.post(f"/api/v1/fleet/nodes/{fleet[0].name}/mark-down", {"reason": "PSU failure"}, format="json")
    held.refresh_from_db(), elsewhere.refresh_from_db(), stopped.refresh_from_db()
    assert held.state == "failed" and held.stopped_at is not None
    assert elsewhere.state == "ready" and stopped.state == "stopped"
    deployment.refresh_from_db()
    assert deployment.status == "degraded"
    event = DeploymentEvent.objects.get(deployment=deployment, kind="replica.failed")
    assert fleet[0].name in event.message and event.data["replicas"] == [str(held.public_id)]
    node = operator.get(f"/api/v1/fleet/nodes/{fleet[0].name}").json()
    assert node["used_accelerators"] == 0 and node["replicas"] == []


def test_a_drained_node_becomes_cordoned_once_empty(fleet, tenant_a):
    node = fleet[0]
    replica = _replica(make_deployment(tenant_a), node)
    services.node_drain(operator=services.system_operator(), node=node)
    assert services.node_finish_drain(node=node) is False  # a replica still holds accelerators
    Replica.objects.filter(pk=replica.pk).update(state="stopped")
    assert services.node_finish_drain(node=node) is True
    node.refresh_from_db()
    assert node.state == "cordoned" and FleetEvent.objects.filter(action="node.drained").exists()


def test_node_action_refuses_unknown_fields(operator, fleet):
    response = operator.post(f"/api/v1/fleet/nodes/{fleet[0].name}/cordon", {"force": True}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "force"


def test_conflicting_transitions_name_the_allowed_states(fleet):
    services.node_mark_down(operator=services.system_operator(), node=fleet[0])
    with pytest.raises(Conflict, match="drain applies to a node that is cordoned or ready"):
        services.node_drain(operator=services.system_operator(), node=fleet[0])


# --- regions, capacity, events --------------------------------------------------------------


def test_regions_show_zones_and_capacity(operator, fleet, tenant_a):
    _replica(make_deployment(tenant_a), fleet[0], accelerators=8)
    services.node_cordon(operator=services.system_operator(), node=fleet[2])
    regions = operator.get("/api/v1/fleet/regions").json()
    assert [r["slug"] for r in regions] == ["test-1", "test-2"]
    first, second = regions
    assert first["zones"] == [{"slug": "test-1-a", "nodes": 2}]
    assert first["capacity"] == [{"hardware": "h100-80gb", "nodes": 2, "total_accelerators": 16,
                                  "free_accelerators": 8}]
    l4_per_node = fleet[2].accelerators
    assert second["capacity"][0]["free_accelerators"] == 2 * l4_per_node  # a cordoned node offers nothing


def test_fleet_events_list_newest_first(operator, fleet):
    operator.post(f"/api/v1/fleet/nodes/{fleet[0].name}/cordon")
    operator.post(f"/api/v1/fleet/nodes/{fleet[0].name}/uncordon")
    events = operator.get("/api/v1/fleet/events").json()["results"]
    assert [e["action"] for e in events][:3] == ["node.uncordon", "node.cordon", "fleet.import"]


def test_hardware_tiers_show_free_capacity_per_region(tenant_a, fleet):
    _replica(make_deployment(tenant_a), fleet[0], accelerators=6)
    tiers = {t["slug"]: t for t in tenant_a.api.get("/api/v1/hardware-tiers?page_size=200").json()["results"]}
    assert tiers["h100-80gb-on-demand"]["availability"] == [{"region": "test-1", "free_accelerators": 10}]
    assert tiers["h100-80gb-spot"]["availability"] == tiers["h100-80gb-on-demand"]["availability"]
    assert tiers["l4-24gb-on-demand"]["availability"][0]["region"] == "test-2"
    assert tiers["a100-80gb-on-demand"]["availability"] == []


def test_hardware_tiers_answer_in_constant_queries(tenant_a, fleet, django_assert_max_num_queries):
    with django_assert_max_num_queries(10):
        response = tenant_a.api.get("/api/v1/hardware-tiers?page_size=200")
    assert response.status_code == 200


# --- back office ----------------------------------------------------------------------------


@pytest.fixture
def staff_client(db):
    from django.test import Client

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True, email="ops@switchyard.example"))
    return client


def test_back_office_pages_render(staff_client, fleet, tenant_a):
    deployment = make_deployment(tenant_a)
    _replica(deployment, fleet[0])
    for url in ("/admin/scheduler/node/", f"/admin/scheduler/node/{fleet[0].pk}/change/", "/admin/scheduler/region/",
                "/admin/scheduler/fleetevent/", "/admin/scheduler/deployment/",
                f"/admin/scheduler/deployment/{deployment.pk}/change/", "/admin/scheduler/replica/",
                "/admin/scheduler/tenantquota/", "/admin/scheduler/tenantlimits/"):
        assert staff_client.get(url).status_code == 200, url


def test_back_office_node_actions_go_through_the_services(staff_client, fleet):
    response = staff_client.post("/admin/scheduler/node/", {"action": "cordon", "_selected_action": [fleet[0].pk]})
    assert response.status_code == 302
    fleet[0].refresh_from_db()
    assert fleet[0].state == "cordoned"
    assert FleetEvent.objects.get(action="node.cordon").actor == "ops@switchyard.example"
