"""Who is calling: API keys (`Authorization: Bearer sy_live_…`), the operator's
service tokens (`Authorization: Bearer sy_svc_…`), or the browser session.

The tenant always comes from the credential — a key's own tenant, or the tenant a
console user has selected and is a member of — never from the request body or URL.
A service token has no tenant: it is accepted only by operator views
(`tenants.rest.OperatorAPIView`) and, later, usage ingestion.
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from tenants import key_cache
from tenants.keys import SERVICE_TOKEN, parse_key, secret_matches
from tenants.models import ApiKey, Credential, ServiceToken
from tenants.rate_limits import COUNTED_ATTRIBUTE, rate_bucket

LAST_USED_RESOLUTION = timedelta(seconds=60)  # how often last_used_at is refreshed


class _CredentialUser:
    """The request's user when a credential, not a person, authenticated it."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None


class ApiKeyUser(_CredentialUser):
    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return str(self.api_key)


class ServiceTokenUser(_CredentialUser):
    """The operator's software."""

    def __init__(self, service_token: ServiceToken):
        self.service_token = service_token

    def __str__(self) -> str:
        return str(self.service_token)


def _refuse(detail: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(detail, code="invalid_api_key")


def _refuse_unless_active(credential: Credential, noun: str) -> None:
    """Refuse a revoked or expired credential; note its use (at most once a minute, so a
    busy credential costs no write per request)."""
    now = timezone.now()
    if credential.revoked_at is not None:
        raise _refuse(f"This {noun} has been revoked.")
    if credential.expires_at is not None and credential.expires_at <= now:
        raise _refuse(f"This {noun} expired at {credential.expires_at.isoformat()}.")
    if credential.last_used_at is None or now - credential.last_used_at >= LAST_USED_RESOLUTION:
        type(credential).objects.filter(pk=credential.pk).update(last_used_at=now)
        credential.last_used_at = now


def api_key_verify(plaintext: str, *, counted: dict | None = None) -> ApiKey:
    """The active key for this plaintext, or AuthenticationFailed saying why.

    A key verified before is served from the per-process cache while the credential
    epoch is unchanged (tenants.key_cache), with no database query; the Redis round
    trip that reads the epoch also takes the rate-limit count, left in `counted`.
    """
    parsed = parse_key(plaintext)
    if parsed is None and plaintext.startswith("sy_svc_"):
        raise _refuse("This is a service token: it works on operator routes (/api/v1/fleet/…) only. "
                      "Tenant routes take a tenant API key (sy_live_…).")
    if parsed is None:
        raise _refuse("Malformed API key: expected sy_live_<prefix>_<secret>.")
    prefix, secret = parsed
    key = _cached_key(prefix, secret, counted)
    if key is None:
        epoch = key_cache.read_epoch()  # before the read, so a change after it is noticed
        key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
        if key is None or not secret_matches(secret, key.secret_hash):
            raise _refuse("Invalid API key.")
        key_cache.remember(prefix, key, epoch)
    _refuse_unless_active(key, "API key")
    return key


def _cached_key(prefix: str, secret: str, counted: dict | None) -> ApiKey | None:
    """The cached key if its secret matches and nothing changed since it was loaded."""
    entry = key_cache.cached(prefix)
    if entry is None or not secret_matches(secret, entry.key.secret_hash):
        return None
    # The secret is verified before anything is counted: knowing a key's prefix alone
    # cannot spend its rate limit.
    bucket, ttl, _ = rate_bucket(f"key:{prefix}")
    epoch, count = key_cache.epoch_and_rate_hit(bucket if counted is not None else None, ttl)
    if counted is not None and count is not None:
        counted["count"] = count
    return entry.key if epoch == entry.epoch else None


# Service tokens share the API keys' cache and credential epoch under their own names.
SERVICE_TOKEN_CACHE_PREFIX = "svc:"


def service_token_verify(plaintext: str) -> ServiceToken:
    """The active service token for this plaintext, or AuthenticationFailed saying why.

    Cached per process like API keys (tenants.key_cache): while the credential epoch is
    unchanged a busy token (the usage gateways') costs one Redis read, no database query;
    revoking or changing any token bumps the epoch.
    """
    parsed = parse_key(plaintext, SERVICE_TOKEN)
    if parsed is None:
        raise _refuse("Malformed service token: expected sy_svc_<prefix>_<secret>.")
    prefix, secret = parsed
    cache_name = SERVICE_TOKEN_CACHE_PREFIX + prefix
    token = _cached_service_token(cache_name, secret)
    if token is None:
        epoch = key_cache.read_epoch()  # before the read, so a change after it is noticed
        token = ServiceToken.objects.filter(prefix=prefix).first()
        if token is None or not secret_matches(secret, token.secret_hash):
            raise _refuse("Invalid service token.")
        key_cache.remember(cache_name, token, epoch)
    _refuse_unless_active(token, "service token")
    return token


def _cached_service_token(cache_name: str, secret: str) -> ServiceToken | None:
    """The cached token if its secret matches and nothing changed since it was loaded."""
    entry = key_cache.cached(cache_name)
    if entry is None or not secret_matches(secret, entry.key.secret_hash):
        return None
    return entry.key if key_cache.read_epoch() == entry.epoch else None


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme != self.keyword or not credential.strip():
            raise _refuse("Send the API key as 'Authorization: Bearer sy_live_…'.")
        counted: dict = {}
        key = api_key_verify(credential.strip(), counted=counted)
        if "count" in counted:
            setattr(request._request, COUNTED_ATTRIBUTE, counted["count"])
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="switchyard"'


class ServiceTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer sy_svc_…`. Any other credential is left to the next authenticator
    (a tenant key to ApiKeyAuthentication, which then reaches the view and is refused there)."""

    keyword = "Bearer"

    def authenticate(self, request):
        scheme, _, credential = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        credential = credential.strip()
        if scheme != self.keyword or not credential.startswith("sy_svc_"):
            return None
        token = service_token_verify(credential)
        return ServiceTokenUser(token), token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="switchyard"'
