"""VAT decisions (pure: no database, no network) and their effect on invoice totals."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.rating import USAGE, Line, Period, invoice_totals
from billing.tax import (
    DOMESTIC,
    EU_DESTINATION,
    OUTSIDE_EU_BUSINESS,
    OUTSIDE_EU_CONSUMER,
    OUTSIDE_EU_NOTE,
    REVERSE_CHARGE,
    REVERSE_CHARGE_NOTE,
    Customer,
    TaxError,
    tax_for,
    validate_country,
    vat_id_error,
    vat_rates,
)

SELLER = "IE"
JANUARY = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
EU_27 = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT",
         "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"}


def test_rates_file_lists_the_27_member_states_and_the_others():
    rates = vat_rates()
    assert set(rates.eu_member_states) == EU_27
    assert rates.eu_member_states["IE"] == Decimal("23")
    assert rates.eu_member_states["FI"] == Decimal("25.5")  # read exactly, not through a float
    assert rates.eu_member_states["DE"] == Decimal("19")
    assert rates.other_countries == {"GB": Decimal("20"), "CH": Decimal("8.1"), "NO": Decimal("25"),
                                     "JP": Decimal("10"), "US": Decimal("0")}
    assert rates.as_of.year >= 2025
    assert all(Decimal(0) <= rate < Decimal(30) for rate in rates.eu_member_states.values())


def test_business_in_another_member_state_with_a_valid_vat_id_is_reverse_charged():
    decision = tax_for(seller_country=SELLER, customer=Customer("DE", is_business=True, vat_id="DE 136 695 976"))
    assert decision.rate_percent == 0
    assert decision.scheme == REVERSE_CHARGE
    assert decision.reverse_charge
    assert decision.invoice_note == REVERSE_CHARGE_NOTE == ("Reverse charge: VAT to be accounted for by the "
                                                            "recipient, Art. 196 Directive 2006/112/EC")
    assert "DE136695976" in decision.reason


def test_reverse_charged_invoice_has_no_tax():
    lines = [Line(kind=USAGE, currency="EUR", amount=Decimal("1234.56"), description="input_tokens")]
    decision = tax_for(seller_country=SELLER, customer=Customer("NL", is_business=True, vat_id="NL004495445B01"))
    totals = invoice_totals(lines, [], decision.rate_percent, currency="EUR", period=JANUARY)
    assert (totals.subtotal, totals.tax, totals.total) == (Decimal("1234.56"), Decimal("0.00"), Decimal("1234.56"))


def test_greek_vat_ids_start_with_el():
    decision = tax_for(seller_country=SELLER, customer=Customer("GR", is_business=True, vat_id="EL094259216"))
    assert decision.scheme == REVERSE_CHARGE
    assert "starts with EL" in vat_id_error("GR094259216", "GR")


def test_consumer_in_another_member_state_pays_their_countrys_rate():
    decision = tax_for(seller_country=SELLER, customer=Customer("FR", is_business=False))
    assert decision.rate_percent == Decimal("20")
    assert decision.scheme == EU_DESTINATION
    assert not decision.reverse_charge
    assert decision.invoice_note == ""
    lines = [Line(kind=USAGE, currency="EUR", amount=Decimal("99.99"), description="output_tokens")]
    totals = invoice_totals(lines, [], decision.rate_percent, currency="EUR", period=JANUARY)
    # 99.99 × 20 % = 19.998 → 20.00 (half-up, once)
    assert (totals.tax, totals.total) == (Decimal("20.00"), Decimal("119.99"))


def test_finnish_consumer_rate_has_a_half_percent():
    decision = tax_for(seller_country=SELLER, customer=Customer("FI", is_business=False))
    lines = [Line(kind=USAGE, currency="EUR", amount=Decimal("10.00"), description="requests")]
    totals = invoice_totals(lines, [], decision.rate_percent, currency="EUR", period=JANUARY)
    assert totals.tax == Decimal("2.55")  # 10.00 × 25.5 %


def test_business_in_the_sellers_own_country_pays_local_vat():
    decision = tax_for(seller_country=SELLER, customer=Customer("IE", is_business=True, vat_id="IE6388047V"))
    assert (decision.rate_percent, decision.scheme, decision.reverse_charge) == (Decimal("23"), DOMESTIC, False)


def test_business_without_a_valid_vat_id_is_taxed_like_a_consumer():
    invalid = tax_for(seller_country=SELLER, customer=Customer("DE", is_business=True, vat_id="DE136695977"))
    assert (invalid.rate_percent, invalid.scheme) == (Decimal("19"), EU_DESTINATION)
    assert "check digits" in invalid.reason
    missing = tax_for(seller_country=SELLER, customer=Customer("DE", is_business=True))
    assert missing.rate_percent == Decimal("19")
    assert "no VAT id" in missing.reason
    # A valid id of another member state does not make a German customer reverse-charged.
    foreign_id = tax_for(seller_country=SELLER, customer=Customer("DE", is_business=True, vat_id="FR40303265045"))
    assert foreign_id.scheme == EU_DESTINATION


@pytest.mark.parametrize(("country", "rate"), [("GB", "20"), ("CH", "8.1"), ("NO", "25"), ("JP", "10"),
                                               ("US", "0"), ("BR", "0")])
def test_consumers_outside_the_eu_pay_the_rate_on_file_or_nothing(country, rate):
    decision = tax_for(seller_country=SELLER, customer=Customer(country, is_business=False))
    assert decision.rate_percent == Decimal(rate)
    assert decision.scheme == OUTSIDE_EU_CONSUMER
    assert decision.invoice_note == ("" if Decimal(rate) else OUTSIDE_EU_NOTE)


def test_businesses_outside_the_eu_are_not_charged_vat():
    decision = tax_for(seller_country=SELLER, customer=Customer("JP", is_business=True))
    assert (decision.rate_percent, decision.scheme, decision.invoice_note) == (0, OUTSIDE_EU_BUSINESS, OUTSIDE_EU_NOTE)


def test_northern_ireland_ids_do_not_make_a_uk_customer_european():
    decision = tax_for(seller_country=SELLER, customer=Customer("GB", is_business=True, vat_id="XI980780684"))
    assert decision.scheme == OUTSIDE_EU_BUSINESS


def test_seller_outside_the_eu_is_refused():
    with pytest.raises(TaxError, match="seller country: US is not an EU member state"):
        tax_for(seller_country="US", customer=Customer("DE", is_business=False))


@pytest.mark.parametrize("country", ["ie", "IRL", "XX", "", None])
def test_country_codes_are_validated(country):
    with pytest.raises(TaxError, match="customer country: .* is not an ISO 3166-1 alpha-2"):
        tax_for(seller_country=SELLER, customer=Customer(country, is_business=False))
    with pytest.raises(TaxError, match="seller country"):
        validate_country(country, "seller country")


def test_vat_id_error_messages():
    assert vat_id_error("ATU13585627", "AT") is None
    assert "starts with DE" in vat_id_error("ATU13585627", "DE")
    assert "not a valid DE VAT id" in vat_id_error("DE12", "DE")
