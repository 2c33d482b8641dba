"""Reads of metering: meter definitions, a tenant's usage, and a deployment's traffic, latency
and capacity. They read the rollups (hourly UsageRollups, per-minute LatencyRollups) and
replica lifetimes — never raw usage events, which are many and are purged after retention.
"""

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay

from billing import budget_math, metrics, rating
from billing.invoicing import COMPUTE_ERRORS, month_start, period_span, usage_for
from billing.models import (
    Budget,
    BudgetAction,
    BudgetAlert,
    CreditGrant,
    CreditLedgerEntry,
    Invoice,
    InvoiceLine,
    LatencyHourRollup,
    LatencyRollup,
    Meter,
    UsageEvent,
    UsageRollup,
)
from billing.money import quantum
from billing.pricebooks import effective_price_book_for
from scheduler.models import Deployment, HardwareTier, Replica
from tenants.models import Tenant
from tenants.scoping import get_owned, scoped

ACCELERATOR_SECONDS = "accelerator_seconds"
OUTPUT_TOKENS = "output_tokens"

# --- meters ---------------------------------------------------------------------------------


def meter_list() -> QuerySet:
    """Every meter definition (meters are global: the same for every tenant)."""
    return Meter.objects.order_by("slug")


def meter_by_slug(slug: str) -> Meter | None:
    return Meter.objects.filter(slug=slug).first()


# --- usage ----------------------------------------------------------------------------------

TIME_BUCKETS = ("hour", "day")
GROUPS = (*TIME_BUCKETS, "deployment", "meter", "tier")


def usage_deployment(tenant: Tenant, deployment_id) -> Deployment:
    """The tenant's deployment named in a usage filter — deleted ones too, since their usage
    stays (and is billed). NotFound when it is not the tenant's."""
    return get_owned(Deployment.all_objects.all(), tenant, deployment_id)


def usage_keys(group_by: Collection[str]) -> list[str]:
    """The fields usage rows are grouped and ordered by. Rows are always per meter: quantities
    of different meters (tokens, seconds) never add up."""
    keys = []
    if set(group_by) & set(TIME_BUCKETS):
        keys.append("period")
    if "deployment" in group_by:
        keys += ["deployment__name", "deployment__public_id"]
    keys.append("meter__slug")
    if "tier" in group_by:
        keys.append("tier")
    return keys


def usage_rows(*, tenant: Tenant, start: datetime, end: datetime, group_by: Collection[str],
               deployment: Deployment | None = None, meter: Meter | None = None) -> QuerySet:
    """Σ quantity and Σ events of the tenant's usage rollups whose hour begins in [start, end),
    grouped by `group_by` (see GROUPS; at most one time bucket — day buckets are UTC days) and
    always by meter, ordered by `usage_keys(group_by)`.

    Rows are dicts with the keys, `meter__unit`, `meter__name`, `quantity` (Decimal) and `events`.
    """
    rollups = scoped(UsageRollup, tenant).filter(hour__gte=start, hour__lt=end)
    if deployment is not None:
        rollups = rollups.filter(deployment=deployment)
    if meter is not None:
        rollups = rollups.filter(meter=meter)
    if "hour" in group_by:
        rollups = rollups.annotate(period=F("hour"))
    elif "day" in group_by:
        rollups = rollups.annotate(period=TruncDay("hour", tzinfo=UTC))
    keys = usage_keys(group_by)
    return (rollups.values(*keys, "meter__unit", "meter__name")
            .annotate(quantity=Sum("quantity"), events=Sum("event_count"))
            .order_by(*keys))


# --- a deployment's metrics -----------------------------------------------------------------


@dataclass(frozen=True)
class AcceleratorHour:
    hour: datetime
    accelerator_seconds: Decimal


@dataclass(frozen=True)
class CapacityTotals:
    """Accelerator-seconds of the whole hours overlapping a window, and what they cost at the
    tiers' list prices per million output tokens of the same hours (None when there were no
    tokens, a tier has no price, or the tiers' currencies differ)."""

    accelerator_seconds: Decimal
    output_tokens: Decimal
    accelerator_cost: Decimal | None
    currency: str | None
    cost_per_million_output_tokens: Decimal | None


@dataclass(frozen=True)
class DeploymentMetrics:
    deployment: Deployment
    start: datetime
    end: datetime
    step: timedelta
    steps: list[metrics.Step]
    summary: metrics.Summary
    accelerator_hours: list[AcceleratorHour]
    capacity: CapacityTotals


# Costs here are estimates shown beside latency, not invoice amounts: rounded once, half-up,
# to the precision of the tiers' prices per accelerator-hour.
COST_QUANTUM = Decimal("0.000001")


# Ranges per query: a 31-day window in steps of 2 hours that does not start on the hour has ~370
# part-hours to read by the minute; SQLite refuses expressions deeper than 1,000.
RANGES_PER_QUERY = 100
LATENCY_COLUMNS = ("request_count", "ttft", "tpot", "e2e")


def _in_ranges(model, deployment: Deployment, field: str, ranges) -> list[tuple]:
    """(field, request_count, ttft, tpot, e2e) of the deployment's rows whose `field` lies in one
    of `ranges` ([from, to), disjoint)."""
    rows = []
    for first in range(0, len(ranges), RANGES_PER_QUERY):
        within = Q()
        for low, high in ranges[first:first + RANGES_PER_QUERY]:
            within |= Q(**{f"{field}__gte": low, f"{field}__lt": high})
        rows += (scoped(model, deployment.tenant).filter(within, deployment=deployment)
                 .values_list(field, *LATENCY_COLUMNS))
    return rows


def _latency_rows(deployment: Deployment, start: datetime, end: datetime, step: timedelta
                  ) -> list[metrics.MinuteRow | metrics.HourRow]:
    """The rows that answer the window, as `metrics.rollup_plan` chooses them: hour rows for the
    hours wholly inside a step (when the step is whole hours), minute rows for the rest."""
    plan = metrics.rollup_plan(start, end, step)
    return ([metrics.HourRow(*row) for row in _in_ranges(LatencyHourRollup, deployment, "hour", plan.hour_ranges)]
            + [metrics.MinuteRow(*row) for row in _in_ranges(LatencyRollup, deployment, "minute",
                                                              plan.minute_ranges)])


def _replica_spans(deployment: Deployment, start: datetime, end: datetime) -> list[metrics.ReplicaSpan]:
    """When each replica held accelerators: from its creation (pending replicas hold theirs) to
    its stop. A replica that stopped without a recorded stop time is left out."""
    replicas = (scoped(Replica, deployment.tenant).filter(deployment=deployment, created_at__lt=end)
                .filter(Q(stopped_at__gt=start) | Q(stopped_at__isnull=True, state__in=Replica.HOLDING_STATES))
                .values_list("created_at", "stopped_at"))
    return [metrics.ReplicaSpan(created, stopped) for created, stopped in replicas]


def _hourly(deployment: Deployment, meter_slug: str, start: datetime, end: datetime) -> QuerySet:
    return (scoped(UsageRollup, deployment.tenant)
            .filter(deployment=deployment, meter__slug=meter_slug, hour__gte=metrics.floor_hour(start), hour__lt=end))


def _capacity(deployment: Deployment, start: datetime, end: datetime) -> tuple[list[AcceleratorHour], CapacityTotals]:
    per_hour = (_hourly(deployment, ACCELERATOR_SECONDS, start, end).values("hour")
                .annotate(total=Sum("quantity")).order_by("hour"))
    hours = [AcceleratorHour(row["hour"], row["total"]) for row in per_hour]
    per_tier = dict(_hourly(deployment, ACCELERATOR_SECONDS, start, end).values("tier")
                    .annotate(total=Sum("quantity")).values_list("tier", "total"))
    tokens = _hourly(deployment, OUTPUT_TOKENS, start, end).aggregate(total=Sum("quantity"))["total"] or Decimal(0)
    seconds = sum((hour.accelerator_seconds for hour in hours), Decimal(0))
    cost, currency = _list_cost(per_tier)
    per_million = None
    if cost is not None and tokens > 0:
        per_million = (cost * 1_000_000 / tokens).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)
    return hours, CapacityTotals(
        accelerator_seconds=seconds, output_tokens=tokens,
        accelerator_cost=cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP) if cost is not None else None,
        currency=currency, cost_per_million_output_tokens=per_million)


def _list_cost(seconds_per_tier: dict[str, Decimal]) -> tuple[Decimal | None, str | None]:
    """Σ accelerator-seconds × the tier's price per accelerator-hour ÷ 3600, unrounded."""
    if not seconds_per_tier:
        return None, None
    tiers = {tier.slug: tier for tier in HardwareTier.objects.filter(slug__in=seconds_per_tier)}
    currencies = {tier.currency for tier in tiers.values()}
    if set(tiers) != set(seconds_per_tier) or len(currencies) != 1:
        return None, None
    cost = sum((seconds * tiers[slug].price_per_accelerator_hour / 3600 for slug, seconds in seconds_per_tier.items()),
               Decimal(0))
    return cost, currencies.pop()


def deployment_metrics(deployment: Deployment, *, start: datetime, end: datetime, step: timedelta
                       ) -> DeploymentMetrics:
    """Request rate, TTFT / TPOT / E2E percentiles against the SLO and replicas per step of
    [start, end); accelerator-seconds per hour (the rollups' resolution) for the hours that
    overlap it. `start` and `end` are whole minutes (latency rollups are per minute). Steps of
    whole hours read hourly latency rollups where they can, with the same answers (billing/metrics.py)."""
    steps, summary = metrics.deployment_steps(
        _latency_rows(deployment, start, end, step), _replica_spans(deployment, start, end), start=start, end=end,
        step=step, slo_ttft_p95_ms=deployment.slo_ttft_p95_ms, slo_tpot_p95_ms=deployment.slo_tpot_p95_ms)
    hours, capacity = _capacity(deployment, start, end)
    return DeploymentMetrics(deployment=deployment, start=start, end=end, step=step, steps=steps, summary=summary,
                             accelerator_hours=hours, capacity=capacity)


def usage_by_day_and_meter(*, tenant: Tenant, start: datetime, end: datetime) -> dict[str, dict[datetime, Decimal]]:
    """meter slug → UTC day → quantity: the console's usage chart."""
    series: dict[str, dict[datetime, Decimal]] = defaultdict(dict)
    for row in usage_rows(tenant=tenant, start=start, end=end, group_by={"day", "meter"}):
        series[row["meter__slug"]][row["period"]] = row["quantity"]
    return dict(series)


# ==============================================================================================
# Money: prices, credits, invoices and their drill-down (reads for the API, console and documents).
# ==============================================================================================

def money_text(value: Decimal, currency: str) -> str:
    """An amount as decimal text with exactly the currency's minor units ("5.00", "27778")."""
    return format(value.quantize(quantum(currency)), "f")


def invoice_list_for_tenant(tenant: Tenant, *, status: str | None = None) -> QuerySet:
    invoices = scoped(Invoice, tenant).order_by("-period", "-id")
    if status == "overdue":
        return invoices.filter(status=Invoice.Status.FINALIZED, due_date__lt=datetime.now(UTC).date())
    if status:
        invoices = invoices.filter(status=status)
    return invoices


def invoice_lines(invoice: Invoice) -> QuerySet:
    return (InvoiceLine.objects.filter(invoice=invoice).select_related("meter", "deployment")
            .order_by("position", "id"))


def invoice_line_for(invoice: Invoice, line_id) -> InvoiceLine:
    """The invoice's line with this public id; NotFound otherwise (a line of another invoice too)."""
    return get_owned(InvoiceLine.objects.filter(invoice=invoice), invoice.tenant, line_id)


def _usage_window(invoice: Invoice, line: InvoiceLine) -> tuple[datetime, datetime]:
    """The hours a line's rollups lie in: its invoice's month, or the month an adjustment names."""
    month = line.period_of_usage or invoice.period
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def invoice_rollups(invoice: Invoice, line: InvoiceLine | None = None) -> QuerySet:
    """The hourly rollups behind an invoice (or one of its lines): the rows billed on its month, of
    the line's deployment, meter and tier, in the hours of the month the line covers."""
    rollups = UsageRollup.objects.filter(tenant=invoice.tenant_id, billing_period=invoice.period)
    if line is not None:
        if line.meter_id is None:
            return rollups.none()  # a commitment shortfall has no usage behind it
        start, end = _usage_window(invoice, line)
        rollups = rollups.filter(deployment_id=line.deployment_id, meter_id=line.meter_id, tier=line.hardware_tier,
                                 hour__gte=start, hour__lt=end)
    return rollups.select_related("meter", "deployment")


def invoice_events(invoice: Invoice, line: InvoiceLine | None = None, hour: datetime | None = None) -> QuerySet:
    """The raw usage events behind an invoice, a line, or one hourly rollup of a line (`hour`):
    events billed on the invoice's month, of the line's deployment and meter's event type.
    Raw events are kept SWITCHYARD_USAGE_RETENTION_DAYS; rollups for ever."""
    events = UsageEvent.objects.filter(tenant=invoice.tenant_id, billing_period=invoice.period)
    if line is not None:
        if line.meter_id is None:
            return events.none()
        start, end = _usage_window(invoice, line)
        events = events.filter(deployment_id=line.deployment_id, type=line.meter.event_type,
                               time__gte=start, time__lt=end)
        if line.hardware_tier:
            events = events.filter(data__tier=line.hardware_tier)
    if hour is not None:
        events = events.filter(time__gte=hour, time__lt=hour + timedelta(hours=1))
    return events


def credit_grants_for_tenant(tenant: Tenant) -> QuerySet:
    """The tenant's grants, each with its `balance` (Σ of its ledger)."""
    return scoped(CreditGrant, tenant).annotate(balance=Sum("ledger__amount")).order_by("-created_at", "-id")


def credit_ledger_for_tenant(tenant: Tenant) -> QuerySet:
    return (scoped(CreditLedgerEntry, tenant).select_related("grant", "invoice")
            .order_by("-created_at", "-id"))


@dataclass(frozen=True)
class CreditBalance:
    currency: str
    balance: Decimal  # Σ ledger of every grant
    available: Decimal  # of grants in force now (effective, not expired)


def credit_balances_for_tenant(tenant: Tenant, *, now: datetime | None = None) -> list[CreditBalance]:
    now = now or datetime.now(UTC)
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for grant in credit_grants_for_tenant(tenant):
        balance = grant.balance or Decimal(0)
        totals[grant.currency][0] += balance
        if grant.effective_at <= now and (grant.expires_at is None or grant.expires_at > now):
            totals[grant.currency][1] += balance
    return [CreditBalance(currency, balance, available) for currency, (balance, available) in sorted(totals.items())]


def _plain_decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def effective_prices(tenant: Tenant, *, now: datetime | None = None) -> dict:
    """The tenant's effective prices this month, as plain data (decimals as exact text)."""
    from billing.pricebooks import NoPriceBook, contract_for, describe_price, effective_price_book_for

    period = (now or datetime.now(UTC)).date().replace(day=1)
    try:
        book = effective_price_book_for(tenant, period)
    except NoPriceBook:
        return {"period": period, "book": None, "currency": tenant.currency, "contract": False,
                "discount_percent": "0", "minimum_commitment": "0", "prices": []}
    units = dict(Meter.objects.values_list("slug", "unit"))
    return {
        "period": period, "book": book.name, "currency": book.currency,
        "contract": contract_for(tenant, period) is not None,
        "discount_percent": _plain_decimal(book.discount_percent),
        "minimum_commitment": _plain_decimal(book.minimum_commitment),
        "prices": [{"meter": price.meter, "hardware_tier": price.hardware_tier, "model": price.model,
                    "unit_price": _plain_decimal(price.unit_price),
                    "tiers": [{"up_to": _plain_decimal(tier.up_to), "unit_price": _plain_decimal(tier.unit_price),
                               "flat_fee": _plain_decimal(tier.flat_fee)} for tier in price.tiers],
                    "package_size": _plain_decimal(price.package_size), "free_units": _plain_decimal(price.free_units),
                    "minimum": _plain_decimal(price.minimum),
                    "description": describe_price(price, book.currency, units.get(price.meter, "unit"))}
                   for price in sorted(book.prices, key=lambda price: (price.meter, price.hardware_tier or ""))],
    }


LEDGER_SHOWN = 500


def credits_overview(tenant: Tenant, *, now: datetime | None = None) -> dict:
    """Balances per currency, the grants with their balances, and the latest ledger entries."""
    return {
        "balances": [{"currency": item.currency, "balance": money_text(item.balance, item.currency),
                      "available": money_text(item.available, item.currency)}
                     for item in credit_balances_for_tenant(tenant, now=now)],
        "grants": [{"id": grant.public_id, "kind": grant.kind, "amount": money_text(grant.amount, grant.currency),
                    "balance": money_text(grant.balance or Decimal(0), grant.currency), "currency": grant.currency,
                    "effective_at": grant.effective_at, "expires_at": grant.expires_at, "priority": grant.priority,
                    "description": grant.description, "created_at": grant.created_at}
                   for grant in credit_grants_for_tenant(tenant)],
        "ledger": [{"grant": entry.grant.public_id, "kind": entry.kind,
                    "amount": money_text(entry.amount, entry.currency), "currency": entry.currency,
                    "invoice": entry.invoice.public_id if entry.invoice_id else None,
                    "invoice_number": entry.invoice.number if entry.invoice_id else None, "note": entry.note,
                    "created_at": entry.created_at}
                   for entry in credit_ledger_for_tenant(tenant)[:LEDGER_SHOWN]],
    }


# ==============================================================================================
# Budgets: month-to-date spend as the invoice rates it, and what each budget shows (docs/billing.md).
# ==============================================================================================


@dataclass(frozen=True)
class TenantSpend:
    """A tenant's spend in one month: the amounts of the usage lines of that month's own usage,
    rated with its effective price book exactly as its invoice will be (before credits and tax).
    Adjustments for late usage of earlier months and a contract's commitment shortfall are not
    spend of this month. `error` says why it could not be computed (e.g. no price book)."""

    currency: str | None
    total: Decimal
    by_deployment: dict[int, Decimal]
    error: str = ""

    def of(self, budget: Budget) -> Decimal:
        """What counts against `budget`: the tenant's total, or its deployment's lines."""
        if budget.deployment_id is None:
            return self.total
        return self.by_deployment.get(budget.deployment_id, Decimal(0))


def budget_spend_for_tenants(tenants: Collection[Tenant], period: date, *,
                             cache: dict | None = None) -> dict[int, TenantSpend]:
    """Tenant id → its spend in `period` (a first of month): one grouped rollup query for all of
    them (billing.invoicing.usage_for), then billing.rating per tenant."""
    cache = {} if cache is None else cache
    usage = usage_for([tenant.pk for tenant in tenants], period)
    spends = {}
    for tenant in tenants:
        try:
            book = effective_price_book_for(tenant, period, cache=cache)
            lines = rating.rate(usage[tenant.pk].regular, book) if tenant.pk in usage else []
        except COMPUTE_ERRORS as error:
            spends[tenant.pk] = TenantSpend(currency=None, total=Decimal(0), by_deployment={},
                                            error=f"Spend cannot be computed: {error}")
            continue
        by_deployment: dict[int, Decimal] = defaultdict(Decimal)
        for line in lines:
            if line.kind == rating.USAGE and not line.is_adjustment and line.deployment:
                by_deployment[int(line.deployment)] += line.amount
        spends[tenant.pk] = TenantSpend(currency=book.currency, total=sum(by_deployment.values(), Decimal(0)),
                                        by_deployment=dict(by_deployment))
    return spends


def budget_spend_problem(budget: Budget, spend: TenantSpend) -> str:
    """Why the budget cannot be compared with the spend ("" when it can)."""
    if spend.error:
        return spend.error
    if spend.currency != budget.currency:
        return (f"The budget is in {budget.currency} but the tenant is billed in {spend.currency}: "
                f"set the budget's currency to {spend.currency}.")
    return ""


def budget_alerted_thresholds(period: date) -> dict[int, set[int]]:
    """Budget id → the thresholds already alerted in `period`."""
    alerted: dict[int, set[int]] = defaultdict(set)
    for budget_id, threshold in BudgetAlert.objects.filter(period=period).values_list("budget_id", "threshold"):
        alerted[budget_id].add(threshold)
    return alerted


def budget_acted(period: date) -> set[int]:
    """Ids of the budgets whose action was applied in `period` (lifted or not)."""
    return set(BudgetAction.objects.filter(period=period).values_list("budget_id", flat=True))


def budget_list_for_tenant(tenant: Tenant) -> QuerySet:
    """The tenant's budgets: the tenant-wide one first, then per deployment by name."""
    return (scoped(Budget, tenant).select_related("tenant", "deployment", "created_by")
            .order_by(F("deployment__name").asc(nulls_first=True), "pk"))


def budget_for(tenant: Tenant, budget_id) -> Budget:
    """The tenant's budget with this public id; NotFound otherwise."""
    return get_owned(budget_list_for_tenant(tenant), tenant, budget_id)


@dataclass(frozen=True)
class BudgetOverview:
    """A budget as the API and console show it, this month."""

    budget: Budget
    period: date
    spend: Decimal | None  # None: it cannot be computed (see `problem`)
    forecast: Decimal | None
    percent_used: Decimal | None
    problem: str
    alerts: list[BudgetAlert]  # this month's, by threshold
    action: BudgetAction | None  # this month's (in force or lifted), else one still in force

    @property
    def thresholds_reached(self) -> list[int]:
        return [alert.threshold for alert in self.alerts]

    @property
    def action_in_force(self) -> bool:
        return self.action is not None and self.action.lifted_at is None

    @property
    def lift_suggested(self) -> bool:
        """An action is in force but spend is below the amount again (the amount was raised)."""
        return self.action_in_force and self.spend is not None and self.spend < self.budget.amount

    @property
    def amount_text(self) -> str:
        return money_text(self.budget.amount, self.budget.currency)

    @property
    def threshold_rows(self) -> list[tuple[int, BudgetAlert | None]]:
        """Every threshold of the budget (and any alerted this month before it was changed), with its alert."""
        by_threshold = {alert.threshold: alert for alert in self.alerts}
        return [(threshold, by_threshold.get(threshold))
                for threshold in sorted(set(self.budget.thresholds) | set(by_threshold))]

    @property
    def bar_percent(self) -> Decimal:
        """The spend bar's fill, 0–100."""
        return min(self.percent_used or Decimal(0), Decimal(100))


def budget_overviews(budgets: Collection[Budget], *, now: datetime | None = None) -> list[BudgetOverview]:
    """Each budget with its month-to-date spend, forecast, alerts and action (few queries for all)."""
    budgets = list(budgets)
    if not budgets:
        return []
    now = now or datetime.now(UTC)
    period = month_start(now)
    span = period_span(period)
    spends = budget_spend_for_tenants({budget.tenant for budget in budgets}, period)
    ids = [budget.pk for budget in budgets]
    alerts: dict[int, list[BudgetAlert]] = defaultdict(list)
    for alert in BudgetAlert.objects.filter(budget_id__in=ids, period=period).order_by("threshold"):
        alerts[alert.budget_id].append(alert)
    actions: dict[int, BudgetAction] = {}
    # Oldest first, so this month's action (or the newest one still in force) is the one kept.
    for action in (BudgetAction.objects.filter(budget_id__in=ids).filter(Q(period=period) | Q(lifted_at__isnull=True))
                   .select_related("lifted_by").order_by("period", "pk")):
        actions[action.budget_id] = action
    overviews = []
    for budget in budgets:
        spend = spends[budget.tenant_id]
        problem = budget_spend_problem(budget, spend)
        spent = None if problem else spend.of(budget)
        overviews.append(BudgetOverview(
            budget=budget, period=period, spend=spent, problem=problem, alerts=alerts[budget.pk],
            action=actions.get(budget.pk),
            forecast=None if spent is None else budget_math.forecast(
                spent, period_start=span.start, period_end=span.end, now=now, currency=budget.currency),
            percent_used=None if spent is None else budget_math.percent_used(spent, budget.amount)))
    return overviews
