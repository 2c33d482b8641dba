"""The hardware catalog, the model registry, the fleet, quotas, and deployments with their replicas."""

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from scheduler import perf
from scheduler.autoscaling import Policy, policy_from_dict
from scheduler.estimator import Slo, Traffic
from tenants.models import ServiceToken, Tenant, TenantOwned, User


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


# --- fleet ----------------------------------------------------------------------------------


class Region(models.Model):
    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Zone(models.Model):
    """A failure domain inside a region. Zone slugs are unique fleet-wide (eu-north1-a)."""

    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="zones")
    slug = models.SlugField(max_length=50, unique=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Node(models.Model):
    """A fleet machine: `accelerators` accelerators of one type, in one zone.

    Only `ready` nodes take new replicas. `cordoned`: keeps what it runs, takes
    nothing new. `draining`: its replicas are moved away, then it becomes
    cordoned. `down`: its replicas have failed and are placed elsewhere.
    """

    class State(models.TextChoices):
        READY = "ready"
        CORDONED = "cordoned"
        DRAINING = "draining"
        DOWN = "down"

    name = models.CharField(max_length=63, unique=True)
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="nodes")
    accelerator = models.ForeignKey(AcceleratorType, on_delete=models.PROTECT, related_name="nodes")
    accelerators = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.READY)
    labels = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(accelerators__gte=1), name="node_has_accelerators"),
            models.CheckConstraint(condition=Q(state__in=["ready", "cordoned", "draining", "down"]),
                                   name="node_state_valid"),
        ]
        indexes = [models.Index(fields=["accelerator", "state"], name="node_hardware_state")]

    def __str__(self) -> str:
        return self.name


class FleetEvent(models.Model):
    """The operator's log of fleet changes (node actions, imports). Append-only.

    Not tenant-owned, so it cannot live in the tenants' AuditEvent; changes the
    operator makes to one tenant (quotas, limits) go to that tenant's audit log instead.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=200, help_text="Who, as a readable snapshot (kept after the user goes).")
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_service_token = models.ForeignKey(ServiceToken, null=True, blank=True, on_delete=models.SET_NULL,
                                            related_name="+")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=100, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_id}"


# --- quotas and limits (set by staff) -------------------------------------------------------


class TenantLimits(models.Model):
    """What staff allow one tenant beyond the defaults. No row: the defaults."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="+")
    max_priority = models.PositiveSmallIntegerField(
        default=0, help_text="The highest deployment priority the tenant may set (higher is served first).")
    default_accelerator_quota = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Accelerators per hardware tier where no tier quota is set; empty: "
                  "SWITCHYARD_DEFAULT_ACCELERATOR_QUOTA.")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "tenant limits"

    def __str__(self) -> str:
        return f"limits of {self.tenant}"


class TenantQuota(models.Model):
    """The most accelerators one tenant may hold on one hardware tier at once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    tier = models.ForeignKey(HardwareTier, on_delete=models.CASCADE, related_name="+")
    max_accelerators = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["tier__slug"]
        constraints = [models.UniqueConstraint(fields=["tenant", "tier"], name="quota_one_per_tenant_and_tier")]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.max_accelerators} × {self.tier}"


# --- deployments ----------------------------------------------------------------------------


class LiveDeploymentManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().exclude(status="deleted")


class Deployment(TenantOwned):
    """Desired state: a model served on allowed tiers in allowed regions within an SLO.

    Written by the API through services; the reconcile loop reads it and makes the
    fleet match. `generation` changes when replicas must be replaced (model, tier
    choice, or replica shape); replicas of an older generation are rolled.
    `replica_options` is derived by the services from the performance model at every
    change: per allowed hardware, the tensor-parallel shape and what one replica
    serves within the SLO — the `options` of the placement problem.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DEPLOYING = "deploying"
        READY = "ready"
        DEGRADED = "degraded"
        PAUSED = "paused"
        FAILED = "failed"
        DELETING = "deleting"
        DELETED = "deleted"

    class TokenUsageSource(models.TextChoices):
        SCRAPE = "scrape", "The replicas' Prometheus metrics"
        EXTERNAL = "external", "Usage events posted by an external reporter"

    name = models.CharField(max_length=63)
    # Null only on a deleted deployment whose model was deleted afterwards: services refuse to
    # delete a model a live deployment uses.
    model = models.ForeignKey(RegisteredModel, null=True, on_delete=models.SET_NULL, related_name="deployments")
    tier_auto = models.BooleanField(default=True, help_text="Any active on-demand or reserved tier "
                                                             "(the cheapest meeting the SLO is preferred).")
    tiers = models.ManyToManyField(HardwareTier, blank=True, related_name="+",
                                   help_text="The allowed tiers when tier_auto is off.")
    regions = models.ManyToManyField(Region, related_name="+")
    min_replicas = models.PositiveIntegerField(default=1)
    max_replicas = models.PositiveIntegerField(default=1)
    slo_ttft_p95_ms = models.FloatField()
    slo_tpot_p95_ms = models.FloatField()
    requests_per_s = models.FloatField(help_text="Expected traffic.")
    input_tokens = models.PositiveIntegerField(help_text="Typical (median) prompt length.")
    input_tokens_p95 = models.PositiveIntegerField()
    output_tokens = models.PositiveIntegerField(help_text="Typical (median) completion length.")
    output_tokens_p95 = models.PositiveIntegerField()
    autoscaling = models.JSONField(default=dict, blank=True,
                                   help_text="Policy fields as given; scheduler.autoscaling fills in defaults.")
    priority = models.PositiveSmallIntegerField(default=0)
    token_usage_source = models.CharField(max_length=10, choices=TokenUsageSource.choices,
                                          default=TokenUsageSource.SCRAPE)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    generation = models.PositiveIntegerField(default=1)
    replica_options = models.JSONField(default=list, blank=True)
    scaler_state = models.JSONField(default=dict, blank=True, help_text="The autoscaler's memory between decisions.")
    budget_replica_cap = models.PositiveIntegerField(null=True, blank=True,
                                                     help_text="Set by billing when a budget caps replicas.")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    # Deleted deployments are kept (with their stopped replicas) because usage and invoices
    # refer to them; `objects` hides them everywhere, `all_objects` is for billing and history.
    objects = LiveDeploymentManager()
    all_objects = models.Manager()

    class Meta:
        ordering = ["name"]
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], condition=~Q(status="deleted"),
                                    name="deployment_name_unique_per_tenant"),
            models.CheckConstraint(condition=Q(min_replicas__lte=F("max_replicas")),
                                   name="deployment_min_within_max"),
            models.CheckConstraint(condition=Q(max_replicas__gte=1), name="deployment_max_at_least_one"),
            models.CheckConstraint(condition=Q(status__in=["pending", "deploying", "ready", "degraded", "paused",
                                                           "failed", "deleting", "deleted"]),
                                   name="deployment_status_valid"),
            models.CheckConstraint(condition=Q(slo_ttft_p95_ms__gt=0, slo_tpot_p95_ms__gt=0),
                                   name="deployment_slo_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def traffic(self) -> Traffic:
        return Traffic(requests_per_s=self.requests_per_s, input_tokens=self.input_tokens,
                       output_tokens=self.output_tokens, input_tokens_p95=self.input_tokens_p95,
                       output_tokens_p95=self.output_tokens_p95)

    def slo(self) -> Slo:
        return Slo(ttft_p95_ms=self.slo_ttft_p95_ms, tpot_p95_ms=self.slo_tpot_p95_ms)

    def policy(self) -> Policy:
        return policy_from_dict(self.autoscaling or None)


class DeploymentEvent(TenantOwned):
    """The deployment's timeline, as its tenant reads it: what happened and why. Append-only."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=64)
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "-created_at", "-id"], name="deployment_event_recent")]

    def __str__(self) -> str:
        return f"{self.deployment}: {self.kind}"


class Replica(TenantOwned):
    """One copy of a deployment on one node, using `accelerators` of its accelerators (tensor parallel).

    A replica in a HOLDING state holds its accelerators; `stopped` and `failed` ones
    hold none. The reconcile service guarantees, under row locks, that the replicas
    holding accelerators on a node never need more than the node has.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        STARTING = "starting"
        READY = "ready"
        DRAINING = "draining"
        STOPPED = "stopped"
        FAILED = "failed"

    HOLDING_STATES = ("pending", "starting", "ready", "draining")

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replicas")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="replicas")
    tier = models.ForeignKey(HardwareTier, on_delete=models.PROTECT, related_name="+")
    accelerators = models.PositiveSmallIntegerField()
    generation = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    endpoint = models.CharField(max_length=255, blank=True, help_text="Where the replica serves, once ready.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(accelerators__gte=1), name="replica_has_accelerators"),
            models.CheckConstraint(condition=Q(state__in=["pending", "starting", "ready", "draining", "stopped",
                                                          "failed"]),
                                   name="replica_state_valid"),
        ]
        indexes = [
            models.Index(fields=["node", "state"], name="replica_node_state"),
            models.Index(fields=["deployment", "state"], name="replica_deployment_state"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment} on {self.node_id} ({self.state})"


class PlacementDecision(TenantOwned):
    """Why a replica went where it went: the option chosen, its cost, and what was rejected and why."""

    replica = models.OneToOneField(Replica, on_delete=models.CASCADE, related_name="placement")
    hardware = models.CharField(max_length=40)
    accelerators = models.PositiveSmallIntegerField()
    rps_per_replica = models.FloatField()
    cost_per_hour = models.DecimalField(max_digits=14, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")
    alternatives = models.JSONField(default=list, blank=True,
                                    help_text='[{"option": {"hardware", "accelerators", "rps_per_replica"}, '
                                              '"why": "…"}]')
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(cost_per_hour__gte=0), name="placement_cost_not_negative")]

    def __str__(self) -> str:
        return f"{self.replica}: {self.accelerators} × {self.hardware}"


# --- reconcile ------------------------------------------------------------------------------


class Lease(models.Model):
    """A named lease held until `expires_at`: how one reconcile pass at a time is ensured where
    PostgreSQL's advisory locks are not available (SQLite). Claimed with a conditional UPDATE
    (… WHERE expires_at < now) that must change exactly one row."""

    name = models.CharField(max_length=64, unique=True)
    holder = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at}"
