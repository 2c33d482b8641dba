"""The deployments' console pages, through the Django test client."""


import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from scheduler import services
from scheduler.estimator import Slo, Traffic
from scheduler.models import (
    Deployment,
    DeploymentEvent,
    PlacementDecision,
    RegisteredModel,
    Replica,
)
from tenants.context import system_actor
from tenants.models import AuditEvent
from tenants.roles import Role
from tests.cross_tenant_objects import small_fleet
from tests.scheduler.test_views import logged_in, member_client, register

VALID = {
    "name": "support-chat", "tier_mode": "auto", "regions": ["test-1"], "min_replicas": "1", "max_replicas": "3",
    "ttft_p95_ms": "2000", "tpot_p95_ms": "100", "requests_per_s": "2", "input_tokens": "512",
    "input_tokens_p95": "1024", "output_tokens": "256", "output_tokens_p95": "512", "priority": "0",
    "token_usage_source": "scrape", "target_concurrency_per_replica": "", "scale_down_delay": "60",
    "scale_to_zero_after": "",
}


@pytest.fixture
def fleet(db):
    return small_fleet() + small_fleet(region="test-2", hardware="l4-24gb")


@pytest.fixture
def owner_client(tenant_a):
    return logged_in(tenant_a.owner, tenant_a.tenant)


@pytest.fixture
def model_a(tenant_a, fleet) -> RegisteredModel:
    return register(tenant_a.tenant, name="llama")


def deploy(tenant, model, name="chat", **overrides) -> Deployment:
    arguments = {"name": name, "model": model, "slo": Slo(ttft_p95_ms=2000, tpot_p95_ms=100),
                 "traffic": Traffic(requests_per_s=2, input_tokens=512, output_tokens=256, input_tokens_p95=1024,
                                    output_tokens_p95=512),
                 "regions": ["test-1"], "max_replicas": 3, **overrides}
    return services.deployment_create(actor=system_actor(tenant), **arguments)


@pytest.fixture
def deployment_a(tenant_a, model_a) -> Deployment:
    return deploy(tenant_a.tenant, model_a)


@pytest.fixture
def deployment_b(tenant_b, fleet) -> Deployment:
    return deploy(tenant_b.tenant, register(tenant_b.tenant, name="globex-model"), name="globex-secret")


def place(deployment, node, *, state=Replica.State.READY, alternatives=None) -> Replica:
    """A replica with its placement decision, as the reconcile loop records them."""
    now = timezone.now()
    tier = node.accelerator.tiers.get(capacity_class="on-demand")
    replica = Replica.objects.create(
        tenant=deployment.tenant, deployment=deployment, node=node, tier=tier, accelerators=1,
        generation=deployment.generation, state=state, endpoint=f"http://{node.name}:8000/v1",
        started_at=now, ready_at=now if state == Replica.State.READY else None)
    PlacementDecision.objects.create(
        tenant=deployment.tenant, replica=replica, hardware=node.accelerator.slug, accelerators=1,
        rps_per_replica=4.2, cost_per_hour=tier.price_per_accelerator_hour, currency=tier.currency,
        alternatives=alternatives if alternatives is not None else [
            {"option": {"hardware": "l4-24gb", "accelerators": 1, "rps_per_replica": 0.9},
             "why": "costs 41% more per request served"},
        ])
    return replica


def errors(response, field: str) -> str:
    return " ".join(response.context["form"].errors.get(field, []))


# --- List ---------------------------------------------------------------------------------


def test_the_list_shows_the_tenants_deployments(owner_client, deployment_a, deployment_b, fleet):
    place(deployment_a, fleet[0])
    response = owner_client.get(reverse("deployments"))
    assert response.status_code == 200
    html = response.content.decode()
    assert [d.name for d in response.context["deployments"]] == ["chat"]
    assert reverse("deployment-detail", args=[deployment_a.public_id]) in html
    assert "llama" in html and "auto" in html and "test-1" in html
    assert 'data-status="pending"' in html
    assert "1 / 1" in html  # ready / running
    assert "globex-secret" not in html
    assert reverse("deployment-create") in html


def test_the_list_offers_creating_only_to_deploy_scope(tenant_a, deployment_a):
    response = member_client(tenant_a.tenant, Role.VIEWER).get(reverse("deployments"))
    assert response.status_code == 200
    assert "chat" in response.content.decode()
    assert reverse("deployment-create") not in response.content.decode()


def test_the_navigation_has_deployments_after_models(owner_client, deployment_a):
    response = owner_client.get(reverse("deployment-detail", args=[deployment_a.public_id]))
    labels = [link.label for link in response.context["console_nav"]]
    assert labels.index("Deployments") == labels.index("Models") + 1
    assert [link.label for link in response.context["console_nav"] if link.active] == ["Deployments"]


# --- Create -------------------------------------------------------------------------------


def test_create_with_auto_tiers_redirects_to_the_page_and_records_an_event(owner_client, tenant_a, model_a):
    response = owner_client.post(reverse("deployment-create"), {**VALID, "model": model_a.public_id})
    deployment = Deployment.objects.get(tenant=tenant_a.tenant, name="support-chat")
    assert response.status_code == 302
    assert response.url == reverse("deployment-detail", args=[deployment.public_id])
    assert deployment.tier_auto and deployment.model == model_a and deployment.status == "pending"
    assert (deployment.min_replicas, deployment.max_replicas) == (1, 3)
    assert deployment.autoscaling == {}  # the defaults are not stored as choices
    assert [r.slug for r in deployment.regions.all()] == ["test-1"]
    assert DeploymentEvent.objects.filter(deployment=deployment, kind="created").exists()
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="deployment.create").exists()
    page = owner_client.get(response.url).content.decode()
    assert "Created:" in page


def test_create_with_chosen_tiers_and_a_policy(owner_client, tenant_a, model_a):
    response = owner_client.post(reverse("deployment-create"), {
        **VALID, "model": model_a.public_id, "tier_mode": "choose", "tiers": ["h100-80gb-on-demand"],
        "min_replicas": "0", "target_concurrency_per_replica": "12", "scale_down_delay": "120",
        "scale_to_zero_after": "900", "token_usage_source": "external"})
    assert response.status_code == 302, response.context["form"].errors
    deployment = Deployment.objects.get(tenant=tenant_a.tenant)
    assert not deployment.tier_auto and [t.slug for t in deployment.tiers.all()] == ["h100-80gb-on-demand"]
    assert deployment.autoscaling == {"target_concurrency_per_replica": 12.0, "scale_down_delay": 120.0,
                                      "scale_to_zero_after": 900.0}
    assert deployment.token_usage_source == "external"


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"name": "Chat Bot"}, "name", "lowercase"),
        ({"name": ""}, "name", "required"),
        ({"model": ""}, "model", "required"),
        ({"tier_mode": "choose"}, "tiers", "at least one tier"),
        ({"tier_mode": "choose", "tiers": ["h900-on-demand"]}, "tiers", "valid choice"),
        ({"regions": []}, "regions", "at least one region"),
        ({"regions": ["mars-1"]}, "regions", "valid choice"),
        ({"min_replicas": "5", "max_replicas": "2"}, "min_replicas", "exceed"),
        ({"max_replicas": "0"}, "max_replicas", ""),
        ({"ttft_p95_ms": "0"}, "ttft_p95_ms", ""),
        ({"ttft_p95_ms": "1"}, "ttft_p95_ms", "Closest:"),  # unachievable: the closest tier and its p95s
        ({"input_tokens_p95": "100"}, "input_tokens_p95", "at least the typical"),
        ({"requests_per_s": "fast"}, "requests_per_s", "number"),
        ({"scale_to_zero_after": "600"}, "scale_to_zero_after", "min_replicas 0"),
        ({"scale_down_delay": "-1"}, "scale_down_delay", ""),
        ({"priority": "5"}, "priority", "maximum"),
        ({"token_usage_source": "guess"}, "token_usage_source", "valid choice"),
    ],
)
def test_bad_input_is_shown_beside_its_field_and_saves_nothing(owner_client, model_a, changes, field, message):
    response = owner_client.post(reverse("deployment-create"), {**VALID, "model": model_a.public_id, **changes})
    assert response.status_code == 200
    assert errors(response, field), response.context["form"].errors
    assert message in errors(response, field)
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.filter(action="deployment.create").exists()


def test_an_unachievable_slo_names_the_closest_tier_and_its_predicted_p95s(owner_client, model_a):
    response = owner_client.post(reverse("deployment-create"), {**VALID, "model": model_a.public_id,
                                                                "ttft_p95_ms": "1", "tpot_p95_ms": "0.1"})
    html = response.content.decode()
    assert "No allowed tier meets the SLO" in html and "predicted p95 TTFT" in html


def test_a_duplicate_name_is_refused(owner_client, model_a, deployment_a):
    response = owner_client.post(reverse("deployment-create"), {**VALID, "model": model_a.public_id, "name": "chat"})
    assert "already exists" in errors(response, "name")
    assert Deployment.objects.count() == 1


def test_another_tenants_model_is_not_a_choice(owner_client, tenant_b, fleet):
    theirs = register(tenant_b.tenant, name="globex-model")
    response = owner_client.post(reverse("deployment-create"), {**VALID, "model": theirs.public_id})
    assert "valid choice" in errors(response, "model")
    assert "globex-model" not in response.content.decode()
    assert not Deployment.objects.exists()


def test_the_form_defaults_to_the_trace_and_takes_a_comparison_from_the_url(owner_client, model_a):
    response = owner_client.get(reverse("deployment-create"))
    form = response.context["form"]
    assert form.initial["requests_per_s"] == 5 and form.initial["input_tokens_p95"] == 2734
    assert form.initial["regions"] == ["test-1", "test-2"]
    query = urlencode({"model": model_a.public_id, "requests_per_s": "7.5", "ttft_p95_ms": "800"})
    form = owner_client.get(f"{reverse('deployment-create')}?{query}").context["form"]
    assert str(form.initial["model"]) == str(model_a.public_id)
    assert (form.initial["requests_per_s"], form.initial["ttft_p95_ms"]) == ("7.5", "800")


def test_the_tier_checkboxes_are_grouped_by_hardware(owner_client, model_a):
    form = owner_client.get(reverse("deployment-create")).context["form"]
    groups = {accelerator.slug: [box.data["value"] for box in boxes] for accelerator, boxes in form.tier_groups()}
    assert "h100-80gb-on-demand" in groups["h100-80gb"]
    assert all(slug.startswith(hardware) for hardware, slugs in groups.items() for slug in slugs)


def test_the_model_page_links_to_a_prefilled_deployment_form(owner_client, model_a):
    url = reverse("model-detail", args=[model_a.public_id])
    response = owner_client.get(f"{url}?requests_per_s=9&ttft_p95_ms=900")
    deploy_url = response.context["deploy_url"]
    assert deploy_url.startswith(reverse("deployment-create"))
    assert f"model={model_a.public_id}" in deploy_url and "requests_per_s=9" in deploy_url
    assert "ttft_p95_ms=900" in deploy_url
    assert 'data-testid="deploy-model"' in response.content.decode()


# --- A deployment's page ------------------------------------------------------------------


def test_the_page_shows_replicas_with_why_they_are_there(owner_client, deployment_a, fleet):
    place(deployment_a, fleet[0])
    place(deployment_a, fleet[1], state=Replica.State.STARTING, alternatives=[])
    response = owner_client.get(reverse("deployment-detail", args=[deployment_a.public_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert fleet[0].name in html and fleet[1].name in html
    assert "http://" + fleet[0].name in html
    assert 'data-testid="placement-why"' in html
    assert "Why here:" in html and "Chosen" in html
    assert "Costs 41% more per request served" in html  # the rejected option's reason
    assert "the only option that fits" in html
    assert "h100-80gb-on-demand" in html
    assert "Created:" in html  # the timeline and the status's why


def test_the_page_refreshes_itself_only_while_the_deployment_changes(owner_client, deployment_a):
    url = reverse("deployment-detail", args=[deployment_a.public_id])
    live = reverse("deployment-live", args=[deployment_a.public_id])
    assert f'data-live-url="{live}"' in owner_client.get(url).content.decode()
    Deployment.objects.filter(pk=deployment_a.pk).update(status="ready")
    assert "data-live-url" not in owner_client.get(url).content.decode()


def test_the_partial_shows_the_status_and_replicas(owner_client, deployment_a, fleet):
    place(deployment_a, fleet[0])
    response = owner_client.get(reverse("deployment-live", args=[deployment_a.public_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith("<div id=\"deployment-live\"") or 'id="deployment-live"' in html
    assert "<html" not in html
    assert fleet[0].name in html and 'data-status="pending"' in html


def test_the_timeline_is_newest_first_and_paginated(owner_client, deployment_a):
    for number in range(25):
        services.deployment_event_add(deployment=deployment_a, kind="note", message=f"event number {number}")
    url = reverse("deployment-detail", args=[deployment_a.public_id])
    first = owner_client.get(url).context["events"]
    assert first.object_list[0].message == "event number 24"
    assert first.paginator.num_pages == 2
    second = owner_client.get(f"{url}?page=2").context["events"]
    assert [event.kind for event in second.object_list][-1] == "created"
    assert "event number 24" not in [event.message for event in second.object_list]


# --- Actions and edit ---------------------------------------------------------------------


def test_pause_resume_and_delete_change_the_status(owner_client, deployment_a):
    for url_name, status in (("deployment-pause", "paused"), ("deployment-resume", "pending"),
                             ("deployment-delete", "deleting")):
        response = owner_client.post(reverse(url_name, args=[deployment_a.public_id]))
        assert response.status_code == 302
        deployment_a.refresh_from_db()
        assert deployment_a.status == status
    assert set(DeploymentEvent.objects.filter(deployment=deployment_a).values_list("kind", flat=True)) >= {
        "paused", "resumed", "deleting"}


def test_actions_are_posts_with_a_confirmation(owner_client, deployment_a):
    html = owner_client.get(reverse("deployment-detail", args=[deployment_a.public_id])).content.decode()
    assert 'data-confirm="Pause chat?' in html and 'data-confirm="Delete chat?' in html
    response = owner_client.get(reverse("deployment-pause", args=[deployment_a.public_id]))
    assert response.status_code == 405
    deployment_a.refresh_from_db()
    assert deployment_a.status == "pending"


def test_a_refused_action_is_a_message(owner_client, deployment_a):
    owner_client.post(reverse("deployment-delete", args=[deployment_a.public_id]))
    response = owner_client.post(reverse("deployment-pause", args=[deployment_a.public_id]), follow=True)
    assert "being deleted" in response.content.decode()
    deployment_a.refresh_from_db()
    assert deployment_a.status == "deleting"


def test_edit_is_prefilled_and_says_a_tier_change_rolls_replicas(owner_client, deployment_a):
    response = owner_client.get(reverse("deployment-edit", args=[deployment_a.public_id]))
    form = response.context["form"]
    assert "name" not in form.fields
    assert form.initial["max_replicas"] == 3 and form.initial["tier_mode"] == "auto"
    assert form.initial["regions"] == ["test-1"]
    assert "rolls the replicas" in response.content.decode()


def _edit_data(deployment, **changes) -> dict:
    data = {**VALID, "model": deployment.model.public_id}
    data.pop("name")
    return {**data, **changes}


def test_edit_saves_the_changes(owner_client, deployment_a):
    response = owner_client.post(reverse("deployment-edit", args=[deployment_a.public_id]),
                                 _edit_data(deployment_a, max_replicas="5", ttft_p95_ms="2500", priority="0"))
    assert response.status_code == 302
    deployment_a.refresh_from_db()
    assert deployment_a.max_replicas == 5 and deployment_a.slo_ttft_p95_ms == 2500
    assert DeploymentEvent.objects.filter(deployment=deployment_a, kind="updated").exists()


def test_an_edit_changing_nothing_says_so(owner_client, deployment_a):
    response = owner_client.post(reverse("deployment-edit", args=[deployment_a.public_id]),
                                 _edit_data(deployment_a), follow=True)
    assert "Nothing changed." in response.content.decode()
    assert not DeploymentEvent.objects.filter(deployment=deployment_a, kind="updated").exists()


def test_a_tier_change_starts_a_new_generation(owner_client, deployment_a):
    owner_client.post(reverse("deployment-edit", args=[deployment_a.public_id]),
                      _edit_data(deployment_a, tier_mode="choose", tiers=["h100-80gb-on-demand"]))
    deployment_a.refresh_from_db()
    assert deployment_a.generation == 2
    assert DeploymentEvent.objects.filter(deployment=deployment_a, kind="rollout").exists()


def test_a_refused_edit_shows_the_error_and_changes_nothing(owner_client, deployment_a):
    response = owner_client.post(reverse("deployment-edit", args=[deployment_a.public_id]),
                                 _edit_data(deployment_a, ttft_p95_ms="1", max_replicas="7"))
    assert "Closest:" in errors(response, "ttft_p95_ms")
    deployment_a.refresh_from_db()
    assert deployment_a.max_replicas == 3


# --- Access -------------------------------------------------------------------------------


def test_a_viewer_can_read_but_not_create_edit_or_act(tenant_a, deployment_a):
    viewer = member_client(tenant_a.tenant, Role.VIEWER)
    page = viewer.get(reverse("deployment-detail", args=[deployment_a.public_id]))
    assert page.status_code == 200
    assert 'data-testid="deployment-actions"' not in page.content.decode()
    assert viewer.get(reverse("deployment-live", args=[deployment_a.public_id])).status_code == 200
    assert viewer.get(reverse("deployment-create")).status_code == 403
    assert viewer.post(reverse("deployment-create"), {**VALID, "model": deployment_a.model.public_id}
                       ).status_code == 403
    assert viewer.get(reverse("deployment-edit", args=[deployment_a.public_id])).status_code == 403
    for url_name in ("deployment-edit", "deployment-pause", "deployment-resume", "deployment-delete"):
        assert viewer.post(reverse(url_name, args=[deployment_a.public_id]),
                           _edit_data(deployment_a, max_replicas="9")).status_code == 403
    deployment_a.refresh_from_db()
    assert (deployment_a.status, deployment_a.max_replicas) == ("pending", 3)
    assert Deployment.objects.count() == 1


def test_a_developer_can_deploy(tenant_a, model_a):
    developer = member_client(tenant_a.tenant, Role.DEVELOPER)
    response = developer.post(reverse("deployment-create"), {**VALID, "model": model_a.public_id})
    assert response.status_code == 302


@pytest.mark.parametrize(
    "method, url_name",
    [("get", "deployment-detail"), ("get", "deployment-live"), ("get", "deployment-edit"),
     ("post", "deployment-edit"), ("post", "deployment-pause"), ("post", "deployment-resume"),
     ("post", "deployment-delete")],
)
def test_another_tenants_deployment_is_a_404_and_nothing_changes(owner_client, deployment_b, fleet, method,
                                                                 url_name):
    place(deployment_b, fleet[0])
    events = DeploymentEvent.objects.filter(deployment=deployment_b).count()
    url = reverse(url_name, args=[deployment_b.public_id])
    response = getattr(owner_client, method)(url, _edit_data(deployment_b, max_replicas="9")
                                             if method == "post" else None)
    assert response.status_code == 404
    assert "globex-secret" not in response.content.decode() and fleet[0].name not in response.content.decode()
    deployment_b.refresh_from_db()
    assert (deployment_b.status, deployment_b.max_replicas) == ("pending", 3)
    assert DeploymentEvent.objects.filter(deployment=deployment_b).count() == events


@pytest.mark.parametrize("deployment_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_an_unknown_or_malformed_id_is_a_404(owner_client, deployment_id):
    assert owner_client.get(reverse("deployment-detail", args=[deployment_id])).status_code == 404
    assert owner_client.get(reverse("deployment-live", args=[deployment_id])).status_code == 404


def test_an_anonymous_visitor_is_sent_to_log_in(client, deployment_a):
    response = client.get(reverse("deployment-detail", args=[deployment_a.public_id]))
    assert response.status_code == 302 and reverse("login") in response.url
    assert client.get(reverse("deployment-live", args=[deployment_a.public_id])).status_code == 302
