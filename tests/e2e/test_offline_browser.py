"""Nothing leaves the machine: every page of the app, opened on the demo workspace in Debian chromium, makes
no request to another host (the tab icon, fonts, scripts and images are all served by the app's own server),
and the guard that every browser test runs under really catches and blocks such a request."""
from __future__ import annotations

import re

import pytest

from helpers import OfflineBrowser, e2e_marks, is_local_url, wait_for_app_idle

pytestmark = e2e_marks()

PAGES = ("Map", "Data", "Search", "Analogies", "Concepts", "Quality")


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:8501/_stcore/health", True), ("http://127.8.9.10/x", True), ("http://localhost:1/", True),
    ("http://[::1]:8501/", True), ("data:image/png;base64,AAAA", True), ("blob:http://127.0.0.1/abc", True),
    ("file:///tmp/map.html", True), ("https://fonts.gstatic.com/s/i/icon.svg", False),
    ("http://10.0.0.1/", False), ("http://192.168.1.1/", False), ("http://localhost.example.com/", False),
    ("https://example.invalid/", False)])
def test_is_local_url(url, local):
    assert is_local_url(url) is local


def test_guard_blocks_and_records_an_offsite_request(browser, tmp_path):
    """The guard itself: a page's fetch to another host is aborted before it leaves and recorded (on a
    private guard, so this module's own guard stays clean). ``.invalid`` never resolves anywhere."""
    guard = OfflineBrowser(browser.browser)
    page = guard.new_page()
    try:
        html = tmp_path / "page.html"
        html.write_text("<!doctype html><title>t</title><body>t</body>", encoding="utf-8")
        page.goto(html.as_uri())
        outcome = page.evaluate("""() => fetch('https://offsite.example.invalid/x.png')
                                       .then(() => 'loaded', e => 'blocked: ' + e.name)""")
        assert outcome.startswith("blocked"), outcome
        assert guard.attempts == ["https://offsite.example.invalid/x.png"]
    finally:
        page.context.close()


def test_every_page_stays_on_this_machine(demo_server, browser):
    from playwright.sync_api import expect

    base, _home = demo_server
    before = len(browser.attempts)
    page = browser.new_page(viewport={"width": 1440, "height": 1200})
    page.set_default_timeout(60_000)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    try:
        page.goto(base)
        expect(page.get_by_role("heading", name="Map")).to_be_visible(timeout=120_000)
        sidebar = page.get_by_test_id("stSidebar")
        for name in PAGES:
            sidebar.get_by_role("link", name=re.compile(f"{name}$")).click()
            expect(page.get_by_role("heading", name=re.compile(name)).first).to_be_visible()
            running = page.locator("[data-testid=stStatusWidgetRunningIcon]")
            expect(running).to_have_count(0, timeout=120_000)  # the whole run, late images included
            wait_for_app_idle(page, timeout=120)  # its images loaded or failed, the page painted
            page.evaluate("() => document.fonts.ready.then(() => true)")  # and every font it asked for
        # the tab icon is the app's own file, served by its own server (or inline)
        icons = page.eval_on_selector_all("link[rel~=icon]", "els => els.map(e => e.href)")
        assert icons, "the page has a tab icon"
        assert all(is_local_url(u) for u in icons), icons
        assert seen, "the page made requests at all (the recorder works)"
        offsite = [u for u in seen if not is_local_url(u)] + browser.attempts[before:]
        assert offsite == [], f"requests to other hosts: {offsite[:10]}"
    finally:
        page.close()
