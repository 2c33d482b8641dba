"""The price-book file format (YAML, version 1): parse, validate, dump. Pure: no Django.

docs/pricing.md describes the format with an example. Numbers are read as exact
Decimals (YAML floats never pass through a binary float), so a per-token price of
0.000000150000 keeps every digit. Errors name the path of each bad field
(`prices[2].tiers[1].up_to: must increase …`); all of them are reported at once where
possible. `dump_price_book(parse_price_book(text))` parses back to an equal PriceBook.
"""

from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import yaml

from billing.rating import Price, PriceBook, PriceError, Tier, price_list_errors

FORMAT_VERSION = 1
BOOK_FIELDS = ("version", "name", "currency", "tenant", "discount_percent", "minimum_commitment", "prices")
PRICE_FIELDS = ("meter", "hardware_tier", "model", "unit_price", "package_size", "tiers", "free_units", "minimum")
TIER_FIELDS = ("up_to", "unit_price", "flat_fee")


# --- YAML with exact decimals -----------------------------------------------------------------


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as Decimal, from the text as written."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text  # .inf, .nan, 1:30 (sexagesimal): left as text, rejected with a path by the parser


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


class _DecimalDumper(yaml.SafeDumper):
    """SafeDumper that writes a Decimal as a plain number with every digit kept."""


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    if value == value.to_integral_value():
        return dumper.represent_scalar("tag:yaml.org,2002:int", str(int(value)))
    text = format(value, "f")
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_DecimalDumper.add_representer(Decimal, _represent_decimal)


def load_yaml(text: str):
    """YAML text → Python data, floats as exact Decimals (ints stay int)."""
    return yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 — a SafeLoader subclass


# --- parsing ----------------------------------------------------------------------------------


def parse_price_book(text: str) -> PriceBook:
    """A PriceBook from price-book YAML; PriceError listing every bad field by its path."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PriceError([("", f"not valid YAML{where}: {getattr(error, 'problem', None) or error}")]) from None
    return price_book_from_dict(data)


def price_book_from_dict(data) -> PriceBook:
    """A PriceBook from already-loaded data (YAML, or JSON read with parse_float=Decimal)."""
    if not isinstance(data, dict):
        raise PriceError([("", "a price book is a mapping with version, name, currency and prices")])
    errors: list[tuple[str, str]] = []
    _check_fields(data, BOOK_FIELDS, ("version", "name", "currency"), "", errors)
    if "version" in data and (data["version"] != FORMAT_VERSION or isinstance(data["version"], bool)):
        errors.append(("version", f"must be {FORMAT_VERSION}, not {data['version']!r}"))
    discount = _decimal(data, "discount_percent", "", errors, default=Decimal(0))
    commitment = _decimal(data, "minimum_commitment", "", errors, default=Decimal(0))
    indexed_prices = _prices(data.get("prices", []), errors)
    fields = {"name": data.get("name"), "currency": data.get("currency"), "tenant": data.get("tenant"),
              "discount_percent": discount, "minimum_commitment": commitment}
    # Book-level rules are checked even when some price is bad, so that one pass reports
    # everything; the prices that parsed are checked together under their own indexes.
    try:
        PriceBook(prices=(), **fields)
    except PriceError as error:
        _merge(errors, error.errors)
    _merge(errors, price_list_errors(indexed_prices, fields["currency"]))
    if errors:
        raise PriceError(errors)
    return PriceBook(prices=tuple(price for _index, price in indexed_prices), **fields)


def _prices(raw_prices, errors: list) -> list[tuple[int, Price]]:
    """The prices that parse, each with its index in the input; the others' errors go to `errors`."""
    if not isinstance(raw_prices, list):
        errors.append(("prices", "must be a list of prices"))
        return []
    prices = []
    for index, raw in enumerate(raw_prices):
        try:
            prices.append((index, _price(raw, f"prices[{index}]")))
        except PriceError as error:
            errors += error.errors
    return prices


def _price(raw, path: str) -> Price:
    if not isinstance(raw, dict):
        raise PriceError([(path, f"must be a mapping with meter and model, not {raw!r}")])
    errors: list[tuple[str, str]] = []
    _check_fields(raw, PRICE_FIELDS, ("meter", "model"), path, errors)
    values = {
        "unit_price": _decimal(raw, "unit_price", path, errors, default=None),
        "package_size": _decimal(raw, "package_size", path, errors, default=None),
        "free_units": _decimal(raw, "free_units", path, errors, default=Decimal(0)),
        "minimum": _decimal(raw, "minimum", path, errors, default=Decimal(0)),
        "tiers": _tiers(raw.get("tiers", []), f"{path}.tiers", errors),
    }
    try:
        price = Price(meter=raw.get("meter"), model=raw.get("model"), hardware_tier=raw.get("hardware_tier"),
                      **values)
    except PriceError as error:
        _merge(errors, error.prefixed(path).errors)
    if errors:
        raise PriceError(errors)
    return price


def _tiers(raw_tiers, path: str, errors: list) -> tuple[Tier, ...]:
    if not isinstance(raw_tiers, list):
        errors.append((path, "must be a list of tiers"))
        return ()
    tiers = []
    for index, raw in enumerate(raw_tiers):
        tier_path = f"{path}[{index}]"
        if not isinstance(raw, dict):
            errors.append((tier_path, f"must be a mapping with up_to and unit_price, not {raw!r}"))
            tiers.append(Tier(up_to=None, unit_price=None))  # keeps the later tiers' indexes in place
            continue
        _check_fields(raw, TIER_FIELDS, ("up_to", "unit_price"), tier_path, errors)
        tiers.append(Tier(up_to=_decimal(raw, "up_to", tier_path, errors, default=None),
                          unit_price=_decimal(raw, "unit_price", tier_path, errors, default=None),
                          flat_fee=_decimal(raw, "flat_fee", tier_path, errors, default=Decimal(0))))
    return tuple(tiers)


def _merge(errors: list, more) -> None:
    """Adds `more` to `errors`, except for paths already reported (e.g. "currency: is required"
    is not followed by "currency: None is not a currency code", and an error at prices[4] hides
    the errors inside prices[4])."""
    reported = [path for path, _message in errors]
    errors += [(path, message) for path, message in more
               if not any(path == seen or path.startswith((f"{seen}.", f"{seen}[")) for seen in reported)]


def _check_fields(raw: dict, known: tuple, required: tuple, path: str, errors: list) -> None:
    prefix = f"{path}." if path else ""
    for name in raw:
        if name not in known:
            errors.append((f"{prefix}{name}", f"unknown field (the fields are {', '.join(known)})"))
    for name in required:
        if name not in raw:
            errors.append((f"{prefix}{name}", "is required"))


def _decimal(raw: dict, name: str, path: str, errors: list, *, default):
    """raw[name] as an exact Decimal (from a YAML number, an int or a numeric string); null → default."""
    value = raw.get(name)
    if value is None:
        return default
    where = f"{path}.{name}" if path else name
    if isinstance(value, bool) or isinstance(value, float):
        errors.append((where, f"must be an exact decimal number (a YAML number or a string), not {value!r}"))
        return default
    try:
        number = Decimal(value) if isinstance(value, (Decimal, int)) else Decimal(str(value).strip())
    except InvalidOperation:
        errors.append((where, f"must be a number, not {value!r}"))
        return default
    if not number.is_finite():
        errors.append((where, f"must be a finite number, not {value!r}"))
        return default
    return number


# --- dumping ----------------------------------------------------------------------------------


def price_book_to_dict(book: PriceBook) -> dict:
    """The book as format-version-1 data; fields at their defaults are left out."""
    data = {"version": FORMAT_VERSION, "name": book.name, "currency": book.currency}
    if book.tenant is not None:
        data["tenant"] = book.tenant
    if book.discount_percent:
        data["discount_percent"] = book.discount_percent
    if book.minimum_commitment:
        data["minimum_commitment"] = book.minimum_commitment
    data["prices"] = [_price_to_dict(price) for price in book.prices]
    return data


def _price_to_dict(price: Price) -> dict:
    data = {"meter": price.meter}
    if price.hardware_tier is not None:
        data["hardware_tier"] = price.hardware_tier
    data["model"] = price.model
    if price.unit_price is not None:
        data["unit_price"] = price.unit_price
    if price.package_size is not None:
        data["package_size"] = price.package_size
    if price.tiers:
        data["tiers"] = [_tier_to_dict(tier) for tier in price.tiers]
    if price.free_units:
        data["free_units"] = price.free_units
    if price.minimum:
        data["minimum"] = price.minimum
    return data


def _tier_to_dict(tier: Tier) -> dict:
    data = {"up_to": tier.up_to, "unit_price": tier.unit_price}
    if tier.flat_fee:
        data["flat_fee"] = tier.flat_fee
    return data


def dump_price_book(book: PriceBook) -> str:
    """Price-book YAML for `book`; parse_price_book of it gives an equal book."""
    return yaml.dump(price_book_to_dict(book), Dumper=_DecimalDumper, sort_keys=False, allow_unicode=True)


# --- the built-in default ---------------------------------------------------------------------

DEFAULT_PRICE_BOOK = Path(__file__).parent / "data" / "default_pricebook.yaml"


@cache
def default_price_book() -> PriceBook:
    """Switchyard's default USD price book (data/default_pricebook.yaml)."""
    return parse_price_book(DEFAULT_PRICE_BOOK.read_text())
