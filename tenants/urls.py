from django.contrib.auth import views as auth_views
from django.urls import path

from tenants import api, views

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
    path("webhooks", api.WebhookEndpointListView.as_view(), name="api-webhooks"),
    # Deliveries first: "deliveries" must not be taken for an endpoint id.
    path("webhooks/deliveries/<str:delivery_id>", api.WebhookDeliveryDetailView.as_view(),
         name="api-webhook-delivery"),
    path("webhooks/deliveries/<str:delivery_id>/redeliver", api.WebhookRedeliverView.as_view(),
         name="api-webhook-delivery-redeliver"),
    path("webhooks/<str:endpoint_id>", api.WebhookEndpointDetailView.as_view(), name="api-webhook"),
    path("webhooks/<str:endpoint_id>/rotate-secret", api.WebhookRotateSecretView.as_view(),
         name="api-webhook-rotate-secret"),
    path("webhooks/<str:endpoint_id>/test", api.WebhookTestView.as_view(), name="api-webhook-test"),
    path("webhooks/<str:endpoint_id>/deliveries", api.WebhookEndpointDeliveryListView.as_view(),
         name="api-webhook-deliveries"),
]

# Console pages. Django's auth views reverse the names login, logout and password_reset_*.
urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/password-reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/password-reset/complete/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
    path("organisations/new/", views.organisation_create, name="organisation-create"),
    path("switch-tenant/", views.switch_tenant, name="switch-tenant"),
    path("settings/", views.tenant_settings, name="tenant-settings"),
    path("team/", views.team, name="team"),
    path("team/invite/", views.team_invite, name="team-invite"),
    path("team/members/<str:member_id>/role/", views.team_member_role, name="team-member-role"),
    path("team/members/<str:member_id>/remove/", views.team_member_remove, name="team-member-remove"),
    path("team/invitations/<str:invitation_id>/revoke/", views.team_invitation_revoke,
         name="team-invitation-revoke"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("api-keys/", views.api_keys, name="api-keys"),
    path("api-keys/<str:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("audit/", views.audit_log, name="audit-log"),
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/deliveries/<str:delivery_id>/", views.webhook_delivery, name="webhook-delivery"),
    path("webhooks/deliveries/<str:delivery_id>/redeliver/", views.webhook_redeliver, name="webhook-redeliver"),
    path("webhooks/<str:endpoint_id>/", views.webhook_detail, name="webhook-detail"),
    path("webhooks/<str:endpoint_id>/rotate-secret/", views.webhook_rotate_secret, name="webhook-rotate-secret"),
    path("webhooks/<str:endpoint_id>/test/", views.webhook_test, name="webhook-test"),
    path("webhooks/<str:endpoint_id>/delete/", views.webhook_delete, name="webhook-delete"),
]
