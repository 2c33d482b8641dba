"""Billing tasks: thin and idempotent. Metering tasks go to the `metering` queue, invoicing and
budgets to `billing` (console/celery.py)."""

from celery import shared_task
from django.utils import timezone

from billing.collectors import accelerator_usage_collect, replica_metrics_collect
from billing.services import usage_event_purge


@shared_task
def usage_event_purge_task() -> int:
    """Run by beat once a day: delete raw usage events past retention (rollups are kept).
    Safe to run twice or concurrently: each deletes what is left."""
    return usage_event_purge()


@shared_task
def accelerator_usage_collect_task() -> dict:
    """Run by beat every minute: meter the closed minutes since the watermark (at most an
    hour of them; a collector that was down catches up one run per beat). Safe to run twice
    or concurrently, and after a run that was killed."""
    return accelerator_usage_collect().summary()


@shared_task
def replica_metrics_collect_task() -> dict:
    """Run by beat every 15 s: scrape every serving replica's metrics into usage events and
    latency rollups. A replica that does not answer is retried by the next run."""
    return replica_metrics_collect().summary()


# --- Invoicing (billing.invoicing) ----------------------------------------------------------------


@shared_task
def period_close_task() -> dict:
    """Run by beat every six hours: finalize the invoices of the months that are over. Idempotent and safe
    to run concurrently (claims + one transaction per chunk; docs/billing.md)."""
    from billing.invoicing import period_close

    report = period_close()
    return {"finalized": len(report.finalized), "skipped": report.skipped, "failed": len(report.failed)}


@shared_task
def invoice_refresh_drafts_task() -> int:
    """Run by beat hourly: recompute the current month's drafts from the rollups. Idempotent."""
    from billing.invoicing import invoice_refresh_drafts, month_start

    return len(invoice_refresh_drafts(period=month_start(timezone.now())))


# --- Budgets (billing.budgets) --------------------------------------------------------------------


@shared_task
def budgets_evaluate_task() -> dict:
    """Run by beat every five minutes on the `billing` queue: alert on budget thresholds and apply
    the action at 100 %; at a new month, lift the last month's actions. Safe to run twice or
    concurrently: each alert and action is inserted once (unique constraints)."""
    from billing.budgets import budgets_evaluate

    return budgets_evaluate().summary()
