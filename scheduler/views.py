"""Console pages of the model registry: list, register, a model's page with its tier comparison, edit, delete.

Views are thin, as in `tenants.views`: a form checks the input's shape, a service
does the write, a `ServiceError` goes back to the person beside the field it names.
Every page is wrapped in `tenant_page`, and every model named in a URL is fetched
through the tenant's own models, so another tenant's model is a 404 like a missing one.
"""

import json
from dataclasses import dataclass

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.debug import sensitive_post_parameters

from scheduler import selectors, services
from scheduler.charts import estimate_chart
from scheduler.estimator import TierQuote
from scheduler.forms import (
    TRACE_DEFAULTS,
    EstimateForm,
    ModelCreateForm,
    ModelEditForm,
    add_model_error,
    forget_credential_input,
)
from scheduler.models import RegisteredModel
from tenants.context import Actor
from tenants.errors import ServiceError
from tenants.problems import problem_response
from tenants.roles import Scope
from tenants.scoping import NotFound, get_owned
from tenants.views import owned_or_404, tenant_page


def _model_or_404(actor: Actor, model_id: str) -> RegisteredModel:
    return owned_or_404(selectors.model_list_for_tenant(actor.tenant), actor, model_id)


# --- List and register ----------------------------------------------------------------------


@tenant_page({"GET": Scope.READ})
def model_list(request, actor):
    context = {"models": selectors.model_list_for_tenant(actor.tenant), "may_deploy": Scope.DEPLOY in actor.scopes}
    return render(request, "scheduler/model_list.html", context)


@tenant_page({"GET": Scope.DEPLOY, "POST": Scope.DEPLOY})
@sensitive_post_parameters("credential_ref")
def model_create(request, actor):
    is_post = request.method == "POST"
    form = ModelCreateForm(request.POST if is_post else None, request.FILES if is_post else None)
    if form.is_bound and form.is_valid():
        try:
            model = services.model_create(actor=actor, **form.service_arguments())
        except ServiceError as error:
            add_model_error(form, error, config_field=form.config_field)
        else:
            messages.success(request, f"{model.name} is registered: {model.total_params / 1e9:,.2f} B parameters, "
                                      f"{model.weight_bytes / 1e9:,.1f} GB of {model.dtype} weights.")
            return redirect("model-detail", model_id=model.public_id)
    forget_credential_input(form)
    return render(request, "scheduler/model_create.html", {"form": form})


# --- A model's page -------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The tier table of a model for one traffic and SLO, and where its chart is served."""

    rows: list[dict]
    auto: TierQuote | None
    cheaper_spot: dict | None  # the cheapest spot tier under `auto`'s price, if any: worth a mention
    currency: str
    chart_url: str
    dtype: str


def _comparison(model: RegisteredModel, form: EstimateForm) -> Comparison:
    quote = selectors.model_quote(model, traffic=form.traffic, slo=form.slo, dtype=form.dtype_override)
    names = selectors.accelerator_names()
    auto_tier = quote.auto.tier if quote.auto else None
    rows = [{**row, "hardware_name": names.get(row["hardware"], row["hardware"]), "is_auto": row["tier"] == auto_tier}
            for row in selectors.quote_rows(quote)]
    cheaper_spot = next((row for row in rows if row["meets_slo"] and row["capacity_class"] == "spot"
                         and (quote.auto is None or row["cost_per_hour"] < quote.auto.cost_per_hour)), None)
    chart_url = f"{reverse('model-estimate-chart', args=[model.public_id])}?{urlencode(form.query())}"
    return Comparison(rows=rows, auto=quote.auto, cheaper_spot=cheaper_spot,
                      currency=rows[0]["currency"] if rows else "USD", chart_url=chart_url,
                      dtype=form.dtype_override or model.dtype)


@tenant_page({"GET": Scope.READ})
def model_detail(request, actor, model_id):
    model = _model_or_404(actor, model_id)
    estimate_form = EstimateForm(request.GET, model=model)
    context = {
        "model": model,
        "may_deploy": Scope.DEPLOY in actor.scopes,
        "estimate_form": estimate_form,
        "comparison": _comparison(model, estimate_form) if estimate_form.is_valid() else None,
        "is_default_comparison": not any(name in request.GET for name in estimate_form.fields),
        "trace_defaults": TRACE_DEFAULTS,
        "config_json": json.dumps(model.config, indent=2, ensure_ascii=False),
        "full_context_kv_bytes": model.kv_bytes_per_token * model.context_length,
    }
    return render(request, "scheduler/model_detail.html", context)


@tenant_page({"GET": Scope.READ})
def model_estimate_chart(request, actor, model_id):
    """The tier comparison's figure (Plotly JSON), for the same GET parameters as the model's page.

    A JSON endpoint answers in JSON: problem details for a bad parameter or an unknown model.
    """
    try:
        model = get_owned(selectors.model_list_for_tenant(actor.tenant), actor.tenant, model_id)
    except NotFound as missing:
        return problem_response(404, str(missing), slug="not-found", instance=request.path)
    form = EstimateForm(request.GET, model=model)
    if not form.is_valid():
        errors = [{"field": field, "message": error["message"], "code": error["code"] or "invalid"}
                  for field, field_errors in form.errors.get_json_data().items() for error in field_errors]
        return problem_response(400, "Some comparison parameters are not valid.", slug="validation-error",
                                instance=request.path, errors=errors)
    quote = selectors.model_quote(model, traffic=form.traffic, slo=form.slo, dtype=form.dtype_override)
    figure = estimate_chart(selectors.quote_rows(quote), auto_tier=quote.auto.tier if quote.auto else None,
                            ttft_slo_ms=form.slo.ttft_p95_ms,
                            currency=quote.tiers[0].currency if quote.tiers else "USD")
    return JsonResponse(figure)


# --- Edit and delete ------------------------------------------------------------------------


@tenant_page({"GET": Scope.DEPLOY, "POST": Scope.DEPLOY})
@sensitive_post_parameters("credential_ref")
def model_edit(request, actor, model_id):
    model = _model_or_404(actor, model_id)
    form = ModelEditForm.for_model(model, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        # Like a PATCH: only what the person changed is sent, so the audit log shows just that.
        changes = form.changes()
        try:
            model = services.model_update(actor=actor, model=model, **changes)
        except ServiceError as error:
            add_model_error(form, error)
        else:
            messages.success(request, "Changes saved; figures and estimates follow the new values." if changes
                             else "Nothing changed.")
            return redirect("model-detail", model_id=model.public_id)
    forget_credential_input(form)
    return render(request, "scheduler/model_edit.html", {"model": model, "form": form})


@tenant_page({"POST": Scope.DEPLOY})
def model_delete(request, actor, model_id):
    model = _model_or_404(actor, model_id)
    try:
        services.model_delete(actor=actor, model=model)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("model-detail", model_id=model.public_id)
    messages.success(request, f"{model.name} was deleted.")
    return redirect("models")
