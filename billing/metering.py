"""Metering's pure core: validate usage events, and turn events into usage-rollup deltas.

No Django here. `billing.services.usage_ingest` loads meters and deployments, calls
`validate_event` on each raw event, stores the new ones and merges `rollup_deltas` of
exactly those into UsageRollup in the same transaction, so rollups always equal the meters'
aggregation of the raw events (`aggregate`, the reference the property tests compare with).

Aggregations and how a rollup key is maintained:

| aggregation  | event's contribution                 | merged into a stored rollup by          |
|--------------|--------------------------------------|-----------------------------------------|
| sum          | data[value_property]                 | adding                                   |
| count        | 1                                    | adding                                   |
| max          | data[value_property]                 | the greatest                             |
| latest       | data[value_property] at its `time`   | recomputed from the key's raw events     |
| unique_count | data[value_property] as a JSON value | recomputed from the key's raw events     |

`latest` takes the value of the event with the latest time, ties broken by the greater
(source, id), so the answer never depends on arrival order. A stored rollup keeps neither
the winner's (source, id) nor the set of values seen, so these two are recomputed from the
raw events of the keys a batch touched. Unique counts are therefore **per hour** (per
rollup row): the unique count over a day is not the sum of its hours' counts.

An event contributes to a meter when its type is the meter's `event_type` and, for every
aggregation but `count`, its data has the meter's value property. Quantities are counted to
9 decimal places (rounded half up), which is what a rollup stores exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

import orjson

# --- event types and sources ------------------------------------------------------------------

INFERENCE_REQUEST = "inference.request"
ACCELERATOR_USAGE = "accelerator.usage"
# Event types that carry token usage: a deployment takes them from one source only.
TOKEN_EVENT_TYPES = frozenset({INFERENCE_REQUEST})

# The `source` of the events the Prometheus scrape collector writes. Token events from this
# source count for deployments whose token_usage_source is "scrape"; from any other source,
# for deployments whose token_usage_source is "external".
SCRAPE_COLLECTOR_SOURCE = "switchyard/collector/scrape"
# The `source` of the accelerator-seconds collector's events.
ACCELERATOR_COLLECTOR_SOURCE = "switchyard/collector/accelerators"

# The PostgreSQL advisory lock (one bigint key) between ingestion and closing a billing period.
# Ingestion holds it SHARED from before it reads ClosedPeriod until it commits, whenever its batch
# has events of a month that may be closing (billing.ingest); closing a period takes it EXCLUSIVE
# in the transaction that writes ClosedPeriod and finalizes the invoices. So a late event either
# lands before the close reads the rollups, or sees the close and becomes an adjustment.
BILLING_PERIOD_LOCK_KEY = 0x5357_5942_494C_4C50  # "SWYBILLP"

TOKEN_SOURCE_SCRAPE = "scrape"
TOKEN_SOURCE_EXTERNAL = "external"


def token_source_of(source: str) -> str:
    """Which token-usage source (a Deployment.token_usage_source value) an event's `source` is."""
    return TOKEN_SOURCE_SCRAPE if source == SCRAPE_COLLECTOR_SOURCE else TOKEN_SOURCE_EXTERNAL


# --- limits -------------------------------------------------------------------------------------

MAX_TEXT = 255  # id, source, subject: the columns' width
MAX_TYPE = 100
MAX_TIER = 60
MAX_DIMENSIONS_KEY = 300
MAX_FUTURE = timedelta(minutes=5)
MAX_QUANTITY = 10**15  # far above any real quantity in one event; keeps rollups inside numeric(30, 9)
QUANTUM = Decimal("1e-9")

AGGREGATIONS = ("sum", "count", "max", "unique_count", "latest")
# Aggregations a stored rollup cannot merge from deltas: their keys are recomputed from raw events.
RECOMPUTED_AGGREGATIONS = frozenset({"unique_count", "latest"})


# --- event shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventShape:
    """What `data` of one event type must hold. Keys not named here are kept as sent."""

    counts: frozenset[str] = frozenset()  # whole numbers ≥ 0 (tokens, requests, accelerators)
    numbers: frozenset[str] = frozenset()  # finite numbers ≥ 0
    labels: frozenset[str] = frozenset()  # non-empty strings (tier: at most 60 characters)
    scalars: frozenset[str] = frozenset()  # a string, number or boolean (unique-count values, dimensions)
    required: frozenset[str] = frozenset()
    defaults: Mapping[str, int] = field(default_factory=dict)
    dimension_sets: tuple[tuple[str, ...], ...] = ()  # each dimensioned meter's, to check the key's length


BUILT_IN_SHAPES: dict[str, EventShape] = {
    INFERENCE_REQUEST: EventShape(
        counts=frozenset({"input_tokens", "output_tokens", "requests"}),
        numbers=frozenset({"ttft_ms", "tpot_ms", "e2e_ms"}),
        required=frozenset({"input_tokens", "output_tokens"}),
        defaults={"requests": 1},
    ),
    ACCELERATOR_USAGE: EventShape(
        counts=frozenset({"accelerators"}),
        numbers=frozenset({"seconds", "accelerator_seconds"}),
        labels=frozenset({"tier", "replica"}),
        required=frozenset({"tier", "accelerator_seconds"}),
    ),
}


@dataclass(frozen=True)
class MeterSpec:
    """A meter as the pure core sees it (billing.models.Meter without Django)."""

    id: int
    slug: str
    event_type: str
    aggregation: str
    value_property: str = ""
    dimensions: tuple[str, ...] = ()
    per_tier: bool = False


def shapes_for(meters: Iterable[MeterSpec]) -> dict[str, EventShape]:
    """The event types accepted, and their shapes: the built-in ones, plus each meter's type.

    A meter's value property must be a number (a scalar for unique counts) when present; on an
    event type that is not built in it must also be present. Dimensions and the tier are
    scalars / a label when present.
    """
    shapes = dict(BUILT_IN_SHAPES)
    for meter in meters:
        built_in = meter.event_type in BUILT_IN_SHAPES
        shape = shapes.get(meter.event_type, EventShape())
        counts, numbers, labels = set(shape.counts), set(shape.numbers), set(shape.labels)
        scalars, required = set(shape.scalars), set(shape.required)
        dimension_sets = shape.dimension_sets
        prop = meter.value_property
        if meter.aggregation != "count" and prop:
            if meter.aggregation == "unique_count":
                if prop not in counts | numbers | labels:
                    scalars.add(prop)
            elif prop not in counts:
                numbers.add(prop)
                labels.discard(prop)
                scalars.discard(prop)
            if not built_in:
                required.add(prop)
        if meter.per_tier and "tier" not in labels:
            labels.add("tier")
        for dimension in meter.dimensions:
            if dimension not in counts | numbers | labels:
                scalars.add(dimension)
        if meter.dimensions:
            dimension_sets = (*dimension_sets, tuple(meter.dimensions))
        shapes[meter.event_type] = EventShape(frozenset(counts), frozenset(numbers), frozenset(labels),
                                              frozenset(scalars), frozenset(required), dict(shape.defaults),
                                              dimension_sets)
    return shapes


# --- validation ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ValidEvent:
    """A validated event. `data` is as sent, with defaults filled in and whole-number floats made
    ints; `data_json` is its JSON text, as stored. `billing_period` starts as the event's month;
    the service places the event (deployment, tenant) and moves it to the open month if its own
    is closed."""

    index: int
    id: str
    source: str
    type: str
    subject: str
    time: datetime  # UTC
    data: dict
    data_json: bytes
    tenant_id: int | None = None
    deployment_id: int | None = None
    billing_period: date | None = None
    # The time as sent, when it is the common RFC 3339 shape that PostgreSQL reads as the same
    # instant (at most microseconds): stored as is, it needs no formatting again. None otherwise.
    time_text: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.id)


class Rejection(NamedTuple):
    index: int
    id: str | None
    reason: str


class Duplicate(NamedTuple):
    index: int
    id: str


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")
_ENVELOPE = ("specversion", "id", "source", "type", "subject", "time", "data")
TIME_EXAMPLE = "2026-12-01T10:00:00Z"


def _text_problem(value, name: str, limit: int) -> str | None:
    if type(value) is not str or not value:
        return f"{name} must be a non-empty string"
    if len(value) > limit:
        return f"{name} is longer than {limit} characters"
    if not value.isascii():
        if "\x00" in value:
            return f"{name} must not contain NUL characters"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{name} is not valid Unicode (a lone surrogate)"
    elif "\x00" in value:
        return f"{name} must not contain NUL characters"
    return None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_time(value) -> datetime | str:
    """An RFC 3339 time with an offset → an aware datetime in UTC; else the reason it is not one.
    Digits past microseconds are dropped (truncated, so an event never moves into the next hour)."""
    parsed = _common_time(value)
    if parsed is not None:
        return parsed
    if value is None:
        return f"time is missing: give when it happened, RFC 3339 with an offset, e.g. {TIME_EXAMPLE}"
    if type(value) is not str:
        return f"time must be an RFC 3339 string with an offset, e.g. {TIME_EXAMPLE}"
    if _RFC3339.fullmatch(value) is None:
        return f"time {_shown(value)} is not RFC 3339 with an offset, e.g. {TIME_EXAMPLE}"
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        return f"time {_shown(value)} is not a valid date and time"
    return parsed.astimezone(UTC)


def _common_time(value) -> datetime | None:
    """The common shape, 2026-12-01T10:00:00[.ffffff](Z|±hh:mm), parsed fast (a few character checks
    where the regex would be slower); None for anything else, which `parse_time` then judges."""
    if type(value) is not str or not 20 <= len(value) <= 40:
        return None
    if not (value[4] == "-" and value[7] == "-" and value[10] == "T" and value[13] == ":" and value[16] == ":"
            and value[19] in ".Z+-" and (value[-1] == "Z" or (value[-3] == ":" and value[-6] in "+-"))
            and (value[19] != "." or value[20].isdigit())):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _exact_to_microseconds(value: str) -> bool:
    """Whether a time of the common shape (`_common_time` took it) has at most 6 fraction digits
    and only ASCII: then PostgreSQL reads its text as the very instant Python parsed (more digits
    PostgreSQL would round, where Python truncates)."""
    if not value.isascii():
        return False
    if value[19] != ".":
        return True
    return len(value) - 20 - (1 if value[-1] == "Z" else 6) <= 6


def _quantity_problem(name: str, value, whole: bool) -> tuple[str | None, object]:
    """(reason, normalised value): whole numbers as ints, other quantities as finite floats/ints ≥ 0."""
    kind = type(value)
    if kind is int:
        if value < 0:
            return f"data.{name} must not be negative (it is {value})", value
        if value > MAX_QUANTITY:
            return f"data.{name} is larger than {MAX_QUANTITY:,}", value
        return None, value
    if kind is float:
        if not math.isfinite(value):
            return f"data.{name} must be a finite number", value
        if value < 0:
            return f"data.{name} must not be negative (it is {value!r})", value
        if value > MAX_QUANTITY:
            return f"data.{name} is larger than {MAX_QUANTITY:,}", value
        if whole:
            if not value.is_integer():
                return f"data.{name} must be a whole number (it is {value!r})", value
            return None, int(value)
        return None, value
    what = "a whole number" if whole else "a number"
    return f"data.{name} must be {what} ≥ 0, not {_shown(value)}", value


_COUNT, _NUMBER, _LABEL, _SCALAR = range(4)


@dataclass(frozen=True)
class _DataChecks:
    """An EventShape compiled for checking one event's data fast: the kind of each key."""

    kinds: dict[str, int]
    required: frozenset[str]
    defaults: tuple[tuple[str, int], ...]
    dimension_sets: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, shape: EventShape) -> _DataChecks:
        kinds = {name: _SCALAR for name in shape.scalars}
        kinds.update({name: _LABEL for name in shape.labels})
        kinds.update({name: _NUMBER for name in shape.numbers})
        kinds.update({name: _COUNT for name in shape.counts})
        return cls(kinds, shape.required, tuple(shape.defaults.items()), shape.dimension_sets)


def _check_data(data: dict, checks: _DataChecks) -> str | None:
    """Checks `data`, normalising it in place (whole-number floats → ints, defaults); the first
    problem, or None. Common values pass on a type check alone."""
    if checks.required and not data.keys() >= checks.required:
        return f"data.{sorted(checks.required - data.keys())[0]} is missing"
    kinds = checks.kinds
    for name, value in data.items():
        kind = kinds.get(name)
        if kind is None:
            continue
        kind_of_value = type(value)
        if kind == _COUNT or kind == _NUMBER:
            if (kind_of_value is int or (kind == _NUMBER and kind_of_value is float)) and 0 <= value <= MAX_QUANTITY:
                continue
            problem, normal = _quantity_problem(name, value, kind == _COUNT)
            if problem:
                return problem
            data[name] = normal  # replaces a value: the dict does not change size while iterated
        elif kind == _LABEL:
            limit = MAX_TIER if name == "tier" else MAX_TEXT
            if kind_of_value is not str or not value or len(value) > limit:
                return f"data.{name} must be a non-empty string of at most {limit} characters"
        elif not isinstance(value, (str, int, float, bool)):
            return f"data.{name} must be a string, number or boolean, not {_shown(value)}"
    for name, default in checks.defaults:
        if name not in data:
            data[name] = default
    for names in checks.dimension_sets:
        if len(dimensions_of(names, data)[0]) > MAX_DIMENSIONS_KEY:
            return f"data's values of {', '.join(names)} (a meter's dimensions) are longer than " \
                   f"{MAX_DIMENSIONS_KEY} characters together"
    return None


class EventValidator:
    """Validates the events of one batch against one clock and one set of event shapes
    (prepared once per batch: on the ingest path every microsecond per event counts)."""

    def __init__(self, *, now: datetime, max_age: timedelta, known_types: Mapping[str, EventShape]):
        self.now, self.max_age, self.known_types = now, max_age, known_types
        self.latest, self.earliest = now + MAX_FUTURE, now - max_age
        self.checks = {event_type: _DataChecks.of(shape) for event_type, shape in known_types.items()}

    def __call__(self, index: int, raw) -> ValidEvent | Rejection:
        """One raw event (a decoded CloudEvent in structured JSON) → a ValidEvent, or a Rejection
        saying what to fix. `raw["data"]` may be normalised in place (defaults, whole numbers)."""
        if type(raw) is not dict:
            return Rejection(index, None, "an event must be a JSON object (a CloudEvent in structured JSON)")
        event_id, source, subject = raw.get("id"), raw.get("source"), raw.get("subject")
        checks = self.checks.get(raw.get("type"))
        # The common case passes on these checks alone; anything else gets the detailed look.
        if not (checks is not None and raw.get("specversion") == "1.0" and type(event_id) is str
                and type(source) is str and type(subject) is str and 0 < len(event_id) <= MAX_TEXT
                and 0 < len(source) <= MAX_TEXT and 0 < len(subject) <= MAX_TEXT
                and event_id.isprintable() and source.isprintable() and subject.isprintable()):
            problem = _envelope_problem(raw, self.known_types)
            if problem:
                return Rejection(index, _shown_id(event_id), problem)
        time_text = raw.get("time")
        time = _common_time(time_text)
        if time is None:
            time, time_text = parse_time(time_text), None
            if type(time) is str:
                return Rejection(index, _shown_id(event_id), time)
        elif not _exact_to_microseconds(time_text):
            time_text = None
        if time > self.latest:
            return Rejection(index, _shown_id(event_id),
                             f"time {raw['time']} is more than {MAX_FUTURE.seconds // 60} minutes in the future "
                             f"(the server's time is {self.now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})")
        if time < self.earliest:
            return Rejection(index, _shown_id(event_id),
                             f"time {raw['time']} is older than the {self.max_age.days} days accepted")
        data = raw.get("data")
        if type(data) is not dict:
            reason = "data is missing" if data is None else "data must be a JSON object"
            if "data_base64" in raw:
                reason = "data must be JSON in `data` (data_base64 is not accepted)"
            return Rejection(index, _shown_id(event_id), reason)
        problem = _check_data(data, checks)
        if problem:
            return Rejection(index, _shown_id(event_id), problem)
        try:
            data_json = orjson.dumps(data)
        except (orjson.JSONEncodeError, TypeError) as exc:
            return Rejection(index, _shown_id(event_id), f"data cannot be stored as JSON: {exc}")
        if b"\\u0000" in data_json:
            return Rejection(index, _shown_id(event_id), "data must not contain NUL characters (\\u0000)")
        return ValidEvent(index, event_id, source, raw["type"], subject, time, data, data_json,
                          billing_period=date(time.year, time.month, 1), time_text=time_text)


def validate_event(index: int, raw, *, now: datetime, max_age: timedelta,
                   known_types: Mapping[str, EventShape]) -> ValidEvent | Rejection:
    """One raw event → a ValidEvent or a Rejection (EventValidator, for one event)."""
    return EventValidator(now=now, max_age=max_age, known_types=known_types)(index, raw)


def _shown_id(event_id) -> str | None:
    return event_id[:MAX_TEXT] if type(event_id) is str and event_id else None


def _envelope_problem(raw: dict, known_types: Mapping[str, EventShape]) -> str | None:
    if raw.get("specversion") != "1.0":
        if "specversion" not in raw:
            return 'specversion is missing: it must be "1.0" (CloudEvents 1.0)'
        return f'specversion must be "1.0" (CloudEvents 1.0), not {_shown(raw["specversion"])}'
    for name, limit in (("id", MAX_TEXT), ("source", MAX_TEXT)):
        problem = _text_problem(raw.get(name), name, limit)
        if problem:
            return problem
    event_type = raw.get("type")
    if type(event_type) is not str or event_type not in known_types:
        if type(event_type) is not str or not event_type:
            return "type must be a non-empty string"
        return f"type {_shown(event_type)} is unknown: the known types are {', '.join(sorted(known_types))}"
    problem = _text_problem(raw.get("subject"), "subject", MAX_TEXT)
    if problem:
        return problem.replace("subject", "subject (the deployment's id)", 1)
    return None


def first_occurrences(events: Iterable[ValidEvent]) -> tuple[list[ValidEvent], list[Duplicate]]:
    """The first event of each (source, id) in batch order, and the repeats after it."""
    seen: set[tuple[str, str]] = set()
    firsts, repeats = [], []
    for event in events:
        key = (event.source, event.id)
        if key in seen:
            repeats.append(Duplicate(event.index, event.id))
        else:
            seen.add(key)
            firsts.append(event)
    return firsts, repeats


# --- billing periods ------------------------------------------------------------------------------


def month_of(moment: datetime | date) -> date:
    """The first day of the month (UTC) a moment falls in: its billing period, unless closed."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def billing_period_for(event_time: datetime, *, now: datetime, closed: bool) -> date:
    """The month whose invoice bills an event: its own, or — when that month is closed for the
    tenant — the month open now (the late event becomes an adjustment on that invoice)."""
    return month_of(now) if closed else month_of(event_time)


# --- rollups --------------------------------------------------------------------------------------


class RollupKey(NamedTuple):
    tenant_id: int
    deployment_id: int
    meter_id: int
    tier: str
    dimensions_key: str
    hour: datetime
    billing_period: date


@dataclass
class RollupDelta:
    """What a set of events adds to one rollup key.

    `quantity` is the sum / count / max of their values; for `latest`, the value of the winner,
    whose (time, source, id) is `latest`; for `unique_count`, len(`values`).
    """

    aggregation: str
    dimensions: dict
    quantity: Decimal = Decimal(0)
    event_count: int = 0
    latest: tuple[datetime, str, str] | None = None
    values: set[bytes] | None = None

    @property
    def latest_time(self) -> datetime | None:
        return self.latest[0] if self.latest else None


def quantity_of(value) -> Decimal | int:
    """An event's value as the rollup counts it: exact for ints, else the float's shortest decimal
    text rounded half up to 9 places."""
    if type(value) is int:
        return value
    if type(value) is bool:
        return int(value)
    quantity = Decimal(repr(value)) if type(value) is float else Decimal(value)
    if quantity.as_tuple().exponent < -9:
        quantity = quantity.quantize(QUANTUM, rounding=ROUND_HALF_UP)
    return quantity


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("=", "\\=")


def dimensions_of(names: Iterable[str], data: dict) -> tuple[str, dict]:
    """(dimensions_key, dimensions): `key=value|…` sorted by key, values as JSON text unless strings;
    a dimension the event lacks is left out."""
    dimensions = {name: data[name] for name in names if name in data}
    if not dimensions:
        return "", {}
    parts = []
    for name in sorted(dimensions):
        value = dimensions[name]
        text = value if type(value) is str else orjson.dumps(value).decode()
        parts.append(f"{_escape(name)}={_escape(text)}")
    return "|".join(parts), dimensions


def meters_by_type(meters: Iterable[MeterSpec]) -> dict[str, list[MeterSpec]]:
    grouped: dict[str, list[MeterSpec]] = {}
    for meter in meters:
        grouped.setdefault(meter.event_type, []).append(meter)
    return grouped


def rollup_deltas(events: Iterable[ValidEvent], meters: Iterable[MeterSpec]) -> dict[RollupKey, RollupDelta]:
    """What `events` (placed: tenant, deployment and billing period set) add to each rollup key.

    Order-independent: the same events in any order give the same deltas. Merging the deltas of
    disjoint sets of events (`merge_delta`) gives the deltas of their union.
    """
    # Sums without dimensions (every built-in meter) take a short path, grouped by the event's
    # deployment × hour × period: ints add as ints and become Decimals once per key at the end.
    plans: dict[str, tuple[list[tuple[int, str, bool]], list[MeterSpec]]] = {}
    for event_type, of_type in meters_by_type(meters).items():
        plans[event_type] = ([(m.id, m.value_property, m.per_tier) for m in of_type
                              if m.aggregation == "sum" and not m.dimensions],
                             [m for m in of_type if m.aggregation != "sum" or m.dimensions])
    sums: dict[tuple, dict] = {}
    deltas: dict[RollupKey, RollupDelta] = {}
    hours: dict[str, datetime] = {}
    for event in events:
        plan = plans.get(event.type)
        if plan is None:
            continue
        plain_sums, others = plan
        data = event.data
        # Events sent in UTC share their hour's datetime, found by the text's first 13 characters
        # (cheaper than truncating each event's time).
        text = event.time_text
        if text is not None and text[-1] == "Z":
            hour = hours.get(text[:13])
            if hour is None:
                hour = hours[text[:13]] = event.time.replace(minute=0, second=0, microsecond=0)
        else:
            hour = event.time.replace(minute=0, second=0, microsecond=0)
        if plain_sums:
            place = (event.tenant_id, event.deployment_id, hour, event.billing_period)
            group = sums.get(place)
            if group is None:
                group = sums[place] = {}
            for meter_id, prop, per_tier in plain_sums:
                value = data.get(prop)
                if value is None:
                    continue
                slot = (meter_id, data.get("tier", "")) if per_tier else (meter_id, "")
                quantity = value if type(value) is int else quantity_of(value)
                entry = group.get(slot)
                if entry is None:
                    group[slot] = [quantity, 1]
                else:
                    entry[0] += quantity
                    entry[1] += 1
        for meter in others:
            prop = meter.value_property
            if meter.aggregation != "count" and prop not in data:
                continue
            tier = data.get("tier", "") if meter.per_tier else ""
            dimensions_key, dimensions = dimensions_of(meter.dimensions, data) if meter.dimensions else ("", {})
            key = RollupKey(event.tenant_id, event.deployment_id, meter.id, tier, dimensions_key, hour,
                            event.billing_period)
            delta = deltas.get(key)
            if delta is None:
                delta = deltas[key] = RollupDelta(meter.aggregation, dimensions)
            _add(delta, event, data.get(prop) if prop else None)
    for (tenant_id, deployment_id, hour, period), group in sums.items():
        for (meter_id, tier), (total, count) in group.items():
            deltas[RollupKey(tenant_id, deployment_id, meter_id, tier, "", hour, period)] = \
                RollupDelta("sum", {}, Decimal(total), count)
    return deltas


def _add(delta: RollupDelta, event: ValidEvent, value) -> None:
    aggregation = delta.aggregation
    delta.event_count += 1
    if aggregation == "sum":
        delta.quantity += quantity_of(value)
    elif aggregation == "count":
        delta.quantity += 1
    elif aggregation == "max":
        quantity = quantity_of(value)
        if delta.event_count == 1 or quantity > delta.quantity:
            delta.quantity = Decimal(quantity)
    elif aggregation == "latest":
        rank = (event.time, event.source, event.id)
        if delta.latest is None or rank > delta.latest:
            delta.latest, delta.quantity = rank, Decimal(quantity_of(value))
    elif aggregation == "unique_count":
        if delta.values is None:
            delta.values = set()
        delta.values.add(orjson.dumps(value))
        delta.quantity = Decimal(len(delta.values))
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")


def merge_delta(stored: RollupDelta | None, delta: RollupDelta) -> RollupDelta:
    """The rollup of two disjoint sets of events, from the rollup of each."""
    if stored is None:
        return delta
    merged = RollupDelta(stored.aggregation, stored.dimensions or delta.dimensions,
                         event_count=stored.event_count + delta.event_count)
    aggregation = stored.aggregation
    if aggregation in ("sum", "count"):
        merged.quantity = stored.quantity + delta.quantity
    elif aggregation == "max":
        merged.quantity = max(stored.quantity, delta.quantity)
    elif aggregation == "latest":
        winner = max((stored, delta), key=lambda d: d.latest)
        merged.latest, merged.quantity = winner.latest, winner.quantity
    elif aggregation == "unique_count":
        merged.values = (stored.values or set()) | (delta.values or set())
        merged.quantity = Decimal(len(merged.values))
    return merged


def aggregate(events: Iterable[ValidEvent], meters: Iterable[MeterSpec]) -> dict[RollupKey, RollupDelta]:
    """The meters' aggregation of a set of distinct events: what the stored rollups must equal."""
    return rollup_deltas(events, meters)
