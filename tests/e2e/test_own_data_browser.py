"""A new user's walk in a real browser (streamlit server + Playwright + Debian chromium).

A table with a vector column is imported into a new workspace: the app switches to the model of those
vectors and the Map draws them; a reload keeps the workspace, model and map settings (they live in the
URL); a box selection on the Map is the workspace's selection for the CSV download and for Concepts; a
word the demo model never saw is flagged on Search; deleted items are gone from Search and the Map.
Leaves a screenshot in pytest's temporary folder.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np

from helpers import MAP_POINTS_JS, box_select, e2e_marks

pytestmark = e2e_marks()

N_ROWS = 40

def _table(path: Path) -> Path:
    """Two planted groups of rows, each with a caption, a group label and a 6-d vector (JSON list)."""
    rng = np.random.default_rng(0)
    centres = {"alpha": np.eye(6)[0] * 3, "beta": np.eye(6)[1] * 3}
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "group", "emb"])
        for i in range(N_ROWS):
            g = "alpha" if i % 2 == 0 else "beta"
            v = centres[g] + rng.normal(0, 0.3, 6)
            w.writerow([f"{g} note number {i}", g, json.dumps([round(float(x), 4) for x in v])])
    return path


def test_own_table_reload_selection_unknown_words(serve_home, browser, tmp_path, demo_ws_template):
    from playwright.sync_api import expect

    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(demo_ws_template.path, home / "demo")
    table = _table(tmp_path / "notes.csv")
    with serve_home(home, tmp_path / "server.log") as base:
        page = browser.new_page(viewport={"width": 1440, "height": 1500}, accept_downloads=True)
        page.set_default_timeout(90_000)
        expect.set_options(timeout=90_000)  # first run imports torch and lists the models on 2 busy cores
        try:
            page.goto(base)
            sidebar = page.get_by_test_id("stSidebar")
            expect(page.get_by_role("heading", name="Map")).to_be_visible(timeout=120_000)
            expect(page.get_by_text(re.compile(r"^Start here: this is the demo world"))).to_be_visible()

            # a new workspace opens on the Data page; a table with a vector column is imported
            sidebar.get_by_label("New workspace").fill("mine")
            sidebar.get_by_role("button", name="Create workspace").click()
            expect(page.get_by_role("heading", name="Add items")).to_be_visible()
            page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(table))
            expect(page.get_by_role("button", name=f"Remove {table.name}")).to_be_visible()
            page.get_by_role("button", name="Import", exact=True).click()
            expect(page.get_by_text(f"Import: {N_ROWS} added")).to_be_visible()
            # the chosen model (demo) has no vectors here: the app switches to the table's and says so
            expect(page.get_by_text(re.compile(r"Switched the model to precomputed:emb after the import"))
                   ).to_be_visible()

            sidebar.get_by_role("link", name="Map").click()
            expect(page.get_by_text(re.compile(r"Workspace mine: 40 items .* 40 vectors for precomputed:emb"))
                   ).to_be_visible()
            page.get_by_test_id("stRadio").filter(has_text="Method").get_by_text("PCA").click()
            expect(page.get_by_text(re.compile(r"^PCA 2-D map of 40 points"))).to_be_visible()
            page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {N_ROWS}")
            page.wait_for_url(re.compile(r"method=PCA"))
            assert "ws=mine" in page.url, page.url

            # a reload (or the copied link) restores workspace, model and map settings
            page.reload()
            expect(page.get_by_text(re.compile(r"Workspace mine: 40 items .* vectors for precomputed:emb"))
                   ).to_be_visible(timeout=120_000)
            expect(page.get_by_text(re.compile(r"^PCA 2-D map of 40 points"))).to_be_visible()
            page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {N_ROWS}")

            # a box selection is the selection of the workspace: listed, downloadable with captions
            box_select(page, margin=0.02)
            expect(page.get_by_text(f"{N_ROWS} selected: ")).to_be_visible()
            with page.expect_download() as dl:
                page.get_by_test_id("stDownloadButton").filter(has_text="CSV").click()
            with open(dl.value.path(), encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == N_ROWS
            assert {"caption", "file", "group", "map_x", "map_y"} <= set(rows[0])
            assert {r["caption"] for r in rows} == {f"{'alpha' if i % 2 == 0 else 'beta'} note number {i}"
                                                    for i in range(N_ROWS)}
            assert all(r["file"].startswith("notes.csv") for r in rows)

            # deleting the items a Data-page filter shows: gone from the Map and from Search
            import core

            items = core.Workspace(home / "mine", create=False).items
            alpha = set(items.loc[items["group"] == "alpha", "id"])
            beta = sorted(set(items["id"]) - alpha)
            sidebar.get_by_role("link", name="Data").click()
            page.get_by_label("Filter by text, source or id").fill("alpha")
            page.keyboard.press("Enter")
            page.get_by_role("button", name=f"Delete the {N_ROWS // 2} items the filter shows…").click()
            page.get_by_role("button", name="Delete", exact=True).click()
            expect(page.get_by_text(f"Deleted {N_ROWS // 2} items")).to_be_visible()
            sidebar.get_by_role("link", name="Map").click()
            page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {N_ROWS // 2}")
            box_select(page, margin=0.02)  # every point left on the map: the beta notes, no alpha one
            expect(page.get_by_text(f"{N_ROWS // 2} selected: ")).to_be_visible()
            with page.expect_download() as dl:
                page.get_by_test_id("stDownloadButton").filter(has_text="CSV").click()
            with open(dl.value.path(), encoding="utf-8") as f:
                assert sorted(r["id"] for r in csv.DictReader(f)) == beta
            page.get_by_role("button", name="Clear selection").click()
            page.goto(f"{base}/search?ws=mine&model=precomputed:emb&mode=Items&k=60")
            page.get_by_label("Item id(s)").fill(beta[0])
            page.keyboard.press("Enter")
            expect(page.get_by_text(re.compile(r"^\d+ nearest "))).to_be_visible()
            expect(page.get_by_text(re.compile(r"beta note number"))).not_to_have_count(0)
            assert page.get_by_text(re.compile(r"alpha note number")).count() == 0

            # the demo workspace by link: a word the model never saw is named next to the results
            page.goto(f"{base}/search?ws=demo&model=demo&q=a+crimson+disc")
            expect(page.get_by_text("Workspace demo:", exact=False).first).to_be_visible(timeout=120_000)
            expect(page.get_by_text(re.compile(r"never saw these words in training: crimson, disc"))
                   ).to_be_visible()

            # a selection on the demo Map is offered by Concepts (images selected on the Map)
            page.goto(f"{base}/?ws=demo&model=demo&method=PCA")
            page.wait_for_function(f"() => ({MAP_POINTS_JS})() > 0")
            box_select(page, margin=0.02)
            caption = page.get_by_text(re.compile(r"^\d+ selected: "))
            expect(caption).to_be_visible()
            sidebar.get_by_role("link", name="Concepts").click()
            expect(page.get_by_role("heading", name="Concepts")).to_be_visible()
            page.get_by_test_id("stRadio").filter(has_text="Images").get_by_text("Selected on the Map").click()
            expect(page.get_by_text(re.compile(r"^\d+ images selected on the Map"))).to_be_visible()
            page.screenshot(path=str(tmp_path / "own_data.png"), full_page=True)
            assert not page.get_by_test_id("stException").count()
        finally:
            page.close()
