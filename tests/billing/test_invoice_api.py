"""The money API (prices, credits, invoices, the drill-down, PDF and CSV), the console's billing
pages, and the back office's guards around finalized invoices."""

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.invoicing import credit_grant_create, payment_record, period_close
from billing.models import Invoice, InvoiceLine
from billing.services import usage_ingest
from tenants.context import system_actor
from tenants.roles import Role, Scope
from tests.billing.invoicing_helpers import SCRAPE, at, books, deployment, rollup
from tests.factories import MembershipFactory, UserFactory

CLOSE_JAN = at("2026-02-01T00:05")
pytestmark = pytest.mark.django_db


@pytest.fixture
def invoiced(tenant_a):
    """Tenant A (DE, EUR, business without a VAT id) with a finalized January invoice: two deployments."""
    books()
    customer = tenant_a.tenant
    first, second = deployment(customer, "alpha"), deployment(customer, "beta")
    for hour, quantity in (("2026-01-05T10:00", 600_000), ("2026-01-05T11:00", 400_000)):
        rollup(first, "input_tokens", hour, quantity)
    rollup(second, "output_tokens", "2026-01-06T10:00", 2_000)
    credit_grant_create(actor=system_actor(customer), kind="promotional", amount=Decimal("0.50"),
                        effective_at=at("2025-12-01T00:00"), description="welcome")
    period_close(now=CLOSE_JAN)
    return Invoice.objects.get(tenant=customer)


def test_invoice_detail_shows_lines_credits_tax_and_totals(tenant_a, invoiced):
    response = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}")
    assert response.status_code == 200, response.content
    body = response.json()
    # 1,000,000 input tokens × 0.000001 = 1.00; 2,000 output tokens × 0.001 = 2.00; subtotal 3.00 EUR;
    # credit 0.50; German VAT 19 % (no VAT id: destination rate) of 2.50 = 0.475 → 0.48; total 2.98.
    assert [(line["description"], line["quantity"], line["amount"]) for line in body["lines"]] == [
        ("Input tokens · alpha", "1000000", "1.00"), ("Output tokens · beta", "2000", "2.00")]
    assert (body["subtotal"], body["credits_applied"], body["tax_rate"], body["tax"], body["total"]) == (
        "3.00", "0.50", "19", "0.48", "2.98")
    assert body["number"] == "SY-2026-000001" and body["status"] == "finalized" and body["amount_due"] == "2.98"
    assert body["credits"] == [{"grant": body["credits"][0]["grant"], "kind": "promotional",
                                "description": "welcome", "amount": "0.50"}]
    assert body["pdf"].endswith(f"/api/v1/invoices/{invoiced.public_id}/pdf")


def test_invoice_list_filters_by_status(tenant_a, invoiced):
    assert [item["number"] for item in tenant_a.api.get("/api/v1/invoices").json()["results"]] == ["SY-2026-000001"]
    assert tenant_a.api.get("/api/v1/invoices?status=paid").json()["results"] == []
    assert tenant_a.api.get("/api/v1/invoices?status=bogus").status_code == 400


def test_each_line_drills_down_to_its_hourly_rollups_and_their_events(tenant_a, invoiced):
    alpha = deployment(tenant_a.tenant, "gamma")  # another deployment's usage is not on alpha's line
    usage_ingest([{"specversion": "1.0", "id": "e1", "source": SCRAPE, "type": "inference.request",
                   "subject": str(alpha.public_id), "time": "2026-02-10T10:00:00Z",
                   "data": {"input_tokens": 5, "output_tokens": 1}}], now=at("2026-02-10T10:01"))
    line = invoiced.lines.get(deployment__name="alpha")
    body = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}/rollups?line={line.public_id}").json()
    assert [(row["hour"], row["quantity"]) for row in body["results"]] == [
        ("2026-01-05T10:00:00Z", "600000"), ("2026-01-05T11:00:00Z", "400000")]
    assert sum(Decimal(row["quantity"]) for row in body["results"]) == line.quantity  # why this amount
    page = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}/rollups?line={line.public_id}&page_size=1").json()
    assert len(page["results"]) == 1 and page["next"]
    assert tenant_a.api.get(page["next"]).json()["results"][0]["hour"] == "2026-01-05T11:00:00Z"
    events = tenant_a.api.get(body["results"][0]["events"])
    assert events.status_code == 200 and events.json()["results"] == []  # these rollups were made directly


def test_drill_down_reaches_the_raw_events_of_an_hour(tenant_a):
    books()
    serving = deployment(tenant_a.tenant, "delta")
    events = [{"specversion": "1.0", "id": f"e{n}", "source": SCRAPE, "type": "inference.request",
               "subject": str(serving.public_id), "time": f"2026-01-07T10:{n:02d}:00Z",
               "data": {"input_tokens": 100 * n, "output_tokens": 0}} for n in range(1, 4)]
    assert usage_ingest(events, now=at("2026-01-07T11:00")).accepted == 3
    period_close(now=CLOSE_JAN)
    invoice = Invoice.objects.get(tenant=tenant_a.tenant)
    line = invoice.lines.get(meter__slug="input_tokens")
    rollups = tenant_a.api.get(f"/api/v1/invoices/{invoice.public_id}/rollups?line={line.public_id}").json()
    assert [(row["quantity"], row["event_count"]) for row in rollups["results"]] == [("600", 3)]
    listed = tenant_a.api.get(rollups["results"][0]["events"]).json()["results"]
    assert [event["id"] for event in listed] == ["e1", "e2", "e3"]
    assert sum(event["data"]["input_tokens"] for event in listed) == 600


def test_lines_as_csv_and_the_invoice_as_pdf_show_the_same_amounts(tenant_a, invoiced):
    response = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["description"], row["amount"], row["currency"]) for row in rows] == [
        ("Input tokens · alpha", "1.00", "EUR"), ("Output tokens · beta", "2.00", "EUR")]

    pdf = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    for expected in ("SY-2026-000001", "Input tokens · alpha", "1.00", "2.00", "Subtotal", "3.00 EUR",
                     "Tax (19 %)", "0.48 EUR", "2.98 EUR"):
        assert expected in text, f"{expected!r} missing from the PDF:\n{text}"


def test_prices_are_the_default_book_with_the_contract_laid_over(tenant_a):
    books()
    from billing.pricebooks import pricebook_import

    pricebook_import(text=f"""
version: 1
name: Contract of {tenant_a.tenant.slug}
currency: EUR
tenant: {tenant_a.tenant.slug}
discount_percent: 10
prices:
  - {{meter: output_tokens, model: per_unit, unit_price: 0.0008}}
""")
    body = tenant_a.api.get("/api/v1/prices").json()
    assert (body["book"], body["currency"], body["contract"], body["discount_percent"]) == (
        f"Contract of {tenant_a.tenant.slug}", "EUR", True, "10")
    by_meter = {price["meter"]: price for price in body["prices"]}
    assert by_meter["output_tokens"]["unit_price"] == "0.0008"
    assert by_meter["input_tokens"]["model"] == "graduated"  # the default book's
    assert by_meter["input_tokens"]["tiers"][0] == {"up_to": "1000000", "unit_price": "0.000001", "flat_fee": "0"}


def test_credits_show_balances_grants_and_ledger(tenant_a, invoiced):
    body = tenant_a.api.get("/api/v1/credits").json()
    assert body["balances"] == [{"currency": "EUR", "balance": "0.00", "available": "0.00"}]
    # (Newest first; here the close ran "in the past", so order is not what this checks.)
    assert sorted((entry["kind"], entry["amount"], entry["invoice_number"] or "") for entry in body["ledger"]) == [
        ("application", "-0.50", "SY-2026-000001"), ("grant", "0.50", "")]


def test_money_routes_need_the_billing_scope(tenant_a, invoiced):
    reader = tenant_a.client_with_scopes(Scope.READ)
    for url in ("/api/v1/invoices", f"/api/v1/invoices/{invoiced.public_id}", "/api/v1/credits", "/api/v1/prices"):
        assert reader.get(url).status_code == 403, url
    assert tenant_a.client_with_scopes(Scope.BILLING).get("/api/v1/invoices").status_code == 200


def test_no_api_route_changes_an_invoice(tenant_a, invoiced):
    before = (Invoice.objects.filter(pk=invoiced.pk).values().get(), list(InvoiceLine.objects.values()))
    for method in ("post", "put", "patch", "delete"):
        for url in (f"/api/v1/invoices/{invoiced.public_id}", "/api/v1/invoices",
                    f"/api/v1/invoices/{invoiced.public_id}/pdf"):
            response = getattr(tenant_a.api, method)(url, {"total": "0.00", "status": "paid"}, format="json")
            assert response.status_code == 405, (method, url, response.status_code)
    assert (Invoice.objects.filter(pk=invoiced.pk).values().get(), list(InvoiceLine.objects.values())) == before


# --- console ----------------------------------------------------------------------------------------


def test_console_billing_pages_for_owner_and_billing_roles_not_developers(client, tenant_a, invoiced):
    line = invoiced.lines.first()
    pages = ["/billing/invoices/", f"/billing/invoices/{invoiced.public_id}/",
             f"/billing/invoices/{invoiced.public_id}/print/", f"/billing/invoices/{invoiced.public_id}/pdf/",
             f"/billing/invoices/{invoiced.public_id}/lines.csv",
             f"/billing/invoices/{invoiced.public_id}/lines/{line.public_id}/?hour=2026-01-05T10:00:00Z",
             "/billing/credits/", "/billing/prices/"]
    biller = UserFactory()
    MembershipFactory(tenant=tenant_a.tenant, user=biller, role=Role.BILLING)
    client.force_login(biller)
    for page in pages:
        assert client.get(page).status_code == 200, page
    detail = client.get(f"/billing/invoices/{invoiced.public_id}/").content.decode()
    assert "SY-2026-000001" in detail and "2.98 EUR" in detail and f"/lines/{line.public_id}/" in detail
    developer = UserFactory()
    MembershipFactory(tenant=tenant_a.tenant, user=developer, role=Role.DEVELOPER)
    client.force_login(developer)
    assert client.get("/billing/invoices/").status_code == 403


def test_console_pages_of_another_tenants_invoice_are_404(client, tenant_a, tenant_b, invoiced):
    client.force_login(tenant_b.owner)
    for page in (f"/billing/invoices/{invoiced.public_id}/", f"/billing/invoices/{invoiced.public_id}/pdf/",
                 f"/billing/invoices/{invoiced.public_id}/lines.csv"):
        assert client.get(page).status_code == 404, page


# --- back office ------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_admin_shows_a_finalized_invoice_read_only_and_refuses_a_post(staff_client, invoiced):
    url = f"/admin/billing/invoice/{invoiced.pk}/change/"
    page = staff_client.get(url)
    assert page.status_code == 200
    assert b'name="total"' not in page.content and b"Record a payment" in page.content
    response = staff_client.post(url, {"total": "0.00", "status": "paid", "number": "X"})
    assert response.status_code == 403
    invoiced.refresh_from_db()
    assert (invoiced.total, invoiced.status, invoiced.number) == (Decimal("2.98"), "finalized", "SY-2026-000001")


def test_admin_finalize_action_refuses_a_finalized_invoice_and_void_needs_the_service(staff_client, invoiced):
    response = staff_client.post("/admin/billing/invoice/", {"action": "finalize",
                                                             "_selected_action": [invoiced.pk]}, follow=True)
    assert b"a finalized invoice never changes" in response.content
    response = staff_client.post(f"/admin/billing/invoice/{invoiced.pk}/void/", {"reason": "duplicate"})
    assert response.status_code == 302
    invoiced.refresh_from_db()
    assert invoiced.status == "void" and invoiced.total == Decimal("2.98")


def test_admin_records_a_payment_and_issues_a_credit_note(staff_client, invoiced):
    response = staff_client.post(f"/admin/billing/invoice/{invoiced.pk}/credit-note/",
                                 {"description": "goodwill", "amount": "1.00", "reason": "support"})
    assert response.status_code == 302
    response = staff_client.post(f"/admin/billing/invoice/{invoiced.pk}/payment/",
                                 {"amount": "1.79", "received_on": "2026-02-10", "reference": "wire 42"})
    assert response.status_code == 302
    invoiced.refresh_from_db()
    assert invoiced.status == "paid"  # 2.98 − (1.00 + 19 % = 1.19) = 1.79
    too_much = staff_client.post(f"/admin/billing/invoice/{invoiced.pk}/credit-note/",
                                 {"description": "more", "amount": "99.00", "reason": "x"})
    assert too_much.status_code == 200 and b"left to credit" in too_much.content


def test_admin_price_book_form_reports_rating_errors_beside_the_field(staff_client):
    books()
    from billing.models import Meter, PriceBook

    book = PriceBook.objects.get(name="Test list prices USD")
    meter = Meter.objects.get(slug="output_tokens")
    data = {"name": book.name, "currency": "USD", "is_default": "on", "discount_percent": "0",
            "minimum_commitment": "0", "prices-TOTAL_FORMS": "1", "prices-INITIAL_FORMS": "0",
            "prices-MIN_NUM_FORMS": "0", "prices-MAX_NUM_FORMS": "1000",
            "prices-0-meter": meter.pk, "prices-0-hardware_tier": "", "prices-0-model": "graduated",
            "prices-0-unit_price": "", "prices-0-package_size": "", "prices-0-free_units": "0",
            "prices-0-minimum": "0",
            "prices-0-tiers": '[{"up_to": "100", "unit_price": "0.1"}, {"up_to": "50", "unit_price": "0.2"}]'}
    response = staff_client.post(f"/admin/billing/pricebook/{book.pk}/change/", data)
    assert response.status_code == 200
    assert b"must increase" in response.content


def test_admin_revenue_page_spreads_line_amounts_over_usage_days(staff_client, invoiced):
    response = staff_client.get("/admin/billing/invoice/revenue/?since=2026-01")
    assert response.status_code == 200
    table = response.context["report"][0]
    assert table.currency == "EUR" and table.total == "3.00"  # the lines' amounts, before credits and tax
    assert [row["day"] for row in table.rows] == ["2026-01-05", "2026-01-06"]


def test_paying_in_full_makes_it_paid_in_the_api(tenant_a, invoiced):
    payment_record(actor=system_actor(tenant_a.tenant), invoice=invoiced, amount=Decimal("2.98"),
                   received_on=date(2026, 2, 2), reference="wire")
    body = tenant_a.api.get(f"/api/v1/invoices/{invoiced.public_id}").json()
    assert (body["status"], body["amount_paid"], body["amount_due"], body["overdue"]) == ("paid", "2.98", "0.00", False)
