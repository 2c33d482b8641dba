"""Back office for tenants, members, API keys and service tokens (never a secret), the audit log
and webhooks. Staff only."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from tenants import services, webhooks
from tenants.context import Actor
from tenants.models import (
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    ServiceToken,
    Tenant,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from tenants.roles import ALL_SCOPES


def staff_actor(request, tenant: Tenant) -> Actor:
    """A staff user acting on a tenant from the back office (audited under the staff email)."""
    return Actor(tenant=tenant, user=request.user, scopes=ALL_SCOPES, source_ip=request.META.get("REMOTE_ADDR"))


class ReadOnlyAdmin(admin.ModelAdmin):
    """For history and derived rows: staff may look, never add, edit or delete."""

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "billing_country", "currency", "created_at"]
    list_filter = ["status", "currency", "billing_country"]
    search_fields = ["name", "slug", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline]
    actions = ["suspend", "reactivate"]

    @admin.action(description="Suspend: read-only access, no changes")
    def suspend(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.SUSPENDED)

    @admin.action(description="Reactivate")
    def reactivate(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.ACTIVE)

    def _set_status(self, request, queryset, status):
        for tenant in queryset:
            services.tenant_set_status(actor=staff_actor(request, tenant), status=status)
        self.message_user(request, f"{queryset.count()} tenant(s) now {status}.", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys can be inspected and revoked here; the secret exists nowhere to show."""

    list_display = ["name", "display", "tenant", "scopes", "state", "created_at", "last_used_at", "expires_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix", "tenant__name"]
    fields = ["tenant", "name", "display", "scopes", "created_by", "created_at", "expires_at", "revoked_at",
              "last_used_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are created by tenants (console, API) or `manage.py create_tenant`

    @admin.action(description="Revoke now")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(actor=staff_actor(request, key.tenant), key=key)
        self.message_user(request, f"{queryset.count()} key(s) revoked.", messages.SUCCESS)


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    """The operator's credentials: inspect and revoke. The secret exists nowhere to show;
    tokens are made with `manage.py create_service_token`, which prints one once."""

    list_display = ["name", "display", "scopes", "state", "created_by", "created_at", "last_used_at", "expires_at"]
    search_fields = ["name", "prefix"]
    fields = ["name", "display", "scopes", "created_by", "created_at", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the row records who made the token and when it stopped working

    @admin.action(description="Revoke now")
    def revoke(self, request, queryset):
        for token in queryset:
            services.service_token_revoke(token=token, revoked_by=request.user)
        self.message_user(request, f"{queryset.count()} service token(s) revoked.", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "tenant", "role", "state", "created_at", "expires_at"]
    search_fields = ["email", "tenant__name"]
    exclude = ["token_hash"]
    readonly_fields = ["tenant", "email", "role", "invited_by", "created_at", "expires_at", "accepted_at",
                       "revoked_at"]

    def has_add_permission(self, request):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Append-only: nobody edits or deletes history, staff included."""

    list_display = ["created_at", "tenant", "actor", "action", "object_type", "object_repr", "source_ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "action", "object_repr", "object_id", "tenant__name"]
    date_hierarchy = "created_at"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints can be inspected and disabled here; the signing secret is never shown."""

    list_display = ["url", "tenant", "is_active", "event_types", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["url", "description", "tenant__name", "public_id"]
    fields = ["tenant", "public_id", "url", "description", "event_types", "is_active", "previous_secret_expires_at",
              "created_at", "updated_at"]
    readonly_fields = [field for field in fields if field != "is_active"]

    def has_add_permission(self, request):
        return False  # tenants make endpoints (console, API), and only they may see the secret

    def has_delete_permission(self, request, obj=None):
        return False  # disable instead: that is audited, and the tenant keeps the delivery history

    def save_model(self, request, obj, form, change):
        # Through the service: disabling gives up pending deliveries, and the tenant's audit log records who.
        if "is_active" in form.changed_data:
            webhooks.webhook_endpoint_update(actor=staff_actor(request, obj.tenant), endpoint=obj,
                                             is_active=obj.is_active)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Delivery history: staff may look (payload, attempt log), never edit."""

    list_display = ["created_at", "tenant", "event_type", "event_id", "endpoint", "state", "attempts",
                    "last_status_code", "next_attempt_at"]
    list_filter = ["state", "event_type"]
    search_fields = ["event_id", "public_id", "endpoint__url", "tenant__name"]
    list_select_related = ["tenant", "endpoint"]
    date_hierarchy = "created_at"
