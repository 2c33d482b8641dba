"""The quote before deploying: for every hardware tier, the replica shape, how many
replicas the traffic needs, predicted p95 latency and what it costs. Pure: no Django.

Placement consumes the same numbers (`rps_per_replica` of each option).
"""

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from statistics import NormalDist

from scheduler.architecture import Architecture
from scheduler.perf import TENSOR_PARALLEL_DEGREES, Efficiency, Hardware, ReplicaCapacity, Workload, replica_capacity


Z90, Z95 = NormalDist().inv_cdf(0.90), NormalDist().inv_cdf(0.95)


def _lognormal_sigma(median: int, p95: int) -> float:
    return math.log(max(p95, median) / median) / Z95


def lognormal_mean(median: int, p95: int) -> int:
    """The mean of a log-normal size with this median and p95 (a p95 below the median counts
    as the median), rounded. Request sizes are log-normal (the Azure 2023 traces), so the
    mean sits above the median: 512 / p95 1,024 has mean 560."""
    if median <= 0:
        return median
    return max(1, round(median * math.exp(_lognormal_sigma(median, p95) ** 2 / 2)))


def lognormal_p90(median: int, p95: int) -> int:
    """The p90 of the same log-normal, rounded: what the simulated fleet's TrafficProfile
    takes (it fits its sizes to median and p90), so that the twin sends the sizes the
    estimator planned for. 512 / p95 1,024 has p90 879."""
    if median <= 0:
        return median
    return max(median, round(median * math.exp(_lognormal_sigma(median, p95) * Z90)))


@dataclass(frozen=True)
class Traffic:
    requests_per_s: float
    input_tokens: int  # typical (median)
    output_tokens: int
    input_tokens_p95: int
    output_tokens_p95: int

    @property
    def typical(self) -> Workload:
        return Workload(self.input_tokens, self.output_tokens)

    @property
    def mean(self) -> Workload:
        """The mean request, log-normal from median and p95: what throughput is counted in
        (requests/s = tokens/s ÷ mean tokens per request) and tokens are billed by."""
        return Workload(lognormal_mean(self.input_tokens, self.input_tokens_p95),
                        lognormal_mean(self.output_tokens, self.output_tokens_p95))

    @property
    def p95(self) -> Workload:
        return Workload(self.input_tokens_p95, self.output_tokens_p95)


@dataclass(frozen=True)
class Slo:
    ttft_p95_ms: float
    tpot_p95_ms: float


@dataclass(frozen=True)
class TierOffer:
    tier: str
    capacity_class: str
    price_per_accelerator_hour: Decimal
    currency: str
    hardware: Hardware
    efficiency: Efficiency


@dataclass(frozen=True)
class ReplicaOption:
    """One replica shape on one hardware type and what it serves within the SLO."""

    hardware: str
    accelerators: int
    capacity: ReplicaCapacity


@dataclass(frozen=True)
class TierQuote:
    tier: str
    hardware: str
    capacity_class: str
    currency: str
    meets_slo: bool
    reason: str
    accelerators_per_replica: int
    replicas: int
    requests_per_s_per_replica: float
    ttft_p95_ms: float
    tpot_p95_ms: float
    cost_per_hour: Decimal
    cost_per_million_output_tokens: Decimal | None


def replica_options(arch: Architecture, dtype: str, hardware: Hardware, efficiency: Efficiency, traffic: Traffic,
                    slo: Slo) -> list[ReplicaOption]:
    """Every tensor-parallel degree of one hardware type that fits, with its capacity within the SLO."""
    options = []
    for degree in TENSOR_PARALLEL_DEGREES:
        if degree > hardware.accelerators_per_node:
            break
        capacity = replica_capacity(arch, dtype, hardware, efficiency, degree, typical=traffic.mean,
                                    p95=traffic.p95, ttft_slo_ms=slo.ttft_p95_ms, tpot_slo_ms=slo.tpot_p95_ms)
        options.append(ReplicaOption(hardware.slug, degree, capacity))
    return options


def best_option(options: list[ReplicaOption]) -> ReplicaOption | None:
    """The degree with the most requests/s per accelerator among those meeting the SLO."""
    serving = [o for o in options if o.capacity.meets_slo and o.capacity.requests_per_s > 0]
    if not serving:
        return None
    return max(serving, key=lambda o: (o.capacity.requests_per_s / o.accelerators, -o.accelerators))


def _closest_miss(options: list[ReplicaOption]) -> str:
    fitting = [o for o in options if not math.isnan(o.capacity.ttft_ms)]
    if not fitting:
        return options[0].capacity.reason if options else "no replica shape fits"
    closest = min(fitting, key=lambda o: o.capacity.ttft_ms + 10 * o.capacity.tpot_ms)
    return f"{closest.capacity.reason} (closest: {closest.accelerators} accelerators)"


def _money(value: Decimal, places: str = "0.0001") -> Decimal:
    return value.quantize(Decimal(places), rounding=ROUND_HALF_UP)


def quote_tiers(arch: Architecture, dtype: str, offers: list[TierOffer], traffic: Traffic,
                slo: Slo) -> list[TierQuote]:
    """A quote per tier; those meeting the SLO first, cheapest first."""
    options_by_hardware: dict[str, list[ReplicaOption]] = {}
    quotes = []
    for offer in offers:
        hw = offer.hardware
        if hw.slug not in options_by_hardware:
            options_by_hardware[hw.slug] = replica_options(arch, dtype, hw, offer.efficiency, traffic, slo)
        options = options_by_hardware[hw.slug]
        chosen = best_option(options)
        if chosen is None:
            quotes.append(TierQuote(offer.tier, hw.slug, offer.capacity_class, offer.currency, False,
                                    _closest_miss(options), 0, 0, 0.0, math.nan, math.nan, Decimal(0), None))
            continue
        capacity = chosen.capacity
        replicas = max(1, math.ceil(traffic.requests_per_s / capacity.requests_per_s - 1e-9))
        cost = offer.price_per_accelerator_hour * replicas * chosen.accelerators
        tokens_per_hour = Decimal(str(traffic.requests_per_s * traffic.mean.output_tokens * 3600))
        per_million = _money(cost / tokens_per_hour * 1_000_000) if tokens_per_hour > 0 else None
        quotes.append(TierQuote(
            tier=offer.tier, hardware=hw.slug, capacity_class=offer.capacity_class, currency=offer.currency,
            meets_slo=True, reason="", accelerators_per_replica=chosen.accelerators, replicas=replicas,
            requests_per_s_per_replica=capacity.requests_per_s, ttft_p95_ms=capacity.ttft_ms,
            tpot_p95_ms=capacity.tpot_ms, cost_per_hour=_money(cost), cost_per_million_output_tokens=per_million,
        ))
    return sorted(quotes, key=lambda q: (not q.meets_slo, q.cost_per_hour, q.ttft_p95_ms, q.tier))


def pick_auto(quotes: list[TierQuote], capacity_classes: tuple[str, ...] = ("on-demand", "reserved")) -> TierQuote | None:
    """What `auto` deploys on: the cheapest tier meeting the SLO. Spot is left out by default:
    it can be reclaimed at any time, which an SLO cannot promise around."""
    for quote in quotes:
        if quote.meets_slo and quote.capacity_class in capacity_classes:
            return quote
    return None
