"""Helpers of the collector tests: replicas with known holding times, and the totals to expect,
computed independently of billing/accelerators.py."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import DecimalField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from billing.models import UsageEvent, UsageRollup
from scheduler.models import Deployment, HardwareTier, Node, Replica

def make_replicas(deployment: Deployment, node: Node, tier: HardwareTier,
                  spans: list[tuple[datetime, datetime | None, int]]) -> list[Replica]:
    """Replica rows as the reconcile loop leaves them: ready while holding, stopped with a stop time."""
    return Replica.objects.bulk_create([
        Replica(tenant_id=deployment.tenant_id, deployment=deployment, node=node, tier=tier, accelerators=accelerators,
                generation=deployment.generation, state="stopped" if stopped else "ready", created_at=created,
                stopped_at=stopped)
        for created, stopped, accelerators in spans])


def expected_accelerator_seconds(replicas, start: datetime, end: datetime) -> Decimal:
    """Σ accelerators × seconds held within [start, end), exact to the microsecond."""
    total = 0
    for replica in replicas:
        held_from = max(start, replica.created_at)
        held_until = min(end, replica.stopped_at or end)
        if held_until > held_from:
            total += replica.accelerators * ((held_until - held_from) // timedelta(microseconds=1))
    return Decimal(total) / Decimal(1_000_000)


def expected_replica_minutes(replicas, start: datetime, end: datetime) -> int:
    """How many (replica, minute) pairs held anything: the events to expect."""
    count = 0
    minute = start
    while minute < end:
        after = minute + timedelta(minutes=1)
        count += sum(1 for r in replicas if r.created_at < after and (r.stopped_at is None or r.stopped_at > minute))
        minute = after
    return count


def billed_accelerator_seconds() -> tuple[Decimal, Decimal, int]:
    """(Σ over the raw events, Σ over the rollups, number of events), summed by the database."""
    events = UsageEvent.objects.filter(type="accelerator.usage")
    raw = events.annotate(value=Cast(KT("data__accelerator_seconds"), DecimalField(max_digits=30, decimal_places=9))
                          ).aggregate(total=Sum("value"))["total"] or Decimal(0)
    rolled = UsageRollup.objects.filter(meter__slug="accelerator_seconds").aggregate(
        total=Sum("quantity"))["total"] or Decimal(0)
    return Decimal(raw), Decimal(rolled), events.count()
