"""Shared fixtures: two tenants, each with an owner and an all-scopes API key.

Markers `postgres` and `redis` skip on the embedded run; with
SWITCHYARD_REQUIRE_SERVICES=1 (the PostgreSQL pass of .ci/run) any skip of such
a test fails the run, so they cannot silently not run.
"""

import os
from dataclasses import dataclass

import pytest
from django.conf import settings
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from tests.factories import PASSWORD, MembershipFactory, TenantFactory, UserFactory, make_api_key
from tenants.models import ApiKey, Tenant, User
from tenants.roles import Role

pytest_plugins = ["tests.browser"]

# Property tests judge results, not speed: on a loaded 2-core CI machine Hypothesis's default
# 200 ms deadline fails correct examples at random.
hypothesis_settings.register_profile("switchyard", deadline=None)
hypothesis_settings.load_profile("switchyard")

SERVICE_MARKERS = ("postgres", "redis")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "postgres" in item.keywords and not settings.DATABASE_IS_POSTGRES:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://…"))
        if "redis" in item.keywords and not settings.REDIS_URL:
            item.add_marker(pytest.mark.skip(reason="needs Redis: set REDIS_URL=redis://…"))


_skipped_service_tests: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and any(marker in report.keywords for marker in SERVICE_MARKERS):
        _skipped_service_tests.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("SWITCHYARD_REQUIRE_SERVICES") == "1" and _skipped_service_tests:
        print("\nSWITCHYARD_REQUIRE_SERVICES=1 but these service tests were skipped:")
        for nodeid in _skipped_service_tests:
            print(f"  {nodeid}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2's deliberate slowness protects stored passwords; in tests it only costs time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def roomy_sign_in_limits(settings):
    # Every test signs in from 127.0.0.1 and, with Redis, counters outlive a test: the limits'
    # own tests (tests/tenants/test_sign_in_limits.py) set theirs, with addresses of their own.
    settings.LOGIN_RATE_LIMIT = settings.PASSWORD_RESET_RATE_LIMIT = "100000/minute"


@dataclass
class TenantWorld:
    tenant: Tenant
    owner: User
    key: ApiKey
    plaintext: str
    api: APIClient  # authenticated with the all-scopes key

    def client_with_scopes(self, *scopes: str) -> APIClient:
        _key, plaintext = make_api_key(self.tenant, scopes=scopes, name="scoped")
        return api_client(plaintext)


def api_client(plaintext: str | None = None) -> APIClient:
    client = APIClient()
    if plaintext:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def _world(name: str) -> TenantWorld:
    tenant = TenantFactory(name=name)
    owner = UserFactory(email=f"owner@{tenant.slug}.example.com")
    MembershipFactory(tenant=tenant, user=owner, role=Role.OWNER)
    key, plaintext = make_api_key(tenant, name=f"{name} key")
    return TenantWorld(tenant=tenant, owner=owner, key=key, plaintext=plaintext, api=api_client(plaintext))


@pytest.fixture
def tenant_a(db) -> TenantWorld:
    return _world("Acme")


@pytest.fixture
def tenant_b(db) -> TenantWorld:
    return _world("Globex")


@pytest.fixture
def password() -> str:
    return PASSWORD
