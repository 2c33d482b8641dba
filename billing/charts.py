"""Figures of the metering console pages, as Plotly figure dicts. Pure: no Django.

As in scheduler/charts.py: a page renders an empty chart element, a JSON endpoint reads the
rollups through the selectors, calls a function here and returns the dict; charts.js draws it.
"""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from billing.metrics import Step
from scheduler.charts import FONT, GRID_COLOUR, SLO_COLOUR, TEXT_COLOUR

# One colour per meter, in the order meters are drawn; more meters cycle.
METER_COLOURS = ["#4c51d6", "#177245", "#c77700", "#8a3ffc", "#0f7b8a", "#b03060", "#5d6675"]
PERCENTILE_STYLES = {"p50": ("#8f95f0", "dot"), "p95": ("#4c51d6", "solid"), "p99": ("#171b24", "dash")}
RATE_COLOUR = "#0f7b8a"


def _layout(figure: go.Figure, *, height: int) -> None:
    figure.update_layout(
        template="none", height=height, hovermode="x unified", paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        font={"family": FONT, "size": 12.5, "color": TEXT_COLOUR}, margin={"l": 72, "r": 24, "t": 48, "b": 48},
        legend={"orientation": "h", "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom", "font": {"size": 12}},
    )
    figure.update_xaxes(gridcolor=GRID_COLOUR, linecolor="#cfd4dc", zeroline=False)
    figure.update_yaxes(gridcolor=GRID_COLOUR, linecolor="#cfd4dc", zeroline=False, rangemode="tozero",
                        automargin=True)


def usage_chart(series: dict[str, dict[datetime, Decimal]], meters: Sequence[tuple[str, str, str]],
                days: Sequence[datetime]) -> dict:
    """Usage per UTC day, one stacked bar segment per meter.

    `series` maps meter slug → day → quantity; `meters` are (slug, name, unit) in drawing order.
    Quantities of different units never share an axis: one panel per unit (tokens, requests,
    accelerator-seconds …), meters of the same unit stacked in it. A meter without usage in the
    range is not drawn; with no usage at all, the figure says so.
    """
    used = [meter for meter in meters if series.get(meter[0])]
    units = list(dict.fromkeys(unit for _slug, _name, unit in used))
    figure = make_subplots(rows=max(len(units), 1), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=[f"{unit}s" for unit in units] or None)
    for index, (slug, name, unit) in enumerate(used):
        values = series[slug]
        figure.add_trace(go.Bar(
            x=[day.date().isoformat() for day in days], y=[float(values.get(day, 0)) for day in days],
            name=name, legendgroup=unit, marker={"color": METER_COLOURS[index % len(METER_COLOURS)]},
            hovertemplate=f"%{{y:,.6~f}} {unit}s<extra>{name}</extra>",
        ), row=units.index(unit) + 1, col=1)
    _layout(figure, height=180 + 200 * max(len(units), 1))
    figure.update_layout(barmode="stack", bargap=0.25)
    figure.update_xaxes(type="date", tickformat="%-d %b", dtick=86_400_000 if len(days) <= 31 else None)
    if not used:
        figure.add_annotation(text="No usage in this range.", xref="paper", yref="paper", x=0.5, y=0.5,
                              showarrow=False, font={"size": 14, "color": TEXT_COLOUR})
    return figure.to_plotly_json()


def latency_chart(steps: Sequence[Step], *, slo_ttft_p95_ms: float, slo_tpot_p95_ms: float) -> dict:
    """A deployment's p50 / p95 / p99 time to first token and time per output token against the
    SLO (a dashed line at its p95 target), and its request rate, per step. A step without
    requests has no percentile: a gap, not a zero."""
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.4, 0.35, 0.25],
                           subplot_titles=["Time to first token (ms)", "Time per output token (ms)",
                                           "Requests per second"])
    times = [step.start.isoformat() for step in steps]
    for row, metric, slo in ((1, "ttft", slo_ttft_p95_ms), (2, "tpot", slo_tpot_p95_ms)):
        for name, (colour, dash) in PERCENTILE_STYLES.items():
            figure.add_trace(go.Scatter(
                x=times, y=[getattr(getattr(step, metric), name) for step in steps], mode="lines",
                name=name, legendgroup=name, showlegend=row == 1, connectgaps=False,
                line={"color": colour, "dash": dash, "width": 2 if name == "p95" else 1.5},
                hovertemplate=f"{name} %{{y:,.1f}} ms<extra>{metric.upper()}</extra>",
            ), row=row, col=1)
        figure.add_hline(y=slo, row=row, col=1, line={"color": SLO_COLOUR, "width": 1.5, "dash": "dash"},
                         annotation={"text": f"SLO p95 ≤ {slo:,.0f} ms", "font": {"color": SLO_COLOUR, "size": 11}},
                         annotation_position="top left")
    figure.add_trace(go.Bar(x=times, y=[step.request_rate for step in steps], name="requests/s",
                            marker={"color": RATE_COLOUR}, hovertemplate="%{y:,.2f} requests/s<extra></extra>"),
                     row=3, col=1)
    _layout(figure, height=620)
    figure.update_xaxes(type="date")
    if not any(step.requests for step in steps):
        figure.add_annotation(text="No requests in this window.", xref="paper", yref="paper", x=0.5, y=0.5,
                              showarrow=False, font={"size": 14, "color": TEXT_COLOUR})
    return figure.to_plotly_json()
