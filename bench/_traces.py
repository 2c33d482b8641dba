"""Seeded synthetic request traces for the autoscaling benchmark (not a benchmark itself).

Arrivals are a Gamma renewal process whose rate follows a profile over time: Gamma
inter-arrival gaps with a chosen coefficient of variation (CV 1 is Poisson; larger is
burstier at short time scales), stretched by the rate in force when each gap starts.
Request sizes are log-normal, fitted to a published median and p90.

Statistics (shared/reference/README.md, "Request traces", computed from
Azure/AzurePublicDataset `AzureLLMInferenceTrace_conv.csv`, Nov 2023): conversation
input tokens median 1,020, p90 2,734; output tokens median 129, p90 424; inter-arrival
CV 1.09.
"""

from __future__ import annotations

import math
import random
from array import array
from dataclasses import dataclass
from statistics import NormalDist

Z90 = NormalDist().inv_cdf(0.90)
Z95 = NormalDist().inv_cdf(0.95)


@dataclass(frozen=True)
class LogNormal:
    """A token count, log-normal with the given median and p90, clipped to [1, maximum]."""

    median: float
    p90: float
    maximum: int

    @property
    def sigma(self) -> float:
        return math.log(self.p90 / self.median) / Z90

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma ** 2 / 2)

    @property
    def p95(self) -> float:
        return self.median * math.exp(self.sigma * Z95)

    def draw(self, rng: random.Random) -> int:
        return min(self.maximum, max(1, round(rng.lognormvariate(math.log(self.median), self.sigma))))


# Azure LLM inference 2023, conversation. The clip (a 32k-token prompt limit and a 4,096-token
# max_tokens) moves the means by well under 0.1 %.
AZURE_CONV_INPUT = LogNormal(median=1020, p90=2734, maximum=32_768)
AZURE_CONV_OUTPUT = LogNormal(median=129, p90=424, maximum=4096)


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration: float  # seconds; arrivals lie in [0, duration)
    arrivals: array  # seconds, ascending
    input_tokens: array
    output_tokens: array
    spikes: tuple[tuple[float, float], ...]  # (start, end) of each spike, seconds

    def __len__(self) -> int:
        return len(self.arrivals)


def _generate(name, description, rate_at, *, cv: float, duration: float, seed: int, spikes=()) -> Trace:
    rng = random.Random(seed)
    shape = 1.0 / cv ** 2  # Gamma with mean 1 and CV cv: shape 1/cv², scale cv²
    arrivals, inputs, outputs = array("d"), array("i"), array("i")
    t = 0.0
    while True:
        t += rng.gammavariate(shape, 1.0 / shape) / rate_at(t)
        if t >= duration:
            break
        arrivals.append(t)
        inputs.append(AZURE_CONV_INPUT.draw(rng))
        outputs.append(AZURE_CONV_OUTPUT.draw(rng))
    return Trace(name, description, duration, arrivals, inputs, outputs, tuple(spikes))


def steady(base_rps: float, *, seed: int, duration: float = 3600.0) -> Trace:
    """CV 1.1 (the Azure conversation trace's 1.09), a slow ramp base → 3 × base → base:
    rate(t) = base × (2 − cos(2πt / duration)), so the peak is at half time."""

    def rate(t):
        return base_rps * (2.0 - math.cos(2 * math.pi * t / duration))

    return _generate("steady", f"Gamma CV 1.1, {base_rps:g} → {3 * base_rps:g} → {base_rps:g} req/s (cosine ramp)",
                     rate, cv=1.1, duration=duration, seed=seed)


def bursty(base_rps: float, *, seed: int, duration: float = 3600.0,
           spike_starts: tuple[float, ...] = (900.0, 2400.0), spike_length: float = 300.0,
           spike_factor: float = 4.0) -> Trace:
    """CV 3 around a flat base rate, plus spikes to `spike_factor` × base of `spike_length`
    seconds each, starting as a step (the worst case for a reactive autoscaler)."""
    spikes = tuple((start, start + spike_length) for start in spike_starts)

    def rate(t):
        return base_rps * (spike_factor if any(a <= t < b for a, b in spikes) else 1.0)

    starts = ", ".join(f"{start / 60:g}" for start in spike_starts)
    return _generate("bursty", f"Gamma CV 3, {base_rps:g} req/s, {spike_factor:g}× spikes of "
                               f"{spike_length / 60:g} min at minutes {starts}",
                     rate, cv=3.0, duration=duration, seed=seed, spikes=spikes)
