"""Factories for tests: rows made through the real services where rules apply."""

import factory

from tenants import services
from tenants.context import system_actor
from tenants.models import Membership, Tenant, User
from tenants.roles import ALL_SCOPES, Role

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    billing_country = "DE"
    currency = "EUR"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.DEVELOPER


def make_api_key(tenant: Tenant, scopes=ALL_SCOPES, **kwargs):
    """(ApiKey, plaintext) made by the real service."""
    return services.api_key_create(actor=system_actor(tenant), name=kwargs.pop("name", "test key"),
                                   scopes=sorted(scopes), **kwargs)
