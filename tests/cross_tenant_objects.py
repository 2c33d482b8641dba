"""For the cross-tenant matrix: how to make, in a tenant, the object each API route names.

Every API route with a path parameter needs an entry here, keyed by URL name; the
matrix fails on a route it cannot build an object for. An entry returns the
object (a model instance with `public_id`) and may give a body to send with
writes, so the request is valid in every way except its tenant.
"""

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


OBJECT_FACTORIES = {
    "api-model": _model,
    "api-member": _member,
    "api-invitation": _invitation,
    "api-api-key": _api_key,
    "api-audit-event": _audit_event,
}

# Objects whose history counts as "changed" if it grows (append-only logs are compared by count).
AUDITED = AuditEvent
