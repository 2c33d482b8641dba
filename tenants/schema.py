"""How the OpenAPI schema describes Switchyard: API-key and service-token auth, problem-details errors,
Idempotency-Key."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sy_live_<prefix>_<secret>",
            "description": "A tenant API key. Scopes: read, deploy, billing, admin, invoke.",
        }

    def get_security_requirement(self, auto_schema):
        # Operator views authenticate tenant keys only to refuse them (403): not a way in.
        if getattr(auto_schema.view, "refuses_tenant_keys", False):
            return None
        return super().get_security_requirement(auto_schema)


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ServiceTokenAuthentication"
    name = "ServiceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sy_svc_<prefix>_<secret>",
            "description": "An operator service token (`manage.py create_service_token`). Scopes: fleet, "
                           "usage:write. Tenant API keys are refused (403) on operator routes.",
        }


class FieldError(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="The input at fault, dotted for nested values.")
    message = serializers.CharField()
    code = serializers.CharField()


class Problem(serializers.Serializer):
    """RFC 9457 problem details: the shape of every error."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    errors = FieldError(many=True, required=False)


ERROR_STATUSES = {
    "GET": ("401", "403", "404", "429"),
    "POST": ("400", "401", "403", "409", "413", "422", "429"),
    "PATCH": ("400", "401", "403", "404", "409", "413", "429"),
    "PUT": ("400", "401", "403", "404", "409", "413", "429"),
    "DELETE": ("401", "403", "404", "409", "429"),
}

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Makes a retried POST safe: the first response is stored for 24 h and replayed; the same key "
                "with another body is 422, and while the first request runs, 409.",
)


class SwitchyardAutoSchema(AutoSchema):
    """Every operation documents its problem-details errors; every POST its Idempotency-Key."""

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self.method == "POST" and getattr(self.view, "honours_idempotency_key", True):
            parameters = [*parameters, IDEMPOTENCY_KEY]
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in ERROR_STATUSES.get(self.method, ()):
            if status not in responses:
                responses[status] = self._get_response_for_code(
                    Problem, status, media_types=["application/problem+json"])
        return responses
