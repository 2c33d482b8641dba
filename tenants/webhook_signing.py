"""Signing and verifying webhook requests. Pure: the standard library only, no Django.

Every request Switchyard sends to a webhook endpoint carries

    Switchyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
    Switchyard-Event-Id: <the event's UUID: the same on every attempt and every endpoint>
    Switchyard-Event-Type: <e.g. invoice.finalized>

While the previous secret of a rotated endpoint is still valid, the header holds one `v1=`
per valid secret, so a receiver may switch to the new secret at any moment of that window.
The timestamp is signed with the body, so an old request cannot be replayed with a fresh
timestamp; `verify` refuses one older (or newer) than TOLERANCE_SECONDS.

`verify` is the reference verification; docs/webhooks.md has a copy receivers can paste,
which the tests check against this module.
"""

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "Switchyard-Signature"
EVENT_ID_HEADER = "Switchyard-Event-Id"
EVENT_TYPE_HEADER = "Switchyard-Event-Type"
SCHEME = "v1"
TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


class SignatureError(ValueError):
    """Not a genuine, fresh Switchyard webhook request; the message says why."""


def generate_secret() -> str:
    """A new signing secret: `whsec_` and 256 random bits (URL-safe base64)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` keyed with the whole secret (prefix included)."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets_: Iterable[str], timestamp: int, body: bytes) -> str:
    """The Switchyard-Signature value: `t=…` and one `v1=…` per secret, in the order given."""
    signatures = [f"{SCHEME}={compute_signature(secret, timestamp, body)}" for secret in secrets_]
    if not signatures:
        raise ValueError("At least one secret is needed to sign.")
    return ",".join([f"t={timestamp}", *signatures])


def parse_header(header: str) -> tuple[int, list[str]]:
    """(timestamp, the v1 signatures) of a Switchyard-Signature value. Unknown schemes are
    ignored, so a later scheme can be added beside v1 without breaking receivers."""
    timestamp = None
    signatures = []
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME and value:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("The signature header has no timestamp (t=…).")
    if not signatures:
        raise SignatureError(f"The signature header has no {SCHEME}= signature.")
    return timestamp, signatures


def verify(secret: str, body: bytes, header: str, *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> int:
    """Check that `header` signs exactly `body` with `secret`, at most `tolerance` seconds from
    `now` (default: the clock). Returns the signed timestamp; raises SignatureError otherwise.

    `body` must be the raw request body, byte for byte: parsing and re-serialising the JSON
    changes it. Signatures are compared in constant time.
    """
    timestamp, signatures = parse_header(header)
    expected = compute_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("No signature matches this body and secret.")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(f"The timestamp is {abs(current - timestamp):.0f} s away from now; at most "
                             f"{tolerance} s is accepted (a replayed request, or a clock that is off).")
    return timestamp
