"""Tenant scoping, in one place.

Every read of a tenant-owned row goes through `scoped` or `get_owned`: they filter
by tenant, so another tenant's object is answered exactly like a missing one.
Crossing tenants is only possible through functions named `unscoped_…`.
"""

from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from tenants.models import Tenant


class NotFound(Exception):
    """No such object in this tenant (whether it exists elsewhere is nobody's business)."""

    def __init__(self, model: type[Model]):
        super().__init__(f"{model._meta.verbose_name.capitalize()} not found.")
        self.model = model


def scoped(source: type[Model] | QuerySet, tenant: Tenant) -> QuerySet:
    queryset = source if isinstance(source, QuerySet) else source._default_manager.all()
    return queryset.filter(tenant=tenant)


def get_owned(source: type[Model] | QuerySet, tenant: Tenant, public_id) -> Model:
    """The tenant's object with this public id, or NotFound."""
    queryset = scoped(source, tenant)
    try:
        return queryset.get(public_id=public_id)
    except (queryset.model.DoesNotExist, ValidationError, ValueError):
        # A malformed id is as missing as an unknown one.
        raise NotFound(queryset.model) from None
