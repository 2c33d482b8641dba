"""Actor: who is acting, for which tenant, with which scopes — passed to every service."""

from dataclasses import dataclass

from tenants.models import ApiKey, Tenant, User
from tenants.roles import ALL_SCOPES


@dataclass(frozen=True)
class Actor:
    tenant: Tenant
    user: User | None = None
    api_key: ApiKey | None = None
    role: str | None = None
    scopes: frozenset[str] = frozenset()
    source_ip: str | None = None

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key.name} ({self.api_key.display})"
        if self.user is not None:
            return self.user.email
        return "system"

    @property
    def principal(self) -> str:
        """A stable name of the credential, for idempotency and throttling."""
        if self.api_key is not None:
            return f"key:{self.api_key.prefix}"
        if self.user is not None:
            return f"user:{self.user.pk}"
        return "system"


def system_actor(tenant: Tenant) -> Actor:
    """For management commands and workers acting on a tenant's behalf."""
    return Actor(tenant=tenant, scopes=ALL_SCOPES)
