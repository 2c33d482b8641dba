"""Credit grants and their append-only ledger: granting, spending order at the close, never past
zero, expiry, refusals, and the back office's add form."""

from decimal import Decimal

import pytest

from billing.invoicing import credit_expire_due, credit_grant_create, invoice_refresh_draft, period_close
from billing.models import CreditGrant, CreditLedgerEntry, Invoice
from tenants.context import system_actor
from tenants.errors import ServiceError
from tests.billing.invoicing_helpers import at, books, deployment, rollup, tenant
from tests.factories import UserFactory

CLOSE_JAN = at("2026-02-01T00:05")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def price_books(db):
    books()


def grant(customer, amount, **options):
    return credit_grant_create(actor=system_actor(customer), kind=options.pop("kind", "prepaid"),
                               amount=Decimal(amount), effective_at=options.pop("effective_at", at("2025-12-01T00:00")),
                               **options)


def balance(credit) -> Decimal:
    return sum((entry.amount for entry in credit.ledger.all()), Decimal(0))


def test_a_grant_starts_its_ledger_and_its_balance_is_the_ledger_sum():
    customer = tenant(country="US")
    credit = grant(customer, "25.00", description="prepaid top-up")
    assert list(credit.ledger.values_list("kind", "amount")) == [("grant", Decimal("25.00"))]
    assert balance(credit) == Decimal("25.00")


@pytest.mark.parametrize("amount, options, message", [
    ("10.00", {"currency": "EUR"}, "billed in USD"),
    ("0.001", {}, "more decimal places than USD"),
    ("0", {}, "greater than zero"),
    ("-5", {}, "greater than zero"),
    ("10.00", {"expires_at": at("2025-11-01T00:00")}, "expire after it takes effect"),
    ("10.00", {"priority": 101}, "priority is 0–100"),
    ("10.00", {"kind": "gift"}, "kind must be one of"),
])
def test_bad_grants_are_refused_with_a_reason(amount, options, message):
    customer = tenant(country="US")
    with pytest.raises(ServiceError, match=message):
        grant(customer, amount, **options)
    assert not CreditGrant.objects.exists()


def test_a_jpy_grant_is_whole_yen():
    customer = tenant(country="JP", currency="JPY")
    with pytest.raises(ServiceError, match="more decimal places than JPY"):
        grant(customer, "100.5")
    assert balance(grant(customer, "1000")) == Decimal("1000")


def test_credits_are_spent_by_priority_then_earliest_expiry_and_never_past_the_subtotal():
    customer = tenant(country="US")
    late_expiry = grant(customer, "3.00", expires_at=at("2026-12-31T00:00"))
    early_expiry = grant(customer, "3.00", expires_at=at("2026-06-30T00:00"))
    low_priority = grant(customer, "50.00", priority=90)
    first = grant(customer, "1.00", priority=0, kind="promotional")
    rollup(deployment(customer), "output_tokens", "2026-01-10T00:00", 5_000)  # 5.00 USD

    period_close(now=CLOSE_JAN)

    invoice = Invoice.objects.get(tenant=customer)
    # priority 0 first (1.00), then priority 50 by earliest expiry (3.00, then 1.00 of the other); the
    # priority-90 grant is not needed. The total never goes below zero.
    assert (invoice.subtotal, invoice.credits_applied, invoice.total) == (Decimal("5.00"), Decimal("5.00"), 0)
    assert [balance(credit) for credit in (first, early_expiry, late_expiry, low_priority)] == [
        0, 0, Decimal("2.00"), Decimal("50.00")]
    assert CreditLedgerEntry.objects.filter(invoice=invoice, kind="application").count() == 3


def test_a_grant_that_starts_after_the_month_does_not_pay_it():
    customer = tenant(country="US")
    future = grant(customer, "10.00", effective_at=at("2026-02-15T00:00"))
    rollup(deployment(customer), "output_tokens", "2026-01-10T00:00", 5_000)
    period_close(now=CLOSE_JAN)
    assert Invoice.objects.get(tenant=customer).credits_applied == 0
    assert balance(future) == Decimal("10.00")


def test_an_expired_grant_of_a_tenant_without_invoices_expires_after_its_month_is_over():
    customer = tenant(country="US")
    credit = grant(customer, "7.00", expires_at=at("2026-01-20T00:00"))
    assert credit_expire_due(now=at("2026-01-25T00:00")) == 0  # its month is still open
    assert credit_expire_due(now=at("2026-02-01T00:10")) == 1
    assert list(credit.ledger.order_by("id").values_list("kind", "amount")) == [
        ("grant", Decimal("7.00")), ("expiry", Decimal("-7.00"))]
    assert credit_expire_due(now=at("2026-02-02T00:00")) == 0  # once


def test_an_expired_grant_waits_while_an_invoice_it_may_pay_is_open():
    customer = tenant(country="US")
    credit = grant(customer, "7.00", expires_at=at("2026-01-20T00:00"))
    rollup(deployment(customer), "output_tokens", "2026-01-10T00:00", 1_000)  # 2.00 USD (volume tier 1)
    invoice_refresh_draft(tenant=customer, period=Invoice._meta.get_field("period").to_python("2026-01-01"),
                          now=at("2026-01-31T00:00"))
    assert credit_expire_due(now=at("2026-02-01T00:01")) == 0  # January's draft may still use it
    period_close(now=CLOSE_JAN)
    assert list(credit.ledger.order_by("id").values_list("kind", "amount")) == [
        ("grant", Decimal("7.00")), ("application", Decimal("-2.00")), ("expiry", Decimal("-5.00"))]


def test_the_back_office_grants_credit_through_the_service_and_never_edits_a_grant(client):
    customer = tenant(country="US")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post("/admin/billing/creditgrant/add/", {
        "tenant": customer.pk, "kind": "promotional", "amount": "12.50", "currency": "", "priority": "50",
        "effective_at_0": "2026-01-01", "effective_at_1": "00:00:00", "description": "launch offer"})
    assert response.status_code == 302, response.content[:2000]
    credit = CreditGrant.objects.get()
    assert balance(credit) == Decimal("12.50") and credit.created_by is not None
    refused = client.post("/admin/billing/creditgrant/add/", {
        "tenant": customer.pk, "kind": "prepaid", "amount": "1.005", "currency": "", "priority": "50",
        "effective_at_0": "2026-01-01", "effective_at_1": "00:00:00"})
    assert refused.status_code == 200 and b"more decimal places than USD" in refused.content
    page = client.get(f"/admin/billing/creditgrant/{credit.pk}/change/")
    assert b'name="amount"' not in page.content  # read-only
    assert client.get(f"/admin/billing/creditledgerentry/{credit.ledger.get().pk}/delete/").status_code == 403
