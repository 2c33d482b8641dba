"""Console pages of the model registry (list, register, a model's page with its tier comparison,
edit, delete) and of deployments (list, create, a deployment's page with why each replica runs
where it does, edit, pause, resume, delete).

Views are thin, as in `tenants.views`: a form checks the input's shape, a service
does the write, a `ServiceError` goes back to the person beside the field it names.
Every page is wrapped in `tenant_page`, and every model named in a URL is fetched
through the tenant's own models, so another tenant's model is a 404 like a missing one.
"""

import json
from dataclasses import dataclass
from decimal import Decimal

from django.contrib import messages
from django.core.paginator import Paginator
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
    DeploymentEditForm,
    DeploymentForm,
    EstimateForm,
    ModelCreateForm,
    ModelEditForm,
    add_deployment_error,
    add_model_error,
    forget_credential_input,
)
from scheduler.models import Deployment, PlacementDecision, RegisteredModel, Replica
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


def _deploy_url(model: RegisteredModel, form: EstimateForm) -> str:
    """The new-deployment form with this model, and the comparison's traffic and SLO when they are valid."""
    query = {"model": model.public_id}
    if form.is_valid():
        query.update({name: value for name, value in form.query().items() if name != "dtype"})
    return f"{reverse('deployment-create')}?{urlencode(query)}"


@tenant_page({"GET": Scope.READ})
def model_detail(request, actor, model_id):
    model = _model_or_404(actor, model_id)
    estimate_form = EstimateForm(request.GET, model=model)
    context = {
        "model": model,
        "may_deploy": Scope.DEPLOY in actor.scopes,
        "estimate_form": estimate_form,
        "comparison": _comparison(model, estimate_form) if estimate_form.is_valid() else None,
        "deploy_url": _deploy_url(model, estimate_form),
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


# --- Deployments ----------------------------------------------------------------------------

EVENTS_PAGE_SIZE = 20
# While a deployment is on its way somewhere, its page refreshes the status and the replicas.
LIVE_STATUSES = (Deployment.Status.PENDING, Deployment.Status.DEPLOYING, Deployment.Status.DEGRADED,
                 Deployment.Status.DELETING)
# The best few rejected options are enough to say why; the API lists them all.
ALTERNATIVES_SHOWN = 4


def _deployment_or_404(actor: Actor, deployment_id: str) -> Deployment:
    return owned_or_404(selectors.deployment_list_for_tenant(actor.tenant), actor, deployment_id)


@tenant_page({"GET": Scope.READ})
def deployment_list(request, actor):
    context = {"deployments": selectors.deployment_list_for_tenant(actor.tenant),
               "may_deploy": Scope.DEPLOY in actor.scopes}
    return render(request, "scheduler/deployment_list.html", context)


@tenant_page({"GET": Scope.DEPLOY, "POST": Scope.DEPLOY})
def deployment_create(request, actor):
    if request.method == "POST":
        form = DeploymentForm(request.POST, tenant=actor.tenant)
    else:
        initial = DeploymentForm.initial_for_create(request.GET)
        form = DeploymentForm(tenant=actor.tenant, initial=initial)
        form.initial.setdefault("regions", [slug for slug, _label in form.fields["regions"].choices])
    if form.is_bound and form.is_valid():
        try:
            deployment = services.deployment_create(actor=actor, **form.service_arguments())
        except ServiceError as error:
            add_deployment_error(form, error)
        else:
            messages.success(request, f"{deployment.name} is created: Switchyard is placing its replicas.")
            return redirect("deployment-detail", deployment_id=deployment.public_id)
    context = {"form": form, "has_models": form.fields["model"].queryset.exists()}
    return render(request, "scheduler/deployment_create.html", context)


@dataclass(frozen=True)
class PlacementRow:
    """One way a replica could have run: the chosen option or a rejected one, with why."""

    hardware: str
    hardware_name: str
    accelerators: int
    rps_per_replica: float
    cost_per_hour: Decimal | None
    why: str
    chosen: bool

    @property
    def cost_per_rps(self) -> Decimal | None:
        """Cost per hour of each request/s served: how the options compare, whatever their size."""
        if self.cost_per_hour is None or not self.rps_per_replica:
            return None
        return self.cost_per_hour / Decimal(str(self.rps_per_replica))


@dataclass(frozen=True)
class ReplicaView:
    replica: Replica
    placement: list[PlacementRow]  # the chosen option first; empty when no decision was recorded
    more_alternatives: int  # rejected options not shown
    currency: str


def _placement_rows(decision: PlacementDecision, prices: dict[str, Decimal], names: dict[str, str]
                    ) -> tuple[list[PlacementRow], int]:
    rows = [PlacementRow(hardware=decision.hardware, hardware_name=names.get(decision.hardware, decision.hardware),
                         accelerators=decision.accelerators, rps_per_replica=decision.rps_per_replica,
                         cost_per_hour=decision.cost_per_hour, why="", chosen=True)]
    alternatives = [alternative for alternative in decision.alternatives if isinstance(alternative, dict)]
    for alternative in alternatives[:ALTERNATIVES_SHOWN]:
        option = alternative.get("option") or {}
        hardware, accelerators = option.get("hardware", "?"), option.get("accelerators") or 0
        price = prices.get(hardware)
        rows.append(PlacementRow(hardware=hardware, hardware_name=names.get(hardware, hardware),
                                 accelerators=accelerators, rps_per_replica=option.get("rps_per_replica") or 0,
                                 cost_per_hour=price * accelerators if price is not None else None,
                                 why=alternative.get("why", ""), chosen=False))
    return rows, max(len(alternatives) - ALTERNATIVES_SHOWN, 0)


def _live_context(deployment: Deployment) -> dict:
    """The part of the deployment's page that refreshes on its own: status, why, and the replicas."""
    replicas = selectors.replica_list_for_deployment(deployment)
    # What each rejected option would have cost: the cheapest allowed tier of its hardware.
    prices = {option.hardware: option.price_per_accelerator_hour
              for option in selectors.deployment_placement_options(deployment)}
    names = selectors.accelerator_names()
    views = []
    for replica in replicas:
        decision = getattr(replica, "placement", None)
        rows, more = _placement_rows(decision, prices, names) if decision else ([], 0)
        views.append(ReplicaView(replica=replica, placement=rows, more_alternatives=more,
                                 currency=decision.currency if decision else ""))
    placed = [view for view in views if view.placement and view.replica.state in Replica.HOLDING_STATES]
    return {
        "deployment": deployment,
        "cost_per_hour": sum((view.placement[0].cost_per_hour for view in placed), Decimal(0)) if placed else None,
        "currency": placed[0].currency if placed else "",
        "latest_event": selectors.deployment_event_list(deployment).first(),
        "replicas": views,
        "holding": sum(1 for view in views if view.replica.state in Replica.HOLDING_STATES),
        "is_live": deployment.status in LIVE_STATUSES,
    }


def _option_rows(deployment: Deployment) -> list[dict]:
    """What one replica serves on each allowed hardware (the performance model's sizing), cheapest price with it."""
    names = selectors.accelerator_names()
    placement = {option.hardware: option for option in selectors.deployment_placement_options(deployment)}
    rows = []
    for option in deployment.replica_options:
        offer = placement.get(option["hardware"])
        rows.append({**option, "hardware_name": names.get(option["hardware"], option["hardware"]),
                     "tier": offer.tier if offer else None, "currency": offer.currency if offer else "",
                     "cost_per_hour": offer.price_per_accelerator_hour * option["accelerators"] if offer else None})
    return sorted(rows, key=lambda row: (row["cost_per_hour"] is None,
                                         (row["cost_per_hour"] or 0) / Decimal(str(row["rps_per_replica"] or 1))))


@tenant_page({"GET": Scope.READ})
def deployment_detail(request, actor, deployment_id):
    deployment = _deployment_or_404(actor, deployment_id)
    events = Paginator(selectors.deployment_event_list(deployment), EVENTS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        **_live_context(deployment),
        "policy": deployment.policy(),
        "tiers": list(deployment.tiers.all()),
        "regions": list(deployment.regions.all()),
        "options": _option_rows(deployment),
        "events": events,
        "may_deploy": Scope.DEPLOY in actor.scopes,
    }
    return render(request, "scheduler/deployment_detail.html", context)


@tenant_page({"GET": Scope.READ})
def deployment_live(request, actor, deployment_id):
    """The status and replicas part of the deployment's page, fetched by console.js while it changes."""
    deployment = _deployment_or_404(actor, deployment_id)
    return render(request, "scheduler/_deployment_live.html", _live_context(deployment))


@tenant_page({"GET": Scope.DEPLOY, "POST": Scope.DEPLOY})
def deployment_edit(request, actor, deployment_id):
    deployment = _deployment_or_404(actor, deployment_id)
    form = DeploymentEditForm(request.POST if request.method == "POST" else None, deployment=deployment)
    if form.is_bound and form.is_valid():
        before = (deployment.updated_at, deployment.generation)
        try:
            updated = services.deployment_update(actor=actor, deployment=deployment, **form.service_arguments())
        except ServiceError as error:
            add_deployment_error(form, error)
        else:
            if (updated.updated_at, updated.generation) == before:
                messages.success(request, "Nothing changed.")
            elif updated.generation != before[1]:
                messages.success(request, f"Changes saved. Generation {updated.generation}: replicas are replaced "
                                          f"one by one, the old ones serve until the new ones are ready.")
            else:
                messages.success(request, "Changes saved; running replicas are kept.")
            return redirect("deployment-detail", deployment_id=deployment.public_id)
    return render(request, "scheduler/deployment_edit.html", {"deployment": deployment, "form": form})


def _deployment_action(request, actor, deployment_id, service, done: str):
    deployment = _deployment_or_404(actor, deployment_id)
    try:
        service(actor=actor, deployment=deployment)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, done.format(name=deployment.name))
    return redirect("deployment-detail", deployment_id=deployment.public_id)


@tenant_page({"POST": Scope.DEPLOY})
def deployment_pause(request, actor, deployment_id):
    return _deployment_action(request, actor, deployment_id, services.deployment_pause,
                              "{name} is paused: its replicas stop and their accelerators are freed.")


@tenant_page({"POST": Scope.DEPLOY})
def deployment_resume(request, actor, deployment_id):
    return _deployment_action(request, actor, deployment_id, services.deployment_resume,
                              "{name} is resumed: its replicas are placed again.")


@tenant_page({"POST": Scope.DEPLOY})
def deployment_delete(request, actor, deployment_id):
    deployment = _deployment_or_404(actor, deployment_id)
    try:
        services.deployment_delete(actor=actor, deployment=deployment)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("deployment-detail", deployment_id=deployment.public_id)
    messages.success(request, f"{deployment.name} is being deleted: its replicas drain, then it is removed.")
    return redirect("deployments")
