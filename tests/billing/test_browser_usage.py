"""End to end in a real browser: the Usage page draws its chart from the rollups, and a
deployment's page draws its latency chart. Set SWITCHYARD_SCREENSHOT_DIR to keep the screenshots."""

from datetime import timedelta

from django.utils import timezone

from tests.billing.factories import TTFT_LE, LatencyRollupFactory, UsageRollupFactory, at, histogram
from tests.browser import BROWSER_TEST, log_in
from tests.cross_tenant_objects import make_deployment
from tests.factories import PASSWORD

pytestmark = BROWSER_TEST


def test_the_usage_page_draws_usage_by_meter_per_day(live_server, browser_page, screenshot_dir, tenant_a):
    chat = make_deployment(tenant_a, name="chat")
    for day in range(1, 8):
        hour = at(f"2025-03-0{day}T12:00")
        UsageRollupFactory(deployment=chat, meter="input_tokens", hour=hour, quantity=str(400_000 + day * 10_000))
        UsageRollupFactory(deployment=chat, meter="output_tokens", hour=hour, quantity=str(90_000 + day * 5_000))
        UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="h100-80gb-on-demand", hour=hour,
                           quantity="86400")
    page, base = browser_page, live_server.url
    log_in(page, base, tenant_a.owner.email, PASSWORD)

    page.click("nav.sidebar >> text=Usage")
    page.wait_for_url(f"{base}/usage/")
    page.fill("input[name=start]", "2025-03-01")
    page.fill("input[name=end]", "2025-03-07")
    page.click("button:has-text('Show')")
    page.wait_for_selector("[data-testid=usage-chart][data-chart-state=drawn]")
    # Three meters drawn as bars (7 days each), in two panels (tokens; accelerator-seconds).
    assert page.locator("[data-testid=usage-chart] .barlayer .point").count() == 21
    assert set(page.locator("[data-testid=usage-chart] .legendtext").all_text_contents()) == {
        "Input tokens", "Output tokens", "Accelerator-seconds"}
    assert "chat" in page.locator("[data-testid=usage-table]").inner_text()
    assert page.locator("[data-testid=usage-csv]").get_attribute("href").endswith("format=csv")
    page.screenshot(path=str(screenshot_dir / "switchyard-usage-page.png"), full_page=True)


def test_the_deployment_page_draws_its_latency_chart(live_server, browser_page, screenshot_dir, tenant_a):
    chat = make_deployment(tenant_a, name="chat")
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes_ago in range(1, 40):
        LatencyRollupFactory(deployment=chat, minute=now - timedelta(minutes=minutes_ago), request_count=30,
                             ttft=histogram(TTFT_LE, [5, 10, 12, 3, 0]))
    page, base = browser_page, live_server.url
    log_in(page, base, tenant_a.owner.email, PASSWORD)
    page.goto(f"{base}/deployments/{chat.public_id}/")
    page.wait_for_selector("[data-testid=latency-chart][data-chart-state=drawn]")
    assert "within" in page.locator("[data-testid=latency-table]").inner_text()
    page.locator("#latency").screenshot(path=str(screenshot_dir / "switchyard-latency-panel.png"))
