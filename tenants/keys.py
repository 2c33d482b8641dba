"""API key format: `sy_live_<prefix>_<secret>`. Pure functions, no database.

Prefix and secret come from the OS CSPRNG in base62 (no `_`, so the key splits
unambiguously). The secret has 32 base62 characters, about 190 bits.
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
KEY_PATTERN = re.compile(rf"^sy_live_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})$")


@dataclass(frozen=True)
class GeneratedKey:
    prefix: str
    secret: str

    @property
    def plaintext(self) -> str:
        return f"sy_live_{self.prefix}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate_key() -> GeneratedKey:
    return GeneratedKey(prefix=_random_base62(PREFIX_LENGTH), secret=_random_base62(SECRET_LENGTH))


def parse_key(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, or None."""
    match = KEY_PATTERN.match(text)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
