"""Invoices: drafts computed from the rollups, the monthly close, void, payments, credit notes,
credit grants. The money arithmetic is billing.rating's and billing.tax's; this module loads
rows, calls them, and writes their results (docs/billing.md).

Closing a month (`period_close`, a beat task; idempotent):

1. For each month before the current one that has a tenant with unclosed usage, an open
   draft, or a contract with a minimum commitment, make sure each such tenant has a draft
   invoice (one per tenant and month: a database constraint); a missing one is created
   already claimed by this run (step 2).
2. Claim the existing drafts in one conditional UPDATE (invoicing_status idle → finalizing,
   with a claim token and claimed_at). A draft another run holds is skipped; a claim older than
   SWITCHYARD_INVOICE_CLAIM_STALE_MINUTES is a crashed run's and is taken over.
3. Close the month for the claimed tenants: ClosedPeriod rows, written under the EXCLUSIVE
   billing-period advisory lock that ingestion holds SHARED while it picks an event's billing
   period. Once committed, no event can be added to the month's rollups of these tenants any
   more (later ones are billed on the open month, as adjustments), so they can be read, and read
   again by a retry, with the same result.
4. Read the month's rollups with one grouped query; then, one transaction per chunk of tenants:
   the claimed drafts locked FOR UPDATE, rating, credits, tax, the numbers (a counter row locked
   FOR UPDATE: gapless), lines, ledger entries, status finalized and the invoice.finalized
   webhook — committed together or not at all.

A crash leaves nothing half-finalized: only the claims of step 2 (and the closed months of
step 3) remain, visible as invoicing_status "finalizing" with their claimed_at, and retried
once stale. A tenant whose invoice cannot be computed (no price for a meter, an unknown
country) is left a draft with `close_error` set and its claim released; the others close.
"""

import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from functools import cache
from operator import itemgetter

import orjson

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, Min, OuterRef, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from billing import rating
from billing.metering import BILLING_PERIOD_LOCK_KEY
from billing.models import (
    BillingProfile,
    ClosedPeriod,
    CreditGrant,
    CreditLedgerEntry,
    CreditNote,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Meter,
    Payment,
    PriceBookSnapshot,
    UsageRollup,
)
from billing.money import EXACT, CurrencyError, require_rounded, round_money, validate_currency
from billing.pricebooks import (
    NoPriceBook,
    book_from_snapshot,
    book_snapshot,
    contracts_with_commitment,
    describe_price,
    effective_price_book_for,
)
from billing.tax import Customer, TaxDecision, TaxError, tax_for
from scheduler.models import Deployment
from tenants.context import Actor
from tenants.errors import Conflict, ServiceError
from tenants.models import Tenant, WebhookEndpoint
from tenants.services import audit_record

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
HUNDRED = Decimal(100)


# --- Periods ------------------------------------------------------------------------------------


def month_start(moment: date | datetime) -> date:
    """The first day of the (UTC) month `moment` falls in."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return moment.replace(day=1)


def next_month(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(period: date) -> date:
    return (period.replace(day=1) - timedelta(days=1)).replace(day=1)


@cache
def period_span(period: date) -> rating.Period:
    """The month as rating's half-open [start, end) in UTC."""
    end = next_month(period)
    return rating.Period(start=datetime(period.year, period.month, 1, tzinfo=UTC),
                         end=datetime(end.year, end.month, 1, tzinfo=UTC))


# --- Usage of a month ---------------------------------------------------------------------------


def _deployment_key(deployment_id: int) -> str:
    # Zero-padded, so rating's (string) ordering of lines is the deployments' creation order.
    return f"{deployment_id:012d}"


@dataclass
class TenantUsage:
    """A tenant's quantities on one month's invoice: the month's own, and late usage of earlier
    months (already invoiced), by the month it belongs to."""

    regular: list[rating.Quantity] = field(default_factory=list)
    late: dict[date, list[rating.Quantity]] = field(default_factory=lambda: defaultdict(list))


def usage_for(tenant_ids: Iterable[int], period: date) -> dict[int, TenantUsage]:
    """The rollups billed on `period`'s invoices of these tenants, summed per meter × deployment
    × tier: one grouped scan of the month, whose earliest hour per group also says which tenants
    have late usage of earlier months (rare); theirs is then read again, summed per month."""
    start = period_span(period).start
    meters = _meter_slugs()
    wanted = set(tenant_ids)
    rollups = UsageRollup.objects.filter(billing_period=period)
    if len(wanted) <= 1000:
        rollups = rollups.filter(tenant_id__in=wanted)  # else one scan of the month, filtered below
    keys = ("tenant_id", "deployment_id", "meter_id", "tier")
    usage: dict[int, TenantUsage] = defaultdict(TenantUsage)
    late_tenants = set()
    with transaction.atomic(), _settings_for_large_aggregates():
        rows = list(rollups.values_list(*keys).alias(first_hour=Min("hour"))
                    .annotate(has_late=ExpressionWrapper(Q(first_hour__lt=start), output_field=BooleanField()),
                              quantity=Sum("quantity")).order_by())
    for tenant_id, deployment_id, meter_id, tier, has_late, quantity in rows:
        if tenant_id not in wanted:
            continue
        if has_late:
            late_tenants.add(tenant_id)
        else:
            usage[tenant_id].regular.append(
                rating.Quantity(meters[meter_id], _deployment_key(deployment_id), tier or None, quantity))
    if late_tenants:
        by_month = (UsageRollup.objects.filter(billing_period=period, tenant_id__in=late_tenants)
                    .annotate(usage_month=TruncMonth("hour", tzinfo=UTC))
                    .values_list(*keys, "usage_month").annotate(quantity=Sum("quantity")).order_by())
        for tenant_id, deployment_id, meter_id, tier, usage_month, quantity in by_month:
            record = rating.Quantity(meters[meter_id], _deployment_key(deployment_id), tier or None, quantity)
            if month_start(usage_month) == period:
                usage[tenant_id].regular.append(record)
            else:
                usage[tenant_id].late[month_start(usage_month)].append(record)
    return usage


@contextmanager
def _settings_for_large_aggregates():
    """PostgreSQL, for the rest of the transaction: memory for hashing a whole month's groups (the
    default 4 MB spills them to disk) and no JIT (compiling costs more than it saves here)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute("SET LOCAL jit = off")
    yield


def _meter_slugs() -> dict[int, str]:
    return dict(Meter.objects.values_list("pk", "slug"))


def _among_tenants(tenant_ids: Iterable[int], field: str = "tenant_id") -> Q:
    """A filter that keeps at least these tenants: a short IN list, or for a chunk of thousands
    (sorted and nearly contiguous in the close) their id range — a query of constant size, where
    an IN list of thousands costs more to build and parse than to run. Callers drop the extra
    tenants a range lets in."""
    ids = list(tenant_ids)
    if len(ids) <= 64:
        return Q(**{f"{field}__in": ids})
    return Q(**{f"{field}__gte": min(ids), f"{field}__lte": max(ids)})


# --- Computing an invoice -----------------------------------------------------------------------


@dataclass
class Computed:
    """An invoice as rating and tax make it, before anything is written."""

    tenant: Tenant
    period: date
    book: rating.PriceBook
    lines: list[rating.Line]
    totals: rating.Totals
    tax: TaxDecision
    bill_to: dict

    @property
    def currency(self) -> str:
        return self.book.currency


@dataclass
class RunCache:
    """What one run (a close, a refresh) looks up once instead of per tenant."""

    books: dict = field(default_factory=dict)
    taxes: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # id(book) → (book, PriceBookSnapshot)
    price_texts: dict = field(default_factory=dict)  # (id(book), meter, tier) → describe_price


class ProfileFields(Protocol):
    """What an invoice reads of a tenant's BillingProfile (`_profiles_for` gives rows of these fields)."""

    legal_name: str
    address: str
    vat_id: str
    is_business: bool
    invoice_email: str


def _customer(tenant: Tenant, profile: ProfileFields | None) -> Customer:
    if profile is None:
        return Customer(country=tenant.billing_country, is_business=True, vat_id=None)
    return Customer(country=tenant.billing_country, is_business=profile.is_business, vat_id=profile.vat_id or None)


def _bill_to(tenant: Tenant, profile: ProfileFields | None) -> dict:
    return {"name": (profile.legal_name if profile and profile.legal_name else tenant.name),
            "address": profile.address if profile else "", "country": tenant.billing_country,
            "vat_id": profile.vat_id if profile else "", "is_business": profile.is_business if profile else True,
            "email": profile.invoice_email if profile else ""}


def _tax_decision(customer: Customer, cache: RunCache) -> TaxDecision:
    key = (customer.country, customer.is_business, customer.vat_id)
    if key not in cache.taxes:
        cache.taxes[key] = tax_for(seller_country=settings.SWITCHYARD_INVOICE_ISSUER_COUNTRY, customer=customer)
    return cache.taxes[key]


def _late_lines(tenant: Tenant, late: dict[date, list[rating.Quantity]], cache: RunCache) -> list[rating.Line]:
    """Adjustment lines for usage of earlier, already invoiced months: each month's late usage
    rated on top of what that month has billed so far, with the prices it was billed with."""
    lines = []
    for usage_period in sorted(late):
        earlier = (Invoice.objects.filter(tenant=tenant, period=usage_period).exclude(status=Invoice.Status.DRAFT)
                   .select_related("price_book").first())
        if earlier is not None and earlier.price_book is not None:
            book = book_from_snapshot(earlier.price_book.data)
        else:
            book = effective_price_book_for(tenant, usage_period, cache=cache.books)
        lines += rating.rate_late_usage(late[usage_period], _already_billed(tenant, usage_period), book,
                                        period_span(usage_period))
    return lines


def _already_billed(tenant: Tenant, usage_period: date) -> list[rating.Quantity]:
    """Every quantity invoiced for `usage_period` so far: its own invoice's usage lines and the
    adjustments for it on later (finalized) invoices."""
    lines = (InvoiceLine.objects.filter(tenant=tenant, kind=InvoiceLine.Kind.USAGE)
             .filter(Q(invoice__period=usage_period, is_adjustment=False) | Q(period_of_usage=usage_period))
             .exclude(invoice__status=Invoice.Status.DRAFT)
             .values_list("meter__slug", "deployment_id", "hardware_tier", "quantity"))
    return [rating.Quantity(meter, _deployment_key(deployment_id), tier or None, quantity)
            for meter, deployment_id, tier, quantity in lines]


def compute_invoice(*, tenant: Tenant, period: date, usage: TenantUsage, grants: list[rating.CreditGrant],
                    profile: ProfileFields | None, cache: RunCache) -> Computed:
    """Lines, credits, tax and totals of `tenant`'s invoice for `period`. Raises NoPriceBook,
    rating.RatingError / PriceError, CurrencyError or TaxError when it cannot be computed."""
    book = effective_price_book_for(tenant, period, cache=cache.books)
    lines = rating.rate(usage.regular, book)
    if usage.late:
        lines += _late_lines(tenant, usage.late, cache)
    decision = _tax_decision(_customer(tenant, profile), cache)
    usable = [grant for grant in grants if grant.currency == book.currency]
    totals = rating.invoice_totals(lines, usable, decision.rate_percent, currency=book.currency,
                                   period=period_span(period))
    return Computed(tenant=tenant, period=period, book=book, lines=lines, totals=totals, tax=decision,
                    bill_to=_bill_to(tenant, profile))


COMPUTE_ERRORS = (NoPriceBook, rating.RatingError, rating.PriceError, CurrencyError, TaxError)


def _grants_for(tenant_ids: Iterable[int]) -> dict[int, list[rating.CreditGrant]]:
    """Each tenant's grants with a positive balance (Σ of the ledger), as rating's CreditGrant."""
    wanted = set(tenant_ids)
    rows = (CreditGrant.objects.filter(_among_tenants(wanted)).annotate(balance=Sum("ledger__amount"))
            .filter(balance__gt=0))
    grants: dict[int, list[rating.CreditGrant]] = defaultdict(list)
    for grant in rows:
        if grant.tenant_id not in wanted:
            continue
        grants[grant.tenant_id].append(rating.CreditGrant(
            id=str(grant.pk), currency=grant.currency, available=grant.balance, effective_at=grant.effective_at,
            expires_at=grant.expires_at, priority=grant.priority))
    return grants


def _profiles_for(tenant_ids: Iterable[int]) -> dict[int, ProfileFields]:
    """The fields of each tenant's billing profile that an invoice uses (rows, not model objects:
    the close reads thousands)."""
    wanted = set(tenant_ids)
    rows = (BillingProfile.objects.filter(_among_tenants(wanted))
            .values_list("tenant_id", "legal_name", "address", "vat_id", "is_business", "invoice_email", named=True))
    return {row.tenant_id: row for row in rows if row.tenant_id in wanted}


# --- Writing lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DeploymentName:
    pk: int
    name: str


@dataclass
class _LineContext:
    meters: dict[str, Meter]
    deployments: dict[int, _DeploymentName]


def _line_context(computed: list[Computed]) -> _LineContext:
    """Meters by slug and the deployments' names (deleted ones too: invoices name them)."""
    names = (Deployment.all_objects.filter(_among_tenants(item.tenant.pk for item in computed))
             .values_list("pk", "name"))
    return _LineContext(meters={meter.slug: meter for meter in Meter.objects.all()},
                        deployments={pk: _DeploymentName(pk, name) for pk, name in names})


_USAGE_KIND, _SHORTFALL_KIND = InvoiceLine.Kind.USAGE.value, InvoiceLine.Kind.COMMITMENT_SHORTFALL.value


def _line_rows(invoice: Invoice, item: Computed, context: _LineContext, cache: "RunCache") -> list[dict]:
    """The invoice's lines as column values (attname → value), ready for `_insert_lines`."""
    rows = []
    for position, line in enumerate(item.lines):
        meter = context.meters.get(line.meter) if line.meter else None
        deployment = context.deployments.get(int(line.deployment)) if line.deployment else None
        usage_period = line.period_of_usage.start.date() if line.period_of_usage else None
        if line.kind == rating.USAGE:
            parts = [meter.name if meter else line.meter, deployment.name if deployment else "", line.hardware_tier]
            description = " · ".join(part for part in parts if part)
            if usage_period:
                description += f" — late usage of {usage_period:%B %Y}"
        else:
            description = line.description
        rows.append({
            "tenant_id": invoice.tenant_id, "public_id": uuid.uuid4(), "invoice_id": invoice.pk,
            "position": position,
            "kind": _USAGE_KIND if line.kind == rating.USAGE else _SHORTFALL_KIND,
            "description": description[:300], "meter_id": meter.pk if meter else None,
            "deployment_id": deployment.pk if deployment else None,
            "deployment_name": deployment.name if deployment else "", "hardware_tier": line.hardware_tier or "",
            "quantity": line.quantity, "unit": meter.unit if meter else "",
            # An adjustment was rated with that month's prices: `rating` says how, not today's price.
            "unit_price_description": "" if usage_period else _price_text(item, line, meter, cache),
            "amount": line.amount, "is_adjustment": usage_period is not None, "period_of_usage": usage_period,
            "rating": {"price_model": line.price_model, "price_hardware_tier": line.price_hardware_tier,
                       "charge_quantity": _text(line.charge_quantity), "charge_amount": _text(line.charge_amount),
                       "discount_percent": _text(line.discount_percent)} if line.kind == rating.USAGE else {},
        })
    return rows


def _price_text(item: Computed, line: rating.Line, meter: Meter | None, cache: "RunCache") -> str:
    if not line.meter:
        return ""
    key = (id(item.book), line.meter, line.price_hardware_tier)
    if key not in cache.price_texts:
        price = item.book.price_for(line.meter, line.price_hardware_tier)
        cache.price_texts[key] = describe_price(price, item.currency, meter.unit if meter else "")[:300]
    return cache.price_texts[key]


def _text(value: Decimal) -> str:
    return format(value, "f")


def _update_invoices(invoices: list[Invoice], fields: list[str]) -> None:
    """Save these fields of many invoices. PostgreSQL: COPY the new values into a temporary table
    and UPDATE … FROM it, one statement; elsewhere one UPDATE per invoice in one executemany.
    (Django's bulk_update builds a CASE per field and row, which costs far more than it runs.)"""
    if not invoices:
        return
    columns = [Invoice._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    table = Invoice._meta.db_table
    if connection.vendor != "postgresql":
        assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
        rows = [[column.get_db_prep_save(getattr(invoice, column.attname), connection) for column in columns]
                + [invoice.pk] for invoice in invoices]
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", rows)
        return
    names = ", ".join(["id", *(quote(column.column) for column in columns)])
    json_columns = {column.attname for column in columns if column.get_internal_type() == "JSONField"}
    with connection.cursor() as cursor:
        # Dropped at commit; the same shape as the invoice columns it carries.
        cursor.execute(f"CREATE TEMPORARY TABLE billing_invoice_new ON COMMIT DROP AS SELECT {names} FROM {table} "
                       f"WITH NO DATA")
        with cursor.cursor.copy(f"COPY billing_invoice_new ({names}) FROM STDIN") as copy:
            for invoice in invoices:
                copy.write_row([invoice.pk, *(orjson.dumps(getattr(invoice, column.attname)).decode()
                                              if column.attname in json_columns else getattr(invoice, column.attname)
                                              for column in columns)])
        assignments = ", ".join(f"{quote(column.column)} = new.{quote(column.column)}" for column in columns)
        cursor.execute(f"UPDATE {table} AS invoice SET {assignments} FROM billing_invoice_new AS new "
                       f"WHERE invoice.id = new.id")
        cursor.execute("DROP TABLE billing_invoice_new")


_LINE_FIELDS = [field for field in InvoiceLine._meta.concrete_fields if field.attname != "id"]


def _insert_lines(rows: list[dict]) -> None:
    """Insert line rows (from `_line_rows`). PostgreSQL: one COPY — the close writes six lines per
    tenant, and COPY costs a fraction of INSERT's per row; elsewhere bulk_create."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        InvoiceLine.objects.bulk_create([InvoiceLine(**row) for row in rows], batch_size=2000)
        return
    columns = ", ".join(connection.ops.quote_name(field.column) for field in _LINE_FIELDS)
    values_of = itemgetter(*(field.attname for field in _LINE_FIELDS))
    json_positions = [index for index, field in enumerate(_LINE_FIELDS) if field.get_internal_type() == "JSONField"]
    with connection.cursor() as cursor, \
            cursor.cursor.copy(f"COPY {InvoiceLine._meta.db_table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            values = list(values_of(row))
            for index in json_positions:
                values[index] = orjson.dumps(values[index]).decode()
            copy.write_row(values)


def _snapshot_row(book: rating.PriceBook, cache: RunCache) -> PriceBookSnapshot:
    # Books are built once per run (RunCache.books), so the same object means the same snapshot;
    # the book is kept beside it so that its id() cannot be reused by another object.
    known = cache.snapshots.get(id(book))
    if known is not None:
        return known[1]
    data = book_snapshot(book)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    row, _ = PriceBookSnapshot.objects.get_or_create(digest=digest, defaults={"data": data})
    cache.snapshots[id(book)] = (book, row)
    return row


def _apply_computed(invoice: Invoice, item: Computed, cache: RunCache, now: datetime) -> None:
    """Copy the computed amounts onto the (draft) invoice object; the caller saves it."""
    totals = item.totals
    invoice.currency = item.currency
    invoice.subtotal, invoice.credits_applied = totals.subtotal, totals.credits
    invoice.tax_rate, invoice.tax, invoice.total = totals.tax_rate_percent, totals.tax, totals.total
    invoice.tax_note = item.tax.invoice_note
    invoice.bill_to = item.bill_to
    invoice.price_book = _snapshot_row(item.book, cache)
    invoice.computed_at = now
    invoice.close_error = ""


# --- Drafts -------------------------------------------------------------------------------------

AMOUNT_FIELDS = ["currency", "subtotal", "credits_applied", "tax_rate", "tax", "total", "tax_note", "bill_to",
                 "price_book", "computed_at", "close_error"]


def _ensure_drafts(period: date, tenant_ids: list[int], *, claim: tuple[uuid.UUID, datetime] | None = None) -> None:
    """A draft invoice for each of these tenants that has none for `period` (races are harmless:
    the one-per-tenant-and-month constraint keeps the first). With `claim` (token, now), the new
    drafts are created already claimed by that run, which saves rewriting them at once (`_claim`).
    PostgreSQL: one INSERT … SELECT."""
    if not tenant_ids:
        return
    claimed = {}
    if claim is not None:
        claimed = {"invoicing_status": Invoice.InvoicingStatus.FINALIZING, "claim_token": claim[0],
                   "claimed_at": claim[1]}
    if connection.vendor != "postgresql":
        currencies = dict(Tenant.objects.filter(pk__in=tenant_ids).values_list("pk", "currency"))
        Invoice.objects.bulk_create([Invoice(tenant_id=tenant_id, period=period, currency=currencies[tenant_id],
                                             **claimed) for tenant_id in tenant_ids],
                                    ignore_conflicts=True, batch_size=2000)
        return
    # Every other column gets the value a new Invoice() has: the model stays the one source of defaults.
    template = Invoice(period=period, **claimed)
    fixed = [field for field in Invoice._meta.concrete_fields
             if field.attname not in ("id", "tenant_id", "public_id", "currency")]
    quote = connection.ops.quote_name
    columns = "tenant_id, public_id, currency" + "".join(f", {quote(field.column)}" for field in fixed)
    values = "".join(", %s" for _ in fixed)
    params = [field.get_db_prep_save(getattr(template, field.attname), connection) for field in fixed]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {Invoice._meta.db_table} ({columns}) SELECT t.id, gen_random_uuid(), t.currency"
                       f"{values} FROM {Tenant._meta.db_table} t WHERE t.id = ANY(%s) "
                       f"ON CONFLICT (tenant_id, period) DO NOTHING", [*params, list(tenant_ids)])


def invoice_refresh_draft(*, tenant: Tenant, period: date | None = None, now: datetime | None = None) -> Invoice:
    """Recompute `tenant`'s draft invoice for `period` (default: the current month) from the
    rollups. A finalized invoice, or a draft being finalized, is returned unchanged."""
    now = now or timezone.now()
    period = period or month_start(now)
    _ensure_drafts(period, [tenant.pk])
    refreshed = invoice_refresh_drafts(period=period, tenant_ids=[tenant.pk], now=now)
    return refreshed.get(tenant.pk) or Invoice.objects.get(tenant=tenant, period=period)


def invoice_refresh_drafts(*, period: date, tenant_ids: list[int] | None = None, now: datetime | None = None,
                           cache: RunCache | None = None, chunk_size: int = 1000) -> dict[int, Invoice]:
    """Recompute the drafts of `period` (of these tenants, else of every tenant with usage in it),
    one transaction per chunk of tenants. Drafts being finalized (claimed) are left alone."""
    now, cache = now or timezone.now(), cache or RunCache()
    if tenant_ids is None:
        tenant_ids = sorted(UsageRollup.objects.filter(billing_period=period).values_list("tenant_id", flat=True)
                            .distinct().order_by())
        _ensure_drafts(period, tenant_ids)
    refreshed = {}
    for start in range(0, len(tenant_ids), chunk_size):
        refreshed.update(_refresh_chunk(period, tenant_ids[start:start + chunk_size], now, cache))
    return refreshed


def _refresh_chunk(period: date, tenant_ids: list[int], now: datetime, cache: RunCache) -> dict[int, Invoice]:
    refreshed = {}
    with transaction.atomic():
        drafts = list(Invoice.objects.select_for_update(of=("self",)).select_related("tenant")
                      .filter(period=period, tenant_id__in=tenant_ids, status=Invoice.Status.DRAFT,
                              invoicing_status=Invoice.InvoicingStatus.IDLE).order_by("pk"))
        if not drafts:
            return {}
        ids = [draft.tenant_id for draft in drafts]
        usage, grants, profiles = usage_for(ids, period), _grants_for(ids), _profiles_for(ids)
        computed = {}
        for draft in drafts:
            try:
                computed[draft.pk] = compute_invoice(tenant=draft.tenant, period=period, usage=usage[draft.tenant_id],
                                                     grants=grants[draft.tenant_id],
                                                     profile=profiles.get(draft.tenant_id), cache=cache)
            except COMPUTE_ERRORS as error:
                draft.close_error = str(error)[:500]
                draft.save(update_fields=["close_error"])
        context = _line_context(list(computed.values()))
        InvoiceLine.objects.filter(invoice_id__in=list(computed)).delete()
        rows = []
        for draft in drafts:
            if draft.pk in computed:
                _apply_computed(draft, computed[draft.pk], cache, now)
                rows += _line_rows(draft, computed[draft.pk], context, cache)
                refreshed[draft.tenant_id] = draft
        _insert_lines(rows)
        _update_invoices(list(refreshed.values()), AMOUNT_FIELDS)
    return refreshed


# --- Numbers ------------------------------------------------------------------------------------


def invoice_series() -> str:
    return settings.SWITCHYARD_INVOICE_PREFIX


def credit_note_series() -> str:
    return f"{settings.SWITCHYARD_INVOICE_PREFIX}-CN"


def take_numbers(series: str, year: int, count: int) -> list[str]:
    """The next `count` numbers of the series in `year` (e.g. SY-2026-000123), gapless: the counter
    row stays locked until the caller's transaction ends, and rolls back with it."""
    if count == 0:
        return []
    DocumentSequence.objects.bulk_create([DocumentSequence(series=series, year=year)], ignore_conflicts=True)
    sequence = DocumentSequence.objects.select_for_update().get(series=series, year=year)
    first = sequence.last_number + 1
    sequence.last_number += count
    sequence.save(update_fields=["last_number"])
    return [f"{series}-{year}-{number:06d}" for number in range(first, first + count)]


# --- The close ----------------------------------------------------------------------------------


def _exclusive_billing_period_lock() -> None:
    """Wait for in-flight ingestion of closable months to commit and hold it off until this
    transaction ends: the EXCLUSIVE side of the advisory lock ingestion holds SHARED from before it
    reads ClosedPeriod until it commits (billing.metering.BILLING_PERIOD_LOCK_KEY). SQLite has one
    writer at a time anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BILLING_PERIOD_LOCK_KEY])


def tenants_to_close(period: date) -> list[int]:
    """Tenants whose `period` must be closed: unclosed usage, an open draft, or a contract with a
    minimum commitment (billed without usage) — for tenants that existed then."""
    closed = ClosedPeriod.objects.filter(period=period).values("tenant_id")
    with_usage = set(Tenant.objects.filter(Exists(UsageRollup.objects.filter(tenant=OuterRef("pk"),
                                                                             billing_period=period)))
                     .exclude(pk__in=closed).values_list("pk", flat=True))
    drafts = set(Invoice.objects.filter(period=period, status=Invoice.Status.DRAFT).values_list("tenant_id", flat=True))
    committed = {book.tenant_id for book in contracts_with_commitment(period)}
    committed = set(Tenant.objects.filter(pk__in=committed, created_at__lt=period_span(period).end)
                    .exclude(pk__in=closed).values_list("pk", flat=True))
    return sorted(with_usage | drafts | committed)


def periods_to_close(now: datetime) -> list[date]:
    """The months before the current one within the look-back (tenants_to_close says who is due)."""
    current = month_start(now)
    periods, period = [], current
    for _ in range(settings.SWITCHYARD_INVOICE_LOOKBACK_MONTHS):
        period = previous_month(period)
        periods.append(period)
    return sorted(periods)


@dataclass
class CloseReport:
    finalized: list[str] = field(default_factory=list)  # invoice numbers
    skipped: int = 0  # claimed by another run, or already final
    failed: dict[int, str] = field(default_factory=dict)  # tenant id → why


def _claim(period: date, tenant_ids: list[int], token: uuid.UUID, now: datetime, *, every_draft: bool = False) -> int:
    """Claim these tenants' drafts of `period` for this run, committed at once: new drafts are
    created claimed; existing ones are claimed with one conditional UPDATE — idle ones, and ones
    whose claim is stale (a crashed run's). `every_draft`: the UPDATE takes every draft of the
    month (the close, whose `tenant_ids` include them all) rather than a list of thousands.
    How many drafts this run holds."""
    _ensure_drafts(period, tenant_ids, claim=(token, now))
    stale = now - timedelta(minutes=settings.SWITCHYARD_INVOICE_CLAIM_STALE_MINUTES)
    drafts = Invoice.objects.filter(period=period, status=Invoice.Status.DRAFT)
    if not every_draft:
        drafts = drafts.filter(tenant_id__in=tenant_ids)
    (drafts.filter(Q(invoicing_status=Invoice.InvoicingStatus.IDLE) | Q(claimed_at__lt=stale))
     .update(invoicing_status=Invoice.InvoicingStatus.FINALIZING, claimed_at=now, claim_token=token))
    return Invoice.objects.filter(period=period, claim_token=token, status=Invoice.Status.DRAFT).count()


def period_close(*, period: date | None = None, now: datetime | None = None, chunk_size: int = 1000) -> CloseReport:
    """Finalize every invoice of `period` (default: every month due, see `periods_to_close`).

    Idempotent: a closed month has nothing left to close; two runs at once claim disjoint
    drafts. See the module docstring for the steps and the guard.
    """
    now = now or timezone.now()
    current = month_start(now)
    periods = [period] if period else periods_to_close(now)
    report, cache = CloseReport(), RunCache()
    for month in periods:
        if month >= current:
            raise ServiceError(f"{month:%Y-%m} is not over yet: only past months can be closed.", field="period")
        tenant_ids = tenants_to_close(month)
        token = uuid.uuid4()
        claimed = _claim(month, tenant_ids, token, now, every_draft=True)
        report.skipped += max(0, len(tenant_ids) - claimed)
        if claimed:
            _close_claimed(month, token, now, cache, report, chunk_size)
    credit_expire_due(now=now)
    return report


def _close_periods(period: date, tenant_ids: list[int], now: datetime) -> None:
    """Close `period` for these tenants: ClosedPeriod rows written under the EXCLUSIVE billing-period
    lock, in their own transaction. Once it commits, every event of the month that ingestion had
    in flight is in the rollups, and every later one is billed on the open month: the month's
    rollups of these tenants no longer change, so they can be read (and re-read by a retry)."""
    with transaction.atomic():
        _exclusive_billing_period_lock()
        if connection.vendor == "postgresql":  # one statement instead of building ten thousand objects
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {ClosedPeriod._meta.db_table} (tenant_id, period, closed_at) "
                               f"SELECT tenant_id, %s, %s FROM unnest(%s::bigint[]) AS tenant_id "
                               f"ON CONFLICT DO NOTHING", [period, now, tenant_ids])
            return
        ClosedPeriod.objects.bulk_create([ClosedPeriod(tenant_id=tenant_id, period=period, closed_at=now)
                                          for tenant_id in tenant_ids], ignore_conflicts=True, batch_size=5000)


def _close_claimed(period: date, token: uuid.UUID, now: datetime, cache: RunCache, report: CloseReport,
                   chunk_size: int) -> None:
    """Finalize the drafts this run claimed with `token`: close the month for their tenants, read
    their rollups once, then finalize them chunk by chunk, one transaction per chunk."""
    tenant_ids = sorted(Invoice.objects.filter(period=period, claim_token=token, status=Invoice.Status.DRAFT)
                        .values_list("tenant_id", flat=True))
    _close_periods(period, tenant_ids, now)
    usage = usage_for(tenant_ids, period)
    for start in range(0, len(tenant_ids), chunk_size):
        _finalize_chunk(period, token, tenant_ids[start:start + chunk_size], usage, now, cache, report)


def _finalize_chunk(period: date, token: uuid.UUID, tenant_ids: list[int], usage: dict[int, TenantUsage],
                    now: datetime, cache: RunCache, report: CloseReport) -> None:
    """One transaction: rate, credit, tax, number and write these tenants' invoices (module docstring)."""
    failed: dict[int, str] = {}
    with transaction.atomic():
        drafts = list(Invoice.objects.select_for_update(of=("self",)).select_related("tenant")
                      # A slice of the claimed tenants, sorted: their range holds no other claimed draft.
                      .filter(_among_tenants(tenant_ids), period=period, claim_token=token,
                              status=Invoice.Status.DRAFT).order_by("tenant_id"))
        ids = [draft.tenant_id for draft in drafts]
        grants, profiles = _grants_for(ids), _profiles_for(ids)
        computed: dict[int, Computed] = {}
        for draft in drafts:
            try:
                computed[draft.pk] = compute_invoice(tenant=draft.tenant, period=period, usage=usage[draft.tenant_id],
                                                     grants=grants[draft.tenant_id],
                                                     profile=profiles.get(draft.tenant_id), cache=cache)
            except COMPUTE_ERRORS as error:
                failed[draft.pk] = str(error)[:500]
        done = [draft for draft in drafts if draft.pk in computed]
        numbers = take_numbers(invoice_series(), now.year, len(done))
        context = _line_context(list(computed.values()))
        # A draft's lines are replaced; one never computed (no computed_at) has none to delete.
        InvoiceLine.objects.filter(invoice_id__in=[draft.pk for draft in done if draft.computed_at]).delete()
        rows, ledger = [], []
        due = now.date() + timedelta(days=settings.SWITCHYARD_INVOICE_PAYMENT_DAYS)
        for draft, number in zip(done, numbers, strict=True):
            item = computed[draft.pk]
            _apply_computed(draft, item, cache, now)
            draft.status, draft.number, draft.issued_at, draft.due_date = Invoice.Status.FINALIZED, number, now, due
            draft.invoicing_status, draft.claim_token = Invoice.InvoicingStatus.IDLE, None
            rows += _line_rows(draft, item, context, cache)
            ledger += _credit_entries(draft, item, grants[draft.tenant_id], now)
        _insert_lines(rows)
        CreditLedgerEntry.objects.bulk_create(ledger, batch_size=2000)
        _update_invoices(done, [*AMOUNT_FIELDS, "status", "number", "issued_at", "due_date", "invoicing_status",
                                "claim_token"])
        _emit_finalized(done)
        # The drafts that could not be computed stay drafts, claim released, with the reason; the
        # next run retries them (their month stays closed: its rollups are what they were).
        for invoice_id, reason in failed.items():
            Invoice.objects.filter(pk=invoice_id).update(invoicing_status=Invoice.InvoicingStatus.IDLE,
                                                         claim_token=None, close_error=reason)
    for invoice_id, reason in failed.items():
        logger.error("invoice %s of %s could not be finalized: %s", invoice_id, period, reason)
        report.failed[invoice_id] = reason
    report.finalized += numbers


def _credit_entries(invoice: Invoice, item: Computed, grants: list[rating.CreditGrant],
                    now: datetime) -> list[CreditLedgerEntry]:
    """Ledger rows for the credits this invoice used, and for what is left of grants that can pay
    no later invoice (they expire by the end of this month)."""
    entries = []
    used = {application.grant_id: application.amount for application in item.totals.credit_applications}
    for grant_id, amount in used.items():
        entries.append(CreditLedgerEntry(tenant_id=invoice.tenant_id, grant_id=int(grant_id), invoice=invoice,
                                         kind=CreditLedgerEntry.Kind.APPLICATION, amount=-amount,
                                         currency=invoice.currency, created_at=now,
                                         note=f"applied to {invoice.number}"))
    end = period_span(invoice.period).end
    for grant in grants:
        left = grant.available - used.get(grant.id, ZERO)
        if grant.expires_at is not None and grant.expires_at <= end and left > 0:
            entries.append(CreditLedgerEntry(tenant_id=invoice.tenant_id, grant_id=int(grant.id),
                                             kind=CreditLedgerEntry.Kind.EXPIRY, amount=-left,
                                             currency=grant.currency, created_at=now,
                                             note=f"expired {grant.expires_at:%Y-%m-%d %H:%M} UTC"))
    return entries


def _emit_finalized(invoices: list[Invoice]) -> None:
    """invoice.finalized to the tenants' webhook endpoints, in this transaction (tenants.webhooks
    writes the deliveries, sent after commit). One query finds who listens at all."""
    from tenants.webhooks import webhook_emit

    listening = set(WebhookEndpoint.objects.filter(_among_tenants(invoice.tenant_id for invoice in invoices),
                                                   is_active=True).values_list("tenant_id", flat=True))
    for invoice in invoices:
        if invoice.tenant_id in listening:
            webhook_emit(tenant=invoice.tenant, event_type="invoice.finalized", data=invoice_event_data(invoice))


def invoice_event_data(invoice: Invoice) -> dict:
    return {"invoice": str(invoice.public_id), "number": invoice.number, "period": invoice.period.isoformat(),
            "currency": invoice.currency, "subtotal": _text(invoice.subtotal),
            "credits_applied": _text(invoice.credits_applied), "tax": _text(invoice.tax),
            "total": _text(invoice.total), "due_date": invoice.due_date.isoformat() if invoice.due_date else None}


def invoice_finalize(*, invoice: Invoice, now: datetime | None = None) -> Invoice:
    """Finalize one draft now (the back office's action): the same path as the close, for one
    tenant. Only a month that is over can be finalized. ServiceError when it cannot be."""
    now = now or timezone.now()
    if invoice.period >= month_start(now):
        raise Conflict(f"{invoice.period:%B %Y} is not over yet: its invoice is finalized after the month ends.")
    token = uuid.uuid4()
    if not _claim(invoice.period, [invoice.tenant_id], token, now):
        invoice.refresh_from_db()
        if invoice.status != Invoice.Status.DRAFT:
            raise Conflict(f"Invoice {invoice} is already {invoice.status}.")
        raise Conflict("Another run is finalizing this invoice right now (see its claimed_at).")
    report = CloseReport()
    _close_claimed(invoice.period, token, now, RunCache(), report, chunk_size=1)
    invoice.refresh_from_db()
    if report.failed:
        raise ServiceError(f"The invoice could not be finalized: {invoice.close_error}")
    return invoice


# --- Credits ------------------------------------------------------------------------------------


def credit_grant_create(*, actor: Actor, kind: str, amount: Decimal, currency: str | None = None,
                        effective_at: datetime | None = None, expires_at: datetime | None = None,
                        priority: int = rating.DEFAULT_CREDIT_PRIORITY, description: str = "") -> CreditGrant:
    """Grant credit to the actor's tenant: the grant and its first ledger entry, together."""
    tenant = actor.tenant
    currency = currency or tenant.currency
    try:
        validate_currency(currency)
        require_rounded(amount, currency, "amount")
    except CurrencyError as error:
        raise ServiceError(str(error), field="amount") from None
    if currency != tenant.currency:
        raise ServiceError(f"{tenant.name} is billed in {tenant.currency}: a credit in {currency} could never be "
                           f"spent.", field="currency")
    if amount <= 0:
        raise ServiceError("A credit grant's amount must be greater than zero.", field="amount")
    if kind not in CreditGrant.Kind.values:
        raise ServiceError(f"kind must be one of {', '.join(CreditGrant.Kind.values)}.", field="kind")
    effective_at = effective_at or timezone.now()
    if expires_at is not None and expires_at <= effective_at:
        raise ServiceError("A grant must expire after it takes effect.", field="expires_at")
    if not 0 <= priority <= 100:
        raise ServiceError("priority is 0–100 (lower is spent first).", field="priority")
    with transaction.atomic():
        grant = CreditGrant.objects.create(tenant=tenant, kind=kind, amount=amount, currency=currency,
                                           effective_at=effective_at, expires_at=expires_at, priority=priority,
                                           description=description, created_by=actor.user)
        CreditLedgerEntry.objects.create(tenant=tenant, grant=grant, kind=CreditLedgerEntry.Kind.GRANT, amount=amount,
                                         currency=currency, note=description[:300])
        audit_record(actor=actor, action="credit_grant.create", obj=grant,
                     changes={"kind": kind, "amount": _text(amount), "currency": currency,
                              "expires_at": expires_at.isoformat() if expires_at else None})
    return grant


def credit_expire_due(*, now: datetime | None = None) -> int:
    """Expiry entries for what is left of grants that expired and can pay no open invoice any
    more (their last month is closed, or had nothing to invoice). How many were written."""
    now = now or timezone.now()
    current = month_start(now)
    grants = (CreditGrant.objects.filter(expires_at__lte=period_span(current).start)
              .annotate(balance=Sum("ledger__amount")).filter(balance__gt=0))
    written = 0
    for grant in grants:
        last_month = month_start(grant.expires_at - timedelta(microseconds=1))
        if Invoice.objects.filter(tenant_id=grant.tenant_id, status=Invoice.Status.DRAFT,
                                  period__lte=last_month).exists():
            continue  # an invoice it may still pay is open
        CreditLedgerEntry.objects.create(tenant_id=grant.tenant_id, grant=grant, kind=CreditLedgerEntry.Kind.EXPIRY,
                                         amount=-grant.balance, currency=grant.currency, created_at=now,
                                         note=f"expired {grant.expires_at:%Y-%m-%d %H:%M} UTC")
        written += 1
    return written


# --- After finalization: void, payments, credit notes -------------------------------------------


def _locked(invoice: Invoice) -> Invoice:
    return Invoice.objects.select_for_update().get(pk=invoice.pk)


def invoice_amounts_settled(invoice: Invoice) -> tuple[Decimal, Decimal]:
    """(Σ payments, Σ credit notes) of the invoice."""
    paid = Payment.objects.filter(invoice=invoice).aggregate(total=Sum("amount"))["total"] or ZERO
    credited = CreditNote.objects.filter(invoice=invoice).aggregate(total=Sum("amount"))["total"] or ZERO
    return paid, credited


def _settle_if_covered(invoice: Invoice, now: datetime) -> None:
    paid, credited = invoice_amounts_settled(invoice)
    if invoice.status == Invoice.Status.FINALIZED and paid >= invoice.total - credited:
        invoice.status, invoice.paid_at = Invoice.Status.PAID, now
        invoice.save(update_fields=["status", "paid_at"])


@transaction.atomic
def invoice_void(*, actor: Actor, invoice: Invoice, reason: str, now: datetime | None = None) -> Invoice:
    """Cancel a finalized, unpaid invoice: nothing is owed on it any more, and the credits it used
    go back to their grants (reversal entries). Lines and amounts stay as they were."""
    now = now or timezone.now()
    invoice = _locked(invoice)
    if not reason.strip():
        raise ServiceError("Say why the invoice is voided.", field="reason")
    if invoice.status != Invoice.Status.FINALIZED:
        raise Conflict(f"Only a finalized, unpaid invoice can be voided; {invoice} is {invoice.status}.")
    if Payment.objects.filter(invoice=invoice).exists():
        raise Conflict(f"{invoice} has payments recorded: issue a credit note (and refund) instead of voiding it.")
    invoice.status, invoice.voided_at, invoice.void_reason = Invoice.Status.VOID, now, reason[:300]
    invoice.save(update_fields=["status", "voided_at", "void_reason"])
    applied = CreditLedgerEntry.objects.filter(invoice=invoice, kind=CreditLedgerEntry.Kind.APPLICATION)
    CreditLedgerEntry.objects.bulk_create([
        CreditLedgerEntry(tenant_id=invoice.tenant_id, grant_id=entry.grant_id, invoice=invoice,
                          kind=CreditLedgerEntry.Kind.REVERSAL, amount=-entry.amount, currency=entry.currency,
                          created_at=now, note=f"{invoice.number} voided")
        for entry in applied])
    audit_record(actor=actor, action="invoice.void", obj=invoice, changes={"reason": reason[:300]})
    return invoice


@transaction.atomic
def payment_record(*, actor: Actor, invoice: Invoice, amount: Decimal, received_on: date, reference: str,
                   now: datetime | None = None) -> Payment:
    """Record money received for an invoice; it becomes paid once payments cover total − credit notes."""
    now = now or timezone.now()
    invoice = _locked(invoice)
    if invoice.status not in (Invoice.Status.FINALIZED, Invoice.Status.PAID):
        raise Conflict(f"Payments are recorded against finalized invoices; {invoice} is {invoice.status}.")
    try:
        require_rounded(amount, invoice.currency, "amount")
    except CurrencyError as error:
        raise ServiceError(str(error), field="amount") from None
    if amount <= 0:
        raise ServiceError("A payment's amount must be greater than zero.", field="amount")
    if not reference.strip():
        raise ServiceError("Give the payment's reference (bank reference, transaction id).", field="reference")
    payment = Payment.objects.create(tenant_id=invoice.tenant_id, invoice=invoice, amount=amount,
                                     currency=invoice.currency, received_on=received_on, reference=reference,
                                     recorded_by=actor.user, created_at=now)
    _settle_if_covered(invoice, now)
    audit_record(actor=actor, action="payment.record", obj=invoice,
                 changes={"amount": _text(amount), "reference": reference, "received_on": received_on.isoformat()})
    return payment


@transaction.atomic
def credit_note_issue(*, actor: Actor, invoice: Invoice, lines: list[tuple[str, Decimal]], reason: str,
                      now: datetime | None = None) -> CreditNote:
    """A numbered correction of a finalized invoice: `lines` are net amounts; tax is added at the
    invoice's rate (rounded once, half-up). It reduces what is owed; the invoice is unchanged."""
    now = now or timezone.now()
    invoice = _locked(invoice)
    if invoice.status not in (Invoice.Status.FINALIZED, Invoice.Status.PAID):
        raise Conflict(f"Credit notes correct finalized invoices; {invoice} is {invoice.status}.")
    if not reason.strip():
        raise ServiceError("Say why the credit note is issued.", field="reason")
    if not lines:
        raise ServiceError("A credit note needs at least one line.", field="lines")
    for description, amount in lines:
        try:
            require_rounded(amount, invoice.currency, f"line {description!r}")
        except CurrencyError as error:
            raise ServiceError(str(error), field="lines") from None
        if amount <= 0 or not description.strip():
            raise ServiceError("Each line needs a description and an amount greater than zero.", field="lines")
    with localcontext(EXACT):
        subtotal = sum((amount for _description, amount in lines), ZERO)
        tax = round_money(subtotal * invoice.tax_rate / HUNDRED, invoice.currency)
    _paid, credited = invoice_amounts_settled(invoice)
    if credited + subtotal + tax > invoice.total:
        raise ServiceError(f"That credits {subtotal + tax} {invoice.currency}, but only "
                           f"{invoice.total - credited} {invoice.currency} of {invoice} is left to credit.",
                           field="lines")
    number = take_numbers(credit_note_series(), now.year, 1)[0]
    note = CreditNote.objects.create(
        tenant_id=invoice.tenant_id, invoice=invoice, number=number, currency=invoice.currency, reason=reason[:300],
        lines=[{"description": description, "amount": _text(amount)} for description, amount in lines],
        subtotal=subtotal, tax=tax, amount=subtotal + tax, issued_by=actor.user, issued_at=now)
    _settle_if_covered(invoice, now)
    audit_record(actor=actor, action="credit_note.issue", obj=invoice,
                 changes={"number": number, "amount": _text(note.amount), "reason": reason[:300]})
    return note


# --- Previews (for budgets and dashboards) --------------------------------------------------------


def invoice_preview(tenant: Tenant, period: date) -> Computed:
    """What `tenant`'s invoice for `period` would say if it were computed now (nothing is written).
    Raises the COMPUTE_ERRORS when it cannot be computed."""
    return compute_invoice(tenant=tenant, period=period, usage=usage_for([tenant.pk], period)[tenant.pk],
                           grants=_grants_for([tenant.pk])[tenant.pk],
                           profile=_profiles_for([tenant.pk]).get(tenant.pk), cache=RunCache())


def spend_to_date(tenant: Tenant, period: date) -> Decimal:
    """The month's charges so far: the preview's subtotal (before credits and tax), in the
    invoice currency."""
    return invoice_preview(tenant, period).totals.subtotal

