from celery import shared_task

from tenants.idempotency import idempotency_purge
from tenants.rate_limits import rate_counter_purge
from tenants.webhooks import webhook_deliveries_send_due, webhook_delivery_attempt, webhook_delivery_purge


@shared_task
def idempotency_purge_task() -> int:
    return idempotency_purge()


@shared_task
def rate_counter_purge_task() -> int:
    return rate_counter_purge()


@shared_task
def webhook_deliver_task(delivery_id: int) -> str | None:
    """The first attempt of a delivery, enqueued when the event's transaction commits (and
    redeliveries). Does nothing if the delivery was already claimed or sent: the periodic
    sweep and this task may race, one of them sends."""
    return webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task
def webhook_send_due_task() -> int:
    """Run by beat every 10 s: send the deliveries that are due (retries, and first attempts whose
    task was lost). Bounded in time; safe to run in many workers at once."""
    return webhook_deliveries_send_due()


@shared_task
def webhook_delivery_purge_task() -> int:
    """Run by beat hourly: forget finished deliveries older than 30 days."""
    return webhook_delivery_purge()
