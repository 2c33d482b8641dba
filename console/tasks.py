from celery import shared_task
from django.core.cache import cache
from django.utils import timezone


@shared_task
def ping_task(payload: str = "ping") -> str:
    """Round-trip check for workers and the broker: returns what it was given."""
    return f"pong:{payload}"


@shared_task
def heartbeat_task() -> str:
    """Run by beat: records when the last beat-driven task ran (shown by /readyz)."""
    now = timezone.now().isoformat()
    cache.set("switchyard:last-heartbeat", now, timeout=None)
    return now
