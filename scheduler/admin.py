"""Back office for the hardware catalog and the model registry.

Accelerator specifications are vendor facts kept in scheduler/data/accelerators.yaml
(with their sources) and synced on every migrate: read-only here. Tier prices are
the operator's to set.
"""

from django.contrib import admin

from scheduler.models import AcceleratorType, HardwareTier, RegisteredModel


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
