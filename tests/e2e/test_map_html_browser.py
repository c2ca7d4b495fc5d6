"""The standalone HTML map (core.export.write_map_html) in Debian chromium, opened from a file:// URL with
every other request aborted: the map draws every point with WebGL, the legend and thumbnails show, and
nothing leaves the page."""
from __future__ import annotations

import numpy as np

from core.export import map_colour, write_map_html
from core.projection import compute_map

from helpers import e2e_marks

pytestmark = e2e_marks()

_STATE_JS = """() => {
  const gd = document.getElementById('jointscope-map');
  if (!gd || !gd._fullLayout) return null;
  const pts = (gd.data || []).filter(t => t.mode === 'markers').reduce((n, t) => n + t.customdata.length, 0);
  return {points: pts, canvases: gd.querySelectorAll('.gl-container canvas').length,
          legend: Array.from(gd.querySelectorAll('g.legend g.traces text.legendtext')).map(e => e.textContent),
          thumbs: gd.querySelectorAll('g.layer-above image').length};
}"""


def test_html_map_renders_offline_without_requests(demo_ws, browser, tmp_path):
    from playwright.sync_api import expect

    ws = demo_ws  # a private copy: the map and its neighbour index are written into the workspace
    res = compute_map(ws, "demo", method="pca")
    values, title, options = map_colour(ws, "demo", res, "modality")
    path = write_map_html(tmp_path / "map.html", ws, "demo", res, color=values, color_title=title, **options)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    left, errors = [], []
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:")) else left.append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri())
        expect(page.locator("h1")).to_have_text(f"demo · demo · PCA 2-D map · {res.n:,} points", timeout=30_000)
        page.wait_for_function(f"() => {{ const s = ({_STATE_JS})(); return s && s.points === {res.n}; }}",
                               timeout=30_000)
        page.wait_for_timeout(500)  # let the WebGL draw and the thumbnails load
        state = page.evaluate(_STATE_JS)
        assert state["canvases"] >= 1, "points are drawn with WebGL"
        mods, counts = np.unique(res.modality, return_counts=True)
        assert sorted(state["legend"]) == sorted(f"{m} ({c})" for m, c in zip(mods, counts))
        assert state["thumbs"] == 60
        expect(page.locator("footer")).to_contain_text("Coloured by modality")
        assert left == [], f"requests left the page: {left}"
        assert errors == [], f"console errors: {errors}"
    finally:
        page.close()
