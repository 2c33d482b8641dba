"""Writes of webhooks: endpoints, emitting events, and delivering them (docs/webhooks.md).

Any app tells a tenant's endpoints about an event with `webhook_emit(tenant=…, event_type=…,
data=…)`, inside the transaction that made the change: the deliveries are rows written in
that transaction, so an event of a rolled-back change is never sent, and an immediate attempt
is enqueued only on commit. The periodic sweep (`webhook_deliveries_send_due`, every few
seconds from beat) sends whatever is due: retries, and first attempts whose task was lost.

Claiming: a worker takes a due delivery with one conditional UPDATE that pushes
`next_attempt_at` a lease into the future and counts the attempt; on PostgreSQL the sweep
first picks a row with SELECT … FOR UPDATE SKIP LOCKED, so concurrent sweeps do not queue on
one another. The HTTP request is made outside any transaction; its outcome is written only
if the delivery is still that worker's (same attempt number, still pending), and the attempt
is logged either way.
"""

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tenants.context import Actor
from tenants.errors import Conflict, ServiceError
from tenants.models import Tenant, WebhookDelivery, WebhookEndpoint
from tenants.services import audit_record
from tenants.webhook_sending import AttemptResult, UrlRefused, check_url, next_attempt_at, post
from tenants.webhook_signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    generate_secret,
    signature_header,
)

logger = logging.getLogger(__name__)

# The event types endpoints can subscribe to: name → what it means. An app that emits a new
# type adds it with `webhook_event_type_register` (at import or in its AppConfig.ready).
EVENT_TYPES: dict[str, str] = {
    "invoice.finalized": "An invoice was finalized: its number, period, currency and totals are fixed.",
    "budget.threshold_reached": "Month-to-date spend crossed one of a budget's alert thresholds.",
    "deployment.status_changed": "A deployment's status changed (e.g. deploying → ready, ready → degraded).",
}
# Sent only to the one endpoint a person tests; never subscribed to, never emitted.
TEST_EVENT = "webhook.test"
ALL_EVENTS = WebhookEndpoint.ALL_EVENTS

MAX_ENDPOINTS_PER_TENANT = 20
PREVIOUS_SECRET_MAX_HOURS = 72
# How long a claimed delivery is a worker's: longer than any attempt (timeouts 15 s), so a
# live worker never loses one; a worker that died mid-attempt leaves it due again after this.
LEASE = timedelta(minutes=2)
# One sweep stops claiming after this long (the Celery soft time limit is 240 s); the next
# beat starts another.
SWEEP_BUDGET_SECONDS = 50.0
ATTEMPT_LOG_LIMIT = 100
# Finished deliveries (succeeded or given up) are kept this long for the delivery log, then purged.
DELIVERY_RETENTION = timedelta(days=30)
USER_AGENT = "Switchyard-Webhooks/1"

_rng = random.SystemRandom()


def webhook_event_type_register(name: str, description: str) -> None:
    """Make `name` an event type endpoints can subscribe to and `webhook_emit` accepts."""
    if name == TEST_EVENT or name == ALL_EVENTS:
        raise ValueError(f"{name!r} is reserved.")
    EVENT_TYPES.setdefault(name, description)


# --- Endpoints ----------------------------------------------------------------------------


def _checked_url(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ServiceError("A webhook endpoint needs a URL.", field="url")
    try:
        check_url(url, allow_private=settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE)
    except UrlRefused as refused:
        raise ServiceError(str(refused), field="url") from None
    return url


def _checked_event_types(event_types: list[str]) -> list[str]:
    chosen = {str(name).strip() for name in event_types or []}
    if not chosen:
        raise ServiceError(f"Choose at least one event type, or {ALL_EVENTS!r} for all of them.", field="event_types")
    if ALL_EVENTS in chosen:
        return [ALL_EVENTS]
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise ServiceError(f"Unknown event types: {', '.join(unknown)}. Choose from {', '.join(sorted(EVENT_TYPES))}, "
                           f"or {ALL_EVENTS!r} for all.", field="event_types")
    return sorted(chosen)


def _checked_description(description: str) -> str:
    description = (description or "").strip()
    if len(description) > 200:
        raise ServiceError("A description has at most 200 characters.", field="description")
    return description


@transaction.atomic
def webhook_endpoint_create(*, actor: Actor, url: str, event_types: list[str],
                            description: str = "") -> tuple[WebhookEndpoint, str]:
    """A new active endpoint; returns it and its signing secret, which is shown to the tenant only now."""
    url, event_types = _checked_url(url), _checked_event_types(event_types)
    description = _checked_description(description)
    # Serialised per tenant, so two concurrent creations cannot both pass the limit.
    Tenant.objects.select_for_update().filter(pk=actor.tenant.pk).first()
    if WebhookEndpoint.objects.filter(tenant=actor.tenant).count() >= MAX_ENDPOINTS_PER_TENANT:
        raise Conflict(f"A tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete one first, or "
                       f"subscribe an existing endpoint to more event types.")
    secret = generate_secret()
    endpoint = WebhookEndpoint.objects.create(tenant=actor.tenant, url=url, description=description,
                                              event_types=event_types, secret=secret)
    audit_record(actor=actor, action="webhook_endpoint.create", obj=endpoint,
                 changes={"url": url, "event_types": event_types})
    return endpoint, secret


WEBHOOK_ENDPOINT_EDITABLE = {
    "url": _checked_url,
    "description": _checked_description,
    "event_types": _checked_event_types,
    "is_active": bool,
}


def _locked_endpoint(actor: Actor, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    return WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk, tenant=actor.tenant)


@transaction.atomic
def webhook_endpoint_update(*, actor: Actor, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Change an endpoint's URL, description, event types or active flag. Disabling it gives up
    its pending deliveries (a disabled endpoint is sent nothing); redeliver them after enabling."""
    endpoint = _locked_endpoint(actor, endpoint)
    diff = {}
    for field, value in changes.items():
        check = WEBHOOK_ENDPOINT_EDITABLE.get(field)
        if check is None:
            raise ServiceError(f"{field} cannot be changed.", field=field)
        value = check(value)
        if getattr(endpoint, field) != value:
            diff[field] = [getattr(endpoint, field), value]
            setattr(endpoint, field, value)
    if not diff:
        return endpoint
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=[*diff, "updated_at"])
    if diff.get("is_active") == [True, False]:
        endpoint.deliveries.filter(state=WebhookDelivery.State.PENDING).update(
            state=WebhookDelivery.State.FAILED, next_attempt_at=None, last_error="Not sent: the endpoint was disabled.")
    audit_record(actor=actor, action="webhook_endpoint.update", obj=endpoint, changes=diff)
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, actor: Actor, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its delivery history; nothing more is sent to it."""
    endpoint = _locked_endpoint(actor, endpoint)
    audit_record(actor=actor, action="webhook_endpoint.delete", obj=endpoint, changes={"url": endpoint.url})
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_rotate_secret(*, actor: Actor, endpoint: WebhookEndpoint,
                                   previous_valid_hours: int = 0) -> tuple[WebhookEndpoint, str]:
    """A new signing secret, returned (and shown) once. The old one stops signing now, or after
    `previous_valid_hours` (at most 72) during which requests carry a signature with each."""
    if not isinstance(previous_valid_hours, int) or not 0 <= previous_valid_hours <= PREVIOUS_SECRET_MAX_HOURS:
        raise ServiceError(f"previous_secret_valid_hours must be a whole number from 0 to {PREVIOUS_SECRET_MAX_HOURS}.",
                           field="previous_secret_valid_hours")
    endpoint = _locked_endpoint(actor, endpoint)
    now = timezone.now()
    if previous_valid_hours:
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + timedelta(hours=previous_valid_hours)
    else:
        endpoint.previous_secret, endpoint.previous_secret_expires_at = "", None
    secret = generate_secret()
    endpoint.secret, endpoint.updated_at = secret, now
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    expires = endpoint.previous_secret_expires_at
    audit_record(actor=actor, action="webhook_endpoint.rotate_secret", obj=endpoint,
                 changes={"previous_secret_valid_until": expires.isoformat() if expires else None})
    return endpoint, secret


# --- Emitting -----------------------------------------------------------------------------


def _event_payload(*, event_id: uuid.UUID, event_type: str, tenant: Tenant, data: dict, created: datetime) -> dict:
    return {
        "id": str(event_id),
        "type": event_type,
        "created": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tenant": str(tenant.public_id),
        "data": data,
    }


def _plain_json(data) -> dict:
    """`data` as plain JSON values (UUIDs, datetimes and Decimals become strings), or ValueError."""
    if not isinstance(data, dict):
        raise ValueError("Webhook event data must be a dict.")
    try:
        return json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    except TypeError as error:
        raise ValueError(f"Webhook event data must be JSON-serialisable: {error}") from None


def _delivery_create(*, endpoint: WebhookEndpoint, event_id: uuid.UUID, event_type: str, payload: dict,
                     now: datetime) -> WebhookDelivery:
    return WebhookDelivery.objects.create(tenant_id=endpoint.tenant_id, endpoint=endpoint, event_id=event_id,
                                          event_type=event_type, payload=payload, created_at=now, next_attempt_at=now)


def _send_on_commit(deliveries: list[WebhookDelivery]) -> None:
    if deliveries:
        # robust: a broker that is down must not fail the caller's committed request; the sweep sends them.
        transaction.on_commit(partial(_enqueue_attempts, [delivery.pk for delivery in deliveries]), robust=True)


def _enqueue_attempts(delivery_ids: list[int]) -> None:
    from tenants.tasks import webhook_deliver_task  # tasks import this module

    for delivery_id in delivery_ids:
        webhook_deliver_task.delay(delivery_id)


def webhook_emit(*, tenant: Tenant, event_type: str, data: dict, now: datetime | None = None) -> list[WebhookDelivery]:
    """Tell every active endpoint of `tenant` subscribed to `event_type`: one delivery each, written
    in the caller's transaction (rolled back with it), sent after it commits. Returns the deliveries
    (none when no endpoint listens). An unknown event type is a programming error: ValueError."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown webhook event type {event_type!r}: register it with webhook_event_type_register.")
    data = _plain_json(data)
    endpoints = [endpoint for endpoint in WebhookEndpoint.objects.filter(tenant=tenant, is_active=True)
                 if endpoint.subscribes_to(event_type)]
    if not endpoints:
        return []
    now = now or timezone.now()
    event_id = uuid.uuid4()
    payload = _event_payload(event_id=event_id, event_type=event_type, tenant=tenant, data=data, created=now)
    with transaction.atomic():
        deliveries = [_delivery_create(endpoint=endpoint, event_id=event_id, event_type=event_type, payload=payload,
                                       now=now) for endpoint in endpoints]
    _send_on_commit(deliveries)
    return deliveries


@transaction.atomic
def webhook_endpoint_send_test(*, actor: Actor, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send a `webhook.test` event to this one endpoint, whatever it subscribes to."""
    endpoint = _locked_endpoint(actor, endpoint)
    if not endpoint.is_active:
        raise Conflict("This endpoint is disabled: enable it to send it a test event.")
    now = timezone.now()
    event_id = uuid.uuid4()
    data = {"message": "A test event from Switchyard: this endpoint receives signed events.",
            "endpoint": str(endpoint.public_id)}
    payload = _event_payload(event_id=event_id, event_type=TEST_EVENT, tenant=actor.tenant, data=data, created=now)
    delivery = _delivery_create(endpoint=endpoint, event_id=event_id, event_type=TEST_EVENT, payload=payload, now=now)
    audit_record(actor=actor, action="webhook_endpoint.test", obj=endpoint, changes={"event_id": str(event_id)})
    _send_on_commit([delivery])
    return delivery


@transaction.atomic
def webhook_delivery_redeliver(*, actor: Actor, delivery: WebhookDelivery,
                               now: datetime | None = None) -> WebhookDelivery:
    """Attempt the delivery again now, with the same event id. If that attempt fails, retries follow
    the usual schedule while the event is younger than the retry window; after it, it was the last."""
    delivery = (WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
                .get(pk=delivery.pk, tenant=actor.tenant))
    if not delivery.endpoint.is_active:
        raise Conflict("The endpoint is disabled: enable it, then redeliver.")
    delivery.state, delivery.next_attempt_at = WebhookDelivery.State.PENDING, now or timezone.now()
    delivery.save(update_fields=["state", "next_attempt_at"])
    audit_record(actor=actor, action="webhook_delivery.redeliver", obj=delivery,
                 changes={"event_id": str(delivery.event_id), "event_type": delivery.event_type})
    _send_on_commit([delivery])
    return delivery


# --- Delivering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    delivery: WebhookDelivery  # as claimed, with its endpoint
    attempt: int  # the attempt number this claim made; the outcome is written only if it is still current


def _claim(delivery_id: int, now: datetime) -> Claim | None:
    """Take the delivery for one attempt if it is still pending and due: one conditional UPDATE."""
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now,
    ).update(next_attempt_at=now + LEASE, attempts=F("attempts") + 1)
    if claimed != 1:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "tenant").get(pk=delivery_id)
    return Claim(delivery=delivery, attempt=delivery.attempts)


def _claim_next_due(now: datetime) -> Claim | None:
    """The most overdue delivery, claimed; None when nothing is due. On PostgreSQL rows another
    worker is claiming are skipped, not waited for; the UPDATE's conditions make the claim safe
    on SQLite too (and against any row that changed since it was read)."""
    due = WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now)
    if not due.exists():
        return None  # the usual case: no write transaction (on SQLite, no write lock) to find that out
    with transaction.atomic():
        due = due.order_by("next_attempt_at", "pk").select_for_update(skip_locked=True)
        delivery_id = due.values_list("pk", flat=True).first()
        return None if delivery_id is None else _claim(delivery_id, now)


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> str | None:
    """The attempt enqueued on commit: send the delivery if it is still due and nobody else has
    it. Returns the delivery's state afterwards, or None when there was nothing to do."""
    claim = _claim(delivery_id, now or timezone.now())
    return None if claim is None else _attempt(claim, now)


def webhook_deliveries_send_due(*, now: datetime | None = None, budget_seconds: float = SWEEP_BUDGET_SECONDS) -> int:
    """The sweep: claim and send due deliveries one at a time until none is due or the budget is
    spent. Safe to run in many workers at once: each delivery is claimed by one. Returns how many
    were attempted. `now` (for tests) fixes the clock of scheduling; signatures use the real one."""
    started = time.monotonic()
    attempted = 0
    while time.monotonic() - started < budget_seconds:
        claim = _claim_next_due(now or timezone.now())
        if claim is None:
            break
        _attempt(claim, now)
        attempted += 1
    return attempted


def request_headers(delivery: WebhookDelivery, body: bytes, *, attempt: int, now: datetime) -> dict[str, str]:
    """The headers of one attempt, signed with the endpoint's current secret(s) at the real clock's time
    (receivers check the timestamp against theirs)."""
    secrets_ = delivery.endpoint.signing_secrets(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secrets_, int(time.time()), body),
        EVENT_ID_HEADER: str(delivery.event_id),
        EVENT_TYPE_HEADER: delivery.event_type,
        "Switchyard-Delivery-Attempt": str(attempt),
    }


def request_body(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


def _attempt(claim: Claim, now: datetime | None) -> str | None:
    delivery = claim.delivery
    if not delivery.endpoint.is_active:
        result = AttemptResult(status_code=None, error="Not sent: the endpoint is disabled.", duration_ms=0)
    else:
        body = request_body(delivery)
        headers = request_headers(delivery, body, attempt=claim.attempt, now=timezone.now())
        result = post(delivery.endpoint.url, body, headers, allow_private=settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE)
    return _record(claim, result, now or timezone.now(), give_up=not delivery.endpoint.is_active)


def _record(claim: Claim, result: AttemptResult, now: datetime, *, give_up: bool = False) -> str | None:
    """Log the attempt, and write its outcome if the delivery is still this claim's."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=claim.delivery.pk).first()
        if delivery is None:
            return None  # the endpoint was deleted meanwhile
        entry = {"attempt": claim.attempt, "at": now.isoformat(), "status_code": result.status_code,
                 "error": result.error, "duration_ms": result.duration_ms,
                 "response": result.response_excerpt[:200]}
        delivery.attempt_log = [*delivery.attempt_log, entry][-ATTEMPT_LOG_LIMIT:]
        fields = ["attempt_log"]
        if delivery.attempts == claim.attempt and delivery.state == WebhookDelivery.State.PENDING:
            _apply_outcome(delivery, result, now, give_up=give_up)
            fields += ["state", "next_attempt_at", "last_status_code", "last_error", "last_response_ms", "delivered_at"]
        delivery.save(update_fields=fields)
    if not result.ok:
        logger.info("webhook %s %s to %s: attempt %d failed (%s); now %s", delivery.event_type, delivery.event_id,
                    claim.delivery.endpoint.url, claim.attempt, result.error, delivery.state)
    return delivery.state


def _apply_outcome(delivery: WebhookDelivery, result: AttemptResult, now: datetime, *, give_up: bool) -> None:
    delivery.last_status_code, delivery.last_error = result.status_code, result.error
    delivery.last_response_ms = result.duration_ms if result.status_code is not None else None
    if result.ok:
        delivery.state, delivery.next_attempt_at, delivery.delivered_at = WebhookDelivery.State.SUCCEEDED, None, now
        return
    retry_at = None if give_up else next_attempt_at(failures=delivery.attempts, created_at=delivery.created_at,
                                                    now=now, rng=_rng)
    if retry_at is None:
        delivery.state, delivery.next_attempt_at = WebhookDelivery.State.FAILED, None
    else:
        delivery.next_attempt_at = retry_at


def webhook_delivery_purge(*, now: datetime | None = None) -> int:
    """Delete finished deliveries older than DELIVERY_RETENTION; pending ones stay whatever their age."""
    cutoff = (now or timezone.now()) - DELIVERY_RETENTION
    deleted, _ = WebhookDelivery.objects.filter(
        state__in=[WebhookDelivery.State.SUCCEEDED, WebhookDelivery.State.FAILED], created_at__lt=cutoff,
    ).delete()
    return deleted
