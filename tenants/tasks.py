from celery import shared_task

from tenants.idempotency import idempotency_purge
from tenants.rate_limits import rate_counter_purge


@shared_task
def idempotency_purge_task() -> int:
    return idempotency_purge()


@shared_task
def rate_counter_purge_task() -> int:
    return rate_counter_purge()
