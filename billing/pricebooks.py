"""Price books in the database ↔ billing.rating's PriceBook, and their YAML import and export.

The YAML format and its validation are billing.pricebook_format's (docs/pricing.md); this module
adds what only the database knows: that meters and hardware tiers exist, which book is the
default of its currency, which contract a tenant has in a month. Writes are services
(`pricebook_import`); reads (`effective_price_book_for`) are selectors used by invoicing.
"""

from datetime import date
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing import rating
from billing.models import Meter, Price, PriceBook
from billing.pricebook_format import dump_price_book, parse_price_book, price_book_from_dict, price_book_to_dict
from scheduler.models import HardwareTier
from tenants.errors import ServiceError
from tenants.models import Tenant


class PriceBookInvalid(ServiceError):
    """A price book that breaks a rule: `errors` lists (path, message) pairs, every one of them."""

    def __init__(self, errors):
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in self.errors),
                         field="prices")


# --- rows ↔ rating --------------------------------------------------------------------------------


def tiers_from_json(raw: list) -> tuple[rating.Tier, ...]:
    return tuple(rating.Tier(up_to=None if tier.get("up_to") is None else _decimal(tier["up_to"]),
                             unit_price=_decimal(tier.get("unit_price")),
                             flat_fee=_decimal(tier.get("flat_fee", "0")))
                 for tier in raw or [])


def tiers_to_json(tiers: tuple[rating.Tier, ...]) -> list[dict]:
    """Tiers as JSON-safe data: decimals as strings, so no digit is lost through a float."""
    return [{"up_to": None if tier.up_to is None else str(tier.up_to), "unit_price": str(tier.unit_price),
             "flat_fee": str(tier.flat_fee)} for tier in tiers]


def _decimal(value):
    from decimal import Decimal, InvalidOperation

    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return value  # rating's validation names it


def _normalized(value):
    """A Decimal from the database without trailing zeros (0.000000150000000 → 1.5E-7 → same value)."""
    return None if value is None else value.normalize() if value else value.__class__(0)


def price_from_row(price: Price, meter_slug: str | None = None) -> rating.Price:
    """A Price row as rating's Price; PriceError when the row breaks a rule."""
    return rating.Price(meter=meter_slug or price.meter.slug, model=price.model,
                        hardware_tier=price.hardware_tier or None, unit_price=_normalized(price.unit_price),
                        tiers=tiers_from_json(price.tiers), package_size=_normalized(price.package_size),
                        free_units=_normalized(price.free_units), minimum=_normalized(price.minimum))


def book_from_rows(book: PriceBook, prices=None) -> rating.PriceBook:
    """A PriceBook row and its prices as rating's PriceBook."""
    prices = list(book.prices.select_related("meter")) if prices is None else prices
    return rating.PriceBook(
        name=book.name, currency=book.currency, tenant=book.tenant.slug if book.tenant_id else None,
        prices=tuple(price_from_row(price) for price in prices),
        discount_percent=_normalized(book.discount_percent), minimum_commitment=_normalized(book.minimum_commitment))


# --- describing ------------------------------------------------------------------------------------


def describe_price(price: rating.Price | None, currency: str, unit: str) -> str:
    """A person's reading of a price: "0.00000015 USD per token", "graduated: …"."""
    if price is None:
        return ""
    number = lambda value: format(value.normalize(), "f") if value else "0"  # noqa: E731
    if price.model == rating.PER_UNIT:
        text = f"{number(price.unit_price)} {currency} per {unit}"
    elif price.model == rating.PACKAGE:
        text = f"{number(price.unit_price)} {currency} per started {number(price.package_size)} {unit}s"
    else:
        steps, lower = [], Decimal(0)
        for tier in price.tiers:
            span = f"above {number(lower)}" if tier.up_to is None else f"up to {number(tier.up_to)}"
            fee = f" + {number(tier.flat_fee)} {currency}" if tier.flat_fee else ""
            steps.append(f"{span}: {number(tier.unit_price)}{fee}")
            lower = tier.up_to or lower
        text = f"{price.model} per {unit} ({currency}): " + "; ".join(steps)
    if price.free_units:
        text += f"; first {number(price.free_units)} free"
    if price.minimum:
        text += f"; minimum {number(price.minimum)} {currency}"
    return text


# --- reads ------------------------------------------------------------------------------------------


def default_book(currency: str) -> PriceBook | None:
    return PriceBook.objects.filter(currency=currency, is_default=True, tenant__isnull=True).first()


def contract_for(tenant: Tenant, period: date) -> PriceBook | None:
    """The tenant's contract that bills `period` (a month): the latest-starting one in force then."""
    books = [book for book in PriceBook.objects.filter(tenant=tenant).order_by("-effective_from", "-id")
             if (book.effective_from is None or book.effective_from <= period)
             and (book.effective_until is None or book.effective_until >= period)]
    return books[0] if books else None


def contracts_in_force(period: date) -> dict[int, PriceBook]:
    """tenant id → its contract that bills `period` (as `contract_for`), for every tenant: one query."""
    chosen: dict[int, PriceBook] = {}
    for book in PriceBook.objects.filter(tenant__isnull=False).order_by("-effective_from", "-id"):
        if (book.effective_from is None or book.effective_from <= period) \
                and (book.effective_until is None or book.effective_until >= period):
            chosen.setdefault(book.tenant_id, book)
    return chosen


class NoPriceBook(ServiceError):
    """No default price book for the tenant's currency, and no contract to bill with."""


def effective_price_book_for(tenant: Tenant, period: date, *, cache: dict | None = None) -> rating.PriceBook:
    """The book `tenant` is billed with for `period`: the default book of its currency with its
    contract of that month laid over it (billing.rating.effective_price_book).

    `cache` (a dict the caller keeps for one run) saves rebuilding the same books per tenant.
    """
    if cache is None:
        cache, contract = {}, contract_for(tenant, period)
    else:
        if ("contracts", period) not in cache:
            cache[("contracts", period)] = contracts_in_force(period)
        contract = cache[("contracts", period)].get(tenant.pk)
    key = (tenant.currency, contract.pk if contract else None)
    if key not in cache:
        default = cache.get(("default", tenant.currency))
        if default is None:
            row = default_book(tenant.currency)
            default = book_from_rows(row) if row else None
            cache[("default", tenant.currency)] = default
        contract_book = book_from_rows(contract) if contract else None
        if default is None and contract_book is None:
            raise NoPriceBook(f"There is no default price book in {tenant.currency} and {tenant.slug} has no "
                              f"contract: import one with `manage.py import_pricebook`.")
        if default is None:
            cache[key] = contract_book
        else:
            cache[key] = rating.effective_price_book(default, contract_book)
    return cache[key]


def contracts_with_commitment(period: date) -> list[PriceBook]:
    """Contracts in force in `period` with a minimum monthly commitment (billed even without usage)."""
    return [book for book in PriceBook.objects.filter(tenant__isnull=False, minimum_commitment__gt=0)
            if (book.effective_from is None or book.effective_from <= period)
            and (book.effective_until is None or book.effective_until >= period)]


# --- import / export -------------------------------------------------------------------------------


def _database_errors(book: rating.PriceBook) -> list[tuple[str, str]]:
    errors = []
    meters = set(Meter.objects.values_list("slug", flat=True))
    tiers = set(HardwareTier.objects.values_list("slug", flat=True))
    for index, price in enumerate(book.prices):
        if price.meter not in meters:
            errors.append((f"prices[{index}].meter", f"no meter {price.meter!r} (the meters are "
                                                      f"{', '.join(sorted(meters))})"))
        if price.hardware_tier is not None and price.hardware_tier not in tiers:
            errors.append((f"prices[{index}].hardware_tier", f"no hardware tier {price.hardware_tier!r}"))
    if book.tenant is not None and not Tenant.objects.filter(slug=book.tenant).exists():
        errors.append(("tenant", f"no tenant with the slug {book.tenant!r}"))
    return errors


def parse_and_check(text: str) -> rating.PriceBook:
    """Price-book YAML → rating's PriceBook, checked against the database; PriceBookInvalid listing
    every problem."""
    try:
        book = parse_price_book(text)
    except rating.PriceError as error:
        raise PriceBookInvalid(error.errors) from None
    errors = _database_errors(book)
    if errors:
        raise PriceBookInvalid(errors)
    return book


@transaction.atomic
def pricebook_import(*, text: str) -> tuple[PriceBook, bool]:
    """Create or replace the price book named in the YAML; (row, created).

    A book without `tenant` becomes the default book of its currency (the previous default of
    that currency, if another, stops being the default); a book with `tenant` is that tenant's
    contract. The book's prices are replaced as a whole by the file's. Invoices already
    finalized keep the prices they were rated with (Invoice.price_book is a snapshot).
    """
    book = parse_and_check(text)
    tenant = Tenant.objects.get(slug=book.tenant) if book.tenant else None
    row = PriceBook.objects.select_for_update().filter(name=book.name).first()
    created = row is None
    if row is not None and row.tenant_id != (tenant.pk if tenant else None):
        raise PriceBookInvalid([("name", f"the price book {book.name!r} exists for another tenant (or is a "
                                         f"default book): choose another name")])
    if tenant is None:
        PriceBook.objects.filter(currency=book.currency, is_default=True).exclude(name=book.name).update(
            is_default=False, updated_at=timezone.now())
    row = row or PriceBook(name=book.name)
    row.currency, row.tenant, row.is_default = book.currency, tenant, tenant is None
    row.discount_percent, row.minimum_commitment = book.discount_percent, book.minimum_commitment
    row.updated_at = timezone.now()
    row.save()
    row.prices.all().delete()
    meters = dict(Meter.objects.values_list("slug", "pk"))
    Price.objects.bulk_create([
        Price(book=row, meter_id=meters[price.meter], hardware_tier=price.hardware_tier or "", model=price.model,
              unit_price=price.unit_price, tiers=tiers_to_json(price.tiers), package_size=price.package_size,
              free_units=price.free_units, minimum=price.minimum)
        for price in book.prices])
    return row, created


def pricebook_export(*, tenant_slug: str | None = None, currency: str = "USD") -> str:
    """The YAML of the default book of `currency`, or of the tenant's current contract."""
    if tenant_slug:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise ServiceError(f"No tenant with the slug {tenant_slug!r}.", field="tenant")
        row = contract_for(tenant, date.today().replace(day=1))
        if row is None:
            raise ServiceError(f"{tenant_slug} has no contract in force: it is billed with the default book of "
                               f"{tenant.currency} (export it with --currency {tenant.currency}).", field="tenant")
    else:
        row = default_book(currency)
        if row is None:
            raise ServiceError(f"There is no default price book in {currency}.", field="currency")
    return dump_price_book(book_from_rows(row))


def book_snapshot(book: rating.PriceBook) -> dict:
    """The book as JSON-safe data (format version 1, decimals as strings), for Invoice.price_book."""
    return _stringify(price_book_to_dict(book))


def book_from_snapshot(data: dict) -> rating.PriceBook:
    return price_book_from_dict(_decimals(data))


def _stringify(value):
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {key: _stringify(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stringify(item) for item in value]
    return value


_DECIMAL_FIELDS = {"discount_percent", "minimum_commitment", "unit_price", "package_size", "free_units", "minimum",
                   "up_to", "flat_fee"}


def _decimals(value, key: str | None = None):
    if isinstance(value, dict):
        return {name: _decimals(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_decimals(item, key) for item in value]
    if key in _DECIMAL_FIELDS and isinstance(value, str):
        return _decimal(value)
    return value


DEFAULT_BOOK_FILE = "default_pricebook.yaml"


def pricebook_import_default() -> PriceBook | None:
    """Import billing/data/default_pricebook.yaml when its currency has no default book yet (the
    demo seed and `manage.py up`); None when one exists (an operator's book is never replaced)."""
    from pathlib import Path

    text = (Path(__file__).parent / "data" / DEFAULT_BOOK_FILE).read_text(encoding="utf-8")
    book = parse_price_book(text)
    if default_book(book.currency) is not None:
        return None
    return pricebook_import(text=text)[0]
