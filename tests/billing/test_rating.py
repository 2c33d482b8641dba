"""Rating, allocation, credits and totals (pure: no database).

Hand-computed scenarios first (each comment shows the arithmetic), then hypothesis
properties over random price books, quantities and credit grants.
"""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.money import round_money, to_minor
from billing.pricebook_format import default_price_book
from billing.rating import (
    COMMITMENT_SHORTFALL,
    GRADUATED,
    PACKAGE,
    PER_UNIT,
    VOLUME,
    CreditApplication,
    CreditGrant,
    Period,
    Price,
    PriceBook,
    PriceError,
    Quantity,
    RatingError,
    Tier,
    allocate,
    charge_amount,
    effective_price_book,
    invoice_totals,
    list_amount,
    rate,
    rate_late_usage,
)
from billing.tax import Customer, tax_for

D = Decimal
JANUARY = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def book(*prices, currency="USD", **contract) -> PriceBook:
    return PriceBook(name="test", currency=currency, prices=prices, **contract)


def usage(meter, deployment, quantity, tier=None) -> Quantity:
    return Quantity(meter=meter, deployment=deployment, hardware_tier=tier, quantity=D(quantity))


def amounts(lines) -> dict:
    return {(line.meter, line.deployment, line.hardware_tier): line.amount for line in lines}


TOKENS_GRADUATED = Price(meter="input_tokens", model=GRADUATED, tiers=(
    Tier(up_to=D(1_000_000), unit_price=D("0.000002000000")),
    Tier(up_to=None, unit_price=D("0.000001000000")),
))


# --- price models -----------------------------------------------------------------------------


def test_graduated_tiers_crossed_mid_month_price_the_units_above_the_boundary_at_the_next_tier():
    # The tenant's month: 700,000 tokens on dep-a, then 500,000 on dep-b (1,200,000 in all).
    # 1,000,000 × 0.000002 + 200,000 × 0.000001 = 2.00 + 0.20 = 2.20 USD for the month,
    # split by quantity: dep-a 7/12 × 220 ¢ = 128.33 → 128, dep-b 91.67 → 91, and the cent
    # left over goes to the larger remainder (dep-b): 1.28 + 0.92 = 2.20.
    lines = rate([usage("input_tokens", "dep-a", 700_000), usage("input_tokens", "dep-b", 500_000)],
                 book(TOKENS_GRADUATED))
    assert amounts(lines) == {("input_tokens", "dep-a", None): D("1.28"), ("input_tokens", "dep-b", None): D("0.92")}
    assert {line.charge_amount for line in lines} == {D("2.20")}
    assert {line.charge_quantity for line in lines} == {D(1_200_000)}


def test_default_book_graduated_tokens():
    # 1.5 billion input tokens: 1e9 × 0.00000015 + 0.5e9 × 0.00000012 = 150.00 + 60.00.
    # 20 billion output tokens: 1e9 × 0.0000006 + 9e9 × 0.00000048 + 10e9 × 0.0000004
    #                          = 600.00 + 4,320.00 + 4,000.00 = 8,920.00.
    lines = rate([usage("input_tokens", "dep", 1_500_000_000, "h100-80gb-on-demand"),
                  usage("output_tokens", "dep", 20_000_000_000, "h100-80gb-on-demand")], default_price_book())
    assert [(line.meter, line.amount) for line in lines] == [("input_tokens", D("210.00")),
                                                             ("output_tokens", D("8920.00"))]


def test_default_book_prices_accelerator_seconds_per_hardware_tier():
    # A month of one H100 on demand: 720 h × 3600 s × 0.00125 = 3,240.00 (4.50 USD/h).
    # 10 spot L4 hours: 36,000 s × 0.000088888889 = 3.200000004 → 3.20.
    lines = rate([usage("accelerator_seconds", "dep", 720 * 3600, "h100-80gb-on-demand"),
                  usage("accelerator_seconds", "dep", 36_000, "l4-24gb-spot")], default_price_book())
    assert amounts(lines) == {("accelerator_seconds", "dep", "h100-80gb-on-demand"): D("3240.00"),
                              ("accelerator_seconds", "dep", "l4-24gb-spot"): D("3.20")}
    assert {line.price_hardware_tier for line in lines} == {"h100-80gb-on-demand", "l4-24gb-spot"}


def test_per_tier_prices_pool_each_tier_separately():
    price_h100 = Price(meter="gpu_seconds", model=GRADUATED, hardware_tier="h100",
                       tiers=(Tier(D(100), D("1")), Tier(None, D("0.5"))))
    price_any = Price(meter="gpu_seconds", model=PER_UNIT, unit_price=D("0.1"))
    # h100: 80 + 40 = 120 s pooled: 100 × 1 + 20 × 0.5 = 110.00, split 80:40 → 73.33 / 36.67.
    # l4 and a100 fall back to the meter's any-tier price, and pool together: 90 s × 0.1 = 9.00.
    lines = rate([usage("gpu_seconds", "a", 80, "h100"), usage("gpu_seconds", "b", 40, "h100"),
                  usage("gpu_seconds", "a", 50, "l4"), usage("gpu_seconds", "b", 40, "a100")],
                 book(price_h100, price_any))
    assert amounts(lines) == {("gpu_seconds", "a", "h100"): D("73.33"), ("gpu_seconds", "b", "h100"): D("36.67"),
                              ("gpu_seconds", "b", "a100"): D("4.00"), ("gpu_seconds", "a", "l4"): D("5.00")}


def test_graduated_flat_fee_is_charged_once_per_tier_entered():
    price = Price(meter="requests", model=GRADUATED, tiers=(
        Tier(D(10), D("1"), flat_fee=D("5")), Tier(None, D("0.5"), flat_fee=D("20"))))
    assert list_amount(price, D(4)) == D(9)  # 5 + 4 × 1
    assert list_amount(price, D(10)) == D(15)  # the second tier is not entered
    assert list_amount(price, D(12)) == D(36)  # 5 + 10 + 20 + 2 × 0.5


@pytest.mark.parametrize(("quantity", "expected"), [
    (1, "0.10"),
    (1000, "100.00"),  # the boundary belongs to the lower tier
    (1001, "80.08"),  # every unit at 0.08 once the total passes 1000: 1001 × 0.08
    (12_000, "600.00"),  # 12,000 × 0.05
])
def test_volume_prices_the_whole_quantity_at_the_tier_the_total_falls_in(quantity, expected):
    price = Price(meter="requests", model=VOLUME, tiers=(
        Tier(D(1000), D("0.10")), Tier(D(10_000), D("0.08")), Tier(None, D("0.05"))))
    lines = rate([usage("requests", "dep", quantity)], book(price))
    assert [line.amount for line in lines] == [D(expected)]


def test_volume_tier_flat_fee():
    price = Price(meter="requests", model=VOLUME, tiers=(Tier(D(100), D(0), flat_fee=D("49")),
                                                         Tier(None, D("0.25"), flat_fee=D("10"))))
    assert list_amount(price, D(100)) == D(49)
    assert list_amount(price, D(200)) == D(60)  # 200 × 0.25 + 10


@pytest.mark.parametrize(("quantity", "packages"), [(1_000_001, 1), (1_001_000, 1), (1_001_001, 2),
                                                    (1_002_500, 3), (D("1000000.5"), 1)])
def test_package_rounds_partial_packages_up_after_the_free_allowance(quantity, packages):
    price = Price(meter="requests", model=PACKAGE, package_size=D(1000), unit_price=D("0.01"),
                  free_units=D(1_000_000))
    assert list_amount(price, D(quantity)) == packages * D("0.01")


def test_usage_within_the_free_allowance_is_listed_at_zero():
    price = Price(meter="requests", model=PACKAGE, package_size=D(1000), unit_price=D("0.01"),
                  free_units=D(1_000_000))
    lines = rate([usage("requests", "dep", 999_999)], book(price))
    assert [(line.quantity, line.amount) for line in lines] == [(D(999_999), D("0.00"))]


@pytest.mark.parametrize(("quantity", "expected"), [
    (10, "0.00"),  # all free: no minimum either
    (11, "20.00"),  # 1 × 0.50 = 0.50, floored at the minimum
    (100, "45.00"),  # 90 × 0.50
])
def test_free_allowance_then_minimum(quantity, expected):
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("0.50"), free_units=D(10), minimum=D("20"))
    assert charge_amount(price, D(quantity), book(price)) == D(expected)


def test_a_charge_is_rounded_once_not_per_record():
    # Three records of one token at 0.004: 0.012 → 0.01. Rounding each record would give 0.00.
    price = Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.004"))
    lines = rate([usage("input_tokens", "dep", 1)] * 3, book(price))
    assert [line.amount for line in lines] == [D("0.01")]


def test_tiny_unit_prices_keep_every_decimal():
    # 0.000000150000 × 33,333,333 = 4.99999995 → 5.00; a price cut to 9 places would still
    # give 4.99999995, but one cut to 7 (0.0000002) would give 6.67.
    price = Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.000000150000"))
    assert list_amount(price, D(33_333_333)) == D("4.99999995")
    assert [line.amount for line in rate([usage("input_tokens", "dep", 33_333_333)], book(price))] == [D("5.00")]


# --- contracts --------------------------------------------------------------------------------


def test_contract_discount_is_applied_to_each_charge_before_rounding():
    # 2.20 list − 12.5 % = 1.925 → 1.93 (rounded once, after the discount), split 7:5 → 1.13 / 0.80.
    lines = rate([usage("input_tokens", "dep-a", 700_000), usage("input_tokens", "dep-b", 500_000)],
                 book(TOKENS_GRADUATED, tenant="acme", discount_percent=D("12.5")))
    assert amounts(lines) == {("input_tokens", "dep-a", None): D("1.13"), ("input_tokens", "dep-b", None): D("0.80")}
    assert {line.discount_percent for line in lines} == {D("12.5")}


def test_commitment_shortfall_line_tops_the_subtotal_up():
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("0.01"))
    lines = rate([usage("requests", "dep", 32_040)], book(price, tenant="acme", minimum_commitment=D("500")))
    assert [(line.kind, line.amount) for line in lines] == [("usage", D("320.40")),
                                                            (COMMITMENT_SHORTFALL, D("179.60"))]
    assert sum(line.amount for line in lines) == D("500.00")


def test_commitment_is_billed_without_any_usage_and_not_when_exceeded():
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("0.01"))
    committed = book(price, tenant="acme", minimum_commitment=D("500"))
    assert [(line.kind, line.amount) for line in rate([], committed)] == [(COMMITMENT_SHORTFALL, D(500))]
    assert [line.kind for line in rate([usage("requests", "dep", 60_000)], committed)] == ["usage"]


def test_contract_overrides_replace_prices_per_meter_and_tier():
    default = default_price_book()
    contract = PriceBook(name="acme 2026", currency="USD", tenant="acme", discount_percent=D(5), prices=(
        Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.0000001")),
        Price(meter="accelerator_seconds", hardware_tier="h100-80gb-on-demand", model=PER_UNIT,
              unit_price=D("0.001")),
    ))
    effective = effective_price_book(default, contract)
    assert (effective.tenant, effective.discount_percent) == ("acme", D(5))
    assert effective.price_for("input_tokens", None).model == PER_UNIT
    assert effective.price_for("output_tokens", None) == default.price_for("output_tokens", None)
    assert effective.price_for("accelerator_seconds", "h100-80gb-on-demand").unit_price == D("0.001")
    assert effective.price_for("accelerator_seconds", "l4-24gb-spot") == default.price_for(
        "accelerator_seconds", "l4-24gb-spot")
    assert len(effective.prices) == len(default.prices)
    assert effective_price_book(default, None) is default


def test_contract_in_another_currency_stands_alone():
    contract = PriceBook(name="jp", currency="JPY", tenant="tokyo-ai", prices=(
        Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.0225")),))
    effective = effective_price_book(default_price_book(), contract)
    assert effective == contract
    with pytest.raises(RatingError, match="no price for output_tokens"):
        rate([usage("output_tokens", "dep", 1)], effective)


def test_contract_must_name_its_tenant():
    with pytest.raises(PriceError, match="tenant"):
        effective_price_book(default_price_book(), book(TOKENS_GRADUATED))


def test_usage_of_an_unpriced_meter_is_an_error_naming_it():
    with pytest.raises(RatingError, match="no price for requests on h100 \\(deployment dep-9\\)"):
        rate([usage("requests", "dep-9", 5, "h100")], book(TOKENS_GRADUATED))
    # A zero record needs no price: it is ignored.
    assert rate([usage("requests", "dep-9", 0, "h100")], book(TOKENS_GRADUATED)) == []


def test_negative_quantities_are_refused():
    with pytest.raises(RatingError, match="≥ 0"):
        usage("requests", "dep", -1)


# --- currencies -------------------------------------------------------------------------------


def test_jpy_tenant_has_whole_yen():
    # 1,234,567 tokens × 0.0225 JPY = 27,777.7575 → 27,778 JPY; Japanese consumption tax 10 %
    # for a consumer: 2,777.8 → 2,778; total 30,556 JPY.
    jpy = PriceBook(name="jp", currency="JPY", tenant="tokyo-ai", prices=(
        Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.0225")),))
    lines = rate([usage("input_tokens", "dep", 1_234_567)], jpy)
    assert [line.amount for line in lines] == [D("27778")]
    decision = tax_for(seller_country="IE", customer=Customer("JP", is_business=False))
    totals = invoice_totals(lines, [], decision.rate_percent, currency="JPY", period=JANUARY)
    assert (totals.subtotal, totals.tax, totals.total) == (D("27778"), D("2778"), D("30556"))
    assert totals.total.as_tuple().exponent == 0


def test_jpy_allocation_splits_whole_yen():
    # 10 JPY over three equal deployments: 3 + 3 + 3 and the remaining yen to the first key.
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("1"))
    lines = rate([usage("requests", name, D("10") / 3) for name in ("a", "b", "c")],
                 PriceBook(name="jp", currency="JPY", prices=(price,)))
    assert [line.amount for line in lines] == [D(4), D(3), D(3)]


def test_kwd_keeps_three_decimals():
    # 1,234,567 tokens × 0.0000465 KWD = 57.4073655 → 57.407 KWD; split 2:1 over two
    # deployments: 57,407 fils × 2/3 = 38,271.33 → 38.271, and 19.136 (the fils left over
    # goes to the larger remainder, .67).
    kwd = PriceBook(name="kw", currency="KWD", prices=(
        Price(meter="input_tokens", model=PER_UNIT, unit_price=D("0.0000465")),))
    lines = rate([usage("input_tokens", "a", D(1_234_567) * 2 / 3), usage("input_tokens", "b", D(1_234_567) / 3)],
                 kwd)
    assert lines[0].charge_amount == D("57.407")
    assert [line.amount for line in lines] == [D("38.271"), D("19.136")]
    totals = invoice_totals(lines, [], D(0), currency="KWD", period=JANUARY)
    assert totals.total == D("57.407")


def test_minimums_must_fit_the_currency():
    with pytest.raises(PriceError, match="prices\\[0\\].minimum: 1.5 has more decimal places than JPY"):
        PriceBook(name="jp", currency="JPY", prices=(
            Price(meter="requests", model=PER_UNIT, unit_price=D(1), minimum=D("1.5")),))


# --- credits and totals -----------------------------------------------------------------------


def grant(grant_id, available, *, effective=datetime(2025, 12, 1, tzinfo=UTC), expires=None, priority=50,
          currency="USD") -> CreditGrant:
    return CreditGrant(id=grant_id, currency=currency, available=D(available), effective_at=effective,
                       expires_at=expires, priority=priority)


def test_credits_by_priority_then_earliest_expiry_including_one_expiring_mid_period():
    # Subtotal 120.00. Eligible for January: promo (priority 10, 5.00), mid-january (expires
    # Jan 15: its validity overlaps the period, so it counts in full: 30.00), prepaid (no expiry:
    # 50.00 of it). Not eligible: expired before January, granted after it.
    grants = [
        grant("prepaid", "100.00"),
        grant("mid-january", "30.00", expires=datetime(2026, 1, 15, tzinfo=UTC)),
        grant("expired", "50.00", expires=datetime(2026, 1, 1, tzinfo=UTC)),
        grant("february", "50.00", effective=datetime(2026, 2, 1, tzinfo=UTC)),
        grant("promo", "5.00", priority=10, expires=datetime(2026, 3, 1, tzinfo=UTC)),
        grant("later-expiry", "40.00", expires=datetime(2026, 6, 1, tzinfo=UTC)),
    ]
    lines = rate([usage("requests", "dep", 12_000)],
                 book(Price(meter="requests", model=PER_UNIT, unit_price=D("0.01"))))
    totals = invoice_totals(lines, grants, D(23), currency="USD", period=JANUARY)
    assert totals.credit_applications == (
        CreditApplication("promo", D("5.00")),
        CreditApplication("mid-january", D("30.00")),
        CreditApplication("later-expiry", D("40.00")),
        CreditApplication("prepaid", D("45.00")),
    )
    # taxable 0 → tax 0; credits never exceed the subtotal.
    assert (totals.subtotal, totals.credits, totals.tax, totals.total) == (D("120.00"), D("120.00"), D(0), D(0))


def test_tax_is_computed_once_on_the_subtotal_after_credits():
    # Subtotal 100.00 − 33.33 credit = 66.67; 23 % of it = 15.3341 → 15.33; total 82.00.
    lines = rate([usage("requests", "dep", 10_000)],
                 book(Price(meter="requests", model=PER_UNIT, unit_price=D("0.01"))))
    totals = invoice_totals(lines, [grant("g", "33.33")], D(23), currency="USD", period=JANUARY)
    assert (totals.subtotal, totals.credits, totals.taxable, totals.tax, totals.total) == (
        D("100.00"), D("33.33"), D("66.67"), D("15.33"), D("82.00"))


def test_grant_boundaries_are_half_open():
    # Expiring exactly when the period starts: not usable. Effective exactly when it ends: not usable.
    assert not grant("g", "1", expires=JANUARY.start).applies_to(JANUARY)
    assert not grant("g", "1", effective=JANUARY.end).applies_to(JANUARY)
    assert grant("g", "1", effective=JANUARY.end - timedelta(seconds=1)).applies_to(JANUARY)
    assert grant("g", "1", expires=JANUARY.start + timedelta(seconds=1)).applies_to(JANUARY)


def test_credits_in_another_currency_are_refused():
    with pytest.raises(ValueError, match="credit grant g is in EUR"):
        invoice_totals([], [grant("g", "1.00", currency="EUR")], D(0), currency="USD", period=JANUARY)


def test_lines_must_be_rounded_and_in_the_invoice_currency():
    line = rate([usage("requests", "dep", 1)], book(Price(meter="requests", model=PER_UNIT, unit_price=D("1"))))[0]
    with pytest.raises(ValueError, match="is in USD, the invoice in EUR"):
        invoice_totals([line], [], D(0), currency="EUR", period=JANUARY)


# --- late usage -------------------------------------------------------------------------------


def test_late_usage_continues_the_graduated_tiers_where_the_period_left_off():
    # January billed 900 units: 900 × 0.01 = 9.00. 300 more arrive in February: January's total
    # becomes 1000 × 0.01 + 200 × 0.005 = 11.00, so the adjustment is 2.00 (not 300 × 0.01 = 3.00).
    price = Price(meter="requests", model=GRADUATED, tiers=(Tier(D(1000), D("0.01")), Tier(None, D("0.005"))))
    billed = [usage("requests", "dep-a", 900)]
    lines = rate_late_usage([usage("requests", "dep-b", 300)], billed, book(price), JANUARY)
    assert [(line.deployment, line.quantity, line.amount, line.period_of_usage) for line in lines] == [
        ("dep-b", D(300), D("2.00"), JANUARY)]
    assert lines[0].is_adjustment
    assert "late usage of 2026-01-01 to 2026-02-01" in lines[0].description


def test_late_usage_fills_a_commitment_shortfall_already_billed():
    # January: 320.40 usage + 179.60 shortfall = 500.00. 100.00 of late usage: +100.00 usage,
    # −100.00 shortfall; January still costs 500.00 in all, so the tenant owes nothing more.
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("0.01"))
    committed = book(price, tenant="acme", minimum_commitment=D("500"))
    lines = rate_late_usage([usage("requests", "dep", 10_000)], [usage("requests", "dep", 32_040)], committed,
                            JANUARY)
    assert [(line.kind, line.amount) for line in lines] == [("usage", D("100.00")),
                                                            (COMMITMENT_SHORTFALL, D("-100.00"))]


def test_late_usage_does_not_charge_a_minimum_twice():
    price = Price(meter="requests", model=PER_UNIT, unit_price=D("0.50"), minimum=D("20"))
    lines = rate_late_usage([usage("requests", "dep", 2)], [usage("requests", "dep", 10)], book(price), JANUARY)
    assert [line.amount for line in lines] == [D("0.00")]  # 12 × 0.50 = 6.00 is still under the 20.00 already paid


def test_an_invoice_whose_adjustments_make_it_negative_is_refused():
    price = Price(meter="requests", model=VOLUME, tiers=(Tier(D(100), D(1)), Tier(None, D("0.5"))))
    lines = rate_late_usage([usage("requests", "dep", 1)], [usage("requests", "dep", 100)], book(price), JANUARY)
    assert [line.amount for line in lines] == [D("-49.50")]  # 101 × 0.5 − 100 × 1
    with pytest.raises(RatingError, match="credit note"):
        invoice_totals(lines, [], D(0), currency="USD", period=JANUARY)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "bulk", "unit_price": D(1)}, "model: must be one of"),
    ({"model": PER_UNIT}, "unit_price: is required"),
    ({"model": PER_UNIT, "unit_price": 0.1}, "unit_price: must be a decimal number"),
    ({"model": PER_UNIT, "unit_price": D(-1)}, "unit_price: must be ≥ 0"),
    ({"model": PACKAGE, "unit_price": D(1)}, "package_size: is required"),
    ({"model": PACKAGE, "unit_price": D(1), "package_size": D(0)}, "package_size: must be greater than 0"),
    ({"model": GRADUATED}, "tiers: at least one tier"),
    ({"model": GRADUATED, "tiers": (Tier(D(10), D(1)),)}, "tiers\\[0\\].up_to: the last tier must be open-ended"),
    ({"model": VOLUME, "tiers": (Tier(None, D(1)), Tier(None, D(1)))}, "tiers\\[0\\].up_to: only the last tier"),
    ({"model": GRADUATED, "tiers": (Tier(D(10), D(1)), Tier(D(10), D(1)), Tier(None, D(1)))},
     "tiers\\[1\\].up_to: must increase"),
    ({"model": PER_UNIT, "unit_price": D(1), "tiers": (Tier(None, D(1)),)}, "tiers: only graduated and volume"),
    ({"model": PER_UNIT, "unit_price": D(1), "free_units": D(-5)}, "free_units: must be ≥ 0"),
])
def test_price_rules(kwargs, message):
    with pytest.raises(PriceError, match=message):
        Price(meter="requests", **kwargs)


def test_price_book_rules():
    price = Price(meter="requests", model=PER_UNIT, unit_price=D(1))
    with pytest.raises(PriceError, match="prices\\[1\\]: a second price for requests \\(the first is prices\\[0\\]\\)"):
        book(price, price)
    with pytest.raises(PriceError, match="discount_percent: must be between 0 and 100"):
        book(price, discount_percent=D(101))
    with pytest.raises(PriceError, match="currency"):
        book(price, currency="XAU")


def test_the_money_cores_import_nothing_from_django_or_the_apps():
    script = ("import sys, billing.money, billing.rating, billing.tax, billing.pricebook_format; "
              "print(sorted({name.split('.')[0] for name in sys.modules} & {'django', 'rest_framework', 'scheduler', "
              "'tenants', 'console', 'gateway'}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"


# --- properties -------------------------------------------------------------------------------

CURRENCIES = ["USD", "JPY", "KWD"]
METERS = ["input_tokens", "output_tokens", "requests"]
DEPLOYMENTS = ["dep-a", "dep-b", "dep-c"]
HARDWARE_TIERS = [None, "h100", "l4"]

unit_prices = st.decimals(min_value=0, max_value=5, places=12)
amounts_of_money = st.decimals(min_value=0, max_value=50, places=0)


@st.composite
def tier_lists(draw):
    bounds = sorted(draw(st.lists(st.integers(1, 5000), unique=True, max_size=3)))
    ups = [D(bound) for bound in bounds] + [None]
    return tuple(Tier(up_to=up, unit_price=draw(unit_prices),
                      flat_fee=draw(st.sampled_from([D(0), D(0), D("1.5")]))) for up in ups)


@st.composite
def prices(draw, meter, hardware_tier=None):
    model = draw(st.sampled_from([PER_UNIT, GRADUATED, VOLUME, PACKAGE]))
    common = {"meter": meter, "hardware_tier": hardware_tier, "model": model,
              "free_units": draw(st.sampled_from([D(0), D(0), D(100)])),
              "minimum": draw(st.sampled_from([D(0), D(0), D(5)]))}
    if model in (GRADUATED, VOLUME):
        return Price(tiers=draw(tier_lists()), **common)
    if model == PACKAGE:
        return Price(unit_price=draw(unit_prices), package_size=D(draw(st.integers(1, 500))), **common)
    return Price(unit_price=draw(unit_prices), **common)


@st.composite
def price_books(draw, currency=None):
    currency = currency or draw(st.sampled_from(CURRENCIES))
    book_prices = [draw(prices(meter)) for meter in METERS]
    if draw(st.booleans()):  # a per-tier price beside the any-tier one
        book_prices.append(draw(prices("input_tokens", "h100")))
    return PriceBook(name="generated", currency=currency, prices=tuple(book_prices),
                     tenant=draw(st.sampled_from([None, "acme"])),
                     discount_percent=draw(st.sampled_from([D(0), D(0), D("12.5"), D(100)])),
                     minimum_commitment=draw(st.sampled_from([D(0), D(0), D(50), D(5000)])))


quantity_records = st.lists(st.builds(
    Quantity, meter=st.sampled_from(METERS), deployment=st.sampled_from(DEPLOYMENTS),
    hardware_tier=st.sampled_from(HARDWARE_TIERS),
    quantity=st.one_of(st.integers(0, 20_000).map(D), st.decimals(min_value=0, max_value=20_000, places=3)),
), max_size=12)


@st.composite
def credit_grants(draw, currency):
    result = []
    for index in range(draw(st.integers(0, 4))):
        effective = JANUARY.start + timedelta(days=draw(st.integers(-60, 40)))
        expires = draw(st.one_of(st.none(), st.integers(1, 90).map(lambda days: effective + timedelta(days=days))))
        result.append(CreditGrant(id=f"grant-{index}", currency=currency, available=draw(amounts_of_money),
                                  effective_at=effective, expires_at=expires, priority=draw(st.integers(0, 100))))
    return result


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_invoice_totals_add_up_exactly_and_never_go_negative(data):
    price_book = data.draw(price_books())
    lines = rate(data.draw(quantity_records), price_book)
    grants = data.draw(credit_grants(price_book.currency))
    tax_rate = data.draw(st.sampled_from([D(0), D(19), D("25.5"), D("8.1"), D(10)]))
    totals = invoice_totals(lines, grants, tax_rate, currency=price_book.currency, period=JANUARY)
    assert totals.subtotal == sum((line.amount for line in lines), D(0))
    assert totals.total == totals.subtotal - totals.credits + totals.tax
    assert totals.tax == round_money(totals.taxable * tax_rate / 100, price_book.currency)
    assert min(totals.subtotal, totals.credits, totals.taxable, totals.tax, totals.total) >= 0
    assert totals.credits <= totals.subtotal
    assert totals.credits == sum((application.amount for application in totals.credit_applications), D(0))
    by_id = {grant.id: grant for grant in grants}
    for application in totals.credit_applications:
        assert 0 < application.amount <= by_id[application.grant_id].available
        assert by_id[application.grant_id].applies_to(JANUARY)
    if totals.credits < totals.subtotal:  # credits left unused only when no eligible grant had any left
        used = {application.grant_id: application.amount for application in totals.credit_applications}
        assert all(used.get(grant.id, 0) == grant.available for grant in grants if grant.applies_to(JANUARY))
    for value in (totals.subtotal, totals.credits, totals.tax, totals.total):
        to_minor(value, price_book.currency)  # every figure is a whole number of minor units


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rating_ignores_record_order_and_zero_records(data):
    price_book = data.draw(price_books())
    records = data.draw(quantity_records)
    shuffled = data.draw(st.permutations(records))
    zeros = [Quantity(record.meter, record.deployment, record.hardware_tier, D(0))
             for record in data.draw(st.lists(st.sampled_from(records), max_size=5))] if records else []
    assert rate(records, price_book) == rate([*shuffled, *zeros, *zeros], price_book)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_lines_of_a_charge_sum_exactly_to_its_amount_rounded_once(data):
    price_book = data.draw(price_books())
    lines = [line for line in rate(data.draw(quantity_records), price_book) if line.kind == "usage"]
    charges = {}
    for line in lines:
        charges.setdefault((line.meter, line.price_hardware_tier), []).append(line)
    for (meter, price_tier), charge_lines in charges.items():
        price = price_book.price_for(meter, price_tier)
        quantity = sum((line.quantity for line in charge_lines), D(0))
        expected = round_money(list_amount(price, quantity) * (100 - price_book.discount_percent) / 100,
                               price_book.currency)
        assert {line.charge_amount for line in charge_lines} == {expected}
        assert {line.charge_quantity for line in charge_lines} == {quantity}
        assert sum((line.amount for line in charge_lines), D(0)) == expected


@settings(max_examples=200, deadline=None)
@given(total=st.integers(-10**6, 10**6), weights=st.lists(st.decimals(min_value=0, max_value=10**6, places=4),
                                                          min_size=1, max_size=8),
       currency=st.sampled_from(CURRENCIES))
def test_allocation_sums_exactly_and_each_share_is_within_one_minor_unit(total, weights, currency):
    weights = {f"k{index}": weight for index, weight in enumerate(weights)}
    if not any(weights.values()):
        weights["k0"] = D(1)
    amount = total * D(1).scaleb(-{"USD": 2, "JPY": 0, "KWD": 3}[currency])
    shares = allocate(amount, weights, currency)
    assert sum(shares.values(), D(0)) == amount
    weight_sum = sum(weights.values())
    for key, share in shares.items():
        exact_units = D(to_minor(amount, currency)) * weights[key] / weight_sum
        assert abs(to_minor(share, currency) - exact_units) < 1


@settings(max_examples=200, deadline=None)
@given(tiers=tier_lists(), quantity=st.integers(0, 6000))
def test_graduated_equals_pricing_each_unit_by_its_tier(tiers, quantity):
    price = Price(meter="requests", model=GRADUATED, tiers=tiers)
    expected, entered = D(0), set()
    lower = 0
    for index, tier in enumerate(tiers):
        upper = quantity if tier.up_to is None else min(quantity, int(tier.up_to))
        units_here = max(upper - lower, 0)
        expected += units_here * tier.unit_price
        if units_here:
            entered.add(index)
        if tier.up_to is not None:
            lower = int(tier.up_to)
    expected += sum((tiers[index].flat_fee for index in entered), D(0))
    assert list_amount(price, D(quantity)) == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_late_adjustments_telescope_to_the_period_rated_with_everything(data):
    price_book = data.draw(price_books())
    billed = data.draw(quantity_records)
    late = data.draw(quantity_records)
    adjustments = rate_late_usage(late, billed, price_book, JANUARY)
    before = sum((line.amount for line in rate(billed, price_book)), D(0))
    after = sum((line.amount for line in rate([*billed, *late], price_book)), D(0))
    assert before + sum((line.amount for line in adjustments), D(0)) == after
    assert all(line.period_of_usage == JANUARY for line in adjustments)
