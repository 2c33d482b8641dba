"""Scope checks: every API view names the scope each HTTP method needs."""

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from tenants.requests import actor_for_request


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
