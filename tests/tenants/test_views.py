"""The console pages of tenancy and identity, through the Django test client."""

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.core import mail, serializers
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from tenants import services
from tenants.context import system_actor
from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant, User
from tenants.requests import SESSION_TENANT_KEY
from tenants.roles import Role
from tests.conftest import api_client
from tests.factories import MembershipFactory, TenantFactory, UserFactory, make_api_key

SIGNUP = {
    "email": "ada@example.org",
    "full_name": "Ada Lovelace",
    "password1": "analytical-engine-1843",
    "password2": "analytical-engine-1843",
    "organisation_name": "Analytical Engines",
    "billing_country": "GB",
    "currency": "GBP",
}


def logged_in(user: User, tenant: Tenant | None = None) -> Client:
    client = Client()
    client.force_login(user)
    if tenant is not None:
        session = client.session
        session[SESSION_TENANT_KEY] = str(tenant.public_id)
        session.save()
    return client


def member(tenant: Tenant, role: str) -> User:
    user = UserFactory()
    MembershipFactory(tenant=tenant, user=user, role=role)
    return user


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def invite(tenant: Tenant, email: str, role: str = Role.DEVELOPER) -> tuple[Invitation, str]:
    return services.invitation_create(actor=system_actor(tenant), email=email, role=role)



@pytest.fixture
def owner_client(tenant_a) -> Client:
    return logged_in(tenant_a.owner, tenant_a.tenant)


# --- Sign-up ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signup_creates_tenant_and_owner_and_logs_in():
    client = Client()
    response = client.post(reverse("signup"), SIGNUP)
    assert response.status_code == 302
    assert response.url == reverse("console-home")
    user = User.objects.get(email="ada@example.org")
    assert user.full_name == "Ada Lovelace"
    assert user.check_password("analytical-engine-1843")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER
    assert (membership.tenant.name, membership.tenant.billing_country, membership.tenant.currency) == (
        "Analytical Engines", "GB", "GBP")
    overview = client.get(response.url)
    assert overview.status_code == 200
    assert overview.context["user"] == user
    assert "Analytical Engines" in overview.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"password1": "password123", "password2": "password123"}, "password1", "too common"),
        ({"password1": "short", "password2": "short"}, "password1", "too short"),
        ({"password2": "something-else-entirely"}, "password2", "differ"),
        ({"billing_country": "XX"}, "billing_country", "valid choice"),
        ({"currency": "ABC"}, "currency", "valid choice"),
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"organisation_name": "   "}, "organisation_name", "required"),
    ],
)
def test_signup_with_bad_input_shows_the_error_and_creates_nothing(change, field, message):
    response = Client().post(reverse("signup"), {**SIGNUP, **change})
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors.get(field, []))
    assert message in errors
    assert not User.objects.exists()
    assert not Tenant.objects.exists()


def test_signup_with_an_existing_email_shows_the_error_and_creates_nothing(tenant_a):
    tenants_before = Tenant.objects.count()
    response = Client().post(reverse("signup"), {**SIGNUP, "email": tenant_a.owner.email.upper()})
    assert response.status_code == 200
    assert "already exists" in " ".join(response.context["form"].errors["email"])
    assert Tenant.objects.count() == tenants_before
    assert "_auth_user_id" not in response.wsgi_request.session


def test_signup_page_sends_a_logged_in_user_to_the_console(owner_client):
    response = owner_client.get(reverse("signup"))
    assert response.status_code == 302
    assert response.url == reverse("console-home")


# --- Log in, log out, password reset ------------------------------------------------------


@pytest.mark.django_db
def test_login_page_renders_email_and_password_inputs():
    response = Client().get(reverse("login"))
    html = response.content.decode()
    assert response.status_code == 200
    assert reverse("login") == "/accounts/login/"
    for name in ("username", "password", "csrfmiddlewaretoken"):
        assert f'name="{name}"' in html
    assert ">Email<" in html


def test_login_redirects_to_the_console(tenant_a, password):
    client = Client()
    response = client.post(reverse("login"), {"username": tenant_a.owner.email, "password": password})
    assert response.status_code == 302
    assert response.url == reverse("console-home")
    assert client.get(response.url).status_code == 200


def test_login_ignores_the_case_of_the_email(tenant_a, password):
    response = Client().post(reverse("login"), {"username": f"  {tenant_a.owner.email.upper()}", "password": password})
    assert response.status_code == 302


def test_login_follows_a_safe_next_url(tenant_a, password):
    response = Client().post(f"{reverse('login')}?next=/team/",
                             {"username": tenant_a.owner.email, "password": password, "next": "/team/"})
    assert response.url == "/team/"


def test_login_with_a_wrong_password_shows_an_error(tenant_a):
    client = Client()
    response = client.post(reverse("login"), {"username": tenant_a.owner.email, "password": "wrong-password"})
    assert response.status_code == 200
    assert "enter a correct email and password" in response.content.decode().lower()
    assert "_auth_user_id" not in client.session


def test_logout_is_a_post_and_ends_the_session(owner_client):
    assert owner_client.get(reverse("logout")).status_code == 405
    response = owner_client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("login")
    after = owner_client.get(reverse("console-home"))
    assert after.status_code == 302
    assert after.url.startswith(reverse("login"))


@pytest.mark.parametrize("url_name", ["console-home", "team", "api-keys", "audit-log", "tenant-settings",
                                      "organisation-create"])
def test_console_pages_require_login(db, url_name):
    response = Client().get(reverse(url_name))
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={reverse(url_name)}"


def test_password_reset_emails_a_link_that_sets_a_new_password(tenant_a, settings):
    settings.SITE_URL = "https://console.switchyard.test"
    client = Client()
    response = client.post(reverse("password_reset"), {"email": tenant_a.owner.email})
    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == [tenant_a.owner.email]
    link = re.search(r"https://console\.switchyard\.test(/accounts/password-reset/\S+/)", email.body)
    assert link, email.body

    form = client.get(link.group(1), follow=True)
    assert form.status_code == 200
    assert form.context["validlink"]
    new_password = "a-brand-new-passphrase"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302
    assert done.url == reverse("password_reset_complete")
    tenant_a.owner.refresh_from_db()
    assert tenant_a.owner.check_password(new_password)


def test_password_reset_reaches_an_owner_created_without_a_password(db):
    _tenant, user = services.tenant_create(name="No Password Ltd", owner_email="nopass@example.com")
    assert not user.has_usable_password()
    Client().post(reverse("password_reset"), {"email": "nopass@example.com"})
    assert [email.to for email in mail.outbox] == [["nopass@example.com"]]


@pytest.mark.django_db
def test_password_reset_for_an_unknown_email_sends_nothing_and_says_the_same():
    response = Client().post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")
    assert mail.outbox == []


# --- Tenants: switching, creating, settings -----------------------------------------------


def test_switch_tenant_acts_for_the_chosen_tenant(tenant_a, tenant_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    client = logged_in(tenant_a.owner, tenant_a.tenant)
    response = client.post(reverse("switch-tenant"), {"tenant": str(tenant_b.tenant.public_id), "next": "/team/"})
    assert response.status_code == 302
    assert response.url == "/team/"
    assert client.session[SESSION_TENANT_KEY] == str(tenant_b.tenant.public_id)
    overview = client.get(reverse("console-home"))
    assert overview.context["tenant"] == tenant_b.tenant
    assert overview.context["role_label"] == "Viewer"


def test_switch_tenant_ignores_an_offsite_next_url(tenant_a, tenant_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    client = logged_in(tenant_a.owner, tenant_a.tenant)
    response = client.post(reverse("switch-tenant"),
                           {"tenant": str(tenant_b.tenant.public_id), "next": "https://evil.example/"})
    assert response.url == reverse("console-home")


@pytest.mark.parametrize("tenant_id", ["other-tenant", "not-a-uuid", ""])
def test_switch_to_a_tenant_you_are_not_a_member_of_is_404(tenant_a, tenant_b, tenant_id):
    client = logged_in(tenant_a.owner, tenant_a.tenant)
    value = str(tenant_b.tenant.public_id) if tenant_id == "other-tenant" else tenant_id
    response = client.post(reverse("switch-tenant"), {"tenant": value})
    assert response.status_code == 404
    assert client.session[SESSION_TENANT_KEY] == str(tenant_a.tenant.public_id)


def test_a_user_without_a_tenant_is_told_so_and_can_create_one(tenant_a):
    user = UserFactory(email="alone@example.com")
    client = logged_in(user)
    response = client.get(reverse("console-home"))
    assert response.status_code == 302
    assert response.url == reverse("organisation-create")
    page = client.get(response.url)
    assert "not in any organisation" in page.content.decode()

    created = client.post(reverse("organisation-create"),
                          {"name": "Fresh Start", "billing_country": "FR", "currency": "EUR"})
    assert created.status_code == 302
    tenant = Tenant.objects.get(name="Fresh Start")
    assert Membership.objects.get(user=user, tenant=tenant).role == Role.OWNER
    assert client.get(reverse("console-home")).context["tenant"] == tenant


def test_an_owner_removed_from_their_only_tenant_lands_on_the_no_tenant_page(tenant_a):
    second_owner = member(tenant_a.tenant, Role.OWNER)
    logged_in(second_owner, tenant_a.tenant).post(
        reverse("team-member-remove", args=[Membership.objects.get(user=tenant_a.owner).public_id]))
    response = logged_in(tenant_a.owner).get(reverse("console-home"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("organisation-create")
    assert "not in any organisation" in response.content.decode()


def test_settings_update_changes_only_what_was_edited(owner_client, tenant_a):
    response = owner_client.post(reverse("tenant-settings"),
                                 {"name": "Acme Europe", "billing_country": "DE", "currency": "EUR"})
    assert response.status_code == 302
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.name == "Acme Europe"
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="tenant.update")
    assert event.changes == {"name": ["Acme", "Acme Europe"]}


def test_settings_with_a_bad_currency_shows_an_error(owner_client, tenant_a):
    response = owner_client.post(reverse("tenant-settings"),
                                 {"name": "Acme", "billing_country": "DE", "currency": "XYZ"})
    assert response.status_code == 200
    assert response.context["form"].errors["currency"]
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.currency == "EUR"


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.BILLING, Role.VIEWER])
def test_settings_need_the_admin_scope(tenant_a, role):
    client = logged_in(member(tenant_a.tenant, role), tenant_a.tenant)
    assert client.get(reverse("tenant-settings")).status_code == 403
    response = client.post(reverse("tenant-settings"), {"name": "Hijacked", "billing_country": "DE",
                                                        "currency": "EUR"})
    assert response.status_code == 403
    assert "admin" in response.content.decode()
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.name == "Acme"


def test_a_suspended_tenant_is_read_only(owner_client, tenant_a):
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert "suspended" in owner_client.get(reverse("team")).content.decode()
    response = owner_client.post(reverse("team-invite"), {"email": "late@example.com", "role": "viewer"})
    assert response.status_code == 403
    assert not Invitation.objects.filter(email="late@example.com").exists()


# --- Team ---------------------------------------------------------------------------------


def test_team_lists_members_and_pending_invitations(owner_client, tenant_a):
    developer = member(tenant_a.tenant, Role.DEVELOPER)
    invite(tenant_a.tenant, "pending@example.com")
    html = owner_client.get(reverse("team")).content.decode()
    assert tenant_a.owner.email in html
    assert developer.email in html
    assert developer.full_name in html
    assert "pending@example.com" in html
    assert 'action="/team/invite/"' in html


def test_owner_invites_by_email(owner_client, tenant_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("team-invite"), {"email": "New@Example.com", "role": "admin"})
    assert response.status_code == 302
    invitation = Invitation.objects.get(tenant=tenant_a.tenant)
    assert (invitation.email, invitation.role, invitation.state) == ("new@example.com", "admin", "pending")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]
    assert "/invitations/" in mail.outbox[0].body


def test_inviting_a_member_again_shows_the_error(owner_client, tenant_a):
    developer = member(tenant_a.tenant, Role.DEVELOPER)
    response = owner_client.post(reverse("team-invite"), {"email": developer.email, "role": "viewer"})
    assert response.status_code == 200
    assert "already a member" in " ".join(response.context["invite_form"].errors["email"])
    assert not Invitation.objects.exists()


def test_an_admin_cannot_invite_an_owner(tenant_a):
    client = logged_in(member(tenant_a.tenant, Role.ADMIN), tenant_a.tenant)
    page = client.get(reverse("team"))
    assert "owner" not in dict(page.context["invite_form"].fields["role"].choices)
    response = client.post(reverse("team-invite"), {"email": "boss@example.com", "role": "owner"})
    assert response.status_code == 200
    assert response.context["invite_form"].errors["role"]
    assert not Invitation.objects.exists()


def test_owner_changes_a_members_role(owner_client, tenant_a):
    developer = member(tenant_a.tenant, Role.DEVELOPER)
    membership = Membership.objects.get(user=developer)
    response = owner_client.post(reverse("team-member-role", args=[membership.public_id]), {"role": "admin"},
                                 follow=True)
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN
    assert f"{developer.email} is now admin." in messages_of(response)


def test_the_last_owner_cannot_step_down_or_leave(owner_client, tenant_a):
    membership = Membership.objects.get(user=tenant_a.owner)
    demoted = owner_client.post(reverse("team-member-role", args=[membership.public_id]), {"role": "admin"},
                                follow=True)
    assert any("at least one owner" in message for message in messages_of(demoted))
    removed = owner_client.post(reverse("team-member-remove", args=[membership.public_id]), follow=True)
    assert any("at least one owner" in message for message in messages_of(removed))
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_an_admin_cannot_demote_or_remove_an_owner(tenant_a):
    client = logged_in(member(tenant_a.tenant, Role.ADMIN), tenant_a.tenant)
    owner = Membership.objects.get(user=tenant_a.owner)
    response = client.post(reverse("team-member-role", args=[owner.public_id]), {"role": "viewer"}, follow=True)
    assert any("Only an owner" in message for message in messages_of(response))
    client.post(reverse("team-member-remove", args=[owner.public_id]))
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_owner_removes_a_member(owner_client, tenant_a):
    viewer = member(tenant_a.tenant, Role.VIEWER)
    membership = Membership.objects.get(user=viewer)
    response = owner_client.post(reverse("team-member-remove", args=[membership.public_id]))
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="membership.remove").exists()


def test_owner_revokes_an_invitation(owner_client, tenant_a):
    invitation, token = invite(tenant_a.tenant, "changed-my-mind@example.com")
    response = owner_client.post(reverse("team-invitation-revoke", args=[invitation.public_id]))
    assert response.status_code == 302
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    assert Client().get(reverse("invitation-accept", args=[token])).status_code == 410


def test_a_viewer_sees_the_team_read_only_and_gets_403_on_changes(tenant_a):
    viewer = member(tenant_a.tenant, Role.VIEWER)
    client = logged_in(viewer, tenant_a.tenant)
    page = client.get(reverse("team"))
    assert page.status_code == 200
    assert 'action="/team/invite/"' not in page.content.decode()
    owner = Membership.objects.get(user=tenant_a.owner)
    invitation, _token = invite(tenant_a.tenant, "someone@example.com")
    refused = [
        client.post(reverse("team-invite"), {"email": "x@example.com", "role": "viewer"}),
        client.post(reverse("team-member-role", args=[owner.public_id]), {"role": "viewer"}),
        client.post(reverse("team-member-remove", args=[owner.public_id])),
        client.post(reverse("team-invitation-revoke", args=[invitation.public_id])),
    ]
    assert [response.status_code for response in refused] == [403] * 4
    assert "scope" in refused[0].content.decode()
    owner.refresh_from_db()
    invitation.refresh_from_db()
    assert (owner.role, invitation.state) == (Role.OWNER, "pending")
    assert Invitation.objects.count() == 1


def test_write_pages_refuse_get(owner_client, tenant_a):
    owner = Membership.objects.get(user=tenant_a.owner)
    assert owner_client.get(reverse("team-invite")).status_code == 405
    assert owner_client.get(reverse("team-member-remove", args=[owner.public_id])).status_code == 405


# --- Invitations --------------------------------------------------------------------------


def test_a_logged_in_invitee_accepts(tenant_a, tenant_b):
    invitation, token = invite(tenant_a.tenant, tenant_b.owner.email, Role.BILLING)
    client = logged_in(tenant_b.owner, tenant_b.tenant)
    page = client.get(reverse("invitation-accept", args=[token]))
    assert page.status_code == 200
    assert "Accept and join Acme" in page.content.decode()
    response = client.post(reverse("invitation-accept", args=[token]))
    assert response.status_code == 302
    assert Membership.objects.get(tenant=tenant_a.tenant, user=tenant_b.owner).role == Role.BILLING
    assert client.session[SESSION_TENANT_KEY] == str(tenant_a.tenant.public_id)
    invitation.refresh_from_db()
    assert invitation.state == "accepted"
    assert client.post(reverse("invitation-accept", args=[token])).status_code == 410


def test_an_invitation_for_another_email_cannot_be_accepted(tenant_a, tenant_b):
    _invitation, token = invite(tenant_a.tenant, "someone-else@example.com")
    client = logged_in(tenant_b.owner, tenant_b.tenant)
    response = client.post(reverse("invitation-accept", args=[token]))
    assert response.status_code == 403
    assert "someone-else@example.com" in response.content.decode()
    assert not Membership.objects.filter(tenant=tenant_a.tenant, user=tenant_b.owner).exists()


def test_a_new_user_signs_up_through_an_invitation_without_a_tenant_of_their_own(tenant_a):
    _invitation, token = invite(tenant_a.tenant, "newbie@example.com", Role.VIEWER)
    tenants_before = Tenant.objects.count()
    client = Client()
    page = client.get(reverse("invitation-accept", args=[token]))
    assert page.status_code == 200
    assert 'name="password1"' in page.content.decode()
    response = client.post(reverse("invitation-accept", args=[token]), {
        "full_name": "New Bie", "password1": "fresh-member-passphrase", "password2": "fresh-member-passphrase"})
    assert response.status_code == 302
    user = User.objects.get(email="newbie@example.com")
    assert user.full_name == "New Bie"
    assert list(Membership.objects.filter(user=user).values_list("tenant", "role")) == [
        (tenant_a.tenant.pk, Role.VIEWER)]
    assert Tenant.objects.count() == tenants_before
    overview = client.get(reverse("console-home"))
    assert overview.context["tenant"] == tenant_a.tenant


def test_invitation_signup_with_a_weak_password_creates_nothing(tenant_a):
    _invitation, token = invite(tenant_a.tenant, "newbie@example.com")
    response = Client().post(reverse("invitation-accept", args=[token]),
                             {"full_name": "New Bie", "password1": "12345678901", "password2": "12345678901"})
    assert response.status_code == 200
    assert response.context["signup_form"].errors["password1"]
    assert not User.objects.filter(email="newbie@example.com").exists()


def test_an_invitee_with_an_account_is_asked_to_log_in(tenant_a, tenant_b, password):
    _invitation, token = invite(tenant_a.tenant, tenant_b.owner.email)
    url = reverse("invitation-accept", args=[token])
    client = Client()
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["login_url"] == f"{reverse('login')}?{urlencode({'next': url})}"
    # A POST with a password cannot take over the existing account.
    client.post(url, {"full_name": "X", "password1": "takeover-passphrase", "password2": "takeover-passphrase"})
    tenant_b.owner.refresh_from_db()
    assert tenant_b.owner.check_password(password)
    assert not Membership.objects.filter(tenant=tenant_a.tenant, user=tenant_b.owner).exists()

    login = client.post(page.context["login_url"],
                        {"username": tenant_b.owner.email, "password": password, "next": url})
    assert login.url == url


def test_an_expired_invitation_gets_a_clear_410(tenant_a):
    invitation, token = invite(tenant_a.tenant, "late@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = Client().get(reverse("invitation-accept", args=[token]))
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    signup = Client().post(reverse("invitation-accept", args=[token]),
                           {"full_name": "L", "password1": "late-but-strong-pass", "password2": "late-but-strong-pass"})
    assert signup.status_code == 410
    assert not User.objects.filter(email="late@example.com").exists()


@pytest.mark.django_db
def test_an_unknown_invitation_link_is_a_clear_404():
    response = Client().get(reverse("invitation-accept", args=["no-such-token"]))
    assert response.status_code == 404
    assert "not valid" in response.content.decode()


# --- API keys -----------------------------------------------------------------------------


def _database_dump() -> str:
    """Every row of every table, as text: to prove a secret is stored nowhere."""
    return "".join(serializers.serialize("json", model._default_manager.all()) for model in apps.get_models())


def test_a_new_key_is_shown_once_and_never_stored(owner_client, tenant_a):
    response = owner_client.post(reverse("api-keys"), {"name": "CI", "scopes": ["read", "deploy"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = response.context["created"].plaintext
    assert re.fullmatch(r"sy_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}", plaintext)
    assert plaintext in response.content.decode()

    key = ApiKey.objects.get(tenant=tenant_a.tenant, name="CI")
    assert key.scopes == ["deploy", "read"]
    assert key.created_by == tenant_a.owner
    secret = plaintext.rsplit("_", 1)[1]
    dump = _database_dump()
    assert plaintext not in dump
    assert secret not in dump

    again = owner_client.get(reverse("api-keys"))
    assert plaintext not in again.content.decode()
    assert secret not in again.content.decode()
    assert key.display in again.content.decode()

    assert api_client(plaintext).get("/api/v1/tenant").json()["name"] == "Acme"


def test_a_key_with_an_expiry_date_works_through_that_day(owner_client, tenant_a):
    tomorrow = timezone.now().date() + timedelta(days=1)
    owner_client.post(reverse("api-keys"), {"name": "Short", "scopes": ["read"], "expires_on": tomorrow.isoformat()})
    key = ApiKey.objects.get(name="Short")
    assert key.expires_at.date() == tomorrow + timedelta(days=1)
    assert (key.expires_at.hour, key.expires_at.minute) == (0, 0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "No scopes"}, "scopes"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "Bad scope", "scopes": ["root"]}, "scopes"),
        ({"name": "Past", "scopes": ["read"], "expires_on": "2001-01-01"}, "expires_on"),
    ],
)
def test_key_creation_with_bad_input_shows_the_error(owner_client, tenant_a, data, field):
    response = owner_client.post(reverse("api-keys"), data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert response.context["created"] is None
    assert not ApiKey.objects.exclude(pk=tenant_a.key.pk).exists()


def test_owner_revokes_a_key(owner_client, tenant_a):
    response = owner_client.post(reverse("api-key-revoke", args=[tenant_a.key.public_id]), follow=True)
    assert response.status_code == 200
    tenant_a.key.refresh_from_db()
    assert tenant_a.key.state == "revoked"
    assert any("revoked" in message for message in messages_of(response))
    assert api_client(tenant_a.plaintext).get("/api/v1/tenant").status_code == 401


def test_a_developer_sees_keys_but_cannot_create_or_revoke(tenant_a):
    client = logged_in(member(tenant_a.tenant, Role.DEVELOPER), tenant_a.tenant)
    page = client.get(reverse("api-keys"))
    assert page.status_code == 200
    assert tenant_a.key.display in page.content.decode()
    assert not page.context["may_manage"]
    assert client.post(reverse("api-keys"), {"name": "Mine", "scopes": ["read"]}).status_code == 403
    assert client.post(reverse("api-key-revoke", args=[tenant_a.key.public_id])).status_code == 403
    tenant_a.key.refresh_from_db()
    assert tenant_a.key.state == "active"
    assert ApiKey.objects.count() == 1


# --- Audit log ----------------------------------------------------------------------------


def test_audit_log_lists_the_tenants_events_newest_first(owner_client, tenant_a, tenant_b):
    services.tenant_update(actor=system_actor(tenant_a.tenant), name="Acme Renamed")
    make_api_key(tenant_b.tenant, name="Globex secret project")
    response = owner_client.get(reverse("audit-log"))
    assert response.status_code == 200
    events = [event for event, _lines in response.context["rows"]]
    assert events[0].action == "tenant.update"
    assert all(event.tenant_id == tenant_a.tenant.pk for event in events)
    html = response.content.decode()
    assert "name: Acme → Acme Renamed" in html
    assert "Globex secret project" not in html


def test_audit_log_filters_by_action_and_paginates(owner_client, tenant_a):
    for number in range(55):
        make_api_key(tenant_a.tenant, name=f"key {number}")
    services.tenant_update(actor=system_actor(tenant_a.tenant), name="Acme Renamed")
    first = owner_client.get(reverse("audit-log"), {"action": "api_key.create"})
    assert len(first.context["rows"]) == 50
    assert {event.action for event, _lines in first.context["rows"]} == {"api_key.create"}
    assert first.context["page"].paginator.count == 56  # the fixture's key and these 55
    assert "page=2" in first.content.decode() and "action=api_key.create" in first.content.decode()
    second = owner_client.get(reverse("audit-log"), {"action": "api_key.create", "page": 2})
    assert len(second.context["rows"]) == 6
    renamed = owner_client.get(reverse("audit-log"), {"action": "tenant.update"})
    assert [event.action for event, _lines in renamed.context["rows"]] == ["tenant.update"]


# --- Cross-tenant: another tenant's object is a 404, and nothing changes -------------------


def test_revoking_another_tenants_key_is_404(owner_client, tenant_b):
    response = owner_client.post(reverse("api-key-revoke", args=[tenant_b.key.public_id]))
    assert response.status_code == 404
    tenant_b.key.refresh_from_db()
    assert tenant_b.key.state == "active"


def test_removing_or_changing_another_tenants_member_is_404(owner_client, tenant_b):
    other = Membership.objects.get(user=tenant_b.owner)
    assert owner_client.post(reverse("team-member-remove", args=[other.public_id])).status_code == 404
    assert owner_client.post(reverse("team-member-role", args=[other.public_id]),
                             {"role": "viewer"}).status_code == 404
    other.refresh_from_db()
    assert other.role == Role.OWNER


def test_revoking_another_tenants_invitation_is_404(owner_client, tenant_b):
    invitation, _token = invite(tenant_b.tenant, "globex-hire@example.com")
    assert owner_client.post(reverse("team-invitation-revoke", args=[invitation.public_id])).status_code == 404
    invitation.refresh_from_db()
    assert invitation.state == "pending"


def test_a_malformed_object_id_is_404(owner_client):
    assert owner_client.post(reverse("api-key-revoke", args=["not-a-uuid"])).status_code == 404


def test_the_tenant_pages_show_only_the_current_tenants_rows(owner_client, tenant_b):
    invite(tenant_b.tenant, "globex-hire@example.com")
    team = owner_client.get(reverse("team")).content.decode()
    keys = owner_client.get(reverse("api-keys")).content.decode()
    assert tenant_b.owner.email not in team
    assert "globex-hire@example.com" not in team
    assert tenant_b.key.display not in keys


# --- CSRF ---------------------------------------------------------------------------------


def test_console_posts_need_the_csrf_token(tenant_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant_a.owner)
    refused = client.post(reverse("api-keys"), {"name": "Forged", "scopes": ["admin"]})
    assert refused.status_code == 403
    assert not ApiKey.objects.filter(name="Forged").exists()

    page = client.get(reverse("api-keys"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    accepted = client.post(reverse("api-keys"), {"name": "Real", "scopes": ["read"], "csrfmiddlewaretoken": token})
    assert accepted.status_code == 200
    assert ApiKey.objects.filter(name="Real").exists()


def test_switching_tenant_needs_the_csrf_token(tenant_a, tenant_b):
    MembershipFactory(tenant=tenant_b.tenant, user=tenant_a.owner, role=Role.VIEWER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant_a.owner)
    assert client.post(reverse("switch-tenant"), {"tenant": str(tenant_b.tenant.public_id)}).status_code == 403


def test_the_invitation_email_links_to_the_accept_page(tenant_a, settings, django_capture_on_commit_callbacks):
    settings.SITE_URL = "https://console.switchyard.test"
    with django_capture_on_commit_callbacks(execute=True):
        _invitation, token = invite(tenant_a.tenant, "linked@example.com")
    assert f"https://console.switchyard.test/invitations/{token}/" in mail.outbox[0].body


def test_tenant_factory_world_is_independent(db):
    # Guards the fixtures this module relies on: a factory tenant has no members.
    assert not Membership.objects.filter(tenant=TenantFactory()).exists()
