"""The Search and Analogies pages in a real browser: streamlit server + Playwright + Debian chromium, on the
demo workspace.

Types "a red circle" into the Search box, presses Enter and checks that result images with scores
appear; then loads the worked example on the Analogies page and checks both galleries. Leaves
screenshots in pytest's temporary folder.
"""
from __future__ import annotations

import re

from helpers import e2e_marks, wait_for_app_idle

pytestmark = e2e_marks()


def test_search_by_text_shows_images_with_scores(demo_server, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)  # first run: models listed, demo model loaded, index built
    try:
        page.goto(f"{demo_server[0]}/search")
        expect(page.get_by_role("heading", name="Search")).to_be_visible()
        box = page.get_by_label("Query")
        expect(box).to_be_visible()
        box.fill("a red circle")
        box.press("Enter")
        expect(page.get_by_text(re.compile(r"nearest images to “a red circle”"))).to_be_visible()
        main = page.get_by_test_id("stMain")
        cards = main.get_by_test_id("stImage")
        expect(cards).to_have_count(15)
        scores = main.get_by_text(re.compile(r"^\d+ · score \d\.\d{3}$"))
        expect(scores).to_have_count(15)
        values = [float(s.split()[-1]) for s in scores.all_inner_texts()]
        assert values == sorted(values, reverse=True)
        # the thumbnails really loaded
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stImage] img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length >= 15")
        expect(page.get_by_role("button", name="More like this")).to_have_count(15)
        expect(page.get_by_text("Labels", exact=True)).to_be_visible()
        expect(page.get_by_text("Zero-shot: the bundled vocabulary", exact=False)).to_be_visible()
        expect(main.get_by_test_id("stDataFrame").filter(visible=True)).to_have_count(1)  # the labels
        page.set_viewport_size({"width": 1440, "height": 1700})  # the app scrolls inside; show it all
        wait_for_app_idle(page)  # the label grid painted before the screenshot
        page.screenshot(path=str(tmp_path / "search_page.png"), full_page=True)
        assert not page.get_by_test_id("stException").count()

        page.get_by_role("button", name="More like this").first.click()
        expect(page.get_by_text(re.compile(r"More like 1 item"))).to_be_visible()
        expect(page.get_by_text(re.compile(r"^15 nearest images to world image"))).to_be_visible()
    finally:
        page.close()


def test_analogies_worked_example(demo_server, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{demo_server[0]}/analogies")
        expect(page.get_by_role("heading", name="Analogies")).to_be_visible()
        page.get_by_role("button", name="Worked example").click()
        expect(page.get_by_text(re.compile(r"^Analogy · 3CosAdd"))).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Baseline · nearest neighbours of world image"))).to_be_visible()
        expect(page.get_by_text(re.compile(r"differ from the plain nearest neighbours"))).to_be_visible()
        scores = page.get_by_test_id("stMain").get_by_text(re.compile(r"^\d+ · score \d\.\d{3}$"))
        expect(scores).to_have_count(18)
        page.get_by_role("button", name="Evaluate").click()
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="baseline acc@1")).to_be_visible()
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stImage] img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length >= 18")
        page.set_viewport_size({"width": 1440, "height": 2900})  # the app scrolls inside; show it all
        page.evaluate("() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
        wait_for_app_idle(page)  # painted at the new size before the screenshot
        page.screenshot(path=str(tmp_path / "analogies_page.png"), full_page=True)
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()
