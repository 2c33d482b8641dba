"""Currencies and the one rounding rule. Pure: no Django.

Minor units (the number of decimal places of a currency's smallest unit: JPY 0, USD 2,
KWD 3, CLF 4) come from the `iso4217` package, which ships the ISO 4217 maintenance
agency's own list (table A.1) — not from CLDR, whose "digits" differ from ISO for a
few currencies (IQD, LAK, RSD …).

Money is a `Decimal` beside a currency code; never a float. Arithmetic inside a
calculation keeps full precision (`EXACT` traps any inexact step), and an amount is
rounded once, by `round_money`, to the currency's minor units, half-up (ties away from
zero, `decimal.ROUND_HALF_UP`). docs/pricing.md says where that happens.
"""

import re
from decimal import ROUND_HALF_UP, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from functools import cache

from iso4217 import Currency

# Precise arithmetic for money: 200 significant digits is far beyond any price × quantity
# here, and trapping Inexact turns a silently rounded intermediate into an error.
EXACT = Context(prec=200, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
# The context `round_money` quantizes in: the same precision, rounding allowed.
_ROUNDING = Context(prec=200, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])
_CODE = re.compile(r"^[A-Z]{3}$")


class CurrencyError(ValueError):
    """A currency code that cannot be invoiced, or money that does not fit its currency."""


@cache
def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit per ISO 4217 (JPY 0, USD 2, KWD 3)."""
    code = validate_currency(currency)
    return Currency(code).exponent


def validate_currency(currency: object) -> str:
    """The code itself when it is an ISO 4217 currency that has minor units; else CurrencyError."""
    if not isinstance(currency, str) or not _CODE.match(currency):
        upper = currency.upper() if isinstance(currency, str) else ""
        hint = f" (did you mean {upper}?)" if _CODE.match(upper) else ""
        raise CurrencyError(f"{currency!r} is not a currency code: use three upper-case ISO 4217 letters "
                            f"such as USD, EUR or JPY{hint}.")
    try:
        entry = Currency(currency)
    except ValueError:
        raise CurrencyError(f"{currency} is not an ISO 4217 currency code.") from None
    if entry.exponent is None:
        # Precious metals (XAU), testing (XTS) and "no currency" (XXX) have no minor unit.
        raise CurrencyError(f"{currency} ({entry.currency_name}) has no minor unit and cannot be invoiced.")
    return currency


@cache
def quantum(currency: str) -> Decimal:
    """The currency's smallest unit as a Decimal: 0.01 for USD, 1 for JPY, 0.001 for KWD."""
    return Decimal(1).scaleb(-minor_units(currency))


def _require_decimal(amount: object) -> Decimal:
    if type(amount) is not Decimal:  # the common case first: rating calls this per line
        if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
            raise TypeError(f"money must be a Decimal (or int), not {type(amount).__name__} {amount!r}")
        amount = Decimal(amount)
    if not amount.is_finite():
        raise CurrencyError(f"money must be a finite number, not {amount}.")
    return amount


def round_money(amount: Decimal, currency: str) -> Decimal:
    """THE rounding function: `amount` to the currency's minor units, half-up (ties away from zero).

    round_money(Decimal("0.005"), "USD") == Decimal("0.01"); round_money(Decimal("2.5"), "JPY") == 3;
    round_money(Decimal("-0.005"), "USD") == Decimal("-0.01").
    """
    return _require_decimal(amount).quantize(quantum(currency), rounding=ROUND_HALF_UP, context=_ROUNDING)


def is_rounded(amount: Decimal, currency: str) -> bool:
    """True when `amount` is a whole number of the currency's minor units (no rounding needed)."""
    amount = _require_decimal(amount)
    return amount == round_money(amount, currency)


def require_rounded(amount: Decimal, currency: str, what: str = "amount") -> Decimal:
    """`amount` unchanged when it fits the currency's minor units; else CurrencyError naming `what`."""
    amount = _require_decimal(amount)
    if amount != amount.quantize(quantum(currency), rounding=ROUND_HALF_UP, context=_ROUNDING):
        raise CurrencyError(f"{what}: {amount} has more decimal places than {currency} has "
                            f"({minor_units(currency)}).")
    return amount


def to_minor(amount: Decimal, currency: str) -> int:
    """A rounded amount as an integer count of minor units (12.34 USD → 1234)."""
    return int(require_rounded(amount, currency).scaleb(minor_units(currency), context=_ROUNDING))


def from_minor(count: int, currency: str) -> Decimal:
    """An integer count of minor units as an amount (1234, USD → 12.34)."""
    return Decimal(count).scaleb(-minor_units(currency), context=_ROUNDING)
