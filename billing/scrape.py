"""From a replica's vLLM /metrics text to usage and latency deltas. Pure: no Django.

`parse(text)` reads the counters and histograms the scrape collector meters (with
`prometheus_client.parser`); `deltas(previous, scrape)` takes them against the state the last
scrape of the same replica left (`state(scrape)`, kept in ScrapeState.samples).

What is read (DESIGN.md, "Data flow"):

- counters `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
  `vllm:request_success_total` — each summed over its label sets (`model_name`, `engine`,
  `finished_reason`, …) after the deltas are taken *per series*, so one engine of a
  data-parallel server restarting does not hide the others' increase;
- histograms `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds` (vLLM ≥ 0.11;
  else `vllm:time_per_output_token_seconds`, the name it replaced), `vllm:e2e_request_latency_seconds`.

Counter resets: a server that restarts starts its counters again from zero, under a new
`_created`. A series whose `_created` changed was reset: its delta is its whole new value (what
was counted between the last scrape and the restart is gone — the Prometheus rule). A lower
value under the same `_created` is a page read before the last one recorded (two scrapes
crossing), not a restart: it counts nothing. Without `_created` a lower value means a reset.
A series seen for the first time (a new replica, a new label set) counts from zero, so its
whole value is the delta. Histograms follow the same rules (new bucket bounds are a reset).
"""

import hashlib
import json
import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from billing import latency

STATE_VERSION = 1

# Usage quantity → the counter family whose `_total` samples count it.
COUNTERS = {
    "input_tokens": "vllm:prompt_tokens",
    "output_tokens": "vllm:generation_tokens",
    "requests": "vllm:request_success",
}
# LatencyRollup field → the histogram names that fill it, preferred first.
HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "tpot": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
}


class ScrapeError(ValueError):
    """The text is not a vLLM /metrics page this module can meter; the message says why."""


@dataclass(frozen=True)
class Counter:
    value: float
    created: float | None  # the series' `_created` (epoch seconds), when exposed


@dataclass(frozen=True)
class Histogram:
    le: tuple[float, ...]  # finite upper bounds, ascending
    cumulative: tuple[float, ...]  # cumulative bucket values, +Inf last
    total: float  # the `_sum`
    created: float | None


@dataclass(frozen=True)
class Scrape:
    """The metered series of one /metrics page. Series are keyed by their labels (canonical JSON)."""

    counters: dict[str, dict[str, Counter]]  # "input_tokens" … → series → value
    histograms: dict[str, dict[str, Histogram]]  # "ttft" … → series → histogram
    histogram_names: dict[str, str]  # "ttft" … → the metric name read


@dataclass(frozen=True)
class Deltas:
    """What a replica did between two scrapes."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    histograms: dict[str, dict] = field(default_factory=dict)  # "ttft" … → stored histogram (latency.py)
    resets: tuple[str, ...] = ()  # "metric{labels}" of the series found reset, for the log
    behind: tuple[str, ...] = ()  # series read older than the last recorded scrape (counted nothing)
    state: dict = field(default_factory=dict)  # what to keep for the next scrape (ScrapeState.samples)

    @property
    def usage(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "requests": self.requests}

    @property
    def has_usage(self) -> bool:
        return any(self.usage.values())

    @property
    def request_count(self) -> int:
        """Requests finished, from the E2E histogram (every finished request is observed there)."""
        return int(latency.count(self.histograms.get("e2e")))


def parse(text: str) -> Scrape:
    """The metered counters and histograms of a Prometheus text exposition. Raises ScrapeError
    when the text does not parse or carries none of the three vLLM counters."""
    counter_names = {f"{name}_total": key for key, name in COUNTERS.items()}
    created_names = {f"{name}_created": key for key, name in COUNTERS.items()}
    histogram_names = {name: key for key, names in HISTOGRAMS.items() for name in names}
    counters: dict[str, dict[str, list]] = {key: {} for key in COUNTERS}
    raw_histograms: dict[str, dict[str, dict]] = {}
    try:
        # By sample name: the parser files `_created` (and `_total` under a `# TYPE x_total
        # counter`) as families of their own, whatever the exposition's TYPE lines say.
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, float(sample.value)
                if name in counter_names:
                    counters[counter_names[name]].setdefault(_series(labels), [0.0, None])[0] = value
                elif name in created_names:
                    counters[created_names[name]].setdefault(_series(labels), [0.0, None])[1] = value
                else:
                    _histogram_sample(raw_histograms, histogram_names, name, labels, value)
    except ScrapeError:
        raise
    except (ValueError, TypeError, IndexError) as error:
        raise ScrapeError(f"not a Prometheus text exposition: {error}") from None
    if not any(counters.values()):
        raise ScrapeError("none of " + ", ".join(f"{name}_total" for name in COUNTERS.values())
                          + " is in the metrics text: is this a vLLM server?")
    for key, series in counters.items():
        for labels, (value, _created) in series.items():
            if math.isnan(value) or value < 0:
                raise ScrapeError(f"{COUNTERS[key]}_total{labels} is {value}: a counter is never negative")
    histograms, chosen = {}, {}
    for key, names in HISTOGRAMS.items():
        name = next((n for n in names if n in raw_histograms), None)
        if name is not None:
            chosen[key] = name
            histograms[key] = {labels: _finish(name, labels, parts) for labels, parts in raw_histograms[name].items()}
    return Scrape(counters={key: {labels: Counter(v, c) for labels, (v, c) in series.items()}
                            for key, series in counters.items()},
                  histograms=histograms, histogram_names=chosen)


def deltas(previous: dict | None, scrape: Scrape) -> Deltas:
    """What happened since the scrape that left `previous` (None: no scrape before, so every
    series counts from zero); `Deltas.state` is what to keep for the next one. Raises
    ScrapeError for a `previous` this module did not write."""
    if previous is not None and previous.get("version") != STATE_VERSION:
        raise ScrapeError(f"scrape state version {previous.get('version')!r}, this code reads {STATE_VERSION}")
    before_counters = (previous or {}).get("counters", {})
    before_histograms = (previous or {}).get("histograms", {})
    kept = state(scrape)
    usage, resets, behind = {}, [], []
    for key, series in scrape.counters.items():
        total = 0.0
        for labels, counter in series.items():
            before = before_counters.get(key, {}).get(labels)
            increase, change = counter_increase(before, counter)
            total += increase
            if change == RESET:
                resets.append(f"{COUNTERS[key]}_total{labels}")
            elif change == BEHIND:
                behind.append(f"{COUNTERS[key]}_total{labels}")
                kept["counters"][key][labels] = before  # the later value stays the baseline
        usage[key] = int(round(total))
    histograms = {}
    for key, series in scrape.histograms.items():
        name = scrape.histogram_names[key]
        before_family = before_histograms.get(key, {})
        before_series = before_family.get("series", {}) if before_family.get("name") == name else {}
        parts = []
        for labels, histogram in series.items():
            increase, change = histogram_increase(before_series.get(labels), histogram)
            parts.append(increase)
            if change == RESET:
                resets.append(f"{name}{labels}")
            elif change == BEHIND:
                behind.append(f"{name}{labels}")
                kept["histograms"][key]["series"][labels] = before_series[labels]
        histograms[key] = latency.merge(parts)
    return Deltas(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
                  requests=usage["requests"], histograms=histograms, resets=tuple(resets), behind=tuple(behind),
                  state=kept)


# How a series changed since the last scrape.
NEW, GREW, RESET, BEHIND = "new", "grew", "reset", "behind"


def counter_increase(previous: list | None, current: Counter) -> tuple[float, str]:
    """(increase, how) of one counter series since `previous` ([value, created] or None).

    A later `_created` is a restart: the whole value is new (an earlier one is a page of the
    server before, read before the last one recorded: nothing). A lower value under the same
    `_created` cannot be a restart — the page was read before the last one recorded (two
    scrapes crossing): nothing is counted, and the last value stays the baseline. Without
    `_created` (vLLM's multiprocess mode omits it) a lower value is the only sign of a restart.
    """
    if previous is None:
        return current.value, NEW
    value, created = float(previous[0]), previous[1]
    if created != current.created:
        return (0.0, BEHIND) if _older_server(current.created, created) else (current.value, RESET)
    if current.value < value:
        return (0.0, BEHIND) if created is not None else (current.value, RESET)
    return current.value - value, GREW


def histogram_increase(previous: dict | None, current: Histogram) -> tuple[dict, str]:
    """(increase as a stored histogram, how) of one histogram series since `previous`; the
    same rules as `counter_increase` (new bucket bounds are a restart too)."""
    whole = latency.from_cumulative(current.le, current.cumulative, current.total)
    if previous is None:
        return whole, NEW
    before = [float(v) for v in previous["cumulative"]]
    if previous.get("created") != current.created:
        return ({}, BEHIND) if _older_server(current.created, previous.get("created")) else (whole, RESET)
    if [float(b) for b in previous["le"]] != list(current.le):
        return whole, RESET
    if any(now < then for now, then in zip(current.cumulative, before, strict=True)):
        return ({}, BEHIND) if current.created is not None else (whole, RESET)
    increase = [now - then for now, then in zip(current.cumulative, before, strict=True)]
    grown = increase[-1] > 0
    return latency.from_cumulative(current.le, increase,
                                   current.total - float(previous["total"]) if grown else 0.0), GREW


def _older_server(created: float | None, recorded: float | None) -> bool:
    """A page of the server that ran *before* the recorded one (read before, recorded after)."""
    return created is not None and recorded is not None and created < recorded


def state(scrape: Scrape) -> dict:
    """What to keep (JSON) after a first scrape; later ones keep `Deltas.state`."""
    return {
        "version": STATE_VERSION,
        "counters": {key: {labels: [c.value, c.created] for labels, c in series.items()}
                     for key, series in scrape.counters.items()},
        "histograms": {key: {"name": scrape.histogram_names[key],
                             "series": {labels: {"le": list(h.le), "cumulative": list(h.cumulative),
                                                 "total": h.total, "created": h.created}
                                        for labels, h in series.items()}}
                       for key, series in scrape.histograms.items()},
    }


def position(scrape: Scrape) -> str:
    """A digest of the metered counters' values and `_created`s: the same counters give the
    same digest, so an event named by it is the same event however often it is retried."""
    canonical = json.dumps({key: sorted((labels, c.value, c.created) for labels, c in series.items())
                            for key, series in sorted(scrape.counters.items())}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


# --- parsing helpers ----------------------------------------------------------------------


def _series(labels: dict) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


def _histogram_sample(raw: dict, names: dict, sample_name: str, labels: dict, value: float) -> None:
    for suffix in ("_bucket", "_sum", "_created"):
        base = sample_name[:-len(suffix)] if sample_name.endswith(suffix) else None
        if base in names:
            break
    else:
        return
    if suffix == "_bucket":
        labels = dict(labels)
        bound = float(labels.pop("le"))  # "+Inf" parses as inf
        parts = raw.setdefault(base, {}).setdefault(_series(labels), {"buckets": {}, "sum": None, "created": None})
        parts["buckets"][bound] = value
    else:
        parts = raw.setdefault(base, {}).setdefault(_series(labels), {"buckets": {}, "sum": None, "created": None})
        parts["sum" if suffix == "_sum" else "created"] = value


def _finish(name: str, labels: str, parts: dict) -> Histogram:
    bounds = sorted(parts["buckets"])
    if not bounds or bounds[-1] != math.inf:
        raise ScrapeError(f"{name}{labels} has no +Inf bucket")
    cumulative = tuple(parts["buckets"][b] for b in bounds)
    if any(later < earlier for earlier, later in zip(cumulative, cumulative[1:], strict=False)):
        raise ScrapeError(f"{name}{labels}: cumulative bucket values go down")
    return Histogram(le=tuple(bounds[:-1]), cumulative=cumulative, total=parts["sum"] or 0.0,
                     created=parts["created"])
