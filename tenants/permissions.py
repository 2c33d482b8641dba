"""Scope checks: every API view names the scope each HTTP method needs."""

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from tenants.authentication import ApiKeyUser
from tenants.requests import actor_for_request, operator_for_request


class HasTenantScope(BasePermission):
    """The caller acts for an active tenant and holds the scope the operation needs.

    A view declares `required_scopes = {"GET": "read", "POST": "admin", …}`;
    a method it does not list is refused (fail closed).
    """

    def has_permission(self, request, view) -> bool:
        if request.user is None or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated("Send an API key ('Authorization: Bearer sy_live_…') or log in.")
        actor = actor_for_request(request)
        if actor is None:
            raise exceptions.PermissionDenied("You are not a member of any tenant.")
        method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
        scope = getattr(view, "required_scopes", {}).get(method)
        if scope is None:
            raise exceptions.MethodNotAllowed(request.method)
        if scope not in actor.scopes:
            raise exceptions.PermissionDenied(f"This operation needs the '{scope}' scope, which this "
                                              f"{'API key' if actor.api_key else 'role'} does not have.")
        if not actor.tenant.is_active and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied("This tenant is suspended: it can read, but not change anything.")
        return True


TENANT_KEY_REFUSED = ("The fleet is the operator's: a tenant API key cannot use operator routes, whatever its "
                      "scopes. Use a staff login or a service token (sy_svc_…).")


class IsOperator(BasePermission):
    """The caller is the operator: a staff user's session (with CSRF) or a service token holding the scope.

    A tenant API key is refused with 403 whatever its scopes: it is a valid
    credential, just not one the fleet answers to. The scope comes from
    `IsOperator("usage:write")` or, with plain `IsOperator`, from the view's
    `required_scopes` per method (a method it does not list is refused).
    """

    def __init__(self, scope: str | None = None):
        self.scope = scope

    def __call__(self):
        # DRF instantiates each entry of permission_classes: `IsOperator("fleet")` is already one.
        return self

    def _scope(self, request, view) -> str:
        if self.scope is not None:
            return self.scope
        method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
        scope = getattr(view, "required_scopes", {}).get(method)
        if scope is None:
            raise exceptions.MethodNotAllowed(request.method)
        return scope

    def has_permission(self, request, view) -> bool:
        if request.user is None or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated("Send a service token ('Authorization: Bearer sy_svc_…') or log "
                                              "in as staff.")
        if isinstance(request.user, ApiKeyUser):
            raise exceptions.PermissionDenied(TENANT_KEY_REFUSED)
        operator = operator_for_request(request)
        if operator is None:
            raise exceptions.PermissionDenied("Operator routes are for staff users and service tokens.")
        scope = self._scope(request, view)
        if scope not in operator.scopes:
            raise exceptions.PermissionDenied(f"This operation needs the '{scope}' scope, which this service "
                                              f"token does not have.")
        return True
