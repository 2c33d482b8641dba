from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and identity"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from tenants import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from tenants.models import ApiKey, ServiceToken, Tenant

        # Any saved or deleted key, service token or tenant (services, back office, shell)
        # invalidates the per-process credential caches, which hold keys with their tenant.
        for model in (ApiKey, ServiceToken, Tenant):
            post_save.connect(_credentials_changed, sender=model, dispatch_uid=f"key-cache-{model.__name__}-save")
            post_delete.connect(_credentials_changed, sender=model, dispatch_uid=f"key-cache-{model.__name__}-del")


def _credentials_changed(sender, **kwargs) -> None:
    from tenants.key_cache import credentials_changed

    credentials_changed()
