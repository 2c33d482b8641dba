"""API keys: format, hashing, authentication failures, revocation, expiry, scopes."""

import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.conftest import api_client
from tests.factories import make_api_key
from tenants.keys import ALPHABET, generate_key, hash_secret, parse_key
from tenants.models import ApiKey, AuditEvent


def test_generated_key_has_the_documented_format_and_enough_entropy():
    generated = generate_key()
    assert re.fullmatch(r"sy_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}", generated.plaintext)
    assert parse_key(generated.plaintext) == (generated.prefix, generated.secret)
    # 32 base62 characters carry more than 128 bits.
    assert len(generated.secret) * (len(ALPHABET).bit_length() - 1) >= 128 + 32


def test_parse_key_refuses_malformed_text():
    for text in ["", "sy_live_", "sy_test_abcdefghijkl_" + "a" * 32, "sy_live_abc_def", "Bearer x"]:
        assert parse_key(text) is None


def test_plaintext_and_secret_are_nowhere_in_the_database(tenant_a):
    response = tenant_a.api.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json")
    assert response.status_code == 201, response.content
    plaintext = response.json()["key"]
    _prefix, secret = parse_key(plaintext)
    dump = _database_dump()
    assert plaintext not in dump
    assert secret not in dump
    assert hash_secret(secret) in dump  # what is stored is the hash


def _database_dump() -> str:
    """Every text value of every table, as one string."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            chunks.extend(str(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_created_key_authenticates_and_is_shown_once(tenant_a):
    created = tenant_a.api.post("/api/v1/api-keys", {"name": "deploy bot", "scopes": ["read", "deploy"]},
                                format="json").json()
    assert created["display"].startswith("sy_live_") and created["scopes"] == ["deploy", "read"]
    listed = tenant_a.api.get(f"/api/v1/api-keys/{created['id']}").json()
    assert "key" not in listed
    assert api_client(created["key"]).get("/api/v1/tenant").status_code == 200


@pytest.mark.parametrize(
    "header, detail",
    [
        ("Bearer sy_live_nope", "Malformed API key"),
        ("Token sy_live_abcdefghijkl_" + "a" * 32, "Authorization: Bearer"),
        ("Bearer sy_live_abcdefghijkl_" + "a" * 32, "Invalid API key"),
    ],
)
def test_bad_credentials_get_401_problem(db, header, detail):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/tenant")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_with_a_real_prefix_is_refused(tenant_a):
    prefix, _secret = parse_key(tenant_a.plaintext)
    response = api_client(f"sy_live_{prefix}_{'b' * 32}").get("/api/v1/tenant")
    assert response.status_code == 401


def test_no_credential_is_401(db):
    response = api_client().get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["type"].endswith("/unauthenticated")


def test_revocation_takes_effect_on_the_next_request(tenant_a):
    key, plaintext = make_api_key(tenant_a.tenant, scopes=["read"], name="soon revoked")
    client = api_client(plaintext)
    assert client.get("/api/v1/tenant").status_code == 200
    response = tenant_a.api.delete(f"/api/v1/api-keys/{key.public_id}")
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    refused = client.get("/api/v1/tenant")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    # Revoking again is a no-op, audited once.
    assert tenant_a.api.delete(f"/api/v1/api-keys/{key.public_id}").status_code == 200
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.public_id)).count() == 1


def test_expired_key_is_refused(tenant_a):
    key, plaintext = make_api_key(tenant_a.tenant, scopes=["read"], expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api_client(plaintext).get("/api/v1/tenant")
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_key_cannot_be_created_already_expired(tenant_a):
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = tenant_a.api.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"], "expires_at": past},
                                 format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "expires_at"
    assert ApiKey.objects.filter(name="x").count() == 0


def test_last_used_at_is_recorded(tenant_a):
    assert tenant_a.key.last_used_at is None
    tenant_a.api.get("/api/v1/tenant")
    tenant_a.key.refresh_from_db()
    assert tenant_a.key.last_used_at is not None


def test_read_only_key_cannot_write(tenant_a):
    client = tenant_a.client_with_scopes("read")
    assert client.get("/api/v1/api-keys").status_code == 200
    response = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, format="json")
    assert response.status_code == 403
    assert "'admin' scope" in response.json()["detail"]
    assert client.patch("/api/v1/tenant", {"name": "Hacked"}, format="json").status_code == 403
    tenant_a.tenant.refresh_from_db()
    assert tenant_a.tenant.name == "Acme"


def test_key_without_read_scope_cannot_read(tenant_a):
    client = tenant_a.client_with_scopes("invoke")
    assert client.get("/api/v1/tenant").status_code == 403


def test_a_key_cannot_mint_scopes_it_does_not_hold(tenant_a):
    client = tenant_a.client_with_scopes("admin", "read")
    response = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["billing"]}, format="json")
    assert response.status_code == 403
    assert "billing" in response.json()["detail"]


def test_unknown_scope_is_a_field_error(tenant_a):
    response = tenant_a.api.post("/api/v1/api-keys", {"name": "x", "scopes": ["fleet"]}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "scopes.0" or response.json()["errors"][0]["field"] == "scopes"


def test_create_tenant_command_prints_a_working_key(db, capsys):
    call_command("create_tenant", "Initech", "--owner", "boss@initech.example", "--json")
    import json

    printed = json.loads(capsys.readouterr().out)
    assert printed["slug"] == "initech"
    response = api_client(printed["api_key"]).get("/api/v1/tenant")
    assert response.status_code == 200 and response.json()["name"] == "Initech"


def test_suspended_tenant_can_read_but_not_write(tenant_a):
    tenant_a.tenant.status = "suspended"
    tenant_a.tenant.save()
    assert tenant_a.api.get("/api/v1/tenant").status_code == 200
    response = tenant_a.api.patch("/api/v1/tenant", {"name": "New"}, format="json")
    assert response.status_code == 403 and "suspended" in response.json()["detail"]
