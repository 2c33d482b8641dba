"""The hardware catalog and the model registry."""

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler import perf
from tenants.models import TenantOwned, User


class AcceleratorType(models.Model):
    """An accelerator as its vendor specifies it; `sources` says where each figure was read."""

    class Kind(models.TextChoices):
        GPU = "gpu", "GPU"
        NPU = "npu", "NPU"

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    vendor = models.CharField(max_length=20)
    kind = models.CharField(max_length=3, choices=Kind.choices)
    memory_gb = models.DecimalField(max_digits=7, decimal_places=2, help_text="Decimal GB (10⁹ bytes), as the vendor states it.")
    memory_type = models.CharField(max_length=20, blank=True)
    memory_bandwidth_tbs = models.DecimalField(max_digits=6, decimal_places=3, help_text="TB/s (10¹² bytes/s).")
    bf16_tflops = models.DecimalField(max_digits=7, decimal_places=1, help_text="Dense, without sparsity.")
    fp8_tflops = models.DecimalField(max_digits=7, decimal_places=1, null=True, blank=True,
                                     help_text="Dense; empty when the accelerator has no FP8 units.")
    int8_tops = models.DecimalField(max_digits=7, decimal_places=1, null=True, blank=True)
    interconnect_kind = models.CharField(max_length=20)
    interconnect_gbs = models.DecimalField(max_digits=7, decimal_places=1,
                                           help_text="Per accelerator, bidirectional, GB/s.")
    accelerators_per_node = models.PositiveSmallIntegerField()
    load_bandwidth_gbs = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("2.0"),
                                             help_text="How fast a node loads weights into accelerator memory, GB/s.")
    sources = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def to_hardware(self) -> perf.Hardware:
        return perf.Hardware(
            slug=self.slug, vendor=self.vendor, kind=self.kind, memory_gb=float(self.memory_gb),
            bandwidth_tbs=float(self.memory_bandwidth_tbs), bf16_tflops=float(self.bf16_tflops),
            fp8_tflops=float(self.fp8_tflops) if self.fp8_tflops is not None else None,
            int8_tops=float(self.int8_tops) if self.int8_tops is not None else None,
            interconnect_gbs=float(self.interconnect_gbs), accelerators_per_node=self.accelerators_per_node,
        )


class HardwareTier(models.Model):
    """What a tenant buys: an accelerator type in a capacity class, at a price per accelerator-hour."""

    class CapacityClass(models.TextChoices):
        ON_DEMAND = "on-demand"
        SPOT = "spot"
        RESERVED = "reserved"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=60, unique=True)
    accelerator = models.ForeignKey(AcceleratorType, on_delete=models.PROTECT, related_name="tiers")
    capacity_class = models.CharField(max_length=12, choices=CapacityClass.choices)
    price_per_accelerator_hour = models.DecimalField(max_digits=12, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")
    active = models.BooleanField(default=True, help_text="Inactive tiers are not offered to new deployments.")

    class Meta:
        ordering = ["accelerator__slug", "capacity_class"]
        constraints = [
            models.UniqueConstraint(fields=["accelerator", "capacity_class"], name="tier_one_per_class"),
            models.CheckConstraint(condition=Q(price_per_accelerator_hour__gte=0), name="tier_price_not_negative"),
        ]

    def __str__(self) -> str:
        return self.slug


class RegisteredModel(TenantOwned):
    """A tenant's model: where its weights are, its architecture, and what that implies."""

    class Modality(models.TextChoices):
        TEXT = "text"
        VISION_LANGUAGE = "vision-language"
        EMBEDDING = "embedding"

    class Dtype(models.TextChoices):
        BF16 = "bf16"
        FP8 = "fp8"
        INT8 = "int8"
        INT4 = "int4"

    name = models.CharField(max_length=100)
    source_uri = models.CharField(max_length=500)
    credential_ref = models.CharField(
        max_length=253, blank=True,
        help_text="Name of the secret (e.g. a Kubernetes secret) holding credentials for a private source. "
                  "Never the secret itself.")
    modality = models.CharField(max_length=20, choices=Modality.choices, default=Modality.TEXT)
    dtype = models.CharField(max_length=8, choices=Dtype.choices, default=Dtype.BF16)
    template = models.CharField(max_length=40, blank=True, help_text="The built-in template it came from, if any.")
    config = models.JSONField(help_text="The Hugging Face config.json.")
    # Derived from `config` and `dtype` by the registry service; never edited by hand.
    total_params = models.BigIntegerField()
    active_params = models.BigIntegerField()
    weight_bytes = models.BigIntegerField()
    kv_bytes_per_token = models.PositiveIntegerField()
    context_length = models.PositiveIntegerField()
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "model"
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="model_name_unique_per_tenant")]

    def __str__(self) -> str:
        return self.name
