"""The console's Usage page, its chart endpoint, and the latency panel on a deployment's page."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.collectors import latency_delta_add
from billing.views import LATENCY_WINDOWS, latency_range
from tenants.roles import Role
from tests.billing.factories import TPOT_LE, TTFT_LE, LatencyRollupFactory, UsageRollupFactory, at, histogram
from tests.cross_tenant_objects import make_deployment
from tests.scheduler.test_views import logged_in, member_client

MARCH = {"start": "2025-03-01", "end": "2025-03-31"}


@pytest.fixture
def chat(tenant_a):
    return make_deployment(tenant_a, name="chat")


@pytest.fixture
def owner(tenant_a):
    return logged_in(tenant_a.owner, tenant_a.tenant)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.BILLING, Role.DEVELOPER])
def test_every_role_sees_usage_totals_and_the_table(tenant_a, chat, role):
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-01T10:00"), quantity="1000000")
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-02T10:00"), quantity="250000.5")
    UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="h100-80gb-on-demand", quantity="3600")
    response = member_client(tenant_a.tenant, role).get("/usage/", MARCH)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="usage-chart"' in page and "/usage/chart.json?start=2025-03-01&amp;end=2025-03-31" in page
    assert "1,250,000.5" in page  # output tokens over the range, in the totals and the table
    assert "h100-80gb-on-demand" in page and "3,600" in page
    assert ("/api/v1/usage?start=2025-03-01&amp;end=2025-03-31&amp;group_by=day%2Cdeployment%2Cmeter%2Ctier"
            "&amp;format=csv") in page
    assert 'href="/usage/"' in page  # the navigation's Usage section


def test_the_csv_link_downloads_with_the_browser_session(tenant_a, chat, owner):
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-01T10:00"), quantity="7")
    csv_url = owner.get("/usage/", MARCH).context["csv_url"]
    response = owner.get(csv_url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[1].endswith("chat,output_tokens,token,,7,1")


def test_the_page_defaults_to_this_month(tenant_a, chat, owner):
    UsageRollupFactory(deployment=chat, hour=timezone.now().replace(minute=0, second=0, microsecond=0),
                       quantity="42")
    response = owner.get("/usage/")
    form = response.context["form"]
    assert form.cleaned_data["start"] == timezone.now().date().replace(day=1)
    assert "42" in response.content.decode()


def test_a_bad_range_is_shown_on_the_form(owner):
    response = owner.get("/usage/", {"start": "2025-03-31", "end": "2025-03-01"})
    assert response.status_code == 200
    assert "Must be on or after the first day." in response.content.decode()
    assert "chart_url" not in response.context


def test_another_tenants_usage_is_not_on_the_page(tenant_a, tenant_b, chat, owner):
    theirs = make_deployment(tenant_b, name="theirs")
    UsageRollupFactory(deployment=theirs, quantity="999999")
    page = owner.get("/usage/", MARCH).content.decode()
    assert "theirs" not in page and "999,999" not in page
    chart = owner.get("/usage/chart.json", MARCH).json()
    assert chart["data"] == []


def test_the_chart_stacks_meters_per_day_one_panel_per_unit(tenant_a, chat, owner):
    UsageRollupFactory(deployment=chat, meter="input_tokens", hour=at("2025-03-01T23:00"), quantity="10")
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-01T10:00"), quantity="4")
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-03T00:00"), quantity="6")
    UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="h100-80gb-on-demand", quantity="60")
    figure = owner.get("/usage/chart.json", {"start": "2025-03-01", "end": "2025-03-03"}).json()
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert set(traces) == {"Input tokens", "Output tokens", "Accelerator-seconds"}
    assert traces["Output tokens"]["x"] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert traces["Output tokens"]["y"] == [4, 0, 6]
    assert traces["Input tokens"]["y"] == [10, 0, 0]
    assert figure["layout"]["barmode"] == "stack"
    # Tokens share a panel; accelerator-seconds have their own.
    assert traces["Input tokens"]["yaxis"] == traces["Output tokens"]["yaxis"] != traces["Accelerator-seconds"]["yaxis"]


def test_the_chart_endpoint_answers_a_bad_range_with_a_problem(owner):
    response = owner.get("/usage/chart.json", {"start": "2025-03-31", "end": "2025-03-01"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "end"


def test_the_usage_pages_need_a_login(client):
    assert client.get("/usage/").status_code == 302
    assert client.get("/usage/chart.json").status_code == 302


# --- the latency panel on the deployment's page --------------------------------------------


def _recent_minute(minutes_ago: int):
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)


def test_the_deployment_page_shows_latency_against_the_slo(tenant_a, chat, owner):
    # p95 TTFT 750 ms (SLO 2000 ms: within); p95 TPOT 150 ms (SLO 100 ms: missed).
    LatencyRollupFactory(deployment=chat, minute=_recent_minute(2), request_count=100,
                         ttft=histogram(TTFT_LE, [10, 20, 60, 10, 0]), tpot=histogram(TPOT_LE, [0, 50, 40, 10, 0]))
    page = owner.get(f"/deployments/{chat.public_id}/").content.decode()
    assert 'data-testid="latency-panel"' in page
    table = page[page.index('data-testid="latency-table"'):]
    assert "750 ms" in table and "150 ms" in table and "≤ 2,000 ms" in table
    assert '<span class="badge badge-green">within</span>' in table
    assert '<span class="badge badge-red">missed</span>' in table
    assert "100 requests" in page
    assert f"/deployments/{chat.public_id}/latency-chart.json?window=1h" in page


def test_the_panel_switches_to_the_last_day(tenant_a, chat, owner):
    LatencyRollupFactory(deployment=chat, minute=_recent_minute(5 * 60), request_count=9,
                         ttft=histogram(TTFT_LE, [9, 0, 0, 0, 0]))
    last_hour = owner.get(f"/deployments/{chat.public_id}/").content.decode()
    assert 'data-testid="latency-empty"' in last_hour
    last_day = owner.get(f"/deployments/{chat.public_id}/", {"latency": "24h"}).content.decode()
    assert "9 requests" in last_day and "latency-chart.json?window=24h" in last_day


def test_the_panel_shows_the_last_week_and_month_from_hourly_rollups(tenant_a, chat, owner):
    # Written as the scrape collector writes them: the minute row and its hour's row together.
    for minutes_ago, requests in ((3 * 24 * 60, 40), (20 * 24 * 60, 2)):
        latency_delta_add(deployment=chat, minute=_recent_minute(minutes_ago), request_count=requests,
                          histograms={"ttft": histogram(TTFT_LE, [requests, 0, 0, 0, 0])}, now=timezone.now())
    last_week = owner.get(f"/deployments/{chat.public_id}/", {"latency": "7d"}).content.decode()
    assert "40 requests" in last_week and "in steps of 1 hour" in last_week
    assert "?window=7d&amp;step=1h" in last_week
    last_month = owner.get(f"/deployments/{chat.public_id}/", {"latency": "30d"}).content.decode()
    assert "42 requests" in last_month and "in steps of 6 hours" in last_month
    figure = owner.get(f"/deployments/{chat.public_id}/latency-chart.json", {"window": "30d"}).json()
    assert len(figure["data"][0]["x"]) == 30 * 4


def test_windows_in_steps_of_hours_end_with_the_current_hour():
    now = at("2026-03-10T14:37")
    assert latency_range(LATENCY_WINDOWS["7d"], now) == (at("2026-03-03T15:00"), at("2026-03-10T15:00"))
    assert latency_range(LATENCY_WINDOWS["24h"], now) == (at("2026-03-09T14:38"), at("2026-03-10T14:38"))


def test_the_latency_chart_draws_percentiles_and_the_slo(tenant_a, chat, owner):
    LatencyRollupFactory(deployment=chat, minute=_recent_minute(1), request_count=100,
                         ttft=histogram(TTFT_LE, [10, 20, 60, 10, 0]))
    figure = owner.get(f"/deployments/{chat.public_id}/latency-chart.json").json()
    names = [trace["name"] for trace in figure["data"]]
    assert names.count("p95") == 2 and "requests/s" in names
    ttft_p95 = next(trace for trace in figure["data"] if trace["name"] == "p95")
    assert len(ttft_p95["x"]) == 60
    assert pytest.approx(750) in [y for y in ttft_p95["y"] if y is not None]
    slo_lines = [shape["y0"] for shape in figure["layout"]["shapes"]]
    assert slo_lines == [2000.0, 100.0]


def test_another_tenants_latency_chart_is_not_found(tenant_a, tenant_b, owner):
    theirs = make_deployment(tenant_b, name="theirs")
    response = owner.get(f"/deployments/{theirs.public_id}/latency-chart.json")
    assert response.status_code == 404
    assert response.json()["detail"] == "Deployment not found."
