"""Reads of the tenancy layer; every one takes the tenant it reads for."""

from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant
from tenants.scoping import scoped


def membership_list_for_tenant(tenant: Tenant):
    return scoped(Membership, tenant).select_related("user").order_by("created_at", "id")


def invitation_list_for_tenant(tenant: Tenant):
    return scoped(Invitation, tenant).select_related("invited_by").order_by("-created_at", "-id")


def api_key_list_for_tenant(tenant: Tenant):
    return scoped(ApiKey, tenant).select_related("created_by").order_by("-created_at", "-id")


def api_key_active_list_for_tenant(tenant: Tenant):
    """Keys that authenticate right now: neither revoked nor expired."""
    return api_key_list_for_tenant(tenant).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), revoked_at__isnull=True
    )


def audit_action_list_for_tenant(tenant: Tenant) -> list[str]:
    """The distinct actions in the tenant's audit log, for filtering it."""
    return list(scoped(AuditEvent, tenant).order_by("action").values_list("action", flat=True).distinct())


def audit_event_list_for_tenant(tenant: Tenant, *, action: str | None = None, since: datetime | None = None,
                                until: datetime | None = None):
    events = scoped(AuditEvent, tenant)
    if action:
        events = events.filter(action=action)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    return events
