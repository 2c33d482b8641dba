"""Helpers of the invoicing tests: tenants, price books, deployments and usage made through the
real services (price-book import, deployment_create, usage_ingest) or as rollups."""

from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

from billing.models import BillingProfile, UsageRollup
from billing.pricebooks import pricebook_import
from billing.services import usage_ingest
from tests.billing.factories import UsageRollupFactory
from tests.cross_tenant_objects import make_deployment
from tests.factories import TenantFactory

SCRAPE = "switchyard/collector/scrape"

USD_BOOK = """
version: 1
name: Test list prices USD
currency: USD
prices:
  - meter: input_tokens
    model: graduated
    tiers:
      - {up_to: 1000000, unit_price: 0.000001}
      - {up_to: null, unit_price: 0.0000005}
  - meter: output_tokens
    model: volume
    tiers:
      - {up_to: 1000, unit_price: 0.002}
      - {up_to: 10000, unit_price: 0.001}
      - {up_to: null, unit_price: 0.0005}
  - meter: requests
    model: package
    package_size: 1000
    unit_price: 0.01
    free_units: 1000
  - {meter: accelerator_seconds, hardware_tier: h100-80gb-on-demand, model: per_unit, unit_price: 0.00125}
"""

EUR_BOOK = USD_BOOK.replace("Test list prices USD", "Test list prices EUR").replace("currency: USD", "currency: EUR")

JPY_BOOK = """
version: 1
name: Test list prices JPY
currency: JPY
prices:
  - {meter: input_tokens, model: per_unit, unit_price: 0.0225}
  - {meter: output_tokens, model: per_unit, unit_price: 0.09}
  - {meter: requests, model: per_unit, unit_price: 0}
  - {meter: accelerator_seconds, model: per_unit, unit_price: 0.19}
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def books(*texts: str) -> None:
    # Transactional tests flush the tables, the migration-made meters too: make sure they exist.
    from tests.billing.factories import ensure_built_in_meters

    ensure_built_in_meters()
    for text in texts or (USD_BOOK, EUR_BOOK, JPY_BOOK):
        pricebook_import(text=text)


def tenant(*, country: str = "US", currency: str = "USD", vat_id: str = "", is_business: bool = True, **extra):
    made = TenantFactory(billing_country=country, currency=currency, **extra)
    BillingProfile.objects.create(tenant=made, legal_name=f"{made.name} Ltd", address="1 Main Street",
                                  vat_id=vat_id, is_business=is_business)
    return made


def deployment(of_tenant, name: str | None = None):
    return make_deployment(SimpleNamespace(tenant=of_tenant), name=name)


def rollup(deployment, meter: str, hour: str, quantity, *, tier: str = "", billing_period: date | None = None):
    """One hourly rollup, as ingestion leaves it."""
    moment = at(hour)
    return UsageRollupFactory(deployment=deployment, meter=meter, hour=moment, quantity=str(quantity), tier=tier,
                              billing_period=billing_period or moment.date().replace(day=1))


def ingest(deployment, time: str, *, now: str, event_id: str, **data):
    """One inference.request event through the real ingestion service."""
    data = {"input_tokens": 0, "output_tokens": 0, **data}
    event = {"specversion": "1.0", "id": event_id, "source": SCRAPE, "type": "inference.request",
             "subject": str(deployment.public_id), "time": time, "data": data}
    result = usage_ingest([event], now=at(now))
    assert result.accepted == 1, result
    return result


def quantity_on(period: date, deployment, meter: str) -> Decimal:
    return sum((r.quantity for r in UsageRollup.objects.filter(deployment=deployment, billing_period=period,
                                                                meter__slug=meter)), Decimal(0))
