"""Fixtures for real-browser tests: Debian's chromium (never a downloaded one) driven by
Playwright's sync API against pytest-django's live server.

tests/conftest.py loads these fixtures for every module (`pytest_plugins`); a test
module opts in with `pytestmark = BROWSER_TEST` and asks for `browser_page`.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox, no background connections that would be refused.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

BROWSER_TEST = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def allow_orm_beside_playwrights_event_loop(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; Django would otherwise
    # refuse the live server's and the test's database calls as "async unsafe".
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser_page(allow_orm_beside_playwrights_event_loop):
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


def log_in(page, base: str, email: str, password: str) -> None:
    """Sign in through the login page and wait for the console's home."""
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(f"{base}/")


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """Where screenshots go: SWITCHYARD_SCREENSHOT_DIR to keep them, else a temporary folder."""
    return Path(os.environ.get("SWITCHYARD_SCREENSHOT_DIR") or tmp_path)
