"""The cross-tenant matrix, generated from the URL router.

For every API route and every method it serves: tenant A's all-scopes key on
tenant B's object gets 404, exactly like a missing object, and nothing of tenant
B changes. Lists and singletons never show B's ids. Routes added by later work
are covered automatically; one the matrix cannot build an object for fails it.

Routes under /api/v1/fleet/ and usage ingestion are the operator's: every one is an
OperatorAPIView, refuses a tenant key with every scope (403, and changes nothing), and
answers a staff session (with CSRF) and a service token with the scope the route names
(`fleet`, or `usage:write` for ingestion), and no token without it.
"""

import json

import pytest
from django.forms.models import model_to_dict
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from billing.models import UsageEvent
from scheduler.models import FleetEvent, Node, TenantLimits, TenantQuota
from tests.conftest import api_client
from tests.cross_tenant_objects import OBJECT_FACTORIES, OPERATOR_OBJECTS
from tests.factories import UserFactory
from tenants.models import AuditEvent
from tenants.rest import OperatorAPIView, TenantAPIView
from tenants.roles import ALL_SERVICE_SCOPES
from tenants.services import service_token_create

PUBLIC_ROUTES = {"api-schema"}  # the OpenAPI schema needs no credential
# The operator's routes: the fleet, and usage ingestion (service tokens with `usage:write`).
OPERATOR_PREFIXES = ("api/v1/fleet/", "api/v1/usage/events")


def _api_routes():
    """(url name, route string, view class) of every route under /api/v1/."""
    routes = []

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                if route.startswith("api/v1/"):
                    routes.append((pattern.name, route, getattr(pattern.callback, "view_class", None)))

    walk(get_resolver().url_patterns, "")
    return routes


ROUTES = _api_routes()
OPERATOR_ROUTES = [r for r in ROUTES if r[1].startswith(OPERATOR_PREFIXES)]
TENANT_ROUTES = [r for r in ROUTES if r[0] not in PUBLIC_ROUTES and r not in OPERATOR_ROUTES]
DETAIL_ROUTES = [r for r in TENANT_ROUTES if "<" in r[1]]
COLLECTION_ROUTES = [r for r in TENANT_ROUTES if "<" not in r[1]]


def _methods(view_class) -> list[str]:
    return sorted(m for m in view_class.required_scopes if hasattr(view_class, m.lower()))


def _url(route: str, value: str) -> str:
    if "<" not in route:
        return "/" + route
    head, _, rest = route.partition("<")
    _param, _, tail = rest.partition(">")
    return "/" + head + value + tail


def _snapshot(obj) -> dict | None:
    fresh = type(obj)._default_manager.filter(pk=obj.pk).first()
    return None if fresh is None else model_to_dict(fresh)


def test_every_tenant_route_is_a_tenant_view():
    assert TENANT_ROUTES, "no API routes found"
    for name, route, view_class in TENANT_ROUTES:
        assert view_class is not None and issubclass(view_class, TenantAPIView), f"{route} is not a TenantAPIView"


@pytest.mark.parametrize("name, route, view_class", DETAIL_ROUTES, ids=[r[1] for r in DETAIL_ROUTES])
def test_other_tenants_object_is_404_and_unchanged(tenant_a, tenant_b, name, route, view_class):
    assert name in OBJECT_FACTORIES, f"the matrix cannot build an object for {route} ({name}): add a factory"
    made = OBJECT_FACTORIES[name](tenant_b)
    url = _url(route, str(made.obj.public_id))
    for method in _methods(view_class):
        before, audit_before = _snapshot(made.obj), AuditEvent.objects.filter(tenant=tenant_b.tenant).count()
        body = made.bodies.get(method, {})
        response = tenant_a.api.generic(method, url, json.dumps(body), content_type="application/json")
        assert response.status_code == 404, f"{method} {url}: {response.status_code} {response.content[:200]}"
        missing = tenant_a.api.generic(method, _url(route, "00000000-0000-0000-0000-000000000000"),
                                       json.dumps(body), content_type="application/json")
        assert response.json()["detail"] == missing.json()["detail"], "not-yours must read exactly as not-found"
        assert _snapshot(made.obj) == before, f"{method} {url} changed tenant B's object"
        assert AuditEvent.objects.filter(tenant=tenant_b.tenant).count() == audit_before
        # B's own key still reaches it: the 404 is about the tenant, not a broken route.
        if method == "GET":
            assert tenant_b.api.get(url).status_code == 200


@pytest.mark.parametrize("name, route, view_class", COLLECTION_ROUTES, ids=[r[1] for r in COLLECTION_ROUTES])
def test_collections_never_show_another_tenants_ids(tenant_a, tenant_b, name, route, view_class):
    b_ids = {str(tenant_b.tenant.public_id)}
    for factory in OBJECT_FACTORIES.values():
        b_ids.add(str(factory(tenant_b).obj.public_id))
    if "GET" in _methods(view_class):
        response = tenant_a.api.get("/" + route)
        assert response.status_code == 200, response.content
        text = response.content.decode()
        assert not [i for i in b_ids if i in text], f"GET /{route} shows tenant B's objects"


@pytest.mark.parametrize("name, route, view_class", TENANT_ROUTES, ids=[r[1] for r in TENANT_ROUTES])
def test_every_tenant_route_needs_a_credential(db, name, route, view_class):
    url = _url(route, "00000000-0000-0000-0000-000000000000")
    for method in _methods(view_class):
        response = api_client().generic(method, url, "{}", content_type="application/json")
        assert response.status_code == 401, f"{method} {url} answered {response.status_code} without a credential"


# --- operator routes ------------------------------------------------------------------------


def test_every_operator_route_is_an_operator_view():
    assert OPERATOR_ROUTES, "no operator routes found"
    for _name, route, view_class in OPERATOR_ROUTES:
        assert view_class is not None and issubclass(view_class, OperatorAPIView), f"{route} is not an OperatorAPIView"
        assert not issubclass(view_class, TenantAPIView)


def _operator_url(route: str, made) -> str:
    return _url(route, made.value if made else "none")


def _operator_made(name: str, route: str, world):
    # Routes with a path parameter need an object; others may give request bodies.
    return OPERATOR_OBJECTS[name](world) if "<" in route or name in OPERATOR_OBJECTS else None


def _fleet_snapshot() -> tuple:
    return (list(Node.objects.values_list("name", "state").order_by("name")), FleetEvent.objects.count(),
            list(TenantQuota.objects.values_list("tenant_id", "tier_id", "max_accelerators").order_by("pk")),
            list(TenantLimits.objects.values_list("tenant_id", "max_priority").order_by("pk")),
            AuditEvent.objects.count(), UsageEvent.objects.count())


@pytest.mark.parametrize("name, route, view_class", OPERATOR_ROUTES, ids=[r[1] for r in OPERATOR_ROUTES])
def test_operator_route_refuses_a_tenant_key_with_every_scope(tenant_a, name, route, view_class):
    if "<" in route:
        assert name in OPERATOR_OBJECTS, f"no operator object for {route} ({name}): add one to OPERATOR_OBJECTS"
    made = _operator_made(name, route, tenant_a)
    url = _operator_url(route, made)
    for method in _methods(view_class):
        before = _fleet_snapshot()
        body = made.bodies.get(method, {}) if made else {}
        response = tenant_a.api.generic(method, url, json.dumps(body), content_type="application/json")
        assert response.status_code == 403, f"{method} {url}: {response.status_code} {response.content[:200]}"
        assert "fleet is the operator's" in response.json()["detail"]
        assert _fleet_snapshot() == before, f"{method} {url} changed something for a tenant key"


def _staff_session() -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(UserFactory(is_staff=True))
    client.get("/admin/")  # any page that sets the CSRF cookie
    client.defaults["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    return client


def _service_token_client(*scopes: str) -> APIClient:
    _token, plaintext = service_token_create(name="matrix", scopes=list(scopes))
    return api_client(plaintext)


@pytest.mark.parametrize("name, route, view_class", OPERATOR_ROUTES, ids=[r[1] for r in OPERATOR_ROUTES])
def test_operator_route_answers_staff_and_a_service_token_with_its_scope(tenant_a, name, route, view_class):
    made = _operator_made(name, route, tenant_a)
    url = _operator_url(route, made)
    for method in _methods(view_class):
        for client in (_staff_session(), _service_token_client(view_class.required_scopes[method])):
            body = made.bodies.get(method, {}) if made else {}
            response = client.generic(method, url, json.dumps(body), content_type="application/json")
            assert response.status_code in (200, 202), \
                f"{method} {url}: {response.status_code} {response.content[:300]}"


@pytest.mark.parametrize("name, route, view_class", OPERATOR_ROUTES, ids=[r[1] for r in OPERATOR_ROUTES])
def test_operator_route_needs_its_scope_and_csrf(tenant_a, name, route, view_class):
    made = _operator_made(name, route, tenant_a)
    url = _operator_url(route, made)
    session_without_csrf = _staff_session()
    del session_without_csrf.defaults["HTTP_X_CSRFTOKEN"]
    for method in _methods(view_class):
        scope = view_class.required_scopes[method]
        every_other_scope = _service_token_client(*sorted(ALL_SERVICE_SCOPES - {scope}))
        body = json.dumps(made.bodies.get(method, {}) if made else {})
        response = every_other_scope.generic(method, url, body, content_type="application/json")
        assert response.status_code == 403 and f"'{scope}' scope" in response.json()["detail"]
        if method != "GET":
            response = session_without_csrf.generic(method, url, body, content_type="application/json")
            assert response.status_code == 403 and "CSRF" in response.json()["detail"]


@pytest.mark.parametrize("name, route, view_class", OPERATOR_ROUTES, ids=[r[1] for r in OPERATOR_ROUTES])
def test_operator_route_refuses_a_member_who_is_not_staff(tenant_a, name, route, view_class):
    client = APIClient()
    client.force_login(tenant_a.owner)
    for method in _methods(view_class):
        response = client.generic(method, _url(route, "x"), "{}", content_type="application/json")
        assert response.status_code == 403, f"{method} {route}: {response.status_code}"


@pytest.mark.parametrize("name, route, view_class", OPERATOR_ROUTES, ids=[r[1] for r in OPERATOR_ROUTES])
def test_every_operator_route_needs_a_credential(db, name, route, view_class):
    for method in _methods(view_class):
        response = api_client().generic(method, _url(route, "x"), "{}", content_type="application/json")
        assert response.status_code == 401, f"{method} {route} answered {response.status_code} without a credential"
