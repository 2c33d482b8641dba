"""The back office: staff only, keys without secrets, an append-only audit log."""

import pytest
from django.test import Client

from tests.factories import UserFactory
from tenants.keys import parse_key
from tenants.models import AuditEvent, Tenant


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_back_office_is_for_staff_only(tenant_a):
    client = Client()
    client.force_login(tenant_a.owner)
    response = client.get("/admin/tenants/tenant/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_api_key_pages_never_show_a_secret(staff_client, tenant_a):
    _prefix, secret = parse_key(tenant_a.plaintext)
    listing = staff_client.get("/admin/tenants/apikey/")
    detail = staff_client.get(f"/admin/tenants/apikey/{tenant_a.key.pk}/change/")
    assert listing.status_code == detail.status_code == 200
    for page in (listing, detail):
        text = page.content.decode()
        assert tenant_a.key.prefix in text
        assert secret not in text and tenant_a.key.secret_hash not in text


def test_suspend_action_is_audited_and_blocks_writes(staff_client, tenant_a):
    response = staff_client.post("/admin/tenants/tenant/", {
        "action": "suspend", "_selected_action": [tenant_a.tenant.pk]})
    assert response.status_code == 302
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.status == Tenant.Status.SUSPENDED
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="tenant.set_status")
    assert event.changes == {"status": ["active", "suspended"]}
    assert tenant_a.api.patch("/api/v1/tenant", {"name": "x"}, format="json").status_code == 403


def test_audit_log_cannot_be_edited_or_deleted(staff_client, tenant_a):
    tenant_a.api.patch("/api/v1/tenant", {"name": "Renamed"}, format="json")
    event = AuditEvent.objects.get(action="tenant.update")
    assert staff_client.get(f"/admin/tenants/auditevent/{event.pk}/change/").status_code == 200
    staff_client.post(f"/admin/tenants/auditevent/{event.pk}/change/", {"action": "forged"})
    staff_client.post(f"/admin/tenants/auditevent/{event.pk}/delete/", {"post": "yes"})
    event.refresh_from_db()
    assert event.action == "tenant.update"


def test_revoke_from_back_office(staff_client, tenant_a):
    staff_client.post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [tenant_a.key.pk]})
    assert tenant_a.api.get("/api/v1/tenant").status_code == 401
