"""Service tokens: the operator's credentials (`sy_svc_…`), made by a command, shown once, stored as a
hash, scoped, revocable and expiring; accepted by operator routes only; tenant keys unchanged."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tests.conftest import api_client
from tests.cross_tenant_objects import small_fleet
from tests.factories import UserFactory
from tenants.errors import Forbidden, ServiceError
from tenants.keys import SERVICE_TOKEN, hash_secret, parse_key
from tenants.models import ServiceToken
from tenants.services import service_token_create, service_token_revoke

FLEET_ROUTE = "/api/v1/fleet/nodes"


def test_the_command_prints_the_token_once_and_stores_only_its_hash(db):
    out = StringIO()
    call_command("create_service_token", "gateway eu-north1", "--scopes", "usage:write", stdout=out)
    plaintext = out.getvalue().strip().splitlines()[-1]
    prefix, secret = parse_key(plaintext, SERVICE_TOKEN)
    token = ServiceToken.objects.get()
    assert plaintext.startswith("sy_svc_") and token.prefix == prefix
    assert token.secret_hash == hash_secret(secret) and secret not in str(token.__dict__)
    assert token.scopes == ["usage:write"] and token.name == "gateway eu-north1" and token.state == "active"


def test_the_command_defaults_to_every_scope_and_can_expire(db):
    staff = UserFactory(is_staff=True, email="ops@example.com")
    out = StringIO()
    call_command("create_service_token", "ops", "--created-by", "ops@example.com", "--expires-in-days", "30",
                 "--json", stdout=out)
    token = ServiceToken.objects.get()
    assert token.scopes == ["fleet", "usage:write"] and token.created_by == staff
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert '"token": "sy_svc_' in out.getvalue()


@pytest.mark.parametrize("arguments, message", [
    (["--scopes", "read"], "Unknown service scopes: read"),
    (["--created-by", "nobody@example.com"], "No user nobody@example.com"),
    (["--expires-in-days", "0"], "at least 1"),
])
def test_the_command_refuses_bad_input(db, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_service_token", "x", *arguments, stdout=StringIO())
    assert not ServiceToken.objects.exists()


def test_only_staff_create_tokens(db):
    with pytest.raises(Forbidden):
        service_token_create(name="x", scopes=["fleet"], created_by=UserFactory())
    with pytest.raises(ServiceError, match="at least one scope"):
        service_token_create(name="x", scopes=[])


def test_a_fleet_token_opens_operator_routes_and_records_its_use(db):
    small_fleet()
    token, plaintext = service_token_create(name="bot", scopes=["fleet"])
    response = api_client(plaintext).get(FLEET_ROUTE)
    assert response.status_code == 200 and response.json()["count"] == 2
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("spoil, message", [
    (lambda token: service_token_revoke(token=token), "revoked"),
    (lambda token: ServiceToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(1)),
     "expired"),
])
def test_revoked_or_expired_tokens_are_401(db, spoil, message):
    token, plaintext = service_token_create(name="bot", scopes=["fleet"])
    spoil(token)
    response = api_client(plaintext).get(FLEET_ROUTE)
    assert response.status_code == 401 and message in response.json()["detail"]


def test_wrong_or_malformed_tokens_are_401(db):
    _token, plaintext = service_token_create(name="bot", scopes=["fleet"])
    wrong = plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb")
    assert api_client(wrong).get(FLEET_ROUTE).json()["detail"] == "Invalid service token."
    assert "Malformed service token" in api_client("sy_svc_short").get(FLEET_ROUTE).json()["detail"]


def test_a_token_without_the_scope_is_403(db):
    _token, plaintext = service_token_create(name="meter", scopes=["usage:write"])
    response = api_client(plaintext).get(FLEET_ROUTE)
    assert response.status_code == 403 and "'fleet' scope" in response.json()["detail"]


def test_a_service_token_is_not_a_tenant_credential(db):
    _token, plaintext = service_token_create(name="bot", scopes=["fleet", "usage:write"])
    response = api_client(plaintext).get("/api/v1/tenant")
    assert response.status_code == 401
    assert "operator routes" in response.json()["detail"]


def test_tenant_keys_keep_working_and_are_refused_on_operator_routes(tenant_a):
    assert tenant_a.api.get("/api/v1/tenant").status_code == 200
    response = tenant_a.api.get(FLEET_ROUTE)
    assert response.status_code == 403 and "fleet is the operator's" in response.json()["detail"]


def test_a_staff_session_is_an_operator_and_a_member_session_is_not(tenant_a):
    staff = api_client()
    staff.force_login(UserFactory(is_staff=True))
    assert staff.get(FLEET_ROUTE).status_code == 200
    member = api_client()
    member.force_login(tenant_a.owner)
    assert member.get(FLEET_ROUTE).status_code == 403


def test_revoking_twice_changes_nothing(db):
    token, _plaintext = service_token_create(name="bot", scopes=["fleet"])
    first = service_token_revoke(token=token).revoked_at
    assert service_token_revoke(token=token).revoked_at == first


# --- back office ----------------------------------------------------------------------------


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_admin_never_shows_a_secret_and_cannot_add(staff_client):
    token, plaintext = service_token_create(name="bot", scopes=["fleet"])
    _prefix, secret = parse_key(plaintext, SERVICE_TOKEN)
    for url in ("/admin/tenants/servicetoken/", f"/admin/tenants/servicetoken/{token.pk}/change/"):
        page = staff_client.get(url)
        assert page.status_code == 200
        text = page.content.decode()
        assert token.prefix in text and secret not in text and token.secret_hash not in text
    assert staff_client.get("/admin/tenants/servicetoken/add/").status_code == 403


def test_admin_revoke_action(staff_client):
    token, plaintext = service_token_create(name="bot", scopes=["fleet"])
    response = staff_client.post("/admin/tenants/servicetoken/", {"action": "revoke",
                                                                  "_selected_action": [token.pk]})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.state == "revoked"
    assert api_client(plaintext).get(FLEET_ROUTE).status_code == 401


def test_the_schema_documents_service_tokens_on_operator_routes(db, tmp_path):
    import yaml

    call_command("spectacular", "--file", str(tmp_path / "schema.yaml"))
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    assert schema["components"]["securitySchemes"]["ServiceToken"]["bearerFormat"] == "sy_svc_<prefix>_<secret>"
    fleet = schema["paths"]["/api/v1/fleet/nodes"]["get"]["security"]
    assert {"ServiceToken": []} in fleet and {"ApiKey": []} not in fleet
    tenant = schema["paths"]["/api/v1/deployments"]["get"]["security"]
    assert {"ApiKey": []} in tenant and {"ServiceToken": []} not in tenant
    assert "Idempotency-Key" not in str(schema["paths"]["/api/v1/fleet/nodes/{node_name}/cordon"]["post"])


def test_is_operator_takes_a_fixed_scope_for_views_of_one_purpose(db):
    """How usage ingestion will guard itself: IsOperator("usage:write") instead of per-method scopes."""
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory

    from tenants.permissions import IsOperator
    from tenants.rest import OperatorAPIView

    class IngestView(OperatorAPIView):
        permission_classes = [IsOperator("usage:write")]

        def post(self, request):
            return Response({"accepted": 0})

    _token, meter = service_token_create(name="meter", scopes=["usage:write"])
    _token, fleet = service_token_create(name="fleet", scopes=["fleet"])
    factory = APIRequestFactory()
    for plaintext, expected in ((meter, 200), (fleet, 403)):
        request = factory.post("/x", {}, format="json", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        assert IngestView.as_view()(request).status_code == expected
