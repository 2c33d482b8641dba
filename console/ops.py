"""Operations endpoints, outside /api/v1/: liveness, readiness, Prometheus metrics."""

import ipaddress
import os

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from console.celery import app as celery_app


@never_cache
def healthz(request):
    """The process is up and serving. Touches nothing else."""
    return HttpResponse("ok\n", content_type="text/plain")


def _database_ready() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:  # reported to the caller as the reason for 503
        return f"{exc.__class__.__name__}: {exc}"


def _broker_ready() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return None
    except Exception as exc:  # reported to the caller as the reason for 503
        return f"{exc.__class__.__name__}: {exc}"


@never_cache
def readyz(request):
    """Ready for traffic: the database and the Celery broker answer."""
    checks = {"database": _database_ready(), "broker": _broker_ready()}
    ready = all(error is None for error in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: error or "ok" for name, error in checks.items()},
        "last_beat": cache.get("switchyard:last-heartbeat"),
    }
    return JsonResponse(body, status=200 if ready else 503)


def _metrics_allowed(request) -> bool:
    if getattr(request, "user", None) is not None and request.user.is_authenticated and request.user.is_staff:
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.METRICS_ALLOWED_NETWORKS)


@never_cache
def metrics(request):
    """Prometheus metrics of the control plane: HTTP requests and latencies, Celery tasks.

    With several gunicorn workers (PROMETHEUS_MULTIPROC_DIR set, as `manage.py up`
    does) the figures of every process on this host are merged.
    """
    if not _metrics_allowed(request):
        return HttpResponseForbidden("metrics are for staff and the networks in SWITCHYARD_METRICS_ALLOWED_NETWORKS\n")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
