from celery import shared_task

from tenants.idempotency import idempotency_purge


@shared_task
def idempotency_purge_task() -> int:
    return idempotency_purge()
