"""Scheduler tasks: thin, idempotent, routed to the `reconcile` queue (console/celery.py)."""

from celery import shared_task

from scheduler.reconcile import reconcile_pass


@shared_task
def reconcile_task() -> dict:
    """Run by beat every SWITCHYARD_RECONCILE_SECONDS: one reconcile pass, or nothing when
    another worker's pass holds the lock. Safe to run twice or concurrently."""
    return reconcile_pass().summary()
