"""The WebGL map component (pages/ui/scatter.py + assets/scatter/scatter.js) in headless chromium at 200,000
points: it draws, lasso / box / click selections reach Python with the right rows, a label click and hover
captions come back, thumbnails appear after a zoom, an unchanged rerun sends almost nothing, a reload keeps
the view, and n = 0, n = 1 and NaN coordinates draw without errors.

WebGL here is chromium's software renderer (SwiftShader), which ``--disable-gpu`` (helpers.CHROMIUM_ARGS)
leaves on; no extra flag is needed. The script under test is tests/e2e/scatter_app.py."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import e2e_marks, wait_for_paint, wait_until

pytestmark = e2e_marks()

ROOT = Path(__file__).resolve().parents[2]
N = 200_000
CLUSTERS = 8
APP = "tests/e2e/scatter_app.py"


def synthetic(n: int, clusters: int, nan: int = 0):
    """The points of scatter_app.synthetic (same seed, same recipe)."""
    rng = np.random.default_rng(0)
    angle = np.linspace(0, 2 * np.pi, clusters, endpoint=False)
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 10
    codes = rng.integers(0, clusters, n)
    xy = centres[codes] + rng.normal(0, 1.2, (n, 2))
    x, y = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    x[:nan] = np.nan
    return x, y, codes, centres


@pytest.fixture(scope="module")
def scatter_server(tmp_path_factory, serve_home):
    """`streamlit run tests/e2e/scatter_app.py` with N points on a free loopback port; yields the base URL."""
    env = {"JOINTSCOPE_SCATTER_N": str(N), "JOINTSCOPE_SCATTER_CLUSTERS": str(CLUSTERS)}
    with serve_home(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("log") / "server.log",
                    script=str(APP), env=env) as base:
        yield base


@pytest.fixture(scope="module")
def data():
    return synthetic(N, CLUSTERS)


class MapPage:
    """A page of scatter_app.py: websocket bytes received, console errors, and helpers to read the map."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.received = 0
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("websocket", self._on_ws)
        self.page.goto(url)
        self.wait_ready()

    def _on_ws(self, ws) -> None:
        ws.on("framereceived", lambda payload: setattr(self, "received", self.received + len(payload)))

    def wait_ready(self, timeout: float = 60) -> None:
        self.page.wait_for_selector(".js-scatter[data-ready='1']", timeout=timeout * 1000)

    def attr(self, name: str) -> str | None:
        return self.page.locator(".js-scatter").get_attribute(f"data-{name}")

    def echo(self) -> dict:
        return json.loads(self.page.locator("code").last.text_content())

    def wait_echo(self, pred, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.echo()
                if pred(last):
                    return last
            except (ValueError, TypeError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"the echoed state never matched; last: {last}")

    def origin(self) -> tuple[float, float]:
        box = self.page.locator(".js-scatter canvas.js-gl").bounding_box()
        return box["x"], box["y"]

    def screen_of(self, x: float, y: float) -> tuple[float, float]:
        """Page coordinates of the data point (x, y)."""
        px, py = self.page.evaluate("([x, y]) => window.jointscopeScatter.get('map').screenOfData(x, y)", [x, y])
        ox, oy = self.origin()
        return ox + px, oy + py

    def data_of(self, px: float, py: float) -> tuple[float, float]:
        """Data coordinates under the page position (px, py)."""
        ox, oy = self.origin()
        return tuple(self.page.evaluate(
            "([px, py]) => { const p = window.jointscopeScatter.get('map').plot;"
            " return [p.get('xScale').invert(px), p.get('yScale').invert(py)]; }", [px - ox, py - oy]))

    def view(self) -> dict:
        return self.page.evaluate("() => window.jointscopeScatter.get('map').currentView()")

    def settle(self, seconds: float = 1.0) -> None:
        """Wait until no websocket frame arrived for `seconds` (the reruns are over)."""
        last, quiet_since = self.received, time.monotonic()
        while time.monotonic() - quiet_since < seconds:
            self.page.wait_for_timeout(100)  # not time.sleep: Playwright delivers frame events only inside its calls
            if self.received != last:
                last, quiet_since = self.received, time.monotonic()

    def close(self) -> None:
        errors = [e for e in self.errors if "favicon" not in e]
        self.page.close()
        assert errors == [], f"console errors: {errors[:5]}"


@pytest.fixture
def open_map(browser, scatter_server):
    pages: list[MapPage] = []

    def _open(query: str = "") -> MapPage:
        page = MapPage(browser, f"{scatter_server}/{query}")
        pages.append(page)
        return page

    yield _open
    for p in pages:
        p.close()


def drag(page, points: list[tuple[float, float]], steps: int = 8) -> None:
    page.mouse.move(*points[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        for i in range(1, steps + 1):
            page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
            page.wait_for_timeout(12)  # a hand's pace: the drag is the behaviour under test
    page.mouse.up()


def inside_polygon(x: np.ndarray, y: np.ndarray, poly: list[tuple[float, float]]) -> np.ndarray:
    """Even–odd rule: a boolean mask of the points inside the closed polygon."""
    inside = np.zeros(len(x), dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xc)
    return inside


def isolated_row(x: np.ndarray, y: np.ndarray) -> int:
    """The row whose nearest neighbour is farthest away (a point a click or hover cannot miss)."""
    from scipy.spatial import cKDTree

    xy = np.stack([x, y], axis=1)
    dist, _ = cKDTree(xy).query(xy, k=2)
    return int(np.argmax(dist[:, 1]))


# ---- tests -------------------------------------------------------------------------------------------------
def test_draws_every_point_with_labels(open_map):
    m = open_map()
    assert m.page.locator(".js-scatter canvas.js-gl").count() == 1
    assert m.attr("points") == str(N) and m.attr("rows") == str(N)
    assert m.page.locator(".js-label").count() == CLUSTERS
    assert m.page.evaluate("() => { const c = document.createElement('canvas'); return !!c.getContext('webgl'); }")


def test_box_select_returns_the_rows_inside(open_map, data):
    x, y, _, centres = data
    m = open_map()
    m.page.get_by_role("button", name="Box").click()
    a = m.screen_of(centres[0][0] - 2.0, centres[0][1] + 2.5)
    b = m.screen_of(centres[0][0] + 1.5, centres[0][1] - 1.0)
    drag(m.page, [a, b])
    (dx0, dy1), (dx1, dy0) = m.data_of(*a), m.data_of(*b)
    expected = int(np.sum((x >= dx0) & (x <= dx1) & (y >= dy0) & (y <= dy1)))
    assert expected > 1000
    got = m.wait_echo(lambda e: e["selection"] > 0)
    assert abs(got["selection"] - expected) <= max(3, expected * 0.001), (got, expected)
    # the caller passed the rows back as `selected`: drawn in colour, every other point grey
    m.page.wait_for_selector(f".js-scatter[data-selected='{got['selection']}']", timeout=10_000)


def test_lasso_select_returns_the_rows_inside(open_map, data):
    x, y, _, centres = data
    m = open_map()
    m.page.get_by_role("button", name="Lasso").click()
    cx, cy = centres[2]
    corners = [(cx - 3, cy - 3), (cx + 3, cy - 2), (cx + 2, cy + 3), (cx - 2, cy + 2)]
    screen = [m.screen_of(px, py) for px, py in corners]
    drag(m.page, [*screen, screen[0]], steps=12)
    poly = [m.data_of(*p) for p in screen]
    expected = int(inside_polygon(x, y, poly).sum())
    assert expected > 10_000
    got = m.wait_echo(lambda e: e["selection"] > 0)
    # the lasso is the mouse path, sampled: allow 1 % for its corners
    assert abs(got["selection"] - expected) <= expected * 0.01, (got, expected)


def test_click_selects_one_point_and_hover_shows_the_caption(open_map, data):
    x, y, codes, _ = data
    row = isolated_row(x, y)
    m = open_map()
    px, py = m.screen_of(float(x[row]), float(y[row]))
    m.page.mouse.move(px, py)
    tip = m.page.locator(".js-tip")
    tip.wait_for(state="visible", timeout=10_000)
    assert tip.text_content() == f"point {row} of cluster {int(codes[row])}"
    assert m.echo()["hovered"] == row or m.wait_echo(lambda e: e["hovered"] == row)
    m.page.mouse.click(px, py)
    got = m.wait_echo(lambda e: e["clicked"] is not None)
    assert got["clicked"] == row and got["selection"] == 1 and got["first_rows"] == [row]


def test_label_click_reports_the_cluster(open_map):
    m = open_map()
    m.page.locator(".js-label", has_text="cluster 3").click()
    assert m.wait_echo(lambda e: e["last_label"] is not None)["last_label"] == 3


def test_thumbnails_appear_after_a_zoom(open_map, data):
    _, _, _, centres = data
    m = open_map()
    m.settle()
    for _zoom in range(2):  # zooming further shows the thumbnails of the new view
        before = m.page.evaluate("() => window.jointscopeScatter.get('map').thumbsKey")
        view_before = m.attr("view")
        m.page.mouse.move(*m.screen_of(centres[5][0] + 1.0, centres[5][1] + 1.0))  # beside the label
        for _ in range(4):
            m.page.mouse.wheel(0, -300)
            m.page.wait_for_timeout(30)  # a wheel's pace: the zoom is the behaviour under test
        # the view settles (the component's debounce) and is reported to Python
        m.page.wait_for_function("(v) => window.jointscopeScatter.get('map').root.dataset.view !== v",
                                 arg=view_before, timeout=10_000)
        t0 = time.monotonic()
        m.page.wait_for_function(
            "(before) => { const m = window.jointscopeScatter.get('map');"
            " return m.thumbsKey && m.thumbsKey !== before && Number(m.root.dataset.thumbs) >= 50; }",
            arg=before, timeout=10_000)
        took = time.monotonic() - t0
        assert took <= 2.0, f"thumbnails took {took:.2f} s after the zoom settled"


def test_unchanged_rerun_sends_under_one_percent(open_map):
    m = open_map()
    m.settle(1.5)
    first = m.received
    assert first > N * 8, f"the first render received {first} bytes for {N} points"
    m.page.get_by_role("button", name="Rerun").click()
    # the rerun's first frame (a busy machine); the assert below says what arrived
    wait_until(lambda: m.received != first, timeout=30, page=m.page, fail=False)
    m.settle(1.5)
    rerun = m.received - first
    assert 0 < rerun <= first * 0.01, f"rerun sent {rerun} bytes; first render {first}"


def test_reload_keeps_the_view(open_map, data):
    _, _, _, centres = data
    m = open_map()
    m.page.mouse.move(*m.screen_of(centres[1][0] + 1.0, centres[1][1] + 1.0))  # beside the label
    for _ in range(3):
        m.page.mouse.wheel(0, -300)
        m.page.wait_for_timeout(30)  # a wheel's pace: the zoom is the behaviour under test
    m.page.wait_for_function("() => window.location.search.includes('view=')", timeout=10_000)
    m.settle()
    zoomed = m.view()
    url = m.page.url
    m.page.goto(url)
    m.wait_ready()
    width = zoomed["x1"] - zoomed["x0"]

    def kept() -> bool:
        after = m.view()
        return all(abs(after[k] - zoomed[k]) <= width * 0.01 for k in ("x0", "x1", "y0", "y1"))

    wait_until(kept, timeout=10, page=m.page, fail=False)  # the saved view is applied once the map is drawn
    after = m.view()
    for k in ("x0", "x1", "y0", "y1"):
        assert abs(after[k] - zoomed[k]) <= width * 0.01, (zoomed, after)


@pytest.mark.parametrize(("n", "nan", "drawn"), [(0, 0, 0), (1, 0, 1), (1000, 10, 990)])
def test_small_and_nan_maps_draw_without_errors(open_map, n, nan, drawn):
    m = open_map(f"?n={n}&nan={nan}")
    assert m.attr("points") == str(drawn) and m.attr("rows") == str(n)
    assert m.attr("error") is None


# ---- overlays: density, neighbour lines; the PNG -----------------------------------------------------------
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]  # scatter_app's

# the largest alpha (0-255) of a canvas of the map within r canvas pixels of each data point [x, y]; the screen
# positions are taken in the same call, so a view that moves between calls cannot shift them
_ALPHA_NEAR = """([cls, pts, r]) => {
  const m = window.jointscopeScatter.get('map');
  const c = m.root.querySelector(`canvas.${cls}`);
  const k = c.width / c.clientWidth;
  const ctx = c.getContext('2d');
  return pts.map(([x, y]) => {
    const p = m.screenOfData(x, y);
    const d = ctx.getImageData(Math.round(p[0] * k) - r, Math.round(p[1] * k) - r, 2 * r + 1, 2 * r + 1).data;
    let a = 0;
    for (let i = 3; i < d.length; i += 4) a = Math.max(a, d[i]);
    return a;
  });
}"""
# how many pixels of a canvas of the map are not fully transparent
_PAINTED = """(cls) => {
  const c = window.jointscopeScatter.get('map').root.querySelector(`canvas.${cls}`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
  return n;
}"""


def alpha_near(m: MapPage, canvas: str, points, r: int = 1) -> list[int]:
    return m.page.evaluate(_ALPHA_NEAR, [canvas, [[float(a), float(b)] for a, b in points], r])


def painted(m: MapPage, canvas: str) -> int:
    return m.page.evaluate(_PAINTED, canvas)


def wait_painted(m: MapPage, canvas: str, timeout: float = 20) -> None:
    m.page.wait_for_function(f"() => ({_PAINTED})('{canvas}') > 0", timeout=timeout * 1000)


def overlays_drawn(m: MapPage) -> None:
    """Wait until the overlays were drawn at least once for the settled view (then an empty canvas means it)."""
    m.page.wait_for_selector(".js-scatter[data-labels-shown]", timeout=20_000)
    m.settle()
    m.page.wait_for_function("() => { const m = window.jointscopeScatter.get('map');"
                             " return !m.overlayQueued && m.root.dataset.lod !== '1'; }", timeout=10_000)
    wait_for_paint(m.page)


def nearest_row(x: np.ndarray, y: np.ndarray, at) -> int:
    return int(np.argmin((x - at[0]) ** 2 + (y - at[1]) ** 2))


# four spots at least 8 units (6.7 standard deviations) from every cluster centre: no point lands there
EMPTY = [(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)]


def test_density_layer_is_drawn_where_the_points_are(open_map, data):
    _, _, _, centres = data
    m = open_map("?thumbs=0")
    overlays_drawn(m)
    assert painted(m, "js-density") == 0, "no density layer unless one is passed"

    m = open_map("?thumbs=0&density=64")
    wait_painted(m, "js-density")
    overlays_drawn(m)
    at_centres = alpha_near(m, "js-density", centres)
    # 3 units (2.5 standard deviations) out from each centre, away from the circle's middle: sparser, not empty
    outward = alpha_near(m, "js-density", centres * 1.3)
    assert all(a > b > 0 for a, b in zip(at_centres, outward)), (at_centres, outward)
    assert alpha_near(m, "js-density", EMPTY, r=2) == [0] * len(EMPTY), "nothing drawn far from every point"


def test_neighbour_lines_are_drawn_between_their_points(open_map, data):
    x, y, _, centres = data
    # two parallel segments, 7 units apart: across the empty middle of the circle from cluster 0 to cluster 4,
    # and from cluster 1 to cluster 3
    pairs = [(nearest_row(x, y, centres[0]), nearest_row(x, y, centres[4])),
             (nearest_row(x, y, centres[1]), nearest_row(x, y, centres[3]))]
    m = open_map("?thumbs=0")
    overlays_drawn(m)
    assert painted(m, "js-overlay") == 0, "no lines (and no thumbnails, hover or selection): an empty overlay"

    m = open_map("?thumbs=0&lines=" + ",".join(f"{a}-{b}" for a, b in pairs))
    wait_painted(m, "js-overlay")
    overlays_drawn(m)
    ts = np.linspace(0.3, 0.7, 9)
    for a, b in pairs:
        pa, pb = np.array([x[a], y[a]]), np.array([x[b], y[b]])
        on = [pa + t * (pb - pa) for t in ts]
        assert min(alpha_near(m, "js-overlay", on)) > 100, f"the segment {a}-{b} is drawn all along"
        normal = np.array([-(pb - pa)[1], (pb - pa)[0]]) / np.linalg.norm(pb - pa)
        off = [p + 1.5 * normal for p in on] + [p - 1.5 * normal for p in on]  # ~30 px beside it
        assert max(alpha_near(m, "js-overlay", off)) == 0, "nothing beside the segment"
    # the two segments are all the overlay holds: about their length in pixels times the line's width
    length = sum(np.hypot(*np.subtract(m.screen_of(float(x[a]), float(y[a])), m.screen_of(float(x[b]), float(y[b]))))
                 for a, b in pairs)
    assert length < painted(m, "js-overlay") < 6 * length


def test_png_button_saves_the_map_as_drawn(open_map, data, tmp_path):
    from PIL import Image

    x, y, _, centres = data
    a, b = nearest_row(x, y, centres[0]), nearest_row(x, y, centres[4])
    m = open_map(f"?thumbs=0&lines={a}-{b}")
    wait_painted(m, "js-overlay")
    overlays_drawn(m)
    with m.page.expect_download() as download:
        m.page.get_by_role("button", name="PNG").click()
    assert download.value.suggested_filename == "map.png"
    path = tmp_path / "map.png"
    download.value.save_as(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        size = im.size
        rgb = np.asarray(im.convert("RGB")).astype(np.int16)
    w, h, dpr = m.page.evaluate("() => { const r = window.jointscopeScatter.get('map').root;"
                                " return [r.clientWidth, r.clientHeight, window.devicePixelRatio || 1]; }")
    assert size == (round(w * dpr), round(h * dpr))
    assert (rgb < 245).any(axis=2).mean() > 0.02, "not a blank image"
    ox, oy = m.origin()

    def around(px: float, py: float, r: int = 2) -> np.ndarray:
        """The PNG's pixels within r of page position (px, py): (k, 3)."""
        cx, cy = round((px - ox) * dpr), round((py - oy) * dpr)
        return rgb[cy - r: cy + r + 1, cx - r: cx + r + 1].reshape(-1, 3)

    for k, colour in enumerate(PALETTE):
        want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(rgb - want).max(axis=2) <= 12).sum()
        assert near > 100, f"cluster {k}'s colour {colour} is in the image ({near} pixels)"
        # inside the cluster (1 unit below its name, which is drawn at its centre), the cluster's own colour
        got = np.median(around(*m.screen_of(float(centres[k][0]), float(centres[k][1]) - 1.0)), axis=0)
        assert np.abs(got - want).max() <= 30, (k, colour, got)
    line = around(*m.screen_of(float(x[a] + x[b]) / 2, float(y[a] + y[b]) / 2)).max(axis=1).min()
    assert line < 150, f"the neighbour line crosses the empty middle of the map (darkest {line})"
    assert around(*m.screen_of(0.0, 2.0)).min() >= 245, "beside it the background is white"
