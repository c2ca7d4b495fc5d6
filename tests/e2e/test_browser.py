"""The whole app once in a real browser: streamlit server + Playwright + Debian chromium.

Creates a workspace through the sidebar, uploads three PNGs and a two-line .txt on the Data page,
imports them, and checks the listing. Leaves a screenshot in pytest's temporary folder.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from helpers import e2e_marks, wait_for_app_idle

pytestmark = e2e_marks()


def _png(path: Path, colour) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (96, 72), (245, 245, 240))
    ImageDraw.Draw(im).ellipse((20, 10, 76, 62), fill=colour)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_create_workspace_upload_and_list(server, browser, tmp_path):
    from playwright.sync_api import expect

    files = [_png(tmp_path / "red.png", (220, 30, 30)), _png(tmp_path / "green.png", (30, 180, 60)),
             _png(tmp_path / "blue.png", (40, 60, 220))]
    notes = tmp_path / "notes.txt"
    notes.write_text("a red circle on a light background\na small blue circle\n", encoding="utf-8")

    page = browser.new_page(viewport={"width": 1440, "height": 1900})
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)  # the first run lists the models (imports open_clip/torch)
    try:
        # the server's very first request is a deep link: it must still go through app.py's router
        page.goto(f"{server}/map")
        sidebar = page.get_by_test_id("stSidebar")
        # the first run lists the models (imports open_clip/torch): slow on a busy 2-core machine
        expect(page.get_by_role("heading", name="Map")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("No workspace is open")).to_be_visible()
        expect(sidebar.get_by_role("link")).to_have_text(  # text follows the icon's ligature name
            [re.compile(f"{n}$") for n in ("Map", "Data", "Search", "Analogies", "Concepts", "Quality")])
        sidebar.get_by_label("New workspace").fill("e2e-shapes")
        sidebar.get_by_role("button", name="Create workspace").click()
        expect(page.get_by_text("Workspace e2e-shapes: 0 items")).to_be_visible()

        sidebar.get_by_role("link", name="Data").click()
        expect(page.get_by_role("heading", name="Add items")).to_be_visible()

        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(
            [str(p) for p in [*files, notes]])
        for p in [*files, notes]:
            expect(page.get_by_role("button", name=f"Remove {p.name}")).to_be_visible()  # upload done
        page.get_by_role("button", name="Import", exact=True).click()

        expect(page.get_by_text("Import: 5 added, 0 skipped")).to_be_visible()
        metrics = page.get_by_test_id("stMetricValue")
        expect(metrics).to_have_text(["5", "3", "2", "0"])
        expect(page.get_by_text("Showing all 5 rows")).to_be_visible()
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible()
        wait_for_app_idle(page)  # the grid painted before the screenshot
        page.screenshot(path=str(tmp_path / "data_page.png"), full_page=True)
        # the other pages open from the sidebar and say what they will do
        sidebar.get_by_role("link", name="Map").click()
        expect(page.get_by_text("No vectors for demo in workspace")).to_be_visible()  # the map asks to embed
        expect(page.get_by_text("Workspace e2e-shapes: 5 items (3 images, 2 texts)")).to_be_visible()
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()
