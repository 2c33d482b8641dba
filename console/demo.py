"""The demo tenant that `manage.py up` seeds into an empty database.

A first-time user gets something to log in to without reading any docs: a
tenant "Demo", its owner `demo@switchyard.local` with a freshly generated
password, and an API key with every scope. The password and the key exist in
plain text only in the returned DemoCredentials: whoever calls `demo_seed`
shows them once, and they cannot be recovered afterwards.
"""

import secrets
from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from tenants import services
from tenants.context import system_actor
from tenants.models import Tenant, User
from tenants.roles import ALL_SCOPES

DEMO_TENANT_NAME = "Demo"
DEMO_OWNER_EMAIL = "demo@switchyard.local"
DEMO_KEY_NAME = "Demo key (created by manage.py up)"


@dataclass(frozen=True)
class DemoCredentials:
    tenant_name: str
    tenant_slug: str
    email: str
    password: str
    api_key: str


def demo_seed() -> DemoCredentials | None:
    """Create the demo tenant, owner and API key when the database has no tenant at all.

    Returns the credentials on the call that created them, and None when the
    database already has a tenant (the demo or anyone else's): seeding never
    touches a database in use. The owner's password is always the one returned:
    a leftover `demo@switchyard.local` user without a tenant gets it too.
    """
    password = demo_password()
    with transaction.atomic():
        if Tenant.objects.exists():
            return None
        tenant, owner = services.tenant_create(
            name=DEMO_TENANT_NAME, owner_email=DEMO_OWNER_EMAIL, owner_password=password
        )
        if not owner.check_password(password):
            # tenant_create reuses an existing user and keeps their password.
            owner.set_password(password)
            owner.save(update_fields=["password"])
        _key, plaintext = services.api_key_create(
            actor=system_actor(tenant), name=DEMO_KEY_NAME, scopes=sorted(ALL_SCOPES)
        )
        # The demo fleet (scheduler/data/demo_fleet.yaml), so deployments have somewhere to run.
        from scheduler.services import fleet_import_demo

        fleet_import_demo()
        # The default USD price book (billing/data/default_pricebook.yaml), so usage is priced.
        from billing.pricebooks import pricebook_import_default

        pricebook_import_default()
    return DemoCredentials(
        tenant_name=tenant.name, tenant_slug=tenant.slug, email=owner.email, password=password, api_key=plaintext
    )


def demo_password(attempts: int = 100) -> str:
    """A random password the project's own validators accept for the demo owner. A random one
    can fail them: lower-cased, 16 random characters share enough letters with
    "demo@switchyard.local" now and then for the similarity check to refuse it."""
    owner = User(email=DEMO_OWNER_EMAIL)
    for _ in range(attempts):
        password = secrets.token_urlsafe(12)
        try:
            validate_password(password, user=owner)
        except ValidationError:
            continue
        return password
    raise RuntimeError(f"no random password passed the password validators in {attempts} tries")


def demo_owner_exists() -> bool:
    return User.objects.filter(email=DEMO_OWNER_EMAIL).exists()
