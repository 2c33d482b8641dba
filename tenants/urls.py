from django.urls import path

from tenants import api

api_urlpatterns = [
    path("tenant", api.TenantView.as_view(), name="api-tenant"),
    path("members", api.MemberListView.as_view(), name="api-members"),
    path("members/<str:member_id>", api.MemberDetailView.as_view(), name="api-member"),
    path("invitations", api.InvitationListView.as_view(), name="api-invitations"),
    path("invitations/<str:invitation_id>", api.InvitationDetailView.as_view(), name="api-invitation"),
    path("api-keys", api.ApiKeyListView.as_view(), name="api-api-keys"),
    path("api-keys/<str:key_id>", api.ApiKeyDetailView.as_view(), name="api-api-key"),
    path("audit-events", api.AuditEventListView.as_view(), name="api-audit-events"),
    path("audit-events/<str:event_id>", api.AuditEventDetailView.as_view(), name="api-audit-event"),
]

urlpatterns: list = []
