"""Roles of members, scopes of credentials, and what each may do.

A request carries a set of scopes: an API key's own, or the scopes of its user's
role in the current tenant (console and session-authenticated API). Every API
operation names the one scope it needs. docs/roles.md is the table a person reads.
"""

from django.db import models


class Scope(models.TextChoices):
    READ = "read", "Read everything in the tenant"
    DEPLOY = "deploy", "Register models, create and change deployments"
    BILLING = "billing", "Budgets, credits, invoices and payment settings"
    ADMIN = "admin", "Tenant administration: settings, members, invitations, API keys"
    INVOKE = "invoke", "Call deployed models through the gateway"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    BILLING = "billing", "Billing"
    VIEWER = "viewer", "Viewer"


ALL_SCOPES = frozenset(Scope.values)


class ServiceScope(models.TextChoices):
    """Scopes of the operator's service tokens; disjoint from tenant scopes, by design."""

    FLEET = "fleet", "Operate the fleet: nodes, regions, tenant quotas and limits"
    USAGE_WRITE = "usage:write", "Report metered usage (gateway, sidecars, collectors)"


ALL_SERVICE_SCOPES = frozenset(ServiceScope.values)

ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.OWNER: ALL_SCOPES,
    Role.ADMIN: ALL_SCOPES,
    Role.DEVELOPER: frozenset({Scope.READ, Scope.DEPLOY, Scope.INVOKE}),
    Role.BILLING: frozenset({Scope.READ, Scope.BILLING}),
    Role.VIEWER: frozenset({Scope.READ}),
}


def scopes_for_role(role: str) -> frozenset[str]:
    return ROLE_SCOPES[role]


def may_assign_role(actor_role: str | None, role: str) -> bool:
    """Only owners make or unmake owners; admins manage every other role.

    `actor_role` is None for an API key, which acts with its `admin` scope but is
    not an owner: a leaked key cannot hand out ownership.
    """
    if role == Role.OWNER:
        return actor_role == Role.OWNER
    return actor_role in (Role.OWNER, Role.ADMIN) or actor_role is None
