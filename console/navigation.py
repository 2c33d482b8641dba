"""The console's left navigation: one registry, in order.

A new area of the console (Models, Deployments, Usage, Billing …) adds one
`NavSection` here; the layout shows it to members whose role holds its scope.
The page's own view must still check that scope: hiding a link is not access control.
"""

from dataclasses import dataclass

from django.urls import reverse

from tenants.roles import Scope


@dataclass(frozen=True)
class NavSection:
    label: str
    url_name: str
    scope: str
    # The name of a symbol in static/console/icons.svg.
    icon: str
    # Other URL names (sub-pages) under which this section is highlighted.
    also_active_for: tuple[str, ...] = ()


NAVIGATION: list[NavSection] = [
    NavSection("Overview", "console-home", Scope.READ, "home"),
    NavSection("Models", "models", Scope.READ, "cube",
               also_active_for=("model-create", "model-detail", "model-edit", "model-delete")),
    NavSection("Deployments", "deployments", Scope.READ, "server",
               also_active_for=("deployment-create", "deployment-detail", "deployment-edit")),
    NavSection("Usage", "usage", Scope.READ, "chart"),
    NavSection("Billing", "invoices", Scope.BILLING, "book",
               also_active_for=("invoice-detail", "invoice-line", "credits", "prices",
                                "budgets", "budget-detail", "budget-lift", "budget-delete", "billing-profile")),
    NavSection("Team", "team", Scope.READ, "users",
               also_active_for=("team-invite", "team-member-role", "team-member-remove", "team-invitation-revoke")),
    NavSection("API keys", "api-keys", Scope.READ, "key", also_active_for=("api-key-revoke",)),
    NavSection("Audit log", "audit-log", Scope.READ, "list"),
    # For the roles that manage endpoints (owner, admin); the pages themselves let readers look.
    NavSection("Webhooks", "webhooks", Scope.ADMIN, "mail",
               also_active_for=("webhook-detail", "webhook-delivery", "webhook-rotate-secret", "webhook-test",
                                "webhook-delete", "webhook-redeliver")),
    NavSection("Settings", "tenant-settings", Scope.ADMIN, "settings"),
]


@dataclass(frozen=True)
class NavLink:
    label: str
    url: str
    icon: str
    active: bool


def nav_links_for(scopes: frozenset[str], current_url_name: str | None) -> list[NavLink]:
    """The sections these scopes may see, with the current one marked active."""
    return [
        NavLink(
            label=section.label,
            url=reverse(section.url_name),
            icon=section.icon,
            active=current_url_name is not None
            and (current_url_name == section.url_name or current_url_name in section.also_active_for),
        )
        for section in NAVIGATION
        if section.scope in scopes
    ]
