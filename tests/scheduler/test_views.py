"""The model registry's console pages, through the Django test client."""

import copy
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse
from django.utils.http import urlencode

from scheduler import services
from scheduler.architecture import MAX_CONFIG_BYTES
from scheduler.catalog import model_templates
from scheduler.models import HardwareTier, RegisteredModel
from tenants.context import system_actor
from tenants.models import AuditEvent
from tenants.requests import SESSION_TENANT_KEY
from tenants.roles import Role
from tests.factories import MembershipFactory, UserFactory

LLAMA_8B = model_templates()["llama-3.1-8b"]


def logged_in(user, tenant) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_TENANT_KEY] = str(tenant.public_id)
    session.save()
    return client


def member_client(tenant, role: str) -> Client:
    user = UserFactory()
    MembershipFactory(tenant=tenant, user=user, role=role)
    return logged_in(user, tenant)


def register(tenant, name="chat", template="llama-3.1-8b", **kwargs) -> RegisteredModel:
    return services.model_create(actor=system_actor(tenant), name=name, template=template, **kwargs)


def llama_config(**changes) -> dict:
    config = copy.deepcopy(LLAMA_8B["config"])
    config.update(changes)
    return config


def form_errors(response, field: str) -> str:
    return " ".join(response.context["form"].errors.get(field, []))


@pytest.fixture
def owner_client(tenant_a) -> Client:
    return logged_in(tenant_a.owner, tenant_a.tenant)


@pytest.fixture
def model_a(tenant_a) -> RegisteredModel:
    return register(tenant_a.tenant, credential_ref="hf-reader")


@pytest.fixture
def model_b(tenant_b) -> RegisteredModel:
    return register(tenant_b.tenant, name="globex-secret-model")


# --- List ---------------------------------------------------------------------------------


def test_the_list_shows_the_tenants_models_with_their_figures(owner_client, model_a, model_b):
    register(model_a.tenant, name="mixture", template="mixtral-8x7b")
    response = owner_client.get(reverse("models"))
    assert response.status_code == 200
    html = response.content.decode()
    assert [model.name for model in response.context["models"]] == ["chat", "mixture"]
    assert reverse("model-detail", args=[model_a.public_id]) in html
    assert "hf://meta-llama/Llama-3.1-8B-Instruct" in html
    assert "8.03 B" in html and "16.1 GB" in html and "131,072" in html
    mixtral = RegisteredModel.objects.get(name="mixture")
    assert f"{mixtral.active_params / 1e9:,.2f} B" in html  # active < total for mixture-of-experts
    assert "globex-secret-model" not in html
    assert reverse("model-create") in html


def test_the_list_offers_registering_only_to_deploy_scope(tenant_a, model_a):
    html = member_client(tenant_a.tenant, Role.VIEWER).get(reverse("models")).content.decode()
    assert "chat" in html
    assert reverse("model-create") not in html


def test_an_empty_list_says_how_to_start(owner_client):
    html = owner_client.get(reverse("models")).content.decode()
    assert "No models yet" in html


@pytest.mark.django_db
def test_an_anonymous_visitor_is_sent_to_log_in():
    response = Client().get(reverse("models"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


# --- Register -----------------------------------------------------------------------------


def test_register_from_a_template(owner_client, tenant_a):
    response = owner_client.post(reverse("model-create"), {
        "name": "support-chat", "architecture": "template", "template": "llama-3.1-8b", "dtype": "fp8",
    })
    model = RegisteredModel.objects.get(tenant=tenant_a.tenant)
    assert response.status_code == 302
    assert response.url == reverse("model-detail", args=[model.public_id])
    assert (model.name, model.template, model.dtype, model.modality) == ("support-chat", "llama-3.1-8b", "fp8", "text")
    assert model.source_uri == LLAMA_8B["source_uri"]
    assert model.created_by == tenant_a.owner
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="model.create").count() == 1
    page = owner_client.get(response.url)
    assert "support-chat is registered" in page.content.decode()


def test_register_from_a_pasted_config(owner_client, tenant_a):
    response = owner_client.post(reverse("model-create"), {
        "name": "ours", "architecture": "paste", "config_text": json.dumps(llama_config()),
        "source_uri": "s3://models/ours/", "credential_ref": "s3-reader", "dtype": "bf16",
        # Ignored: the architecture comes from the pasted config, as the radio says.
        "template": "mixtral-8x7b",
    })
    assert response.status_code == 302, response.context["form"].errors
    model = RegisteredModel.objects.get(tenant=tenant_a.tenant)
    assert (model.source_uri, model.credential_ref, model.template) == ("s3://models/ours/", "s3-reader", "")
    assert model.config == llama_config()
    assert model.total_params == register(tenant_a.tenant, name="same").total_params


def test_register_from_an_uploaded_config_file(owner_client, tenant_a):
    upload = SimpleUploadedFile("config.json", json.dumps(llama_config()).encode(), "application/json")
    response = owner_client.post(reverse("model-create"), {
        "name": "uploaded", "architecture": "upload", "config_file": upload, "source_uri": "hf://acme/uploaded",
        "dtype": "int4", "modality": "text",
    })
    assert response.status_code == 302, response.context["form"].errors
    model = RegisteredModel.objects.get(tenant=tenant_a.tenant)
    assert (model.name, model.dtype, model.config) == ("uploaded", "int4", llama_config())


def test_an_uploaded_config_with_a_byte_order_mark_is_read(owner_client, tenant_a):
    upload = SimpleUploadedFile("config.json", b"\xef\xbb\xbf" + json.dumps(llama_config()).encode())
    response = owner_client.post(reverse("model-create"), {
        "name": "bom", "architecture": "upload", "config_file": upload, "source_uri": "hf://acme/bom",
        "dtype": "bf16"})
    assert response.status_code == 302


@pytest.mark.parametrize("architecture", ["paste", "upload"])
def test_a_bad_config_names_its_field_beside_the_config_input_and_saves_nothing(owner_client, tenant_a,
                                                                                architecture):
    raw = json.dumps(llama_config(num_key_value_heads=7))
    data = {"name": "broken", "architecture": architecture, "source_uri": "hf://acme/broken", "dtype": "bf16"}
    if architecture == "paste":
        data["config_text"] = raw
        field = "config_text"
    else:
        data["config_file"] = SimpleUploadedFile("config.json", raw.encode())
        field = "config_file"
    response = owner_client.post(reverse("model-create"), data)
    assert response.status_code == 200
    errors = form_errors(response, field)
    assert "config.num_key_value_heads" in errors
    assert "must divide num_attention_heads (32), not 7" in errors
    assert not RegisteredModel.objects.exists()
    assert not AuditEvent.objects.filter(action="model.create").exists()
    # The person's input is kept, so they can fix it.
    if architecture == "paste":
        assert "&quot;num_key_value_heads&quot;: 7" in response.content.decode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b'{"model_type": "llama",', "not valid JSON"),
        (b'{"model_type": "llama", "hidden_size": NaN}', "NaN is not a JSON number"),
        (b"[1, 2, 3]", "one JSON object"),
        (b"[" * 100_000, "nested too deeply"),
        (b"", "The submitted file is empty"),
    ],
)
def test_a_config_file_that_is_not_a_json_object_is_a_form_error(owner_client, content, message):
    response = owner_client.post(reverse("model-create"), {
        "name": "bad", "architecture": "upload", "source_uri": "hf://acme/bad", "dtype": "bf16",
        "config_file": SimpleUploadedFile("config.json", content)})
    assert response.status_code == 200
    assert message in form_errors(response, "config_file")
    assert not RegisteredModel.objects.exists()


def test_an_oversized_config_file_is_refused(owner_client):
    padded = json.dumps(llama_config()).encode()
    padded += b" " * (MAX_CONFIG_BYTES + 1 - len(padded))
    response = owner_client.post(reverse("model-create"), {
        "name": "huge", "architecture": "upload", "source_uri": "hf://acme/huge", "dtype": "bf16",
        "config_file": SimpleUploadedFile("config.json", padded)})
    assert response.status_code == 200
    assert f"at most {MAX_CONFIG_BYTES // 1024} KiB" in form_errors(response, "config_file")
    assert not RegisteredModel.objects.exists()


def test_an_oversized_pasted_config_is_refused(owner_client):
    text = json.dumps({**llama_config(), "padding": "x" * MAX_CONFIG_BYTES})
    response = owner_client.post(reverse("model-create"), {
        "name": "huge", "architecture": "paste", "source_uri": "hf://acme/huge", "dtype": "bf16",
        "config_text": text})
    assert f"the limit is {MAX_CONFIG_BYTES // 1024} KiB" in form_errors(response, "config_text")
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"architecture": "template", "template": ""}, "template", "Choose a template"),
        ({"architecture": "template", "template": "gpt-17"}, "template", "valid choice"),
        ({"architecture": "paste", "config_text": "  "}, "config_text", "Paste the model's config.json"),
        ({"architecture": "upload"}, "config_file", "Choose a config.json file"),
        ({"architecture": "clipboard"}, "architecture", "valid choice"),
        ({"architecture": "template", "template": "llama-3.1-8b", "source_uri": "ftp://x/y"}, "source_uri",
         "hf://org/name"),
        ({"architecture": "template", "template": "llama-3.1-8b", "dtype": "fp4"}, "dtype", "valid choice"),
        ({"architecture": "template", "template": "llama-3.1-8b", "name": "   "}, "name", "required"),
        ({"architecture": "template", "template": "bge-large-en-v1.5", "modality": "vision-language"},
         "template", "config.vision_config"),
    ],
)
def test_incomplete_or_wrong_input_is_a_form_error(owner_client, data, field, message):
    response = owner_client.post(reverse("model-create"), {"name": "m", "dtype": "bf16", **data})
    assert response.status_code == 200
    assert message in form_errors(response, field)
    assert not RegisteredModel.objects.exists()


def test_a_second_model_with_the_same_name_is_refused(owner_client, model_a):
    response = owner_client.post(reverse("model-create"), {
        "name": "chat", "architecture": "template", "template": "mistral-7b", "dtype": "bf16"})
    assert "already exists" in form_errors(response, "name")
    assert RegisteredModel.objects.count() == 1


def test_a_credential_ref_that_looks_like_a_secret_is_refused_and_not_echoed(owner_client):
    secret = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    response = owner_client.post(reverse("model-create"), {
        "name": "private", "architecture": "template", "template": "llama-3.1-8b", "dtype": "bf16",
        "credential_ref": secret})
    assert response.status_code == 200
    assert "never the secret itself" in form_errors(response, "credential_ref")
    assert secret not in response.content.decode()
    assert not RegisteredModel.objects.exists()


def test_the_register_form_offers_every_template(owner_client):
    html = owner_client.get(reverse("model-create")).content.decode()
    for slug in model_templates():
        assert f'value="{slug}"' in html
    assert 'enctype="multipart/form-data"' in html
    assert "The NAME of the secret" in html


# --- A model's page -----------------------------------------------------------------------


def test_the_model_page_shows_derived_figures_and_every_tier_with_the_auto_pick(owner_client, model_a):
    response = owner_client.get(reverse("model-detail", args=[model_a.public_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "8.03 B" in html  # total parameters
    assert "16.1 GB" in html  # bf16 weights
    assert "131 kB" in html  # KV cache per token: 2 × 32 layers × 8 KV heads × 128 × 2 bytes
    assert "131,072" in html  # context length
    assert "hf://meta-llama/Llama-3.1-8B-Instruct" in html and "hf-reader" in html
    assert "&quot;num_hidden_layers&quot;: 32" in html  # the config, in its collapsible

    comparison = response.context["comparison"]
    assert len(comparison.rows) == HardwareTier.objects.filter(active=True).count()
    auto = comparison.auto
    assert auto is not None and auto.capacity_class != "spot"
    assert [row["tier"] for row in comparison.rows if row["is_auto"]] == [auto.tier]
    assert f'<tr class="is-highlighted" data-tier="{auto.tier}">' in html
    assert f"would deploy on <strong>{auto.tier}</strong>" in html
    cheaper = [row for row in comparison.rows if row["meets_slo"] and row["capacity_class"] != "spot"
               and row["cost_per_hour"] < auto.cost_per_hour]
    assert not cheaper
    # The defaults: the Azure LLM inference 2023 conversation trace and the default SLO.
    form = response.context["estimate_form"]
    assert form.traffic.input_tokens == 1020 and form.traffic.output_tokens_p95 == 424
    assert (form.slo.ttft_p95_ms, form.slo.tpot_p95_ms) == (1500, 60)
    assert f'data-chart-url="{reverse("model-estimate-chart", args=[model_a.public_id])}?' in html


def test_comparison_parameters_in_the_url_change_the_quote(owner_client, model_a):
    url = reverse("model-detail", args=[model_a.public_id])
    low = {row["tier"]: row for row in owner_client.get(url).context["comparison"].rows}
    high_response = owner_client.get(f"{url}?{urlencode({'requests_per_s': 200, 'dtype': 'fp8'})}")
    high = {row["tier"]: row for row in high_response.context["comparison"].rows}
    assert high["h100-80gb-on-demand"]["replicas"] > low["h100-80gb-on-demand"]["replicas"]
    assert high_response.context["comparison"].dtype == "fp8"
    assert "requests_per_s=200" in high_response.context["comparison"].chart_url
    assert "Reset to defaults" in high_response.content.decode()


def test_an_impossible_slo_says_why_and_auto_picks_nothing(owner_client, model_a):
    response = owner_client.get(reverse("model-detail", args=[model_a.public_id]), {"ttft_p95_ms": 1})
    comparison = response.context["comparison"]
    assert comparison.auto is None
    assert all(not row["meets_slo"] and "TTFT" in row["reason"] for row in comparison.rows)
    assert "auto</strong> would not deploy" in response.content.decode()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"requests_per_s": "many"}, "requests_per_s"),
        ({"requests_per_s": "nan"}, "requests_per_s"),
        ({"requests_per_s": "0"}, "requests_per_s"),
        ({"input_tokens": "1000", "input_tokens_p95": "10"}, "input_tokens_p95"),
        ({"output_tokens": "1.5"}, "output_tokens"),
        ({"output_tokens_p95": ""}, "output_tokens_p95"),
        ({"ttft_p95_ms": "0"}, "ttft_p95_ms"),
        ({"tpot_p95_ms": "1e9"}, "tpot_p95_ms"),
        ({"dtype": "fp2"}, "dtype"),
    ],
)
def test_bad_comparison_parameters_are_form_errors(owner_client, model_a, params, field):
    response = owner_client.get(reverse("model-detail", args=[model_a.public_id]), params)
    assert response.status_code == 200
    assert field in response.context["estimate_form"].errors
    assert response.context["comparison"] is None
    assert "Correct the highlighted values" in response.content.decode()


# --- The chart's JSON ---------------------------------------------------------------------


def _tier_markers(figure: dict) -> list[str]:
    """The tier of every marker, over all traces (the auto ring carries none)."""
    return [tier for trace in figure["data"] for tier in trace.get("ids", [])]


def test_the_chart_json_is_a_plotly_figure_with_a_marker_per_tier_and_the_slo_line(owner_client, model_a):
    url = reverse("model-estimate-chart", args=[model_a.public_id])
    response = owner_client.get(url, {"ttft_p95_ms": 900})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    figure = response.json()
    assert set(figure) >= {"data", "layout"}
    page = owner_client.get(reverse("model-detail", args=[model_a.public_id]), {"ttft_p95_ms": 900})
    rows = page.context["comparison"].rows
    plotted = [row["tier"] for row in rows if row["ttft_p95_ms"] is not None]
    assert sorted(_tier_markers(figure)) == sorted(plotted)
    assert len(plotted) >= 10
    for trace in figure["data"]:
        assert trace["type"] == "scatter"
        assert len(trace["x"]) == len(trace["y"])
    classes = {trace["name"] for trace in figure["data"]}
    assert {"On-demand", "Reserved", "Spot (can be reclaimed)", "Auto pick"} <= classes

    slo_lines = [shape for shape in figure["layout"]["shapes"] if shape["type"] == "line"]
    assert [(line["y0"], line["y1"], line["line"]["dash"]) for line in slo_lines] == [(900, 900, "dash")]
    auto = page.context["comparison"].auto
    ring = next(trace for trace in figure["data"] if trace["name"] == "Auto pick")
    assert (ring["x"][0], ring["y"][0]) == (float(auto.cost_per_million_output_tokens),
                                            next(r["ttft_p95_ms"] for r in rows if r["is_auto"]))
    assert any(f"auto</b>: {auto.tier}" in note["text"] for note in figure["layout"]["annotations"])
    assert "time to first token" in figure["layout"]["yaxis"]["title"]["text"]


@pytest.mark.parametrize("params", [{"requests_per_s": "lots"}, {"output_tokens": "0"}, {"dtype": "fp3"}])
def test_bad_chart_parameters_are_a_400_problem(owner_client, model_a, params):
    response = owner_client.get(reverse("model-estimate-chart", args=[model_a.public_id]), params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 400
    assert {error["field"] for error in body["errors"]} == set(params)


def test_the_chart_of_another_tenants_model_is_a_404(owner_client, model_b):
    response = owner_client.get(reverse("model-estimate-chart", args=[model_b.public_id]))
    assert response.status_code == 404
    assert response.json()["status"] == 404
    assert "globex" not in response.content.decode()


def test_the_chart_of_an_unknown_or_malformed_id_is_a_404(owner_client):
    for model_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert owner_client.get(reverse("model-estimate-chart", args=[model_id])).status_code == 404


# --- Edit and delete ----------------------------------------------------------------------


def test_edit_saves_only_what_changed_and_recomputes_the_figures(owner_client, model_a, tenant_a):
    before = model_a.weight_bytes
    response = owner_client.post(reverse("model-edit", args=[model_a.public_id]), {
        "name": "chat", "dtype": "fp8", "source_uri": model_a.source_uri, "credential_ref": "hf-reader"})
    assert response.status_code == 302
    assert response.url == reverse("model-detail", args=[model_a.public_id])
    model_a.refresh_from_db()
    assert model_a.dtype == "fp8"
    assert model_a.weight_bytes < before * 0.6
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="model.update")
    assert event.changes == {"dtype": ["bf16", "fp8"]}


def test_edit_page_is_prefilled(owner_client, model_a):
    form = owner_client.get(reverse("model-edit", args=[model_a.public_id])).context["form"]
    assert form.initial == {"name": "chat", "dtype": "bf16", "source_uri": model_a.source_uri,
                            "credential_ref": "hf-reader"}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"credential_ref": "AKIAIOSFODNN7EXAMPLE/wJalrXUtnFEMI"}, "credential_ref", "never the secret itself"),
        ({"source_uri": "file:///etc/passwd"}, "source_uri", "hf://org/name"),
        ({"name": "other"}, "name", "already exists"),
        ({"dtype": "fp4"}, "dtype", "valid choice"),
    ],
)
def test_a_refused_edit_shows_the_error_and_changes_nothing(owner_client, model_a, change, field, message):
    register(model_a.tenant, name="other", template="mistral-7b")
    before = model_to_dict(RegisteredModel.objects.get(pk=model_a.pk))
    response = owner_client.post(reverse("model-edit", args=[model_a.public_id]), {
        "name": "chat", "dtype": "bf16", "source_uri": model_a.source_uri, "credential_ref": "hf-reader", **change})
    assert response.status_code == 200
    assert message in form_errors(response, field)
    assert model_to_dict(RegisteredModel.objects.get(pk=model_a.pk)) == before
    if field == "credential_ref":
        assert change["credential_ref"] not in response.content.decode()


def test_delete_removes_the_model(owner_client, model_a, tenant_a):
    response = owner_client.post(reverse("model-delete", args=[model_a.public_id]))
    assert response.status_code == 302
    assert response.url == reverse("models")
    assert not RegisteredModel.objects.filter(pk=model_a.pk).exists()
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="model.delete").exists()


def test_delete_is_a_post_with_a_confirmation(owner_client, model_a):
    assert owner_client.get(reverse("model-delete", args=[model_a.public_id])).status_code == 405
    html = owner_client.get(reverse("model-detail", args=[model_a.public_id])).content.decode()
    assert f'action="{reverse("model-delete", args=[model_a.public_id])}"' in html
    assert 'data-confirm="Delete chat?' in html


# --- Scopes -------------------------------------------------------------------------------


def test_a_viewer_can_read_but_not_register_edit_or_delete(tenant_a, model_a):
    viewer = member_client(tenant_a.tenant, Role.VIEWER)
    before = model_to_dict(RegisteredModel.objects.get(pk=model_a.pk))
    assert viewer.get(reverse("models")).status_code == 200
    detail = viewer.get(reverse("model-detail", args=[model_a.public_id]))
    assert detail.status_code == 200
    assert reverse("model-edit", args=[model_a.public_id]) not in detail.content.decode()
    assert viewer.get(reverse("model-estimate-chart", args=[model_a.public_id])).status_code == 200

    assert viewer.get(reverse("model-create")).status_code == 403
    refused = viewer.post(reverse("model-create"), {"name": "sneaky", "architecture": "template",
                                                     "template": "llama-3.1-8b", "dtype": "bf16"})
    assert refused.status_code == 403
    assert "deploy" in refused.content.decode()
    assert viewer.get(reverse("model-edit", args=[model_a.public_id])).status_code == 403
    assert viewer.post(reverse("model-edit", args=[model_a.public_id]), {
        "name": "renamed", "dtype": "int4", "source_uri": model_a.source_uri}).status_code == 403
    assert viewer.post(reverse("model-delete", args=[model_a.public_id])).status_code == 403

    assert RegisteredModel.objects.count() == 1
    assert model_to_dict(RegisteredModel.objects.get(pk=model_a.pk)) == before


def test_a_developer_can_register(tenant_a):
    developer = member_client(tenant_a.tenant, Role.DEVELOPER)
    response = developer.post(reverse("model-create"), {"name": "dev", "architecture": "template",
                                                         "template": "qwen2.5-7b", "dtype": "bf16"})
    assert response.status_code == 302


# --- Another tenant's model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url_name"),
    [
        ("get", "model-detail"),
        ("get", "model-estimate-chart"),
        ("get", "model-edit"),
        ("post", "model-edit"),
        ("post", "model-delete"),
    ],
)
def test_another_tenants_model_is_a_404_and_nothing_changes(owner_client, model_b, method, url_name):
    before = model_to_dict(RegisteredModel.objects.get(pk=model_b.pk))
    events_before = AuditEvent.objects.filter(tenant=model_b.tenant).count()
    url = reverse(url_name, args=[model_b.public_id])
    body = {"name": "hijacked", "dtype": "int4", "source_uri": "hf://evil/model", "credential_ref": ""}
    response = getattr(owner_client, method)(url, body if method == "post" else None)
    assert response.status_code == 404
    assert "globex-secret-model" not in response.content.decode()
    assert model_to_dict(RegisteredModel.objects.get(pk=model_b.pk)) == before
    assert AuditEvent.objects.filter(tenant=model_b.tenant).count() == events_before


def test_a_member_of_both_tenants_sees_each_model_only_in_its_tenant(tenant_a, tenant_b, model_a, model_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    in_a = logged_in(tenant_a.owner, tenant_a.tenant)
    in_b = logged_in(tenant_a.owner, tenant_b.tenant)
    assert in_a.get(reverse("model-detail", args=[model_b.public_id])).status_code == 404
    assert in_b.get(reverse("model-detail", args=[model_b.public_id])).status_code == 200
    assert in_b.get(reverse("model-detail", args=[model_a.public_id])).status_code == 404
    # Viewer in B: reading is allowed there, deleting is not.
    assert in_b.post(reverse("model-delete", args=[model_b.public_id])).status_code == 403
    assert RegisteredModel.objects.filter(pk=model_b.pk).exists()


# --- Navigation ---------------------------------------------------------------------------


def test_the_models_section_is_active_on_model_pages(owner_client, model_a):
    for url in (reverse("models"), reverse("model-create"), reverse("model-detail", args=[model_a.public_id]),
                reverse("model-edit", args=[model_a.public_id])):
        active = [link.label for link in owner_client.get(url).context["console_nav"] if link.active]
        assert active == ["Models"], url


def test_the_model_page_loads_plotly_from_this_installation(owner_client, model_a):
    html = owner_client.get(reverse("model-detail", args=[model_a.public_id])).content.decode()
    assert '<script src="/static/vendor/plotly/plotly.min.js" defer></script>' in html
    assert "cdn" not in html.lower()
