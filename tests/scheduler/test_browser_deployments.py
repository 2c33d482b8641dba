"""End to end in a real browser: a deployment's page explains its replicas and refreshes itself.

Same launch as tests/scheduler/test_browser_models.py. Set SWITCHYARD_SCREENSHOT_DIR to keep
the screenshots for a look.
"""

from tests.browser import BROWSER_TEST, log_in
from tests.cross_tenant_objects import small_fleet
from tests.factories import PASSWORD
from tests.scheduler.test_deployment_views import deploy, place, register

pytestmark = BROWSER_TEST


def test_the_deployment_page_says_why_each_replica_runs_where_it_does_and_follows_changes(
        live_server, browser_page, screenshot_dir, tenant_a):
    nodes = small_fleet(nodes=3) + small_fleet(region="test-2", hardware="l4-24gb")
    deployment = deploy(tenant_a.tenant, register(tenant_a.tenant, name="llama"), name="support-chat",
                        regions=["test-1", "test-2"])
    rejected = [{"option": {"hardware": "l4-24gb", "accelerators": 1, "rps_per_replica": 0.25},
                 "why": "costs 41% more per request served"},
                {"option": {"hardware": "h100-80gb", "accelerators": 2, "rps_per_replica": 7.1},
                 "why": "no node in an allowed region has 2 free accelerators"}]
    place(deployment, nodes[0], alternatives=rejected)
    place(deployment, nodes[1], alternatives=rejected[:1])

    page = browser_page
    base = live_server.url
    log_in(page, base, tenant_a.owner.email, PASSWORD)

    page.click("nav.sidebar >> text=Deployments")
    page.wait_for_url(f"{base}/deployments/")
    page.click("a:has-text('support-chat')")
    page.wait_for_selector("[data-testid=replica-table]")
    first_why = page.locator("[data-testid=placement-why]").first
    assert not first_why.locator("table").is_visible()
    first_why.locator("summary").click()
    assert "Costs 41% more per request served" in first_why.inner_text()
    page.screenshot(path=str(screenshot_dir / "switchyard-deployment-page.png"), full_page=True)

    # A replica placed while the page is open appears without a reload; the open explanation stays open.
    place(deployment, nodes[2], alternatives=[])
    page.wait_for_selector(f"[data-replica] >> text={nodes[2].name}", timeout=15_000)
    assert page.locator("[data-testid=placement-why][open]").count() == 1
