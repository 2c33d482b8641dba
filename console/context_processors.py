"""What every console page's layout needs: the navigation, the current tenant, the user's tenants."""

from console.navigation import nav_links_for
from tenants.requests import actor_for_request, memberships_of


def console(request):
    """Layout context for a logged-in user; nothing for anyone else.

    Runs for every template rendered with a request (admin pages and error pages
    included), so it must not fail on a request that matched no URL.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    actor = actor_for_request(request)
    match = getattr(request, "resolver_match", None)
    nav = nav_links_for(actor.scopes, match.url_name if match else None) if actor else []
    active = next((link for link in nav if link.active), None)
    return {
        "console_actor": actor,
        "console_tenant": actor.tenant if actor else None,
        "console_memberships": memberships_of(user),
        "console_nav": nav,
        # After switching tenant, land on the same section (its list page; an object
        # of the old tenant would be a 404 in the new one).
        "console_switch_next": active.url if active else "",
    }
