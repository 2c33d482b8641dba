"""Invoices end to end: rollups → draft → close → finalized invoice, with the hand-computed
scenarios of the billing issue (each comment shows the arithmetic), the close's idempotency
and its guard, numbering, immutability, payments, void and credit notes."""

import re
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from billing import invoicing
from billing.invoicing import (
    credit_grant_create,
    credit_note_issue,
    invoice_finalize,
    invoice_refresh_draft,
    invoice_void,
    payment_record,
    period_close,
)
from billing.models import (
    ClosedPeriod,
    Invoice,
    InvoiceLine,
    UsageRollup,
)
from billing.tax import REVERSE_CHARGE_NOTE
from tenants.context import system_actor
from tenants.errors import Conflict, ServiceError
from tests.billing.invoicing_helpers import at, books, deployment, ingest, rollup, tenant

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
CLOSE_JAN = at("2026-02-01T00:05")  # the daily close, just after January ended
CLOSE_FEB = at("2026-03-01T00:05")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def price_books(db):
    books()


def lines_of(invoice: Invoice) -> list[tuple]:
    return [(line.description, line.quantity, line.amount, line.period_of_usage)
            for line in invoice.lines.order_by("position")]


def balance(grant) -> Decimal:
    return sum((entry.amount for entry in grant.ledger.all()), Decimal(0))


# --- hand-computed scenarios ------------------------------------------------------------------------


def test_graduated_tiers_crossed_mid_month_are_priced_on_the_whole_month():
    customer = tenant(country="US")
    first, second = deployment(customer, "alpha"), deployment(customer, "beta")
    rollup(first, "input_tokens", "2026-01-05T10:00", 600_000)
    rollup(second, "input_tokens", "2026-01-20T10:00", 700_000)  # the month passes 1,000,000 here

    period_close(now=CLOSE_JAN)

    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    # 1,000,000 × 0.000001 + 300,000 × 0.0000005 = 1.00 + 0.15 = 1.15 USD for the month, split
    # over the deployments by quantity: 115 cents × 6/13 = 53.08 → 53, × 7/13 = 61.92 → 62
    # (the left-over cent goes to the larger remainder).
    assert lines_of(invoice) == [
        ("Input tokens · alpha", Decimal("600000"), Decimal("0.53"), None),
        ("Input tokens · beta", Decimal("700000"), Decimal("0.62"), None),
    ]
    assert (invoice.subtotal, invoice.credits_applied, invoice.tax, invoice.total) == (
        Decimal("1.15"), Decimal(0), Decimal(0), Decimal("1.15"))
    assert invoice.status == Invoice.Status.FINALIZED
    assert invoice.number == "SY-2026-000001"
    assert "outside the EU" in invoice.tax_note


def test_volume_pricing_prices_every_unit_at_the_tier_the_total_reaches():
    customer = tenant(country="US")
    serving = deployment(customer)
    rollup(serving, "output_tokens", "2026-01-03T00:00", 800)
    rollup(serving, "output_tokens", "2026-01-29T23:00", 4_200)

    period_close(now=CLOSE_JAN)

    # 5,000 units fall in the second tier (≤ 10,000): all 5,000 × 0.001 = 5.00 USD.
    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    assert [line.amount for line in invoice.lines.all()] == [Decimal("5.00")]
    assert invoice.total == Decimal("5.00")


def test_a_credit_expiring_mid_month_pays_that_month_and_its_rest_expires():
    customer = tenant(country="US")
    serving = deployment(customer)
    actor = system_actor(customer)
    promotional = credit_grant_create(actor=actor, kind="promotional", amount=Decimal("5.00"),
                                      effective_at=at("2025-12-01T00:00"), expires_at=at("2026-01-15T00:00"),
                                      priority=10)
    prepaid = credit_grant_create(actor=actor, kind="prepaid", amount=Decimal("100.00"),
                                  effective_at=at("2025-12-01T00:00"))
    # 3,000 output tokens × 0.001 (volume tier 2) = 3.00 USD in January, 20,000 × 0.0005 = 10.00 in February.
    rollup(serving, "output_tokens", "2026-01-20T10:00", 3_000)
    rollup(serving, "output_tokens", "2026-02-10T10:00", 20_000)

    period_close(now=CLOSE_JAN)
    january = Invoice.objects.get(tenant=customer, period=JAN)
    # The promotional grant (priority 10, valid for part of January) pays all 3.00; the 2.00 left
    # of it can pay no later month and expires; the prepaid grant is untouched.
    assert (january.subtotal, january.credits_applied, january.total) == (Decimal("3.00"), Decimal("3.00"), 0)
    assert balance(promotional) == 0
    assert list(promotional.ledger.order_by("id").values_list("kind", "amount")) == [
        ("grant", Decimal("5.00")), ("application", Decimal("-3.00")), ("expiry", Decimal("-2.00"))]
    assert balance(prepaid) == Decimal("100.00")

    period_close(now=CLOSE_FEB)
    february = Invoice.objects.get(tenant=customer, period=FEB)
    assert (february.subtotal, february.credits_applied, february.total) == (Decimal("10.00"), Decimal("10.00"), 0)
    assert balance(prepaid) == Decimal("90.00")


def test_a_jpy_tenant_is_rounded_to_whole_yen_and_taxed_once():
    customer = tenant(country="JP", currency="JPY", is_business=False)
    serving = deployment(customer)
    rollup(serving, "input_tokens", "2026-01-10T08:00", 1_234_567)

    period_close(now=CLOSE_JAN)

    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    # 1,234,567 × 0.0225 = 27,777.7575 → 27,778 JPY (half-up, 0 decimals); consumer in Japan: 10 %
    # of 27,778 = 2,777.8 → 2,778; total 30,556.
    assert invoice.currency == "JPY"
    assert (invoice.subtotal, invoice.tax_rate, invoice.tax, invoice.total) == (
        Decimal("27778"), Decimal("10"), Decimal("2778"), Decimal("30556"))


def test_eu_business_with_a_vat_id_in_another_member_state_is_reverse_charged():
    business = tenant(country="DE", currency="EUR", vat_id="DE136695976", is_business=True)
    consumer = tenant(country="DE", currency="EUR", is_business=False)
    for customer in (business, consumer):
        rollup(deployment(customer), "output_tokens", "2026-01-12T00:00", 2_000)  # 2,000 × 0.001 = 2.00 EUR

    period_close(now=CLOSE_JAN)

    reverse_charged = Invoice.objects.get(tenant=business, period=JAN)
    assert (reverse_charged.tax_rate, reverse_charged.tax, reverse_charged.total) == (0, 0, Decimal("2.00"))
    assert reverse_charged.tax_note == REVERSE_CHARGE_NOTE
    assert reverse_charged.bill_to["vat_id"] == "DE136695976"
    # A German consumer pays German VAT: 19 % of 2.00 = 0.38.
    taxed = Invoice.objects.get(tenant=consumer, period=JAN)
    assert (taxed.tax_rate, taxed.tax, taxed.total) == (Decimal("19"), Decimal("0.38"), Decimal("2.38"))
    assert taxed.tax_note == ""


def test_a_late_event_after_finalization_lands_on_the_next_invoice_naming_its_month():
    customer = tenant(country="US")
    serving = deployment(customer, "gamma")
    ingest(serving, "2026-01-20T10:00:00Z", now="2026-01-20T10:01", event_id="jan-1", input_tokens=900_000)
    period_close(now=CLOSE_JAN)
    january = Invoice.objects.get(tenant=customer, period=JAN)
    assert january.total == Decimal("0.90")  # 900,000 × 0.000001
    assert ClosedPeriod.objects.filter(tenant=customer, period=JAN).exists()

    # On 3 February an event of 31 January arrives: January is closed, so it bills on February.
    ingest(serving, "2026-01-31T23:30:00Z", now="2026-02-03T09:00", event_id="jan-late", input_tokens=200_000)
    ingest(serving, "2026-02-02T10:00:00Z", now="2026-02-03T09:00", event_id="feb-1", input_tokens=100_000)
    assert set(UsageRollup.objects.filter(deployment=serving, hour=at("2026-01-31T23:00"))
               .values_list("billing_period", flat=True)) == {FEB}

    period_close(now=CLOSE_FEB)
    february = Invoice.objects.get(tenant=customer, period=FEB)
    # February's own 100,000 tokens: 0.10. The late 200,000 continue January's tiers where they
    # stopped (900,000): 100,000 × 0.000001 + 100,000 × 0.0000005 = 0.15, an adjustment for January.
    # (Each event also counts one request; the first 1,000 requests a month are free: 0.00 lines.)
    assert [line for line in lines_of(february) if line[0].startswith("Input")] == [
        ("Input tokens · gamma", Decimal("100000"), Decimal("0.10"), None),
        ("Input tokens · gamma — late usage of January 2026", Decimal("200000"), Decimal("0.15"), JAN),
    ]
    assert february.total == Decimal("0.25")
    january.refresh_from_db()
    assert january.total == Decimal("0.90")  # the finalized invoice did not change


def test_a_minimum_commitment_is_billed_even_without_usage():
    customer = tenant(country="US")
    from billing.pricebooks import pricebook_import

    pricebook_import(text=f"""
version: 1
name: Contract of {customer.slug}
currency: USD
tenant: {customer.slug}
minimum_commitment: 50
prices: []
""")
    customer.created_at = at("2025-12-01T00:00")
    customer.save(update_fields=["created_at"])

    period_close(now=CLOSE_JAN)

    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    assert invoice.total == Decimal("50.00")
    assert invoice.lines.get().kind == InvoiceLine.Kind.COMMITMENT_SHORTFALL


# --- drafts ---------------------------------------------------------------------------------------------


def test_the_draft_follows_the_usage_and_the_close_finalizes_the_same_amounts():
    customer = tenant(country="US")
    serving = deployment(customer)
    rollup(serving, "output_tokens", "2026-01-03T00:00", 500)
    draft = invoice_refresh_draft(tenant=customer, period=JAN, now=at("2026-01-03T01:00"))
    assert (draft.status, draft.number, draft.total) == (Invoice.Status.DRAFT, None, Decimal("1.00"))  # 500 × 0.002

    rollup(serving, "output_tokens", "2026-01-04T00:00", 1_500)
    draft = invoice_refresh_draft(tenant=customer, period=JAN, now=at("2026-01-04T01:00"))
    assert draft.total == Decimal("2.00")  # 2,000 × 0.001: the volume tier moved
    assert draft.lines.count() == 1

    period_close(now=CLOSE_JAN)
    draft.refresh_from_db()
    assert (draft.status, draft.total) == (Invoice.Status.FINALIZED, Decimal("2.00"))


def test_preview_and_spend_to_date_write_nothing():
    customer = tenant(country="US")
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)
    assert invoicing.spend_to_date(customer, JAN) == Decimal("1.00")
    assert not Invoice.objects.filter(tenant=customer).exists()


# --- the close: idempotent, guarded, numbered -----------------------------------------------------


def test_closing_twice_yields_one_invoice_and_one_number():
    customer = tenant(country="US")
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)

    first = period_close(now=CLOSE_JAN)
    second = period_close(now=CLOSE_JAN + timedelta(days=1))

    assert first.finalized == ["SY-2026-000001"] and second.finalized == []
    assert Invoice.objects.filter(tenant=customer).count() == 1
    assert InvoiceLine.objects.filter(tenant=customer).count() == 1


def test_a_crashed_close_is_visible_and_retried_only_once_its_claim_is_stale(monkeypatch):
    customer = tenant(country="US")
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(invoicing, "_finalize_chunk", crash)
    with pytest.raises(RuntimeError):
        period_close(now=CLOSE_JAN)
    monkeypatch.undo()

    stuck = Invoice.objects.get(tenant=customer, period=JAN)
    assert (stuck.status, stuck.invoicing_status, stuck.claimed_at) == ("draft", "finalizing", CLOSE_JAN)
    assert (stuck.number, stuck.lines.count()) == (None, 0)  # nothing of the finalization stayed
    # The month itself is closed to ingestion (its rollups are frozen), so the retry reads the same usage.
    assert ClosedPeriod.objects.filter(tenant=customer, period=JAN).exists()

    assert period_close(now=CLOSE_JAN + timedelta(minutes=5)).finalized == []  # the claim may still be live
    assert period_close(now=CLOSE_JAN + timedelta(minutes=31)).finalized == ["SY-2026-000001"]
    stuck.refresh_from_db()
    assert (stuck.status, stuck.invoicing_status) == ("finalized", "idle")


def test_a_tenant_that_cannot_be_invoiced_stays_a_draft_with_the_reason_and_others_close():
    broken = tenant(country="US")
    fine = tenant(country="US")
    rollup(deployment(broken), "accelerator_seconds", "2026-01-03T00:00", 60, tier="l4-24gb-spot")  # no price
    rollup(deployment(fine), "output_tokens", "2026-01-03T00:00", 500)

    report = period_close(now=CLOSE_JAN)

    assert len(report.finalized) == 1
    draft = Invoice.objects.get(tenant=broken, period=JAN)
    assert draft.status == "draft" and draft.invoicing_status == "idle"
    assert "no price for accelerator_seconds on l4-24gb-spot" in draft.close_error
    assert draft.number is None and not draft.lines.exists()
    assert Invoice.objects.get(tenant=fine, period=JAN).status == "finalized"


def test_numbers_are_consecutive_per_year_and_the_open_month_cannot_be_closed():
    customers = [tenant(country="US") for _ in range(3)]
    for customer in customers:
        rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)
    period_close(now=CLOSE_JAN)
    assert sorted(Invoice.objects.values_list("number", flat=True)) == [
        "SY-2026-000001", "SY-2026-000002", "SY-2026-000003"]
    with pytest.raises(ServiceError, match="not over yet"):
        period_close(period=FEB, now=CLOSE_JAN)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_closing_at_once_make_one_invoice_each_with_gapless_numbers():
    books()
    customers = [tenant(country="US") for _ in range(12)]
    for customer in customers:
        rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def worker():
        try:
            barrier.wait()
            reports.append(period_close(now=CLOSE_JAN, chunk_size=5))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    numbers = sorted(number for report in reports for number in report.finalized)
    assert numbers == [f"SY-2026-{n:06d}" for n in range(1, 13)]
    assert Invoice.objects.filter(period=JAN).count() == 12
    assert set(Invoice.objects.values_list("status", flat=True)) == {"finalized"}


# --- a finalized invoice never changes -------------------------------------------------------------


@pytest.fixture
def finalized(db):
    customer = tenant(country="US")
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 5_000)  # 5.00 USD
    period_close(now=CLOSE_JAN)
    return Invoice.objects.get(tenant=customer, period=JAN)


def test_the_database_refuses_to_change_a_finalized_invoice_or_its_lines(finalized):
    changes = [lambda: Invoice.objects.filter(pk=finalized.pk).update(total=Decimal("1.00"), subtotal=Decimal("1.00")),
               lambda: InvoiceLine.objects.filter(invoice=finalized).update(amount=Decimal("1.00")),
               lambda: InvoiceLine.objects.create(tenant=finalized.tenant, invoice=finalized, description="extra",
                                                  amount=Decimal("1.00")),
               lambda: Invoice.objects.filter(pk=finalized.pk).update(number="SY-2026-999999")]
    if connection.vendor == "postgresql":  # SQLite has no DELETE guard (db_guards.py says why)
        changes.append(lambda: InvoiceLine.objects.filter(invoice=finalized).delete())
    for change in changes:
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            change()
    finalized.refresh_from_db()
    assert finalized.total == Decimal("5.00") and finalized.lines.get().amount == Decimal("5.00")


def test_refreshing_or_finalizing_again_leaves_a_finalized_invoice_alone(finalized):
    rollup(finalized.lines.get().deployment, "output_tokens", "2026-01-04T00:00", 5_000, billing_period=JAN)
    assert invoice_refresh_draft(tenant=finalized.tenant, period=JAN, now=CLOSE_JAN).total == Decimal("5.00")
    with pytest.raises(Conflict, match="already finalized"):
        invoice_finalize(invoice=finalized, now=CLOSE_JAN)


# --- payments, overdue, void, credit notes ----------------------------------------------------------


def test_payments_that_cover_the_total_make_it_paid(finalized):
    actor = system_actor(finalized.tenant)
    payment_record(actor=actor, invoice=finalized, amount=Decimal("3.00"), received_on=date(2026, 2, 10),
                   reference="wire 1")
    finalized.refresh_from_db()
    assert finalized.status == "finalized"
    payment_record(actor=actor, invoice=finalized, amount=Decimal("2.00"), received_on=date(2026, 2, 12),
                   reference="wire 2")
    finalized.refresh_from_db()
    assert finalized.status == "paid" and finalized.paid_at is not None
    with pytest.raises(ServiceError, match="decimal places"):
        payment_record(actor=actor, invoice=finalized, amount=Decimal("0.001"), received_on=date(2026, 2, 12),
                       reference="x")


def test_an_unpaid_invoice_past_its_due_date_is_overdue(finalized):
    assert finalized.due_date == date(2026, 3, 3)  # issued 1 February + 30 days
    assert not finalized.is_overdue(today=date(2026, 3, 3))
    assert finalized.is_overdue(today=date(2026, 3, 4))
    payment_record(actor=system_actor(finalized.tenant), invoice=finalized, amount=Decimal("5.00"),
                   received_on=date(2026, 3, 5), reference="late wire")
    finalized.refresh_from_db()
    assert not finalized.is_overdue(today=date(2026, 3, 6))


def test_void_restores_the_credits_the_invoice_used_with_a_reversal_entry():
    customer = tenant(country="US")
    grant = credit_grant_create(actor=system_actor(customer), kind="prepaid", amount=Decimal("4.00"),
                                effective_at=at("2025-12-01T00:00"))
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 5_000)  # 5.00
    period_close(now=CLOSE_JAN)
    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    assert (invoice.credits_applied, invoice.total) == (Decimal("4.00"), Decimal("1.00"))
    assert balance(grant) == 0

    invoice_void(actor=system_actor(customer), invoice=invoice, reason="billed by mistake")

    invoice.refresh_from_db()
    assert invoice.status == "void" and invoice.total == Decimal("1.00")  # amounts as issued
    assert list(grant.ledger.order_by("id").values_list("kind", "amount")) == [
        ("grant", Decimal("4.00")), ("application", Decimal("-4.00")), ("reversal", Decimal("4.00"))]
    assert balance(grant) == Decimal("4.00")
    with pytest.raises(Conflict):
        invoice_void(actor=system_actor(customer), invoice=invoice, reason="again")


def test_a_credit_note_reduces_what_is_owed_and_leaves_the_invoice_unchanged():
    customer = tenant(country="DE", currency="EUR", is_business=False)
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 5_000)  # 5.00 + 19 % = 5.95
    period_close(now=CLOSE_JAN)
    invoice = Invoice.objects.get(tenant=customer, period=JAN)
    assert invoice.total == Decimal("5.95")
    actor = system_actor(customer)

    note = credit_note_issue(actor=actor, invoice=invoice, lines=[("Outage on 3 January", Decimal("1.00"))],
                             reason="SLA credit")

    # 1.00 net + 19 % = 1.19 off what is owed; the invoice itself is as it was.
    assert (note.number, note.subtotal, note.tax, note.amount) == (
        "SY-CN-2026-000001", Decimal("1.00"), Decimal("0.19"), Decimal("1.19"))
    invoice.refresh_from_db()
    assert invoice.total == Decimal("5.95") and invoice.status == "finalized"
    payment_record(actor=actor, invoice=invoice, amount=Decimal("4.76"), received_on=date(2026, 2, 5),
                   reference="wire")
    invoice.refresh_from_db()
    assert invoice.status == "paid"  # 4.76 = 5.95 − 1.19
    with pytest.raises(ServiceError, match="left to credit"):
        credit_note_issue(actor=actor, invoice=invoice, lines=[("more", Decimal("5.00"))], reason="too much")


def test_the_close_command_finalizes_a_month_and_fails_naming_an_invoice_it_cannot_finalize():
    import io

    from django.core.management import CommandError, call_command

    customer, broken = tenant(country="US"), tenant(country="US")
    rollup(deployment(customer), "output_tokens", "2026-01-03T00:00", 500)
    rollup(deployment(broken), "accelerator_seconds", "2026-01-03T00:00", 60, tier="l4-24gb-spot")  # no price
    out = io.StringIO()
    with pytest.raises(CommandError, match="could not be finalized"):
        call_command("close_billing_period", "--period", "2026-01", stdout=out, stderr=io.StringIO())
    assert re.search(r"Finalized 1 invoice\(s\): SY-\d{4}-000001", out.getvalue())  # numbered in the year of the run
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("close_billing_period", "--period", "January")


def test_a_close_of_many_tenants_reads_each_chunk_by_id_range_and_uses_only_its_own_tenants_rows():
    """More than 64 tenants in a chunk: grants, profiles, deployments and webhooks are read by the
    chunk's tenant-id range. A tenant inside that range that is not being closed (its month has no
    usage) must lend none of its rows to the others and get nothing written."""
    closing = []
    for index in range(75):
        customer = tenant(country="US")
        rollup(deployment(customer, name=f"serving-{index}"), "output_tokens", "2026-01-20T10:00", 3_000)
        closing.append(customer)
        if index == 30:  # an idle tenant in the middle of the id range, with credit and another profile
            idle = tenant(country="DE", vat_id="DE136695976")
            deployment(idle, name="idle-serving")
            idle_grant = credit_grant_create(actor=system_actor(idle), kind="prepaid", amount=Decimal("50.00"),
                                             currency="USD", effective_at=at("2025-12-01T00:00"))
    paying = closing[40]
    grant = credit_grant_create(actor=system_actor(paying), kind="prepaid", amount=Decimal("1.00"),
                                effective_at=at("2025-12-01T00:00"))

    report = period_close(now=CLOSE_JAN, chunk_size=70)  # chunks of 70 (an id range) and 5 (a list)

    assert len(report.finalized) == 75 and not report.failed
    assert not Invoice.objects.filter(tenant=idle).exists()
    assert not ClosedPeriod.objects.filter(tenant=idle).exists()
    assert balance(idle_grant) == Decimal("50.00")
    assert balance(grant) == 0
    for index, customer in enumerate(closing):
        invoice = Invoice.objects.get(tenant=customer, period=JAN)
        # 3,000 output tokens × 0.001 (volume tier 2) = 3.00 USD; US: no VAT.
        assert invoice.subtotal == Decimal("3.00") and invoice.tax == 0, customer
        assert invoice.credits_applied == (Decimal("1.00") if customer == paying else 0)
        assert invoice.bill_to["name"] == f"{customer.name} Ltd" and invoice.bill_to["country"] == "US"
        assert [line.deployment_name for line in invoice.lines.all()] == [f"serving-{index}"]
