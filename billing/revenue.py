"""Revenue per day by hardware tier, for the back office: what finalized invoices billed, spread
over the days of the usage behind each line.

The honest simple version: an invoice line's amount is exact for its month (graduated and volume
prices depend on the whole month), so a day's share of it is the line's amount × that day's
quantity ÷ the line's quantity. Shares add up to the invoiced amounts exactly before display
rounding. Commitment shortfalls have no usage: they count on the last day of their month.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import TruncDay

from billing.models import Invoice, InvoiceLine, UsageRollup
from billing.money import quantum

NO_TIER = "tokens & requests"
COMMITMENT = "commitment"


@dataclass
class RevenueTable:
    currency: str
    tiers: list[str]
    rows: list[dict]  # {"day", "amounts": [per tier], "total"}
    totals: list[str]
    total: str


def _first_month(today: date, months: int) -> date:
    month = today.replace(day=1)
    for _ in range(months - 1):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


def _month_of(day: date) -> date:
    return day.replace(day=1)


def revenue_by_day_and_tier(*, months: int, today: date, since: date | None = None) -> list[RevenueTable]:
    """One table per currency: usage days × tiers, over invoices of the last `months` months (or
    of the months from `since` on)."""
    start = since.replace(day=1) if since else _first_month(today, months)
    lines = list(InvoiceLine.objects.filter(invoice__period__gte=start,
                                            invoice__status__in=[Invoice.Status.FINALIZED, Invoice.Status.PAID])
                 .values_list("invoice__period", "invoice__currency", "invoice__tenant_id", "deployment_id",
                              "meter_id", "hardware_tier", "period_of_usage", "amount", "kind"))
    periods = {line[0] for line in lines}
    daily = defaultdict(dict)  # (billing period, deployment, meter, tier) → day → quantity
    for period, deployment_id, meter_id, tier, day, quantity in (
            UsageRollup.objects.filter(billing_period__in=periods)
            .annotate(day=TruncDay("hour", tzinfo=UTC))
            .values_list("billing_period", "deployment_id", "meter_id", "tier", "day")
            .annotate(quantity=Sum("quantity")).values_list("billing_period", "deployment_id", "meter_id", "tier",
                                                            "day", "quantity").order_by()):
        daily[(period, deployment_id, meter_id, tier)][day.date() if isinstance(day, datetime) else day] = quantity
    cells: dict[str, dict[date, dict[str, Decimal]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Decimal)))
    for period, currency, _tenant, deployment_id, meter_id, tier, usage_month, amount, kind in lines:
        if kind == InvoiceLine.Kind.COMMITMENT_SHORTFALL or meter_id is None:
            last_day = (period.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            cells[currency][last_day][COMMITMENT] += amount
            continue
        month = usage_month or period
        days = {day: quantity for day, quantity in daily.get((period, deployment_id, meter_id, tier), {}).items()
                if _month_of(day) == month}
        whole = sum(days.values(), Decimal(0))
        label = tier or NO_TIER
        if not whole:
            cells[currency][month][label] += amount
            continue
        for day, quantity in days.items():
            cells[currency][day][label] += amount * quantity / whole
    return [_table(currency, by_day) for currency, by_day in sorted(cells.items())]


def _table(currency: str, by_day: dict[date, dict[str, Decimal]]) -> RevenueTable:
    step = quantum(currency)
    tiers = sorted({tier for amounts in by_day.values() for tier in amounts})
    rows, column_totals = [], defaultdict(Decimal)
    for day in sorted(by_day):
        amounts = by_day[day]
        for tier in tiers:
            column_totals[tier] += amounts.get(tier, Decimal(0))
        rows.append({"day": day.isoformat(),
                     "amounts": [format(amounts.get(tier, Decimal(0)).quantize(step), "f") for tier in tiers],
                     "total": format(sum(amounts.values(), Decimal(0)).quantize(step), "f")})
    grand = sum(column_totals.values(), Decimal(0))
    return RevenueTable(currency=currency, tiers=tiers, rows=rows,
                        totals=[format(column_totals[tier].quantize(step), "f") for tier in tiers],
                        total=format(grand.quantize(step), "f"))
