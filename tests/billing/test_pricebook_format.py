"""The price-book YAML format: parsing, errors by path, round trip, the default book (pure)."""

from decimal import Decimal, ROUND_HALF_UP

import pytest
from hypothesis import given, settings

from billing.pricebook_format import (
    default_price_book,
    dump_price_book,
    load_yaml,
    parse_price_book,
    price_book_from_dict,
)
from billing.rating import GRADUATED, PACKAGE, PER_UNIT, PriceError
from scheduler.catalog import CAPACITY_CLASS_PRICE_FACTOR, CAPACITY_CLASSES, accelerator_specs, list_prices
from tests.billing.test_rating import price_books

D = Decimal

CONTRACT = """
version: 1
name: Acme 2026
currency: EUR
tenant: acme
discount_percent: 7.5
minimum_commitment: 1000.00
prices:
  - meter: input_tokens
    model: graduated
    free_units: 1_000_000
    tiers:
      - {up_to: 1000000000, unit_price: 0.000000150000, flat_fee: 0}
      - {up_to: null, unit_price: 1.2e-7}
  - meter: accelerator_seconds
    hardware_tier: h100-80gb-on-demand
    model: per_unit
    unit_price: "0.001100000000"
  - meter: requests
    model: package
    package_size: 1000
    unit_price: 0.01
    minimum: 5
"""


def errors_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PriceError) as caught:
        parse_price_book(text)
    return list(caught.value.errors)


def test_parses_a_tenant_contract_exactly():
    book = parse_price_book(CONTRACT)
    assert (book.name, book.currency, book.tenant) == ("Acme 2026", "EUR", "acme")
    assert (book.discount_percent, book.minimum_commitment) == (D("7.5"), D("1000.00"))
    tokens, seconds, requests = book.prices
    assert tokens.model == GRADUATED and tokens.free_units == D(1_000_000)
    assert tokens.tiers[0].unit_price == D("0.000000150000")
    assert tokens.tiers[0].unit_price.as_tuple().exponent == -12  # every written decimal kept
    assert tokens.tiers[1].unit_price == D("0.00000012")
    assert tokens.tiers[1].up_to is None
    assert (seconds.hardware_tier, seconds.model, seconds.unit_price) == ("h100-80gb-on-demand", PER_UNIT,
                                                                          D("0.0011"))
    assert (requests.model, requests.package_size, requests.minimum) == (PACKAGE, D(1000), D(5))


def test_round_trip_of_the_example_and_the_default_book():
    book = parse_price_book(CONTRACT)
    assert parse_price_book(dump_price_book(book)) == book
    default = default_price_book()
    assert parse_price_book(dump_price_book(default)) == default


@settings(max_examples=100, deadline=None)
@given(book=price_books())
def test_round_trip_of_generated_books(book):
    assert parse_price_book(dump_price_book(book)) == book


def test_dump_writes_plain_numbers():
    text = dump_price_book(parse_price_book(CONTRACT))
    assert "unit_price: 0.000000150000" in text
    assert "up_to: 1000000000" in text
    assert "!!" not in text  # no python or explicit tags


def test_errors_name_the_path_of_every_bad_field():
    text = """
version: 1
name: Broken
currency: USD
discount_percent: 120
prices:
  - meter: input_tokens
    model: graduated
    tiers:
      - {up_to: 1000, unit_price: 0.0000002}
      - {up_to: 500, unit_price: 0.0000001}
      - {up_to: null, unit_price: 0.00000005}
  - meter: requests
    model: package
    unit_price: 0.01
  - meter: Output Tokens
    model: bulk
    unit_prize: 2
  - meter: output_tokens
    model: per_unit
    unit_price: 1
  - meter: output_tokens
    model: per_unit
    unit_price: 0.01
    minimum: 0.005
"""
    assert errors_of(text) == [
        ("prices[0].tiers[1].up_to", "must increase: 500 is not above the previous tier's 1000"),
        ("prices[1].package_size", "is required for a package price"),
        ("prices[2].unit_prize", "unknown field (the fields are meter, hardware_tier, model, unit_price, "
                                 "package_size, tiers, free_units, minimum)"),
        ("prices[2].meter", "'Output Tokens' is not a meter slug (lower-case letters, digits, '-' and '_', "
                            "starting with a letter or digit, at most 60 characters)"),
        ("prices[2].model", "must be one of per_unit, graduated, volume, package, not 'bulk'"),
        ("discount_percent", "must be between 0 and 100, not 120"),
        ("prices[4]", "a second price for output_tokens (the first is prices[3])"),
        ("prices[4].minimum", "0.005 has more decimal places than USD has"),
    ]


@pytest.mark.parametrize(("text", "path", "message"), [
    ("name: x\ncurrency: USD\n", "version", "is required"),
    ("version: 2\nname: x\ncurrency: USD\n", "version", "must be 1"),
    ("version: 1\ncurrency: USD\n", "name", "is required"),
    ("version: 1\nname: x\n", "currency", "is required"),
    ("version: 1\nname: x\ncurrency: usd\n", "currency", "did you mean USD"),
    ("version: 1\nname: x\ncurrency: USD\nprices: {}\n", "prices", "must be a list"),
    ("version: 1\nname: x\ncurrency: USD\ntenant: Acme Corp\n", "tenant", "not a tenant slug"),
    ("version: 1\nname: x\ncurrency: USD\nminimum_commitment: lots\n", "minimum_commitment", "must be a number"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: per_unit, unit_price: .inf}]\n",
     "prices[0].unit_price", "must be a number"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: per_unit, unit_price: -1}]\n",
     "prices[0].unit_price", "must be ≥ 0"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: per_unit, unit_price: yes}]\n",
     "prices[0].unit_price", "exact decimal number"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: graduated, tiers: [7]}]\n",
     "prices[0].tiers[0]", "must be a mapping"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: volume, tiers: [{unit_price: 1}]}]\n",
     "prices[0].tiers[0].up_to", "is required"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{meter: a, model: per_unit}]\n",
     "prices[0].unit_price", "is required"),
    ("version: 1\nname: x\ncurrency: USD\nprices: [{model: per_unit, unit_price: 1}]\n",
     "prices[0].meter", "is required"),
])
def test_single_errors(text, path, message):
    errors = errors_of(text)
    assert any(error_path == path and message in error_message for error_path, error_message in errors), errors


def test_not_yaml_and_not_a_mapping():
    assert errors_of("version: [1\n")[0][1].startswith("not valid YAML at line")
    assert errors_of("- 1\n- 2\n") == [("", "a price book is a mapping with version, name, currency and prices")]


def test_from_dict_refuses_floats_but_takes_strings_and_decimals():
    base = {"version": 1, "name": "api", "currency": "USD"}
    with pytest.raises(PriceError, match="prices\\[0\\].unit_price: must be an exact decimal number"):
        price_book_from_dict({**base, "prices": [{"meter": "a", "model": "per_unit", "unit_price": 0.1}]})
    book = price_book_from_dict({**base, "prices": [{"meter": "a", "model": "per_unit", "unit_price": "1e-7"},
                                                    {"meter": "b", "model": "per_unit", "unit_price": D("0.3")}]})
    assert [price.unit_price for price in book.prices] == [D("1E-7"), D("0.3")]


def test_yaml_floats_load_as_decimals():
    assert load_yaml("a: 0.1\nb: 3\nc: 1_000.5\n") == {"a": D("0.1"), "b": 3, "c": D("1000.5")}


def test_default_book_prices_every_catalog_tier_from_its_list_price():
    book = default_price_book()
    assert book.currency == "USD" and book.tenant is None
    for meter in ("input_tokens", "output_tokens", "requests"):
        assert book.price_for(meter, None) is not None
    for slug in accelerator_specs():
        for capacity_class in CAPACITY_CLASSES:
            # As catalog_sync prices a new tier, then per second, rounded half-up to 12 places.
            hourly = (D(str(list_prices()[slug])) * D(str(CAPACITY_CLASS_PRICE_FACTOR[capacity_class]))).quantize(
                D("0.0001"))
            expected = (hourly / 3600).quantize(D("1E-12"), rounding=ROUND_HALF_UP)
            price = book.price_for("accelerator_seconds", f"{slug}-{capacity_class}")
            assert price is not None and price.hardware_tier == f"{slug}-{capacity_class}"
            assert (price.model, price.unit_price) == (PER_UNIT, expected)
    assert book.price_for("accelerator_seconds", None) is None  # an unknown tier is an error, not a guess
