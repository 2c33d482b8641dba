"""End to end in a real browser: sign up, create an API key, use it, log out and back in.

Drives Debian's chromium (never a downloaded one) through Playwright's sync API
against pytest-django's live server. Set SWITCHYARD_SCREENSHOT_DIR to keep the
screenshots of the overview and the API-keys page for a look.
"""

import json
import re
import urllib.request


from tests.browser import BROWSER_TEST

PASSWORD = "browser-tested-passphrase"

pytestmark = BROWSER_TEST


def test_sign_up_create_a_key_use_it_and_log_in_again(live_server, browser_page, screenshot_dir):
    page = browser_page
    base = live_server.url

    page.goto(f"{base}/signup/")
    page.fill("input[name=email]", "grace@example.net")
    page.fill("input[name=full_name]", "Grace Hopper")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.fill("input[name=organisation_name]", "Compiler Works")
    page.select_option("select[name=billing_country]", "NL")
    page.select_option("select[name=currency]", "EUR")
    page.click("button[type=submit]:has-text('Create organisation')")

    page.wait_for_url(f"{base}/")
    assert page.inner_text("h1") == "Compiler Works"
    assert page.inner_text("[data-testid=current-tenant]") == "Compiler Works"
    assert "Welcome to Switchyard" in page.inner_text(".messages")
    page.screenshot(path=str(screenshot_dir / "switchyard-overview.png"), full_page=True)

    page.click("nav.sidebar >> text=API keys")
    page.wait_for_url(f"{base}/api-keys/")
    page.fill("input[name=name]", "Browser key")
    page.check("input[name=scopes][value=admin]")
    page.click("button:has-text('Create key')")
    plaintext = page.inner_text("[data-testid=new-api-key]").strip()
    assert re.fullmatch(r"sy_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}", plaintext), plaintext
    page.screenshot(path=str(screenshot_dir / "switchyard-api-keys.png"), full_page=True)

    request = urllib.request.Request(f"{base}/api/v1/tenant", headers={"Authorization": f"Bearer {plaintext}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        tenant = json.load(response)
    assert (tenant["name"], tenant["billing_country"], tenant["currency"]) == ("Compiler Works", "NL", "EUR")

    # The key is shown once: a reload of the page no longer has it.
    page.goto(f"{base}/api-keys/")
    assert plaintext not in page.content()
    assert "Browser key" in page.inner_text("table")

    page.click("details.user-menu > summary")
    page.click("[data-testid=logout]")
    page.wait_for_url(f"{base}/accounts/login/")

    page.fill("input[name=username]", "grace@example.net")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(f"{base}/")
    assert page.inner_text("h1") == "Compiler Works"
