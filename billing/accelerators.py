"""Accelerator-seconds per replica per minute, as usage events. Pure: no Django.

A replica holds its accelerators from `start` (placement: the row is created and the node's
accelerators are reserved for it) until `end` (it stopped or failed; None while it still
holds). Every minute it held any of that time becomes one `accelerator.usage` event whose id is
`<replica>:<minute>` — the same minute of the same replica is the same event, however often it
is computed — carrying the exact seconds held in that minute (microsecond precision).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EVENT_TYPE = "accelerator.usage"
MINUTE = timedelta(minutes=1)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Holding:
    """One replica's claim on accelerators: `accelerators` of `hardware`, bought as `tier`."""

    replica: str  # public id
    deployment: str  # public id: the event's subject
    tier: str  # hardware tier slug
    hardware: str  # accelerator type slug
    accelerators: int
    start: datetime
    end: datetime | None  # None: still holding


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    """The minute starts in [start, end); both are minute-aligned."""
    minute = start
    while minute < end:
        yield minute
        minute += MINUTE


def held_microseconds(holding: Holding, start: datetime, end: datetime) -> int:
    """How long `holding` held its accelerators within [start, end), in microseconds."""
    held_from = max(start, holding.start)
    held_until = end if holding.end is None else min(end, holding.end)
    return max(0, (held_until - held_from) // MICROSECOND)


def rfc3339(moment: datetime) -> str:
    """UTC, `Z`, with microseconds only when there are any."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def event_id(replica: str, minute: datetime) -> str:
    return f"{replica}:{rfc3339(minute)}"


def usage_events(holdings: Iterable[Holding], minute: datetime, *, source: str) -> list[dict]:
    """One CloudEvent per holding that held anything during the minute starting at `minute`."""
    end = minute + MINUTE
    events = []
    for holding in holdings:
        held = held_microseconds(holding, minute, end)
        if held <= 0:
            continue
        events.append({
            "specversion": "1.0",
            "id": event_id(holding.replica, minute),
            "source": source,
            "type": EVENT_TYPE,
            "subject": holding.deployment,
            "time": rfc3339(minute),
            "data": {
                "tier": holding.tier,
                "hardware": holding.hardware,
                "accelerators": holding.accelerators,
                # Exact to the microsecond: a float prints back the six-decimal value it was made from.
                "seconds": held / 1_000_000,
                "accelerator_seconds": holding.accelerators * held / 1_000_000,
                "replica": holding.replica,
            },
        })
    return events
