"""Writes of the scheduler: the hardware catalog, the model registry, deployments, the fleet
(nodes, imports) and the quotas and limits staff set for tenants."""

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from scheduler import selectors
from scheduler.architecture import MAX_CONFIG_BYTES, Architecture, ConfigError, parse_config
from scheduler.autoscaling import PolicyError, policy_from_dict
from scheduler.catalog import (
    CAPACITY_CLASS_PRICE_FACTOR,
    CAPACITY_CLASSES,
    DATA,
    accelerator_specs,
    list_prices,
    model_templates,
)
from scheduler.estimator import Slo, Traffic
from scheduler.fleet_file import FleetFileError, FleetSpec, load_fleet_text, parse_fleet
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
from tenants.context import Actor, Operator, system_operator
from tenants.errors import Conflict, Forbidden, ServiceError
from tenants.models import Tenant
from tenants.services import audit_record
from tenants.webhooks import webhook_emit

# --- catalog ------------------------------------------------------------------------------

SPEC_FIELDS = ("name", "vendor", "kind", "memory_gb", "memory_type", "memory_bandwidth_tbs", "bf16_tflops",
               "fp8_tflops", "int8_tops", "interconnect_kind", "interconnect_gbs", "accelerators_per_node",
               "load_bandwidth_gbs")


def _decimal_or_none(value):
    return None if value is None else Decimal(str(value))


@transaction.atomic
def catalog_sync() -> int:
    """Make the database catalog match data/accelerators.yaml.

    Specifications are vendor facts: they follow the file. Tier prices are the
    operator's: a missing tier is created from data/list_prices.yaml, an existing
    tier's price is left as staff set it. Returns the number of tiers created.
    """
    created = 0
    for slug, spec in accelerator_specs().items():
        values = {field: spec.get(field) for field in SPEC_FIELDS if field in spec}
        for field in ("memory_gb", "memory_bandwidth_tbs", "bf16_tflops", "fp8_tflops", "int8_tops",
                      "interconnect_gbs", "load_bandwidth_gbs"):
            if field in values:
                values[field] = _decimal_or_none(values[field])
        values["memory_type"] = values.get("memory_type") or ""
        values["sources"] = spec.get("sources", {})
        accelerator, _ = AcceleratorType.objects.update_or_create(slug=slug, defaults=values)
        on_demand = Decimal(str(list_prices()[slug]))
        for capacity_class in CAPACITY_CLASSES:
            price = (on_demand * Decimal(str(CAPACITY_CLASS_PRICE_FACTOR[capacity_class]))).quantize(Decimal("0.0001"))
            _tier, was_created = HardwareTier.objects.get_or_create(
                accelerator=accelerator, capacity_class=capacity_class,
                defaults={"slug": f"{slug}-{capacity_class}", "price_per_accelerator_hour": price, "currency": "USD"},
            )
            created += was_created
    return created


# --- model registry -----------------------------------------------------------------------

SOURCE_SCHEMES = ("hf", "s3", "gs", "https", "oci", "pvc")
SOURCE_PATTERN = re.compile(r"^(hf|s3|gs|https|oci|pvc)://[A-Za-z0-9][\w.\-/:@]*$")
# A credential reference names a secret (a Kubernetes secret name: DNS-1123 subdomain).
CREDENTIAL_REF_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _validate_source(source_uri: str) -> str:
    source_uri = source_uri.strip()
    if not SOURCE_PATTERN.match(source_uri):
        raise ServiceError(f"source_uri must look like hf://org/name or s3://bucket/path "
                           f"(schemes: {', '.join(SOURCE_SCHEMES)}).", field="source_uri")
    if source_uri.startswith("hf://") and source_uri.count("/") < 3:
        raise ServiceError("A Hugging Face source is hf://<organisation>/<repository>.", field="source_uri")
    return source_uri


def _validate_credential_ref(credential_ref: str) -> str:
    credential_ref = credential_ref.strip()
    if credential_ref and not CREDENTIAL_REF_PATTERN.match(credential_ref):
        raise ServiceError("credential_ref is the NAME of a secret (lowercase letters, digits, '-' and '.'), "
                           "never the secret itself.", field="credential_ref")
    return credential_ref


def architecture_from(config, modality: str) -> Architecture:
    """Parse a config, turning its errors into field errors of the request (`config.<field>`)."""
    if len(json.dumps(config)) > MAX_CONFIG_BYTES:
        raise ServiceError(f"config is larger than {MAX_CONFIG_BYTES // 1024} KiB.", field="config")
    try:
        return parse_config(config, modality=modality)
    except ConfigError as error:
        raise ServiceError(f"Not a valid transformer config: {error.message}", field=f"config.{error.field}") from None


def _derived(arch: Architecture, dtype: str) -> dict:
    return {
        "total_params": arch.total_params, "active_params": arch.active_params,
        "weight_bytes": int(arch.weight_bytes(dtype)), "kv_bytes_per_token": int(arch.kv_bytes_per_token()),
        "context_length": arch.context_length,
    }


def _template(template: str) -> dict:
    templates = model_templates()
    if template not in templates:
        raise ServiceError(f"Unknown template {template!r}; choose from {', '.join(sorted(templates))}.",
                           field="template")
    return templates[template]


@transaction.atomic
def model_create(*, actor: Actor, name: str, source_uri: str = "", config: dict | None = None, template: str = "",
                 modality: str | None = None, dtype: str = "bf16", credential_ref: str = "") -> RegisteredModel:
    """Register a model from a config.json, or from a built-in template (whose source and
    modality are defaults the request may override)."""
    name = name.strip()
    if not name:
        raise ServiceError("A model needs a name.", field="name")
    if template:
        chosen = _template(template)
        config = chosen["config"] if config is None else config
        source_uri = source_uri or chosen["source_uri"]
        modality = modality or chosen["modality"]
    if config is None:
        raise ServiceError("Give a config (the model's config.json) or a template.", field="config")
    modality = modality or RegisteredModel.Modality.TEXT
    if dtype not in RegisteredModel.Dtype.values:
        raise ServiceError(f"dtype must be one of {', '.join(RegisteredModel.Dtype.values)}.", field="dtype")
    arch = architecture_from(config, modality)
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                tenant=actor.tenant, name=name, source_uri=_validate_source(source_uri),
                credential_ref=_validate_credential_ref(credential_ref), modality=modality, dtype=dtype,
                template=template, config=config, created_by=actor.user, **_derived(arch, dtype),
            )
    except IntegrityError:
        raise Conflict(f"A model named {name!r} already exists.", field="name") from None
    audit_record(actor=actor, action="model.create", obj=model,
                 changes={"source_uri": model.source_uri, "dtype": dtype, "template": template})
    return model


MODEL_EDITABLE = ("name", "source_uri", "credential_ref", "dtype", "config", "modality")


@transaction.atomic
def model_update(*, actor: Actor, model: RegisteredModel, **fields) -> RegisteredModel:
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk, tenant=actor.tenant)
    changes = {}
    for field, value in fields.items():
        if field not in MODEL_EDITABLE:
            raise ServiceError(f"{field} cannot be changed.", field=field)
        if field == "name":
            value = value.strip()
            if not value:
                raise ServiceError("A model needs a name.", field="name")
        if field == "source_uri":
            value = _validate_source(value)
        if field == "credential_ref":
            value = _validate_credential_ref(value)
        if getattr(model, field) != value:
            changes[field] = "changed" if field == "config" else [getattr(model, field), value]
            setattr(model, field, value)
    if not changes:
        return model
    arch = architecture_from(model.config, model.modality)
    for field, value in _derived(arch, model.dtype).items():
        setattr(model, field, value)
    model.updated_at = timezone.now()
    try:
        with transaction.atomic():
            model.save()
    except IntegrityError:
        raise Conflict(f"A model named {model.name!r} already exists.", field="name") from None
    audit_record(actor=actor, action="model.update", obj=model, changes=changes)
    return model


def _refuse_model_in_use(model: RegisteredModel, names: list[str]) -> Conflict:
    shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
    return Conflict(f"A model in use by a deployment cannot be deleted: {model.name} is used by {shown}. "
                    f"Delete those deployments (or point them at another model) first.")


@transaction.atomic
def model_delete(*, actor: Actor, model: RegisteredModel) -> None:
    """Delete a model no deployment uses; a model in use is a 409 naming the deployments."""
    names = list(Deployment.objects.filter(tenant=actor.tenant, model=model).order_by("name")
                 .values_list("name", flat=True))
    if names:
        raise _refuse_model_in_use(model, names)
    audit_record(actor=actor, action="model.delete", obj=model)
    try:
        with transaction.atomic():
            model.delete()
    except ProtectedError:
        # A deployment of it was created between the check and the delete.
        raise _refuse_model_in_use(model, [d.name for d in Deployment.objects.filter(model=model)]) from None


# --- deployments ----------------------------------------------------------------------------

# A deployment's name names its Kubernetes objects and metrics: a DNS-1123 label.
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 1000
MAX_PRIORITY = 1000
AUTO = "auto"


@dataclass(frozen=True)
class DesiredState:
    """What a deployment asks for, as its tenant states it; validated by `_checked`."""

    model: RegisteredModel
    tiers: str | tuple[str, ...]  # AUTO, or the allowed tiers' slugs
    regions: tuple[str, ...]
    min_replicas: int
    max_replicas: int
    slo: Slo
    traffic: Traffic
    autoscaling: dict
    priority: int
    token_usage_source: str

    def public(self) -> dict:
        """As JSON, for the audit log and the timeline."""
        return {
            "model": self.model.name, "tiers": self.tiers if self.tiers == AUTO else list(self.tiers),
            "regions": list(self.regions), "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
            "slo": asdict(self.slo), "traffic": asdict(self.traffic), "autoscaling": self.autoscaling,
            "priority": self.priority, "token_usage_source": self.token_usage_source,
        }


@dataclass(frozen=True)
class Checked:
    tiers: list[HardwareTier]  # the named tiers; empty for auto
    regions: list[Region]
    options: list[dict]  # Deployment.replica_options


def _state_of(deployment: Deployment) -> DesiredState:
    return DesiredState(
        model=deployment.model,
        tiers=AUTO if deployment.tier_auto else tuple(sorted(tier.slug for tier in deployment.tiers.all())),
        regions=tuple(sorted(region.slug for region in deployment.regions.all())),
        min_replicas=deployment.min_replicas, max_replicas=deployment.max_replicas, slo=deployment.slo(),
        traffic=deployment.traffic(), autoscaling=deployment.autoscaling, priority=deployment.priority,
        token_usage_source=deployment.token_usage_source,
    )


def _normal_tiers(tiers) -> str | tuple[str, ...]:
    if tiers == AUTO or tiers is None:
        return AUTO
    if isinstance(tiers, str) or not all(isinstance(tier, str) for tier in tiers):
        raise ServiceError('tiers is "auto" or a list of tier slugs.', field="tiers")
    return tuple(sorted(set(tiers)))


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not DEPLOYMENT_NAME.match(name):
        raise ServiceError("A deployment name is 1 to 63 lowercase letters, digits and '-', starting and ending "
                           "with a letter or digit (it names Kubernetes objects).", field="name")
    return name


def _check_model(actor: Actor, model: RegisteredModel) -> None:
    if model.tenant_id != actor.tenant.pk:
        raise ServiceError("No such model in this tenant.", field="model")


def _check_replicas(state: DesiredState) -> None:
    for field in ("min_replicas", "max_replicas"):
        value = getattr(state, field)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
            raise ServiceError(f"{field} must be a whole number from 0 to {MAX_REPLICAS}.", field=field)
    if state.max_replicas < 1:
        raise ServiceError("max_replicas must be at least 1.", field="max_replicas")
    if state.min_replicas > state.max_replicas:
        raise ServiceError(f"min_replicas ({state.min_replicas}) must not exceed max_replicas "
                           f"({state.max_replicas}).", field="min_replicas")


def _resolve_tiers(tiers) -> list[HardwareTier]:
    if tiers == AUTO:
        return []
    if not tiers:
        raise ServiceError('Name at least one tier, or ask for "auto".', field="tiers")
    found = {tier.slug: tier for tier in selectors.hardware_tier_list(active_only=False).filter(slug__in=tiers)}
    unknown = [slug for slug in tiers if slug not in found]
    if unknown:
        raise ServiceError(f"Unknown tiers: {', '.join(unknown)} (GET /api/v1/hardware-tiers lists them).",
                           field="tiers")
    inactive = [slug for slug in tiers if not found[slug].active]
    if inactive:
        raise ServiceError(f"No longer offered: {', '.join(inactive)}.", field="tiers")
    return [found[slug] for slug in tiers]


def _resolve_regions(regions: tuple[str, ...]) -> list[Region]:
    if not regions:
        raise ServiceError("Name at least one region (GET /api/v1/regions lists them).", field="regions")
    found = {region.slug: region for region in Region.objects.filter(slug__in=regions)}
    unknown = [slug for slug in regions if slug not in found]
    if unknown:
        raise ServiceError(f"Unknown regions: {', '.join(unknown)}; there are "
                           f"{', '.join(Region.objects.values_list('slug', flat=True)) or 'none yet'}.",
                           field="regions")
    return [found[slug] for slug in regions]


def _check_traffic_and_slo(state: DesiredState) -> None:
    slo, traffic = state.slo, state.traffic
    for field, value in (("slo.ttft_p95_ms", slo.ttft_p95_ms), ("slo.tpot_p95_ms", slo.tpot_p95_ms),
                         ("traffic.requests_per_s", traffic.requests_per_s)):
        if not value > 0 or math.isinf(value):
            raise ServiceError("must be a positive number.", field=field)
    for field, typical, p95 in (("traffic.input_tokens", traffic.input_tokens, traffic.input_tokens_p95),
                                ("traffic.output_tokens", traffic.output_tokens, traffic.output_tokens_p95)):
        if typical < 1:
            raise ServiceError("The typical size must be at least 1 token.", field=f"{field}.typical")
        if p95 < typical:
            raise ServiceError("p95 must be at least the typical size.", field=f"{field}.p95")


def _check_token_usage_source(state: DesiredState) -> None:
    if state.token_usage_source not in Deployment.TokenUsageSource.values:
        raise ServiceError(f"token_usage_source is one of {', '.join(Deployment.TokenUsageSource.values)}.",
                           field="token_usage_source")


def _check_priority(actor: Actor, state: DesiredState, current: DesiredState | None) -> None:
    """A priority above the tenant's cap is 403: the request is well-formed, the operator has not
    granted it. A cap lowered after the fact does not block other changes to a deployment."""
    if isinstance(state.priority, bool) or not isinstance(state.priority, int) \
            or not 0 <= state.priority <= MAX_PRIORITY:
        raise ServiceError(f"priority must be a whole number from 0 to {MAX_PRIORITY}.", field="priority")
    if current is not None and state.priority == current.priority:
        return
    cap = selectors.tenant_limits(actor.tenant).max_priority
    if state.priority > cap:
        raise Forbidden(f"priority {state.priority} is above this tenant's maximum of {cap}; the operator sets "
                        f"the maximum.", field="priority")


def _check_autoscaling(state: DesiredState) -> None:
    try:
        policy = policy_from_dict(state.autoscaling)
    except PolicyError as error:
        field = "autoscaling" if error.field == "autoscaling" else f"autoscaling.{error.field}"
        raise ServiceError(error.message, field=field) from None
    if policy.scale_to_zero_after is not None and state.min_replicas != 0:
        raise ServiceError("scale_to_zero_after needs min_replicas 0: a deployment only scales to zero if "
                           "its minimum allows it.", field="autoscaling.scale_to_zero_after")


def _closest_to_slo(fits: list[selectors.HardwareFit], slo: Slo):
    """(fit, option) whose predicted p95s are nearest the SLO (by the worse of the two ratios)."""
    candidates = [(fit, option) for fit in fits for option in fit.options
                  if not math.isnan(option.capacity.ttft_ms)]
    return min(candidates, default=None, key=lambda c: max(c[1].capacity.ttft_ms / slo.ttft_p95_ms,
                                                          c[1].capacity.tpot_ms / slo.tpot_p95_ms))


def _check_fits(state: DesiredState, fits: list[selectors.HardwareFit]) -> None:
    """The model fits some allowed tier, and meets the SLO on one; else say what comes closest."""
    field = "model" if state.tiers == AUTO else "tiers"
    if not fits:
        raise ServiceError("No tier is on offer at the moment.", field="tiers")
    if any(fit.best for fit in fits):
        return
    closest = _closest_to_slo(fits, state.slo)
    if closest is None:
        biggest = max(((fit, option) for fit in fits for option in fit.options),
                      key=lambda c: c[0].tiers[0].accelerator.memory_gb * c[1].accelerators)
        raise ServiceError(f"{state.model.name} does not fit on any allowed tier: even {biggest[1].accelerators} × "
                           f"{biggest[0].hardware}: {biggest[1].capacity.reason}.", field=field)
    fit, option = closest
    ttft, tpot = option.capacity.ttft_ms, option.capacity.tpot_ms
    missed = "slo.ttft_p95_ms" if ttft > state.slo.ttft_p95_ms else "slo.tpot_p95_ms"
    raise ServiceError(
        f"No allowed tier meets the SLO (p95 TTFT ≤ {state.slo.ttft_p95_ms:g} ms, p95 TPOT ≤ "
        f"{state.slo.tpot_p95_ms:g} ms). Closest: {fit.tiers[0].slug} with {option.accelerators} accelerator(s) "
        f"per replica, predicted p95 TTFT {ttft:.0f} ms and p95 TPOT {tpot:.1f} ms. Relax the SLO, allow "
        f"faster tiers, or expect shorter prompts.", field=missed)


def _check_quota(actor: Actor, state: DesiredState, fits: list[selectors.HardwareFit]) -> None:
    """min_replicas of the deployment alone fits the tenant's quota on some serving tier.
    (Quotas across all of a tenant's deployments are enforced by placement.)"""
    if state.min_replicas == 0:
        return
    quotas = selectors.tenant_quota_for(actor.tenant)
    needs = []
    for fit in fits:
        if fit.best is None:
            continue
        need = state.min_replicas * fit.best.accelerators
        for tier in fit.tiers:
            if need <= quotas.get(tier.slug, 0):
                return
            needs.append((tier.slug, need, quotas.get(tier.slug, 0)))
    tier, need, quota = min(needs, key=lambda n: n[1] - n[2])
    raise Forbidden(f"min_replicas {state.min_replicas} needs {need} accelerators on {tier}, and this tenant's "
                    f"quota there is {quota} (no allowed tier has room). Lower min_replicas or ask the operator "
                    f"for a larger quota.", field="min_replicas")


def _options_json(fits: list[selectors.HardwareFit]) -> list[dict]:
    return [{"hardware": fit.hardware, "accelerators": fit.best.accelerators,
             "rps_per_replica": round(fit.best.capacity.requests_per_s, 4),
             "ttft_p95_ms": round(fit.best.capacity.ttft_ms, 1), "tpot_p95_ms": round(fit.best.capacity.tpot_ms, 2)}
            for fit in fits if fit.best is not None]


FOOTPRINT_FIELDS = ("model", "tiers", "min_replicas", "slo", "traffic")


def _checked(actor: Actor, state: DesiredState, current: DesiredState | None) -> Checked:
    """Every rule a deployment's desired state must satisfy; cheap checks first, the estimator last."""
    _check_model(actor, state.model)
    _check_replicas(state)
    named_tiers = _resolve_tiers(state.tiers)
    regions = _resolve_regions(state.regions)
    _check_traffic_and_slo(state)
    _check_token_usage_source(state)
    _check_priority(actor, state, current)
    _check_autoscaling(state)
    allowed = named_tiers or list(selectors.auto_tier_list())
    fits = selectors.hardware_fits(state.model, allowed, state.traffic, state.slo)
    _check_fits(state, fits)
    if current is None or any(getattr(state, f) != getattr(current, f) for f in FOOTPRINT_FIELDS):
        _check_quota(actor, state, fits)
    return Checked(tiers=named_tiers, regions=regions, options=_options_json(fits))


def _write_state(deployment: Deployment, state: DesiredState, checked: Checked) -> None:
    deployment.model = state.model
    deployment.tier_auto = state.tiers == AUTO
    deployment.min_replicas, deployment.max_replicas = state.min_replicas, state.max_replicas
    deployment.slo_ttft_p95_ms, deployment.slo_tpot_p95_ms = state.slo.ttft_p95_ms, state.slo.tpot_p95_ms
    traffic = state.traffic
    deployment.requests_per_s = traffic.requests_per_s
    deployment.input_tokens, deployment.input_tokens_p95 = traffic.input_tokens, traffic.input_tokens_p95
    deployment.output_tokens, deployment.output_tokens_p95 = traffic.output_tokens, traffic.output_tokens_p95
    deployment.autoscaling = state.autoscaling
    deployment.priority = state.priority
    deployment.token_usage_source = state.token_usage_source
    deployment.replica_options = checked.options
    deployment.updated_at = timezone.now()


def deployment_status_changed(*, deployment: Deployment, old: str, new: str, reason: str = "") -> None:
    """Tell the tenant's webhooks (`deployment.status_changed`). Call it wherever a deployment's
    status is written, in that transaction: the event is sent only if the change commits."""
    if old != new:
        webhook_emit(tenant=deployment.tenant, event_type="deployment.status_changed",
                     data={"deployment": str(deployment.public_id), "name": deployment.name, "from": old, "to": new,
                           "reason": reason})


def deployment_event_add(*, deployment: Deployment, kind: str, message: str, data: dict | None = None
                         ) -> DeploymentEvent:
    """Add to the deployment's timeline (the tenant reads it). For services and the reconcile loop."""
    return DeploymentEvent.objects.create(tenant_id=deployment.tenant_id, deployment=deployment, kind=kind,
                                          message=message[:500], data=data or {})


def _describe(state: DesiredState) -> str:
    tiers = "auto" if state.tiers == AUTO else ", ".join(state.tiers)
    return (f"{state.model.name} on {tiers} in {', '.join(state.regions)}, "
            f"{state.min_replicas}–{state.max_replicas} replicas")


@transaction.atomic
def deployment_create(*, actor: Actor, name: str, model: RegisteredModel, slo: Slo, traffic: Traffic,
                      tiers: str | list[str] = AUTO, regions: list[str] | None = None, min_replicas: int = 1,
                      max_replicas: int = 1, autoscaling: dict | None = None, priority: int = 0,
                      token_usage_source: str = Deployment.TokenUsageSource.SCRAPE) -> Deployment:
    """A new deployment in `pending`: the reconcile loop places it.

    `tiers` is "auto" (any active on-demand or reserved tier) or tier slugs; `regions`
    defaults to every region that exists now.
    """
    name = _check_name(name)
    if Deployment.objects.filter(tenant=actor.tenant, name=name).exists():
        raise Conflict(f"A deployment named {name!r} already exists.", field="name")
    if regions is None:
        regions = list(Region.objects.values_list("slug", flat=True))
        if not regions:
            raise ServiceError("The fleet has no regions yet: an operator must import it first.", field="regions")
    state = DesiredState(model=model, tiers=_normal_tiers(tiers), regions=tuple(sorted(set(regions))),
                         min_replicas=min_replicas, max_replicas=max_replicas, slo=slo, traffic=traffic,
                         autoscaling={} if autoscaling is None else autoscaling, priority=priority,
                         token_usage_source=token_usage_source)
    checked = _checked(actor, state, None)
    deployment = Deployment(tenant=actor.tenant, name=name, created_by=actor.user)
    _write_state(deployment, state, checked)
    try:
        with transaction.atomic():
            deployment.save()
    except IntegrityError:
        raise Conflict(f"A deployment named {name!r} already exists.", field="name") from None
    deployment.tiers.set(checked.tiers)
    deployment.regions.set(checked.regions)
    audit_record(actor=actor, action="deployment.create", obj=deployment, changes=state.public())
    deployment_event_add(deployment=deployment, kind="created", message=f"Created: {_describe(state)}.",
                         data=state.public())
    return deployment


DEPLOYMENT_EDITABLE = ("model", "tiers", "regions", "min_replicas", "max_replicas", "slo", "traffic", "autoscaling",
                       "priority", "token_usage_source")


def _locked(actor: Actor, deployment: Deployment) -> Deployment:
    # of=self: `model` is nullable (soft delete), so its join is an outer one, which PostgreSQL cannot lock.
    return (Deployment.objects.select_for_update(of=("self",)).select_related("model")
            .get(pk=deployment.pk, tenant=actor.tenant))


def _rollout_reason(before: DesiredState, after: DesiredState, old_options: list[dict],
                    new_options: list[dict]) -> str:
    """Why replicas must be replaced, or "" when the running ones still fit the new state."""
    if after.model != before.model:
        return "the model changed"
    if after.tiers != before.tiers:
        return "the tier choice changed"
    shape = {o["hardware"]: o["accelerators"] for o in old_options}
    if {o["hardware"]: o["accelerators"] for o in new_options} != shape:
        return "the replica shape (tensor-parallel degree) changed"
    return ""


def _status_after_update(status: str, rollout: bool) -> str:
    if status == Deployment.Status.FAILED:
        return Deployment.Status.PENDING  # a changed deployment deserves another try
    if rollout and status in (Deployment.Status.READY, Deployment.Status.DEGRADED):
        return Deployment.Status.DEPLOYING
    return status


@transaction.atomic
def deployment_update(*, actor: Actor, deployment: Deployment, **changes) -> Deployment:
    """Change what a deployment asks for. Everything is checked again; a change of model, tier
    choice or replica shape starts a new generation, which the reconcile loop rolls out."""
    deployment = _locked(actor, deployment)
    if "name" in changes and changes.pop("name") != deployment.name:
        raise ServiceError("A deployment's name cannot be changed: it names its Kubernetes objects and "
                           "metrics. Create a new deployment instead.", field="name")
    for field in changes:
        if field not in DEPLOYMENT_EDITABLE:
            raise ServiceError(f"{field} cannot be changed.", field=field)
    if deployment.status == Deployment.Status.DELETING:
        raise Conflict("This deployment is being deleted; it can no longer be changed.")
    if "tiers" in changes:
        changes["tiers"] = _normal_tiers(changes["tiers"])
    if "regions" in changes:
        changes["regions"] = tuple(sorted(set(changes["regions"] or ())))
    if "autoscaling" in changes and changes["autoscaling"] is None:
        changes["autoscaling"] = {}  # null: back to the defaults
    current = _state_of(deployment)
    state = replace(current, **changes)
    before, after = current.public(), state.public()
    diff = {key: [before[key], after[key]] for key in after if before[key] != after[key]}
    if not diff:
        return deployment
    checked = _checked(actor, state, current)
    reason = _rollout_reason(current, state, deployment.replica_options, checked.options)
    _write_state(deployment, state, checked)
    deployment.generation += bool(reason)
    old_status, deployment.status = deployment.status, _status_after_update(deployment.status, bool(reason))
    deployment.save()
    deployment_status_changed(deployment=deployment, old=old_status, new=deployment.status,
                              reason=f"Changed: {reason or ', '.join(diff)}.")
    deployment.tiers.set(checked.tiers)
    deployment.regions.set(checked.regions)
    audit_record(actor=actor, action="deployment.update", obj=deployment, changes=diff)
    deployment_event_add(deployment=deployment, kind="updated", message=f"Changed: {', '.join(diff)}.", data=diff)
    if reason:
        deployment_event_add(deployment=deployment, kind="rollout",
                             message=f"Generation {deployment.generation}: replicas will be replaced ({reason}).",
                             data={"generation": deployment.generation, "reason": reason})
    return deployment


def _set_status(actor: Actor, deployment: Deployment, status: str, *, action: str, kind: str,
                message: str) -> Deployment:
    old = deployment.status
    deployment.status = status
    deployment.updated_at = timezone.now()
    deployment.save(update_fields=["status", "updated_at"])
    deployment_status_changed(deployment=deployment, old=old, new=status, reason=message)
    audit_record(actor=actor, action=action, obj=deployment, changes={"status": [old, status]})
    deployment_event_add(deployment=deployment, kind=kind, message=message, data={"status": [old, status]})
    return deployment


@transaction.atomic
def deployment_pause(*, actor: Actor, deployment: Deployment) -> Deployment:
    """Paused: the reconcile loop stops every replica and frees its accelerators. Pausing twice changes nothing."""
    deployment = _locked(actor, deployment)
    if deployment.status == Deployment.Status.PAUSED:
        return deployment
    if deployment.status == Deployment.Status.DELETING:
        raise Conflict("This deployment is being deleted; it cannot be paused.")
    return _set_status(actor, deployment, Deployment.Status.PAUSED, action="deployment.pause", kind="paused",
                       message="Paused: every replica stops and its accelerators are freed. Resume to start again.")


@transaction.atomic
def deployment_resume(*, actor: Actor, deployment: Deployment) -> Deployment:
    """A paused deployment goes back to `pending` and is placed again. Resuming a running one changes nothing."""
    deployment = _locked(actor, deployment)
    if deployment.status == Deployment.Status.DELETING:
        raise Conflict("This deployment is being deleted; it cannot be resumed.")
    if deployment.status != Deployment.Status.PAUSED:
        return deployment
    return _set_status(actor, deployment, Deployment.Status.PENDING, action="deployment.resume", kind="resumed",
                       message="Resumed: replicas will be placed again.")


@transaction.atomic
def deployment_budget_cap_set(*, actor: Actor, deployment: Deployment, cap: int | None,
                              reason: str = "") -> Deployment:
    """Cap the replicas the autoscaler may ask for (None: no cap). For billing's budget actions:
    the reconcile loop honours the cap from its next pass. Setting the same cap changes nothing."""
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ServiceError("A replica cap is a whole number ≥ 0, or none.", field="cap")
    deployment = Deployment.all_objects.select_for_update().get(pk=deployment.pk, tenant=actor.tenant)
    old = deployment.budget_replica_cap
    if old == cap:
        return deployment
    deployment.budget_replica_cap, deployment.updated_at = cap, timezone.now()
    deployment.save(update_fields=["budget_replica_cap", "updated_at"])
    audit_record(actor=actor, action="deployment.budget_cap_set", obj=deployment,
                 changes={"budget_replica_cap": [old, cap]})
    done = f"Replicas capped at {cap}" if cap is not None else "Replica cap lifted"
    deployment_event_add(deployment=deployment, kind="budget_cap",
                         message=f"{done} by {actor.label}{': ' + reason if reason else '.'}",
                         data={"budget_replica_cap": [old, cap]})
    return deployment


@transaction.atomic
def deployment_delete(*, actor: Actor, deployment: Deployment) -> Deployment:
    """Mark for deletion: the reconcile loop drains the replicas, then removes the row. Idempotent."""
    deployment = _locked(actor, deployment)
    if deployment.status == Deployment.Status.DELETING:
        return deployment
    return _set_status(actor, deployment, Deployment.Status.DELETING, action="deployment.delete", kind="deleting",
                       message="Deleting: replicas drain, then the deployment is removed.")


# --- the operator's log ---------------------------------------------------------------------


def fleet_event_record(*, operator: Operator, action: str, object_type: str, object_id: str = "",
                       changes: dict | None = None) -> FleetEvent:
    return FleetEvent.objects.create(
        actor=operator.label, actor_user=operator.user, actor_service_token=operator.service_token, action=action,
        object_type=object_type, object_id=object_id, changes=changes or {}, source_ip=operator.source_ip,
    )


# --- nodes (operator actions) ---------------------------------------------------------------
# Locks are taken in one order everywhere: node, then its replicas, then their deployments.

READY, CORDONED, DRAINING, DOWN = Node.State.READY, Node.State.CORDONED, Node.State.DRAINING, Node.State.DOWN
# action → (the state it sets, the states it applies to). Reaching the state it sets already is a no-op.
NODE_ACTIONS = {
    "cordon": (CORDONED, {READY, DRAINING, DOWN}),
    "uncordon": (READY, {CORDONED, DRAINING, DOWN}),
    "drain": (DRAINING, {READY, CORDONED}),
    "mark_down": (DOWN, {READY, CORDONED, DRAINING}),
}


def _node_transition(*, operator: Operator, node: Node, action: str, reason: str) -> tuple[Node, bool]:
    node = Node.objects.select_for_update().get(pk=node.pk)
    target, sources = NODE_ACTIONS[action]
    if node.state == target:
        return node, False
    if node.state not in sources:
        raise Conflict(f"Node {node.name} is {node.state}: {action.replace('_', '-')} applies to a node that is "
                       f"{' or '.join(sorted(sources))}.")
    old, node.state, node.updated_at = node.state, target, timezone.now()
    node.save(update_fields=["state", "updated_at"])
    changes = {"state": [old, target], **({"reason": reason} if reason else {})}
    fleet_event_record(operator=operator, action=f"node.{action}", object_type="node", object_id=node.name,
                       changes=changes)
    return node, True


@transaction.atomic
def node_cordon(*, operator: Operator, node: Node, reason: str = "") -> Node:
    """No new replicas on the node; those it runs stay. (From draining: stops the drain.)"""
    return _node_transition(operator=operator, node=node, action="cordon", reason=reason)[0]


@transaction.atomic
def node_uncordon(*, operator: Operator, node: Node, reason: str = "") -> Node:
    """Back in service: the node takes new replicas again (also how a repaired down node returns)."""
    return _node_transition(operator=operator, node=node, action="uncordon", reason=reason)[0]


@transaction.atomic
def node_drain(*, operator: Operator, node: Node, reason: str = "") -> Node:
    """The reconcile loop moves the node's replicas away (new ones first), then calls `node_finish_drain`."""
    return _node_transition(operator=operator, node=node, action="drain", reason=reason)[0]


@transaction.atomic
def node_mark_down(*, operator: Operator, node: Node, reason: str = "") -> Node:
    """The node is gone: its replicas are failed now (their accelerators no longer count as held),
    their deployments hear of it, and the reconcile loop places replacements elsewhere."""
    node, changed = _node_transition(operator=operator, node=node, action="mark_down", reason=reason)
    if changed:
        _fail_replicas_on(node)
    return node


def _fail_replicas_on(node: Node) -> None:
    replicas = list(Replica.objects.select_for_update().filter(node=node, state__in=Replica.HOLDING_STATES)
                    .order_by("pk"))
    if not replicas:
        return
    now = timezone.now()
    Replica.objects.filter(pk__in=[r.pk for r in replicas]).update(state=Replica.State.FAILED, stopped_at=now)
    lost: dict[int, list[str]] = {}
    for replica in replicas:
        lost.setdefault(replica.deployment_id, []).append(str(replica.public_id))
    for deployment in Deployment.objects.select_for_update().filter(pk__in=lost).order_by("pk"):
        ids = lost[deployment.pk]
        deployment_event_add(deployment=deployment, kind="replica.failed",
                             message=f"{len(ids)} replica(s) failed: node {node.name} went down. Replacements "
                                     f"will be placed elsewhere.", data={"node": node.name, "replicas": ids})
        if deployment.status == Deployment.Status.READY:
            deployment.status, deployment.updated_at = Deployment.Status.DEGRADED, now
            deployment.save(update_fields=["status", "updated_at"])
            deployment_status_changed(deployment=deployment, old=Deployment.Status.READY, new=deployment.status,
                                      reason=f"Node {node.name} went down with {len(ids)} of its replicas.")


@transaction.atomic
def node_finish_drain(*, node: Node, operator: Operator | None = None) -> bool:
    """For the reconcile loop: a draining node that no replica holds any more becomes cordoned.
    True when it did."""
    node = Node.objects.select_for_update().get(pk=node.pk)
    holding = Replica.objects.filter(node=node, state__in=Replica.HOLDING_STATES).exists()
    if node.state != DRAINING or holding:
        return False
    node.state, node.updated_at = CORDONED, timezone.now()
    node.save(update_fields=["state", "updated_at"])
    fleet_event_record(operator=operator or system_operator(), action="node.drained", object_type="node",
                       object_id=node.name, changes={"state": [DRAINING, CORDONED]})
    return True


# --- quotas and limits (set by staff, recorded in the tenant's audit log) -------------------

MAX_QUOTA = 1_000_000


def _whole(value, field: str, high: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ServiceError(f"must be a whole number from 0 to {high}.", field=field)
    return value


@transaction.atomic
def tenant_limits_set(*, operator: Operator, tenant: Tenant, max_priority: int,
                      default_accelerator_quota: int | None) -> TenantLimits:
    """Replace the tenant's limits. A lower max_priority applies to new values: deployments keep theirs."""
    max_priority = _whole(max_priority, "max_priority", MAX_PRIORITY)
    default_accelerator_quota = _whole(default_accelerator_quota, "default_accelerator_quota", MAX_QUOTA,
                                       optional=True)
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    limits, _ = TenantLimits.objects.get_or_create(tenant=tenant)
    changes = {field: [getattr(limits, field), value] for field, value in
               (("max_priority", max_priority), ("default_accelerator_quota", default_accelerator_quota))
               if getattr(limits, field) != value}
    if changes:
        limits.max_priority, limits.default_accelerator_quota = max_priority, default_accelerator_quota
        limits.updated_at = timezone.now()
        limits.save()
        audit_record(actor=operator.acting_on(tenant), action="limits.update", obj=limits, changes=changes)
    return limits


@transaction.atomic
def tenant_quotas_set(*, operator: Operator, tenant: Tenant, quotas: dict[str, int]) -> None:
    """Replace the tenant's per-tier quotas: exactly these tiers get an explicit quota, every
    other tier falls back to the default. Lowering a quota below what is in use stops no
    replica; placement just adds none there until usage is under it."""
    tiers = {tier.slug: tier for tier in HardwareTier.objects.filter(slug__in=quotas)}
    unknown = sorted(set(quotas) - set(tiers))
    if unknown:
        raise ServiceError(f"Unknown tiers: {', '.join(unknown)}.", field="quotas")
    for slug, value in quotas.items():
        _whole(value, f"quotas.{slug}", MAX_QUOTA)
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    existing = {quota.tier.slug: quota for quota in TenantQuota.objects.filter(tenant=tenant).select_related("tier")}
    changes = {}
    for slug, quota in existing.items():
        if slug not in quotas:
            changes[slug] = [quota.max_accelerators, None]
            quota.delete()
    now = timezone.now()
    for slug, value in sorted(quotas.items()):
        old = existing[slug].max_accelerators if slug in existing else None
        if old != value:
            TenantQuota.objects.update_or_create(tenant=tenant, tier=tiers[slug],
                                                 defaults={"max_accelerators": value, "updated_at": now})
            changes[slug] = [old, value]
    if changes:
        audit_record(actor=operator.acting_on(tenant), action="quotas.update", obj=tenant, changes=changes)


# --- fleet import ---------------------------------------------------------------------------

DEMO_FLEET_FILE = DATA / "demo_fleet.yaml"
NODE_IMPORT_FIELDS = ["zone", "accelerator", "accelerators", "labels", "updated_at"]


@dataclass(frozen=True)
class FleetImportResult:
    regions_created: int
    zones_created: int
    nodes_created: int
    nodes_updated: int
    nodes_unchanged: int
    nodes_not_in_file: list[str]


def fleet_spec_from_text(text: str) -> FleetSpec:
    """The validated fleet of a YAML or JSON text; FleetFileError lists every problem."""
    hardware = dict(AcceleratorType.objects.values_list("slug", "accelerators_per_node"))
    return parse_fleet(load_fleet_text(text), hardware)


def _import_node_problem(node: Node, accelerator: AcceleratorType, accelerators: int) -> str | None:
    if node.used_accelerators and node.accelerator_id != accelerator.pk:
        return (f"node {node.name} runs replicas on {node.accelerator.slug}: drain it before changing its "
                f"hardware to {accelerator.slug}")
    if accelerators < node.used_accelerators:
        return f"node {node.name} has {node.used_accelerators} accelerators in use: it cannot shrink to {accelerators}"
    return None


@transaction.atomic
def fleet_import(*, spec: FleetSpec, operator: Operator | None = None) -> FleetImportResult:
    """Make the fleet match the file: regions, zones and nodes are created or updated by name,
    never duplicated. Node states are left alone; nodes the file does not name are reported, not
    removed. A change that would strand running replicas is refused (409) and nothing is written."""
    operator = operator or system_operator()
    regions, regions_created = {}, 0
    for region_spec in spec.regions:
        regions[region_spec.slug], created = Region.objects.update_or_create(
            slug=region_spec.slug, defaults={"name": region_spec.name})
        regions_created += created
    zones, zones_created = {}, 0
    for zone_spec in spec.zones:
        zones[zone_spec.slug], created = Zone.objects.update_or_create(
            slug=zone_spec.slug, defaults={"region": regions[zone_spec.region]})
        zones_created += created
    hardware = {accelerator.slug: accelerator for accelerator in AcceleratorType.objects.all()}
    existing = {node.name: node for node in
                selectors.node_free_accelerators(
                    Node.objects.select_for_update(of=("self",)).select_related("accelerator"))}
    now = timezone.now()
    to_create, to_update, problems = [], [], []
    for node_spec in spec.nodes:
        zone, accelerator = zones[node_spec.zone], hardware[node_spec.hardware]
        node = existing.get(node_spec.name)
        if node is None:
            to_create.append(Node(name=node_spec.name, zone=zone, accelerator=accelerator,
                                  accelerators=node_spec.accelerators, labels=node_spec.labels,
                                  created_at=now, updated_at=now))
            continue
        problem = _import_node_problem(node, accelerator, node_spec.accelerators)
        if problem:
            problems.append(problem)
        wanted = (zone.pk, accelerator.pk, node_spec.accelerators, node_spec.labels)
        if (node.zone_id, node.accelerator_id, node.accelerators, node.labels) != wanted:
            node.zone, node.accelerator, node.accelerators, node.labels = zone, accelerator, *wanted[2:]
            node.updated_at = now
            to_update.append(node)
    if problems:
        raise Conflict("The import would strand running replicas: " + "; ".join(problems[:20]) + ".")
    Node.objects.bulk_create(to_create, batch_size=500)
    Node.objects.bulk_update(to_update, NODE_IMPORT_FIELDS, batch_size=500)
    named = {node.name for node in spec.nodes}
    result = FleetImportResult(
        regions_created=regions_created, zones_created=zones_created, nodes_created=len(to_create),
        nodes_updated=len(to_update), nodes_unchanged=len(spec.nodes) - len(to_create) - len(to_update),
        nodes_not_in_file=sorted(set(existing) - named),
    )
    fleet_event_record(operator=operator, action="fleet.import", object_type="fleet",
                       changes={**asdict(result), "nodes_not_in_file": len(result.nodes_not_in_file)})
    return result


def fleet_import_file(path: Path | str, operator: Operator | None = None) -> FleetImportResult:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise FleetFileError([("", f"cannot read {path}: {error.strerror}")]) from None
    return fleet_import(spec=fleet_spec_from_text(text), operator=operator)


def fleet_import_demo() -> FleetImportResult:
    """The demo fleet of scheduler/data/demo_fleet.yaml (idempotent, like every import)."""
    return fleet_import_file(DEMO_FLEET_FILE)
