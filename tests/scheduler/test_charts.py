"""The tier comparison figure, as a pure function of quote rows (no database)."""

import json
import math
from decimal import Decimal

from scheduler.charts import CLASS_COLOURS, MISSED_COLOUR, estimate_chart


def row(tier, capacity_class="on-demand", *, meets=True, cost=Decimal("1.5"), ttft=200.0, tpot=40.0, reason=""):
    return {"tier": tier, "hardware": tier.rsplit("-", 1)[0], "capacity_class": capacity_class, "currency": "USD",
            "meets_slo": meets, "reason": reason, "accelerators_per_replica": 1 if meets else 0,
            "replicas": 2 if meets else 0, "requests_per_s_per_replica": 3.0, "ttft_p95_ms": ttft,
            "tpot_p95_ms": tpot, "cost_per_hour": Decimal("4.2") if meets else Decimal(0),
            "cost_per_million_output_tokens": cost}


ROWS = [
    row("a-spot", "spot", cost=Decimal("0.4"), ttft=150.0),
    row("a-reserved", "reserved", cost=Decimal("0.9"), ttft=150.0),
    row("b-on-demand", cost=Decimal("2.1"), ttft=450.0),
    # Misses but has figures (e.g. a future quote that reports the closest shape): hollow and grey.
    row("c-on-demand", meets=False, cost=Decimal("1.2"), ttft=2400.0, reason="p95 TTFT 2400 ms > 1500 ms"),
    # No replica shape fits at all: no figures, so it cannot be placed.
    row("d-on-demand", meets=False, cost=None, ttft=None, tpot=None, reason="weights need 140 GB"),
    row("e-on-demand", meets=False, cost=None, ttft=math.nan, tpot=math.nan, reason="weights need 140 GB"),
]


def traces_by_name(figure):
    return {trace["name"]: trace for trace in figure["data"]}


def test_every_tier_with_figures_is_one_marker_identified_by_its_slug():
    figure = estimate_chart(ROWS, auto_tier="a-reserved", ttft_slo_ms=1500)
    ids = [tier for trace in figure["data"] for tier in trace.get("ids", [])]
    assert sorted(ids) == ["a-reserved", "a-spot", "b-on-demand", "c-on-demand"]
    traces = traces_by_name(figure)
    assert traces["Reserved"]["x"] == [0.9] and traces["Reserved"]["y"] == [150.0]
    assert traces["Reserved"]["marker"]["color"] == CLASS_COLOURS["reserved"]
    assert traces["Spot (can be reclaimed)"]["marker"]["color"] == CLASS_COLOURS["spot"]


def test_a_tier_missing_the_slo_is_hollow_and_grey():
    missed = traces_by_name(estimate_chart(ROWS, auto_tier=None, ttft_slo_ms=1500))["Misses the SLO"]
    assert missed["ids"] == ["c-on-demand"]
    assert missed["marker"]["symbol"] == "circle-open"
    assert missed["marker"]["line"]["color"] == MISSED_COLOUR
    assert "p95 TTFT 2400 ms > 1500 ms" in missed["customdata"][0]


def test_tiers_without_figures_are_named_under_the_chart():
    figure = estimate_chart(ROWS, auto_tier=None, ttft_slo_ms=1500)
    notes = [note["text"] for note in figure["layout"]["annotations"]]
    assert any("d-on-demand, e-on-demand" in note and "see the table" in note for note in notes)


def test_the_slo_is_a_dashed_horizontal_line_and_labelled():
    figure = estimate_chart(ROWS, auto_tier=None, ttft_slo_ms=800)
    (line,) = figure["layout"]["shapes"]
    assert (line["type"], line["y0"], line["y1"], line["xref"], line["line"]["dash"]) == ("line", 800, 800, "paper",
                                                                                          "dash")
    assert line["showlegend"] is True
    assert line["name"] == "SLO: p95 TTFT ≤ 800 ms"
    low, high = figure["layout"]["yaxis"]["range"]
    assert low < math.log10(150) and high > math.log10(2400)


def test_the_auto_tier_is_ringed_and_labelled():
    figure = estimate_chart(ROWS, auto_tier="a-reserved", ttft_slo_ms=1500)
    ring = traces_by_name(figure)["Auto pick"]
    assert (ring["x"], ring["y"]) == ([0.9], [150.0])
    assert "ids" not in ring
    label = next(note for note in figure["layout"]["annotations"] if "auto" in note["text"])
    assert "a-reserved" in label["text"]
    # On a log axis Plotly places annotations by the log10 of the value.
    assert (label["x"], label["y"]) == (math.log10(0.9), math.log10(150.0))


def test_no_auto_pick_draws_no_ring():
    figure = estimate_chart(ROWS, auto_tier=None, ttft_slo_ms=1500)
    assert "Auto pick" not in traces_by_name(figure)
    assert not any("auto" in note["text"] for note in figure["layout"].get("annotations", []))


def test_the_figure_is_plain_json():
    figure = estimate_chart(ROWS, auto_tier="a-spot", ttft_slo_ms=1500, currency="EUR")
    assert json.loads(json.dumps(figure)) == figure
    assert "EUR" in figure["layout"]["xaxis"]["title"]["text"]


def test_no_rows_is_an_empty_chart_with_the_slo():
    figure = estimate_chart([], auto_tier=None, ttft_slo_ms=1500)
    assert figure["data"] == []
    assert figure["layout"]["shapes"][0]["y0"] == 1500
