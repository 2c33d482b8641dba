"""Console pages of tenancy and identity: accounts, organisations, team, API keys, audit log, webhooks.

Views are thin: a form checks the input's shape, a service does the write, and
a `ServiceError` goes back to the person as a form error or a flash message.
Every page that acts for a tenant is wrapped in `tenant_page`, and every object
named in a URL is fetched with `owned_or_404`, so another tenant's object is a
404 exactly like a missing one.
"""

import json
import math
from dataclasses import dataclass
from datetime import datetime
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from tenants import selectors, services
from tenants import webhooks as webhook_services
from tenants.context import Actor
from tenants.errors import ServiceError
from tenants.forms import (
    ApiKeyCreateForm,
    AuditFilterForm,
    EmailAuthenticationForm,
    EmailPasswordResetForm,
    InvitationCreateForm,
    InvitationSignupForm,
    MemberRoleForm,
    OrganisationCreateForm,
    SignupForm,
    SwitchTenantForm,
    TenantSettingsForm,
    WebhookEndpointEditForm,
    WebhookEndpointForm,
    WebhookRotateSecretForm,
    add_service_error,
)
from tenants.models import ApiKey, Invitation, Membership, User, WebhookDelivery, WebhookEndpoint
from tenants.rate_limits import attempts_exceeded
from tenants.requests import actor_for_request, client_ip, memberships_of, select_tenant
from tenants.roles import Role, Scope, may_assign_role
from tenants.scoping import NotFound, get_owned

AUDIT_PAGE_SIZE = 50

# --- Access -------------------------------------------------------------------------------


def tenant_page(required_scopes: dict[str, str]):
    """A console page that acts for the logged-in user's current tenant.

    `required_scopes` maps each HTTP method to the scope it needs, as an API
    view's do; a method it does not list is refused (fail closed). The view is
    called as `view(request, actor, *args, **kwargs)`. A user with no tenant is
    sent to the page that lets them create one.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            method = "GET" if request.method == "HEAD" else request.method
            if not request.user.is_authenticated:
                # Come back here after logging in; a form's target cannot be revisited by GET.
                return redirect_to_login(request.get_full_path() if method == "GET" else reverse("console-home"))
            scope = required_scopes.get(method)
            if scope is None:
                return HttpResponseNotAllowed(sorted(required_scopes))
            actor = actor_for_request(request)
            if actor is None:
                return redirect("organisation-create")
            if scope not in actor.scopes:
                raise PermissionDenied(
                    f"This needs the '{scope}' scope, which your role in {actor.tenant.name} "
                    f"({Role(actor.role).label.lower()}) does not have. Ask an owner or admin."
                )
            if method != "GET" and not actor.tenant.is_active:
                raise PermissionDenied(f"{actor.tenant.name} is suspended: you can look, but not change anything.")
            response = view(request, actor, *args, **kwargs)
            # Pages show one tenant's data to one user: no shared or back-button copies.
            add_never_cache_headers(response)
            return response

        return wrapper

    return decorator


def owned_or_404(source: type[Model] | QuerySet, actor: Actor, public_id: str) -> Model:
    try:
        return get_owned(source, actor.tenant, public_id)
    except NotFound as missing:
        raise Http404(str(missing)) from None


def _safe_next_url(request, url: str | None) -> str | None:
    if url and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
        return url
    return None


# --- Accounts -----------------------------------------------------------------------------


class AttemptLimitMixin:
    """Refuse a form POST with 429 once its client address or the email it names has made
    `rate` attempts in the window (tenants.rate_limits), before the form is even checked."""

    rate_setting: str
    email_field: str

    def post(self, request, *args, **kwargs):
        email = (request.POST.get(self.email_field) or "").strip().casefold()
        principals = [f"{self.rate_setting}:ip:{client_ip(request)}"]
        if email:
            principals.append(f"{self.rate_setting}:email:{email}")
        wait = attempts_exceeded(principals, getattr(settings, self.rate_setting))
        if wait is None:
            return super().post(request, *args, **kwargs)
        # An unbound form with the email typed: checking the bound one would try the password.
        kwargs = {key: value for key, value in self.get_form_kwargs().items() if key not in ("data", "files")}
        kwargs["initial"] = {**kwargs.get("initial", {}), self.email_field: email}
        context = self.get_context_data(form=self.get_form_class()(**kwargs),
                                        attempts_error=f"Too many attempts. Try again in {math.ceil(wait)} seconds.")
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(math.ceil(wait))
        return response


class LoginView(AttemptLimitMixin, auth_views.LoginView):
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True
    rate_setting, email_field = "LOGIN_RATE_LIMIT", "username"


class PasswordResetView(AttemptLimitMixin, auth_views.PasswordResetView):
    form_class = EmailPasswordResetForm
    rate_setting, email_field = "PASSWORD_RESET_RATE_LIMIT", "email"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"

    @property
    def extra_email_context(self) -> dict:
        # Links in emails start with SITE_URL, never with the request's Host header,
        # which an attacker could set to point a victim's reset link at their own site.
        return {"site_url": settings.SITE_URL}


@sensitive_post_parameters("password1", "password2")
@never_cache
def signup(request):
    """A new account that owns a new organisation."""
    if request.user.is_authenticated:
        return redirect("console-home")
    form = SignupForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            tenant, user = services.user_signup(
                email=data["email"], password=data["password1"], full_name=data["full_name"],
                tenant_name=data["organisation_name"], billing_country=data["billing_country"],
                currency=data["currency"], source_ip=client_ip(request),
            )
        except ServiceError as error:
            add_service_error(form, error, SignupForm.service_fields)
        else:
            login(request, user)
            select_tenant(request, tenant)
            messages.success(request, f"Welcome to Switchyard. {tenant.name} is ready.")
            return redirect("console-home")
    return render(request, "tenants/signup.html", {"form": form})


# --- Organisations ------------------------------------------------------------------------


@login_required
@never_cache
def organisation_create(request):
    """A new organisation owned by the logged-in user; also the page of a user who has none."""
    form = OrganisationCreateForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            tenant, _owner = services.tenant_create(
                name=data["name"], owner_email=request.user.email, billing_country=data["billing_country"],
                currency=data["currency"], source_ip=client_ip(request),
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            select_tenant(request, tenant)
            messages.success(request, f"{tenant.name} is ready; you are its owner.")
            return redirect("console-home")
    has_memberships = memberships_of(request.user).exists()
    return render(request, "tenants/organisation_create.html", {"form": form, "has_memberships": has_memberships})


@require_POST
@login_required
def switch_tenant(request):
    """Act for another of the user's tenants. A tenant they are not a member of is a 404."""
    form = SwitchTenantForm(request.POST)
    if not form.is_valid():
        raise Http404("No such organisation.")
    membership = memberships_of(request.user).filter(tenant__public_id=form.cleaned_data["tenant"]).first()
    if membership is None:
        raise Http404("No such organisation.")
    select_tenant(request, membership.tenant)
    messages.info(request, f"You are now working in {membership.tenant.name}.")
    return redirect(_safe_next_url(request, request.POST.get("next")) or "console-home")


@tenant_page({"GET": Scope.ADMIN, "POST": Scope.ADMIN})
def tenant_settings(request, actor):
    form = TenantSettingsForm.for_tenant(actor.tenant, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        # Like a PATCH: only what the person changed is sent, so the audit log shows just that.
        changes = {field: form.cleaned_data[field] for field in form.changed_data}
        try:
            services.tenant_update(actor=actor, **changes)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, "Settings saved." if changes else "Nothing changed.")
            return redirect("tenant-settings")
    return render(request, "tenants/settings.html", {"form": form})


# --- Team ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    membership: Membership
    is_you: bool
    # The actor may change this member's role and remove them (owners are owners' business).
    manageable: bool


def _assignable_roles(actor: Actor) -> list[str]:
    return [role for role in Role.values if may_assign_role(actor.role, role)]


def _render_team(request, actor: Actor, invite_form: InvitationCreateForm | None = None):
    may_manage = Scope.ADMIN in actor.scopes
    members = [
        MemberRow(
            membership=membership,
            is_you=membership.user_id == actor.user.pk,
            manageable=may_manage and may_assign_role(actor.role, membership.role),
        )
        for membership in selectors.membership_list_for_tenant(actor.tenant)
    ]
    assignable_roles = _assignable_roles(actor)
    context = {
        "members": members,
        "invitations": selectors.invitation_list_for_tenant(actor.tenant).pending(),
        "may_manage": may_manage,
        "role_choices": [(role, Role(role).label) for role in assignable_roles],
        "invite_form": invite_form or InvitationCreateForm(assignable_roles=assignable_roles),
        "invitation_ttl_hours": settings.INVITATION_TTL_HOURS,
    }
    return render(request, "tenants/team.html", context)


@tenant_page({"GET": Scope.READ})
def team(request, actor):
    return _render_team(request, actor)


@tenant_page({"POST": Scope.ADMIN})
def team_invite(request, actor):
    form = InvitationCreateForm(request.POST, assignable_roles=_assignable_roles(actor))
    if form.is_valid():
        try:
            invitation, _token = services.invitation_create(
                actor=actor, email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("team")
    return _render_team(request, actor, invite_form=form)


@tenant_page({"POST": Scope.ADMIN})
def team_member_role(request, actor, member_id):
    membership = owned_or_404(selectors.membership_list_for_tenant(actor.tenant), actor, member_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles.")
        return redirect("team")
    try:
        services.membership_change_role(actor=actor, membership=membership, role=form.cleaned_data["role"])
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{membership.user.email} is now {Role(membership.role).label.lower()}.")
    return redirect("team")


@tenant_page({"POST": Scope.ADMIN})
def team_member_remove(request, actor, member_id):
    membership = owned_or_404(selectors.membership_list_for_tenant(actor.tenant), actor, member_id)
    leaving = membership.user_id == actor.user.pk
    try:
        services.membership_remove(actor=actor, membership=membership)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("team")
    if leaving:
        messages.success(request, f"You left {actor.tenant.name}.")
        return redirect("console-home")
    messages.success(request, f"{membership.user.email} was removed from {actor.tenant.name}.")
    return redirect("team")


@tenant_page({"POST": Scope.ADMIN})
def team_invitation_revoke(request, actor, invitation_id):
    invitation = owned_or_404(Invitation, actor, invitation_id)
    try:
        services.invitation_revoke(actor=actor, invitation=invitation)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"The invitation of {invitation.email} was revoked.")
    return redirect("team")


# --- Invitations (public: the token is the credential) ------------------------------------


def _invitation_page(request, context: dict, status: int = 200):
    response = render(request, "tenants/invitation.html", context, status=status)
    # The page is reached through a secret link: keep it out of every cache.
    add_never_cache_headers(response)
    return response


@sensitive_post_parameters("password1", "password2")
def invitation_accept(request, token):
    """The page an invitation email links to.

    Logged in as the invited email: accept with one click. Not logged in: log in
    (an existing account) or create an account for the invited email (no
    organisation of its own). Unknown links are a 404; used ones a 410.
    """
    invitation = services.invitation_for_token(token)
    if invitation is None:
        return _invitation_page(request, {"problem": "invalid"}, status=404)
    if invitation.state != "pending":
        return _invitation_page(request, {"problem": invitation.state, "invitation": invitation}, status=410)
    context = {"invitation": invitation, "role_label": Role(invitation.role).label}
    if request.user.is_authenticated:
        if request.user.email != invitation.email:
            return _invitation_page(request, {**context, "problem": "other-account"}, status=403)
        if request.method == "POST":
            try:
                membership = services.invitation_accept(token=token, user=request.user,
                                                        source_ip=client_ip(request))
            except ServiceError as error:
                return _invitation_page(request, {**context, "error": error.message}, status=error.status)
            select_tenant(request, membership.tenant)
            messages.success(request, f"You joined {membership.tenant.name} as {context['role_label'].lower()}.")
            return redirect("console-home")
        return _invitation_page(request, context)

    # Whether an account exists is safe to tell here: only the invitee holds the link.
    if User.objects.filter(email=invitation.email).exists():
        login_url = f"{reverse('login')}?{urlencode({'next': request.path})}"
        return _invitation_page(request, {**context, "login_url": login_url})
    form = InvitationSignupForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            membership = services.invitation_accept_as_new_user(
                token=token, full_name=form.cleaned_data["full_name"], password=form.cleaned_data["password1"],
                source_ip=client_ip(request),
            )
        except ServiceError as error:
            add_service_error(form, error, InvitationSignupForm.service_fields)
        else:
            login(request, membership.user)
            select_tenant(request, membership.tenant)
            messages.success(request, f"Welcome to Switchyard. You joined {membership.tenant.name}.")
            return redirect("console-home")
    return _invitation_page(request, {**context, "signup_form": form})


# --- API keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedKey:
    """A key just made and its plaintext: rendered into this one response, kept nowhere."""

    key: ApiKey
    plaintext: str


@tenant_page({"GET": Scope.READ, "POST": Scope.ADMIN})
@sensitive_variables("plaintext", "created")
def api_keys(request, actor):
    form = ApiKeyCreateForm(request.POST if request.method == "POST" else None, grantable_scopes=actor.scopes)
    created = None
    if form.is_bound and form.is_valid():
        try:
            key, plaintext = services.api_key_create(
                actor=actor, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at,
            )
        except ServiceError as error:
            add_service_error(form, error, ApiKeyCreateForm.service_fields)
        else:
            # Shown in the answer to this POST and never again: not in the session, not in a
            # redirect, not in the database (only its hash is). tenant_page marks it no-store.
            created = CreatedKey(key=key, plaintext=plaintext)
            form = ApiKeyCreateForm(grantable_scopes=actor.scopes)
    context = {
        "keys": selectors.api_key_list_for_tenant(actor.tenant),
        "form": form,
        "created": created,
        "may_manage": Scope.ADMIN in actor.scopes,
        "api_tenant_url": request.build_absolute_uri(reverse("api-tenant")),
    }
    return render(request, "tenants/api_keys.html", context)


@tenant_page({"POST": Scope.ADMIN})
def api_key_revoke(request, actor, key_id):
    key = owned_or_404(selectors.api_key_list_for_tenant(actor.tenant), actor, key_id)
    services.api_key_revoke(actor=actor, key=key)
    messages.success(request, f"The key {key.name} ({key.display}) was revoked; requests made with it now fail.")
    return redirect("api-keys")


# --- Audit log ----------------------------------------------------------------------------


def describe_changes(action: str, changes: dict) -> list[str]:
    """An audit event's `changes` as lines a person reads: `role: developer → admin`, `email: x@y`.

    Services record a changed field as [old, new] in `….update` / `….change_…`
    actions; elsewhere a list is just a value (an API key's scopes).
    """
    verb = action.rpartition(".")[2]
    is_change = verb.startswith(("update", "change"))
    lines = []
    for field, value in changes.items():
        if is_change and isinstance(value, list) and len(value) == 2:
            old, new = (_readable(part) for part in value)
            lines.append(f"{field}: {old} → {new}")
        else:
            lines.append(f"{field}: {_readable(value)}")
    return lines


def _readable(value) -> str:
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


@tenant_page({"GET": Scope.READ})
def audit_log(request, actor):
    form = AuditFilterForm(request.GET, actions=selectors.audit_action_list_for_tenant(actor.tenant))
    action = (form.cleaned_data["action"] if form.is_valid() else "") or None
    events = selectors.audit_event_list_for_tenant(actor.tenant, action=action)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(event, describe_changes(event.action, event.changes)) for event in page.object_list]
    return render(request, "tenants/audit_log.html", {"form": form, "page": page, "rows": rows, "action": action})


# --- Webhooks -----------------------------------------------------------------------------

WEBHOOK_DELIVERIES_PAGE_SIZE = 25


@dataclass(frozen=True)
class ShownSecret:
    """A signing secret just made (endpoint created or secret rotated): rendered into this one
    response and kept nowhere else the tenant can read it."""

    endpoint: WebhookEndpoint
    secret: str
    rotated: bool = False


def _endpoint_or_404(actor: Actor, endpoint_id: str) -> WebhookEndpoint:
    return owned_or_404(selectors.webhook_endpoint_list_for_tenant(actor.tenant), actor, endpoint_id)


@tenant_page({"GET": Scope.READ, "POST": Scope.ADMIN})
@sensitive_variables("secret", "shown")
def webhook_list(request, actor):
    form = WebhookEndpointForm(request.POST if request.method == "POST" else None)
    shown = None
    if form.is_bound and form.is_valid():
        try:
            endpoint, secret = webhook_services.webhook_endpoint_create(actor=actor, **form.cleaned_data)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            # Like a new API key: in this response only, never in a redirect or the session.
            shown = ShownSecret(endpoint=endpoint, secret=secret)
            form = WebhookEndpointForm()
    context = {
        "endpoints": selectors.webhook_endpoint_list_with_last_delivery(actor.tenant),
        "form": form,
        "shown": shown,
        "may_manage": Scope.ADMIN in actor.scopes,
        "max_endpoints": webhook_services.MAX_ENDPOINTS_PER_TENANT,
    }
    return render(request, "tenants/webhooks.html", context)


def _render_endpoint(request, actor: Actor, endpoint: WebhookEndpoint, *, form=None, shown: ShownSecret | None = None):
    deliveries = selectors.webhook_delivery_list_for_endpoint(endpoint)
    context = {
        "endpoint": endpoint,
        "form": form or WebhookEndpointEditForm.for_endpoint(endpoint),
        "rotate_form": WebhookRotateSecretForm(),
        "shown": shown,
        "page": Paginator(deliveries, WEBHOOK_DELIVERIES_PAGE_SIZE).get_page(request.GET.get("page")),
        "counts": selectors.webhook_delivery_counts(endpoint),
        "may_manage": Scope.ADMIN in actor.scopes,
        "previous_secret_valid": endpoint.signing_secrets(timezone.now())[1:] != [],
    }
    return render(request, "tenants/webhook_detail.html", context)


@tenant_page({"GET": Scope.READ, "POST": Scope.ADMIN})
def webhook_detail(request, actor, endpoint_id):
    endpoint = _endpoint_or_404(actor, endpoint_id)
    form = WebhookEndpointEditForm.for_endpoint(endpoint, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        changes = {field: form.cleaned_data[field] for field in form.changed_data}
        try:
            webhook_services.webhook_endpoint_update(actor=actor, endpoint=endpoint, **changes)
        except ServiceError as error:
            add_service_error(form, error)
        else:
            messages.success(request, "Endpoint saved." if changes else "Nothing changed.")
            return redirect("webhook-detail", endpoint_id=endpoint.public_id)
    return _render_endpoint(request, actor, endpoint, form=form)


@tenant_page({"POST": Scope.ADMIN})
@sensitive_variables("secret", "shown")
def webhook_rotate_secret(request, actor, endpoint_id):
    endpoint = _endpoint_or_404(actor, endpoint_id)
    form = WebhookRotateSecretForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose when the old secret stops signing.")
        return redirect("webhook-detail", endpoint_id=endpoint.public_id)
    endpoint, secret = webhook_services.webhook_endpoint_rotate_secret(
        actor=actor, endpoint=endpoint, previous_valid_hours=form.cleaned_data["previous_secret_valid_hours"])
    return _render_endpoint(request, actor, endpoint, shown=ShownSecret(endpoint=endpoint, secret=secret, rotated=True))


@tenant_page({"POST": Scope.ADMIN})
def webhook_test(request, actor, endpoint_id):
    endpoint = _endpoint_or_404(actor, endpoint_id)
    try:
        delivery = webhook_services.webhook_endpoint_send_test(actor=actor, endpoint=endpoint)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("webhook-detail", endpoint_id=endpoint.public_id)
    messages.success(request, f"A {delivery.event_type} event is on its way; its delivery shows how it went.")
    return redirect("webhook-delivery", delivery_id=delivery.public_id)


@tenant_page({"POST": Scope.ADMIN})
def webhook_delete(request, actor, endpoint_id):
    endpoint = _endpoint_or_404(actor, endpoint_id)
    webhook_services.webhook_endpoint_delete(actor=actor, endpoint=endpoint)
    messages.success(request, f"The endpoint {endpoint.url} was deleted; nothing more is sent to it.")
    return redirect("webhooks")


def _delivery_or_404(actor: Actor, delivery_id: str) -> WebhookDelivery:
    return owned_or_404(selectors.webhook_delivery_list_for_tenant(actor.tenant), actor, delivery_id)


@tenant_page({"GET": Scope.READ})
def webhook_delivery(request, actor, delivery_id):
    delivery = _delivery_or_404(actor, delivery_id)
    context = {
        "delivery": delivery,
        "endpoint": delivery.endpoint,
        "payload": json.dumps(delivery.payload, indent=2, ensure_ascii=False),
        # Newest first, each time parsed so the page can format it.
        "attempts": [{**entry, "at": datetime.fromisoformat(entry["at"])} for entry in reversed(delivery.attempt_log)],
        "may_manage": Scope.ADMIN in actor.scopes,
    }
    return render(request, "tenants/webhook_delivery.html", context)


@tenant_page({"POST": Scope.ADMIN})
def webhook_redeliver(request, actor, delivery_id):
    delivery = _delivery_or_404(actor, delivery_id)
    try:
        webhook_services.webhook_delivery_redeliver(actor=actor, delivery=delivery)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Redelivering event {delivery.event_id} now, with the same event id.")
    return redirect("webhook-delivery", delivery_id=delivery.public_id)
