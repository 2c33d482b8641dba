"""Forms of the tenancy console pages.

Forms check the shape of input; the rules (unique email, password strength,
who may grant which role …) live in the services, whose `ServiceError`s are
put back on the form field they name with `add_service_error`.
"""

from datetime import UTC, datetime, time, timedelta
from functools import cache

import pycountry
from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.utils import timezone

from tenants.errors import ServiceError
from tenants.models import Tenant, User
from tenants.roles import Role, Scope


@cache
def country_choices() -> list[tuple[str, str]]:
    countries = sorted(pycountry.countries, key=lambda country: country.name)
    return [(country.alpha_2, f"{country.name} ({country.alpha_2})") for country in countries]


def country_choices_with_blank() -> list[tuple[str, str]]:
    # No country is preselected: a wrong default would end up on invoices unnoticed.
    return [("", "Choose a country…"), *country_choices()]


@cache
def currency_choices() -> list[tuple[str, str]]:
    currencies = sorted(pycountry.currencies, key=lambda currency: currency.alpha_3)
    return [(currency.alpha_3, f"{currency.alpha_3} — {currency.name}") for currency in currencies]


def add_service_error(form: forms.Form, error: ServiceError, field_names: dict[str, str] | None = None) -> None:
    """Show a service's refusal on the form field it names, else above the form.

    `field_names` maps the service's argument names to the form's, where they differ.
    """
    field = (field_names or {}).get(error.field, error.field)
    form.add_error(field if field in form.fields else None, error.message)


class BillingFields(forms.Form):
    """Where a tenant is billed: a country and a currency, both from the ISO lists."""

    billing_country = forms.ChoiceField(label="Billing country", choices=country_choices_with_blank)
    currency = forms.ChoiceField(label="Currency", choices=currency_choices, initial="USD")


class PasswordPairForm(forms.Form):
    """A new password typed twice. Its strength is the service's to judge."""

    password1 = forms.CharField(label="Password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                                help_text="At least 10 characters; not a common or all-numeric password.")
    password2 = forms.CharField(label="Password again", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        return cleaned


# --- Accounts -----------------------------------------------------------------------------


class EmailAuthenticationForm(AuthenticationForm):
    """Django's login form; its `username` field holds the email (USERNAME_FIELD)."""

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = "Email"
        self.fields["username"].widget = forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})

    def clean_username(self):
        # Emails are stored lower-cased (UserManager.create_user); match how people type them.
        return self.cleaned_data["username"].strip().lower()


class EmailPasswordResetForm(PasswordResetForm):
    """Django's reset form, which also reaches users who never set a password.

    `tenant_create` (the create_tenant command, an operator in the admin) makes
    owners with an unusable password who are told to set one through a reset;
    Django's form would silently skip them.
    """

    def get_users(self, email):
        users = User.objects.filter(email__iexact=email, is_active=True)
        return (user for user in users if user.email.casefold() == email.casefold())


class SignupForm(BillingFields, PasswordPairForm):
    email = forms.EmailField(label="Work email", widget=forms.EmailInput(
        attrs={"autocomplete": "email", "placeholder": "you@company.com"}))
    full_name = forms.CharField(label="Full name", max_length=150,
                                widget=forms.TextInput(attrs={"autocomplete": "name"}))
    organisation_name = forms.CharField(label="Organisation name", max_length=120)

    field_order = ["email", "full_name", "password1", "password2", "organisation_name", "billing_country",
                   "currency"]
    # Service argument names → these fields, for errors the service reports.
    service_fields = {"password": "password1", "name": "organisation_name"}


class InvitationSignupForm(PasswordPairForm):
    """A new account for the invited email: no organisation of its own."""

    full_name = forms.CharField(label="Full name", max_length=150,
                                widget=forms.TextInput(attrs={"autocomplete": "name"}))

    field_order = ["full_name", "password1", "password2"]
    service_fields = {"password": "password1"}


# --- Tenants ------------------------------------------------------------------------------


class OrganisationCreateForm(BillingFields):
    name = forms.CharField(label="Organisation name", max_length=120)

    field_order = ["name", "billing_country", "currency"]


class TenantSettingsForm(BillingFields):
    name = forms.CharField(label="Organisation name", max_length=120)

    field_order = ["name", "billing_country", "currency"]

    @classmethod
    def for_tenant(cls, tenant: Tenant, data=None) -> "TenantSettingsForm":
        initial = {"name": tenant.name, "billing_country": tenant.billing_country, "currency": tenant.currency}
        return cls(data, initial=initial)


class SwitchTenantForm(forms.Form):
    tenant = forms.UUIDField()


# --- Team ---------------------------------------------------------------------------------


def role_choices(roles: list[str]) -> list[tuple[str, str]]:
    return [(role, Role(role).label) for role in roles]


class InvitationCreateForm(forms.Form):
    email = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"placeholder": "colleague@example.com"}))
    role = forms.ChoiceField(label="Role", initial=Role.DEVELOPER)

    def __init__(self, *args, assignable_roles: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(assignable_roles)


class MemberRoleForm(forms.Form):
    # Any known role: whether this actor may grant it is the service's rule.
    role = forms.ChoiceField(choices=Role.choices)


# --- API keys -----------------------------------------------------------------------------


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. CI pipeline"}))
    scopes = forms.MultipleChoiceField(label="Scopes", widget=forms.CheckboxSelectMultiple, initial=[Scope.READ],
                                       error_messages={"required": "Choose at least one scope."})
    expires_on = forms.DateField(
        label="Expires", required=False, widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The key works through the end of this day (UTC). Leave empty for a key that never expires.",
    )

    service_fields = {"expires_at": "expires_on"}

    def __init__(self, *args, grantable_scopes: frozenset[str], **kwargs):
        super().__init__(*args, **kwargs)
        # Offer only what this member may grant; the service refuses anything beyond.
        self.fields["scopes"].choices = [(scope.value, f"{scope.value} — {scope.label}") for scope in Scope
                                         if scope.value in grantable_scopes]

    def clean_expires_on(self):
        expires_on = self.cleaned_data["expires_on"]
        if expires_on is not None and expires_on < timezone.now().date():
            raise forms.ValidationError("Choose today or a later date.")
        return expires_on

    @property
    def expires_at(self) -> datetime | None:
        """The end of the chosen day in UTC: a key set to expire on the 31st works all of the 31st."""
        expires_on = self.cleaned_data.get("expires_on")
        if expires_on is None:
            return None
        return datetime.combine(expires_on + timedelta(days=1), time.min, tzinfo=UTC)


# --- Audit log ----------------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(required=False, label="Action")

    def __init__(self, *args, actions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "All actions"), *((action, action) for action in actions)]


# --- Webhooks -----------------------------------------------------------------------------


def event_type_choices() -> list[tuple[str, str]]:
    from tenants.webhooks import ALL_EVENTS, EVENT_TYPES

    return [(ALL_EVENTS, "All events — including types added later"),
            *((name, f"{name} — {description}") for name, description in sorted(EVENT_TYPES.items()))]


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(label="URL", max_length=2048, widget=forms.URLInput(
        attrs={"placeholder": "https://example.com/switchyard/webhooks", "autocomplete": "off"}),
        help_text="Switchyard POSTs JSON here; any 2xx answer counts as delivered.")
    description = forms.CharField(label="Description", max_length=200, required=False,
                                  widget=forms.TextInput(attrs={"placeholder": "e.g. Deploy notifications to Slack"}))
    event_types = forms.MultipleChoiceField(label="Events", widget=forms.CheckboxSelectMultiple,
                                            choices=event_type_choices,
                                            error_messages={"required": "Choose at least one event, or all events."})


class WebhookEndpointEditForm(WebhookEndpointForm):
    is_active = forms.BooleanField(
        label="Active", required=False,
        help_text="An inactive endpoint is sent nothing; its pending deliveries are given up.")

    @classmethod
    def for_endpoint(cls, endpoint, data=None) -> "WebhookEndpointEditForm":
        initial = {"url": endpoint.url, "description": endpoint.description, "event_types": endpoint.event_types,
                   "is_active": endpoint.is_active}
        return cls(data, initial=initial)


class WebhookRotateSecretForm(forms.Form):
    previous_secret_valid_hours = forms.TypedChoiceField(
        label="The old secret stops signing", coerce=int, initial=0,
        choices=[(0, "Now"), (1, "In 1 hour"), (24, "In 24 hours"), (72, "In 72 hours")],
        help_text="Until then every request carries a signature with each secret, so your receiver can switch "
                  "to the new one without missing a request.")
