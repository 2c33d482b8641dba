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

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler.models import Deployment, Replica
from tenants.models import Tenant


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
    row. Indexes are few on purpose: every one costs on the ingest path.
    """

    source = models.CharField(max_length=255)
    event_id = models.CharField(max_length=255, help_text="The CloudEvents `id`.")
    type = models.CharField(max_length=100)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", db_index=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+", db_index=False)
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


class LatencyRollup(models.Model):
    """Per deployment × minute: requests finished and the merged TTFT / TPOT / E2E histograms.

    Each histogram is `{"le": [upper bounds…], "counts": [per-bucket counts, +Inf last], "sum": s}`
    with vLLM's bucket bounds, so histograms of any window merge by adding counts.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+", db_index=False)
    minute = models.DateTimeField()
    request_count = models.BigIntegerField(default=0)
    ttft = models.JSONField(default=dict)
    tpot = models.JSONField(default=dict)
    e2e = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "minute"], name="latency_rollup_one_per_minute")]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.minute:%Y-%m-%d %H:%M}: {self.request_count} requests"


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
