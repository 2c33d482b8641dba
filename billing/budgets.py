"""Budgets: create, change, delete, lift, and the evaluator that alerts and acts (docs/billing.md,
"Budgets"). The arithmetic is billing.budget_math's; spend is billing.selectors'
`budget_spend_for_tenants` (this month's usage lines, rated as the invoice rates them).

The evaluator (`budgets_evaluate`, a beat task every five minutes) for every active budget:

1. lifts the actions of earlier months that are still in force (a budget acts for one month);
2. computes month-to-date spend (one grouped rollup query for every tenant with a budget) and
   the forecast to the month's end;
3. for each threshold reached and not alerted this month, inserts a BudgetAlert — in a
   savepoint, so when two evaluators race the unique constraint lets one insert win and the
   other skip: only the winner notifies (one email to the owners and billing members, one
   `budget.threshold_reached` webhook per threshold);
4. at 100 %, when the budget's action is not "notify", inserts the month's BudgetAction (again
   one winner) and applies it through the scheduler's services: `scale_to_minimum` caps each
   deployment's replicas at its min_replicas, `pause` pauses it. The state before is recorded
   per deployment, so a lift restores exactly that, and a deployment the tenant had paused
   itself is not resumed.

Everything a budget does is audited (the actor names the budget) and on the deployments'
timelines. Writes for one budget are one transaction: its alerts, action, deployment changes,
webhook deliveries and audit rows commit together; the email is sent after the commit.
"""

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing import budget_math, selectors
from billing.invoicing import month_start, period_span
from billing.models import Budget, BudgetAction, BudgetAlert, default_budget_thresholds
from billing.money import CurrencyError, require_rounded, validate_currency
from scheduler.models import Deployment
from scheduler.services import (
    deployment_budget_cap_set,
    deployment_event_add,
    deployment_pause,
    deployment_resume,
)
from tenants.context import Actor
from tenants.errors import Conflict, ServiceError
from tenants.models import Tenant, User
from tenants.roles import ALL_SCOPES, Role
from tenants.services import audit_record
from tenants.webhooks import webhook_emit

logger = logging.getLogger(__name__)

THRESHOLD_EVENT = "budget.threshold_reached"
# Who is told by email: the people who answer for the money.
NOTIFIED_ROLES = (Role.OWNER, Role.BILLING)
# Deployments an action can touch: not those on their way out.
GONE = (Deployment.Status.DELETING, Deployment.Status.DELETED)


@dataclass(frozen=True)
class BudgetActor(Actor):
    """The system acting for a budget: audit rows and timelines name the budget, not "system"."""

    budget_label: str = ""

    @property
    def label(self) -> str:
        return self.budget_label or "system"


def _money(value: Decimal, currency: str) -> str:
    return selectors.money_text(value, currency)


def budget_actor(budget: Budget) -> BudgetActor:
    return BudgetActor(tenant=budget.tenant, scopes=ALL_SCOPES, budget_label=f"budget {budget_label(budget)}")


def budget_label(budget: Budget) -> str:
    """How people read a budget: "1000.00 USD / month for the whole tenant" or "… for chat-prod"."""
    scope = f"deployment {budget.deployment.name}" if budget.deployment_id else "the whole tenant"
    return f"{_money(budget.amount, budget.currency)} {budget.currency} / month for {scope}"


# --- Create, change, delete ---------------------------------------------------------------------


def _checked_amount(amount: Decimal, currency: str) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise ServiceError("amount must be a decimal number, e.g. \"500.00\".", field="amount")
    amount = Decimal(amount)
    if not amount.is_finite() or amount <= 0:
        raise ServiceError("A budget's amount must be greater than zero.", field="amount")
    try:
        return require_rounded(amount, currency, "amount")
    except CurrencyError as error:
        raise ServiceError(str(error), field="amount") from None


def _checked_currency(tenant: Tenant, currency: str | None) -> str:
    currency = tenant.currency if currency in (None, "") else currency
    try:
        validate_currency(currency)
    except CurrencyError as error:
        raise ServiceError(str(error), field="currency") from None
    if currency != tenant.currency:
        raise ServiceError(f"{tenant.name} is billed in {tenant.currency}: a budget in {currency} could never be "
                           f"compared with its spend. Use {tenant.currency}.", field="currency")
    return currency


def _checked_thresholds(thresholds) -> list[int]:
    errors = budget_math.threshold_errors(thresholds)
    if errors:
        raise ServiceError(" ".join(errors), field="thresholds")
    return list(thresholds)


def _checked_action(action: str) -> str:
    if action not in Budget.Action.values:
        raise ServiceError(f"action must be one of {', '.join(Budget.Action.values)}.", field="action")
    return action


def budget_fields_checked(tenant: Tenant, fields: dict) -> dict:
    """The editable fields given (amount, currency, thresholds, action, active), checked against
    the rules, or ServiceError naming the first field at fault. Currency defaults to the tenant's."""
    currency = _checked_currency(tenant, fields.get("currency"))
    checked = {"currency": currency}
    if "amount" in fields:
        checked["amount"] = _checked_amount(fields["amount"], currency)
    if "thresholds" in fields:
        checked["thresholds"] = _checked_thresholds(fields["thresholds"])
    if "action" in fields:
        checked["action"] = _checked_action(fields["action"])
    if "active" in fields:
        checked["active"] = bool(fields["active"])
    return checked


def _duplicate(tenant: Tenant, deployment: Deployment | None) -> Conflict:
    if deployment is None:
        return Conflict(f"{tenant.name} already has a budget for the whole tenant: change that one.",
                        field="deployment")
    return Conflict(f"Deployment {deployment.name} already has a budget: change that one.", field="deployment")


@transaction.atomic
def budget_create(*, actor: Actor, amount: Decimal, currency: str | None = None,
                  deployment: Deployment | None = None, thresholds: list[int] | None = None,
                  action: str = Budget.Action.NOTIFY, active: bool = True) -> Budget:
    """A monthly budget for the actor's tenant, or for one of its deployments (fetched by the
    caller through the tenant, so another tenant's deployment never gets here)."""
    tenant = actor.tenant
    if deployment is not None and (deployment.tenant_id != tenant.pk or deployment.status in GONE):
        raise ServiceError("No such deployment in this tenant.", field="deployment")
    checked = budget_fields_checked(tenant, {
        "amount": amount, "currency": currency, "action": action, "active": active,
        "thresholds": default_budget_thresholds() if thresholds is None else thresholds})
    budget = Budget(tenant=tenant, deployment=deployment, created_by=actor.user, **checked)
    if Budget.objects.filter(tenant=tenant, deployment=deployment).exists():
        raise _duplicate(tenant, deployment)
    try:
        with transaction.atomic():
            budget.save()
    except IntegrityError:
        raise _duplicate(tenant, deployment) from None  # created meanwhile by a concurrent request
    audit_record(actor=actor, action="budget.create", obj=budget, changes=_public(budget))
    return budget


def _public(budget: Budget) -> dict:
    return {"deployment": budget.deployment.name if budget.deployment_id else None,
            "amount": _money(budget.amount, budget.currency), "currency": budget.currency,
            "thresholds": list(budget.thresholds), "action": budget.action, "active": budget.active}


BUDGET_EDITABLE = ("amount", "currency", "thresholds", "action", "active")


def _locked(actor: Actor, budget: Budget) -> Budget:
    # of=self: the deployment join is nullable, and PostgreSQL locks no row of an outer join's null side.
    return (Budget.objects.select_for_update(of=("self",)).select_related("deployment", "tenant")
            .get(pk=budget.pk, tenant=actor.tenant))


@transaction.atomic
def budget_update(*, actor: Actor, budget: Budget, **changes) -> Budget:
    """Change a budget. Its scope (tenant or deployment) is fixed: make another budget instead.
    Alerts already sent this month stay sent; an action in force stays until lifted (raising
    the amount above spend is the moment to lift it: the API and console offer it)."""
    for name in changes:
        if name not in BUDGET_EDITABLE:
            raise ServiceError(f"{name} cannot be changed: a budget's scope is fixed; delete it and make another.",
                               field=name)
    budget = _locked(actor, budget)
    checked = budget_fields_checked(actor.tenant, {"currency": budget.currency, **changes})
    before = _public(budget)
    for name, value in checked.items():
        setattr(budget, name, value)
    after = _public(budget)
    diff = {name: [before[name], after[name]] for name in after if before[name] != after[name]}
    if not diff:
        return budget
    budget.updated_at = timezone.now()
    budget.save()
    audit_record(actor=actor, action="budget.update", obj=budget, changes=diff)
    return budget


@transaction.atomic
def budget_delete(*, actor: Actor, budget: Budget) -> None:
    """Delete a budget; an action of it in force is lifted first, so nothing stays capped or
    paused by a budget that no longer exists. The audit log keeps its history."""
    budget = _locked(actor, budget)
    for action in _in_force(budget):
        _lift(action, actor=actor, reason="The budget was deleted.", now=timezone.now())
    audit_record(actor=actor, action="budget.delete", obj=budget, changes=_public(budget))
    budget.delete()


# --- Lifting --------------------------------------------------------------------------------------


def _in_force(budget: Budget):
    return BudgetAction.objects.select_for_update().filter(budget=budget, lifted_at__isnull=True).order_by("period")


@transaction.atomic
def budget_lift(*, actor: Actor, budget: Budget, reason: str = "", now: datetime | None = None) -> BudgetAction:
    """The tenant lifts the budget's action in force: caps go back to what they were, deployments
    the budget paused resume (not those that were paused before it acted). Conflict when
    nothing is in force."""
    actions = list(_in_force(budget))
    if not actions:
        raise Conflict("Nothing to lift: this budget has no action in force (it only acts once spend reaches "
                       "100 %, and a new month lifts it by itself).")
    reason = (reason or "").strip()[:300] or f"Lifted by {actor.label}."
    for action in actions:
        _lift(action, actor=actor, reason=reason, now=now or timezone.now())
    return actions[-1]


def _serialise_actions_of(tenant_id: int) -> None:
    """Applying and lifting actions of one tenant take turns (the tenant row, locked): each decides
    from the others' state, so two lifts of actions holding the same deployment cannot both see
    the other still in force and leave it capped."""
    Tenant.objects.select_for_update().filter(pk=tenant_id).first()


def _lift(action: BudgetAction, *, actor: Actor, reason: str, now: datetime) -> BudgetAction:
    """Restore every deployment the action changed, unless another action in force still holds it."""
    _serialise_actions_of(action.tenant_id)
    others = list(BudgetAction.objects.filter(tenant_id=action.tenant_id, lifted_at__isnull=True,
                                              action=action.action).exclude(pk=action.pk))
    held_elsewhere = {entry["id"] for other in others for entry in other.deployments if entry.get("applied")}
    deployments = Deployment.all_objects.in_bulk([entry["id"] for entry in action.deployments])
    outcomes = []
    for entry in action.deployments:
        deployment = deployments.get(entry["id"])
        outcome = _restore(action, entry, deployment, held_elsewhere, actor=actor, reason=reason)
        outcomes.append({**entry, "lift": outcome})
    action.deployments = outcomes
    action.lifted_at, action.lifted_by, action.lift_reason = now, actor.user, reason
    action.save(update_fields=["deployments", "lifted_at", "lifted_by", "lift_reason"])
    audit_record(actor=actor, action="budget.lift", obj=action.budget,
                 changes={"action": action.action, "period": action.period.isoformat(), "reason": reason,
                          "deployments": {entry["name"]: entry["lift"] for entry in outcomes}})
    return action


def _restore(action: BudgetAction, entry: dict, deployment: Deployment | None, held_elsewhere: set[int], *,
             actor: Actor, reason: str) -> str:
    """Undo the action on one deployment; returns what was done, for the record."""
    if not entry.get("applied"):
        return "unchanged: the action had not changed it"
    if deployment is None or deployment.status in GONE:
        return "nothing to restore: the deployment is deleted"
    if deployment.pk in held_elsewhere:
        return "kept: another budget's action in force still holds it"
    if action.action == BudgetAction.Kind.SCALE_TO_MINIMUM:
        cap = entry["budget_replica_cap"]
        deployment_budget_cap_set(actor=actor, deployment=deployment, cap=cap, reason=reason)
        return f"replica cap back to {'none' if cap is None else cap}"
    if deployment.status != Deployment.Status.PAUSED:
        return "unchanged: it was resumed meanwhile"
    deployment_resume(actor=actor, deployment=deployment)
    deployment_event_add(deployment=deployment, kind="budget_resumed", message=f"Resumed by {actor.label}: {reason}",
                         data={"budget": str(action.budget.public_id)})
    return "resumed"


def budget_actions_lift_expired(*, now: datetime) -> int:
    """Lift the actions of months before `now`'s: a budget acts within its month only. Each in
    its own transaction; returns how many were lifted."""
    period = month_start(now)
    lifted = 0
    for action_id in (BudgetAction.objects.filter(lifted_at__isnull=True, period__lt=period)
                      .order_by("period", "pk").values_list("pk", flat=True)):
        with transaction.atomic():
            action = (BudgetAction.objects.select_for_update(of=("self",))
                      .select_related("budget__tenant", "budget__deployment")
                      .filter(pk=action_id, lifted_at__isnull=True).first())
            if action is None:
                continue  # another evaluator lifted it
            _lift(action, actor=budget_actor(action.budget), now=now,
                  reason=f"{period:%B %Y} began: the action of {action.period:%B %Y} ends with its month.")
            lifted += 1
    return lifted


# --- Evaluation -----------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    budgets: int = 0
    alerts: int = 0
    actions: int = 0
    lifted: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"budgets": self.budgets, "alerts": self.alerts, "actions": self.actions, "lifted": self.lifted,
                "failed": len(self.failed)}


@dataclass(frozen=True)
class Crossing:
    """What one evaluation found for one budget: spend now, and what is due."""

    budget: Budget
    period: date
    spend: Decimal
    forecast: Decimal
    thresholds: list[int]  # reached and not alerted yet
    act: bool  # the action at 100 % is due


def budgets_evaluate(*, now: datetime | None = None) -> EvaluationReport:
    """Evaluate every active budget for the month of `now` (see the module docstring). Safe to
    run twice or concurrently: the constraints let each alert and action happen once."""
    now = now or timezone.now()
    report = EvaluationReport(lifted=budget_actions_lift_expired(now=now))
    period = month_start(now)
    budgets = list(Budget.objects.filter(active=True).select_related("tenant", "deployment").order_by("pk"))
    report.budgets = len(budgets)
    if not budgets:
        return report
    spends = selectors.budget_spend_for_tenants({budget.tenant for budget in budgets}, period)
    alerted = selectors.budget_alerted_thresholds(period)
    acted = selectors.budget_acted(period)
    for budget in budgets:
        crossing = _crossing(budget, spends[budget.tenant_id], period, now, alerted, acted, report)
        if crossing is not None and (crossing.thresholds or crossing.act):
            _record(crossing, now, report)
    return report


def _crossing(budget: Budget, spend: selectors.TenantSpend, period: date, now: datetime,
              alerted: dict[int, set[int]], acted: set[int], report: EvaluationReport) -> Crossing | None:
    problem = selectors.budget_spend_problem(budget, spend)
    if problem:
        logger.warning("budget %s of tenant %s not evaluated: %s", budget.public_id, budget.tenant_id, problem)
        report.failed.append(f"{budget.public_id}: {problem}")
        return None
    spent = spend.of(budget)
    span = period_span(period)
    return Crossing(
        budget=budget, period=period, spend=spent,
        forecast=budget_math.forecast(spent, period_start=span.start, period_end=span.end, now=now,
                                      currency=budget.currency),
        thresholds=budget_math.new_thresholds(budget_math.thresholds_reached(spent, budget.amount, budget.thresholds),
                                              alerted.get(budget.pk, ())),
        act=(budget.action != Budget.Action.NOTIFY and budget.pk not in acted
             and budget_math.limit_reached(spent, budget.amount)))


def _record(crossing: Crossing, now: datetime, report: EvaluationReport) -> None:
    """One budget's new alerts and action, in one transaction; notifications only for what this
    evaluator inserted."""
    budget = crossing.budget
    try:
        with transaction.atomic():
            inserted = [alert for threshold in crossing.thresholds
                        if (alert := _alert_insert(crossing, threshold, now)) is not None]
            action = _action_apply(crossing, now) if crossing.act else None
            if inserted or action is not None:
                _notify(crossing, inserted, action)
    except ServiceError as error:
        # A refusal by a scheduler service rolls the whole budget back; the next run retries it.
        logger.warning("budget %s: could not record its crossing: %s", budget.public_id, error.message)
        report.failed.append(f"{budget.public_id}: {error.message}")
        return
    report.alerts += len(inserted)
    report.actions += action is not None


def _alert_insert(crossing: Crossing, threshold: int, now: datetime) -> BudgetAlert | None:
    """Insert the alert, or None when another evaluator already did (the unique constraint)."""
    budget = crossing.budget
    try:
        with transaction.atomic():
            return BudgetAlert.objects.create(tenant_id=budget.tenant_id, budget=budget, period=crossing.period,
                                              threshold=threshold, reached_at=now, spend=crossing.spend,
                                              forecast=crossing.forecast, amount=budget.amount,
                                              currency=budget.currency)
    except IntegrityError:
        return None


def _affected(budget: Budget) -> list[Deployment]:
    deployments = Deployment.objects.filter(tenant_id=budget.tenant_id).exclude(status__in=GONE).order_by("pk")
    if budget.deployment_id:
        deployments = deployments.filter(pk=budget.deployment_id)
    return list(deployments)


def _state_before(deployment: Deployment, holding: dict[int, dict]) -> dict:
    """The deployment's state before any budget touched it: when another action in force holds it,
    the state that one recorded (so lifting both, in any order, ends where things began)."""
    earlier = holding.get(deployment.pk)
    return {"id": deployment.pk, "public_id": str(deployment.public_id), "name": deployment.name,
            "min_replicas": deployment.min_replicas, "max_replicas": deployment.max_replicas,
            "budget_replica_cap": earlier["budget_replica_cap"] if earlier else deployment.budget_replica_cap,
            "status": earlier["status"] if earlier else deployment.status}


def _action_apply(crossing: Crossing, now: datetime) -> BudgetAction | None:
    """Insert the month's action (None when another evaluator did) and apply it to the deployments."""
    budget = crossing.budget
    try:
        with transaction.atomic():
            action = BudgetAction.objects.create(tenant_id=budget.tenant_id, budget=budget, period=crossing.period,
                                                 action=budget.action, spend=crossing.spend, amount=budget.amount,
                                                 currency=budget.currency, applied_at=now)
    except IntegrityError:
        return None
    _serialise_actions_of(budget.tenant_id)
    holding = {entry["id"]: entry
               for other in BudgetAction.objects.filter(tenant_id=budget.tenant_id, lifted_at__isnull=True,
                                                        action=budget.action).exclude(pk=action.pk)
               for entry in other.deployments if entry.get("applied")}
    actor = budget_actor(budget)
    currency = budget.currency
    why = (f"month-to-date spend {_money(crossing.spend, currency)} {currency} reached the budget of "
           f"{_money(budget.amount, currency)} {currency}")
    entries = []
    for deployment in _affected(budget):
        entry = _state_before(deployment, holding)
        entry["applied"], entry["note"] = _apply_to(budget.action, deployment, held=deployment.pk in holding,
                                                    actor=actor, why=why)
        entries.append(entry)
    action.deployments = entries
    action.save(update_fields=["deployments"])
    audit_record(actor=actor, action="budget.action_apply", obj=budget,
                 changes={"action": budget.action, "period": crossing.period.isoformat(),
                          "spend": _money(crossing.spend, currency), "amount": _money(budget.amount, currency),
                          "deployments": {entry["name"]: entry["note"] for entry in entries}})
    return action


def _apply_to(kind: str, deployment: Deployment, *, held: bool, actor: Actor, why: str) -> tuple[bool, str]:
    """Apply the action to one deployment through the scheduler's services: (applied?, note).

    `held`: another budget's action in force already caps or pauses it. This action then holds
    it too (applied), so lifting either one alone does not release it. A deployment capped or
    paused by anything else (the tenant) is left as it is (not applied: a lift will not touch it).
    """
    if kind == Budget.Action.SCALE_TO_MINIMUM:
        current, cap = deployment.budget_replica_cap, deployment.min_replicas
        if current is not None and current <= cap and not held:
            return False, f"already capped at {current}"
        cap = cap if current is None else min(cap, current)
        deployment_budget_cap_set(actor=actor, deployment=deployment, cap=cap, reason=why)
        return True, f"capped at {cap} (min_replicas {deployment.min_replicas})"
    if deployment.status == Deployment.Status.PAUSED:
        return (True, "paused (already, by another budget)") if held else (False, "already paused")
    deployment_pause(actor=actor, deployment=deployment)
    deployment_event_add(deployment=deployment, kind="budget_paused", message=f"Paused by {actor.label}: {why}.",
                         data={"budget": actor.label})
    return True, "paused"


# --- Notifying ------------------------------------------------------------------------------------


def threshold_event_data(crossing: Crossing, threshold: int, action: BudgetAction | None) -> dict:
    """The `budget.threshold_reached` webhook's data (docs/webhooks.md)."""
    budget, currency = crossing.budget, crossing.budget.currency
    return {"budget": str(budget.public_id),
            "deployment": str(budget.deployment.public_id) if budget.deployment_id else None,
            "deployment_name": budget.deployment.name if budget.deployment_id else None,
            "period": crossing.period.isoformat(), "threshold": threshold, "currency": budget.currency,
            "amount": _money(budget.amount, currency), "spend": _money(crossing.spend, currency),
            "forecast": _money(crossing.forecast, currency),
            "percent_used": f"{budget_math.percent_used(crossing.spend, budget.amount):f}",
            "action": budget.action,
            "action_applied": action is not None and threshold >= budget_math.LIMIT_PERCENT}


def _notify(crossing: Crossing, alerts: list[BudgetAlert], action: BudgetAction | None) -> None:
    budget = crossing.budget
    actor = budget_actor(budget)
    for alert in alerts:
        webhook_emit(tenant=budget.tenant, event_type=THRESHOLD_EVENT,
                     data=threshold_event_data(crossing, alert.threshold, action))
        audit_record(actor=actor, action="budget.threshold_reached", obj=budget,
                     changes={"threshold": alert.threshold, "period": crossing.period.isoformat(),
                              "spend": _money(crossing.spend, budget.currency),
                              "forecast": _money(crossing.forecast, budget.currency)})
    recipients = notified_emails(budget.tenant)
    if recipients:
        subject, body = alert_email(crossing, [alert.threshold for alert in alerts], action)
        # robust: a mail server that is down must not undo the alert; it is logged.
        transaction.on_commit(partial(send_mail, subject=subject, message=body, from_email=None,
                                      recipient_list=recipients), robust=True)


def notified_emails(tenant: Tenant) -> list[str]:
    return sorted(set(User.objects.filter(memberships__tenant=tenant, memberships__role__in=NOTIFIED_ROLES,
                                          is_active=True).values_list("email", flat=True)))


def alert_email(crossing: Crossing, thresholds: list[int], action: BudgetAction | None) -> tuple[str, str]:
    """Subject and text of the email: what was reached, the numbers, what happened, where to act."""
    budget, currency = crossing.budget, crossing.budget.currency
    tenant = budget.tenant
    percent = budget_math.percent_used(crossing.spend, budget.amount)
    reached = ", ".join(f"{threshold} %" for threshold in thresholds)
    subject = (f"{tenant.name}: {reached} of the budget reached" if thresholds
               else f"{tenant.name}: the budget's action was applied")
    lines = [
        f"The budget of {budget_label(budget)} in {tenant.name} "
        + (f"has reached {reached}." if thresholds else "has been reached."),
        "",
        f"Spend in {crossing.period:%B %Y} so far: {_money(crossing.spend, currency)} {currency} ({percent:f} % of "
        f"{_money(budget.amount, currency)} {currency}), before credits and tax.",
        f"Forecast for the whole month: {_money(crossing.forecast, currency)} {currency}.",
    ]
    if action is not None:
        changed = [entry["name"] for entry in action.deployments if entry.get("applied")]
        done = "scaled down to their minimum" if action.action == BudgetAction.Kind.SCALE_TO_MINIMUM else "paused"
        lines += ["", f"As the budget asks, {len(changed)} deployment{'s' if len(changed) != 1 else ''} "
                      f"{'were' if len(changed) != 1 else 'was'} {done}: {', '.join(changed) or 'none'}. "
                      f"This lasts until the month ends or you lift it."]
    lines += ["", f"Budgets, and the lift button: {settings.SITE_URL}{reverse('budgets')}"]
    return subject, "\n".join(lines)
