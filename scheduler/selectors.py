"""Reads of the scheduler: the catalog, a tenant's models and quotes built from them, the fleet and
its free capacity, quotas, and deployments with their replicas."""

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, F, IntegerField, OuterRef, Prefetch, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from scheduler.architecture import Architecture, parse_config
from scheduler.catalog import efficiency_for
from scheduler.estimator import (
    ReplicaOption,
    Slo,
    TierOffer,
    TierQuote,
    Traffic,
    best_option,
    pick_auto,
    quote_tiers,
    replica_options,
)
from scheduler.models import (
    AcceleratorType,
    Deployment,
    DeploymentEvent,
    FleetEvent,
    HardwareTier,
    Node,
    RegisteredModel,
    Region,
    Replica,
    TenantLimits,
    TenantQuota,
    Zone,
)
from tenants.models import Tenant
from tenants.scoping import NotFound, scoped


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


# --- fleet ----------------------------------------------------------------------------------


def region_list():
    return Region.objects.prefetch_related("zones").order_by("slug")


def fleet_region_list():
    """Regions with their zones, each zone annotated with `node_count`."""
    zones = Zone.objects.annotate(node_count=Count("nodes")).order_by("slug")
    return Region.objects.prefetch_related(Prefetch("zones", queryset=zones)).order_by("slug")


def tenant_by_id(tenant_id) -> Tenant:
    """Any tenant by its public id, for the operator's routes (which act across tenants)."""
    tenant = Tenant.objects.filter(public_id=tenant_id).first() if is_uuid(tenant_id) else None
    if tenant is None:
        raise NotFound(Tenant)
    return tenant


def _held_accelerators() -> Subquery:
    """Σ accelerators of the replicas holding accelerators on the outer query's node."""
    held = (Replica.objects.filter(node=OuterRef("pk"), state__in=Replica.HOLDING_STATES)
            .order_by().values("node").annotate(total=Sum("accelerators")).values("total"))
    return Subquery(held, output_field=IntegerField())


def node_free_accelerators(nodes=None):
    """Nodes annotated with `used_accelerators` (held by replicas that are not stopped or failed)
    and `free_accelerators` = accelerators − used. Whatever the node's state: only a `ready`
    node offers its free accelerators to new replicas."""
    nodes = Node.objects.all() if nodes is None else nodes
    return nodes.annotate(used_accelerators=Coalesce(_held_accelerators(), 0)).annotate(
        free_accelerators=F("accelerators") - F("used_accelerators"))


def node_list(*, region: str | None = None, hardware: str | None = None, state: str | None = None):
    nodes = Node.objects.select_related("zone__region", "accelerator")
    if region:
        nodes = nodes.filter(zone__region__slug=region)
    if hardware:
        nodes = nodes.filter(accelerator__slug=hardware)
    if state:
        nodes = nodes.filter(state=state)
    return node_free_accelerators(nodes).order_by("name")


def node_by_name(name: str) -> Node:
    node = node_list().filter(name=name).first()
    if node is None:
        raise NotFound(Node)
    return node


def replica_list_on_node(node: Node):
    """Every tenant's replicas holding accelerators on the node: an operator's read."""
    return (Replica.objects.filter(node=node, state__in=Replica.HOLDING_STATES)
            .select_related("deployment", "tenant", "tier").order_by("created_at", "id"))


@dataclass(frozen=True)
class RegionCapacity:
    region: str
    hardware: str
    nodes: int
    total_accelerators: int
    free_accelerators: int  # on ready nodes, not held by any replica


def fleet_capacity_by_region() -> list[RegionCapacity]:
    """Per region and hardware type: nodes, accelerators, and those free for new replicas. Two queries."""
    held = defaultdict(int)
    for row in (Replica.objects.filter(state__in=Replica.HOLDING_STATES, node__state=Node.State.READY)
                .values("node__zone__region__slug", "node__accelerator__slug")
                .annotate(total=Sum("accelerators")).order_by()):
        held[(row["node__zone__region__slug"], row["node__accelerator__slug"])] = row["total"]
    rows = []
    for row in (Node.objects.values("zone__region__slug", "accelerator__slug")
                .annotate(nodes=Count("id"), total=Sum("accelerators"),
                          ready=Coalesce(Sum("accelerators", filter=Q(state=Node.State.READY)), 0))
                .order_by("zone__region__slug", "accelerator__slug")):
        key = (row["zone__region__slug"], row["accelerator__slug"])
        rows.append(RegionCapacity(region=key[0], hardware=key[1], nodes=row["nodes"],
                                   total_accelerators=row["total"], free_accelerators=row["ready"] - held[key]))
    return rows


def availability_by_hardware() -> dict[str, list[dict]]:
    """hardware slug → [{region, free_accelerators}], for the hardware-tiers list."""
    availability = defaultdict(list)
    for row in fleet_capacity_by_region():
        availability[row.hardware].append({"region": row.region, "free_accelerators": row.free_accelerators})
    return availability


def fleet_event_list():
    return FleetEvent.objects.all()


# --- quotas and limits ----------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_priority: int
    default_accelerator_quota: int
    default_accelerator_quota_is_set: bool  # False: the site default (SWITCHYARD_DEFAULT_ACCELERATOR_QUOTA)


def tenant_limits(tenant: Tenant) -> Limits:
    row = TenantLimits.objects.filter(tenant=tenant).first()
    own_default = row.default_accelerator_quota if row else None
    return Limits(max_priority=row.max_priority if row else 0,
                  default_accelerator_quota=settings.DEFAULT_ACCELERATOR_QUOTA if own_default is None else own_default,
                  default_accelerator_quota_is_set=own_default is not None)


def tenant_accelerators_in_use(tenant: Tenant) -> dict[str, int]:
    """tier slug → accelerators the tenant's replicas hold on it now."""
    rows = (scoped(Replica, tenant).filter(state__in=Replica.HOLDING_STATES).values("tier__slug")
            .annotate(total=Sum("accelerators")).order_by())
    return {row["tier__slug"]: row["total"] for row in rows}


@dataclass(frozen=True)
class Quota:
    tier: str
    max_accelerators: int
    source: str  # "tier" (set for this tier), "tenant" (the tenant's default), "site" (the site default)
    in_use: int


def tenant_quotas(tenant: Tenant, tiers=None) -> list[Quota]:
    """The effective quota of every active tier (or of `tiers`) for the tenant, and what it uses."""
    tiers = hardware_tier_list() if tiers is None else tiers
    limits = tenant_limits(tenant)
    explicit = dict(TenantQuota.objects.filter(tenant=tenant).values_list("tier__slug", "max_accelerators"))
    in_use = tenant_accelerators_in_use(tenant)
    default_source = "tenant" if limits.default_accelerator_quota_is_set else "site"
    return [Quota(tier=tier.slug, max_accelerators=explicit.get(tier.slug, limits.default_accelerator_quota),
                  source="tier" if tier.slug in explicit else default_source, in_use=in_use.get(tier.slug, 0))
            for tier in tiers]


def tenant_quota_for(tenant: Tenant) -> dict[str, int]:
    """tier slug → the most accelerators the tenant may hold on it (explicit, else the default)."""
    return {quota.tier: quota.max_accelerators for quota in tenant_quotas(tenant)}


# --- deployments ----------------------------------------------------------------------------

# `auto` chooses among these classes: spot capacity can be reclaimed at any time,
# which an SLO cannot promise around (as the estimator's pick_auto).
AUTO_CAPACITY_CLASSES = ("on-demand", "reserved")


def auto_tier_list():
    return hardware_tier_list().filter(capacity_class__in=AUTO_CAPACITY_CLASSES)


def _with_replica_counts(deployments):
    holding = Q(replicas__state__in=Replica.HOLDING_STATES)
    return deployments.annotate(
        replicas_total=Count("replicas", filter=holding),
        replicas_ready=Count("replicas", filter=Q(replicas__state=Replica.State.READY)),
        accelerators_in_use=Coalesce(Sum("replicas__accelerators", filter=holding), 0),
    )


def deployment_list_for_tenant(tenant: Tenant):
    deployments = scoped(Deployment, tenant).select_related("model").prefetch_related("tiers", "regions")
    return _with_replica_counts(deployments).order_by("name", "id")


def deployment_event_list(deployment: Deployment):
    return scoped(DeploymentEvent, deployment.tenant).filter(deployment=deployment)


def replica_list_for_deployment(deployment: Deployment, *, states: list[str] | None = None):
    replicas = (scoped(Replica, deployment.tenant).filter(deployment=deployment)
                .select_related("node__zone__region", "node__accelerator", "tier", "placement"))
    if states:
        replicas = replicas.filter(state__in=states)
    return replicas.order_by("-created_at", "-id")


def deployment_allowed_tiers(deployment: Deployment) -> list[HardwareTier]:
    """The tiers the deployment may run on: its named tiers, or the `auto` set, active ones only."""
    if deployment.tier_auto:
        return list(auto_tier_list())
    return [tier for tier in deployment.tiers.select_related("accelerator") if tier.active]


@dataclass(frozen=True)
class HardwareFit:
    """How a model serves on one hardware type, and the allowed tiers that sell it (cheapest first)."""

    hardware: str
    tiers: list[HardwareTier]
    options: list[ReplicaOption]
    best: ReplicaOption | None


def hardware_fits(model: RegisteredModel, tiers: list[HardwareTier], traffic: Traffic, slo: Slo) -> list[HardwareFit]:
    """Per hardware type among `tiers`: every tensor-parallel shape and the best one meeting the SLO."""
    arch = model_architecture(model)
    by_hardware: dict[str, list[HardwareTier]] = defaultdict(list)
    for tier in tiers:
        by_hardware[tier.accelerator.slug].append(tier)
    fits = []
    for slug, hardware_tiers in sorted(by_hardware.items()):
        hardware = hardware_tiers[0].accelerator.to_hardware()
        options = replica_options(arch, model.dtype, hardware, efficiency_for(hardware), traffic, slo)
        fits.append(HardwareFit(hardware=slug, options=options, best=best_option(options),
                                tiers=sorted(hardware_tiers, key=lambda t: (t.price_per_accelerator_hour, t.slug))))
    return fits


@dataclass(frozen=True)
class PlacementOption:
    """One way to run a replica of a deployment, as the placement problem takes it."""

    tier: str
    hardware: str
    accelerators: int
    rps_per_replica: float
    price_per_accelerator_hour: object  # Decimal
    currency: str


def deployment_placement_options(deployment: Deployment) -> list[PlacementOption]:
    """The deployment's replica options (from `replica_options`, kept by the services) on the
    cheapest allowed tier of each hardware type. Hardware whose tiers were since made inactive
    drops out."""
    cheapest: dict[str, HardwareTier] = {}
    for tier in sorted(deployment_allowed_tiers(deployment), key=lambda t: (t.price_per_accelerator_hour, t.slug)):
        cheapest.setdefault(tier.accelerator.slug, tier)
    return [PlacementOption(tier=cheapest[o["hardware"]].slug, hardware=o["hardware"], accelerators=o["accelerators"],
                            rps_per_replica=o["rps_per_replica"],
                            price_per_accelerator_hour=cheapest[o["hardware"]].price_per_accelerator_hour,
                            currency=cheapest[o["hardware"]].currency)
            for o in deployment.replica_options if o["hardware"] in cheapest]


# The extended resource each vendor's Kubernetes device plugin advertises.
KUBERNETES_ACCELERATOR_RESOURCES = {
    "nvidia": "nvidia.com/gpu",
    "amd": "amd.com/gpu",
    "intel": "habana.ai/gaudi",
    "aws": "aws.amazon.com/neuron",
    "google": "google.com/tpu",
}


@dataclass(frozen=True)
class ManifestReplicaGroup:
    """Replicas of one shape: same hardware, tensor-parallel degree and generation."""

    hardware: str
    vendor: str
    kind: str
    resource_name: str
    accelerators: int  # per replica: the tensor-parallel size
    generation: int
    replicas: int
    nodes: list[str]  # one entry per replica (a node twice when it runs two)
    replica_ids: list[str]  # the replicas' public ids, in the order of `nodes`


@dataclass(frozen=True)
class ManifestSpec:
    deployment_id: str
    name: str
    tenant_id: str
    tenant_slug: str
    status: str
    generation: int
    model_name: str
    source_uri: str
    credential_ref: str
    dtype: str
    modality: str
    context_length: int
    model_config: dict  # the Hugging Face config.json
    regions: list[str]
    token_usage_source: str
    options: list[dict]
    groups: list[ManifestReplicaGroup]


def deployment_for_manifests(deployment_id) -> ManifestSpec:
    """What the Kubernetes manifest renderer needs for one deployment (its public id).

    An operator's read, not a tenant's: the caller (a management command) renders
    any tenant's deployment. Groups list the replicas holding accelerators.
    """
    deployment = Deployment.objects.select_related("model", "tenant").filter(public_id=deployment_id).first() \
        if is_uuid(deployment_id) else None
    if deployment is None:
        raise NotFound(Deployment)
    groups = defaultdict(list)
    replicas = (Replica.objects.filter(deployment=deployment, state__in=Replica.HOLDING_STATES)
                .select_related("node__accelerator").order_by("node__name", "created_at", "id"))
    for replica in replicas:
        groups[(replica.node.accelerator, replica.accelerators, replica.generation)].append(replica)
    model = deployment.model
    return ManifestSpec(
        deployment_id=str(deployment.public_id), name=deployment.name, tenant_id=str(deployment.tenant.public_id),
        tenant_slug=deployment.tenant.slug, status=deployment.status, generation=deployment.generation,
        model_name=model.name, source_uri=model.source_uri, credential_ref=model.credential_ref, dtype=model.dtype,
        modality=model.modality, context_length=model.context_length, model_config=model.config,
        regions=sorted(deployment.regions.values_list("slug", flat=True)),
        token_usage_source=deployment.token_usage_source, options=list(deployment.replica_options),
        groups=[ManifestReplicaGroup(hardware=accelerator.slug, vendor=accelerator.vendor, kind=accelerator.kind,
                                     resource_name=KUBERNETES_ACCELERATOR_RESOURCES.get(accelerator.vendor, ""),
                                     accelerators=accelerators, generation=generation, replicas=len(members),
                                     nodes=[replica.node.name for replica in members],
                                     replica_ids=[str(replica.public_id) for replica in members])
                for (accelerator, accelerators, generation), members in groups.items()],
    )


def is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
