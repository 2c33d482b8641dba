"""REST API of the tenancy layer: the tenant, members, invitations, API keys, audit log."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from tenants import selectors, services
from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant
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
