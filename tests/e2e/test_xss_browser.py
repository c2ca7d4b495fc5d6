"""No user text runs as script or renders as HTML/Markdown, on every page, in a real browser.

One server for the module, on a small workspace (12 generated demo-world images + captions, plus images
whose archive paths and captions are XSS / Markdown payloads, a metadata column holding payloads and
one whose *name* is a payload), embedded with the bundled `demo` model. The test walks Data, Map,
Search, Analogies, Quality and Concepts the way a user does — the tables, galleries and captions, map
hover labels and legend, a box selection, search results, analogy terms and results, concept images —
and after each page checks that no payload ran (``window.__xss`` stays undefined), that no element came
from a payload (``img[src=x]``, ``javascript:`` links, ``svg[onload]``, iframes, Markdown bold/links) and
that the payloads are shown literally as text. On a failure it leaves a screenshot of the step in
pytest's temporary folder.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import pytest

import core

from helpers import MAP_ROW_XY_JS, box_select, e2e_marks, wait_for_app_idle

pytestmark = e2e_marks()

# Each payload, if it ever ran, would set window.__xss; Markdown ones would become <strong>/<a>/<img>.
PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    "[click me](javascript:window.__xss=3)",
    "**bold** _slanted_ <b>tagged</b>",
    '<svg onload="window.__xss=5"></svg>',
    '![pic](x" onerror="window.__xss=6)',
    '<a href="javascript:window.__xss=7">link</a>',
    ':red[red] $x^2$ <iframe src="javascript:window.__xss=8"></iframe>',
]
PAYLOAD_COLUMN = '<img src=x onerror="window.__xss=9">'  # a metadata column whose name is a payload
# a broken upload, listed in the error table (no '"': browsers send it as %22 in a file name)
UPLOAD_NAME = "<img src=x onerror=window.__xss=10>.png"
# payload fragments whose literal text must be visible somewhere on a page that shows captions
LITERALS = ["onerror=", "<script>", "javascript:", "**bold**", "<svg"]

CHECK_JS = """() => {
  const bad = [];
  if (window.__xss !== undefined) bad.push('window.__xss=' + window.__xss);
  for (const sel of ['img[src="x"]', 'a[href^="javascript:" i]', 'iframe', 'svg[onload]', '[onerror]']) {
    const n = document.querySelectorAll(sel).length;
    if (n) bad.push(sel + ' x' + n);
  }
  for (const el of document.querySelectorAll('strong, b, em, i, a')) {
    if (/^(bold|slanted|tagged|click me|link|pic)$/.test(el.textContent.trim())) bad.push(el.outerHTML.slice(0, 80));
  }
  for (const s of document.scripts) if (/__xss/.test(s.textContent)) bad.push('script ' + s.textContent.slice(0, 40));
  return bad;
}"""


def _png(colour) -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (64, 64), (235, 235, 230))
    ImageDraw.Draw(im).rectangle((12, 12, 52, 52), fill=colour)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def build_payload_workspace(path: Path) -> core.Workspace:
    """12 demo-world pairs + one image per payload (its archive path and its caption are the payload)."""
    from core.demo.workspace import create_demo_workspace

    ws = create_demo_workspace(path, n=12)
    src = path.parent / "payload_src"
    src.mkdir()
    buf = io.BytesIO()
    colours = [(200, 30, 30), (30, 160, 60), (40, 60, 210), (220, 180, 20), (150, 40, 170), (20, 170, 170),
               (240, 120, 20), (90, 90, 90)]
    with zipfile.ZipFile(buf, "w") as zf:
        for p, colour in zip(PAYLOADS, colours):
            zf.writestr(f"{p}.png", _png(colour))
    (src / "payloads.zip").write_bytes(buf.getvalue())
    rows = io.StringIO()
    w = csv.writer(rows, lineterminator="\n")
    w.writerow(["filepath", "caption", "note", PAYLOAD_COLUMN])
    for p in PAYLOADS:
        w.writerow([f"{p}.png", p, p, p])
    (src / "payload_captions.csv").write_text(rows.getvalue(), encoding="utf-8")
    report = ws.ingest([src / "payloads.zip", src / "payload_captions.csv"])
    assert report.errors == [] and report.added == 2 * len(PAYLOADS), report
    ws.embed("demo")
    items = ws.items
    assert items["pair"].notna().sum() >= 2 * len(PAYLOADS)
    assert set(PAYLOADS) <= set(items["text"]) and set(PAYLOADS) <= set(items["note"])
    return ws


@pytest.fixture(scope="module")
def xss_server(tmp_path_factory, serve_home):
    """One server for the module; its only workspace ('xss') opens on first start."""
    home = tmp_path_factory.mktemp("xss_home")
    build_payload_workspace(home / "xss")
    with serve_home(home, tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base, home


def _check(page, shots: Path, name: str, *, literal: bool = True) -> None:
    """Nothing ran or became an element; the payloads show as text (``literal``)."""
    wait_for_app_idle(page)  # the run is over, every image loaded or failed: onerror/onload fired if injected
    bad = page.evaluate(CHECK_JS)
    shown = [s for s in LITERALS if s in page.evaluate("() => document.body.textContent")]
    problems = bad + ([f"payloads not shown as text (found {shown})"] if literal and len(shown) < 3 else [])
    problems += ["exception box"] if page.get_by_test_id("stException").count() else []
    if problems:
        page.screenshot(path=str(shots / f"xss_{name}.png"), full_page=True)
    assert not problems, f"{name}: {problems} (screenshot {shots / f'xss_{name}.png'})"


# pixel position (in the plot div) of the first map point whose hover text holds ``needle``
def _hover_payload_point(page, home: Path, needle: str) -> str:
    """Hover the mouse over a map point whose hover text holds a payload; returns the map's hover caption."""
    from playwright.sync_api import expect

    from core.mapview import MapParams, build_view

    ws = core.Workspace(home / "xss", create=False)
    model = next(iter(ws.models_with_vectors()))
    res = core.compute_map(ws, model, max_points=50_000)  # the Map page's saved map (read back, not refitted)
    view = build_view(ws, model, MapParams(names="off"), res=res)
    row = next((r for r in range(view.n) if needle in view.hover_text(r)), None)
    assert row is not None, f"no map point has {needle!r} in its hover text"
    tip = page.locator(".js-scatter .js-tip")
    for dx, dy in ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)):
        xy = page.evaluate(MAP_ROW_XY_JS, row)
        assert xy is not None, f"row {row} is not drawn"
        page.mouse.move(xy[0] + dx, xy[1] + dy)
        try:
            expect(tip).to_be_visible(timeout=5_000)
            return tip.text_content()
        except AssertionError:
            continue
    return ""


def test_no_payload_runs_on_any_page(xss_server, browser, tmp_path):
    from playwright.sync_api import expect

    base, home = xss_server
    page = browser.new_page(viewport={"width": 1440, "height": 1500})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    sidebar = page.get_by_test_id("stSidebar")
    checks = []
    try:
        # ---- Data: items table (captions, sources, metadata, the payload column), error table, filter
        page.goto(f"{base}/data")
        expect(page.get_by_role("heading", name="Data")).to_be_visible(timeout=120_000)
        expect(page.get_by_text(re.compile(r"^Workspace xss: \d+ items"))).to_be_visible()
        broken = tmp_path / UPLOAD_NAME
        broken.write_bytes(b"not an image")
        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(broken))
        expect(page.get_by_test_id("stFileChipDeleteBtn")).to_have_count(1)
        page.get_by_role("button", name="Import", exact=True).click()
        expect(page.get_by_text("Import: 0 added, 0 skipped, 1 could not be read")
               ).to_be_visible()
        errors = page.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="reason")).first
        expect(errors.locator("td").filter(has_text=UPLOAD_NAME)).to_have_count(1)
        box = page.get_by_label("Filter by text, source or id")
        box.fill("window.__xss")
        box.press("Enter")
        n_match = 2 * sum("window.__xss" in p for p in PAYLOADS)  # the caption and the image's file name
        expect(page.get_by_text(f"Showing all {n_match} rows")).to_be_visible()
        _check(page, tmp_path, "data")
        checks.append("data")

        # ---- Map: legend of a payload metadata column, hover labels, side gallery captions, box selection
        sidebar.get_by_role("link", name="Map").click()
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="trustworthiness")).to_be_visible()
        # the run is over once the cluster table under the map is drawn (a click during the run is lost)
        expect(page.get_by_text(re.compile(r"^Named clusters \("))).to_be_visible()
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Colour by", exact=True)).click()
        expect(page.get_by_role("option", name=PAYLOAD_COLUMN, exact=True)).to_be_visible()  # a column name
        _check(page, tmp_path, "map_options", literal=False)
        page.get_by_role("option", name="note", exact=True).click()
        legend = page.locator(".js-scatter .js-legend")
        expect(legend).to_contain_text("<script>")  # a payload value, as text in the map's legend
        expect(page.get_by_text("Images on this map")).to_be_visible()
        page.evaluate("document.querySelector('.js-scatter').scrollIntoView({block: 'center'})")
        hover = _hover_payload_point(page, home, "onerror=")
        assert "onerror=" in hover, f"hover label: {hover!r}"  # shown literally, as text
        _check(page, tmp_path, "map_hover")
        box_select(page, margin=0.02)
        expect(page.get_by_role("heading", name="Selection")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="caption / text"))
               ).to_have_count(1)
        _check(page, tmp_path, "map")
        checks.append("map")

        # ---- Search: a payload as the query; result cards with payload captions, as images and as texts
        sidebar.get_by_role("link", name="Search").click()
        query = page.get_by_label("Query")
        expect(query).to_be_visible()
        query.fill(PAYLOADS[0])
        query.press("Enter")
        expect(page.get_by_text(re.compile(r"nearest images to"))).to_be_visible()
        _check(page, tmp_path, "search_images", literal=False)  # which images come first depends on the model
        page.get_by_test_id("stRadio").filter(has_text="Results").get_by_text("texts", exact=True).click()
        expect(page.get_by_text(re.compile(r"nearest texts to"))).to_be_visible()
        _check(page, tmp_path, "search")
        checks.append("search")

        # ---- Analogies: payloads as typed terms (shown in the terms row) and in the result cards
        sidebar.get_by_role("link", name="Analogies").click()
        plus = page.get_by_label("+ terms to add, one per line")
        expect(plus).to_be_visible()
        plus.fill(PAYLOADS[1] + "\n" + PAYLOADS[2])
        page.get_by_label("− terms to subtract, one per line").fill(PAYLOADS[3])
        page.get_by_text("Results (k)").click()  # leave the text areas so they send their values
        expect(page.get_by_text(re.compile(r"^Analogy · "))).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Baseline · nearest neighbours of"))).to_be_visible()
        _check(page, tmp_path, "analogies")
        checks.append("analogies")

        # ---- Quality: galleries of noisy pairs / hubs / outliers with captions, item tables
        sidebar.get_by_role("link", name="Quality").click()
        expect(page.get_by_role("heading", name="Flagged items")).to_be_visible()
        for tab in page.get_by_role("tab").all():
            tab.click()
            wait_for_app_idle(page)  # the tab's tables and images drawn
        _check(page, tmp_path, "quality", literal=False)  # what is flagged depends on the model; no payload may run
        checks.append("quality")

        # ---- Concepts: find concepts; image captions are the payload file names
        sidebar.get_by_role("link", name="Concepts").click()
        page.get_by_test_id("stSlider").filter(has_text="Concepts (K)").wait_for()
        page.get_by_role("button", name="Find concepts").click()
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="faithfulness")).to_be_visible(timeout=120_000)
        pick = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Image", exact=True))
        pick.click()
        page.keyboard.type("onerror=")  # the option list is virtualised: search it
        page.get_by_role("option").filter(has_text="onerror=").first.click()
        expect(page.get_by_test_id("stImageCaption").filter(has_text="onerror=").first).to_be_visible()
        _check(page, tmp_path, "concepts", literal=False)
        checks.append("concepts")
    finally:
        page.close()
    assert checks == ["data", "map", "search", "analogies", "quality", "concepts"]
