"""The Map page in a real browser: streamlit server + Playwright + Debian chromium, on the demo workspace.

Opens the Map (the UMAP map is computed by the server: PCA preview first, then the map), checks that the
WebGL map drew every point, box-selects a region with the mouse and checks that the selected items are
listed, then opens Search from the selection; clicks a cluster's name and a point; zooms into images and
sees their thumbnails. Leaves screenshots in pytest's temporary folder.
"""
from __future__ import annotations

import re
import time

import numpy as np

import core

from helpers import (
    MAP_POINTS_JS,
    MAP_ROOT_JS,
    MAP_ROW_XY_JS,
    box_select,
    e2e_marks,
    map_view_js,
    wait_for_app_idle,
    wait_for_map_settled,
)

pytestmark = e2e_marks()

def test_map_draws_points_and_box_selection_lists_items(demo_server, browser, tmp_path):
    from playwright.sync_api import expect

    base, home = demo_server
    n = core.Workspace(home / "demo", create=False).models()["demo"]["n"]
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)  # first run: models listed, UMAP computed on 2 busy cores
    try:
        page.goto(f"{base}/")  # the Map is the app's default page
        expect(page.get_by_role("heading", name="Map")).to_be_visible()
        # the real map (not the PCA preview) is there once its metrics are
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="trustworthiness")).to_be_visible()
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {n}")
        # every point drawn on one WebGL canvas, the modalities named in the map's legend with their counts
        expect(page.locator(".js-scatter canvas.js-gl")).to_be_visible()
        legend = page.locator(".js-scatter .js-legend")
        expect(legend).to_contain_text("modality")
        expect(legend).to_contain_text(re.compile(r"image \(\d+\)"))
        expect(page.get_by_text("Images on this map")).to_be_visible()

        # the map is read back from the workspace from now on
        page.reload()
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {n}")
        wait_for_map_settled(page)
        page.evaluate(f"() => {{ window.__mapRoot = ({MAP_ROOT_JS}); }}")
        box_select(page)  # the middle of the map

        caption = page.get_by_text(re.compile(r"^\d+ selected: "))
        expect(caption).to_be_visible()
        wait_for_app_idle(page)
        # the map lived through the runs of the selection: not mounted anew (a redraw, a lost view or lasso)
        assert page.evaluate(f"() => window.__mapRoot.isConnected && window.__mapRoot === ({MAP_ROOT_JS})")
        n_sel = int(caption.inner_text().split()[0])
        assert 0 < n_sel < n
        expect(page.get_by_role("heading", name="Selection")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        expect(page.get_by_role("button", name="Search from here")).to_be_visible()
        expect(page.get_by_test_id("stDownloadButton")).to_have_count(3)  # map as HTML, selection CSV, Parquet
        page.set_viewport_size({"width": 1440, "height": 2300})  # the app scrolls inside; show it all
        wait_for_app_idle(page)  # the grid and gallery painted before the screenshot
        page.screenshot(path=str(tmp_path / "map_page.png"), full_page=True)
        assert not page.get_by_test_id("stException").count()

        page.get_by_role("button", name="Search from here").click()
        expect(page.get_by_role("heading", name="Search")).to_be_visible()
        assert "/search?" in page.url and "ws=demo" in page.url
        # the selection is the query: its mean vector, its items left out of the results
        expect(page.get_by_text(f"More like {n_sel} item")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^\d+ nearest images to"))).to_be_visible()
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()


def test_click_a_name_selects_its_cluster_and_a_point_shows_its_neighbours(demo_server, browser, tmp_path):
    from playwright.sync_api import expect

    base, home = demo_server
    ws = core.Workspace(home / "demo", create=False)
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{base}/?ws=demo&model=demo&method=PCA&names=coarse")
        expect(page.get_by_text(re.compile(r"^PCA 2-D map of"))).to_be_visible()
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() > 0")
        expect(page.locator(".js-scatter .js-label").first).to_be_attached()
        expect(page.get_by_text(re.compile(r"^Named clusters \(\d+, coarse\)"))).to_be_visible()

        # a click on the first name selects the members of its cluster
        from core.labels import map_labels

        res = core.compute_map(ws, "demo", method="pca")
        labels = map_labels(ws, "demo", res, level="coarse")
        shown = page.locator(".js-scatter .js-label:visible")  # names that would cover a larger one are hidden
        assert 2 <= shown.count() <= len(labels)
        first = next(d for d in labels if str(d["cluster"]) == shown.first.get_attribute("data-cluster"))
        assert shown.first.inner_text() == first["name"]
        page.evaluate("document.querySelector('.js-scatter').scrollIntoView({block: 'center'})")
        shown.first.click()
        expect(page.get_by_text(f"{first['n']:,} selected", exact=True)).to_be_visible()
        page.get_by_role("button", name="Clear selection").click()
        expect(page.get_by_text(f"{first['n']:,} selected", exact=True)).to_have_count(0)

        # a click on one point: lines to its true neighbours and their list
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() > 0")
        far = max(range(res.n), key=lambda i: min((res.coords[i, 0] - lx) ** 2 + (res.coords[i, 1] - ly) ** 2
                                                  for lx, ly in ((d["x"], d["y"]) for d in labels)))
        x, y = page.evaluate(MAP_ROW_XY_JS, far)
        page.mouse.click(x, y)
        expect(page.get_by_text("1 selected", exact=True)).to_be_visible()
        # lines from the point to its 10 true neighbours, drawn over the map
        page.wait_for_function(map_view_js("view.lines && view.lines.a.length === 10"))
        page.wait_for_function(map_view_js("view.root.dataset.ringed === '1'"))  # one point among many: ringed
        expect(page.get_by_text(re.compile(r"^Trust \d\.\d\d: \d+ of its 10 nearest neighbours"))).to_be_visible()
        page.screenshot(path=str(tmp_path / "map_neighbours.png"), full_page=True)
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()


def test_zooming_into_images_draws_their_stored_thumbnails(demo_server, browser, tmp_path):
    """The demo workspace's images: a zoom into a crowd of them draws at least 50 of their stored thumbnails
    (more than the overview shows), at most 2 s after the view settles, each at an image's point."""
    base, home = demo_server
    ws = core.Workspace(home / "demo", create=False)
    res = core.compute_map(ws, "demo", method="pca")
    modality = ws.items.set_index("id")["modality"].reindex(res.ids).to_numpy()
    xy = res.coords[:, :2]
    images = np.flatnonzero(modality == "image")
    # the zoom's centre: the image with the most images near it (a tenth of the map's extent)
    radius = 0.1 * float(np.ptp(xy[:, 0]))
    candidates = images[:: max(1, len(images) // 400)]
    near = [int((np.hypot(*(xy[images] - xy[i]).T) < radius).sum()) for i in candidates]
    centre = int(candidates[int(np.argmax(near))])
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{base}/?ws=demo&model=demo&method=PCA&thumbs=1")  # the Thumbnails toggle on
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {res.n}")
        wait_for_map_settled(page)
        page.evaluate("document.querySelector('.js-scatter').scrollIntoView({block: 'center'})")
        overview = int(page.evaluate(map_view_js("view.root.dataset.thumbs")))
        # one zoom into the crowd of images (the test world has 400 of them)
        before = page.evaluate(map_view_js("view.thumbsKey"))
        view_before = page.evaluate(map_view_js("view.root.dataset.view"))
        page.mouse.move(*page.evaluate(MAP_ROW_XY_JS, centre))
        for _ in range(4):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(30)
        page.wait_for_function(f"(v) => ({map_view_js('view.root.dataset.view')})() !== v", arg=view_before,
                               timeout=10_000)
        t0 = time.monotonic()
        ready = map_view_js("view.thumbsKey && view.thumbsKey !== before && Number(view.root.dataset.thumbs) >= 50")
        page.wait_for_function(f"(before) => ({ready})()", arg=before, timeout=10_000)
        took = time.monotonic() - t0
        assert took <= 2.0, f"thumbnails took {took:.2f} s after the zoom settled"
        shown = page.evaluate(map_view_js("view.thumbs.map((t) => [t.row, t.url.slice(0, 15)])"))
        assert len(shown) >= 50 and len(shown) > overview
        assert all(modality[row] == "image" for row, _ in shown)  # images only, each at its own point
        assert all(url.startswith("data:image/") for _, url in shown)  # sent inline: nothing is fetched
        page.screenshot(path=str(tmp_path / "map_thumbnails.png"))
    finally:
        page.close()
