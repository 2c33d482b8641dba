"""Request → Actor resolution, in one place for the API and the console."""

from tenants.authentication import ApiKeyUser, ServiceTokenUser
from tenants.context import Actor, Operator
from tenants.models import Membership, Tenant, User
from tenants.roles import ALL_SERVICE_SCOPES, scopes_for_role

SESSION_TENANT_KEY = "switchyard_tenant"


def client_ip(request) -> str | None:
    # Behind a proxy, gunicorn's --forwarded-allow-ips makes REMOTE_ADDR the client's.
    return request.META.get("REMOTE_ADDR") or None


def memberships_of(user: User):
    return Membership.objects.filter(user=user, tenant__isnull=False).select_related("tenant").order_by(
        "tenant__name"
    )


def current_membership(request, user: User) -> Membership | None:
    """The membership of the tenant selected in the session, else the user's first."""
    memberships = memberships_of(user)
    selected = request.session.get(SESSION_TENANT_KEY)
    if selected:
        chosen = memberships.filter(tenant__public_id=selected).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def actor_for_request(request) -> Actor | None:
    """The Actor of an authenticated request, or None if it acts for no tenant.

    Cached on the underlying HttpRequest, so the API's permission check, its
    throttle and its view all see the same one.
    """
    django_request = getattr(request, "_request", request)
    if hasattr(django_request, "switchyard_actor"):
        return django_request.switchyard_actor
    user = getattr(request, "user", None)
    actor = None
    if isinstance(user, ApiKeyUser):
        key = user.api_key
        actor = Actor(tenant=key.tenant, api_key=key, scopes=frozenset(key.scopes), source_ip=client_ip(request))
    elif isinstance(user, User) and user.is_authenticated:
        membership = current_membership(request, user)
        if membership is not None:
            actor = Actor(tenant=membership.tenant, user=user, role=membership.role,
                          scopes=scopes_for_role(membership.role), source_ip=client_ip(request))
    django_request.switchyard_actor = actor
    return actor


def operator_for_request(request) -> Operator | None:
    """The Operator behind a request: an active staff user (all operator scopes) or a
    service token (its own scopes). None for anyone else, tenant API keys included."""
    user = getattr(request, "user", None)
    if isinstance(user, ServiceTokenUser):
        token = user.service_token
        return Operator(service_token=token, scopes=frozenset(token.scopes), source_ip=client_ip(request))
    if isinstance(user, User) and user.is_authenticated and user.is_active and user.is_staff:
        return Operator(user=user, scopes=ALL_SERVICE_SCOPES, source_ip=client_ip(request))
    return None


def select_tenant(request, tenant: Tenant) -> None:
    request.session[SESSION_TENANT_KEY] = str(tenant.public_id)
    if hasattr(request, "switchyard_actor"):
        del request.switchyard_actor
