"""The cross-tenant matrix, generated from the URL router.

For every API route and every method it serves: tenant A's all-scopes key on
tenant B's object gets 404, exactly like a missing object, and nothing of tenant
B changes. Lists and singletons never show B's ids. Routes added by later work
are covered automatically; one the matrix cannot build an object for fails it.
"""

import json

import pytest
from django.forms.models import model_to_dict
from django.urls import URLPattern, URLResolver, get_resolver

from tests.conftest import api_client
from tests.cross_tenant_objects import OBJECT_FACTORIES
from tenants.models import AuditEvent
from tenants.rest import TenantAPIView

PUBLIC_ROUTES = {"api-schema"}  # the OpenAPI schema needs no credential


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
TENANT_ROUTES = [r for r in ROUTES if r[0] not in PUBLIC_ROUTES]
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
