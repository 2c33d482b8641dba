"""Which VAT rate an invoice carries, and why. Pure: no Django, no network.

The issuer (seller) is established in an EU member state, given as a setting (e.g. IE).
Rates are the standard rates of `data/vat_rates.yaml` (with its sources and as-of date).

- Customer in the EU, a business with a VAT id of valid format for ITS country, in another
  member state than the seller → reverse charge: 0 %, and the invoice carries the note
  "Reverse charge: VAT to be accounted for by the recipient, Art. 196 Directive 2006/112/EC".
- Customer in the seller's own country (business or consumer) → the seller country's rate.
- Any other EU customer (a consumer, or a business without a valid VAT id) → the customer
  country's rate: electronically supplied services to consumers are taxed where the consumer
  is (Art. 58), declared through the One-Stop Shop. The €10,000 threshold below which a
  seller may charge its own rate is not used: the destination rate always applies.
- Customer outside the EU: a business → 0 % (the place of supply is the customer's country,
  Art. 44; the customer accounts for any local tax); a consumer → the country's rate from
  the data file when listed (the operator is registered there), else 0 %. US sales tax is
  out of scope (0 %).

VAT ids are checked for format and check digits with python-stdnum (`stdnum.eu.vat`), not
against VIES: a syntactically valid id may still be unregistered, which the billing profile
form should confirm separately.
"""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

import pycountry
from stdnum.eu import vat as eu_vat

from billing.pricebook_format import load_yaml

DATA = Path(__file__).parent / "data" / "vat_rates.yaml"
ZERO = Decimal(0)

REVERSE_CHARGE_NOTE = "Reverse charge: VAT to be accounted for by the recipient, Art. 196 Directive 2006/112/EC"
OUTSIDE_EU_NOTE = "Not subject to EU VAT: place of supply outside the EU (Art. 44 Directive 2006/112/EC)"

DOMESTIC = "domestic"
REVERSE_CHARGE = "reverse_charge"
EU_DESTINATION = "eu_destination"  # another member state's rate (One-Stop Shop)
OUTSIDE_EU_BUSINESS = "outside_eu_business"
OUTSIDE_EU_CONSUMER = "outside_eu_consumer"

# VAT ids use ISO country codes except Greece (EL).
_VAT_PREFIX = {"GR": "EL"}


class TaxError(ValueError):
    """Tax inputs that cannot be decided on (an unknown country, a seller outside the EU)."""


@dataclass(frozen=True)
class VatRates:
    as_of: date
    eu_member_states: dict[str, Decimal]
    other_countries: dict[str, Decimal]


@dataclass(frozen=True)
class Customer:
    """Who is invoiced: ISO 3166-1 alpha-2 country, business or consumer, VAT id if any."""

    country: str
    is_business: bool
    vat_id: str | None = None


@dataclass(frozen=True)
class TaxDecision:
    rate_percent: Decimal
    scheme: str
    reverse_charge: bool
    invoice_note: str  # printed on the invoice; empty when none is needed
    reason: str  # why this rate, for the audit trail


@cache
def vat_rates() -> VatRates:
    """The rates of data/vat_rates.yaml, as exact Decimals."""
    raw = load_yaml(DATA.read_text())
    return VatRates(as_of=raw["as_of"], eu_member_states=_rate_table(raw["eu_member_states"]),
                    other_countries=_rate_table(raw["other_countries"]))


def _rate_table(raw: dict) -> dict[str, Decimal]:
    # Validating the keys catches YAML's traps (a bare NO is read as false).
    return {validate_country(code, f"{DATA.name}: country"): Decimal(rate) for code, rate in raw.items()}


def validate_country(country: object, what: str = "country") -> str:
    """An ISO 3166-1 alpha-2 code as given (upper case), else TaxError naming `what`."""
    if not isinstance(country, str) or len(country) != 2 or not country.isupper() \
            or pycountry.countries.get(alpha_2=country) is None:
        raise TaxError(f"{what}: {country!r} is not an ISO 3166-1 alpha-2 country code (such as IE, DE, US).")
    return country


def vat_id_error(vat_id: str, country: str) -> str | None:
    """Why `vat_id` is not a valid-format VAT id of the member state `country`; None when it is."""
    prefix = _VAT_PREFIX.get(country, country)
    compact = eu_vat.compact(vat_id) if isinstance(vat_id, str) else ""
    if not compact.startswith(prefix):
        return f"a VAT id of {country} starts with {prefix} (for example {prefix}…), not {vat_id!r}."
    if not eu_vat.is_valid(compact):
        return f"{vat_id!r} is not a valid {country} VAT id (wrong length, characters or check digits)."
    return None


def tax_for(*, seller_country: str, customer: Customer, rates: VatRates | None = None) -> TaxDecision:
    """The VAT rate and invoice note for an invoice from `seller_country` to `customer`."""
    rates = rates or vat_rates()
    validate_country(seller_country, "seller country")
    validate_country(customer.country, "customer country")
    if seller_country not in rates.eu_member_states:
        raise TaxError(f"seller country: {seller_country} is not an EU member state; only issuers "
                       f"established in the EU are supported.")
    if customer.country in rates.eu_member_states:
        return _eu_customer(seller_country, customer, rates)
    return _outside_eu_customer(customer, rates)


def _eu_customer(seller_country: str, customer: Customer, rates: VatRates) -> TaxDecision:
    country = customer.country
    rate = rates.eu_member_states[country]
    if country == seller_country:
        return TaxDecision(rate, DOMESTIC, False, "", f"customer in the seller's country {country}: "
                                                      f"{country} VAT {rate} %")
    problem = None
    if customer.is_business:
        problem = vat_id_error(customer.vat_id, country) if customer.vat_id else "no VAT id given"
        if problem is None:
            return TaxDecision(ZERO, REVERSE_CHARGE, True, REVERSE_CHARGE_NOTE,
                               f"business in {country} with VAT id {eu_vat.compact(customer.vat_id)}: reverse charge")
    who = f"business without a valid VAT id ({problem})" if customer.is_business else "consumer"
    return TaxDecision(rate, EU_DESTINATION, False, "",
                       f"{who} in {country}: {country} VAT {rate} % (destination rate, One-Stop Shop)")


def _outside_eu_customer(customer: Customer, rates: VatRates) -> TaxDecision:
    country = customer.country
    if customer.is_business:
        return TaxDecision(ZERO, OUTSIDE_EU_BUSINESS, False, OUTSIDE_EU_NOTE,
                           f"business outside the EU ({country}): no VAT, the customer accounts for local tax")
    rate = rates.other_countries.get(country, ZERO)
    listed = country in rates.other_countries
    return TaxDecision(rate, OUTSIDE_EU_CONSUMER, False, "" if rate else OUTSIDE_EU_NOTE,
                       f"consumer outside the EU ({country}): "
                       + (f"{country} rate {rate} % from the rates file" if listed else "no rate on file, 0 %"))
