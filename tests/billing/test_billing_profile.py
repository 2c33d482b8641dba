"""The billing profile: the service's checks (country, VAT id for that country, email, lengths) and
that a refusal changes nothing; the API (GET/PATCH /api/v1/billing/profile) with its scope, the
suspended tenant and tenancy; the current month's draft follows a change (its tax too) while a
finalized invoice keeps what it was issued with; the console page.

The test tenants are in DE and bill in EUR; the issuer is in IE (the default setting), so a German
business with a valid German VAT id is invoiced with the reverse charge (0 %), and without one with
German VAT (19 %, the destination rate).
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.invoicing import invoice_finalize, invoice_refresh_draft, month_start
from billing.models import BillingProfile, Invoice
from billing.profiles import billing_profile_for, billing_profile_update
from billing.tax import OUTSIDE_EU_NOTE, REVERSE_CHARGE_NOTE
from tenants.context import system_actor
from tenants.errors import ServiceError
from tenants.models import AuditEvent, Tenant
from tenants.roles import Role
from tests.billing.invoicing_helpers import books, deployment, rollup
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/billing/profile"
PAGE = "/billing/profile/"
DE_VAT_ID = "DE136695976"  # valid check digits (python-stdnum)
FR_VAT_ID = "FR40303265045"


def update(world, **fields):
    return billing_profile_update(actor=system_actor(world.tenant), **fields)


def state(world) -> tuple:
    """Everything a profile change may write: the tenant's country, its profile row, its audit log."""
    profile = BillingProfile.objects.filter(tenant=world.tenant).values(
        "legal_name", "address", "vat_id", "is_business", "invoice_email", "updated_at").first()
    return (Tenant.objects.get(pk=world.tenant.pk).billing_country, profile,
            AuditEvent.objects.filter(tenant=world.tenant).count())


# --- the service --------------------------------------------------------------------------------------


def test_without_a_profile_row_the_defaults_apply(tenant_a):
    details = billing_profile_for(tenant_a.tenant)
    assert (details.legal_name, details.address, details.country, details.vat_id, details.is_business,
            details.invoice_email, details.updated_at) == ("", "", "DE", "", True, "", None)
    # A German business without a VAT id: German VAT, the destination rate.
    assert (details.tax_rate_text, details.tax.scheme, details.tax.reverse_charge) == ("19", "eu_destination", False)


def test_an_update_normalises_writes_both_rows_and_audits_the_changes(tenant_a):
    details = update(tenant_a, legal_name="  Acme GmbH ", address="Hauptstraße 1\n10115 Berlin",
                     vat_id="de 136 695 976", invoice_email="ap@acme.example", country="de")
    assert (details.legal_name, details.vat_id, details.country, details.invoice_email) == (
        "Acme GmbH", DE_VAT_ID, "DE", "ap@acme.example")
    assert (details.tax_rate_text, details.tax.reverse_charge, details.tax.invoice_note) == ("0", True,
                                                                                            REVERSE_CHARGE_NOTE)
    assert BillingProfile.objects.get(tenant=tenant_a.tenant).vat_id == DE_VAT_ID
    audit = AuditEvent.objects.get(tenant=tenant_a.tenant, action="billing_profile.update")
    # The country was already DE: only what changed is recorded.
    assert audit.changes == {"legal_name": ["", "Acme GmbH"], "address": ["", "Hauptstraße 1\n10115 Berlin"],
                             "vat_id": ["", DE_VAT_ID], "invoice_email": ["", "ap@acme.example"]}

    update(tenant_a, country="FR", vat_id=FR_VAT_ID)
    assert Tenant.objects.get(pk=tenant_a.tenant.pk).billing_country == "FR"
    assert AuditEvent.objects.filter(action="billing_profile.update").latest("id").changes == {
        "country": ["DE", "FR"], "vat_id": [DE_VAT_ID, FR_VAT_ID]}


def test_an_unchanged_profile_writes_nothing(tenant_a):
    update(tenant_a, legal_name="Acme GmbH")
    before = state(tenant_a)
    update(tenant_a, legal_name="Acme GmbH", country="DE")
    assert state(tenant_a) == before


def test_greek_vat_ids_are_stored_with_their_el_prefix(tenant_a):
    assert update(tenant_a, country="GR", vat_id="GR 094259216").vat_id == "EL094259216"


def test_outside_the_eu_the_vat_id_is_kept_as_given_and_not_used_for_tax(tenant_a):
    details = update(tenant_a, country="US", vat_id="EIN 12-3456789", is_business=False)
    assert (details.vat_id, details.tax_rate_text, details.tax.invoice_note) == ("EIN 12-3456789", "0",
                                                                                OUTSIDE_EU_NOTE)


@pytest.mark.parametrize("fields, field, message", [
    ({"country": "XX"}, "country", "not an ISO 3166-1 alpha-2 country code"),
    ({"country": "Germany"}, "country", "not an ISO 3166-1 alpha-2 country code"),
    ({"country": ""}, "country", "not an ISO 3166-1 alpha-2 country code"),
    ({"vat_id": "DE123"}, "vat_id", "is not a valid DE VAT id"),
    ({"vat_id": "DE136695977"}, "vat_id", "check digits"),
    # billing.tax grants the reverse charge only for a VAT id of the customer's own member state.
    ({"vat_id": FR_VAT_ID}, "vat_id", "A VAT id of DE starts with DE"),
    # A new country must suit the VAT id kept.
    ({"country": "FR"}, "vat_id", "A VAT id of FR starts with FR"),
    ({"invoice_email": "accounts-payable"}, "invoice_email", "not a valid email address"),
    ({"legal_name": "A" * 201}, "legal_name", "at most 200 characters"),
    ({"address": "x" * 501}, "address", "at most 500 characters"),
    ({"is_business": "yes"}, "is_business", "true (a business) or false"),
    ({"tenant": 2}, "tenant", "not part of the billing profile"),
    # One bad field refuses the whole change: the good one is not written either.
    ({"legal_name": "Renamed", "invoice_email": "@nope"}, "invoice_email", "not a valid email address"),
])
def test_bad_fields_are_refused_and_change_nothing(tenant_a, fields, field, message):
    update(tenant_a, legal_name="Acme GmbH", vat_id=DE_VAT_ID)
    before = state(tenant_a)
    with pytest.raises(ServiceError) as refused:
        update(tenant_a, **fields)
    assert refused.value.field == field and message in refused.value.message, refused.value.message
    assert state(tenant_a) == before


# --- the draft follows, the finalized invoice does not ------------------------------------------------


@pytest.fixture
def draft(tenant_a):
    """This month's draft of tenant A (DE, business without a VAT id): 2,000 output tokens = 2.00 EUR."""
    books()
    this_month = month_start(timezone.now())
    rollup(deployment(tenant_a.tenant, "alpha"), "output_tokens",
           datetime(this_month.year, this_month.month, 1, tzinfo=UTC).isoformat()[:16], 2_000)
    made = invoice_refresh_draft(tenant=tenant_a.tenant)
    assert (made.subtotal, made.tax_rate, made.tax) == (Decimal("2.00"), 19, Decimal("0.38"))
    return made


def test_a_change_recomputes_the_current_draft_and_its_tax(tenant_a, draft):
    # Through the API, as a tenant would: the response and the draft agree.
    response = tenant_a.api.patch(URL, {"vat_id": DE_VAT_ID, "legal_name": "Acme GmbH"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["tax"]["rate_percent"] == "0"
    draft.refresh_from_db()
    assert (draft.status, draft.tax_rate, draft.tax, draft.total, draft.tax_note) == (
        Invoice.Status.DRAFT, 0, 0, Decimal("2.00"), REVERSE_CHARGE_NOTE)
    assert (draft.bill_to["name"], draft.bill_to["vat_id"]) == ("Acme GmbH", DE_VAT_ID)

    # A French consumer: French VAT (20 %) on the same draft.
    tenant_a.api.patch(URL, {"country": "FR", "vat_id": "", "is_business": False}, format="json")
    draft.refresh_from_db()
    assert (draft.tax_rate, draft.tax, draft.tax_note, draft.bill_to["country"]) == (20, Decimal("0.40"), "", "FR")


def test_a_finalized_invoice_keeps_what_it_was_issued_with(tenant_a, draft):
    last_month = month_start(month_start(timezone.now()) - timedelta(days=1))
    rollup(deployment(tenant_a.tenant, "beta"), "output_tokens",
           datetime(last_month.year, last_month.month, 2, 10, tzinfo=UTC).isoformat()[:16], 1_000)
    issued = invoice_finalize(invoice=invoice_refresh_draft(tenant=tenant_a.tenant, period=last_month))
    frozen = Invoice.objects.filter(pk=issued.pk).values().get()
    assert frozen["tax_rate"] == 19 and frozen["bill_to"]["vat_id"] == ""

    update(tenant_a, legal_name="Acme GmbH", vat_id=DE_VAT_ID, invoice_email="ap@acme.example")

    assert Invoice.objects.filter(pk=issued.pk).values().get() == frozen
    body = tenant_a.api.get(f"/api/v1/invoices/{issued.public_id}").json()
    assert (body["tax_rate"], body["bill_to"].get("vat_id")) == ("19", "")
    draft.refresh_from_db()
    assert draft.tax_rate == 0 and draft.bill_to["vat_id"] == DE_VAT_ID


def test_no_draft_is_made_for_a_month_without_one(tenant_a):
    update(tenant_a, vat_id=DE_VAT_ID)
    assert not Invoice.objects.filter(tenant=tenant_a.tenant).exists()


# --- API ------------------------------------------------------------------------------------------------


def test_get_shows_the_profile_and_the_tax_that_applies_now(tenant_a):
    body = tenant_a.api.get(URL).json()
    assert body == {"legal_name": "", "address": "", "country": "DE", "vat_id": "", "is_business": True,
                    "invoice_email": "", "tax": {"rate_percent": "19", "scheme": "eu_destination",
                                                 "reverse_charge": False, "note": "", "reason": body["tax"]["reason"]},
                    "tax_problem": "", "updated_at": None}
    assert "no VAT id given" in body["tax"]["reason"]


def test_patch_changes_the_fields_given_and_answers_the_profile(tenant_a):
    response = tenant_a.api.patch(URL, {"country": "fr", "vat_id": "FR 40 303 265 045",
                                        "invoice_email": "ap@acme.example"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["country"], body["vat_id"], body["invoice_email"], body["is_business"]) == (
        "FR", FR_VAT_ID, "ap@acme.example", True)
    assert body["tax"] == {"rate_percent": "0", "scheme": "reverse_charge", "reverse_charge": True,
                           "note": REVERSE_CHARGE_NOTE,
                           "reason": f"business in FR with VAT id {FR_VAT_ID}: reverse charge"}
    assert body["updated_at"] is not None
    assert tenant_a.api.get(URL).json() == body
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="billing_profile.update")
    assert event.actor.startswith("API key") and event.changes["country"] == ["DE", "FR"]


@pytest.mark.parametrize("body, field, message", [
    ({"country": "ZZ"}, "country", "not an ISO 3166-1 alpha-2 country code"),
    ({"vat_id": "DE123456789"}, "vat_id", "is not a valid DE VAT id"),
    ({"vat_id": FR_VAT_ID}, "vat_id", "A VAT id of DE starts with DE"),
    ({"invoice_email": "not an email"}, "invoice_email", "not a valid email address"),
    ({"legal_name": "A" * 201}, "legal_name", "at most 200 characters"),
    ({"is_business": "perhaps"}, "is_business", "valid boolean"),
    ({"colour": "red"}, "colour", "Unknown field"),
    ({"legal_name": "Renamed", "vat_id": "DE1"}, "vat_id", "is not a valid DE VAT id"),
])
def test_bad_input_is_a_400_problem_naming_the_field_and_changes_nothing(tenant_a, body, field, message):
    before = state(tenant_a)
    response = tenant_a.api.patch(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert any(error["field"] == field and message in error["message"] for error in errors), errors
    assert state(tenant_a) == before


def test_the_profile_needs_the_billing_scope(tenant_a):
    without_billing = tenant_a.client_with_scopes("read", "deploy", "admin", "invoke")
    assert without_billing.get(URL).status_code == 403
    response = without_billing.patch(URL, {"legal_name": "Hijacked"}, format="json")
    assert response.status_code == 403 and "'billing' scope" in response.json()["detail"]
    assert not BillingProfile.objects.exists()
    billing_only = tenant_a.client_with_scopes("billing")
    assert billing_only.get(URL).status_code == 200
    assert billing_only.patch(URL, {"legal_name": "Acme GmbH"}, format="json").status_code == 200


def test_a_suspended_tenant_can_read_but_not_change_its_profile(tenant_a):
    Tenant.objects.filter(pk=tenant_a.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert tenant_a.api.get(URL).status_code == 200
    response = tenant_a.api.patch(URL, {"legal_name": "Renamed"}, format="json")
    assert response.status_code == 403 and "suspended" in response.json()["detail"]
    assert not BillingProfile.objects.exists()


def test_each_tenant_sees_and_changes_only_its_own_profile(tenant_a, tenant_b):
    update(tenant_b, legal_name="Globex Corporation", vat_id=DE_VAT_ID, invoice_email="ap@globex.example")
    theirs = state(tenant_b)

    mine = tenant_a.api.get(URL).json()
    assert (mine["legal_name"], mine["vat_id"], mine["invoice_email"]) == ("", "", "")
    assert tenant_a.api.patch(URL, {"legal_name": "Acme GmbH", "country": "AT"}, format="json").status_code == 200

    assert state(tenant_b) == theirs
    assert tenant_b.api.get(URL).json()["legal_name"] == "Globex Corporation"
    assert BillingProfile.objects.get(tenant=tenant_a.tenant).legal_name == "Acme GmbH"


# --- console --------------------------------------------------------------------------------------------


def _member_client(client, world, role):
    user = UserFactory()
    MembershipFactory(tenant=world.tenant, user=user, role=role)
    client.force_login(user)
    return client


def _form(**changes) -> dict:
    return {"legal_name": "", "address": "", "country": "DE", "is_business": "True", "vat_id": "",
            "invoice_email": "", **changes}


def test_the_console_form_saves_the_profile(client, tenant_a):
    _member_client(client, tenant_a, Role.BILLING)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert 'data-testid="billing-profile-form"' in page.content.decode()

    response = client.post(PAGE, _form(legal_name="Acme GmbH", vat_id="DE 136 695 976"), follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    text = response.content.decode()
    assert "Billing profile saved" in text and "reverse charge" in text
    details = billing_profile_for(tenant_a.tenant)
    assert (details.legal_name, details.vat_id, details.is_business) == ("Acme GmbH", DE_VAT_ID, True)
    # Only the changed fields reach the service, and so the audit log.
    assert set(AuditEvent.objects.get(action="billing_profile.update").changes) == {"legal_name", "vat_id"}


def test_the_console_form_shows_the_apis_messages_and_changes_nothing(client, tenant_a):
    _member_client(client, tenant_a, Role.OWNER)
    api_message = tenant_a.api.patch(URL, {"vat_id": FR_VAT_ID}, format="json").json()["errors"][0]["message"]

    response = client.post(PAGE, _form(legal_name="Acme GmbH", vat_id=FR_VAT_ID))

    assert response.status_code == 200
    assert 'class="field has-error' in response.content.decode()
    assert response.context["form"].errors == {"vat_id": [api_message]}
    assert not BillingProfile.objects.exists()


def test_the_console_page_is_for_owners_admins_and_billing_members(client, tenant_a):
    for role in (Role.VIEWER, Role.DEVELOPER):
        _member_client(client, tenant_a, role)
        assert client.get(PAGE).status_code == 403
        assert client.post(PAGE, _form(legal_name="Hijacked")).status_code == 403
    assert not BillingProfile.objects.exists()
    _member_client(client, tenant_a, Role.ADMIN)
    assert client.get(PAGE).status_code == 200


def test_the_console_changes_only_the_members_own_tenant(client, tenant_a, tenant_b):
    update(tenant_a, legal_name="Acme GmbH")
    acme = state(tenant_a)
    _member_client(client, tenant_b, Role.BILLING)
    assert "Acme GmbH" not in client.get(PAGE).content.decode()
    assert client.post(PAGE, _form(legal_name="Globex Corporation")).status_code == 302
    assert state(tenant_a) == acme
    assert billing_profile_for(tenant_b.tenant).legal_name == "Globex Corporation"


def test_the_billing_pages_link_to_the_profile(client, tenant_a):
    _member_client(client, tenant_a, Role.BILLING)
    for page in ("/billing/invoices/", "/billing/credits/"):
        assert f'href="{PAGE}"' in client.get(page).content.decode()
