"""Rating: usage quantities × a price book → invoice lines; lines, credits and tax → totals.

Pure: no Django. Plain frozen dataclasses in, plain dataclasses out; money is `Decimal`.

How the invoicing service uses this
-----------------------------------
1. Load the period's rollups summed per meter × deployment × hardware tier as
   `Quantity(meter, deployment, hardware_tier, quantity)` records (Decimal quantities;
   records with the same key are added up, zero records are ignored).
2. Build the tenant's price book: `effective_price_book(default_book, tenant_contract)`
   (books come from `billing.pricebook_format.parse_price_book` or are built from rows).
3. `lines = rate(quantities, book)`: one `Line` per meter × deployment × hardware tier that
   has usage, plus a commitment-shortfall line when the contract's minimum is not reached.
   Late usage of an already invoiced period: `rate_late_usage(late, already_billed,
   book_of_that_period, period_of_usage)` gives adjustment lines for the current invoice.
4. `decision = billing.tax.tax_for(...)`, then `totals = invoice_totals(lines, grants,
   decision.rate_percent, currency=book.currency, period=period)`.
5. In one transaction write the Invoice (subtotal, credits, tax, total), one InvoiceLine per
   `Line`, and one credit-ledger row per `totals.credit_applications` entry.

Every amount these functions return is already rounded to the currency's minor units
(`billing.money.round_money`, half-up): the service stores them as they are, never
rounds again, and invoice total = Σ line amounts − credits + tax holds exactly.

Where rounding happens (docs/pricing.md has the worked examples):
- a *charge* is one price applied to the tenant's whole quantity of the period: all records
  that resolve to the same price (meter, and hardware tier when priced per tier), across
  deployments. Its amount is computed at full precision (price model, minimum, discount)
  and rounded once; that rounded amount is then split over the charge's deployment lines
  by largest remainder in minor units, so Σ lines = the rounded charge, exactly;
- the commitment shortfall is a difference of rounded amounts (no rounding);
- tax is rounded once, on (subtotal − credits).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from functools import wraps
from typing import TypeVar

from billing.money import EXACT, CurrencyError, from_minor, require_rounded, round_money, to_minor, validate_currency

ZERO = Decimal(0)
HUNDRED = Decimal(100)

PER_UNIT = "per_unit"
GRADUATED = "graduated"
VOLUME = "volume"
PACKAGE = "package"
PRICE_MODELS = (PER_UNIT, GRADUATED, VOLUME, PACKAGE)

USAGE = "usage"
COMMITMENT_SHORTFALL = "commitment_shortfall"

# Stripe's convention for credit grants: 0–100, lower numbers are applied first.
DEFAULT_CREDIT_PRIORITY = 50

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")


class PriceError(ValueError):
    """A price or price book that breaks a rule; `errors` lists (path, message) pairs."""

    def __init__(self, errors: Iterable[tuple[str, str]]):
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in self.errors))

    def prefixed(self, prefix: str) -> "PriceError":
        return PriceError((f"{prefix}.{path}" if path else prefix, message) for path, message in self.errors)


class RatingError(ValueError):
    """Quantities, credits or lines that cannot be turned into money (e.g. a meter without a price)."""


def _exact(function):
    """Runs `function` in the EXACT decimal context: any inexact intermediate step raises."""
    @wraps(function)
    def wrapper(*args, **kwargs):
        with localcontext(EXACT):
            return function(*args, **kwargs)
    return wrapper


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A billing period, [start, end): start inclusive, end exclusive."""

    start: datetime
    end: datetime

    def __post_init__(self):
        if not self.start < self.end:
            raise RatingError(f"a period must end after it starts ({self.start} – {self.end}).")


@dataclass(frozen=True)
class Quantity:
    """Usage of one meter by one deployment on one hardware tier in the period (None: no tier)."""

    meter: str
    deployment: str
    hardware_tier: str | None
    quantity: Decimal

    def __post_init__(self):
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, Decimal | int):
            raise RatingError(f"{self.meter}: quantity must be a Decimal, not {type(self.quantity).__name__}.")
        object.__setattr__(self, "quantity", Decimal(self.quantity))
        if not self.quantity.is_finite() or self.quantity < 0:
            raise RatingError(f"{self.meter} of {self.deployment}: quantity must be a finite number ≥ 0, "
                              f"not {self.quantity}.")

    @property
    def line_key(self) -> tuple[str, str, str | None]:
        return (self.meter, self.deployment, self.hardware_tier)


@dataclass(frozen=True)
class Tier:
    """One step of a graduated or volume price: units up to `up_to` (inclusive; None: no end)."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = ZERO


@dataclass(frozen=True)
class Price:
    """How one meter is priced (on one hardware tier, or on any tier when `hardware_tier` is None).

    - `per_unit`: quantity × `unit_price`.
    - `graduated`: each unit is priced by the tier it falls in (units 1..up_to₁ at tier 1's
      price, the next ones at tier 2's …); a tier's `flat_fee` is added once when any unit
      falls in it.
    - `volume`: the whole quantity at the price of the tier the total falls in, plus that
      tier's `flat_fee`.
    - `package`: `unit_price` per started package of `package_size` units (partial packages
      round up).
    `free_units` are taken off the quantity before pricing (tiers count the units after them).
    `minimum` floors the charge when some units remain to pay after the free allowance.
    Unit prices keep every decimal given (per-token prices such as 0.000000150000).
    """

    meter: str
    model: str
    hardware_tier: str | None = None
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    free_units: Decimal = ZERO
    minimum: Decimal = ZERO

    def __post_init__(self):
        object.__setattr__(self, "tiers", tuple(self.tiers))
        errors = _price_errors(self)
        if errors:
            raise PriceError(errors)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.meter, self.hardware_tier)


@dataclass(frozen=True)
class PriceBook:
    """A currency and its prices: the default book (tenant None) or one tenant's contract.

    A contract can also carry a `discount_percent` (taken off every usage charge) and a
    `minimum_commitment` (a monthly floor: the shortfall is billed as its own line).
    """

    name: str
    currency: str
    prices: tuple[Price, ...]
    tenant: str | None = None
    discount_percent: Decimal = ZERO
    minimum_commitment: Decimal = ZERO
    _index: dict = field(init=False, repr=False, compare=False, hash=False, default=None)

    def __post_init__(self):
        object.__setattr__(self, "prices", tuple(self.prices))
        errors = _book_errors(self)
        if errors:
            raise PriceError(errors)
        object.__setattr__(self, "_index", {price.key: price for price in self.prices})

    def price_for(self, meter: str, hardware_tier: str | None) -> Price | None:
        """The meter's price on that hardware tier, else its price for any tier, else None."""
        return self._index.get((meter, hardware_tier)) or self._index.get((meter, None))


@dataclass(frozen=True)
class CreditGrant:
    """Credit a tenant can spend: `available` is what is left of the grant now.

    It applies to a period's invoice when its validity [effective_at, expires_at) overlaps
    the period [start, end): granted before the period ends and not expired when it starts.
    A grant expiring mid-period therefore still counts, in full, for that period's invoice.
    """

    id: str
    currency: str
    available: Decimal
    effective_at: datetime
    expires_at: datetime | None = None
    priority: int = DEFAULT_CREDIT_PRIORITY

    def __post_init__(self):
        validate_currency(self.currency)
        require_rounded(self.available, self.currency, f"credit grant {self.id}")
        if self.available < 0:
            raise RatingError(f"credit grant {self.id}: available must be ≥ 0, not {self.available}.")
        if self.expires_at is not None and self.expires_at <= self.effective_at:
            raise RatingError(f"credit grant {self.id}: expires_at must be after effective_at.")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise RatingError(f"credit grant {self.id}: priority must be an integer.")

    def applies_to(self, period: Period) -> bool:
        return self.effective_at < period.end and (self.expires_at is None or self.expires_at > period.start)

    @property
    def spending_order(self) -> tuple:
        # Priority first, then the grant that expires soonest (never-expiring last), then the
        # oldest, then the id so that equal grants are always used in the same order.
        expiry_rank = (1, datetime.min) if self.expires_at is None else (0, self.expires_at)
        return (self.priority, expiry_rank, self.effective_at, self.id)


# --- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One invoice line. `amount` is rounded to the currency's minor units.

    A usage line is the share of one charge (`charge_amount`, for `charge_quantity` units
    across deployments) that falls on this deployment × hardware tier. An adjustment line
    (late usage) carries `period_of_usage`, the earlier period the usage belongs to.
    """

    kind: str
    currency: str
    amount: Decimal
    description: str
    meter: str | None = None
    deployment: str | None = None
    hardware_tier: str | None = None
    quantity: Decimal = ZERO
    price_model: str | None = None
    price_hardware_tier: str | None = None
    charge_quantity: Decimal = ZERO
    charge_amount: Decimal = ZERO
    discount_percent: Decimal = ZERO
    period_of_usage: Period | None = None

    @property
    def is_adjustment(self) -> bool:
        return self.period_of_usage is not None


@dataclass(frozen=True)
class CreditApplication:
    grant_id: str
    amount: Decimal


@dataclass(frozen=True)
class Totals:
    """subtotal = Σ line amounts; taxable = subtotal − credits; total = taxable + tax. All rounded."""

    currency: str
    subtotal: Decimal
    credits: Decimal
    taxable: Decimal
    tax_rate_percent: Decimal
    tax: Decimal
    total: Decimal
    credit_applications: tuple[CreditApplication, ...]


# --- validation -------------------------------------------------------------------------------


def _decimal_error(value, *, allow_none: bool = False, positive: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal):
        return f"must be a decimal number, not {value!r}"
    if not value.is_finite():
        return f"must be a finite number, not {value}"
    if positive and value <= 0:
        return f"must be greater than 0, not {value}"
    if value < 0:
        return f"must be ≥ 0, not {value}"
    return None


def _slug_error(value, what: str) -> str | None:
    if not isinstance(value, str) or not SLUG.match(value):
        return (f"{value!r} is not a {what} slug (lower-case letters, digits, '-' and '_', "
                f"starting with a letter or digit, at most 60 characters)")
    return None


def _price_errors(price: Price) -> list[tuple[str, str]]:
    errors = []
    for path, message in (("meter", _slug_error(price.meter, "meter")),
                          ("hardware_tier", price.hardware_tier is not None
                           and _slug_error(price.hardware_tier, "hardware tier")),
                          ("free_units", _decimal_error(price.free_units)),
                          ("minimum", _decimal_error(price.minimum))):
        if message:
            errors.append((path, message))
    if price.model not in PRICE_MODELS:
        return errors + [("model", f"must be one of {', '.join(PRICE_MODELS)}, not {price.model!r}")]
    tiered = price.model in (GRADUATED, VOLUME)
    if tiered:
        errors += _tier_errors(price.tiers)
        if price.unit_price is not None:
            errors.append(("unit_price", f"a {price.model} price has its unit prices in tiers, not unit_price"))
    else:
        message = _decimal_error(price.unit_price) if price.unit_price is not None else "is required"
        if message:
            errors.append(("unit_price", message))
        if price.tiers:
            errors.append(("tiers", f"only graduated and volume prices have tiers, not {price.model}"))
    if price.model == PACKAGE:
        message = (_decimal_error(price.package_size, positive=True) if price.package_size is not None
                   else "is required for a package price")
        if message:
            errors.append(("package_size", message))
    elif price.package_size is not None:
        errors.append(("package_size", f"only package prices have a package_size, not {price.model}"))
    return errors


def _tier_errors(tiers: tuple[Tier, ...]) -> list[tuple[str, str]]:
    if not tiers:
        return [("tiers", "at least one tier is required")]
    errors = []
    previous = ZERO
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        if not isinstance(tier, Tier):
            errors.append((path, f"must be a Tier, not {tier!r}"))
            continue
        for name in ("unit_price", "flat_fee"):
            message = _decimal_error(getattr(tier, name))
            if message:
                errors.append((f"{path}.{name}", message))
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                errors.append((f"{path}.up_to", "only the last tier can be open-ended (up_to: null)"))
            continue
        message = _decimal_error(tier.up_to, positive=True)
        if message:
            errors.append((f"{path}.up_to", message))
            continue
        if tier.up_to <= previous:
            errors.append((f"{path}.up_to", f"must increase: {tier.up_to} is not above the previous "
                                            f"tier's {previous}"))
        if last:
            errors.append((f"{path}.up_to", "the last tier must be open-ended (up_to: null), so that every "
                                            "quantity has a price"))
        previous = max(previous, tier.up_to)
    return errors


def _book_errors(book: PriceBook) -> list[tuple[str, str]]:
    errors = []
    if not isinstance(book.name, str) or not book.name.strip():
        errors.append(("name", "is required"))
    try:
        validate_currency(book.currency)
    except CurrencyError as error:
        errors.append(("currency", str(error).rstrip(".")))
    if book.tenant is not None and (message := _slug_error(book.tenant, "tenant")):
        errors.append(("tenant", message))
    if message := _decimal_error(book.discount_percent):
        errors.append(("discount_percent", message))
    elif book.discount_percent > HUNDRED:
        errors.append(("discount_percent", f"must be between 0 and 100, not {book.discount_percent}"))
    errors += _amount_errors("minimum_commitment", book.minimum_commitment, book.currency)
    return errors + price_list_errors(enumerate(book.prices), book.currency)


def price_list_errors(indexed_prices: Iterable[tuple[int, Price]], currency: str) -> list[tuple[str, str]]:
    """Rules across a book's prices: one price per meter and hardware tier, minimums that fit the
    currency. Takes (index, price) pairs so that a parser which dropped bad prices still names
    the others by their place in its input."""
    errors = []
    first_seen: dict[tuple, int] = {}
    for index, price in indexed_prices:
        if not isinstance(price, Price):
            errors.append((f"prices[{index}]", f"must be a Price, not {price!r}"))
            continue
        if price.key in first_seen:
            where = f" on {price.hardware_tier}" if price.hardware_tier else ""
            errors.append((f"prices[{index}]", f"a second price for {price.meter}{where} "
                                               f"(the first is prices[{first_seen[price.key]}])"))
        first_seen.setdefault(price.key, index)
        errors += _amount_errors(f"prices[{index}].minimum", price.minimum, currency)
    return errors


def _amount_errors(path: str, amount, currency) -> list[tuple[str, str]]:
    if message := _decimal_error(amount):
        return [(path, message)]
    try:
        validate_currency(currency)
    except CurrencyError:
        return []  # reported once, as the currency's error; minor units cannot be checked without one
    try:
        require_rounded(amount, currency)
    except CurrencyError:
        return [(path, f"{amount} has more decimal places than {currency} has")]
    return []


# --- price books ------------------------------------------------------------------------------


def effective_price_book(default: PriceBook, contract: PriceBook | None) -> PriceBook:
    """The book a tenant is billed with: the default, with its contract's prices laid over it.

    Each contract price replaces the default's price with the same meter and hardware tier
    (a contract price for a meter on any tier does not replace the default's per-tier prices
    of that meter). Discount and commitment come from the contract. A contract in another
    currency than the default stands alone: prices are never converted between currencies.
    """
    if default.tenant is not None:
        raise PriceError([("tenant", f"the default price book has no tenant, but {default.name!r} "
                                     f"is {default.tenant}'s contract")])
    if contract is None:
        return default
    if contract.tenant is None:
        raise PriceError([("tenant", f"a tenant contract names its tenant; {contract.name!r} does not")])
    if contract.currency != default.currency:
        return contract
    overrides = {price.key for price in contract.prices}
    prices = tuple(price for price in default.prices if price.key not in overrides) + contract.prices
    return PriceBook(name=contract.name, currency=contract.currency, prices=prices, tenant=contract.tenant,
                     discount_percent=contract.discount_percent, minimum_commitment=contract.minimum_commitment)


# --- pricing one charge -----------------------------------------------------------------------


def _per_unit_amount(price: Price, billable: Decimal) -> Decimal:
    return billable * price.unit_price


def _graduated_amount(price: Price, billable: Decimal) -> Decimal:
    amount, lower = ZERO, ZERO
    for tier in price.tiers:
        upper = billable if tier.up_to is None else min(billable, tier.up_to)
        if upper <= lower:
            break
        amount += (upper - lower) * tier.unit_price + tier.flat_fee
        lower = upper
    return amount


def _volume_amount(price: Price, billable: Decimal) -> Decimal:
    tier = next(tier for tier in price.tiers if tier.up_to is None or billable <= tier.up_to)
    return billable * tier.unit_price + tier.flat_fee


def _package_amount(price: Price, billable: Decimal) -> Decimal:
    whole, rest = divmod(billable, price.package_size)
    return (whole + (1 if rest else 0)) * price.unit_price


_MODEL_AMOUNT = {PER_UNIT: _per_unit_amount, GRADUATED: _graduated_amount, VOLUME: _volume_amount,
                 PACKAGE: _package_amount}


def list_amount(price: Price, quantity: Decimal) -> Decimal:
    """The exact, unrounded amount of a whole period's `quantity` under `price`, before discount.

    Zero when nothing is left after the free allowance; otherwise the model's amount,
    floored at the price's minimum.
    """
    with localcontext(EXACT):
        billable = quantity - price.free_units
        if billable <= 0:
            return ZERO
        return max(_MODEL_AMOUNT[price.model](price, billable), price.minimum)


def charge_amount(price: Price, quantity: Decimal, book: PriceBook) -> Decimal:
    """The rounded amount of one charge: list amount less the contract discount, rounded once."""
    with localcontext(EXACT):
        net = list_amount(price, quantity) * (HUNDRED - book.discount_percent) / HUNDRED
    return round_money(net, book.currency)


# --- allocation -------------------------------------------------------------------------------

K = TypeVar("K")


@_exact
def allocate(total: Decimal, weights: Mapping[K, Decimal], currency: str) -> dict[K, Decimal]:
    """Split the rounded `total` over the keys in proportion to their weights; Σ result == total.

    Largest remainder in minor units: every key gets ⌊T·wᵢ/W⌋ minor units of the T to split,
    and the few left over go one each to the keys with the largest fractional parts (ties:
    the smaller key first). A negative total is split as its absolute value, then negated.
    All of it is integer arithmetic: the weights are scaled to integers first.
    """
    keys = sorted(weights, key=_sort_key)
    if not keys:
        raise RatingError("nothing to allocate an amount to.")
    units = to_minor(total, currency)  # also refuses an amount that is not rounded
    if len(keys) == 1:
        return {keys[0]: total}
    sign, units = (-1 if units < 0 else 1), abs(units)
    exponent = min(0, *(weights[key].as_tuple().exponent for key in keys))
    # Whole quantities (the usual case) are their own integer weights.
    scaled = {key: int(weights[key].scaleb(-exponent)) if exponent else int(weights[key]) for key in keys}
    weight_sum = sum(scaled.values())
    if weight_sum == 0:
        raise RatingError("cannot allocate an amount over zero weights.")
    shares, remainders = {}, {}
    for key in keys:
        shares[key], remainders[key] = divmod(units * scaled[key], weight_sum)
    left_over = units - sum(shares.values())
    # sorted() is stable, also with reverse=True: equal remainders keep the key order.
    for key in sorted(keys, key=remainders.__getitem__, reverse=True)[:left_over]:
        shares[key] += 1
    return {key: from_minor(sign * shares[key], currency) for key in keys}


_NONE_FIRST = ("", "")


def _sort_key(value):
    """Sorts tuples that may hold None (None before any string)."""
    if type(value) is tuple:
        return tuple([_NONE_FIRST if part is None else ("~", part) for part in value])
    return value


# --- rating -----------------------------------------------------------------------------------

Pools = dict[tuple[str, str | None], dict[tuple[str, str, str | None], Decimal]]


def _pool(quantities: Iterable[Quantity], book: PriceBook) -> Pools:
    """Quantities grouped by the price they resolve to, then added up per line key; zeros dropped.
    (Like `_pool_total`, only called by rating's entry points, which run in EXACT.)"""
    pools: Pools = {}
    for record in quantities:
        if not isinstance(record, Quantity):
            raise RatingError(f"expected a Quantity, not {record!r}.")
        if record.quantity == 0:
            continue
        price = book.price_for(record.meter, record.hardware_tier)
        if price is None:
            on = f" on {record.hardware_tier}" if record.hardware_tier else ""
            raise RatingError(f"price book {book.name!r} has no price for {record.meter}{on} "
                              f"(deployment {record.deployment}).")
        lines = pools.setdefault(price.key, {})
        lines[record.line_key] = lines.get(record.line_key, ZERO) + record.quantity
    return pools


def _pool_total(pool: Mapping) -> Decimal:
    return sum(pool.values(), ZERO)


def _describe(meter: str, deployment: str, hardware_tier: str | None, period: Period | None = None) -> str:
    text = " · ".join(part for part in (meter, deployment, hardware_tier) if part)
    if period is not None:
        text += f" (late usage of {period.start:%Y-%m-%d} to {period.end:%Y-%m-%d})"
    return text


def _charge_lines(price: Price, shares_of: Mapping, amount: Decimal, book: PriceBook,
                  period_of_usage: Period | None = None) -> list[Line]:
    """The lines of one charge: `amount` split over the line keys by their quantities."""
    shares = allocate(amount, shares_of, book.currency)
    charge_quantity = _pool_total(shares_of)
    return [
        Line(kind=USAGE, currency=book.currency, amount=shares[key], description=_describe(*key, period_of_usage),
             meter=key[0], deployment=key[1], hardware_tier=key[2], quantity=shares_of[key],
             price_model=price.model, price_hardware_tier=price.hardware_tier,
             charge_quantity=charge_quantity, charge_amount=amount, discount_percent=book.discount_percent,
             period_of_usage=period_of_usage)
        for key in shares  # in the key order `allocate` sorted them in
    ]


def _pool_amounts(pools: Pools, book: PriceBook) -> dict[tuple, Decimal]:
    return {key: charge_amount(book._index[key], _pool_total(pool), book) for key, pool in pools.items()}


def _shortfall(subtotal: Decimal, book: PriceBook) -> Decimal:
    return max(book.minimum_commitment - subtotal, ZERO)


def _shortfall_line(amount: Decimal, subtotal: Decimal, book: PriceBook, period_of_usage: Period | None) -> Line:
    text = (f"Minimum commitment shortfall (commitment {book.minimum_commitment} {book.currency}, "
            f"usage {subtotal} {book.currency})")
    if period_of_usage is not None:
        text += f", adjusted for late usage of {period_of_usage.start:%Y-%m-%d} to {period_of_usage.end:%Y-%m-%d}"
    return Line(kind=COMMITMENT_SHORTFALL, currency=book.currency, amount=amount, description=text,
                period_of_usage=period_of_usage)


@_exact
def rate(quantities: Iterable[Quantity], price_book: PriceBook) -> list[Line]:
    """The period's invoice lines: usage lines, then a shortfall line if the commitment is not met.

    Records resolving to the same price are pooled (graduated and volume tiers see the
    tenant's whole quantity of the period, across deployments); each pool is priced and
    rounded once, then split over its deployment lines (see `allocate`). Lines come out in
    a fixed order (meter, price's hardware tier, deployment, hardware tier) whatever the
    order of the records.
    """
    pools = _pool(quantities, price_book)
    amounts = _pool_amounts(pools, price_book)
    lines = []
    for key in sorted(pools, key=_sort_key):
        lines += _charge_lines(price_book._index[key], pools[key], amounts[key], price_book)
    subtotal = sum(amounts.values(), ZERO)
    shortfall = _shortfall(subtotal, price_book)
    if shortfall:
        lines.append(_shortfall_line(shortfall, subtotal, price_book, None))
    return lines


@_exact
def rate_late_usage(late: Iterable[Quantity], already_billed: Iterable[Quantity], price_book: PriceBook,
                    period_of_usage: Period) -> list[Line]:
    """Adjustment lines for usage that arrived after its period was invoiced.

    The late quantity is rated as a marginal addition on top of what that period already
    billed (`already_billed`: every quantity invoiced for it so far, earlier adjustments
    included), with that period's `price_book`: each charge's adjustment is
    rated(billed + late) − rated(billed), both rounded as the invoice rounded them, so
    graduated tiers continue where they left off and minimums are not charged twice. The
    commitment shortfall is re-computed too: late usage that fills a shortfall already
    billed comes with a negative shortfall adjustment. Hence Σ adjustment lines = the
    period's total rated with the late usage − the period's total as billed, exactly.
    An adjustment can be negative (volume prices are not monotone).
    """
    late = list(late)
    before = _pool(already_billed, price_book)
    late_pools = _pool(late, price_book)
    after = _pool([*_as_quantities(before), *late], price_book)
    amounts_before, amounts_after = _pool_amounts(before, price_book), _pool_amounts(after, price_book)
    lines = []
    for key in sorted(late_pools, key=_sort_key):
        delta = amounts_after[key] - amounts_before.get(key, ZERO)
        lines += _charge_lines(price_book._index[key], late_pools[key], delta, price_book, period_of_usage)
    subtotal_before, subtotal_after = sum(amounts_before.values(), ZERO), sum(amounts_after.values(), ZERO)
    shortfall_delta = _shortfall(subtotal_after, price_book) - _shortfall(subtotal_before, price_book)
    if shortfall_delta:
        lines.append(_shortfall_line(shortfall_delta, subtotal_after, price_book, period_of_usage))
    return lines


def _as_quantities(pools: Pools) -> list[Quantity]:
    return [Quantity(*key, quantity) for pool in pools.values() for key, quantity in pool.items()]


# --- totals -----------------------------------------------------------------------------------


@_exact
def apply_credits(subtotal: Decimal, grants: Iterable[CreditGrant], period: Period,
                  currency: str) -> tuple[CreditApplication, ...]:
    """How much of each grant pays the subtotal: eligible grants in spending order, never past it."""
    applications = []
    left = subtotal
    for grant in sorted(grants, key=lambda grant: grant.spending_order):
        if grant.currency != currency:
            raise CurrencyError(f"credit grant {grant.id} is in {grant.currency}, the invoice in {currency}.")
        if left <= 0 or not grant.applies_to(period) or grant.available <= 0:
            continue
        used = min(grant.available, left)
        applications.append(CreditApplication(grant_id=grant.id, amount=used))
        left -= used
    return tuple(applications)


@_exact
def invoice_totals(lines: Iterable[Line], credits: Iterable[CreditGrant], tax_rate_percent: Decimal, *,
                   currency: str, period: Period) -> Totals:
    """Subtotal, credits, tax and total of an invoice for `period`.

    subtotal = Σ line amounts (already rounded); credits = what the eligible grants pay of
    it, by priority then earliest expiry, never more than the subtotal; tax = (subtotal −
    credits) × rate ÷ 100 rounded once, half-up; total = subtotal − credits + tax, exactly.
    A negative subtotal (late-usage adjustments outweighing the period) is not an invoice:
    it raises RatingError, and the service issues a credit note instead.
    """
    validate_currency(currency)
    if message := _decimal_error(tax_rate_percent):
        raise RatingError(f"tax rate {message}.")
    subtotal = ZERO
    for line in lines:
        if line.currency != currency:
            raise CurrencyError(f"line {line.description!r} is in {line.currency}, the invoice in {currency}.")
        subtotal += require_rounded(line.amount, currency, f"line {line.description!r}")
    if subtotal < 0:
        raise RatingError(f"the lines add up to {subtotal} {currency}, below zero: issue a credit note "
                          f"for the difference instead of an invoice.")
    applications = apply_credits(subtotal, credits, period, currency)
    credit_total = sum((application.amount for application in applications), ZERO)
    taxable = subtotal - credit_total
    tax = round_money(taxable * tax_rate_percent / HUNDRED, currency)
    return Totals(currency=currency, subtotal=subtotal, credits=credit_total, taxable=taxable,
                  tax_rate_percent=tax_rate_percent, tax=tax, total=taxable + tax,
                  credit_applications=applications)
