"""End to end in a real browser: register a model from a template, compare its tiers, see the chart.

Same launch as tests/console/test_browser.py: Debian's chromium through Playwright's
sync API against pytest-django's live server; Plotly.js comes from this installation.
Set SWITCHYARD_SCREENSHOT_DIR to keep the screenshots for a look.
"""

import re


from tests.browser import BROWSER_TEST, log_in
from tests.factories import PASSWORD

pytestmark = BROWSER_TEST


def test_register_from_a_template_and_compare_tiers_with_the_chart(live_server, browser_page, screenshot_dir,
                                                                    tenant_a):
    page = browser_page
    base = live_server.url
    requests_outside = []
    page.on("request", lambda request: None if request.url.startswith(base) or request.url.startswith("data:")
            else requests_outside.append(request.url))

    log_in(page, base, tenant_a.owner.email, PASSWORD)

    page.click("nav.sidebar >> text=Models")
    page.wait_for_url(f"{base}/models/")
    page.click("a:has-text('Register model')")
    page.wait_for_url(f"{base}/models/new/")
    # With JavaScript only the chosen architecture input shows.
    assert page.is_visible("select[name=template]")
    assert not page.is_visible("textarea[name=config_text]")
    page.fill("input[name=name]", "support-chat")
    page.select_option("select[name=template]", "llama-3.1-8b")
    page.screenshot(path=str(screenshot_dir / "switchyard-model-register.png"), full_page=True)
    page.click("button[type=submit]:has-text('Register model')")

    page.wait_for_url(re.compile(rf"{re.escape(base)}/models/[0-9a-f-]{{36}}/$"))
    assert page.inner_text("h1") == "support-chat"
    assert "8.03 B" in page.inner_text("[data-testid=model-figures]")
    rows = page.locator("[data-testid=tier-table] tbody tr")
    assert rows.count() >= 10
    auto_row = page.locator("[data-testid=tier-table] tbody tr.is-highlighted")
    assert auto_row.count() == 1
    assert "auto" in auto_row.inner_text()
    assert "would deploy on" in page.inner_text("[data-testid=auto-explanation]")

    page.wait_for_selector("[data-testid=estimate-chart].js-plotly-plot .main-svg")
    page.wait_for_selector("[data-testid=estimate-chart][data-chart-state=drawn]")
    assert page.locator("[data-testid=estimate-chart] .scatterlayer .point").count() >= 10
    page.screenshot(path=str(screenshot_dir / "switchyard-model-page.png"), full_page=True)
    assert requests_outside == [], "the console must not load anything from another origin"

    # A tighter SLO from the form: the URL carries it, and the chart follows.
    page.fill("input[name=ttft_p95_ms]", "300")
    page.click("button:has-text('Compare')")
    page.wait_for_url(re.compile(r"ttft_p95_ms=300"))
    page.wait_for_selector("[data-testid=estimate-chart][data-chart-state=drawn]")
    assert "Misses the SLO" in page.inner_text("[data-testid=tier-table]")
