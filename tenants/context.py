"""Actor: who is acting, for which tenant, with which scopes — passed to every service."""

from dataclasses import dataclass

from tenants.models import ApiKey, ServiceToken, Tenant, User
from tenants.roles import ALL_SCOPES, ALL_SERVICE_SCOPES


@dataclass(frozen=True)
class Actor:
    tenant: Tenant
    user: User | None = None
    api_key: ApiKey | None = None
    role: str | None = None
    scopes: frozenset[str] = frozenset()
    source_ip: str | None = None
    # Set when the operator acts on a tenant (quotas, limits) with a service token.
    service_token: ServiceToken | None = None

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key.name} ({self.api_key.display})"
        if self.service_token is not None:
            return f"service token {self.service_token.name} ({self.service_token.display})"
        if self.user is not None:
            return self.user.email
        return "system"

    @property
    def principal(self) -> str:
        """A stable name of the credential, for idempotency and throttling."""
        if self.api_key is not None:
            return f"key:{self.api_key.prefix}"
        if self.service_token is not None:
            return f"svc:{self.service_token.prefix}"
        if self.user is not None:
            return f"user:{self.user.pk}"
        return "system"


@dataclass(frozen=True)
class Operator:
    """Who acts for the operator: a staff user (session) or a service token. No tenant."""

    user: User | None = None
    service_token: ServiceToken | None = None
    scopes: frozenset[str] = frozenset()
    source_ip: str | None = None

    @property
    def label(self) -> str:
        if self.service_token is not None:
            return f"service token {self.service_token.name} ({self.service_token.display})"
        if self.user is not None:
            return self.user.email
        return "system"

    def acting_on(self, tenant: Tenant) -> Actor:
        """This operator as the actor of a change to one tenant (for that tenant's audit log)."""
        return Actor(tenant=tenant, user=self.user, service_token=self.service_token, source_ip=self.source_ip)


def system_operator() -> Operator:
    """For management commands and workers acting for the operator."""
    return Operator(scopes=ALL_SERVICE_SCOPES)


def system_actor(tenant: Tenant) -> Actor:
    """For management commands and workers acting on a tenant's behalf."""
    return Actor(tenant=tenant, scopes=ALL_SCOPES)
