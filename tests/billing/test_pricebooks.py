"""Price books in the database: import/export commands, validation against meters and tiers,
one default per currency, contracts by month, the demo seed's default book."""

import io
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from billing.models import Price, PriceBook
from billing.pricebooks import (
    PriceBookInvalid,
    book_from_rows,
    effective_price_book_for,
    pricebook_import,
    pricebook_import_default,
)
from tests.billing.invoicing_helpers import USD_BOOK, tenant

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_import_then_export_round_trips_every_digit(tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(USD_BOOK)
    assert "Created 'Test list prices USD' (default USD book, 4 prices)" in run("import_pricebook", str(path))
    exported = run("export_pricebook", "--currency", "USD")
    assert "0.000001" in exported and "0.0000005" in exported
    path.write_text(exported)
    assert "Replaced" in run("import_pricebook", str(path))
    book = book_from_rows(PriceBook.objects.get())
    assert book.price_for("input_tokens", None).tiers[1].unit_price == Decimal("0.0000005")


def test_a_per_token_price_keeps_fifteen_decimal_places():
    pricebook_import(text="""
version: 1
name: Tiny
currency: USD
prices:
  - {meter: input_tokens, model: per_unit, unit_price: 0.000000150000123}
""")
    assert Price.objects.get().unit_price == Decimal("0.000000150000123")


def test_import_lists_every_problem_with_its_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("""
version: 1
name: Broken
currency: usd
prices:
  - {meter: no_such_meter, model: per_unit, unit_price: 1}
  - {meter: output_tokens, model: volume, tiers: [{up_to: 10, unit_price: 1}, {up_to: 5, unit_price: 1}]}
""")
    with pytest.raises(CommandError) as raised:
        run("import_pricebook", str(path))
    message = str(raised.value)
    assert "currency" in message and "USD" in message  # did you mean USD?
    assert "prices[1].tiers[1].up_to" in message
    assert not PriceBook.objects.exists()


def test_import_checks_meters_tiers_and_tenants_exist():
    with pytest.raises(PriceBookInvalid) as raised:
        pricebook_import(text="""
version: 1
name: Unknowns
currency: USD
tenant: nobody
prices:
  - {meter: no_such_meter, model: per_unit, unit_price: 1}
  - {meter: accelerator_seconds, hardware_tier: warp-drive-on-demand, model: per_unit, unit_price: 1}
""")
    paths = [path for path, _message in raised.value.errors]
    assert paths == ["prices[0].meter", "prices[1].hardware_tier", "tenant"]


def test_unreadable_or_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        run("import_pricebook", str(tmp_path / "missing.yaml"))
    (tmp_path / "junk.yaml").write_text("prices: [unclosed")
    with pytest.raises(CommandError, match="not valid YAML"):
        run("import_pricebook", str(tmp_path / "junk.yaml"))
    with pytest.raises(CommandError, match="no default price book in EUR"):
        run("export_pricebook", "--currency", "EUR")


def test_a_new_default_book_replaces_the_old_default_of_its_currency():
    pricebook_import(text=USD_BOOK)
    pricebook_import(text=USD_BOOK.replace("Test list prices USD", "List prices 2027"))
    assert list(PriceBook.objects.filter(is_default=True).values_list("name", flat=True)) == ["List prices 2027"]
    with pytest.raises(IntegrityError), transaction.atomic():
        PriceBook.objects.filter(name="Test list prices USD").update(is_default=True)


def test_contracts_apply_in_their_months_only():
    pricebook_import(text=USD_BOOK)
    customer = tenant(country="US")
    contract, _ = pricebook_import(text=f"""
version: 1
name: Acme 2026
currency: USD
tenant: {customer.slug}
discount_percent: 20
prices:
  - {{meter: output_tokens, model: per_unit, unit_price: 0.0009}}
""")
    contract.effective_from, contract.effective_until = date(2026, 3, 1), date(2026, 12, 1)
    contract.save()
    assert effective_price_book_for(customer, date(2026, 2, 1)).discount_percent == 0
    march = effective_price_book_for(customer, date(2026, 3, 1))
    assert march.discount_percent == 20 and march.price_for("output_tokens", None).unit_price == Decimal("0.0009")
    assert march.price_for("input_tokens", None).model == "graduated"  # the default's
    assert effective_price_book_for(customer, date(2027, 1, 1)).discount_percent == 0


def test_export_of_a_tenants_contract():
    customer = tenant(country="US")
    with pytest.raises(CommandError, match="has no contract"):
        run("export_pricebook", "--tenant", customer.slug)
    pricebook_import(text=f"""
version: 1
name: Acme forever
currency: USD
tenant: {customer.slug}
minimum_commitment: 100
prices: []
""")
    exported = run("export_pricebook", "--tenant", customer.slug)
    assert f"tenant: {customer.slug}" in exported and "minimum_commitment: 100" in exported


def test_the_demo_seed_imports_the_default_book_once():
    book = pricebook_import_default()
    assert book.is_default and book.currency == "USD" and book.prices.count() > 30
    assert pricebook_import_default() is None
