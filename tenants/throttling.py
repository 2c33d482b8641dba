"""The API's throttle: SWITCHYARD_API_RATE_LIMIT requests per window per credential,
counted atomically by tenants.rate_limits."""

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from tenants.rate_limits import COUNTED_ATTRIBUTE, parse_rate, rate_bucket, rate_counter_hit
from tenants.requests import client_ip


def principal_of(request) -> str:
    user = request.user
    api_key = getattr(user, "api_key", None)
    if api_key is not None:
        return f"key:{api_key.prefix}"
    service_token = getattr(user, "service_token", None)
    if service_token is not None:
        return f"svc:{service_token.prefix}"
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip(request)}"


class CredentialRateThrottle(BaseThrottle):
    """SWITCHYARD_API_RATE_LIMIT requests per window for each API key, user or anonymous IP."""

    def allow_request(self, request, view) -> bool:
        limit, _period = parse_rate(settings.API_RATE_LIMIT)
        bucket, ttl, self.retry_after = rate_bucket(principal_of(request))
        counted = getattr(request._request, COUNTED_ATTRIBUTE, None)
        count = counted if counted is not None else rate_counter_hit(bucket, ttl=ttl)
        return count <= limit

    def wait(self) -> float:
        return self.retry_after
