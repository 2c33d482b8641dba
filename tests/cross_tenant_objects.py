"""For the cross-tenant matrix: how to make, in a tenant, the object each API route names.

Every API route with a path parameter needs an entry here, keyed by URL name; the
matrix fails on a route it cannot build an object for. An entry returns the
object (a model instance with `public_id`) and may give a body to send with
writes, so the request is valid in every way except its tenant.

Operator routes (under /api/v1/fleet/, and usage ingestion) have their own entries in OPERATOR_OBJECTS:
the path value to use and the bodies that make each method's request valid.
"""

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from tests.factories import MembershipFactory, make_api_key
from tenants.context import system_actor
from tenants.models import AuditEvent, Invitation
from tenants.roles import Role


@dataclass
class Made:
    obj: object
    bodies: dict[str, dict] = field(default_factory=dict)  # method → request body


def _member(world) -> Made:
    return Made(MembershipFactory(tenant=world.tenant, role=Role.VIEWER), {"PATCH": {"role": "developer"}})


def _invitation(world) -> Made:
    invitation = Invitation.objects.create(
        tenant=world.tenant, email="invited@example.com", role=Role.VIEWER, token_hash=f"{world.tenant.pk:064d}",
        expires_at=timezone.now() + timedelta(days=1),
    )
    return Made(invitation)


def _api_key(world) -> Made:
    key, _plaintext = make_api_key(world.tenant, scopes=["read"], name="victim")
    return Made(key)


def _audit_event(world) -> Made:
    from tenants.services import audit_record

    return Made(audit_record(actor=system_actor(world.tenant), action="test.event", obj=world.tenant))


def _model(world) -> Made:
    from scheduler.services import model_create

    model = model_create(actor=system_actor(world.tenant), name="victim-model", template="llama-3.1-8b")
    return Made(model, {"PATCH": {"name": "stolen"}})


_names = itertools.count(1)


def small_fleet(region: str = "test-1", hardware: str = "h100-80gb", nodes: int = 2) -> list:
    """A region with one zone and a few nodes, made by the real import service (idempotent)."""
    from scheduler.fleet_file import FleetSpec, NodeSpec, RegionSpec, ZoneSpec
    from scheduler.models import AcceleratorType, Node
    from scheduler.services import fleet_import

    zone = f"{region}-a"
    per_node = AcceleratorType.objects.get(slug=hardware).accelerators_per_node
    spec = FleetSpec(regions=[RegionSpec(region, region)], zones=[ZoneSpec(zone, region)],
                     nodes=[NodeSpec(f"{zone}-{hardware}-{n:04d}", region, zone, hardware, per_node)
                            for n in range(1, nodes + 1)])
    fleet_import(spec=spec)
    return list(Node.objects.filter(zone__slug=zone, accelerator__slug=hardware).order_by("name"))


def make_deployment(world, name: str | None = None, **overrides):
    """A deployment of Llama 3.1 8B made by the real service, with a fleet to name regions from."""
    from scheduler.estimator import Slo, Traffic
    from scheduler.services import deployment_create, model_create

    small_fleet()
    actor = system_actor(world.tenant)
    model = model_create(actor=actor, name=f"served-model-{next(_names)}", template="llama-3.1-8b")
    arguments = {"name": name or f"victim-deployment-{next(_names)}", "model": model,
                 "slo": Slo(ttft_p95_ms=2000, tpot_p95_ms=100),
                 "traffic": Traffic(requests_per_s=1, input_tokens=512, output_tokens=256, input_tokens_p95=1024,
                                    output_tokens_p95=512),
                 **overrides}
    return deployment_create(actor=actor, **arguments)


def _deployment(world) -> Made:
    return Made(make_deployment(world), {"PATCH": {"max_replicas": 2}})


def _webhook_endpoint(world) -> Made:
    from tenants.webhooks import webhook_endpoint_create

    endpoint, _secret = webhook_endpoint_create(actor=system_actor(world.tenant), url="https://example.com/hooks",
                                                event_types=["*"])
    return Made(endpoint, {"PATCH": {"description": "stolen"}, "POST": {}})


def _webhook_delivery(world) -> Made:
    # A delivery row only: the matrix runs in a test transaction, so nothing is ever sent.
    from tenants.webhooks import webhook_endpoint_send_test

    endpoint = _webhook_endpoint(world).obj
    return Made(webhook_endpoint_send_test(actor=system_actor(world.tenant), endpoint=endpoint), {"POST": {}})


_MINIMAL_BOOK = """
version: 1
name: Cross-tenant matrix {currency}
currency: {currency}
prices:
  - {{meter: output_tokens, model: per_unit, unit_price: 0.001}}
"""


def _invoice(world) -> Made:
    """A finalized invoice of last month, made by the real services from one rollup."""
    from datetime import UTC, datetime, timedelta

    from billing.invoicing import invoice_finalize, invoice_refresh_draft, month_start
    from billing.models import Invoice
    from billing.pricebooks import default_book, pricebook_import
    from tests.billing.factories import UsageRollupFactory

    currency = world.tenant.currency
    if default_book(currency) is None:
        pricebook_import(text=_MINIMAL_BOOK.format(currency=currency))
    last_month = month_start(month_start(timezone.now()) - timedelta(days=1))
    made = Invoice.objects.filter(tenant=world.tenant, period=last_month).first()
    if made is not None:  # one per tenant and month: the matrix asks several times
        return Made(made)
    UsageRollupFactory(deployment=make_deployment(world), meter="output_tokens", quantity="1000",
                       hour=datetime(last_month.year, last_month.month, 2, 10, tzinfo=UTC))
    draft = invoice_refresh_draft(tenant=world.tenant, period=last_month)
    return Made(invoice_finalize(invoice=draft))



def _budget(world) -> Made:
    """The tenant-wide budget (one per tenant: made once, found after), with an action in force,
    so a lift from the wrong tenant would have something to change."""
    from decimal import Decimal

    from billing.budgets import budget_create
    from billing.invoicing import month_start
    from billing.models import Budget, BudgetAction

    budget = (Budget.objects.filter(tenant=world.tenant, deployment=None).first()
              or budget_create(actor=system_actor(world.tenant), amount=Decimal("100"), action="pause"))
    BudgetAction.objects.get_or_create(budget=budget, period=month_start(timezone.now()), defaults={
        "tenant": world.tenant, "action": "pause", "spend": Decimal("150"), "amount": budget.amount,
        "currency": budget.currency})
    return Made(budget, {"PATCH": {"amount": "50.00"}, "POST": {"reason": "not yours"}})


OBJECT_FACTORIES = {
    "api-invoice": _invoice,
    "api-invoice-pdf": _invoice,
    "api-invoice-rollups": _invoice,
    "api-invoice-events": _invoice,
    "api-deployment": _deployment,
    "api-deployment-pause": _deployment,
    "api-deployment-resume": _deployment,
    "api-deployment-events": _deployment,
    "api-deployment-replicas": _deployment,
    "api-deployment-metrics": _deployment,
    "api-model": _model,
    "api-member": _member,
    "api-invitation": _invitation,
    "api-api-key": _api_key,
    "api-audit-event": _audit_event,
    "api-webhook": _webhook_endpoint,
    "api-webhook-rotate-secret": _webhook_endpoint,
    "api-webhook-test": _webhook_endpoint,
    "api-webhook-deliveries": _webhook_endpoint,
    "api-webhook-delivery": _webhook_delivery,
    "api-webhook-delivery-redeliver": _webhook_delivery,
    "api-budget": _budget,
    "api-budget-lift": _budget,
}

# Objects whose history counts as "changed" if it grows (append-only logs are compared by count).
AUDITED = AuditEvent


@dataclass
class OperatorMade:
    value: str  # the path parameter
    bodies: dict[str, dict] = field(default_factory=dict)


def _node(world) -> OperatorMade:
    return OperatorMade(small_fleet()[0].name, {"POST": {"reason": "maintenance"}})


def _tenant_quotas(world) -> OperatorMade:
    return OperatorMade(str(world.tenant.public_id),
                        {"PUT": {"quotas": [{"tier": "h100-80gb-on-demand", "max_accelerators": 16}]}})


def _tenant_limits(world) -> OperatorMade:
    return OperatorMade(str(world.tenant.public_id), {"PUT": {"max_priority": 3, "default_accelerator_quota": 32}})


def _usage_batch(world) -> OperatorMade:
    deployment = make_deployment(world, token_usage_source="external")
    event = {"specversion": "1.0", "id": f"matrix-{next(_names)}", "source": "gateway/matrix",
             "type": "inference.request", "subject": str(deployment.public_id),
             "time": (timezone.now() - timedelta(minutes=1)).isoformat(),
             "data": {"input_tokens": 10, "output_tokens": 2}}
    return OperatorMade("", {"POST": {"events": [event]}})


OPERATOR_OBJECTS = {
    "api-usage-events": _usage_batch,
    "api-fleet-node": _node,
    "api-fleet-node-cordon": _node,
    "api-fleet-node-uncordon": _node,
    "api-fleet-node-drain": _node,
    "api-fleet-node-mark-down": _node,
    "api-fleet-tenant-quotas": _tenant_quotas,
    "api-fleet-tenant-limits": _tenant_limits,
}
