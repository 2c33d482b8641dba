"""The billing pages in a real browser: an invoice, its line's drill-down, the printable page."""

from billing.invoicing import period_close
from billing.models import Invoice
from tests.billing.invoicing_helpers import at, books, deployment, rollup, tenant
from tests.browser import BROWSER_TEST, log_in
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from tenants.roles import Role

pytestmark = BROWSER_TEST


def test_an_owner_opens_an_invoice_and_drills_down_to_the_hours_behind_a_line(live_server, browser_page,
                                                                             screenshot_dir):
    books()
    customer = tenant(country="DE", currency="EUR", vat_id="DE136695976")
    owner = UserFactory()
    MembershipFactory(tenant=customer, user=owner, role=Role.OWNER)
    serving = deployment(customer, "chat")
    rollup(serving, "output_tokens", "2026-01-05T10:00", 1_200)
    rollup(serving, "output_tokens", "2026-01-05T11:00", 800)  # 2,000 × 0.001 = 2.00 EUR, reverse charge
    period_close(now=at("2026-02-01T00:05"))
    invoice = Invoice.objects.get(tenant=customer)

    page = browser_page
    log_in(page, live_server.url, owner.email, PASSWORD)
    page.goto(f"{live_server.url}/billing/invoices/")
    page.click("text=January 2026")
    page.wait_for_selector("[data-testid=invoice-total]")
    assert page.inner_text("[data-testid=invoice-total]") == "2.00 EUR"
    assert "Reverse charge" in page.inner_text("[data-testid=tax-note]")
    page.screenshot(path=str(screenshot_dir / "invoice-detail.png"), full_page=True)

    page.click("text=Output tokens · chat")
    rows = page.locator("[data-testid=line-rollups] tbody tr")
    assert rows.count() == 2
    rows.first.locator("text=events").click()
    page.wait_for_selector("#events")
    page.screenshot(path=str(screenshot_dir / "invoice-line.png"), full_page=True)

    page.goto(f"{live_server.url}/billing/invoices/{invoice.public_id}/print/")
    assert "Invoice SY-2026-000001" in page.inner_text("h1")
    page.screenshot(path=str(screenshot_dir / "invoice-print.png"), full_page=True)


def test_an_owner_sets_a_vat_id_and_sees_the_reverse_charge_apply(live_server, browser_page, screenshot_dir):
    books()
    customer = tenant(country="US")
    owner = UserFactory()
    MembershipFactory(tenant=customer, user=owner, role=Role.OWNER)

    page = browser_page
    log_in(page, live_server.url, owner.email, PASSWORD)
    page.goto(f"{live_server.url}/billing/invoices/")
    page.click("text=Billing profile")
    page.select_option("select[name=country]", "DE")
    page.fill("input[name=vat_id]", "DE 136 695 977")  # a wrong check digit
    page.click("[data-testid=billing-profile-form] button[type=submit]")
    assert "VAT" in page.inner_text("[data-testid=billing-profile-form] .errorlist")
    customer.refresh_from_db()
    assert customer.billing_country == "US"  # nothing was saved

    page.fill("input[name=vat_id]", "DE 136 695 976")
    page.click("[data-testid=billing-profile-form] button[type=submit]")
    page.wait_for_selector("text=Billing profile saved")
    tax = page.inner_text("[data-testid=billing-profile-tax]")
    assert "0 %" in tax and "reverse charge" in tax.lower()
    assert page.input_value("input[name=vat_id]") == "DE136695976"
    page.screenshot(path=str(screenshot_dir / "billing-profile.png"), full_page=True)
