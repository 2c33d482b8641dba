"""End to end in a real browser: sign up, create an API key, use it, log out and back in.

Drives Debian's chromium (never a downloaded one) through Playwright's sync API
against pytest-django's live server. Set SWITCHYARD_SCREENSHOT_DIR to keep the
screenshots of the overview and the API-keys page for a look.
"""

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "browser-tested-passphrase"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def allow_orm_beside_playwrights_event_loop(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; Django would otherwise
    # refuse the live server's and the test's database calls as "async unsafe".
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium). "
                    "These tests never download a browser.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get("SWITCHYARD_SCREENSHOT_DIR") or tmp_path)


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
