"""POST /api/v1/estimates: the quote for every tier, in one request with a constant number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduler.models import HardwareTier


def _model(world, template="llama-3.1-8b"):
    return world.api.post("/api/v1/models", {"name": template, "template": template}, format="json").json()["id"]


def _estimate(world, model_id, rps=10.0, ttft=1500, tpot=60, **extra):
    return world.api.post("/api/v1/estimates", {
        "model": model_id,
        "traffic": {"requests_per_s": rps, "input_tokens": {"typical": 1020, "p95": 2734},
                    "output_tokens": {"typical": 129, "p95": 424}},
        "slo": {"ttft_p95_ms": ttft, "tpot_p95_ms": tpot}, **extra}, format="json")


def test_quote_covers_every_active_tier_and_picks_the_cheapest_that_meets_the_slo(tenant_a):
    response = _estimate(tenant_a, _model(tenant_a))
    assert response.status_code == 200, response.content
    body = response.json()
    tiers = body["tiers"]
    assert len(tiers) == HardwareTier.objects.filter(active=True).count()
    meeting = [t for t in tiers if t["meets_slo"]]
    assert meeting, "an 8B model at 10 req/s must fit somewhere"
    for tier in meeting:
        assert tier["ttft_p95_ms"] <= 1500 and tier["tpot_p95_ms"] <= 60
        assert tier["replicas"] >= 1 and float(tier["cost_per_hour"]) > 0
        assert float(tier["cost_per_million_output_tokens"]) > 0
    auto = next(t for t in tiers if t["tier"] == body["auto"])
    assert auto["capacity_class"] != "spot"
    cheaper = [t for t in meeting if t["capacity_class"] != "spot" and float(t["cost_per_hour"]) <
               float(auto["cost_per_hour"])]
    assert not cheaper


def test_more_traffic_needs_more_replicas(tenant_a):
    model_id = _model(tenant_a)
    low = {t["tier"]: t for t in _estimate(tenant_a, model_id, rps=1).json()["tiers"]}
    high = {t["tier"]: t for t in _estimate(tenant_a, model_id, rps=200).json()["tiers"]}
    tier = "h100-80gb-on-demand"
    assert high[tier]["replicas"] > low[tier]["replicas"]


def test_impossible_slo_says_why_and_picks_nothing(tenant_a):
    body = _estimate(tenant_a, _model(tenant_a), ttft=1, tpot=60).json()
    assert body["auto"] is None
    assert all(not t["meets_slo"] and "TTFT" in t["reason"] for t in body["tiers"])


def test_a_model_too_big_for_a_tier_says_so(tenant_a):
    body = _estimate(tenant_a, _model(tenant_a, "llama-3.1-70b"), ttft=5000, tpot=200).json()
    l4 = next(t for t in body["tiers"] if t["tier"] == "l4-24gb-on-demand")
    tpu = next(t for t in body["tiers"] if t["tier"] == "tpu-v5e-16gb-on-demand")
    assert not tpu["meets_slo"] or tpu["accelerators_per_replica"] >= 8
    assert l4["meets_slo"] is False or l4["accelerators_per_replica"] == 8


@pytest.mark.parametrize(
    "change, field",
    [
        ({"slo": {"ttft_p95_ms": 0, "tpot_p95_ms": 50}}, "slo.ttft_p95_ms"),
        ({"traffic": {"requests_per_s": 1, "input_tokens": {"typical": 100, "p95": 50},
                      "output_tokens": {"typical": 10}}}, "traffic.input_tokens.p95"),
        ({"traffic": {"requests_per_s": "many", "input_tokens": {"typical": 100},
                      "output_tokens": {"typical": 10}}}, "traffic.requests_per_s"),
        ({"dtype": "fp2"}, "dtype"),
    ],
)
def test_bad_estimate_input_is_a_field_error(tenant_a, change, field):
    body = {"model": _model(tenant_a),
            "traffic": {"requests_per_s": 1, "input_tokens": {"typical": 100}, "output_tokens": {"typical": 10}},
            "slo": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50}, **change}
    response = tenant_a.api.post("/api/v1/estimates", body, format="json")
    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}


def test_another_tenants_model_is_404(tenant_a, tenant_b):
    response = _estimate(tenant_a, _model(tenant_b))
    assert response.status_code == 404


def test_the_whole_table_costs_a_constant_number_of_queries(tenant_a):
    model_id = _model(tenant_a)
    _estimate(tenant_a, model_id)  # settle last_used_at, so both requests do the same writes
    with CaptureQueriesContext(connection) as all_tiers:
        assert _estimate(tenant_a, model_id).json()["tiers"]
    HardwareTier.objects.filter(capacity_class="spot").update(active=False)
    with CaptureQueriesContext(connection) as fewer_tiers:
        fewer = _estimate(tenant_a, model_id).json()["tiers"]
    assert all(t["capacity_class"] != "spot" for t in fewer)
    assert len(fewer_tiers.captured_queries) == len(all_tiers.captured_queries) <= 6
