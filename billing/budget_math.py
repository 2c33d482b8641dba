"""Budget arithmetic: which thresholds a spend has reached, the percent used, and the forecast of
the month's spend. Pure: no Django; money is `Decimal` (docs/billing.md, "Budgets").

Comparisons are exact: threshold t (percent) is reached when spend × 100 ≥ t × amount, with no
rounding on the way, so 79.999 % never reads as 80 %.

Forecast (linear extrapolation of the month so far):

    forecast = spend_to_date × (length of the month ÷ time elapsed in it)

rounded once, half-up, to the currency's minor units. The time elapsed counts at least
`MIN_ELAPSED` (one hour: rollups are hourly, and a few minutes' spend × 700 hours says nothing)
and at most the whole month, so the forecast is never below the spend so far and equals it
once the month is over.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal

from billing.money import round_money

MIN_THRESHOLD = 1
MAX_THRESHOLD = 1000
MAX_THRESHOLDS = 10
LIMIT_PERCENT = 100
MIN_ELAPSED = timedelta(hours=1)

HUNDRED = Decimal(100)
PERCENT_QUANTUM = Decimal("0.01")
# The ratio month ÷ elapsed is not a terminating decimal in general: 50 significant digits, then
# the one rounding of the result to minor units.
_RATIO = Context(prec=50)


def threshold_errors(thresholds: object) -> list[str]:
    """Why `thresholds` is not a valid list of alert thresholds (empty when it is): whole percents
    from 1 to 1000, strictly increasing (so no duplicates), at most ten."""
    if not isinstance(thresholds, list | tuple):
        return ["Give the thresholds as a list of whole percents, e.g. [50, 80, 100]."]
    if not thresholds:
        return ["Give at least one threshold, e.g. [100]."]
    if len(thresholds) > MAX_THRESHOLDS:
        return [f"At most {MAX_THRESHOLDS} thresholds."]
    errors = []
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_THRESHOLD <= value <= MAX_THRESHOLD:
            errors.append(f"{value!r} is not a whole percent from {MIN_THRESHOLD} to {MAX_THRESHOLD}.")
    if errors:
        return errors
    if len(set(thresholds)) != len(thresholds):
        return [f"Each threshold once: {', '.join(map(str, thresholds))} repeats one."]
    if list(thresholds) != sorted(thresholds):
        return [f"List the thresholds in increasing order: {', '.join(map(str, sorted(thresholds)))}."]
    return []


def reached(spend: Decimal, amount: Decimal, threshold: int) -> bool:
    """spend ≥ threshold % of amount, exactly."""
    return spend * HUNDRED >= Decimal(threshold) * amount


def thresholds_reached(spend: Decimal, amount: Decimal, thresholds: Iterable[int]) -> list[int]:
    """The thresholds (percents of `amount`) that `spend` has reached, in increasing order."""
    return sorted(threshold for threshold in thresholds if reached(spend, amount, threshold))


def limit_reached(spend: Decimal, amount: Decimal) -> bool:
    """Spend has reached the budget itself (100 %): the budget's action is due."""
    return reached(spend, amount, LIMIT_PERCENT)


def percent_used(spend: Decimal, amount: Decimal) -> Decimal:
    """spend ÷ amount in percent, rounded half-up to two decimals (for display)."""
    return _RATIO.divide(spend * HUNDRED, amount).quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_UP, context=_RATIO)


def forecast(spend: Decimal, *, period_start: datetime, period_end: datetime, now: datetime,
             currency: str) -> Decimal:
    """The month's spend if it goes on as it went so far (see the module docstring)."""
    total = period_end - period_start
    elapsed = min(max(now - period_start, MIN_ELAPSED), total)
    ratio = _RATIO.divide(Decimal(_microseconds(total)), Decimal(_microseconds(elapsed)))
    return round_money(_RATIO.multiply(spend, ratio), currency)


def _microseconds(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def new_thresholds(reached_now: Sequence[int], alerted: Iterable[int]) -> list[int]:
    """The reached thresholds not alerted yet this period."""
    done = set(alerted)
    return [threshold for threshold in reached_now if threshold not in done]
