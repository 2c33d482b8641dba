"""Latency histograms as LatencyRollup stores them: merging and percentiles. Pure: no Django.

A histogram is `{"le": [finite upper bounds, ascending], "counts": [per-bucket counts, +Inf
last], "sum": total}` — `len(counts) == len(le) + 1`; bucket i holds the observations in
(le[i-1], le[i]] (the first from 0), the last one those above le[-1]. Counts are per bucket,
not cumulative as in the Prometheus text, so histograms of any set of replicas and minutes
merge by adding. `+Inf` is implied, never stored: JSON (and PostgreSQL's jsonb) has no
infinity. `{}` is the empty histogram.

`quantile` follows Prometheus's `histogram_quantile`: linear interpolation within the bucket
the rank falls into, the first bucket starting at 0, and a rank in the +Inf bucket answered
with the highest finite bound (the histogram knows nothing above it).
"""

from collections.abc import Iterable, Sequence

EMPTY: dict = {}


def is_empty(histogram: dict | None) -> bool:
    return not histogram or not any(histogram.get("counts") or ())


def from_cumulative(le: Sequence[float], cumulative: Sequence[float], total: float) -> dict:
    """A stored histogram from Prometheus-style cumulative bucket values (`+Inf` last, so
    `len(cumulative) == len(le) + 1`). Raises ValueError when the values go down."""
    if len(cumulative) != len(le) + 1:
        raise ValueError(f"{len(cumulative)} cumulative values for {len(le)} finite bounds: the +Inf one is needed")
    counts, before = [], 0
    for value in cumulative:
        if value < before:
            raise ValueError("cumulative bucket values must not decrease")
        counts.append(_integral(value - before))
        before = value
    return {"le": [float(bound) for bound in le], "counts": counts, "sum": float(total)}


def merge(histograms: Iterable[dict | None]) -> dict:
    """One histogram holding every observation of `histograms` (empty ones are skipped).

    Histograms with the same bounds add bucket by bucket. With different bounds (say, a vLLM
    upgrade changed them) the result has the bounds they share, and each bucket's count goes
    to the shared bucket that contains it — exact, only coarser. Counts of two histograms
    without a finite bound in common end up in one +Inf bucket."""
    present = [h for h in histograms if not is_empty(h)]
    if not present:
        return {}
    for histogram in present:
        _check(histogram)
    bounds = [float(b) for b in present[0]["le"]]
    if any([float(b) for b in h["le"]] != bounds for h in present[1:]):
        shared = set(bounds)
        for histogram in present[1:]:
            shared &= {float(b) for b in histogram["le"]}
        bounds = sorted(shared)
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for histogram in present:
        for index, value in enumerate(_rebucket(histogram, bounds)):
            counts[index] += value
        total += float(histogram.get("sum", 0.0))
    return {"le": bounds, "counts": counts, "sum": total}


def count(histogram: dict | None) -> int | float:
    """How many observations the histogram holds."""
    return 0 if is_empty(histogram) else sum(histogram["counts"])


def quantile(q: float, le: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile (0 ≤ q ≤ 1) of a histogram given by its finite bounds and per-bucket
    counts (+Inf last), or None when it holds no observation (or only a +Inf bucket).

    As Prometheus's histogram_quantile: rank = q × total; in the bucket where the cumulative
    count reaches the rank, interpolate linearly between its lower bound (0 for the first
    bucket) and its upper bound; in the +Inf bucket, the highest finite bound. A trailing
    +Inf in `le` is accepted."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, not {q!r}")
    bounds = [float(b) for b in le]
    if bounds and bounds[-1] == float("inf"):
        bounds.pop()
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} counts for {len(bounds)} finite bounds: the +Inf count is needed last")
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = q * total
    cumulative = 0.0
    for index, in_bucket in enumerate(counts):
        before = cumulative
        cumulative += in_bucket
        # `> 0`: a rank of 0 (q = 0) lands in the first bucket holding anything.
        if cumulative >= rank and in_bucket > 0:
            if index == len(bounds):
                return bounds[-1]
            upper = bounds[index]
            lower = bounds[index - 1] if index > 0 else 0.0
            if index == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - before) / in_bucket
    return bounds[-1]  # float rounding left the rank a hair above the total


def histogram_quantile(q: float, histogram: dict | None) -> float | None:
    """`quantile` of a stored histogram (None when it is empty)."""
    if is_empty(histogram):
        return None
    return quantile(q, histogram["le"], histogram["counts"])


def mean(histogram: dict | None) -> float | None:
    total = count(histogram)
    return histogram["sum"] / total if total else None


def _rebucket(histogram: dict, bounds: list[float]) -> list:
    """The histogram's counts on `bounds`, a subset of its own bounds."""
    own = [float(b) for b in histogram["le"]]
    if own == bounds:
        return list(histogram["counts"])
    counts = [0] * (len(bounds) + 1)
    target = 0
    for bound, value in zip([*own, float("inf")], histogram["counts"], strict=True):
        # The shared bucket holding (previous own bound, bound]: the first shared bound ≥ it.
        while target < len(bounds) and bounds[target] < bound:
            target += 1
        counts[target] += value
    return counts


def _check(histogram: dict) -> None:
    le, counts = histogram.get("le"), histogram.get("counts")
    if not isinstance(le, list) or not isinstance(counts, list) or len(counts) != len(le) + 1:
        raise ValueError("a histogram is {'le': [bounds], 'counts': [len(le) + 1 counts], 'sum': s}")
    if any(b >= a for a, b in zip(le[1:], le, strict=False)):
        raise ValueError("histogram bounds must ascend")


def _integral(value: float) -> int | float:
    """Counts are whole numbers in any real exposition; keep them ints when they are."""
    return int(value) if float(value).is_integer() else value
