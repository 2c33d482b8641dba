"""Writes of the scheduler: the hardware catalog and the model registry."""

import json
import re
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler.architecture import MAX_CONFIG_BYTES, Architecture, ConfigError, parse_config
from scheduler.catalog import (
    CAPACITY_CLASS_PRICE_FACTOR,
    CAPACITY_CLASSES,
    accelerator_specs,
    list_prices,
    model_templates,
)
from scheduler.models import AcceleratorType, HardwareTier, RegisteredModel
from tenants.context import Actor
from tenants.errors import Conflict, ServiceError
from tenants.services import audit_record

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


@transaction.atomic
def model_delete(*, actor: Actor, model: RegisteredModel) -> None:
    audit_record(actor=actor, action="model.delete", obj=model)
    model.delete()
