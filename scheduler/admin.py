"""Back office for the hardware catalog, the model registry, the fleet, quotas and deployments.

Accelerator specifications are vendor facts kept in scheduler/data/accelerators.yaml
(with their sources) and synced on every migrate: read-only here. Tier prices are
the operator's to set. Node actions, limits and quotas go through the same services
as the operator API, so they are logged (FleetEvent) or audited (the tenant's log)
alike. Deployments, replicas and their history are read-only: tenants own them.
"""

from django.contrib import admin, messages

from scheduler import selectors, services
from scheduler.models import (
    AcceleratorType,
    Deployment,
    DeploymentEvent,
    FleetEvent,
    HardwareTier,
    Node,
    PlacementDecision,
    Region,
    RegisteredModel,
    Replica,
    TenantLimits,
    TenantQuota,
    Zone,
)
from tenants.admin import ReadOnlyAdmin
from tenants.context import Operator
from tenants.errors import ServiceError
from tenants.roles import ALL_SERVICE_SCOPES


def staff_operator(request) -> Operator:
    return Operator(user=request.user, scopes=ALL_SERVICE_SCOPES, source_ip=request.META.get("REMOTE_ADDR"))


class HardwareTierInline(admin.TabularInline):
    model = HardwareTier
    extra = 0
    fields = ["slug", "capacity_class", "price_per_accelerator_hour", "currency", "active"]


@admin.register(AcceleratorType)
class AcceleratorTypeAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "vendor", "kind", "memory_gb", "memory_bandwidth_tbs", "bf16_tflops",
                    "fp8_tflops", "interconnect_kind", "accelerators_per_node"]
    list_filter = ["vendor", "kind"]
    inlines = [HardwareTierInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(HardwareTier)
class HardwareTierAdmin(admin.ModelAdmin):
    list_display = ["slug", "accelerator", "capacity_class", "price_per_accelerator_hour", "currency", "active"]
    list_editable = ["price_per_accelerator_hour", "active"]
    list_filter = ["capacity_class", "active", "accelerator__vendor"]
    readonly_fields = ["public_id"]


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "modality", "dtype", "total_params", "context_length", "created_at"]
    list_filter = ["modality", "dtype"]
    search_fields = ["name", "tenant__name", "source_uri"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


# --- fleet ----------------------------------------------------------------------------------


class ZoneInline(admin.TabularInline):
    model = Zone
    extra = 0
    fields = ["slug"]


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    """Regions and zones come from `manage.py import_fleet`; names may be edited here."""

    list_display = ["slug", "name"]
    inlines = [ZoneInline]


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "zone", "accelerator", "accelerators", "used_accelerators", "state", "updated_at"]
    list_filter = ["state", "accelerator", "zone__region"]
    search_fields = ["name"]
    readonly_fields = ["name", "zone", "accelerator", "accelerators", "state", "created_at", "updated_at"]
    actions = ["cordon", "uncordon", "drain", "mark_down"]

    def get_queryset(self, request):
        return selectors.node_free_accelerators(super().get_queryset(request).select_related("zone", "accelerator"))

    @admin.display(description="in use", ordering="used_accelerators")
    def used_accelerators(self, node):
        return node.used_accelerators

    def has_add_permission(self, request):
        return False  # nodes come from `manage.py import_fleet`

    def has_delete_permission(self, request, obj=None):
        return False  # retire a node by draining it

    def _act(self, request, queryset, service, done: str):
        failed = []
        for node in queryset:
            try:
                service(operator=staff_operator(request), node=node, reason="back office")
            except ServiceError as error:
                failed.append(error.message)
        if failed:
            self.message_user(request, " ".join(failed), messages.ERROR)
        self.message_user(request, f"{queryset.count() - len(failed)} node(s) {done}.", messages.SUCCESS)

    @admin.action(description="Cordon: take no new replicas")
    def cordon(self, request, queryset):
        self._act(request, queryset, services.node_cordon, "cordoned")

    @admin.action(description="Uncordon: back in service")
    def uncordon(self, request, queryset):
        self._act(request, queryset, services.node_uncordon, "back in service")

    @admin.action(description="Drain: move replicas away, then cordon")
    def drain(self, request, queryset):
        self._act(request, queryset, services.node_drain, "draining")

    @admin.action(description="Mark down: fail its replicas now")
    def mark_down(self, request, queryset):
        self._act(request, queryset, services.node_mark_down, "marked down")


@admin.register(FleetEvent)
class FleetEventAdmin(ReadOnlyAdmin):
    """Append-only: nobody edits or deletes the fleet's history."""

    list_display = ["created_at", "actor", "action", "object_type", "object_id", "source_ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id"]
    date_hierarchy = "created_at"


# --- limits and quotas (through the services, so the tenant's audit log records them) -------


@admin.register(TenantLimits)
class TenantLimitsAdmin(admin.ModelAdmin):
    list_display = ["tenant", "max_priority", "default_accelerator_quota", "updated_at"]
    search_fields = ["tenant__name", "tenant__slug"]
    fields = ["tenant", "max_priority", "default_accelerator_quota"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant"] if obj else []

    def save_model(self, request, obj, form, change):
        services.tenant_limits_set(operator=staff_operator(request), tenant=obj.tenant, max_priority=obj.max_priority,
                                   default_accelerator_quota=obj.default_accelerator_quota)
        obj.pk = TenantLimits.objects.get(tenant=obj.tenant).pk

    def has_delete_permission(self, request, obj=None):
        return False


def _quotas_of(tenant) -> dict[str, int]:
    return dict(TenantQuota.objects.filter(tenant=tenant).values_list("tier__slug", "max_accelerators"))


@admin.register(TenantQuota)
class TenantQuotaAdmin(admin.ModelAdmin):
    list_display = ["tenant", "tier", "max_accelerators", "updated_at"]
    list_filter = ["tier"]
    search_fields = ["tenant__name", "tenant__slug"]
    fields = ["tenant", "tier", "max_accelerators"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", "tier"] if obj else []

    def save_model(self, request, obj, form, change):
        quotas = {**_quotas_of(obj.tenant), obj.tier.slug: obj.max_accelerators}
        services.tenant_quotas_set(operator=staff_operator(request), tenant=obj.tenant, quotas=quotas)
        obj.pk = TenantQuota.objects.get(tenant=obj.tenant, tier=obj.tier).pk

    def delete_model(self, request, obj):
        quotas = {slug: value for slug, value in _quotas_of(obj.tenant).items() if slug != obj.tier.slug}
        services.tenant_quotas_set(operator=staff_operator(request), tenant=obj.tenant, quotas=quotas)

    def delete_queryset(self, request, queryset):
        for quota in queryset.select_related("tenant", "tier"):
            self.delete_model(request, quota)


# --- deployments (the tenants'; read-only here) ---------------------------------------------


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    fields = ["created_at", "kind", "message"]
    readonly_fields = fields
    ordering = ["-created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "model", "status", "generation", "min_replicas", "max_replicas", "priority",
                    "updated_at"]
    list_filter = ["status", "token_usage_source"]
    search_fields = ["name", "tenant__name", "public_id"]
    inlines = [DeploymentEventInline]


@admin.register(Replica)
class ReplicaAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "tenant", "deployment", "node", "tier", "accelerators", "generation", "state",
                    "created_at"]
    list_filter = ["state", "tier"]
    search_fields = ["deployment__name", "node__name", "public_id"]
    list_select_related = ["tenant", "deployment", "node", "tier"]


@admin.register(PlacementDecision)
class PlacementDecisionAdmin(ReadOnlyAdmin):
    list_display = ["replica", "hardware", "accelerators", "rps_per_replica", "cost_per_hour", "currency",
                    "created_at"]
    list_select_related = ["replica__deployment"]
