"""Credential format: `sy_<kind>_<prefix>_<secret>`. Pure functions, no database.

Two kinds share the format: tenant API keys (`sy_live_…`) and the operator's
service tokens (`sy_svc_…`). The kind is part of the text, so a credential can
never be mistaken for the other kind. Prefix and secret come from the OS CSPRNG
in base62 (no `_`, so the key splits unambiguously). The secret has 32 base62
characters, about 190 bits.
"""

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

ALPHABET = string.ascii_letters + string.digits
PREFIX_LENGTH = 12
SECRET_LENGTH = 32
TENANT_KEY = "live"
SERVICE_TOKEN = "svc"
KINDS = (TENANT_KEY, SERVICE_TOKEN)
KEY_PATTERNS = {
    kind: re.compile(rf"^sy_{kind}_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})$")
    for kind in KINDS
}
KEY_PATTERN = KEY_PATTERNS[TENANT_KEY]


@dataclass(frozen=True)
class GeneratedKey:
    prefix: str
    secret: str
    kind: str = TENANT_KEY

    @property
    def plaintext(self) -> str:
        return f"sy_{self.kind}_{self.prefix}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate_key(kind: str = TENANT_KEY) -> GeneratedKey:
    return GeneratedKey(prefix=_random_base62(PREFIX_LENGTH), secret=_random_base62(SECRET_LENGTH), kind=kind)


def parse_key(text: str, kind: str = TENANT_KEY) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed credential of this kind, or None."""
    match = KEY_PATTERNS[kind].match(text)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
