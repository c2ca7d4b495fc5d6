"""The standalone HTML map (core.export.write_map_html) in Debian chromium, opened from a file:// URL with
every other request aborted: the WebGL map draws every point, hover shows a point's caption, a box or a
cluster name selects (the other points turn grey, the count shows), Escape clears, the PNG button saves,
and nothing leaves the page or breaks its content security policy."""
from __future__ import annotations

import time

import numpy as np
from scipy.spatial import cKDTree

from core.export import MAX_HTML_CAPTION_CHARS, map_colour, write_map_html
from core.labels import map_labels
from core.mapview import MapParams, build_view
from core.projection import compute_map

from helpers import e2e_marks

pytestmark = e2e_marks()

GREY = (200, 200, 200)  # index.js: every point outside a selection
# every CSP violation the page fires, collected before any of its scripts run
_CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
              "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
_UNCOVERED_LABELS = """() => Array.from(document.querySelectorAll('.js-label')).filter((e) => {
  const r = e.getBoundingClientRect();
  return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === e;
}).map((e) => e.dataset.cluster)"""


def _origin(page) -> tuple[float, float]:
    box = page.locator(".js-scatter canvas.js-gl").bounding_box()
    return box["x"], box["y"]


def _screen_of(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the data point (x, y)."""
    px, py = page.evaluate("([x, y]) => window.jointscopeScatter.get('html-map').screenOfData(x, y)", [x, y])
    ox, oy = _origin(page)
    return ox + px, oy + py


def _data_of(page, px: float, py: float) -> tuple[float, float]:
    ox, oy = _origin(page)
    return tuple(page.evaluate(
        "([px, py]) => { const p = window.jointscopeScatter.get('html-map').plot;"
        " return [p.get('xScale').invert(px), p.get('yScale').invert(py)]; }", [px - ox, py - oy]))


def _colour_at(page, px: float, py: float) -> tuple[int, int, int]:
    """The colour the user sees at page position (px, py) (the centre of a 3×3 screenshot)."""
    from io import BytesIO

    from PIL import Image

    png = page.screenshot(clip={"x": px - 1, "y": py - 1, "width": 3, "height": 3})
    return Image.open(BytesIO(png)).convert("RGB").getpixel((1, 1))


def _colour_settles(page, px: float, py: float, done, timeout: float = 15.0) -> tuple[int, int, int]:
    """The colour at (px, py) once ``done(colour)`` holds (the redraw after a selection can take seconds on a
    busy machine), else the last colour seen after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    colour = _colour_at(page, px, py)
    while not done(colour) and time.monotonic() < end:
        page.wait_for_timeout(200)
        colour = _colour_at(page, px, py)
    return colour


def _isolated(xy: np.ndarray, rows: np.ndarray, avoid: np.ndarray) -> int:
    """The row among ``rows`` farthest from every other point and from the points ``avoid`` (label centres)."""
    dist, _ = cKDTree(xy).query(xy[rows], k=2)
    far = dist[:, 1]
    if len(avoid):
        far = np.minimum(far, cKDTree(avoid).query(xy[rows])[0] / 4)
    return int(rows[np.argmax(far)])


def test_html_map_draws_every_point_hovers_and_selects_offline(demo_ws, browser, tmp_path):
    from playwright.sync_api import expect

    ws = demo_ws  # a private copy: the map and its neighbour index are written into the workspace
    res = compute_map(ws, "demo", method="pca")
    labels = map_labels(ws, "demo", res)
    values, title, options = map_colour(ws, "demo", res, "modality")
    path = write_map_html(tmp_path / "map.html", ws, "demo", res, color=values, color_title=title, labels=labels,
                          **options)
    view = build_view(ws, "demo", MapParams(method="pca", names="off"), res=res)
    xy = res.coords.astype(np.float64)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(_CSP_WATCH)
    try:
        page.goto(path.as_uri())
        expect(page.locator("h1")).to_have_text(f"demo · demo · PCA 2-D map · {res.n:,} points")
        page.wait_for_selector(".js-scatter[data-ready='1']", timeout=60_000)
        assert page.locator(".js-scatter").get_attribute("data-points") == str(res.n), "every point is drawn"
        mods, counts = np.unique(res.modality, return_counts=True)
        legend = page.locator(".js-scatter .js-legend")  # on the map, as in the app: the largest first
        assert legend.locator(".js-lrow").all_text_contents() == [
            f"{m} ({c:,})" for c, m in sorted(zip(counts, mods), key=lambda t: -t[0])]
        assert page.locator(".js-label").count() == len(labels)
        expect(page.locator("footer")).to_contain_text("Coloured by modality")

        # hover: an isolated text point (no thumbnail or name on it) shows its caption
        texts = np.flatnonzero(res.modality == "text")
        row = _isolated(xy, texts, np.array([[d["x"], d["y"]] for d in labels]))
        at = _screen_of(page, *xy[row])
        page.mouse.move(*at)
        tip = page.locator(".js-tip")
        expect(tip).to_be_visible(timeout=10_000)
        assert tip.text_content() == view.hover_text(row)[:MAX_HTML_CAPTION_CHARS]
        assert view.caption(row) in tip.text_content()
        coloured = _colour_at(page, *at)
        assert max(abs(a - b) for a, b in zip(coloured, GREY)) > 40, f"the point is in its colour: {coloured}"

        # a box over the image points (right of that text point) selects them; the rest turns grey
        page.get_by_role("button", name="Box").click()
        imgs = xy[res.modality == "image"]
        lo, hi = np.percentile(imgs, 25, axis=0), np.percentile(imgs, 75, axis=0)
        a, b = _screen_of(page, lo[0], hi[1]), _screen_of(page, hi[0], lo[1])
        page.mouse.move(*a)
        page.mouse.down()
        for t in np.linspace(0, 1, 8)[1:]:
            page.mouse.move(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
        page.mouse.up()
        (x0, y1), (x1, y0) = _data_of(page, *a), _data_of(page, *b)
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        assert not inside[row] and inside.sum() > 20
        count = page.locator(".jsm-count")
        expect(count).to_have_text(f"{int(inside.sum()):,} selected")
        assert _colour_settles(page, *at, lambda c: c == GREY) == GREY, "a point outside the selection turns grey"
        page.keyboard.press("Escape")
        expect(count).to_have_text("")
        expect(page.locator("#jointscope-map")).to_have_attribute("data-selected", "0")
        back = _colour_settles(page, *at, lambda c: max(abs(p - q) for p, q in zip(c, coloured)) < 10)
        assert max(abs(p - q) for p, q in zip(back, coloured)) < 10, f"Escape gives the points their colour: {back}"

        # a cluster's name selects its members
        page.get_by_role("button", name="Pan").click()
        free = page.evaluate(_UNCOVERED_LABELS)  # names may overlap: click one that nothing covers
        lab = max((d for d in labels if str(d["cluster"]) in free), key=lambda d: d["n"])
        page.locator(f".js-label[data-cluster='{lab['cluster']}']").click()
        expect(count).to_have_text(f"{len(lab['ids']):,} selected · {lab['name']}")
        page.get_by_role("button", name="Clear").click()
        expect(count).to_have_text("")

        with page.expect_download() as download:
            page.get_by_role("button", name="PNG").click()
        png = tmp_path / "saved.png"
        download.value.save_as(png)
        assert download.value.suggested_filename == "map.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        assert page.evaluate("window.__csp") == [], "the content security policy was violated"
        assert errors == [], f"console errors: {errors}"
    finally:
        page.close()
