"""The tenant's billing profile: who its invoices are addressed to and what decides their tax
(docs/billing.md, "Billing profile and tax").

The profile is `Tenant.billing_country` plus the tenant's `BillingProfile` row (legal name,
address, VAT id, business or consumer, invoice email). `billing_profile_update` checks the
fields against billing.tax's rules, writes both rows in one transaction, audits the change and
recomputes the current month's draft invoice, so the draft's tax follows at once. Finalized
invoices keep the `bill_to` and tax they were issued with.

`billing_profile_for` reads it, with the defaults the invoice uses when no row exists, and
the tax that would apply now.
"""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from stdnum.eu import vat as eu_vat

from billing.invoicing import invoice_refresh_draft, month_start
from billing.models import BillingProfile, Invoice
from billing.tax import Customer, TaxDecision, TaxError, tax_for, validate_country, vat_id_error, vat_rates
from tenants.context import Actor
from tenants.errors import ServiceError
from tenants.models import Tenant
from tenants.scoping import scoped
from tenants.services import audit_record

LEGAL_NAME_MAX_LENGTH = BillingProfile._meta.get_field("legal_name").max_length
# The address is printed in the invoice header (HTML and PDF): a postal address, not a letter.
ADDRESS_MAX_LENGTH = 500
VAT_ID_MAX_LENGTH = BillingProfile._meta.get_field("vat_id").max_length
EMAIL_MAX_LENGTH = BillingProfile._meta.get_field("invoice_email").max_length

PROFILE_FIELDS = ("legal_name", "address", "country", "vat_id", "is_business", "invoice_email")


@dataclass(frozen=True)
class BillingDetails:
    """A tenant's billing profile as the invoice reads it, and the tax it leads to now.

    `updated_at` is None while the tenant has no profile row (the defaults apply). `tax` is None
    only when the tax cannot be decided (the issuer's country is misconfigured): `tax_problem`
    says why.
    """

    legal_name: str
    address: str
    country: str
    vat_id: str
    is_business: bool
    invoice_email: str
    updated_at: datetime | None
    tax: TaxDecision | None
    tax_problem: str = ""

    @property
    def tax_rate_text(self) -> str | None:
        """The rate as exact text without trailing zeros: "19", "25.5", "0"."""
        if self.tax is None:
            return None
        text = format(self.tax.rate_percent, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text


# --- Reading ------------------------------------------------------------------------------------


def tax_preview(*, country: str, is_business: bool, vat_id: str) -> TaxDecision:
    """The VAT decision an invoice to this customer would carry now (billing.tax). Raises TaxError."""
    return tax_for(seller_country=settings.SWITCHYARD_INVOICE_ISSUER_COUNTRY,
                   customer=Customer(country=country, is_business=is_business, vat_id=vat_id or None))


def billing_profile_for(tenant: Tenant) -> BillingDetails:
    """The tenant's billing profile; without a row, the defaults the invoice uses (its name is the
    tenant's, a business, no VAT id)."""
    profile = scoped(BillingProfile, tenant).first()
    fields = {name: getattr(profile, name) if profile else BillingProfile._meta.get_field(name).get_default()
              for name in ("legal_name", "address", "vat_id", "is_business", "invoice_email")}
    try:
        tax, problem = tax_preview(country=tenant.billing_country, is_business=fields["is_business"],
                                   vat_id=fields["vat_id"]), ""
    except TaxError as error:
        tax, problem = None, str(error)
    return BillingDetails(country=tenant.billing_country, updated_at=profile.updated_at if profile else None,
                          tax=tax, tax_problem=problem, **fields)


# --- Checking -----------------------------------------------------------------------------------


def _checked_country(value) -> str:
    country = value.strip().upper() if isinstance(value, str) else value
    try:
        return validate_country(country, "country")
    except TaxError as error:
        raise ServiceError(str(error), field="country") from None


def _checked_text(name: str, value, max_length: int) -> str:
    if not isinstance(value, str):
        raise ServiceError(f"{name} must be text.", field=name)
    text = value.strip()
    if len(text) > max_length:
        raise ServiceError(f"{name} may be at most {max_length} characters long (it has {len(text)}).", field=name)
    return text


def _checked_email(value) -> str:
    email = _checked_text("invoice_email", value, EMAIL_MAX_LENGTH)
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ServiceError(f"{email!r} is not a valid email address (such as billing@example.com); leave it "
                               f"empty to send invoices to the owners.", field="invoice_email") from None
    return email


def _checked_vat_id(value, country: str) -> str:
    """The VAT id in its compact form (DE 136 695 976 → DE136695976), checked with python-stdnum when
    `country` is an EU member state. billing.tax grants reverse charge only for an id of the
    customer's own member state, so an EU customer's id must carry that country's prefix. Outside
    the EU the id is not used for tax and is kept as given."""
    vat_id = _checked_text("vat_id", value, VAT_ID_MAX_LENGTH)
    if not vat_id or country not in vat_rates().eu_member_states:
        return vat_id
    compact = eu_vat.compact(vat_id)
    if country == "GR" and compact.startswith("GR"):
        compact = "EL" + compact[2:]  # Greek VAT ids are written EL…; stdnum accepts either
    problem = vat_id_error(compact, country)
    if problem is not None:
        raise ServiceError(f"{problem[0].upper()}{problem[1:]} Change the VAT id, or the country, or leave the VAT "
                           f"id empty.", field="vat_id")
    return compact


def billing_profile_fields_checked(fields: dict, current: BillingDetails) -> dict:
    """The given fields, normalised and checked together with the current ones (a new country
    must suit the VAT id kept), or ServiceError naming the first field at fault."""
    unknown = sorted(set(fields) - set(PROFILE_FIELDS))
    if unknown:
        raise ServiceError(f"{unknown[0]} is not part of the billing profile; it has {', '.join(PROFILE_FIELDS)}.",
                           field=unknown[0])
    checked = {}
    if "country" in fields:
        checked["country"] = _checked_country(fields["country"])
    country = checked.get("country", current.country)
    if "vat_id" in fields or "country" in fields:
        checked["vat_id"] = _checked_vat_id(fields.get("vat_id", current.vat_id), country)
    if "is_business" in fields:
        if not isinstance(fields["is_business"], bool):
            raise ServiceError("is_business must be true (a business) or false (a consumer).", field="is_business")
        checked["is_business"] = fields["is_business"]
    if "invoice_email" in fields:
        checked["invoice_email"] = _checked_email(fields["invoice_email"])
    if "legal_name" in fields:
        checked["legal_name"] = _checked_text("legal_name", fields["legal_name"], LEGAL_NAME_MAX_LENGTH)
    if "address" in fields:
        checked["address"] = _checked_text("address", fields["address"], ADDRESS_MAX_LENGTH)
    return checked


# --- Changing -----------------------------------------------------------------------------------


@transaction.atomic
def billing_profile_update(*, actor: Actor, **fields) -> BillingDetails:
    """Change the actor's tenant's billing profile: any of legal_name, address, country (ISO 3166-1
    alpha-2, stored as Tenant.billing_country), vat_id, is_business, invoice_email.

    Everything is checked before anything is written (a refusal changes nothing). The tenant row
    and the profile are written together, the change is audited field by field, and the current
    month's draft invoice — if there is one — is recomputed, so its bill-to and tax follow.
    A month without a draft gets one from the hourly refresh once it has usage: none is made
    here, as an empty draft would be finalized into an empty invoice. Finalized invoices never
    change."""
    # The tenant row, locked: concurrent updates take turns, and the first one's profile row is
    # seen by the next instead of a second insert failing.
    tenant = Tenant.objects.select_for_update().get(pk=actor.tenant.pk)
    current = billing_profile_for(tenant)
    checked = billing_profile_fields_checked(fields, current)
    changes = {name: [getattr(current, name), value] for name, value in checked.items()
               if getattr(current, name) != value}
    if not changes:
        return current
    now = timezone.now()
    if "country" in changes:
        tenant.billing_country = checked["country"]
        tenant.save(update_fields=["billing_country"])
    profile, _created = BillingProfile.objects.get_or_create(tenant=tenant)
    for name, value in checked.items():
        if name != "country":
            setattr(profile, name, value)
    profile.updated_at = now
    profile.save()
    audit_record(actor=actor, action="billing_profile.update", obj=profile, changes=changes)
    if Invoice.objects.filter(tenant=tenant, period=month_start(now), status=Invoice.Status.DRAFT).exists():
        invoice_refresh_draft(tenant=tenant, now=now)
    return billing_profile_for(tenant)
