"""Console pages of metering: the tenant's usage (a date range, a chart by meter per day, a table by
deployment × meter × tier, a CSV download), and the JSON figure of a deployment's latency panel
(the panel itself is `billing.templatetags.billing_panels`, on the scheduler's deployment page).
And the money pages: invoices, credits, prices, budgets and the billing profile.

Pages are wrapped in `tenant_page`; a deployment named in a URL is fetched through the tenant's
own, so another tenant's is a 404 like a missing one. Everything here reads rollups.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import urlencode

from billing import budgets, charts, documents, metrics, profiles, selectors
from billing.forms import BillingProfileForm, BudgetForm, UsageRangeForm
from scheduler.models import Deployment
from tenants.errors import ServiceError
from tenants.forms import add_service_error
from tenants.problems import problem_response
from tenants.roles import Scope
from tenants.scoping import NotFound, get_owned
from tenants.views import owned_or_404, tenant_page

USAGE_PAGE_SIZE = 50
CSV_GROUP_BY = "day,deployment,meter,tier"


@dataclass(frozen=True)
class LatencyWindow:
    """A choice of the deployment page's latency panel: how far back, in steps of what."""

    key: str
    label: str
    span: timedelta
    step: timedelta


LATENCY_WINDOWS = {
    "1h": LatencyWindow("1h", "Last hour", timedelta(hours=1), timedelta(minutes=1)),
    "24h": LatencyWindow("24h", "Last 24 hours", timedelta(hours=24), timedelta(minutes=15)),
    # Steps of whole hours, on the hour: read from the hourly latency rollups.
    "7d": LatencyWindow("7d", "Last 7 days", timedelta(days=7), timedelta(hours=1)),
    "30d": LatencyWindow("30d", "Last 30 days", timedelta(days=30), timedelta(hours=6)),
}
DEFAULT_LATENCY_WINDOW = "1h"


def latency_window(key: str | None) -> LatencyWindow:
    return LATENCY_WINDOWS.get(key or "", LATENCY_WINDOWS[DEFAULT_LATENCY_WINDOW])


def latency_range(window: LatencyWindow, now: datetime) -> tuple[datetime, datetime]:
    """The window ending with the current (unfinished) minute, in whole minutes — or, for steps of
    whole hours, with the current hour: its steps then start on the hour, stay put from one
    minute to the next, and are read from hourly rollups (billing.metrics.rollup_plan)."""
    if window.step % timedelta(hours=1):
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    else:
        end = metrics.floor_hour(now) + timedelta(hours=1)
    return end - window.span, end


def _form_problem(request, form) -> JsonResponse:
    errors = [{"field": field, "message": error["message"], "code": error["code"] or "invalid"}
              for field, field_errors in form.errors.get_json_data().items() for error in field_errors]
    return problem_response(400, "Some parameters are not valid.", slug="validation-error", instance=request.path,
                            errors=errors)


@tenant_page({"GET": Scope.READ})
def usage(request, actor):
    form = UsageRangeForm(request.GET)
    context = {"form": form}
    if form.is_valid():
        start, end = form.range()
        totals = selectors.usage_rows(tenant=actor.tenant, start=start, end=end, group_by=())
        rows = selectors.usage_rows(tenant=actor.tenant, start=start, end=end, group_by={"deployment", "meter", "tier"})
        query = form.query()
        context.update({
            "totals": list(totals),
            "page": Paginator(rows, USAGE_PAGE_SIZE).get_page(request.GET.get("page")),
            "chart_url": f"{reverse('usage-chart')}?{urlencode(query)}",
            "csv_url": f"{reverse('api-usage')}?{urlencode({**query, 'group_by': CSV_GROUP_BY, 'format': 'csv'})}",
        })
    return render(request, "billing/usage.html", context)


@tenant_page({"GET": Scope.READ})
def usage_chart(request, actor):
    """The usage page's figure (Plotly JSON): usage per UTC day, stacked by meter."""
    form = UsageRangeForm(request.GET)
    if not form.is_valid():
        return _form_problem(request, form)
    start, end = form.range()
    days = [start + timedelta(days=offset) for offset in range((end - start).days)]
    meters = [(meter.slug, meter.name, meter.unit) for meter in selectors.meter_list()]
    series = selectors.usage_by_day_and_meter(tenant=actor.tenant, start=start, end=end)
    return JsonResponse(charts.usage_chart(series, meters, days))


@tenant_page({"GET": Scope.READ})
def deployment_latency_chart(request, actor, deployment_id):
    """The latency panel's figure: p50/p95/p99 TTFT and TPOT against the SLO, and request rate."""
    try:
        deployment = get_owned(Deployment, actor.tenant, deployment_id)
    except NotFound as missing:
        return problem_response(404, str(missing), slug="not-found", instance=request.path)
    window = latency_window(request.GET.get("window"))
    start, end = latency_range(window, timezone.now())
    metrics = selectors.deployment_metrics(deployment, start=start, end=end, step=window.step)
    return JsonResponse(charts.latency_chart(metrics.steps, slo_ttft_p95_ms=deployment.slo_ttft_p95_ms,
                                      slo_tpot_p95_ms=deployment.slo_tpot_p95_ms))


# ==============================================================================================
# Money: invoices (list, page, printable page, PDF, CSV, a line's drill-down), credits, prices.
# Pages for the roles with the `billing` scope (owner, admin, billing); read-only here — the back
# office finalizes, voids, records payments and issues credit notes.
# ==============================================================================================

INVOICE_PAGE_SIZE = 24
ROLLUP_PAGE_SIZE = 48
EVENTS_SHOWN = 100


def _invoice_or_404(actor, invoice_id):
    return owned_or_404(selectors.invoice_list_for_tenant(actor.tenant), actor, invoice_id)


@tenant_page({"GET": Scope.BILLING})
def invoice_list(request, actor):
    status = request.GET.get("status") or None
    if status not in (None, "draft", "finalized", "paid", "void", "overdue"):
        status = None
    invoices = selectors.invoice_list_for_tenant(actor.tenant, status=status)
    page = Paginator(invoices, INVOICE_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "billing/invoice_list.html", {
        "page": page, "status": status, "statuses": ["draft", "finalized", "paid", "void", "overdue"],
        "balances": selectors.credit_balances_for_tenant(actor.tenant),
    })


@tenant_page({"GET": Scope.BILLING})
def invoice_detail(request, actor, invoice_id):
    invoice = _invoice_or_404(actor, invoice_id)
    return render(request, "billing/invoice_detail.html",
                  {"invoice": invoice, "doc": documents.invoice_document(invoice)})


@tenant_page({"GET": Scope.BILLING})
def invoice_print(request, actor, invoice_id):
    """The printable invoice: the document alone, without the console around it."""
    invoice = _invoice_or_404(actor, invoice_id)
    document = documents.invoice_document(invoice)
    return render(request, "billing/invoice_print.html", {"doc": document, "title": documents.title_of(document)})


def _file_name(invoice) -> str:
    return invoice.number or f"draft-{invoice.period:%Y-%m}"


@tenant_page({"GET": Scope.BILLING})
def invoice_pdf(request, actor, invoice_id):
    invoice = _invoice_or_404(actor, invoice_id)
    response = HttpResponse(documents.invoice_pdf(documents.invoice_document(invoice)), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{_file_name(invoice)}.pdf"'
    return response


@tenant_page({"GET": Scope.BILLING})
def invoice_csv(request, actor, invoice_id):
    invoice = _invoice_or_404(actor, invoice_id)
    response = HttpResponse(documents.invoice_csv(documents.invoice_document(invoice)),
                            content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_file_name(invoice)}.csv"'
    return response


@tenant_page({"GET": Scope.BILLING})
def invoice_line(request, actor, invoice_id, line_id):
    """Why this amount: a line's hourly rollups, and the raw events of one hour (`?hour=`)."""
    invoice = _invoice_or_404(actor, invoice_id)
    try:
        line = selectors.invoice_line_for(invoice, line_id)
    except NotFound as missing:
        raise Http404(str(missing)) from None
    rollups = selectors.invoice_rollups(invoice, line).order_by("hour", "id")
    hour, events = None, None
    if request.GET.get("hour"):
        hour = parse_datetime(request.GET["hour"])
        if hour is not None and hour.tzinfo is not None:
            events = list(selectors.invoice_events(invoice, line, hour).order_by("time", "id")[:EVENTS_SHOWN])
    return render(request, "billing/invoice_line.html", {
        "invoice": invoice, "line": line, "hour": hour, "events": events, "events_shown": EVENTS_SHOWN,
        "page": Paginator(rollups, ROLLUP_PAGE_SIZE).get_page(request.GET.get("page")),
        "total": sum((rollup.quantity for rollup in rollups), Decimal(0)),
    })


@tenant_page({"GET": Scope.BILLING})
def credits(request, actor):
    return render(request, "billing/credits.html", selectors.credits_overview(actor.tenant))


@tenant_page({"GET": Scope.BILLING})
def prices(request, actor):
    return render(request, "billing/prices.html", {"prices": selectors.effective_prices(actor.tenant)})


# --- Budgets --------------------------------------------------------------------------------------
# Owners, admins and billing members (the billing scope) see and change budgets; lifting an action
# is one button. Services refuse bad input with a message shown on the form field it names.

BUDGET_ACTIONS_SHOWN = 12


def _budget_or_404(actor, budget_id):
    return owned_or_404(selectors.budget_list_for_tenant(actor.tenant), actor, budget_id)


def _budget_deployments(actor):
    """Deployments a new budget may cover: the tenant's live ones without a budget of their own."""
    covered = selectors.budget_list_for_tenant(actor.tenant).filter(deployment__isnull=False)
    return (Deployment.objects.filter(tenant=actor.tenant).exclude(status__in=["deleting", "deleted"])
            .exclude(pk__in=covered.values("deployment_id")).order_by("name"))


@tenant_page({"GET": Scope.BILLING, "POST": Scope.BILLING})
def budget_list(request, actor):
    deployments = list(_budget_deployments(actor))
    form = BudgetForm(request.POST if request.method == "POST" else None, deployments=deployments,
                      currency=actor.tenant.currency)
    if form.is_bound and form.is_valid():
        data = dict(form.cleaned_data)
        chosen = data.pop("deployment")
        try:
            deployment = next((d for d in deployments if str(d.public_id) == chosen), None) if chosen else None
            budget = budgets.budget_create(actor=actor, deployment=deployment, currency=actor.tenant.currency, **data)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Budget made: {budgets.budget_label(budget)}.")
            return redirect("budgets")
    overviews = selectors.budget_overviews(selectors.budget_list_for_tenant(actor.tenant))
    return render(request, "billing/budgets.html", {"overviews": overviews, "form": form,
                                                    "currency": actor.tenant.currency})


@tenant_page({"GET": Scope.BILLING, "POST": Scope.BILLING})
def budget_detail(request, actor, budget_id):
    budget = _budget_or_404(actor, budget_id)
    form = BudgetForm.for_budget(budget, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        try:
            budget = budgets.budget_update(actor=actor, budget=budget, **changes)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, "Budget saved." if changes else "Nothing changed.")
            [overview] = selectors.budget_overviews([budget])
            if overview.lift_suggested:
                messages.warning(request, "The amount is now above this month's spend, but the budget's action is "
                                          "still in force: lift it to let the deployments scale again.")
            return redirect("budget-detail", budget_id=budget.public_id)
    [overview] = selectors.budget_overviews([budget])
    history = (budget.actions.select_related("lifted_by").order_by("-period", "-pk")[:BUDGET_ACTIONS_SHOWN])
    return render(request, "billing/budget_detail.html", {"overview": overview, "budget": budget, "form": form,
                                                          "history": history})


@tenant_page({"POST": Scope.BILLING})
def budget_lift(request, actor, budget_id):
    budget = _budget_or_404(actor, budget_id)
    try:
        budgets.budget_lift(actor=actor, budget=budget, reason=request.POST.get("reason", ""))
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Lifted: replica caps are back to what they were, and deployments the budget "
                                  "paused are resuming.")
    if request.POST.get("next") == "detail":
        return redirect("budget-detail", budget_id=budget.public_id)
    return redirect("budgets")


@tenant_page({"POST": Scope.BILLING})
def budget_delete(request, actor, budget_id):
    budget = _budget_or_404(actor, budget_id)
    label = budgets.budget_label(budget)
    budgets.budget_delete(actor=actor, budget=budget)
    messages.success(request, f"Budget deleted: {label}.")
    return redirect("budgets")


# --- Billing profile ------------------------------------------------------------------------------
# Owners, admins and billing members see and change who invoices are addressed to; the service's
# refusals are shown on the field they name, with the same messages as the API's.


@tenant_page({"GET": Scope.BILLING, "POST": Scope.BILLING})
def billing_profile(request, actor):
    details = profiles.billing_profile_for(actor.tenant)
    form = BillingProfileForm.for_profile(details, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        # Like a PATCH: only what the person changed is sent, so the audit log shows just that.
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        try:
            profiles.billing_profile_update(actor=actor, **changes)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, "Billing profile saved. This month's draft invoice follows it; issued "
                                      "invoices keep the details they were issued with." if changes
                             else "Nothing changed.")
            return redirect("billing-profile")
    return render(request, "billing/billing_profile.html", {"form": form, "details": details})
