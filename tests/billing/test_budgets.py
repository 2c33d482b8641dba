"""Budgets: spend and forecast, thresholds that notify once per month (email and webhook, also
with concurrent evaluators on PostgreSQL), the action at 100 % (scale to minimum — honoured by the
reconcile loop — or pause), lifting it (by the tenant, or by the next month), the API with its
validation and tenancy, and the console page.

Spend comes from usage ingested through the real service (billing.services.usage_ingest), rated
with a test price book: output tokens at 0.01 EUR each (the test tenants bill in EUR), everything else free.
"""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from billing import budget_math
from billing.budgets import budget_create, budget_lift, budget_update, budgets_evaluate
from billing.models import Budget, BudgetAction, BudgetAlert
from billing.pricebooks import pricebook_import
from billing.services import usage_ingest
from scheduler import services as scheduler_services
from scheduler.models import Deployment, DeploymentEvent, Replica
from tenants.context import system_actor
from tenants.errors import Conflict, ServiceError
from tenants.models import AuditEvent, WebhookDelivery
from tenants.roles import Role
from tenants.webhooks import webhook_endpoint_create
from tests.billing.factories import ensure_built_in_meters
from tests.billing.invoicing_helpers import SCRAPE, at, ingest
from tests.cross_tenant_objects import make_deployment
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PRICES = """
version: 1
name: Budget test prices EUR
currency: EUR
prices:
  - {meter: output_tokens, model: per_unit, unit_price: 0.01}
  - {meter: input_tokens, model: per_unit, unit_price: 0}
  - {meter: requests, model: per_unit, unit_price: 0}
  - {meter: accelerator_seconds, model: per_unit, unit_price: 0}
"""

JAN_10 = "2030-01-10T12:00"  # evaluations in January happen here (9.5 days into the month)

_event_ids = iter(range(1, 10**9))


@pytest.fixture
def prices(db):
    pricebook_import(text=PRICES)


def spend(deployment, dollars, *, time: str = "2030-01-10T10:00", now: str = JAN_10) -> None:
    """Usage worth `dollars` EUR (output tokens at 0.01) on `deployment`, ingested at `now`."""
    ingest(deployment, time + ":00Z", now=now, event_id=f"budget-test-{next(_event_ids)}",
           output_tokens=int(Decimal(str(dollars)) * 100))


def spend_now(deployment, dollars) -> None:
    """Usage worth `dollars` EUR in the current month, ingested now: for what the API and console
    show (they show the month of the real clock)."""
    now = timezone.now()
    moment = max(now - timedelta(seconds=30), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    event = {"specversion": "1.0", "id": f"budget-test-{next(_event_ids)}", "source": SCRAPE,
             "type": "inference.request", "subject": str(deployment.public_id), "time": moment.isoformat(),
             "data": {"input_tokens": 0, "output_tokens": int(Decimal(str(dollars)) * 100)}}
    assert usage_ingest([event], now=now).accepted == 1


def evaluate_now():
    return budgets_evaluate(now=timezone.now())


def evaluate(now: str = JAN_10, capture=None):
    """One evaluator run; with `capture` (django_capture_on_commit_callbacks) the emails it sends on
    commit are sent."""
    if capture is None:
        return budgets_evaluate(now=at(now))
    with capture(execute=True):
        return budgets_evaluate(now=at(now))


def deployment_of(world, **overrides) -> Deployment:
    return make_deployment(world, **overrides)


def refreshed(deployment) -> Deployment:
    return Deployment.all_objects.get(pk=deployment.pk)


def budget(world, amount="10", **fields) -> Budget:
    return budget_create(actor=system_actor(world.tenant), amount=Decimal(amount), **fields)


# --- the pure arithmetic -------------------------------------------------------------------------------


def test_thresholds_are_reached_exactly_without_rounding():
    assert budget_math.thresholds_reached(Decimal("7.99"), Decimal("10"), [50, 80, 100]) == [50]
    assert budget_math.thresholds_reached(Decimal("8.00"), Decimal("10"), [50, 80, 100]) == [50, 80]
    assert budget_math.thresholds_reached(Decimal("25"), Decimal("10"), [50, 80, 100, 250]) == [50, 80, 100, 250]
    assert not budget_math.limit_reached(Decimal("9.99"), Decimal("10"))
    assert budget_math.limit_reached(Decimal("10.00"), Decimal("10"))
    assert budget_math.percent_used(Decimal("1"), Decimal("3")) == Decimal("33.33")
    assert budget_math.percent_used(Decimal("2"), Decimal("3")) == Decimal("66.67")  # half-up


@pytest.mark.parametrize("thresholds, message", [
    ([], "at least one"),
    ([0, 50], "from 1 to 1000"),
    ([50, 1001], "from 1 to 1000"),
    ([50.5], "from 1 to 1000"),
    ([True], "from 1 to 1000"),
    ([80, 50], "increasing order: 50, 80"),
    ([50, 50, 100], "Each threshold once"),
    (list(range(1, 12)), "At most 10"),
    ("50, 80", "as a list"),
])
def test_threshold_lists_are_validated(thresholds, message):
    errors = budget_math.threshold_errors(thresholds)
    assert errors and message in " ".join(errors)


def test_the_forecast_extrapolates_the_month_so_far_linearly():
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC)

    def forecast(spent, now, currency="USD"):
        return budget_math.forecast(Decimal(spent), period_start=start, period_end=end, now=now, currency=currency)

    # 31 days in January: 10.00 after 10 days → 31.00; after 15.5 days → 20.00.
    assert forecast("10.00", start + timedelta(days=10)) == Decimal("31.00")
    assert forecast("10.00", start + timedelta(days=15, hours=12)) == Decimal("20.00")
    # 1.00 after one day → 31.00; 1 after 3 days → 10.333… → 10.33 (half-up, once).
    assert forecast("1.00", start + timedelta(days=3)) == Decimal("10.33")
    assert forecast("100", start + timedelta(days=3), "JPY") == Decimal("1033")
    # Less than an hour in counts as an hour (744 hours in January): 0.50 → 372.00, not millions.
    assert forecast("0.50", start + timedelta(minutes=2)) == Decimal("372.00")
    # At (or after) the month's end the forecast is what was spent.
    assert forecast("42.42", end) == Decimal("42.42")
    assert forecast("42.42", end + timedelta(days=2)) == Decimal("42.42")


@given(spent=st.decimals(min_value=0, max_value=10**9, places=2),
       elapsed=st.integers(min_value=0, max_value=31 * 86400))
def test_the_forecast_is_never_below_the_spend_so_far(spent, elapsed):
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC)
    forecast = budget_math.forecast(spent, period_start=start, period_end=end, now=start + timedelta(seconds=elapsed),
                                    currency="USD")
    assert forecast >= spent
    assert forecast == forecast.quantize(Decimal("0.01"))
    assert forecast <= spent * 744  # at most month ÷ one hour


@given(amount=st.decimals(min_value=Decimal("0.01"), max_value=10**6, places=2),
       spent=st.decimals(min_value=0, max_value=10**7, places=2),
       thresholds=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=10, unique=True))
def test_reached_thresholds_are_exactly_those_at_or_below_the_percent_used(amount, spent, thresholds):
    thresholds = sorted(thresholds)
    reached = budget_math.thresholds_reached(spent, amount, thresholds)
    assert reached == [t for t in thresholds if spent * 100 >= t * amount]
    assert reached == thresholds[:len(reached)]  # a prefix: reaching 80 % means 50 % is reached too


# --- spend ---------------------------------------------------------------------------------------------


def test_spend_is_the_months_usage_as_the_invoice_rates_it_per_tenant_and_per_deployment(tenant_a, prices):
    alpha, beta = deployment_of(tenant_a), deployment_of(tenant_a)
    spend_now(alpha, "6.00")
    spend_now(beta, "1.50")
    last_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    spend(alpha, "100", time=last_month.strftime("%Y-%m-%dT%H:%M"), now=timezone.now().strftime("%Y-%m-%dT%H:%M"))
    whole, only_beta = budget(tenant_a, "10"), budget(tenant_a, "3", deployment=beta)

    response = tenant_a.api.get("/api/v1/budgets")
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["results"]}
    assert (rows[str(whole.public_id)]["spend"], rows[str(only_beta.public_id)]["spend"]) == ("7.50", "1.50")
    assert rows[str(whole.public_id)]["percent_used"] == "75.00"
    assert rows[str(only_beta.public_id)]["deployment"] == {"id": str(beta.public_id), "name": beta.name}
    assert rows[str(whole.public_id)]["currency"] == "EUR" and rows[str(whole.public_id)]["amount"] == "10.00"


def test_without_a_price_book_the_budget_says_why_and_nothing_alerts(tenant_a):
    made = budget(tenant_a, "1")
    response = tenant_a.api.get(f"/api/v1/budgets/{made.public_id}")
    assert response.status_code == 200
    assert response.json()["spend"] is None and "price book" in response.json()["spend_problem"].lower()
    report = evaluate()
    assert report.failed and BudgetAlert.objects.count() == 0


# --- thresholds notify once per period -------------------------------------------------------------------


def test_each_threshold_notifies_once_per_month_by_email(tenant_a, prices, django_capture_on_commit_callbacks):
    billing_member = MembershipFactory(tenant=tenant_a.tenant, role=Role.BILLING).user
    MembershipFactory(tenant=tenant_a.tenant, role=Role.DEVELOPER)  # not told about money
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "10", thresholds=[50, 80, 100])
    spend(deployment, "6.00")

    report = evaluate(capture=django_capture_on_commit_callbacks)
    assert report.alerts == 1
    [alert] = BudgetAlert.objects.filter(budget=made)
    assert (alert.threshold, alert.spend, alert.period.isoformat()) == (50, Decimal("6.00"), "2030-01-01")
    # 6.00 after 9.5 of 31 days → 6 × 31 / 9.5 = 19.578… → 19.58
    assert alert.forecast == Decimal("19.58")
    [email] = mail.outbox
    assert sorted(email.to) == sorted([tenant_a.owner.email, billing_member.email])
    assert "50 %" in email.subject and "6.00 EUR" in email.body and "19.58" in email.body
    assert "/billing/budgets/" in email.body

    evaluate(capture=django_capture_on_commit_callbacks)  # nothing new: nothing sent
    assert BudgetAlert.objects.filter(budget=made).count() == 1 and len(mail.outbox) == 1

    spend(deployment, "3.00", now="2030-01-10T12:05")
    evaluate("2030-01-10T12:05", capture=django_capture_on_commit_callbacks)
    assert list(BudgetAlert.objects.filter(budget=made).values_list("threshold", flat=True)) == [50, 80]
    assert len(mail.outbox) == 2 and "80 %" in mail.outbox[1].subject
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="budget.threshold_reached").count() == 2


def test_a_new_month_alerts_again(tenant_a, prices):
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "10", thresholds=[50])
    spend(deployment, "6.00")
    evaluate()
    spend(deployment, "6.00", time="2030-02-03T10:00", now="2030-02-03T12:00")
    evaluate("2030-02-03T12:00")
    assert list(BudgetAlert.objects.filter(budget=made).values_list("period", "threshold")) == [
        (datetime(2030, 2, 1).date(), 50), (datetime(2030, 1, 1).date(), 50)]


def test_a_threshold_sends_a_signed_webhook_delivery(tenant_a, prices, settings):
    settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE = True
    webhook_endpoint_create(actor=system_actor(tenant_a.tenant), url="https://hooks.example.com/in",
                            event_types=["budget.threshold_reached"])
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "10", thresholds=[50, 80])
    spend(deployment, "8.50")

    evaluate()

    deliveries = WebhookDelivery.objects.filter(tenant=tenant_a.tenant, event_type="budget.threshold_reached")
    assert sorted(d.payload["data"]["threshold"] for d in deliveries) == [50, 80]
    data = deliveries.first().payload["data"]
    assert data["budget"] == str(made.public_id) and data["spend"] == "8.50" and data["amount"] == "10.00"
    assert data["currency"] == "EUR" and data["period"] == "2030-01-01" and data["deployment"] is None
    evaluate()
    assert deliveries.count() == 2


def test_only_active_budgets_are_evaluated(tenant_a, prices):
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "10", active=False)
    spend(deployment, "20")
    evaluate()
    assert not BudgetAlert.objects.filter(budget=made).exists()


@pytest.mark.postgres
def test_concurrent_evaluators_alert_each_threshold_once(transactional_db, settings):
    from tests.conftest import _world

    world = _world("Concurrent")
    ensure_built_in_meters()  # a transactional test's database may have been flushed by the one before
    pricebook_import(text=PRICES)
    deployment = deployment_of(world)
    made = budget(world, "10", thresholds=[20, 50, 80], action=Budget.Action.PAUSE)
    spend(deployment, "12.00")
    barrier, errors = threading.Barrier(4), []

    def run():
        try:
            barrier.wait()
            budgets_evaluate(now=at(JAN_10))
        except Exception as error:  # surfaced below: a thread's exception is otherwise lost
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(BudgetAlert.objects.filter(budget=made).values_list("threshold", flat=True)) == [20, 50, 80]
    assert BudgetAction.objects.filter(budget=made).count() == 1
    assert len(mail.outbox) == 1  # only the evaluator that inserted notifies
    assert refreshed(deployment).status == Deployment.Status.PAUSED
    assert AuditEvent.objects.filter(action="deployment.pause", object_id=str(deployment.public_id)).count() == 1


# --- the action at 100 % -----------------------------------------------------------------------------------


def test_pause_pauses_and_a_lift_resumes_only_what_the_budget_paused(tenant_a, prices):
    running = deployment_of(tenant_a, min_replicas=1, max_replicas=3)
    paused_by_tenant = deployment_of(tenant_a)
    scheduler_services.deployment_pause(actor=system_actor(tenant_a.tenant), deployment=paused_by_tenant)
    made = budget(tenant_a, "10", action=Budget.Action.PAUSE)
    spend_now(running, "10.00")

    report = evaluate_now()

    assert report.actions == 1
    assert refreshed(running).status == Deployment.Status.PAUSED
    [action] = BudgetAction.objects.filter(budget=made)
    entries = {entry["name"]: entry for entry in action.deployments}
    assert entries[running.name]["applied"] and entries[running.name]["status"] == "pending"
    assert not entries[paused_by_tenant.name]["applied"] and entries[paused_by_tenant.name]["status"] == "paused"
    pause_audit = AuditEvent.objects.get(action="deployment.pause", object_id=str(running.public_id))
    assert pause_audit.actor.startswith("budget 10.00 EUR / month for the whole tenant")
    assert DeploymentEvent.objects.filter(deployment=running, kind="budget_paused").exists()
    evaluate_now()  # once per month: nothing more
    assert BudgetAction.objects.filter(budget=made).count() == 1

    response = tenant_a.api.post(f"/api/v1/budgets/{made.public_id}/lift", {"reason": "raised the limit"},
                                 format="json")

    assert response.status_code == 200, response.content
    assert refreshed(running).status == Deployment.Status.PENDING  # resumed: placed again
    assert refreshed(paused_by_tenant).status == Deployment.Status.PAUSED  # the tenant's own pause stays
    state = response.json()["action_state"]
    assert state["in_force"] is False and state["lift_reason"] == "raised the limit"
    action.refresh_from_db()
    assert action.lifted_by is None and action.lifted_at is not None  # an API key acted: no user
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="budget.lift").exists()
    evaluate_now()  # lifted stays lifted for the rest of the month
    assert refreshed(running).status == Deployment.Status.PENDING


def test_scale_to_minimum_caps_each_deployment_at_its_minimum_and_a_lift_restores_the_cap(
        tenant_a, prices, django_capture_on_commit_callbacks):
    first = deployment_of(tenant_a, min_replicas=2, max_replicas=6)
    second = deployment_of(tenant_a, min_replicas=0, max_replicas=3)
    Deployment.objects.filter(pk=first.pk).update(budget_replica_cap=5)  # a cap set before (e.g. by staff)
    made = budget(tenant_a, "5", action=Budget.Action.SCALE_TO_MINIMUM, thresholds=[100])
    spend(first, "4.00")
    spend(second, "1.00")

    evaluate(capture=django_capture_on_commit_callbacks)

    assert (refreshed(first).budget_replica_cap, refreshed(second).budget_replica_cap) == (2, 0)
    [email] = mail.outbox
    assert "100 %" in email.subject and "2 deployments were scaled down to their minimum" in email.body
    assert first.name in email.body and "until the month ends or you lift it" in email.body
    assert refreshed(first).status == Deployment.Status.PENDING  # not paused: capped
    assert DeploymentEvent.objects.filter(deployment=first, kind="budget_cap").exists()

    budget_lift(actor=system_actor(tenant_a.tenant), budget=made)

    assert (refreshed(first).budget_replica_cap, refreshed(second).budget_replica_cap) == (5, None)  # as before
    with pytest.raises(Conflict, match="Nothing to lift"):
        budget_lift(actor=system_actor(tenant_a.tenant), budget=made)


def test_two_budgets_holding_one_deployment_release_it_only_when_both_are_lifted(tenant_a, prices):
    deployment = deployment_of(tenant_a, min_replicas=1, max_replicas=4)
    whole = budget(tenant_a, "5", action=Budget.Action.SCALE_TO_MINIMUM)
    own = budget(tenant_a, "2", deployment=deployment, action=Budget.Action.SCALE_TO_MINIMUM)
    spend(deployment, "6.00")
    evaluate()
    assert refreshed(deployment).budget_replica_cap == 1
    actor = system_actor(tenant_a.tenant)

    budget_lift(actor=actor, budget=whole)
    assert refreshed(deployment).budget_replica_cap == 1  # its own budget still holds it
    budget_lift(actor=actor, budget=own)
    assert refreshed(deployment).budget_replica_cap is None


def test_the_next_month_lifts_last_months_action_by_itself(tenant_a, prices):
    deployment = deployment_of(tenant_a, min_replicas=1, max_replicas=4)
    made = budget(tenant_a, "5", action=Budget.Action.SCALE_TO_MINIMUM)
    spend(deployment, "7.00")
    evaluate()
    assert refreshed(deployment).budget_replica_cap == 1

    report = evaluate("2030-02-01T00:05")

    assert report.lifted == 1 and refreshed(deployment).budget_replica_cap is None
    action = BudgetAction.objects.get(budget=made)
    assert action.lifted_by is None and "February 2030 began" in action.lift_reason
    assert AuditEvent.objects.get(action="budget.lift").actor.startswith("budget ")


def test_a_deployment_budget_counts_and_acts_on_its_deployment_only(tenant_a, prices):
    watched, other = deployment_of(tenant_a), deployment_of(tenant_a)
    budget(tenant_a, "5", deployment=watched, action=Budget.Action.PAUSE)
    spend(other, "50.00")
    evaluate()
    assert refreshed(watched).status != Deployment.Status.PAUSED
    spend(watched, "5.00", now="2030-01-10T12:05")
    evaluate("2030-01-10T12:05")
    assert refreshed(watched).status == Deployment.Status.PAUSED
    assert refreshed(other).status != Deployment.Status.PAUSED


def test_raising_the_amount_above_spend_suggests_lifting(tenant_a, prices):
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "5", action=Budget.Action.PAUSE)
    spend_now(deployment, "6.00")
    evaluate_now()
    assert tenant_a.api.get(f"/api/v1/budgets/{made.public_id}").json()["lift_suggested"] is False

    response = tenant_a.api.patch(f"/api/v1/budgets/{made.public_id}", {"amount": "20.00"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["amount"] == "20.00" and body["action_state"]["in_force"] is True and body["lift_suggested"] is True
    assert refreshed(deployment).status == Deployment.Status.PAUSED  # only the tenant lifts


def test_deleting_a_budget_lifts_its_action_first(tenant_a, prices):
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "5", action=Budget.Action.PAUSE)
    spend(deployment, "6.00")
    evaluate()
    assert tenant_a.api.delete(f"/api/v1/budgets/{made.public_id}").status_code == 204
    assert refreshed(deployment).status == Deployment.Status.PENDING
    assert not Budget.objects.filter(pk=made.pk).exists()
    assert AuditEvent.objects.filter(action="budget.delete").exists()


# --- scale to minimum, honoured by the reconcile loop --------------------------------------------------------


@pytest.fixture
def fleet(settings, tmp_path):
    from tests.cross_tenant_objects import small_fleet

    settings.SWITCHYARD_FLEET = {"driver": "simulated", "state_dir": str(tmp_path / "fleet"), "seed": 7,
                                 "tick_seconds": 5, "pending_seconds": 5, "engine_start_seconds": 10}
    return small_fleet(nodes=3)


def test_the_reconcile_loop_honours_the_cap_and_scales_back_after_a_lift(tenant_a, prices, fleet,
                                                                        django_capture_on_commit_callbacks):
    from scheduler.estimator import Traffic
    from scheduler.reconcile import reconcile_pass

    now = datetime(2030, 1, 1, tzinfo=UTC)

    def run(passes: int = 1):
        nonlocal now
        for _ in range(passes):
            now += timedelta(seconds=15)
            with django_capture_on_commit_callbacks(execute=True):
                reconcile_pass(now=now)

    def holding() -> int:
        return Replica.objects.filter(deployment=deployment, state__in=Replica.HOLDING_STATES).count()

    def until(condition, passes: int = 60):
        for _ in range(passes):
            run()
            if condition():
                return
        raise AssertionError("condition not reached")

    # 70 requests/s: three replicas or more (31 each by the performance model), at least 1.
    deployment = deployment_of(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"], min_replicas=1,
                               max_replicas=4, traffic=Traffic(requests_per_s=70, input_tokens=512, output_tokens=256,
                                                               input_tokens_p95=1024, output_tokens_p95=512))
    until(lambda: Replica.objects.filter(deployment=deployment, state="ready").count() >= 3)
    budget(tenant_a, "5", action=Budget.Action.SCALE_TO_MINIMUM)
    spend(deployment, "6.00", time="2030-01-01T00:01", now="2030-01-01T00:20")

    evaluate("2030-01-01T00:20")

    assert refreshed(deployment).budget_replica_cap == 1
    until(lambda: holding() == 1)
    run(8)
    assert holding() == 1  # stays at the cap while the traffic would want more

    budget_lift(actor=system_actor(tenant_a.tenant), budget=Budget.objects.get(tenant=tenant_a.tenant))
    until(lambda: holding() >= 3)


# --- API: validation, scopes, tenancy -------------------------------------------------------------------------


def test_create_retrieve_update_and_delete_through_the_api(tenant_a, prices):
    deployment = deployment_of(tenant_a)
    response = tenant_a.api.post("/api/v1/budgets", {"deployment": str(deployment.public_id), "amount": "250.00",
                                                     "thresholds": [25, 75, 100], "action": "scale_to_minimum"},
                                 format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["amount"], body["currency"], body["thresholds"], body["action"], body["active"]) == (
        "250.00", "EUR", [25, 75, 100], "scale_to_minimum", True)
    assert body["spend"] == "0.00" and body["alerts"] == [] and body["action_state"] is None
    url = f"/api/v1/budgets/{body['id']}"
    assert tenant_a.api.get(url).json()["id"] == body["id"]

    response = tenant_a.api.patch(url, {"thresholds": [90], "active": False}, format="json")
    assert response.status_code == 200 and response.json()["thresholds"] == [90]
    audit = AuditEvent.objects.get(tenant=tenant_a.tenant, action="budget.update")
    assert audit.changes == {"thresholds": [[25, 75, 100], [90]], "active": [True, False]}

    assert tenant_a.api.delete(url).status_code == 204
    assert tenant_a.api.get(url).status_code == 404


@pytest.mark.parametrize("body, field, message", [
    ({"amount": "0"}, "amount", "greater than zero"),
    ({"amount": "-5"}, "amount", "greater than zero"),
    ({"amount": "10.005"}, "amount", "more decimal places than EUR"),
    ({"amount": "10", "currency": "USD"}, "currency", "billed in EUR"),
    ({"amount": "10", "currency": "usd"}, "currency", "did you mean USD"),
    ({"amount": "10", "thresholds": [80, 50]}, "thresholds", "increasing order"),
    ({"amount": "10", "thresholds": [50, 2000]}, "thresholds", "from 1 to 1000"),
    ({"amount": "10", "action": "shutdown"}, "action", ""),
    ({"amount": "10", "colour": "red"}, "colour", "Unknown field"),
    ({}, "amount", "required"),
])
def test_bad_input_is_a_400_problem_naming_the_field(tenant_a, body, field, message):
    response = tenant_a.api.post("/api/v1/budgets", body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    errors = response.json().get("errors") or [{"field": None, "message": response.json()["detail"]}]
    assert any(error["field"] == field and message in error["message"] for error in errors), errors
    assert not Budget.objects.exists()


def test_a_second_budget_for_the_same_scope_is_a_conflict(tenant_a):
    assert tenant_a.api.post("/api/v1/budgets", {"amount": "10"}, format="json").status_code == 201
    response = tenant_a.api.post("/api/v1/budgets", {"amount": "20"}, format="json")
    assert response.status_code == 409 and "already has a budget for the whole tenant" in response.json()["detail"]


def test_another_tenants_deployment_is_not_found(tenant_a, tenant_b):
    theirs = deployment_of(tenant_b)
    response = tenant_a.api.post("/api/v1/budgets", {"amount": "10", "deployment": str(theirs.public_id)},
                                 format="json")
    missing = tenant_a.api.post("/api/v1/budgets", {"amount": "10",
                                                    "deployment": "00000000-0000-0000-0000-000000000000"},
                                format="json")
    assert response.status_code == missing.status_code == 404
    assert response.json()["detail"] == missing.json()["detail"]
    assert not Budget.objects.exists()


def test_another_tenants_budget_is_not_found_and_unchanged(tenant_a, tenant_b, prices):
    theirs = budget(tenant_b, "10", action=Budget.Action.PAUSE)
    for method, path, body in [("get", "", None), ("patch", "", {"amount": "99"}), ("delete", "", None),
                               ("post", "/lift", {})]:
        response = getattr(tenant_a.api, method)(f"/api/v1/budgets/{theirs.public_id}{path}", body, format="json")
        assert response.status_code == 404, (method, path)
    theirs.refresh_from_db()
    assert theirs.amount == Decimal("10")
    assert str(theirs.public_id) not in tenant_a.api.get("/api/v1/budgets").content.decode()


def test_budgets_need_the_billing_scope(tenant_a):
    reader = tenant_a.client_with_scopes("read", "deploy")
    assert reader.get("/api/v1/budgets").status_code == 403
    assert reader.post("/api/v1/budgets", {"amount": "10"}, format="json").status_code == 403
    assert tenant_a.client_with_scopes("billing").get("/api/v1/budgets").status_code == 200


def test_the_scope_of_a_budget_cannot_be_changed(tenant_a):
    made = budget(tenant_a, "10")
    with pytest.raises(ServiceError, match="scope is fixed"):
        budget_update(actor=system_actor(tenant_a.tenant), budget=made, deployment=None)
    response = tenant_a.api.patch(f"/api/v1/budgets/{made.public_id}", {"deployment": None}, format="json")
    assert response.status_code == 400


def test_lifting_with_nothing_in_force_is_a_conflict(tenant_a):
    made = budget(tenant_a, "10", action=Budget.Action.PAUSE)
    response = tenant_a.api.post(f"/api/v1/budgets/{made.public_id}/lift", {}, format="json")
    assert response.status_code == 409 and "Nothing to lift" in response.json()["detail"]


# --- console -----------------------------------------------------------------------------------------------------


def _member_client(client, world, role):
    user = UserFactory()
    MembershipFactory(tenant=world.tenant, user=user, role=role)
    client.force_login(user)
    return client


def test_the_budgets_page_shows_spend_and_lets_billing_members_lift(client, tenant_a, prices):
    deployment = deployment_of(tenant_a)
    made = budget(tenant_a, "5", action=Budget.Action.PAUSE)
    spend_now(deployment, "6.00")
    evaluate_now()
    _member_client(client, tenant_a, Role.BILLING)

    page = client.get("/billing/budgets/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Whole tenant" in text and 'data-testid="budget-bar"' in text and 'data-testid="budget-lift"' in text
    assert client.get(f"/billing/budgets/{made.public_id}/").status_code == 200

    response = client.post(f"/billing/budgets/{made.public_id}/lift/", {"next": "detail"})
    assert response.status_code == 302 and response["Location"].endswith(f"/billing/budgets/{made.public_id}/")
    assert refreshed(deployment).status == Deployment.Status.PENDING
    assert BudgetAction.objects.get(budget=made).lifted_by.memberships.get().role == Role.BILLING


def test_the_console_form_creates_a_budget_and_shows_service_errors(client, tenant_a):
    _member_client(client, tenant_a, Role.ADMIN)
    response = client.post("/billing/budgets/", {"deployment": "", "amount": "10.001", "thresholds": "50, 80",
                                                 "action": "notify", "active": "on"})
    assert response.status_code == 200 and "more decimal places than EUR" in response.content.decode()
    response = client.post("/billing/budgets/", {"deployment": "", "amount": "12.50", "thresholds": "50%, 90",
                                                 "action": "pause", "active": "on"})
    assert response.status_code == 302
    made = Budget.objects.get(tenant=tenant_a.tenant)
    assert (made.amount, made.thresholds, made.action) == (Decimal("12.50"), [50, 90], "pause")


def test_the_budgets_page_is_for_owners_admins_and_billing_members(client, tenant_a, tenant_b):
    _member_client(client, tenant_a, Role.DEVELOPER)
    assert client.get("/billing/budgets/").status_code == 403
    theirs = budget(tenant_b, "10")
    _member_client(client, tenant_a, Role.OWNER)
    assert client.get("/billing/budgets/").status_code == 200
    assert client.get(f"/billing/budgets/{theirs.public_id}/").status_code == 404
    assert client.post(f"/billing/budgets/{theirs.public_id}/lift/").status_code == 404
    assert client.post(f"/billing/budgets/{theirs.public_id}/delete/").status_code == 404
    assert Budget.objects.filter(pk=theirs.pk).exists()


def test_budget_alerts_are_read_only_in_the_admin(admin_client, tenant_a, prices):
    deployment = deployment_of(tenant_a)
    budget(tenant_a, "5")
    spend(deployment, "6.00")
    evaluate()
    alert = BudgetAlert.objects.first()
    assert admin_client.get("/admin/billing/budgetalert/").status_code == 200
    assert admin_client.get("/admin/billing/budgetalert/add/").status_code == 403
    assert admin_client.post(f"/admin/billing/budgetalert/{alert.pk}/change/", {"threshold": 1}).status_code == 403
    assert admin_client.get("/admin/billing/budget/").status_code == 200
