"""Currencies and the one rounding function (pure: no database)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    CurrencyError,
    from_minor,
    is_rounded,
    minor_units,
    quantum,
    require_rounded,
    round_money,
    to_minor,
    validate_currency,
)


@pytest.mark.parametrize(("currency", "places"), [
    ("JPY", 0), ("KRW", 0), ("ISK", 0), ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2),
    ("KWD", 3), ("BHD", 3), ("JOD", 3), ("TND", 3), ("CLF", 4),
])
def test_minor_units_follow_iso_4217(currency, places):
    assert minor_units(currency) == places
    assert quantum(currency) == Decimal(1).scaleb(-places)


@pytest.mark.parametrize(("amount", "currency", "rounded"), [
    ("0.005", "USD", "0.01"),  # a tie goes up, not to even
    ("0.015", "USD", "0.02"),
    ("0.0149999", "USD", "0.01"),
    ("2.5", "JPY", "3"),
    ("3.5", "JPY", "4"),
    ("1.0005", "KWD", "1.001"),
    ("1.00049", "KWD", "1.000"),
    ("-0.005", "USD", "-0.01"),  # ties away from zero on both sides
    ("12", "USD", "12.00"),
    ("0.000000150000", "USD", "0.00"),
])
def test_round_money_is_half_up_to_minor_units(amount, currency, rounded):
    result = round_money(Decimal(amount), currency)
    assert result == Decimal(rounded)
    assert result.as_tuple().exponent == -minor_units(currency)


def test_round_money_refuses_floats():
    with pytest.raises(TypeError, match="Decimal"):
        round_money(0.1, "USD")


def test_round_money_refuses_infinity():
    with pytest.raises(CurrencyError, match="finite"):
        round_money(Decimal("Infinity"), "USD")


@pytest.mark.parametrize(("code", "message"), [
    ("usd", "did you mean USD"),
    ("US", "three upper-case"),
    ("ABC", "not an ISO 4217 currency"),
    ("XAU", "no minor unit"),
    ("XXX", "no minor unit"),
    (None, "not a currency code"),
])
def test_validate_currency_explains_what_is_wrong(code, message):
    with pytest.raises(CurrencyError, match=message):
        validate_currency(code)


def test_minor_unit_conversions():
    assert to_minor(Decimal("12.34"), "USD") == 1234
    assert to_minor(Decimal("1234"), "JPY") == 1234
    assert to_minor(Decimal("-0.001"), "KWD") == -1
    assert from_minor(1234, "USD") == Decimal("12.34")
    assert from_minor(7, "KWD") == Decimal("0.007")
    with pytest.raises(CurrencyError, match="more decimal places than USD"):
        to_minor(Decimal("0.001"), "USD")


def test_require_rounded_names_the_amount():
    assert require_rounded(Decimal("1.50"), "USD") == Decimal("1.50")
    with pytest.raises(CurrencyError, match="minimum: 1.5 has more decimal places than JPY"):
        require_rounded(Decimal("1.5"), "JPY", "minimum")


@given(st.decimals(min_value=-10**9, max_value=10**9, places=8), st.sampled_from(["JPY", "USD", "KWD", "CLF"]))
def test_rounding_is_within_half_a_minor_unit_and_idempotent(amount, currency):
    rounded = round_money(amount, currency)
    assert abs(rounded - amount) <= quantum(currency) / 2
    assert round_money(rounded, currency) == rounded
    assert is_rounded(rounded, currency)
    assert from_minor(to_minor(rounded, currency), currency) == rounded
