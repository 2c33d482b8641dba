"""`Idempotency-Key` on POSTs: the first response is stored and replayed.

A key is scoped to tenant and credential and kept IDEMPOTENCY_TTL_HOURS. The
claim is committed before the operation runs, so a concurrent duplicate sees it
and gets 409; the operation and the stored response commit together, so a
response is stored if and only if the operation's writes are.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from tenants.context import Actor
from tenants.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Replay:
    status: int
    body: object


class IdempotencyProblem(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def idempotency_claim(*, actor: Actor, key: str, fingerprint: str) -> IdempotencyRecord | Replay:
    """Claim the key for this request, or return the stored response to replay.

    Raises IdempotencyProblem: 422 when the key was used with another request,
    409 while the first request with the key is still running.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise IdempotencyProblem(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    now = timezone.now()
    lookup = {"tenant": actor.tenant, "principal": actor.principal, "key": key}
    IdempotencyRecord.objects.filter(**lookup, expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                **lookup, request_fingerprint=fingerprint,
                expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
            )
    except IntegrityError:
        existing = IdempotencyRecord.objects.filter(**lookup).first()
    if existing is None:  # completed and purged between our insert and our read: claim again
        return idempotency_claim(actor=actor, key=key, fingerprint=fingerprint)
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyProblem(422, "This Idempotency-Key was already used with a different request.")
    if existing.response_status is None:
        raise IdempotencyProblem(409, "A request with this Idempotency-Key is still in progress; retry later.")
    return Replay(status=existing.response_status, body=existing.response_body)


def idempotency_complete(record: IdempotencyRecord, status: int, body) -> None:
    record.response_status = status
    record.response_body = json.loads(json.dumps(body, cls=JSONEncoder))
    record.save(update_fields=["response_status", "response_body"])


def idempotency_release(record: IdempotencyRecord) -> None:
    """The operation failed and changed nothing: free the key for a retry."""
    IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()


def idempotency_purge() -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
