"""Reads of the tenancy layer; every one takes the tenant it reads for."""

from datetime import datetime

from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant, WebhookDelivery, WebhookEndpoint
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


def webhook_endpoint_list_for_tenant(tenant: Tenant):
    return scoped(WebhookEndpoint, tenant).order_by("-created_at", "-id")


def webhook_delivery_list_for_tenant(tenant: Tenant):
    return scoped(WebhookDelivery, tenant).select_related("endpoint").order_by("-created_at", "-id")


def webhook_delivery_list_for_endpoint(endpoint: WebhookEndpoint, *, state: str | None = None):
    """The endpoint's deliveries, newest first (the endpoint was fetched through its tenant)."""
    deliveries = webhook_delivery_list_for_tenant(endpoint.tenant).filter(endpoint=endpoint)
    return deliveries.filter(state=state) if state else deliveries


def webhook_delivery_counts(endpoint: WebhookEndpoint) -> dict[str, int]:
    """How many of the endpoint's deliveries are in each state."""
    counts = dict(webhook_delivery_list_for_endpoint(endpoint).order_by().values("state")
                  .annotate(n=Count("id")).values_list("state", "n"))
    return {state: counts.get(state, 0) for state in WebhookDelivery.State.values}


def webhook_endpoint_list_with_last_delivery(tenant: Tenant):
    """The tenant's endpoints, each with the state and time of its latest delivery (or None)."""
    latest = WebhookDelivery.objects.filter(endpoint=OuterRef("pk")).order_by("-created_at", "-id")
    return webhook_endpoint_list_for_tenant(tenant).annotate(
        last_delivery_state=Subquery(latest.values("state")[:1]),
        last_delivery_at=Subquery(latest.values("created_at")[:1]),
    )
