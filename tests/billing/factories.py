"""Factories of metering rows for read tests: rollups made directly, as ingestion and the
collectors would leave them (their own tests cover how they get there)."""

from datetime import UTC, datetime
from decimal import Decimal

import importlib

import factory

from billing.models import LatencyHourRollup, LatencyRollup, Meter, UsageRollup

# vLLM's time-to-first-token bucket bounds (seconds), shortened: what the tests need.
TTFT_LE = [0.1, 0.2, 0.5, 1.0]
TPOT_LE = [0.025, 0.05, 0.1, 0.2]


BUILT_IN_METERS = importlib.import_module("billing.migrations.0002_built_in_meters").BUILT_IN_METERS


def ensure_built_in_meters() -> None:
    """The built-in meters, as their migration seeds them: a transactional test (live server,
    threads) empties every table when it ends, migration-seeded rows included."""
    for fields in BUILT_IN_METERS:
        Meter.objects.update_or_create(slug=fields["slug"], defaults={**fields, "built_in": True})


def built_in_meter(slug: str) -> Meter:
    meter = Meter.objects.filter(slug=slug).first()
    if meter is None:
        ensure_built_in_meters()
        meter = Meter.objects.get(slug=slug)
    return meter


def at(text: str) -> datetime:
    """'2025-03-01T10:00' → an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def histogram(le: list[float], counts: list[int], total: float = 0.0) -> dict:
    """A stored histogram: per-bucket counts, +Inf last."""
    assert len(counts) == len(le) + 1
    return {"le": list(le), "counts": list(counts), "sum": total}


class UsageRollupFactory(factory.django.DjangoModelFactory):
    """`UsageRollupFactory(deployment=d, meter="output_tokens", hour=at(...), quantity="812")`."""

    class Meta:
        model = UsageRollup

    tenant = factory.SelfAttribute("deployment.tenant")
    meter = factory.LazyFunction(lambda: built_in_meter("output_tokens"))
    tier = ""
    hour = factory.LazyFunction(lambda: at("2025-03-01T10:00"))
    billing_period = factory.LazyAttribute(lambda rollup: rollup.hour.date().replace(day=1))
    quantity = Decimal("1")
    event_count = 1

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        if isinstance(kwargs.get("meter"), str):
            kwargs["meter"] = built_in_meter(kwargs["meter"])
        kwargs["quantity"] = Decimal(str(kwargs["quantity"]))
        return super()._create(model_class, *args, **kwargs)


class _LatencyHistogramsFactory(factory.django.DjangoModelFactory):
    class Meta:
        abstract = True

    tenant = factory.SelfAttribute("deployment.tenant")
    request_count = 0
    ttft = factory.LazyFunction(dict)
    tpot = factory.LazyFunction(dict)
    e2e = factory.LazyFunction(dict)


class LatencyRollupFactory(_LatencyHistogramsFactory):
    class Meta:
        model = LatencyRollup

    minute = factory.LazyFunction(lambda: at("2025-03-01T10:00"))


class LatencyHourRollupFactory(_LatencyHistogramsFactory):
    """An hour row made directly: the collector keeps it the merge of its minute rows, a test
    that makes one alone says so."""

    class Meta:
        model = LatencyHourRollup

    hour = factory.LazyFunction(lambda: at("2025-03-01T10:00"))
