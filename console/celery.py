"""The Celery app: one configuration for every worker, and the beat schedule in one place.

Every Switchyard task is idempotent (it takes ids and re-derives what to do from
the database), so messages are acknowledged late and re-queued if a worker dies
mid-task: a task may run twice, never zero times.
"""

import os

from celery import Celery, signals
from celery.schedules import crontab
from django.conf import settings
from kombu import Queue
from prometheus_client import Counter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("switchyard")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("default", "reconcile", "metering", "billing")

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=300,
    task_soft_time_limit=240,
    task_default_queue="default",
    task_queues=[Queue(name) for name in QUEUES],
    # Each app's tasks go to its own queue, so a flood of one kind of work
    # cannot starve another; `manage.py up` runs one worker on all of them.
    task_routes={
        "scheduler.tasks.*": {"queue": "reconcile"},
        # Invoicing has its own queue: a month's close never waits behind the collectors.
        "billing.tasks.period_close_task": {"queue": "billing"},
        "billing.tasks.invoice_refresh_drafts_task": {"queue": "billing"},
        "billing.tasks.budgets_evaluate_task": {"queue": "billing"},
        "billing.tasks.*": {"queue": "metering"},
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    beat_schedule={
        # Invoicing (docs/billing.md): close the months that are over, every six hours at :05
        # (idempotent: a closed month has nothing left; a crashed run's claims are retried once stale),
        # and keep the current month's drafts up to date.
        "close-billing-periods": {
            "task": "billing.tasks.period_close_task",
            "schedule": crontab(minute=5, hour="*/6"),
        },
        "refresh-draft-invoices": {
            "task": "billing.tasks.invoice_refresh_drafts_task",
            "schedule": 3600.0,
            "options": {"expires": 3000.0},
        },
        # Budgets (docs/billing.md, "Budgets"): alerts and the action at 100 %, every five minutes;
        # each alert and action happens once per month (constraints), so a late or doubled run is
        # harmless and a stale message is dropped for the next beat's.
        "evaluate-budgets": {
            "task": "billing.tasks.budgets_evaluate_task",
            "schedule": 300.0,
            "options": {"expires": 270.0},
        },
        "purge-expired-idempotency-records": {
            "task": "tenants.tasks.idempotency_purge_task",
            "schedule": 3600.0,
        },
        "purge-expired-rate-counters": {
            "task": "tenants.tasks.rate_counter_purge_task",
            "schedule": 600.0,
        },
        # Reconcile: one pass per beat; a message older than one interval is dropped (the
        # next beat brings a fresh one), so a stopped worker does not come back to a backlog.
        "reconcile": {
            "task": "scheduler.tasks.reconcile_task",
            "schedule": settings.SWITCHYARD_RECONCILE_SECONDS,
            "options": {"expires": max(1.0, settings.SWITCHYARD_RECONCILE_SECONDS * 0.9)},
        },
        # Webhooks: retries and lost first attempts (first attempts are enqueued on commit).
        # Retries are rows with a due time, never long countdowns; a stale sweep message is dropped.
        "send-due-webhooks": {
            "task": "tenants.tasks.webhook_send_due_task",
            "schedule": 10.0,
            "options": {"expires": 9.0},
        },
        "purge-old-webhook-deliveries": {
            "task": "tenants.tasks.webhook_delivery_purge_task",
            "schedule": 3600.0,
        },
        # Metering collectors (docs/metering.md, "Collectors"). Each run derives its work from the
        # database (a watermark, the replicas' last scrape), so a dropped or lost message costs
        # nothing: the next beat's run does the work. Stale messages are dropped like reconcile's.
        "collect-accelerator-usage": {
            "task": "billing.tasks.accelerator_usage_collect_task",
            "schedule": 60.0,
            "options": {"expires": 54.0},
        },
        "collect-replica-metrics": {
            "task": "billing.tasks.replica_metrics_collect_task",
            "schedule": 15.0,
            "options": {"expires": 13.5},
        },
        # Retention of raw usage events (SWITCHYARD_USAGE_RETENTION_DAYS); rollups are kept.
        "purge-old-usage-events": {
            "task": "billing.tasks.usage_event_purge_task",
            "schedule": 86400.0,
            "options": {"expires": 3600.0},
        },
        "record-beat-heartbeat": {
            "task": "console.tasks.heartbeat_task",
            "schedule": 30.0,
        },
    },
)
app.autodiscover_tasks()


# --- Task metrics -------------------------------------------------------------------------
# Counted in the process that ran the task (a worker's pool process). Under
# `manage.py up` every process writes to PROMETHEUS_MULTIPROC_DIR, so the web
# server's /metrics shows the workers' counts too.

TASKS = Counter(
    "switchyard_celery_tasks",
    "Celery tasks run to an outcome, by task name: success, failure (raised) or retry (re-queued).",
    ["task", "outcome"],
)


def _task_name(sender) -> str:
    return getattr(sender, "name", None) or "unknown"


@signals.task_success.connect
def _count_task_success(sender=None, **kwargs):
    TASKS.labels(task=_task_name(sender), outcome="success").inc()


@signals.task_failure.connect
def _count_task_failure(sender=None, **kwargs):
    TASKS.labels(task=_task_name(sender), outcome="failure").inc()


@signals.task_retry.connect
def _count_task_retry(sender=None, **kwargs):
    TASKS.labels(task=_task_name(sender), outcome="retry").inc()
