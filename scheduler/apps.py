from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Inference control plane"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_sync_catalog_after_migrate, sender=self)


def _sync_catalog_after_migrate(sender, using="default", **kwargs) -> None:
    """Every migrate (and every test database) ends with the catalog of data/accelerators.yaml."""
    from scheduler.services import catalog_sync

    catalog_sync()
