"""Tenant quotas and limits: set by the operator through /api/v1/fleet/tenants/…, applied to deployments."""

import pytest
from django.test import override_settings

from scheduler.models import HardwareTier, Replica, TenantLimits, TenantQuota
from tests.conftest import api_client
from tests.cross_tenant_objects import make_deployment, small_fleet
from tenants.models import AuditEvent
from tenants.services import service_token_create

SLO = {"ttft_p95_ms": 2000, "tpot_p95_ms": 100}
TRAFFIC = {"requests_per_s": 2, "input_tokens": {"typical": 512, "p95": 1024},
           "output_tokens": {"typical": 256, "p95": 512}}


@pytest.fixture
def operator(db):
    _token, plaintext = service_token_create(name="ops automation", scopes=["fleet"])
    return api_client(plaintext)


def _quotas_url(world) -> str:
    return f"/api/v1/fleet/tenants/{world.tenant.public_id}/quotas"


def _limits_url(world) -> str:
    return f"/api/v1/fleet/tenants/{world.tenant.public_id}/limits"


def _quota(body: dict, tier: str) -> dict:
    return next(quota for quota in body["quotas"] if quota["tier"] == tier)


# --- quotas ---------------------------------------------------------------------------------


@override_settings(DEFAULT_ACCELERATOR_QUOTA=64)
def test_every_tier_starts_at_the_site_default(operator, tenant_a):
    body = operator.get(_quotas_url(tenant_a)).json()
    assert body["tenant"] == str(tenant_a.tenant.public_id)
    assert len(body["quotas"]) == HardwareTier.objects.filter(active=True).count()
    assert _quota(body, "h100-80gb-on-demand") == {"tier": "h100-80gb-on-demand", "max_accelerators": 64,
                                                   "source": "site", "in_use": 0}


def test_put_replaces_the_tier_quotas_and_is_audited_in_the_tenant(operator, tenant_a):
    response = operator.put(_quotas_url(tenant_a), {"quotas": [
        {"tier": "h100-80gb-on-demand", "max_accelerators": 128},
        {"tier": "l4-24gb-spot", "max_accelerators": 0}]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert _quota(body, "h100-80gb-on-demand")["max_accelerators"] == 128
    assert _quota(body, "h100-80gb-on-demand")["source"] == "tier"
    assert _quota(body, "l4-24gb-spot")["max_accelerators"] == 0
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="quotas.update")
    assert event.changes == {"h100-80gb-on-demand": [None, 128], "l4-24gb-spot": [None, 0]}
    assert event.actor.startswith("service token ops automation")

    # PUT again with one tier: the other falls back to the default.
    operator.put(_quotas_url(tenant_a), {"quotas": [{"tier": "h100-80gb-on-demand", "max_accelerators": 96}]},
                 format="json")
    assert list(TenantQuota.objects.filter(tenant=tenant_a.tenant).values_list("tier__slug", "max_accelerators")) \
        == [("h100-80gb-on-demand", 96)]


def test_quotas_are_per_tenant(operator, tenant_a, tenant_b):
    operator.put(_quotas_url(tenant_a), {"quotas": [{"tier": "h100-80gb-on-demand", "max_accelerators": 8}]},
                 format="json")
    body = operator.get(_quotas_url(tenant_b)).json()
    assert _quota(body, "h100-80gb-on-demand")["source"] == "site"


@pytest.mark.parametrize("quotas, field", [
    ([{"tier": "h900-on-demand", "max_accelerators": 8}], "quotas"),
    ([{"tier": "h100-80gb-on-demand", "max_accelerators": -1}], "quotas.0.max_accelerators"),
    ([{"tier": "h100-80gb-on-demand", "max_accelerators": 8}] * 2, "quotas"),
    ([{"tier": "h100-80gb-on-demand"}], "quotas.0.max_accelerators"),
])
def test_bad_quotas_are_400_and_change_nothing(operator, tenant_a, quotas, field):
    response = operator.put(_quotas_url(tenant_a), {"quotas": quotas}, format="json")
    assert response.status_code == 400
    assert field in {error["field"] for error in response.json()["errors"]}, response.json()
    assert not TenantQuota.objects.exists()


def test_unknown_tenant_is_404(operator, db):
    assert operator.get("/api/v1/fleet/tenants/00000000-0000-0000-0000-000000000000/quotas").status_code == 404
    assert operator.get("/api/v1/fleet/tenants/acme/limits").status_code == 404


def test_in_use_counts_accelerators_held_on_each_tier(operator, tenant_a):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"])
    [node, _] = small_fleet()
    tier = HardwareTier.objects.get(slug="h100-80gb-on-demand")
    for state in ("ready", "starting", "stopped"):
        Replica.objects.create(tenant=tenant_a.tenant, deployment=deployment, node=node, tier=tier, accelerators=2,
                               generation=1, state=state)
    assert _quota(operator.get(_quotas_url(tenant_a)).json(), "h100-80gb-on-demand")["in_use"] == 4


# --- limits ---------------------------------------------------------------------------------


@override_settings(DEFAULT_ACCELERATOR_QUOTA=64)
def test_limits_default_and_update(operator, tenant_a):
    assert operator.get(_limits_url(tenant_a)).json() == {
        "tenant": str(tenant_a.tenant.public_id), "max_priority": 0, "default_accelerator_quota": None,
        "effective_default_accelerator_quota": 64}
    response = operator.put(_limits_url(tenant_a), {"max_priority": 5, "default_accelerator_quota": 16},
                            format="json")
    assert response.status_code == 200
    assert response.json()["max_priority"] == 5 and response.json()["effective_default_accelerator_quota"] == 16
    assert _quota(operator.get(_quotas_url(tenant_a)).json(), "a100-80gb-on-demand") == {
        "tier": "a100-80gb-on-demand", "max_accelerators": 16, "source": "tenant", "in_use": 0}
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="limits.update")
    assert event.changes == {"max_priority": [0, 5], "default_accelerator_quota": [None, 16]}
    back = operator.put(_limits_url(tenant_a), {"max_priority": 5, "default_accelerator_quota": None},
                        format="json").json()
    assert back["default_accelerator_quota"] is None and back["effective_default_accelerator_quota"] == 64


@pytest.mark.parametrize("body, field", [
    ({"max_priority": -1, "default_accelerator_quota": None}, "max_priority"),
    ({"max_priority": 5000, "default_accelerator_quota": None}, "max_priority"),
    ({"max_priority": 1}, "default_accelerator_quota"),
    ({"max_priority": 1, "default_accelerator_quota": "lots"}, "default_accelerator_quota"),
])
def test_bad_limits_are_400(operator, tenant_a, body, field):
    response = operator.put(_limits_url(tenant_a), body, format="json")
    assert response.status_code == 400 and field in {e["field"] for e in response.json()["errors"]}
    assert not TenantLimits.objects.exists()


def test_staff_session_sets_limits_audited_under_the_staff_email(tenant_a):
    from tests.factories import UserFactory

    staff = UserFactory(is_staff=True, email="ops@switchyard.example")
    client = api_client()
    client.force_login(staff)
    response = client.put(_limits_url(tenant_a), {"max_priority": 2, "default_accelerator_quota": None},
                          format="json")
    assert response.status_code == 200
    assert AuditEvent.objects.get(action="limits.update").actor == "ops@switchyard.example"


# --- applied to deployments -----------------------------------------------------------------


def _deploy(world, **changes):
    small_fleet()
    model = world.api.post("/api/v1/models", {"name": "llama", "template": "llama-3.1-8b"}, format="json").json()
    body = {"name": "chat", "model": model["id"], "slo": SLO, "traffic": TRAFFIC, **changes}
    return world.api.post("/api/v1/deployments", body, format="json")


def test_priority_above_the_tenants_cap_is_403_naming_priority(tenant_a):
    response = _deploy(tenant_a, priority=3)
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "priority"
    assert "maximum of 0" in response.json()["detail"]


def test_priority_within_a_raised_cap_is_accepted(operator, tenant_a):
    operator.put(_limits_url(tenant_a), {"max_priority": 3, "default_accelerator_quota": None}, format="json")
    assert _deploy(tenant_a, priority=3).status_code == 201


def test_a_lowered_cap_does_not_block_other_changes(operator, tenant_a):
    operator.put(_limits_url(tenant_a), {"max_priority": 3, "default_accelerator_quota": None}, format="json")
    chat = _deploy(tenant_a, priority=3, max_replicas=2).json()
    operator.put(_limits_url(tenant_a), {"max_priority": 0, "default_accelerator_quota": None}, format="json")
    url = f"/api/v1/deployments/{chat['id']}"
    assert tenant_a.api.patch(url, {"max_replicas": 3}, format="json").status_code == 200
    assert tenant_a.api.patch(url, {"priority": 2}, format="json").status_code == 403


def test_min_replicas_beyond_every_allowed_quota_is_403(operator, tenant_a):
    operator.put(_quotas_url(tenant_a), {"quotas": [{"tier": "h100-80gb-on-demand", "max_accelerators": 1}]},
                 format="json")
    response = _deploy(tenant_a, tiers=["h100-80gb-on-demand"], min_replicas=4, max_replicas=4)
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "min_replicas"
    assert "quota there is 1" in response.json()["detail"]


def test_back_office_quota_and_limit_edits_are_audited(tenant_a):
    from django.test import Client

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True, email="ops@switchyard.example"))
    tier = HardwareTier.objects.get(slug="h100-80gb-on-demand")
    response = client.post("/admin/scheduler/tenantquota/add/", {"tenant": tenant_a.tenant.pk, "tier": tier.pk,
                                                                 "max_accelerators": 24})
    assert response.status_code == 302, response.content[:500]
    assert TenantQuota.objects.get(tenant=tenant_a.tenant, tier=tier).max_accelerators == 24
    response = client.post("/admin/scheduler/tenantlimits/add/", {"tenant": tenant_a.tenant.pk, "max_priority": 4,
                                                                  "default_accelerator_quota": ""})
    assert response.status_code == 302, response.content[:500]
    actions = set(AuditEvent.objects.filter(tenant=tenant_a.tenant, actor="ops@switchyard.example")
                  .values_list("action", flat=True))
    assert actions == {"quotas.update", "limits.update"}
    quota = TenantQuota.objects.get(tenant=tenant_a.tenant, tier=tier)
    assert client.post(f"/admin/scheduler/tenantquota/{quota.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not TenantQuota.objects.exists()
