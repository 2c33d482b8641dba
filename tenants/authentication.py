"""Who is calling: API keys (`Authorization: Bearer sy_live_…`) or the browser session.

The tenant always comes from the credential — a key's own tenant, or the tenant a
console user has selected and is a member of — never from the request body or URL.
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from tenants.keys import parse_key, secret_matches
from tenants.models import ApiKey

# last_used_at is refreshed at most this often, so a busy key costs no write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiKeyUser:
    """The request's user when an API key authenticated it: no person, just the key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return str(self.api_key)


def _refuse(detail: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(detail, code="invalid_api_key")


def api_key_verify(plaintext: str) -> ApiKey:
    """The active key for this plaintext, or AuthenticationFailed saying why."""
    parsed = parse_key(plaintext)
    if parsed is None:
        raise _refuse("Malformed API key: expected sy_live_<prefix>_<secret>.")
    prefix, secret = parsed
    key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not secret_matches(secret, key.secret_hash):
        raise _refuse("Invalid API key.")
    now = timezone.now()
    if key.revoked_at is not None:
        raise _refuse("This API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise _refuse(f"This API key expired at {key.expires_at.isoformat()}.")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme != self.keyword or not credential.strip():
            raise _refuse("Send the API key as 'Authorization: Bearer sy_live_…'.")
        key = api_key_verify(credential.strip())
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="switchyard"'
