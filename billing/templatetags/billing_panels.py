"""Metering panels shown on other apps' pages, and filters for usage figures.

The deployment page (scheduler) shows a latency panel with `{% deployment_latency_panel
deployment %}`: the scheduler never imports billing, so billing brings its own panel to the
page through the template layer. The panel reads the latency rollups; its chart is served by
`billing.views.deployment_latency_chart`.
"""

from decimal import Decimal

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from billing import selectors
from billing.views import LATENCY_WINDOWS, latency_range, latency_window

register = template.Library()

# The query parameter of the deployment page that picks the panel's window.
WINDOW_PARAMETER = "latency"


@register.inclusion_tag("billing/_latency_panel.html", takes_context=True)
def deployment_latency_panel(context, deployment):
    request = context["request"]
    window = latency_window(request.GET.get(WINDOW_PARAMETER))
    start, end = latency_range(window, timezone.now())
    metrics = selectors.deployment_metrics(deployment, start=start, end=end, step=window.step)
    summary = metrics.summary
    rows = [
        {"name": "Time to first token", "short": "TTFT", "values": summary.ttft, "slo": deployment.slo_ttft_p95_ms},
        {"name": "Time per output token", "short": "TPOT", "values": summary.tpot, "slo": deployment.slo_tpot_p95_ms},
        {"name": "End to end", "short": "E2E", "values": summary.e2e, "slo": None},
    ]
    windows = []
    for choice in LATENCY_WINDOWS.values():
        query = request.GET.copy()
        query[WINDOW_PARAMETER] = choice.key
        windows.append({"label": choice.label, "url": f"?{query.urlencode()}#latency", "active": choice == window})
    return {
        "deployment": deployment,
        "window": window,
        "windows": windows,
        "summary": summary,
        "rows": rows,
        "step_text": _duration_text(window.step),
        "chart_url": f"{reverse('deployment-latency-chart', args=[deployment.public_id])}?"
                     f"{urlencode({'window': window.key})}",
        "metrics_api_url": reverse("api-deployment-metrics", args=[deployment.public_id]),
        "metrics_api_query": urlencode({"window": window.key, "step": _duration_parameter(window.step)}),
    }


def _duration_text(step) -> str:
    """1 minute · 15 minutes · 1 hour · 6 hours."""
    minutes = int(step.total_seconds() // 60)
    count, unit = (minutes // 60, "hour") if minutes % 60 == 0 else (minutes, "minute")
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _duration_parameter(step) -> str:
    """The API's spelling of a step: 15m, 6h."""
    minutes = int(step.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


@register.filter
def quantity(value: Decimal | None) -> str:
    """A usage quantity for people: thousands separated, no trailing zeros (1,250,000 · 3,600.5)."""
    if value is None:
        return "—"
    text = f"{value:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@register.filter
def milliseconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:,.1f} ms"
