"""REST API of the tenancy layer: the tenant, members, invitations, API keys, audit log, webhooks."""

from datetime import datetime

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from tenants import selectors, services, webhooks
from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant, WebhookDelivery, WebhookEndpoint
from tenants.pagination import RecentFirstCursorPagination
from tenants.rest import StrictSerializer, TenantAPIView, page_of, paginated, represent, valid
from tenants.roles import Role, Scope

# --- Tenant -------------------------------------------------------------------------------


class TenantOutput(serializers.Serializer):
    # A plain Serializer: every API request may read the tenant, and a ModelSerializer
    # rebuilds its fields from the model on each use.
    id = serializers.UUIDField(source="public_id", read_only=True)
    name = serializers.CharField(read_only=True)
    slug = serializers.SlugField(read_only=True)
    billing_country = serializers.CharField(read_only=True)
    currency = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=Tenant.Status.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class TenantPatchInput(StrictSerializer):
    name = serializers.CharField(max_length=120, required=False)
    billing_country = serializers.CharField(max_length=2, required=False)
    currency = serializers.CharField(max_length=3, required=False)


class TenantView(TenantAPIView):
    """The tenant of the calling credential."""

    required_scopes = {"GET": Scope.READ, "PATCH": Scope.ADMIN}

    @extend_schema(operation_id="tenant_retrieve", responses=TenantOutput)
    def get(self, request):
        return Response(represent(TenantOutput, self.actor.tenant))

    @extend_schema(operation_id="tenant_update", request=TenantPatchInput, responses=TenantOutput)
    def patch(self, request):
        data = valid(TenantPatchInput, request.data)
        tenant = services.tenant_update(actor=self.actor, **data)
        return Response(TenantOutput(tenant).data)


# --- Members ------------------------------------------------------------------------------


class MemberOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "full_name", "role", "created_at"]


class MemberPatchInput(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="members_list", responses=page_of(MemberOutput))
    def get(self, request):
        return paginated(self, selectors.membership_list_for_tenant(self.actor.tenant), MemberOutput)


class MemberDetailView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.ADMIN, "DELETE": Scope.ADMIN}

    def _membership(self, member_id) -> Membership:
        return self.get_owned(selectors.membership_list_for_tenant(self.actor.tenant), member_id)

    @extend_schema(operation_id="members_retrieve", responses=MemberOutput)
    def get(self, request, member_id):
        return Response(MemberOutput(self._membership(member_id)).data)

    @extend_schema(operation_id="members_update", request=MemberPatchInput, responses=MemberOutput)
    def patch(self, request, member_id):
        membership = self._membership(member_id)
        data = valid(MemberPatchInput, request.data)
        membership = services.membership_change_role(actor=self.actor, membership=membership, role=data["role"])
        return Response(MemberOutput(membership).data)

    @extend_schema(operation_id="members_destroy", responses={204: None})
    def delete(self, request, member_id):
        services.membership_remove(actor=self.actor, membership=self._membership(member_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Invitations --------------------------------------------------------------------------


class InvitationOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    state = serializers.CharField(read_only=True)
    invited_by = serializers.EmailField(source="invited_by.email", read_only=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "state", "invited_by", "created_at", "expires_at", "accepted_at"]


class InvitationCreateInput(StrictSerializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(operation_id="invitations_list", responses=page_of(InvitationOutput))
    def get(self, request):
        return paginated(self, selectors.invitation_list_for_tenant(self.actor.tenant), InvitationOutput)

    @extend_schema(
        operation_id="invitations_create", request=InvitationCreateInput, responses={201: InvitationOutput},
        description="Emails an invitation link (valid for SWITCHYARD_INVITATION_TTL_HOURS) to the address.",
    )
    def post(self, request):
        data = valid(InvitationCreateInput, request.data)
        invitation, _token = services.invitation_create(actor=self.actor, email=data["email"], role=data["role"])
        return Response(InvitationOutput(invitation).data, status=status.HTTP_201_CREATED)


class InvitationDetailView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "DELETE": Scope.ADMIN}

    def _invitation(self, invitation_id) -> Invitation:
        return self.get_owned(selectors.invitation_list_for_tenant(self.actor.tenant), invitation_id)

    @extend_schema(operation_id="invitations_retrieve", responses=InvitationOutput)
    def get(self, request, invitation_id):
        return Response(InvitationOutput(self._invitation(invitation_id)).data)

    @extend_schema(operation_id="invitations_revoke", responses={204: None},
                   description="Revokes a pending invitation: its link stops working.")
    def delete(self, request, invitation_id):
        services.invitation_revoke(actor=self.actor, invitation=self._invitation(invitation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API keys -----------------------------------------------------------------------------


class ApiKeyOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    display = serializers.CharField(read_only=True, help_text="The key's public part; the secret is never shown.")
    state = serializers.CharField(read_only=True)
    created_by = serializers.EmailField(source="created_by.email", read_only=True, default=None)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "display", "prefix", "scopes", "state", "created_by", "created_at", "expires_at",
                  "revoked_at", "last_used_at"]


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown once: store it now.")

    class Meta(ApiKeyOutput.Meta):
        fields = [*ApiKeyOutput.Meta.fields, "key"]


class ApiKeyCreateInput(StrictSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(operation_id="api_keys_list", responses=page_of(ApiKeyOutput))
    def get(self, request):
        return paginated(self, selectors.api_key_list_for_tenant(self.actor.tenant), ApiKeyOutput)

    @extend_schema(operation_id="api_keys_create", request=ApiKeyCreateInput, responses={201: ApiKeyCreatedOutput},
                   description="Creates a key. The response's `key` is the only time the secret is shown.")
    def post(self, request):
        data = valid(ApiKeyCreateInput, request.data)
        key, plaintext = services.api_key_create(actor=self.actor, name=data["name"], scopes=data["scopes"],
                                                 expires_at=data.get("expires_at"))
        key.key = plaintext
        return Response(ApiKeyCreatedOutput(key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "DELETE": Scope.ADMIN}

    def _key(self, key_id) -> ApiKey:
        return self.get_owned(selectors.api_key_list_for_tenant(self.actor.tenant), key_id)

    @extend_schema(operation_id="api_keys_retrieve", responses=ApiKeyOutput)
    def get(self, request, key_id):
        return Response(ApiKeyOutput(self._key(key_id)).data)

    @extend_schema(operation_id="api_keys_revoke", responses=ApiKeyOutput,
                   description="Revokes the key; the next request made with it is refused. Idempotent.")
    def delete(self, request, key_id):
        key = services.api_key_revoke(actor=self.actor, key=self._key(key_id))
        return Response(ApiKeyOutput(key).data)


# --- Audit log ----------------------------------------------------------------------------


class AuditEventOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "object_type", "object_id", "object_repr", "changes",
                  "source_ip"]


class AuditEventFilter(StrictSerializer):
    action = serializers.CharField(required=False, max_length=64)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class AuditEventListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        operation_id="audit_events_list", responses=page_of(AuditEventOutput, cursor=True),
        parameters=[OpenApiParameter("action", str), OpenApiParameter("since", str),
                    OpenApiParameter("until", str)],
    )
    def get(self, request):
        filters = valid(AuditEventFilter, request.query_params.dict())
        filters.pop("cursor", None)
        filters.pop("page_size", None)
        events = selectors.audit_event_list_for_tenant(self.actor.tenant, **filters)
        return paginated(self, events, AuditEventOutput, RecentFirstCursorPagination)


class AuditEventDetailView(TenantAPIView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="audit_events_retrieve", responses=AuditEventOutput)
    def get(self, request, event_id):
        return Response(AuditEventOutput(self.get_owned(selectors.audit_event_list_for_tenant(
            self.actor.tenant), event_id)).data)


# --- Webhooks -----------------------------------------------------------------------------


class WebhookEndpointOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    event_types = serializers.ListField(child=serializers.CharField(), read_only=True,
                                        help_text='Event types sent here; ["*"] is every type.')
    previous_secret_expires_at = serializers.SerializerMethodField(
        help_text="While set, requests are also signed with the secret before the last rotation, until then.")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "event_types", "is_active", "previous_secret_expires_at", "created_at",
                  "updated_at"]

    def get_previous_secret_expires_at(self, endpoint) -> datetime | None:
        expires = endpoint.previous_secret_expires_at
        return expires if expires and expires > timezone.now() else None


class WebhookEndpointWithSecretOutput(WebhookEndpointOutput):
    secret = serializers.CharField(read_only=True, help_text="The signing secret. Shown once: store it now.")

    class Meta(WebhookEndpointOutput.Meta):
        fields = [*WebhookEndpointOutput.Meta.fields, "secret"]


EVENT_TYPES_HELP = ('Event types to send, e.g. ["deployment.status_changed"], or ["*"] for every type '
                    "(docs/webhooks.md lists them).")


class WebhookEndpointCreateInput(StrictSerializer):
    url = serializers.CharField(max_length=2048, help_text="An http(s) URL that accepts POST requests.")
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=64), allow_empty=False,
                                        max_length=50, help_text=EVENT_TYPES_HELP)


class WebhookEndpointPatchInput(StrictSerializer):
    url = serializers.CharField(max_length=2048, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=64), allow_empty=False,
                                        max_length=50, required=False, help_text=EVENT_TYPES_HELP)
    is_active = serializers.BooleanField(required=False,
                                         help_text="false: send nothing (pending deliveries are given up).")


class WebhookRotateSecretInput(StrictSerializer):
    previous_secret_valid_hours = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=webhooks.PREVIOUS_SECRET_MAX_HOURS,
        help_text="Keep signing with the old secret too for this many hours (0: it stops now).")


class WebhookAttemptOutput(serializers.Serializer):
    attempt = serializers.IntegerField()
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True, help_text="null: no HTTP answer (see error).")
    error = serializers.CharField(allow_blank=True)
    duration_ms = serializers.IntegerField()
    response = serializers.CharField(allow_blank=True, help_text="The start of the response body.")


class WebhookDeliveryOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    endpoint = serializers.UUIDField(source="endpoint.public_id", read_only=True)
    event_id = serializers.UUIDField(read_only=True, help_text="The same on every attempt and every endpoint: "
                                                               "drop a request whose event id you have seen.")

    class Meta:
        model = WebhookDelivery
        fields = ["id", "endpoint", "event_id", "event_type", "state", "attempts", "next_attempt_at",
                  "last_status_code", "last_error", "last_response_ms", "created_at", "delivered_at"]


class WebhookDeliveryDetailOutput(WebhookDeliveryOutput):
    payload = serializers.JSONField(read_only=True, help_text="The request body sent.")
    attempt_log = WebhookAttemptOutput(many=True, read_only=True)

    class Meta(WebhookDeliveryOutput.Meta):
        fields = [*WebhookDeliveryOutput.Meta.fields, "payload", "attempt_log"]


class WebhookDeliveryFilter(StrictSerializer):
    state = serializers.ChoiceField(choices=WebhookDelivery.State.choices, required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class WebhookEndpointListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(operation_id="webhooks_list", responses=page_of(WebhookEndpointOutput))
    def get(self, request):
        return paginated(self, selectors.webhook_endpoint_list_for_tenant(self.actor.tenant), WebhookEndpointOutput)

    @extend_schema(operation_id="webhooks_create", request=WebhookEndpointCreateInput,
                   responses={201: WebhookEndpointWithSecretOutput},
                   description="Creates an endpoint. The response's `secret` is the only time it is shown.")
    def post(self, request):
        data = valid(WebhookEndpointCreateInput, request.data)
        endpoint, secret = webhooks.webhook_endpoint_create(actor=self.actor, **data)
        endpoint.secret = secret
        return Response(WebhookEndpointWithSecretOutput(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointView(TenantAPIView):
    """Fetches the endpoint named in the URL through the tenant, for every webhook endpoint route."""

    def _endpoint(self, endpoint_id) -> WebhookEndpoint:
        return self.get_owned(selectors.webhook_endpoint_list_for_tenant(self.actor.tenant), endpoint_id)


class WebhookEndpointDetailView(WebhookEndpointView):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.ADMIN, "DELETE": Scope.ADMIN}

    @extend_schema(operation_id="webhooks_retrieve", responses=WebhookEndpointOutput)
    def get(self, request, endpoint_id):
        return Response(WebhookEndpointOutput(self._endpoint(endpoint_id)).data)

    @extend_schema(operation_id="webhooks_update", request=WebhookEndpointPatchInput, responses=WebhookEndpointOutput)
    def patch(self, request, endpoint_id):
        endpoint = self._endpoint(endpoint_id)
        data = valid(WebhookEndpointPatchInput, request.data)
        endpoint = webhooks.webhook_endpoint_update(actor=self.actor, endpoint=endpoint, **data)
        return Response(WebhookEndpointOutput(endpoint).data)

    @extend_schema(operation_id="webhooks_destroy", responses={204: None},
                   description="Deletes the endpoint and its delivery history; nothing more is sent to it.")
    def delete(self, request, endpoint_id):
        webhooks.webhook_endpoint_delete(actor=self.actor, endpoint=self._endpoint(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(WebhookEndpointView):
    required_scopes = {"POST": Scope.ADMIN}

    @extend_schema(operation_id="webhooks_rotate_secret", request=WebhookRotateSecretInput,
                   responses=WebhookEndpointWithSecretOutput,
                   description="A new signing secret, shown in this response only. The old one stops signing now, "
                               "or after `previous_secret_valid_hours`.")
    def post(self, request, endpoint_id):
        endpoint = self._endpoint(endpoint_id)
        data = valid(WebhookRotateSecretInput, request.data)
        endpoint, secret = webhooks.webhook_endpoint_rotate_secret(
            actor=self.actor, endpoint=endpoint, previous_valid_hours=data["previous_secret_valid_hours"])
        endpoint.secret = secret
        return Response(WebhookEndpointWithSecretOutput(endpoint).data)


class WebhookTestView(WebhookEndpointView):
    required_scopes = {"POST": Scope.ADMIN}

    @extend_schema(operation_id="webhooks_send_test", request=None, responses={202: WebhookDeliveryOutput},
                   description=f"Sends a `{webhooks.TEST_EVENT}` event to this endpoint now, whatever it subscribes "
                               f"to. Follow the returned delivery to see how it went.")
    def post(self, request, endpoint_id):
        delivery = webhooks.webhook_endpoint_send_test(actor=self.actor, endpoint=self._endpoint(endpoint_id))
        return Response(WebhookDeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookEndpointDeliveryListView(WebhookEndpointView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="webhooks_deliveries_list", responses=page_of(WebhookDeliveryOutput, cursor=True),
                   parameters=[OpenApiParameter("state", str, enum=WebhookDelivery.State.values)])
    def get(self, request, endpoint_id):
        endpoint = self._endpoint(endpoint_id)
        filters = valid(WebhookDeliveryFilter, request.query_params.dict())
        deliveries = selectors.webhook_delivery_list_for_endpoint(endpoint, state=filters.get("state"))
        return paginated(self, deliveries, WebhookDeliveryOutput, RecentFirstCursorPagination)


class WebhookDeliveryView(TenantAPIView):
    def _delivery(self, delivery_id) -> WebhookDelivery:
        return self.get_owned(selectors.webhook_delivery_list_for_tenant(self.actor.tenant), delivery_id)


class WebhookDeliveryDetailView(WebhookDeliveryView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="webhooks_deliveries_retrieve", responses=WebhookDeliveryDetailOutput)
    def get(self, request, delivery_id):
        return Response(WebhookDeliveryDetailOutput(self._delivery(delivery_id)).data)


class WebhookRedeliverView(WebhookDeliveryView):
    required_scopes = {"POST": Scope.ADMIN}

    @extend_schema(operation_id="webhooks_deliveries_redeliver", request=None, responses={202: WebhookDeliveryOutput},
                   description="Attempts the delivery again now, with the same event id (receivers drop a "
                               "duplicate). A failed attempt is retried on the usual schedule while the event is "
                               "younger than three days.")
    def post(self, request, delivery_id):
        delivery = webhooks.webhook_delivery_redeliver(actor=self.actor, delivery=self._delivery(delivery_id))
        return Response(WebhookDeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)
