"""The Map page in a real browser: streamlit server + Playwright + Debian chromium, on the demo workspace.

Opens the Map (the UMAP map is computed by the server: PCA preview first, then the map), checks that
plotly drew every point with WebGL, box-selects a region with the mouse and checks that the selected
items are listed, then opens Search from the selection. Leaves a screenshot at
/tmp/jointscope_map_page.png.
"""
from __future__ import annotations

import re
from pathlib import Path

import core

from helpers import MAP_POINTS_JS, box_select, e2e_marks

SCREENSHOT = Path("/tmp/jointscope_map_page.png")

pytestmark = e2e_marks()

def test_map_draws_points_and_box_selection_lists_items(demo_server, browser):
    from playwright.sync_api import expect

    base, home = demo_server
    n = core.Workspace(home / "demo", create=False).models()["demo"]["n"]
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)  # first run: models listed, UMAP computed on 2 busy cores
    try:
        page.goto(f"{base}/map")
        expect(page.get_by_role("heading", name="Map")).to_be_visible()
        # the real map (not the PCA preview) is there once its metrics are
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="trustworthiness")).to_be_visible()
        page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {n}")
        plot = page.locator(".js-plotly-plot").filter(has=page.locator(".gl-container canvas")).first
        expect(plot).to_be_visible()
        # 2-D points are drawn with WebGL (scattergl), not as one SVG node per point
        assert plot.locator(".gl-container canvas").count() >= 1
        assert plot.locator("g.trace.scatter .point").count() == 0
        expect(page.get_by_text("Images on this map")).to_be_visible()

        box_select(page, plot)  # the middle of the plot area

        caption = page.get_by_text(re.compile(r"^\d+ selected: "))
        expect(caption).to_be_visible()
        n_sel = int(caption.inner_text().split()[0])
        assert 0 < n_sel < n
        expect(page.get_by_role("heading", name="Selection")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        expect(page.get_by_role("button", name="Search from here")).to_be_visible()
        expect(page.get_by_test_id("stDownloadButton")).to_have_count(3)  # map as HTML, selection CSV, Parquet
        page.set_viewport_size({"width": 1440, "height": 2300})  # the app scrolls inside; show it all
        page.wait_for_timeout(1500)  # let the grid and gallery paint before the screenshot
        page.screenshot(path=str(SCREENSHOT), full_page=True)
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


# page position of a point in data coordinates of the map's plotly graph
_TO_PAGE_JS = """([x, y]) => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    if (!(gd.data || []).some(t => t.mode === 'markers' && t.customdata)) continue;
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, bb = gd.getBoundingClientRect();
    return [bb.left + xa._offset + xa.l2p(x), bb.top + ya._offset + ya.l2p(y)];
  }
  return null;
}"""
_LABELS_JS = """() => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const t = (gd.data || []).find(t => t.name === 'cluster names');
    if (t) return {names: (gd.layout.annotations || []).map(a => a.text), x: t.x, y: t.y};
  }
  return null;
}"""
_NEIGHBOUR_LINES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => (gd.data || []))
  .filter(t => (t.name || '').startsWith('true neighbours')).map(t => t.name)"""


def test_click_a_name_selects_its_cluster_and_a_point_shows_its_neighbours(demo_server, browser):
    from playwright.sync_api import expect

    base, home = demo_server
    ws = core.Workspace(home / "demo", create=False)
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    try:
        page.goto(f"{base}/?ws=demo&model=demo&method=PCA&names=coarse")
        expect(page.get_by_text(re.compile(r"^PCA 2-D map of"))).to_be_visible()
        page.wait_for_function(f"() => ({_LABELS_JS})() !== null")
        labels = page.evaluate(_LABELS_JS)
        assert len(labels["names"]) >= 2
        expect(page.get_by_text(re.compile(r"^Named clusters \(\d+, coarse\)"))).to_be_visible()

        # a click on the first name selects the members of its cluster
        from core.labels import map_labels

        res = core.compute_map(ws, "demo", method="pca")
        first = map_labels(ws, "demo", res, level="coarse")[0]
        x, y = page.evaluate(_TO_PAGE_JS, [labels["x"][0], labels["y"][0]])
        page.mouse.click(x, y)
        expect(page.get_by_text(f"{first['n']:,} selected", exact=True)).to_be_visible()
        page.get_by_role("button", name="Clear selection").click()
        expect(page.get_by_text(f"{first['n']:,} selected", exact=True)).to_have_count(0)

        # a click on one point: lines to its true neighbours and their list
        far = max(range(res.n), key=lambda i: min((res.coords[i, 0] - lx) ** 2 + (res.coords[i, 1] - ly) ** 2
                                                  for lx, ly in zip(labels["x"], labels["y"])))
        x, y = page.evaluate(_TO_PAGE_JS, [float(res.coords[far, 0]), float(res.coords[far, 1])])
        page.mouse.click(x, y)
        expect(page.get_by_text("1 selected", exact=True)).to_be_visible()
        page.wait_for_function(f"() => ({_NEIGHBOUR_LINES_JS})().length === 1")
        assert page.evaluate(_NEIGHBOUR_LINES_JS) == ["true neighbours (10)"]
        expect(page.get_by_text(re.compile(r"^Trust \d\.\d\d: \d+ of its 10 nearest neighbours"))).to_be_visible()
        page.screenshot(path="/tmp/jointscope_map_neighbours.png", full_page=True)
        assert not page.get_by_test_id("stException").count()
    finally:
        page.close()
