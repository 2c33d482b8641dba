"""The console's layout, navigation, overview and error pages."""

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from console.navigation import NAVIGATION, nav_links_for
from tenants.models import Membership
from tenants.requests import SESSION_TENANT_KEY
from tenants.roles import ROLE_SCOPES, Role, Scope
from tests.factories import MembershipFactory, UserFactory, make_api_key


def logged_in(user, tenant=None) -> Client:
    client = Client()
    client.force_login(user)
    if tenant is not None:
        session = client.session
        session[SESSION_TENANT_KEY] = str(tenant.public_id)
        session.save()
    return client


def member_client(tenant, role: str) -> Client:
    user = UserFactory()
    MembershipFactory(tenant=tenant, user=user, role=role)
    return logged_in(user, tenant)


# --- Overview -----------------------------------------------------------------------------


def test_overview_summarises_the_tenant_and_the_users_role(tenant_a):
    MembershipFactory(tenant=tenant_a.tenant, role=Role.DEVELOPER)
    make_api_key(tenant_a.tenant, name="second")
    revoked, _plaintext = make_api_key(tenant_a.tenant, name="revoked")
    client = logged_in(tenant_a.owner, tenant_a.tenant)
    client.post(reverse("api-key-revoke", args=[revoked.public_id]))

    response = client.get(reverse("console-home"))
    assert response.status_code == 200
    assert (response.context["member_count"], response.context["active_key_count"]) == (2, 2)
    html = response.content.decode()
    assert "Acme" in html
    assert "You are owner here" in html
    assert 'curl -H "Authorization: Bearer sy_live_…" http://testserver/api/v1/tenant' in html
    for scope in Scope:
        assert scope.label in html


def test_overview_shows_which_scopes_a_role_lacks(tenant_a):
    response = member_client(tenant_a.tenant, Role.BILLING).get(reverse("console-home"))
    held = {scope for scope, _label, is_held in response.context["scopes"] if is_held}
    assert held == set(ROLE_SCOPES[Role.BILLING])
    assert "Ask an owner or admin to create one" in response.content.decode()


def test_login_redirect_setting_names_the_overview(settings):
    assert reverse(settings.LOGIN_REDIRECT_URL) == "/"


# --- Layout: navigation, tenant switcher, user menu ---------------------------------------


def test_every_navigation_section_has_a_page():
    for section in NAVIGATION:
        assert reverse(section.url_name)
        assert section.scope in {scope.value for scope in Scope}


def test_navigation_shows_only_sections_the_scopes_allow():
    viewer = [link.label for link in nav_links_for(ROLE_SCOPES[Role.VIEWER], "team")]
    admin = nav_links_for(ROLE_SCOPES[Role.ADMIN], "team")
    assert viewer == ["Overview", "Models", "Deployments", "Usage", "Team", "API keys", "Audit log"]
    assert [link.label for link in admin] == ["Overview", "Models", "Deployments", "Usage", "Billing", "Team",
                                              "API keys", "Audit log", "Webhooks", "Settings"]
    assert [link.label for link in admin if link.active] == ["Team"]
    biller = [link.label for link in nav_links_for(ROLE_SCOPES[Role.BILLING], "invoice-detail") if link.active]
    assert biller == ["Billing"]


def test_the_layout_shows_the_navigation_for_the_role(tenant_a):
    viewer_html = member_client(tenant_a.tenant, Role.VIEWER).get(reverse("team")).content.decode()
    owner_html = logged_in(tenant_a.owner, tenant_a.tenant).get(reverse("team")).content.decode()
    assert 'href="/audit/"' in viewer_html
    assert 'href="/settings/"' not in viewer_html
    assert 'href="/settings/"' in owner_html
    assert 'aria-current="page"' in owner_html


def test_staff_users_see_the_back_office_link(tenant_a):
    plain = logged_in(tenant_a.owner, tenant_a.tenant).get(reverse("console-home")).content.decode()
    assert 'href="/admin/"' not in plain
    tenant_a.owner.is_staff = True
    tenant_a.owner.save()
    staff = logged_in(tenant_a.owner, tenant_a.tenant).get(reverse("console-home")).content.decode()
    assert 'href="/admin/"' in staff


def test_the_tenant_switcher_lists_the_users_tenants(tenant_a, tenant_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    response = logged_in(tenant_a.owner, tenant_a.tenant).get(reverse("api-keys"))
    html = response.content.decode()
    assert f'value="{tenant_a.tenant.public_id}"' in html
    assert f'value="{tenant_b.tenant.public_id}"' in html
    assert 'name="next" value="/api-keys/"' in html
    assert 'action="/switch-tenant/"' in html


def test_the_user_menu_shows_the_email_and_a_logout_form(tenant_a):
    html = logged_in(tenant_a.owner, tenant_a.tenant).get(reverse("console-home")).content.decode()
    assert tenant_a.owner.email in html
    assert 'action="/accounts/logout/"' in html


def test_flash_messages_are_shown(tenant_a):
    client = logged_in(tenant_a.owner, tenant_a.tenant)
    response = client.post(reverse("api-key-revoke", args=[tenant_a.key.public_id]), follow=True)
    assert 'class="flash flash-success"' in response.content.decode()


@pytest.mark.django_db
def test_public_pages_have_no_console_navigation():
    html = Client().get(reverse("login")).content.decode()
    assert 'class="sidebar"' not in html
    assert 'href="/signup/"' in html


# --- Error pages --------------------------------------------------------------------------


def test_an_unknown_page_is_a_404_in_the_layout(tenant_a):
    response = logged_in(tenant_a.owner, tenant_a.tenant).get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Nothing here" in html
    assert "console.css" in html


@pytest.mark.django_db
def test_an_anonymous_404_renders_too():
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    assert "Nothing here" in response.content.decode()


def test_a_403_explains_what_is_missing(tenant_a):
    response = member_client(tenant_a.tenant, Role.VIEWER).get(reverse("tenant-settings"))
    assert response.status_code == 403
    html = response.content.decode()
    assert "admin" in html
    assert "console.css" in html


def test_the_500_page_renders_without_a_request():
    html = render_to_string("500.html")
    assert "Something went wrong" in html
    assert "console.css" in html


def test_the_api_keeps_problem_details_for_unknown_urls(db):
    response = Client().get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_a_membership_removed_mid_session_falls_back_to_another_tenant(tenant_a, tenant_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    client = logged_in(tenant_a.owner, tenant_b.tenant)
    Membership.objects.filter(tenant=tenant_b.tenant, user=tenant_a.owner).delete()
    response = client.get(reverse("console-home"))
    assert response.context["tenant"] == tenant_a.tenant


def test_the_pager_counts_rows_and_links_neighbour_pages_keeping_the_query():
    from django.core.paginator import Paginator
    from django.template.loader import render_to_string
    from django.test import RequestFactory

    request = RequestFactory().get("/audit/?action=key.create&page=2")
    page = Paginator(list(range(45)), 20).page(2)
    html = render_to_string("console/_pager.html", {"page": page, "noun": "event", "nouns": "events",
                                                     "anchor": "#log"}, request=request)
    assert "Page 2 of 3 · 45 events" in html
    assert 'href="?action=key.create&amp;page=1#log">Newer' in html
    assert 'href="?action=key.create&amp;page=3#log">Older' in html
    single = Paginator([1], 20).page(1)
    assert render_to_string("console/_pager.html", {"page": single}, request=request).strip() == ""
    shown = render_to_string("console/_pager.html", {"page": single, "always": True, "noun": "event",
                                                      "nouns": "events"}, request=request)
    assert "Page 1 of 1 · 1 event<" in shown
