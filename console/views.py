"""The console's own pages: the overview of the current tenant."""

from django.shortcuts import render
from django.urls import reverse

from tenants import selectors
from tenants.roles import Role, Scope
from tenants.views import tenant_page

RECENT_EVENT_COUNT = 6


@tenant_page({"GET": Scope.READ})
def home(request, actor):
    """The tenant at a glance: who you are here, what you may do, and how to start with the API."""
    tenant = actor.tenant
    context = {
        "tenant": tenant,
        "role_label": Role(actor.role).label,
        # Every scope, held or not, so a member sees what their role leaves out.
        "scopes": [(scope.value, scope.label, scope.value in actor.scopes) for scope in Scope],
        "may_manage": Scope.ADMIN in actor.scopes,
        "member_count": selectors.membership_list_for_tenant(tenant).count(),
        "pending_invitation_count": selectors.invitation_list_for_tenant(tenant).pending().count(),
        "active_key_count": selectors.api_key_active_list_for_tenant(tenant).count(),
        "recent_events": selectors.audit_event_list_for_tenant(tenant)[:RECENT_EVENT_COUNT],
        "api_tenant_url": request.build_absolute_uri(reverse("api-tenant")),
        "api_docs_url": request.build_absolute_uri(reverse("api-docs")),
    }
    return render(request, "console/home.html", context)
