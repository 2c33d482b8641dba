"""Metering: meters, raw usage events, hourly usage rollups, per-minute latency rollups, and the
collectors' bookkeeping. Money (price books, credits, budgets, invoices) follows in this app.

Invariants:
- A usage event is stored once per (`source`, `event_id`) — a database constraint.
- Usage rollups change only in the transaction that stores the events they count, so
  Σ rollup quantities = the meters' aggregation of the raw events, always.
- `billing_period` says which monthly invoice a quantity goes on: the month of the event,
  or — for an event that arrives after that month was closed for its tenant — the month
  that was open when it arrived (an adjustment naming the month it belongs to).
"""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler.models import Deployment, Replica
from tenants.models import Tenant, TenantOwned, User


class Meter(models.Model):
    """An aggregation of usage events into a billable quantity.

    Events of `event_type` contribute `data[value_property]` (or 1 for `count`), aggregated by
    `aggregation` per tenant × deployment × tier × hour, and further by the `dimensions` named
    (each a key of the event's `data`). Built-in meters are seeded by a migration.
    """

    class Aggregation(models.TextChoices):
        SUM = "sum"
        COUNT = "count"
        MAX = "max"
        UNIQUE_COUNT = "unique_count", "Unique count"
        LATEST = "latest"

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=100)
    unit = models.CharField(max_length=40, help_text='What one unit is, e.g. "token", "accelerator-second".')
    description = models.CharField(max_length=300, blank=True)
    event_type = models.CharField(max_length=100, help_text="The CloudEvents `type` this meter counts.")
    aggregation = models.CharField(max_length=12, choices=Aggregation.choices)
    value_property = models.CharField(max_length=64, blank=True,
                                      help_text="The key of the event's `data` aggregated; empty for count.")
    dimensions = models.JSONField(default=list, blank=True,
                                  help_text='Keys of `data` to group by besides the tier, e.g. ["region"].')
    per_tier = models.BooleanField(default=False, help_text="Grouped by the hardware tier in `data.tier`.")
    built_in = models.BooleanField(default=False, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(aggregation__in=["sum", "count", "max", "unique_count", "latest"]),
                                   name="meter_aggregation_valid"),
            models.CheckConstraint(condition=Q(aggregation="count") | ~Q(value_property=""),
                                   name="meter_value_property_needed"),
        ]

    def __str__(self) -> str:
        return self.slug


class UsageEvent(models.Model):
    """One metered fact, CloudEvents-shaped. Append-only; purged after the retention period.

    Written in bulk by `billing.ingest` (COPY + INSERT … ON CONFLICT on PostgreSQL), never row by
    row. Indexes are few on purpose: every one costs on the ingest path. For the same reason the
    foreign keys have no database constraint (its per-row check cost a third of the insert, measured
    with `python -m bench ingest`): the ingest service resolves the deployment and its tenant in the
    same transaction, deployments are only soft-deleted, and PROTECT is still enforced by Django.
    """

    source = models.CharField(max_length=255)
    event_id = models.CharField(max_length=255, help_text="The CloudEvents `id`.")
    type = models.CharField(max_length=100)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", db_index=False,
                               db_constraint=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+", db_index=False,
                                   db_constraint=False)
    time = models.DateTimeField(help_text="When it happened (the event's `time`).")
    received_at = models.DateTimeField(default=timezone.now)
    billing_period = models.DateField(help_text="First day of the month whose invoice bills it.")
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "event_id"], name="usage_event_once")]
        indexes = [models.Index(fields=["deployment", "time"], name="usage_event_deployment_time")]

    def __str__(self) -> str:
        return f"{self.source} {self.event_id}"


class UsageRollup(models.Model):
    """A meter's quantity for tenant × deployment × tier × dimensions × hour, per billing period.

    Maintained incrementally in the transaction that stores the events (see the module
    docstring); `event_count` is how many events it aggregates, `latest_time` the time of the
    event a `latest` meter took its value from.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+", db_index=False)
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+", db_index=False)
    tier = models.CharField(max_length=60, blank=True, help_text="Hardware tier slug; empty when not per tier.")
    dimensions_key = models.CharField(max_length=300, blank=True,
                                      help_text="The dimensions as canonical text (key=value|…); part of the key.")
    dimensions = models.JSONField(default=dict, blank=True)
    hour = models.DateTimeField()
    billing_period = models.DateField()
    quantity = models.DecimalField(max_digits=30, decimal_places=9)
    event_count = models.BigIntegerField(default=0)
    latest_time = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "meter", "tier", "dimensions_key", "hour", "billing_period"],
                name="usage_rollup_one_per_key"),
        ]
        indexes = [models.Index(fields=["tenant", "billing_period", "meter"], name="usage_rollup_period"),
                   models.Index(fields=["tenant", "hour"], name="usage_rollup_tenant_hour")]

    def __str__(self) -> str:
        return f"{self.meter_id} {self.deployment_id} {self.tier} {self.hour:%Y-%m-%d %H}: {self.quantity}"


class LatencyHistograms(models.Model):
    """Requests finished and the merged TTFT / TPOT / E2E histograms of one deployment over a span.

    Each histogram is `{"le": [upper bounds…], "counts": [per-bucket counts, +Inf last], "sum": s}`
    with vLLM's bucket bounds, so histograms of any window merge by adding counts.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+", db_index=False)
    request_count = models.BigIntegerField(default=0)
    ttft = models.JSONField(default=dict)
    tpot = models.JSONField(default=dict)
    e2e = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True


class LatencyRollup(LatencyHistograms):
    """Per deployment × minute (LatencyHistograms)."""

    minute = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "minute"], name="latency_rollup_one_per_minute")]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.minute:%Y-%m-%d %H:%M}: {self.request_count} requests"


class LatencyHourRollup(LatencyHistograms):
    """Per deployment × hour: the merge of that hour's LatencyRollup minutes, so long windows read
    sixty times fewer rows.

    Invariant: for every (deployment, hour), `request_count` is the Σ of the hour's minute rows and
    each histogram is `billing.latency.merge` of theirs (bucket counts exactly; `sum` up to float
    rounding, which no percentile reads). The scrape collector keeps it by adding each delta to
    the minute row and to this row in one transaction (`billing.collectors.latency_delta_add`).
    """

    hour = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "hour"], name="latency_hour_rollup_one_per_hour")]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.hour:%Y-%m-%d %H}h: {self.request_count} requests"


class ClosedPeriod(models.Model):
    """A tenant's month that no longer takes usage: events for it that arrive later are billed
    on the open month as adjustments. Written when the month's invoice is finalized."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    period = models.DateField(help_text="First day of the month.")
    closed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "period"], name="closed_period_once")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.period:%Y-%m} closed"


class CollectorWatermark(models.Model):
    """How far a collector has committed its work (e.g. the last closed minute metered), so a run
    that was killed is caught up by the next one."""

    name = models.CharField(max_length=64, unique=True)
    position = models.DateTimeField()
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class ScrapeState(models.Model):
    """The last counter and histogram values scraped from one replica, to take deltas from.

    Updated in the same transaction as the events and latency rollups the deltas became, so a
    scrape is counted once however often it is retried.
    """

    replica = models.OneToOneField(Replica, on_delete=models.CASCADE, related_name="+")
    scraped_at = models.DateTimeField()
    samples = models.JSONField(default=dict, help_text="Counter and histogram values, with their `_created`.")

    def __str__(self) -> str:
        return f"scrape state of {self.replica_id} at {self.scraped_at}"


# ==============================================================================================
# Money: billing profiles, price books, credits, invoices, payments, credit notes.
#
# Invariants (docs/billing.md):
# - One invoice per tenant and month (a constraint). A draft is recomputed from the rollups; a
#   finalized invoice never changes: services check its status under a row lock, the admin shows
#   it read-only, and database triggers (billing/db_guards.py) refuse changes to its amounts and
#   lines. Status moves on (paid, void); corrections are credit notes.
# - Amounts are Decimal in the row's currency, rounded once by billing.rating (half-up, minor
#   units): total = subtotal − credits_applied + tax, exactly.
# - Credit balances are the sum of an append-only ledger; nothing edits a ledger row.
# ==============================================================================================

MONEY = {"max_digits": 20, "decimal_places": 4}
QUANTITY = {"max_digits": 30, "decimal_places": 9}
# Per-token prices are tiny (0.000000150000): at least 12 decimal places are kept, here 15.
UNIT_PRICE = {"max_digits": 30, "decimal_places": 15}


class BillingProfile(models.Model):
    """Who the invoices are addressed to, and what decides their tax (country, VAT id, business)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing_profile")
    legal_name = models.CharField(max_length=200, blank=True, help_text="Empty: the tenant's name.")
    address = models.TextField(blank=True)
    vat_id = models.CharField(max_length=32, blank=True, verbose_name="VAT id",
                              help_text="With its country prefix, e.g. DE123456789.")
    is_business = models.BooleanField(default=True, help_text="A business (B2B) rather than a consumer.")
    invoice_email = models.EmailField(blank=True, help_text="Where invoices are sent; empty: the owners.")
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"billing profile of {self.tenant}"


class PriceBook(models.Model):
    """A currency and its prices: the default book of that currency, or a tenant's contract.

    A contract (tenant set) overrides the default book's prices meter by meter (and hardware
    tier by tier), and may add a discount and a minimum monthly commitment. Its optional
    effective dates say which months it bills; the default book has none.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, unique=True)
    currency = models.CharField(max_length=3, help_text="ISO 4217 code, e.g. USD.")
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                               help_text="Empty for a default book; a tenant for that tenant's contract.")
    is_default = models.BooleanField(default=False, help_text="The default book of its currency (one per currency).")
    discount_percent = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal(0),
                                           help_text="Taken off every usage charge (contracts only).")
    minimum_commitment = models.DecimalField(**MONEY, default=Decimal(0),
                                             help_text="Monthly floor; the shortfall is its own line (contracts).")
    effective_from = models.DateField(null=True, blank=True, help_text="First month it bills (contracts).")
    effective_until = models.DateField(null=True, blank=True, help_text="Last month it bills (contracts).")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["currency", "-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["currency"], condition=Q(is_default=True),
                                    name="price_book_one_default_per_currency"),
            models.CheckConstraint(condition=Q(is_default=False) | Q(tenant__isnull=True),
                                   name="price_book_default_has_no_tenant"),
            models.CheckConstraint(condition=Q(discount_percent__gte=0, discount_percent__lte=100),
                                   name="price_book_discount_percent"),
            models.CheckConstraint(condition=Q(minimum_commitment__gte=0), name="price_book_commitment_not_negative"),
            models.CheckConstraint(condition=Q(effective_from__isnull=True) | Q(effective_until__isnull=True)
                                   | Q(effective_until__gte=models.F("effective_from")),
                                   name="price_book_effective_dates_ordered"),
        ]

    def __str__(self) -> str:
        return self.name


class Price(models.Model):
    """How one meter is priced in a book (on one hardware tier, or on every tier when `hardware_tier`
    is empty). The models are billing.rating's: per_unit, graduated, volume, package."""

    class Model(models.TextChoices):
        PER_UNIT = "per_unit", "Per unit"
        GRADUATED = "graduated", "Graduated"
        VOLUME = "volume", "Volume"
        PACKAGE = "package", "Package"

    book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="prices")
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+")
    hardware_tier = models.CharField(max_length=60, blank=True, help_text="A hardware tier slug; empty: any tier.")
    model = models.CharField(max_length=12, choices=Model.choices, default=Model.PER_UNIT)
    unit_price = models.DecimalField(**UNIT_PRICE, null=True, blank=True,
                                     help_text="Per unit (per_unit), per package (package); empty for tiered models.")
    tiers = models.JSONField(default=list, blank=True,
                             help_text='Graduated/volume: [{"up_to": "1000000", "unit_price": "0.0000002", '
                                       '"flat_fee": "0"}, …, {"up_to": null, …}] — the last one open-ended.')
    package_size = models.DecimalField(**QUANTITY, null=True, blank=True, help_text="Units per package (package).")
    free_units = models.DecimalField(**QUANTITY, default=Decimal(0), help_text="Free allowance per month.")
    minimum = models.DecimalField(**MONEY, default=Decimal(0), help_text="Floor of the monthly charge, if any is due.")

    class Meta:
        ordering = ["book", "meter__slug", "hardware_tier"]
        constraints = [
            models.UniqueConstraint(fields=["book", "meter", "hardware_tier"], name="price_one_per_meter_and_tier"),
            models.CheckConstraint(condition=Q(model__in=["per_unit", "graduated", "volume", "package"]),
                                   name="price_model_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.meter_id} {self.hardware_tier or 'any tier'} ({self.model})"


class CreditGrant(TenantOwned):
    """Credit a tenant can spend on invoices: prepaid (bought) or promotional (given).

    Its balance is the sum of its ledger entries (granted, applied, expired, reversed); the
    grant row itself is never changed after it is made.
    """

    class Kind(models.TextChoices):
        PREPAID = "prepaid"
        PROMOTIONAL = "promotional"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    effective_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=50, help_text="0–100; lower is spent first.")
    description = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["priority", "expires_at", "effective_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_grant_amount_positive"),
            models.CheckConstraint(condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("effective_at")),
                                   name="credit_grant_expires_after_effective"),
            models.CheckConstraint(condition=Q(priority__lte=100), name="credit_grant_priority_range"),
            models.CheckConstraint(condition=Q(kind__in=["prepaid", "promotional"]), name="credit_grant_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} credit {self.amount} {self.currency}"


class Invoice(TenantOwned):
    """One tenant's invoice for one calendar month (UTC).

    draft → finalized → paid | void. `invoicing_status` guards the close: a worker claims the
    draft ("finalizing", `claimed_at`) before the finalizing transaction; a claim that stays
    is a crashed close, visible here and retried only once it is stale (docs/billing.md).
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        FINALIZED = "finalized"
        PAID = "paid"
        VOID = "void"

    class InvoicingStatus(models.TextChoices):
        IDLE = "idle"
        FINALIZING = "finalizing"

    # Indexed by (tenant, period) below; one index fewer for the close to maintain per row.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    period = models.DateField(help_text="First day of the month (UTC).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    invoicing_status = models.CharField(max_length=10, choices=InvoicingStatus.choices,
                                        default=InvoicingStatus.IDLE)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False, help_text="Which close run holds the claim.")
    close_error = models.CharField(max_length=500, blank=True,
                                   help_text="Why the last close could not finalize it (fix, and the next run retries).")
    number = models.CharField(max_length=32, null=True, blank=True,
                              help_text="Assigned at finalization, gapless per issuer (e.g. SY-2026-000123).")
    currency = models.CharField(max_length=3)
    subtotal = models.DecimalField(**MONEY, default=Decimal(0))
    credits_applied = models.DecimalField(**MONEY, default=Decimal(0))
    tax_rate = models.DecimalField(max_digits=7, decimal_places=4, default=Decimal(0), help_text="Percent.")
    tax = models.DecimalField(**MONEY, default=Decimal(0))
    total = models.DecimalField(**MONEY, default=Decimal(0))
    tax_note = models.CharField(max_length=300, blank=True, help_text="e.g. the reverse-charge statement.")
    bill_to = models.JSONField(default=dict, blank=True,
                               help_text="The customer as invoiced: name, address, country, VAT id, business.")
    price_book = models.ForeignKey("PriceBookSnapshot", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", db_index=False,
                                   help_text="The effective price book the lines were rated with.")
    computed_at = models.DateTimeField(null=True, blank=True, help_text="When the lines were last computed.")
    issued_at = models.DateTimeField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-period", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period"], name="invoice_one_per_tenant_and_period"),
            # A constraint rather than unique=True: PostgreSQL gets no second (LIKE) index for it.
            models.UniqueConstraint(fields=["number"], name="invoice_number_unique"),
            models.CheckConstraint(condition=Q(status__in=["draft", "finalized", "paid", "void"]),
                                   name="invoice_status_valid"),
            models.CheckConstraint(condition=Q(invoicing_status__in=["idle", "finalizing"]),
                                   name="invoice_invoicing_status_valid"),
            models.CheckConstraint(condition=Q(status="draft", number__isnull=True)
                                   | (~Q(status="draft") & Q(number__isnull=False)),
                                   name="invoice_numbered_once_finalized"),
            models.CheckConstraint(condition=Q(total=models.F("subtotal") - models.F("credits_applied")
                                               + models.F("tax")),
                                   name="invoice_total_adds_up"),
            models.CheckConstraint(condition=Q(credits_applied__gte=0, tax__gte=0, total__gte=0),
                                   name="invoice_amounts_not_negative"),
        ]
        indexes = [models.Index(fields=["period", "status"], name="invoice_period_status")]

    def __str__(self) -> str:
        return self.number or f"draft {self.period:%Y-%m} of {self.tenant}"

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def period_end(self):
        """First day of the next month."""
        return (self.period.replace(day=28) + timedelta(days=4)).replace(day=1)

    def is_overdue(self, today=None) -> bool:
        """Finalized (not paid, not void) and past its due date."""
        today = today or timezone.now().date()
        return self.status == self.Status.FINALIZED and self.due_date is not None and self.due_date < today


class InvoiceLine(TenantOwned):
    """One line: a meter × deployment × hardware tier's quantity and amount, an adjustment for
    late usage of an earlier month (`period_of_usage`), or a commitment shortfall."""

    class Kind(models.TextChoices):
        USAGE = "usage"
        COMMITMENT_SHORTFALL = "commitment_shortfall", "Commitment shortfall"

    # The close writes six lines per tenant, and every foreign-key constraint is a check per row at
    # commit. The invoice's is kept; tenant, meter and deployment are guarded by Django's PROTECT /
    # CASCADE alone (deployments are only ever soft-deleted, meters are protected by their rollups).
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.USAGE)
    description = models.CharField(max_length=300)
    # No indexes on these two: lines are read by invoice, and each index costs the close's bulk write.
    meter = models.ForeignKey(Meter, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                              db_index=False, db_constraint=False)
    # Deleted deployments stay (soft delete); the name is kept too, as it was when invoiced.
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                   db_index=False, db_constraint=False)
    deployment_name = models.CharField(max_length=63, blank=True)
    hardware_tier = models.CharField(max_length=60, blank=True)
    quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    unit = models.CharField(max_length=40, blank=True)
    unit_price_description = models.CharField(max_length=300, blank=True)
    amount = models.DecimalField(**MONEY)
    is_adjustment = models.BooleanField(default=False)
    period_of_usage = models.DateField(null=True, blank=True, help_text="Adjustments: the month the usage belongs to.")
    rating = models.JSONField(default=dict, blank=True,
                              help_text="How the amount came about: the charge it is a share of, model, discount.")

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.CheckConstraint(condition=Q(is_adjustment=False, period_of_usage__isnull=True)
                                   | Q(is_adjustment=True, period_of_usage__isnull=False),
                                   name="invoice_line_adjustment_names_its_month"),
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"


class CreditLedgerEntry(TenantOwned):
    """One movement of a credit grant's balance. Append-only: grant (+), application to an
    invoice (−), expiry of what is left (−), reversal of an application when its invoice is
    voided (+). A grant's balance = Σ of its entries."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        APPLICATION = "application"
        EXPIRY = "expiry"
        REVERSAL = "reversal"

    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount = models.DecimalField(**MONEY, help_text="Signed: + adds to the balance, − takes from it.")
    currency = models.CharField(max_length=3)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_entries")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "credit ledger entries"
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["grant", "application", "expiry", "reversal"]),
                                   name="credit_entry_kind_valid"),
            models.CheckConstraint(condition=(Q(kind__in=["grant", "reversal"], amount__gt=0)
                                              | Q(kind__in=["application", "expiry"], amount__lt=0)),
                                   name="credit_entry_sign_follows_kind"),
            models.CheckConstraint(condition=Q(kind__in=["grant", "expiry"]) | Q(invoice__isnull=False),
                                   name="credit_entry_application_names_invoice"),
            # Idempotency in the data: a grant is granted once, and applied to (and reversed from)
            # an invoice at most once. Expiry may recur: a reversal can restore an expired balance.
            models.UniqueConstraint(fields=["grant"], condition=Q(kind="grant"), name="credit_entry_granted_once"),
            models.UniqueConstraint(fields=["grant", "invoice", "kind"], condition=Q(kind__in=["application",
                                                                                                "reversal"]),
                                    name="credit_entry_once_per_invoice"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency}"


class Payment(TenantOwned):
    """Money received against an invoice, recorded by staff. An invoice is paid once its
    payments cover what is owed (total − credit notes)."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    received_on = models.DateField()
    reference = models.CharField(max_length=120, help_text="Bank reference, transaction id …")
    recorded_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["received_on", "id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive")]

    def __str__(self) -> str:
        return f"payment {self.amount} {self.currency} ({self.reference})"


class CreditNote(TenantOwned):
    """A correction of a finalized invoice: reduces what is owed; the invoice itself is unchanged.
    Numbered like invoices, in its own gapless series (e.g. SY-CN-2026-000007)."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=32, unique=True)
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=300)
    lines = models.JSONField(default=list, help_text='[{"description": …, "amount": "…"}] — net amounts.')
    subtotal = models.DecimalField(**MONEY)
    tax = models.DecimalField(**MONEY)
    amount = models.DecimalField(**MONEY, help_text="subtotal + tax: what it takes off the invoice.")
    issued_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["issued_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(subtotal__gt=0, tax__gte=0), name="credit_note_amounts_positive"),
            models.CheckConstraint(condition=Q(amount=models.F("subtotal") + models.F("tax")),
                                   name="credit_note_amount_adds_up"),
        ]

    def __str__(self) -> str:
        return self.number


class PriceBookSnapshot(models.Model):
    """An effective price book exactly as some invoice was rated with it (price-book format,
    decimals as strings), stored once per distinct content: late usage of that month is rated
    with it, whatever the books say by then."""

    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the canonical JSON.")
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.data.get('name', '?')} ({self.digest[:12]})"


class DocumentSequence(models.Model):
    """The last number used in a series (invoices, credit notes) and year. Locked FOR UPDATE by
    the transaction that takes the next number, so numbers are gapless: a rolled-back
    finalization rolls its number back too."""

    series = models.CharField(max_length=16)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "year"], name="document_sequence_once")]

    def __str__(self) -> str:
        return f"{self.series}-{self.year}: {self.last_number}"


# ==============================================================================================
# Budgets: a monthly spend limit per tenant (or per deployment), alerts at thresholds, and an
# action at 100 % (docs/billing.md, "Budgets"). Services are in billing/budgets.py.
#
# Invariants:
# - One tenant-wide budget per tenant, one budget per deployment (constraints).
# - A threshold alerts once per budget and month: BudgetAlert is unique on (budget, period,
#   threshold), and only the evaluator whose insert wins sends the email and the webhook.
# - The action at 100 % is applied at most once per budget and month (BudgetAction is unique on
#   (budget, period)); it records each deployment's state before, so a lift restores exactly.
# ==============================================================================================


def default_budget_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(TenantOwned):
    """A monthly spend limit (UTC calendar months) on the whole tenant (deployment empty) or on one
    deployment, in the tenant's currency; alert thresholds in percent of `amount`; what happens
    at 100 %."""

    class Action(models.TextChoices):
        NOTIFY = "notify", "Notify only"
        SCALE_TO_MINIMUM = "scale_to_minimum", "Scale deployments down to their minimum"
        PAUSE = "pause", "Pause deployments"

    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                   help_text="Empty: the whole tenant (every deployment).")
    amount = models.DecimalField(**MONEY, help_text="Per calendar month (UTC), before credits and tax.")
    currency = models.CharField(max_length=3, help_text="The tenant's billing currency.")
    thresholds = models.JSONField(default=default_budget_thresholds,
                                  help_text="Percents of the amount that alert, increasing, each 1–1000.")
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.NOTIFY,
                              help_text="What happens when spend reaches 100 % of the amount.")
    active = models.BooleanField(default=True, help_text="Inactive budgets are not evaluated.")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["tenant", "deployment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant"], condition=Q(deployment__isnull=True),
                                    name="budget_one_tenant_wide_per_tenant"),
            models.UniqueConstraint(fields=["deployment"], condition=Q(deployment__isnull=False),
                                    name="budget_one_per_deployment"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="budget_amount_positive"),
            models.CheckConstraint(condition=Q(action__in=["notify", "scale_to_minimum", "pause"]),
                                   name="budget_action_valid"),
        ]

    def __str__(self) -> str:
        scope = f"deployment {self.deployment.name}" if self.deployment_id else "whole tenant"
        return f"budget {self.amount} {self.currency} ({scope})"


class BudgetAlert(TenantOwned):
    """A threshold of a budget reached in a month: written once (the constraint), by the evaluator
    that notifies. Append-only history."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period = models.DateField(help_text="First day of the month (UTC).")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the budget's amount.")
    reached_at = models.DateTimeField(default=timezone.now)
    spend = models.DecimalField(**MONEY, help_text="Month-to-date spend when it was reached.")
    forecast = models.DecimalField(**MONEY, help_text="Forecast of the month's spend then.")
    amount = models.DecimalField(**MONEY, help_text="The budget's amount then.")
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["-period", "threshold"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period", "threshold"],
                                    name="budget_alert_once_per_threshold_and_period"),
        ]

    def __str__(self) -> str:
        return f"{self.threshold} % of {self.budget_id} in {self.period:%Y-%m}"


class BudgetAction(TenantOwned):
    """The action a budget took at 100 % in one month (at most once: the constraint), and its lift.

    `deployments` lists every deployment it concerned with its state before (min, max, budget
    cap, status) and whether the action changed it (`applied`); a lift restores that state.
    Lifted by the tenant (`lifted_by`), or by the evaluator when the next month begins.
    """

    class Kind(models.TextChoices):
        SCALE_TO_MINIMUM = "scale_to_minimum", "Scaled to minimum"
        PAUSE = "pause", "Paused"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="actions")
    period = models.DateField(help_text="First day of the month (UTC).")
    action = models.CharField(max_length=16, choices=Kind.choices)
    spend = models.DecimalField(**MONEY, help_text="Month-to-date spend when it was applied.")
    amount = models.DecimalField(**MONEY, help_text="The budget's amount then.")
    currency = models.CharField(max_length=3)
    deployments = models.JSONField(default=list, blank=True,
                                   help_text="[{id, public_id, name, min_replicas, max_replicas, "
                                             "budget_replica_cap, status, applied, note}] — the state before.")
    applied_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lift_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-period", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period"], name="budget_action_once_per_period"),
            models.CheckConstraint(condition=Q(action__in=["scale_to_minimum", "pause"]),
                                   name="budget_action_kind_valid"),
            models.CheckConstraint(condition=Q(lifted_at__isnull=False) | Q(lifted_by__isnull=True, lift_reason=""),
                                   name="budget_action_lift_recorded_when_lifted"),
        ]
        indexes = [models.Index(fields=["period"], condition=Q(lifted_at__isnull=True),
                                name="budget_action_in_force")]

    def __str__(self) -> str:
        return f"{self.action} by {self.budget_id} in {self.period:%Y-%m}"

    @property
    def in_force(self) -> bool:
        return self.lifted_at is None
