"""The per-process cache of verified API keys: no query when warm, never stale."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.key_cache import bump_epoch, read_epoch
from tenants.models import ApiKey
from tenants.services import service_token_create, service_token_revoke
from tests.conftest import api_client


def _key_queries(client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/tenant").status_code == 200
    return [q["sql"] for q in queries.captured_queries if "tenants_apikey" in q["sql"]]


def test_a_warm_key_costs_no_query(tenant_a):
    _key_queries(tenant_a.api)  # first use loads it (and records last_used_at)
    assert _key_queries(tenant_a.api) == []


def test_bumping_the_epoch_reloads_the_key(tenant_a):
    _key_queries(tenant_a.api)
    before = read_epoch()
    bump_epoch()
    assert read_epoch() != before
    assert any("SELECT" in sql for sql in _key_queries(tenant_a.api))


def test_a_change_made_behind_the_cache_is_seen_after_the_epoch_moves(tenant_a):
    """Another process revokes the key (simulated by a bare UPDATE) and bumps the epoch."""
    _key_queries(tenant_a.api)
    ApiKey.objects.filter(pk=tenant_a.key.pk).update(name="renamed elsewhere")
    bump_epoch()
    tenant_a.api.get("/api/v1/tenant")
    from tenants.key_cache import cached

    assert cached(tenant_a.key.prefix).key.name == "renamed elsewhere"


def test_tenant_changes_reach_cached_keys(tenant_a):
    tenant_a.api.get("/api/v1/tenant")
    tenant_a.tenant.name = "Renamed in the back office"
    tenant_a.tenant.save()
    assert tenant_a.api.get("/api/v1/tenant").json()["name"] == "Renamed in the back office"


def test_a_wrong_secret_never_matches_a_cached_key(tenant_a):
    tenant_a.api.get("/api/v1/tenant")
    prefix = tenant_a.key.prefix
    from tests.conftest import api_client

    assert api_client(f"sy_live_{prefix}_{'x' * 32}").get("/api/v1/tenant").status_code == 401


# --- service tokens share the cache and its epoch ---------------------------------------------------

SERVICE_ROUTE = "/api/v1/fleet/nodes"


def _token_queries(plaintext: str) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        status = api_client(plaintext).get(SERVICE_ROUTE).status_code
    return status, sum("tenants_servicetoken" in q["sql"] and "SELECT" in q["sql"] for q in queries.captured_queries)


def test_a_warm_service_token_costs_no_query(db):
    _token, plaintext = service_token_create(name="gateway", scopes=["fleet"])
    assert _token_queries(plaintext) == (200, 1)
    assert _token_queries(plaintext) == (200, 0)


def test_revoking_a_cached_service_token_refuses_it_at_once(db):
    token, plaintext = service_token_create(name="g", scopes=["fleet"])
    assert _token_queries(plaintext)[0] == 200  # now cached
    service_token_revoke(token=token)
    assert _token_queries(plaintext)[0] == 401


def test_a_service_token_changed_in_the_back_office_is_reloaded(db):
    token, plaintext = service_token_create(name="g", scopes=["fleet"])
    assert _token_queries(plaintext)[0] == 200
    token.scopes = ["usage:write"]
    token.save()  # post_save bumps the epoch
    assert _token_queries(plaintext)[0] == 403


def test_a_wrong_secret_never_matches_a_cached_service_token(db):
    _token, plaintext = service_token_create(name="g", scopes=["fleet"])
    assert _token_queries(plaintext)[0] == 200
    assert _token_queries(plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb"))[0] == 401
