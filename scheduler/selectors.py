"""Reads of the scheduler: the catalog, a tenant's models, and quotes built from them."""

import math
from dataclasses import dataclass

from scheduler.architecture import Architecture, parse_config
from scheduler.catalog import efficiency_for
from scheduler.estimator import Slo, TierOffer, TierQuote, Traffic, pick_auto, quote_tiers
from scheduler.models import AcceleratorType, HardwareTier, RegisteredModel
from tenants.models import Tenant
from tenants.scoping import scoped


def hardware_tier_list(*, active_only: bool = True):
    tiers = HardwareTier.objects.select_related("accelerator")
    return tiers.filter(active=True) if active_only else tiers


def model_list_for_tenant(tenant: Tenant):
    return scoped(RegisteredModel, tenant).order_by("name", "id")


def model_architecture(model: RegisteredModel) -> Architecture:
    return parse_config(model.config, modality=model.modality)


def tier_offers(tiers) -> list[TierOffer]:
    offers = []
    for tier in tiers:
        hardware = tier.accelerator.to_hardware()
        offers.append(TierOffer(tier=tier.slug, capacity_class=tier.capacity_class,
                                price_per_accelerator_hour=tier.price_per_accelerator_hour, currency=tier.currency,
                                hardware=hardware, efficiency=efficiency_for(hardware)))
    return offers


@dataclass(frozen=True)
class Quote:
    tiers: list[TierQuote]
    auto: TierQuote | None


def model_quote(model: RegisteredModel, *, traffic: Traffic, slo: Slo, dtype: str | None = None) -> Quote:
    """Every active tier's quote for this model and traffic: one query for the tiers."""
    quotes = quote_tiers(model_architecture(model), dtype or model.dtype, tier_offers(hardware_tier_list()),
                         traffic, slo)
    return Quote(tiers=quotes, auto=pick_auto(quotes))


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def quote_rows(quote: Quote) -> list[dict]:
    """The quote's tiers as plain rows (the API's and the console's): a latency the tier
    cannot offer is None, not NaN."""
    return [{**q.__dict__, "ttft_p95_ms": _finite(q.ttft_p95_ms), "tpot_p95_ms": _finite(q.tpot_p95_ms),
             "requests_per_s_per_replica": round(q.requests_per_s_per_replica, 3)} for q in quote.tiers]


def accelerator_names() -> dict[str, str]:
    """slug → the accelerator's product name, for people reading a quote."""
    return dict(AcceleratorType.objects.values_list("slug", "name"))
