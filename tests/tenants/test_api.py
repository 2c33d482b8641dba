"""The tenancy API: tenant, members, invitations, audit log; problem details for bad input."""

import gzip

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.test import override_settings

from tests.factories import MembershipFactory, UserFactory
from tenants.models import AuditEvent, Invitation, Membership, Tenant
from tenants.roles import Role

# --- tenant -------------------------------------------------------------------------------


def test_patch_tenant_changes_it_and_audits(tenant_a):
    response = tenant_a.api.patch("/api/v1/tenant", {"name": "Acme Corp", "billing_country": "fr"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Acme Corp" and response.json()["billing_country"] == "FR"
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="tenant.update")
    assert event.changes == {"name": ["Acme", "Acme Corp"], "billing_country": ["DE", "FR"]}
    assert event.actor.startswith("API key")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"billing_country": "XX"}, "billing_country"),
        ({"currency": "ABC"}, "currency"),
        ({"name": ""}, "name"),
        ({"name": 42, "slug": "mine"}, "slug"),  # unknown field
        ({"status": "active"}, "status"),  # not writable
    ],
)
def test_patch_tenant_bad_input_is_a_field_error_and_changes_nothing(tenant_a, body, field):
    before = Tenant.objects.values().get(pk=tenant_a.tenant.pk)
    response = tenant_a.api.patch("/api/v1/tenant", body, format="json")
    assert response.status_code == 400, response.content
    problem = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert problem["status"] == 400 and problem["title"] and problem["detail"]
    assert field in {error["field"] for error in problem["errors"]}
    assert Tenant.objects.values().get(pk=tenant_a.tenant.pk) == before
    assert not AuditEvent.objects.filter(action="tenant.update").exists()


def test_malformed_json_is_a_400_problem(tenant_a):
    response = tenant_a.api.generic("PATCH", "/api/v1/tenant", '{"name": ', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_non_object_json_is_a_400_problem(tenant_a):
    response = tenant_a.api.generic("PATCH", "/api/v1/tenant", '["name"]', content_type="application/json")
    assert response.status_code == 400


def test_wrong_content_type_is_415(tenant_a):
    response = tenant_a.api.generic("PATCH", "/api/v1/tenant", "name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"


@override_settings(API_MAX_BODY_BYTES=1000)
def test_oversized_body_is_413_and_changes_nothing(tenant_a):
    response = tenant_a.api.patch("/api/v1/tenant", {"name": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.name == "Acme"


def test_unknown_api_route_is_a_404_problem(tenant_a):
    response = tenant_a.api.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_method_not_allowed_is_405_problem(tenant_a):
    response = tenant_a.api.put("/api/v1/tenant", {}, format="json")
    assert response.status_code == 405
    assert response.json()["status"] == 405


def test_gzip_bodies_are_not_silently_misread(tenant_a):
    # Only the usage ingestion endpoint accepts gzip; elsewhere it is a clear 400, not garbage.
    body = gzip.compress(b'{"name": "Zipped"}')
    response = tenant_a.api.generic("PATCH", "/api/v1/tenant", body, content_type="application/json")
    assert response.status_code == 400


# --- members ------------------------------------------------------------------------------


def test_members_list_shows_roles(tenant_a):
    MembershipFactory(tenant=tenant_a.tenant, role=Role.VIEWER)
    members = tenant_a.api.get("/api/v1/members").json()
    assert members["count"] == 2
    assert {m["role"] for m in members["results"]} == {"owner", "viewer"}


def test_change_role_and_remove_member(tenant_a):
    member = MembershipFactory(tenant=tenant_a.tenant, role=Role.VIEWER)
    url = f"/api/v1/members/{member.public_id}"
    response = tenant_a.api.patch(url, {"role": "developer"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "developer"
    assert tenant_a.api.delete(url).status_code == 204
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert {e.action for e in AuditEvent.objects.filter(tenant=tenant_a.tenant)} >= {
        "membership.change_role", "membership.remove"}


def test_last_owner_cannot_be_demoted(tenant_a):
    owner = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.owner)
    # A key is not an owner: it may not touch owners at all.
    response = tenant_a.api.patch(f"/api/v1/members/{owner.public_id}", {"role": "viewer"}, format="json")
    assert response.status_code == 403
    # The owner themself, through the session: refused as the last owner.
    client = _session_client(tenant_a)
    response = client.patch(f"/api/v1/members/{owner.public_id}", {"role": "viewer"}, format="json")
    assert response.status_code == 409 and "at least one owner" in response.json()["detail"]
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_bad_role_is_a_field_error(tenant_a):
    member = MembershipFactory(tenant=tenant_a.tenant, role=Role.VIEWER)
    response = tenant_a.api.patch(f"/api/v1/members/{member.public_id}", {"role": "god"}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "role"


def test_malformed_object_id_is_404(tenant_a):
    assert tenant_a.api.get("/api/v1/members/not-a-uuid").status_code == 404


def _session_client(world):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(world.owner)
    return client


# --- session auth and CSRF ----------------------------------------------------------------


def test_session_user_reads_with_role_scopes(tenant_a):
    viewer = UserFactory()
    MembershipFactory(tenant=tenant_a.tenant, user=viewer, role=Role.VIEWER)
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(viewer)
    assert client.get("/api/v1/tenant").json()["id"] == str(tenant_a.tenant.public_id)
    response = client.post("/api/v1/invitations", {"email": "x@example.com", "role": "viewer"}, format="json")
    assert response.status_code == 403


def test_session_writes_need_csrf(tenant_a, password):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=tenant_a.owner.email, password=password)
    response = client.patch("/api/v1/tenant", {"name": "Via session"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.name == "Acme"
    # With the token it works.
    client.get("/admin/login/")  # any page that sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.patch("/api/v1/tenant", {"name": "Via session"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content


def test_bearer_requests_need_no_csrf(tenant_a):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.plaintext}")
    assert client.patch("/api/v1/tenant", {"name": "Bot"}, format="json").status_code == 200


# --- invitations --------------------------------------------------------------------------


def test_invitation_is_emailed_and_revocable(tenant_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant_a.api.post("/api/v1/invitations", {"email": "New@Example.com", "role": "developer"},
                                     format="json")
    assert response.status_code == 201, response.content
    invitation = response.json()
    assert invitation["email"] == "new@example.com" and invitation["state"] == "pending"
    assert len(mail.outbox) == 1 and "/invitations/" in mail.outbox[0].body
    again = tenant_a.api.post("/api/v1/invitations", {"email": "new@example.com", "role": "viewer"}, format="json")
    assert again.status_code == 409
    assert tenant_a.api.delete(f"/api/v1/invitations/{invitation['id']}").status_code == 204
    assert Invitation.objects.get(public_id=invitation["id"]).state == "revoked"


class UnreachableMailServer(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server unreachable")


@override_settings(EMAIL_BACKEND="tests.tenants.test_api.UnreachableMailServer")
def test_invitation_survives_a_mail_server_that_is_down(tenant_a, django_capture_on_commit_callbacks, caplog):
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant_a.api.post("/api/v1/invitations", {"email": "late@example.com", "role": "viewer"},
                                     format="json")
    assert response.status_code == 201, response.content
    assert Invitation.objects.get(public_id=response.json()["id"]).state == "pending"
    assert "SMTP server unreachable" in caplog.text


def test_key_cannot_invite_an_owner(tenant_a):
    response = tenant_a.api.post("/api/v1/invitations", {"email": "o@example.com", "role": "owner"}, format="json")
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_invalid_invitation_email_is_a_field_error(tenant_a):
    response = tenant_a.api.post("/api/v1/invitations", {"email": "nope", "role": "viewer"}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "email"


# --- audit log ----------------------------------------------------------------------------


def test_audit_log_is_cursor_paginated_and_filterable(tenant_a):
    for index in range(5):
        tenant_a.api.patch("/api/v1/tenant", {"name": f"Name {index}"}, format="json")
    page = tenant_a.api.get("/api/v1/audit-events?page_size=2&action=tenant.update").json()
    assert len(page["results"]) == 2 and page["next"]
    assert page["results"][0]["changes"]["name"][1] == "Name 4"
    second = tenant_a.api.get(page["next"]).json()
    assert second["results"][0]["changes"]["name"][1] == "Name 2"
    one = tenant_a.api.get(f"/api/v1/audit-events/{page['results'][0]['id']}").json()
    assert one["action"] == "tenant.update" and one["source_ip"] == "127.0.0.1"


def test_audit_log_bad_filter_is_400(tenant_a):
    response = tenant_a.api.get("/api/v1/audit-events?since=yesterday")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "since"
