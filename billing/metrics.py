"""A deployment's traffic, latency and replicas over a window, step by step, from latency rows
(per minute, and per hour where a whole hour lies inside one step) and replica lifetimes.
Pure: no Django.

The selectors load the rows (`billing.selectors.deployment_metrics`); this module only does
the arithmetic, so it can be property-tested without a database.

Contracts:
- Steps are `[start + i·step, start + (i+1)·step)`, the last one cut at `end`; a minute row
  belongs to the step its minute starts in. Every row inside the window is in exactly one step.
- Which rows answer a window (`rollup_plan`): when the step is a whole number of hours, every
  hour lying wholly inside one step of the window is read from its hour row, the rest from
  minute rows; with any other step, minute rows only. An hour row is the merge of its minutes
  (`LatencyHourRollup`), and merging is exact whatever the grouping, so the answer is the same
  as from minute rows alone — only cheaper: a 31-day window in steps of a day, on the hour,
  is 744 hour rows instead of 44,640 minute rows.
- Percentiles come from the step's merged histograms (`billing.latency`, Prometheus
  `histogram_quantile` semantics), in milliseconds; None when the step has no observation.
- A step is within the SLO when its p95 TTFT and p95 TPOT are at most the SLO's; a percentile
  that is unknown is not judged, and with neither known the answer is None.
- Replicas in a step: those that held accelerators at any moment of it.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing import latency

QUANTILES = (0.5, 0.95, 0.99)
METRICS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class MinuteRow:
    minute: datetime
    requests: int
    ttft: dict
    tpot: dict
    e2e: dict


@dataclass(frozen=True)
class HourRow:
    """The merge of the minute rows of `[hour, hour + 1 h)`."""

    hour: datetime
    requests: int
    ttft: dict
    tpot: dict
    e2e: dict


@dataclass(frozen=True)
class RollupPlan:
    """Which rows answer a window: hour rows whose hour starts in one of `hour_ranges`, minute
    rows whose minute is in one of `minute_ranges`. Ranges are `[from, to)`, ascending, disjoint,
    and together cover the window exactly once."""

    hour_ranges: tuple[tuple[datetime, datetime], ...]
    minute_ranges: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class ReplicaSpan:
    """When a replica held accelerators: from `start` until `end` (None: still holds them)."""

    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Step:
    start: datetime
    seconds: float
    requests: int
    request_rate: float
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    within_slo: bool | None
    replicas: int


@dataclass(frozen=True)
class Summary:
    """The whole window: the same figures from all its rows merged, and how many steps with
    traffic met the SLO."""

    requests: int
    request_rate: float
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    within_slo: bool | None
    steps_with_traffic: int
    steps_within_slo: int


def merged(histograms: Iterable[dict]) -> dict:
    """`latency.merge` of the histograms, fast for the common case of one set of bounds.

    A month of minutes is 44,640 histograms per metric: those with the same bounds (vLLM's, nearly
    always) are added here bucket by bucket, and `latency.merge` joins the few groups of different
    bounds (and checks them). Counts are exact, so the result is the same either way.
    """
    groups: dict[tuple, dict] = {}
    odd: list[dict] = []
    for histogram in histograms:
        if latency.is_empty(histogram):
            continue
        key = tuple(histogram["le"])
        group = groups.get(key)
        if group is None:
            groups[key] = {"le": list(key), "counts": list(histogram["counts"]), "sum": histogram.get("sum", 0.0)}
        elif len(histogram["counts"]) == len(group["counts"]):
            group["counts"] = [mine + theirs for mine, theirs in zip(group["counts"], histogram["counts"], strict=True)]
            group["sum"] += histogram.get("sum", 0.0)
        else:
            odd.append(histogram)  # malformed: latency.merge says why
    return latency.merge([*groups.values(), *odd])


def step_count(start: datetime, end: datetime, step: timedelta) -> int:
    return math.ceil((end - start) / step)


HOUR = timedelta(hours=1)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def rollup_plan(start: datetime, end: datetime, step: timedelta) -> RollupPlan:
    """Hour rows for the hours that lie wholly inside one step of `[start, end)`, minute rows for
    the rest. Only when the step is a whole number of hours: then a step misses at most the two
    part-hours at its edges (none when the window starts on the hour), whereas with a step such
    as 61 minutes hardly any hour fits and the minutes would be read in many small ranges."""
    if step % HOUR:
        return RollupPlan(hour_ranges=(), minute_ranges=((start, end),))
    hours, minutes = [], []
    for index in range(step_count(start, end, step)):
        step_start = start + index * step
        step_end = min(step_start + step, end)
        first_hour, hours_end = _ceil_hour(step_start), floor_hour(step_end)
        if first_hour < hours_end:
            hours.append((first_hour, hours_end))
            minutes += [(step_start, first_hour), (hours_end, step_end)]
        else:
            minutes.append((step_start, step_end))
    return RollupPlan(hour_ranges=_joined(hours), minute_ranges=_joined(minutes))


def _joined(ranges: list[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    """Ascending ranges without the empty ones, those that touch made one (fewer to query)."""
    result: list[tuple[datetime, datetime]] = []
    for low, high in ranges:
        if low >= high:
            continue
        if result and result[-1][1] == low:
            result[-1] = (result[-1][0], high)
        else:
            result.append((low, high))
    return tuple(result)


def percentiles_ms(histogram: dict) -> Percentiles:
    """p50, p95 and p99 of a histogram in seconds, in milliseconds (rounded to 0.001 ms)."""
    values = [latency.histogram_quantile(q, histogram) for q in QUANTILES]
    return Percentiles(*(None if value is None else round(value * 1000, 3) for value in values))


def within_slo(ttft: Percentiles, tpot: Percentiles, *, slo_ttft_p95_ms: float, slo_tpot_p95_ms: float
               ) -> bool | None:
    judged = [value <= limit for value, limit in ((ttft.p95, slo_ttft_p95_ms), (tpot.p95, slo_tpot_p95_ms))
              if value is not None]
    return all(judged) if judged else None


def _replicas_per_step(spans: Iterable[ReplicaSpan], start: datetime, end: datetime, step: timedelta,
                       steps: int) -> list[int]:
    # A difference array: +1 at the first step a replica touches, -1 after its last one, so
    # thousands of replicas over a month cost one pass each rather than one per step.
    delta = [0] * (steps + 1)
    for span in spans:
        span_end = end if span.end is None else min(span.end, end)
        if span.start >= end or span_end <= start or span_end <= span.start:
            continue
        first = max(0, (span.start - start) // step)
        # The last step whose start is before the span's end.
        last = min(steps - 1, math.ceil((span_end - start) / step) - 1)
        delta[first] += 1
        delta[last + 1] -= 1
    counts, running = [], 0
    for index in range(steps):
        running += delta[index]
        counts.append(running)
    return counts


def _step_of(row: MinuteRow | HourRow, start: datetime, end: datetime, step: timedelta) -> int | None:
    """The index of the step holding the row; None when the row is outside the window. Raises
    ValueError for an hour row not wholly inside one step: its minutes belong to two."""
    if isinstance(row, MinuteRow):
        return (row.minute - start) // step if start <= row.minute < end else None
    hour_end = row.hour + HOUR
    if hour_end <= start or row.hour >= end:
        return None
    index = (row.hour - start) // step
    if row.hour < start or hour_end > min(start + (index + 1) * step, end):
        raise ValueError(f"the hour row of {row.hour.isoformat()} is not inside one step of the window")
    return index


def deployment_steps(rows: Iterable[MinuteRow | HourRow], spans: Iterable[ReplicaSpan], *, start: datetime,
                     end: datetime, step: timedelta, slo_ttft_p95_ms: float, slo_tpot_p95_ms: float
                     ) -> tuple[list[Step], Summary]:
    """The steps of `[start, end)` and the window's summary. Rows outside the window are ignored;
    an hour row must lie inside one step (as `rollup_plan` chooses them), and no minute may be
    given twice — as a minute row and within an hour row."""
    steps = step_count(start, end, step)
    buckets: list[list[MinuteRow | HourRow]] = [[] for _ in range(steps)]
    for row in rows:
        index = _step_of(row, start, end, step)
        if index is not None:
            buckets[index].append(row)
    replicas = _replicas_per_step(spans, start, end, step, steps)
    slo = {"slo_ttft_p95_ms": slo_ttft_p95_ms, "slo_tpot_p95_ms": slo_tpot_p95_ms}
    result = []
    # The window's histograms: the merge of the steps' merged ones (counts are exact, so merging in
    # two stages gives the same buckets as merging every row at once).
    window_histograms: dict[str, list[dict]] = {name: [] for name in METRICS}
    for index, bucket in enumerate(buckets):
        bucket_start = start + index * step
        seconds = (min(bucket_start + step, end) - bucket_start).total_seconds()
        requests = sum(row.requests for row in bucket)
        histograms = {name: merged(getattr(row, name) for row in bucket) for name in METRICS}
        for name, histogram in histograms.items():
            window_histograms[name].append(histogram)
        ttft, tpot, e2e = (percentiles_ms(histograms[name]) for name in METRICS)
        result.append(Step(start=bucket_start, seconds=seconds, requests=requests,
                           request_rate=requests / seconds, ttft=ttft, tpot=tpot, e2e=e2e,
                           within_slo=within_slo(ttft, tpot, **slo), replicas=replicas[index]))
    ttft, tpot, e2e = (percentiles_ms(merged(window_histograms[name])) for name in METRICS)
    requests = sum(step.requests for step in result)
    judged = [s.within_slo for s in result if s.within_slo is not None]
    summary = Summary(requests=requests, request_rate=requests / (end - start).total_seconds(), ttft=ttft,
                      tpot=tpot, e2e=e2e, within_slo=within_slo(ttft, tpot, **slo),
                      steps_with_traffic=len(judged), steps_within_slo=sum(judged))
    return result, summary


def smallest_step_for(span: timedelta, max_points: int, unit: timedelta = timedelta(minutes=1)) -> timedelta:
    """The smallest whole number of `unit`s that cuts `span` into at most `max_points` steps."""
    return unit * math.ceil(span / (unit * max_points))
