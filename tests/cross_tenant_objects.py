"""For the cross-tenant matrix: how to make, in a tenant, the object each API route names.

Every API route with a path parameter needs an entry here, keyed by URL name; the
matrix fails on a route it cannot build an object for. An entry returns the
object (a model instance with `public_id`) and may give a body to send with
writes, so the request is valid in every way except its tenant.

Operator routes (under /api/v1/fleet/) have their own entries in OPERATOR_OBJECTS:
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


OBJECT_FACTORIES = {
    "api-deployment": _deployment,
    "api-deployment-pause": _deployment,
    "api-deployment-resume": _deployment,
    "api-deployment-events": _deployment,
    "api-deployment-replicas": _deployment,
    "api-model": _model,
    "api-member": _member,
    "api-invitation": _invitation,
    "api-api-key": _api_key,
    "api-audit-event": _audit_event,
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


OPERATOR_OBJECTS = {
    "api-fleet-node": _node,
    "api-fleet-node-cordon": _node,
    "api-fleet-node-uncordon": _node,
    "api-fleet-node-drain": _node,
    "api-fleet-node-mark-down": _node,
    "api-fleet-tenant-quotas": _tenant_quotas,
    "api-fleet-tenant-limits": _tenant_limits,
}
