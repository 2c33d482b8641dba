"""Figures of the console's scheduler pages, as Plotly figure dicts. Pure: no Django.

A page renders an empty chart element; a JSON endpoint calls a function here with
rows it has already computed and returns the dict; static/console/charts.js draws it.
"""

import math
from decimal import Decimal

import plotly.graph_objects as go

# Colours of the console (static/console/console.css), one per capacity class.
CLASS_COLOURS = {"on-demand": "#4c51d6", "reserved": "#177245", "spot": "#c77700"}
CLASS_LABELS = {"on-demand": "On-demand", "reserved": "Reserved", "spot": "Spot (can be reclaimed)"}
MISSED_COLOUR = "#8a93a3"
SLO_COLOUR = "#c7362b"
TEXT_COLOUR = "#5d6675"
GRID_COLOUR = "#eef0f4"
FONT = 'ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
# Tiers that cannot serve at all are named under the chart; past this many, only counted.
MAX_NAMED_UNPLOTTED = 4


def _number(value) -> float | None:
    """A finite float, or None for a figure the tier does not have (None, NaN, unparsable)."""
    if value is None:
        return None
    number = float(value) if isinstance(value, (int, float, Decimal, str)) else None
    return number if number is not None and math.isfinite(number) else None


def _point(row: dict) -> tuple[float, float] | None:
    x, y = _number(row.get("cost_per_million_output_tokens")), _number(row.get("ttft_p95_ms"))
    return None if x is None or y is None else (x, y)


def _log_range(values: list[float], *, low: float, high: float) -> list[float]:
    """A log axis' range (in log10 units, as Plotly wants) around positive values, widened by
    the factors `low` and `high` so markers and labels at the ends stay inside."""
    positive = [value for value in values if value > 0] or [1.0]
    return [math.log10(min(positive) / low), math.log10(max(positive) * high)]


def _log_ticks(axis_range: list[float]) -> dict:
    """Over more than a decade, ticks at 1, 2 and 5 of each decade only; within one, Plotly's own."""
    return {"dtick": "D2"} if axis_range[1] - axis_range[0] > 1.2 else {}


def _hover(row: dict) -> list:
    tpot = _number(row.get("tpot_p95_ms"))
    shape = (f"{row['replicas']} × {row['accelerators_per_replica']} accelerator"
             f"{'s' if row['accelerators_per_replica'] != 1 else ''}") if row.get("replicas") else "—"
    cost = _number(row.get("cost_per_hour"))
    return [row["hardware"], shape, f"{cost:,.2f} {row.get('currency', '')}/h" if cost is not None else "—",
            f"{tpot:,.1f} ms" if tpot is not None else "—", row.get("reason") or "meets the SLO"]


HOVER_TEMPLATE = ("<b>%{text}</b><br>%{customdata[0]} · %{customdata[1]}<br>"
                  "p95 TTFT %{y:,.0f} ms · p95 TPOT %{customdata[3]}<br>"
                  "%{x:,.2f} per 1M output tokens · %{customdata[2]}<br>%{customdata[4]}<extra></extra>")


def _tier_trace(rows: list[dict], *, name: str, colour: str, hollow: bool) -> go.Scatter:
    points = [_point(row) for row in rows]
    return go.Scatter(
        x=[p[0] for p in points], y=[p[1] for p in points], ids=[row["tier"] for row in rows],
        text=[row["tier"] for row in rows], customdata=[_hover(row) for row in rows],
        mode="markers", name=name, legendgroup=name, hovertemplate=HOVER_TEMPLATE,
        marker={"size": 11, "color": "rgba(0,0,0,0)" if hollow else colour, "opacity": 1 if hollow else 0.85,
                "symbol": "circle-open" if hollow else "circle", "line": {"width": 1.5 if hollow else 1,
                                                                          "color": colour if hollow else "#ffffff"}},
    )


def estimate_chart(rows: list[dict], *, auto_tier: str | None, ttft_slo_ms: float, currency: str = "USD") -> dict:
    """Predicted p95 time to first token against cost per million output tokens, a marker per tier.

    `rows` are quote rows (`scheduler.selectors.quote_rows`). Tiers meeting the SLO are
    coloured by capacity class; a tier that misses it but has figures is a hollow grey
    marker; a tier with no figures (no replica shape serves within the SLO, so the quote has
    no latency or cost for it) cannot be placed and is named under the chart. The SLO is a dashed horizontal line; the `auto` tier is ringed and
    labelled. Every plotted tier is one marker, identified by its slug in `ids`.
    """
    plotted = [row for row in rows if _point(row) is not None]
    points = [_point(row) for row in plotted]
    unplotted = [row["tier"] for row in rows if _point(row) is None]

    figure = go.Figure()
    for capacity_class, colour in CLASS_COLOURS.items():
        members = [row for row in plotted if row["meets_slo"] and row["capacity_class"] == capacity_class]
        if members:
            figure.add_trace(_tier_trace(members, name=CLASS_LABELS[capacity_class], colour=colour, hollow=False))
    others = [row for row in plotted if row["meets_slo"] and row["capacity_class"] not in CLASS_COLOURS]
    if others:
        figure.add_trace(_tier_trace(others, name="Other", colour=TEXT_COLOUR, hollow=False))
    missed = [row for row in plotted if not row["meets_slo"]]
    if missed:
        figure.add_trace(_tier_trace(missed, name="Misses the SLO", colour=MISSED_COLOUR, hollow=True))

    # Across the whole plot, named in the legend (where no marker can hide its label).
    figure.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y", y0=ttft_slo_ms, y1=ttft_slo_ms,
                     line={"color": SLO_COLOUR, "width": 1.5, "dash": "dash"},
                     name=f"SLO: p95 TTFT ≤ {ttft_slo_ms:,.0f} ms", showlegend=True)

    x_range = _log_range([x for x, _y in points], low=1.25, high=1.25)
    y_range = _log_range([y for _x, y in points] + [ttft_slo_ms], low=1.4, high=1.6)
    auto = next((row for row in plotted if row["tier"] == auto_tier), None)
    if auto is not None:
        x, y = _point(auto)
        # A ring around the chosen marker: drawn as its own trace, so it carries no `ids`.
        figure.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers", name="Auto pick", hoverinfo="skip", showlegend=True,
            marker={"size": 22, "symbol": "circle-open", "color": CLASS_COLOURS.get(auto["capacity_class"],
                                                                                  TEXT_COLOUR),
                    "line": {"width": 2.5}},
        ))
        # Plotly places annotations on a log axis by the log10 of the value (shapes and traces by the value).
        # The label points away from the nearer side edge, and down unless the marker is low: the SLO
        # line, which the tiers sit under, runs above it.
        right = (math.log10(x) - x_range[0]) / (x_range[1] - x_range[0]) < 0.5
        down = (math.log10(y) - y_range[0]) / (y_range[1] - y_range[0]) > 0.35
        figure.add_annotation(x=math.log10(x), y=math.log10(y), text=f"<b>auto</b>: {auto['tier']}",
                              showarrow=True, arrowhead=0, arrowcolor=TEXT_COLOUR, ax=36 if right else -36,
                              ay=52 if down else -52, bgcolor="#ffffff", bordercolor="#cfd4dc", borderpad=4,
                              font={"size": 12, "color": "#171b24"})

    if unplotted:
        names = ", ".join(unplotted[:MAX_NAMED_UNPLOTTED])
        more = len(unplotted) - MAX_NAMED_UNPLOTTED
        text = (f"Not plotted, no replica shape meets the SLO: {names}"
                + (f" and {more} more" if more > 0 else "") + " (see the table).")
        figure.add_annotation(text=text, xref="paper", yref="paper", x=0, y=-0.2, showarrow=False,
                              xanchor="left", yanchor="top", font={"size": 11.5, "color": TEXT_COLOUR})

    # Logarithmic axes: tiers span an order of magnitude in cost and latency, and the cheap,
    # fast ones (the interesting ones) would otherwise crowd into one corner.
    axis = {"type": "log", "gridcolor": GRID_COLOUR, "zeroline": False, "linecolor": "#cfd4dc",
            "ticks": "outside", "tickcolor": "#cfd4dc", "automargin": True}
    figure.update_layout(
        template="none", height=440, hovermode="closest", paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        font={"family": FONT, "size": 12.5, "color": TEXT_COLOUR},
        margin={"l": 64, "r": 24, "t": 40, "b": 92 if unplotted else 60},
        legend={"orientation": "h", "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom",
                "font": {"size": 12}},
        xaxis={**axis, **_log_ticks(x_range), "title": {"text": f"Cost per million output tokens ({currency})"},
               "tickformat": ",.2~f", "range": x_range},
        yaxis={**axis, **_log_ticks(y_range), "title": {"text": "Predicted p95 time to first token (ms)"},
               "tickformat": ",.0f", "range": y_range},
    )
    return figure.to_plotly_json()
