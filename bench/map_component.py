"""The WebGL map component (pages/ui/scatter.py) vs lean Plotly scattergl in headless chromium; prints JSON.

Runs tests/e2e/scatter_app.py (synthetic points in 50 Gaussian clusters) on 127.0.0.1 and opens it in
Debian chromium (software WebGL), once with the component and once with ``?engine=plotly`` (the same
float32 columns in one go.Scattergl trace, no per-point text), and measures for each:

* ``first_render_s``: from navigation until all N points are drawn, on the page's clock (``*_wall_s``: as
  Playwright saw it, polling);
* ``bytes_per_point``: websocket bytes the browser received for the first run / N;
* ``pan_frame_p90_s``: p90 of the time between drawn frames while the map is dragged (component: its draw
  events during a mouse drag; Plotly: ``Plotly.relayout`` of a shifted range, drawn);
* ``lasso_s`` / ``lasso_up_bytes_per_point``: a lasso around ~200,000 points, from mouse-up until the Python
  run that holds the selection starts (wall clock of both; ``lasso_until_echo_shown_s``: until the page
  shows that run's echo), and the websocket bytes sent up per selected point;
* ``hover_caption_s``: the pointer moved onto five random points in turn; the time until each one's caption
  (computed in Python for that row) is shown (median and max);
* ``rerun_fraction``: websocket bytes received for a rerun that changes nothing (the Rerun button) / first run.

The server's points are computed once before anything is measured (the Map page draws a cached map); every
measured page is a fresh browser context. Then the component alone at ``--robust-n`` points (default
2,000,000): drawn without a page error.

    python bench/map_component.py [--n 1000000] [--robust-n 2000000] [--skip-plotly]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

APP = "tests/e2e/scatter_app.py"
CLUSTERS = 50
FLOORS = {"first_render_s": 5.0, "first_render_vs_plotly": 0.5, "bytes_per_point": 12, "pan_frame_p90_s": 0.6,
          "lasso_s": 2.0, "lasso_up_bytes_per_point": 8, "rerun_fraction": 0.01, "hover_caption_s": 0.5}


def synthetic(n: int, clusters: int):
    """The points of scatter_app.synthetic (same seed, same recipe)."""
    rng = np.random.default_rng(0)
    angle = np.linspace(0, 2 * np.pi, clusters, endpoint=False)
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 10
    codes = rng.integers(0, clusters, n)
    xy = centres[codes] + rng.normal(0, 1.2, (n, 2))
    return xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)


def start_server(n: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, JOINTSCOPE_SCATTER_N=str(n), JOINTSCOPE_SCATTER_CLUSTERS=str(CLUSTERS),
               PYTHONWARNINGS="ignore")
    log = open(log_path, "w+b")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.maxMessageSize", "1000"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(log.read().decode()[-3000:]) from None
            time.sleep(0.3)


class Traffic:
    """Websocket bytes received / sent by a page (CDP)."""

    def __init__(self, page):
        self.down = 0
        self.up = 0
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.webSocketFrameReceived", lambda e: self._add("down", e))
        cdp.on("Network.webSocketFrameSent", lambda e: self._add("up", e))

    def _add(self, way: str, event) -> None:
        r = event["response"]
        size = len(r["payloadData"]) * 3 // 4 if r.get("opcode") == 2 else len(r["payloadData"])  # base64
        setattr(self, way, getattr(self, way) + size)

    def settle(self, page, quiet: float = 1.5, limit: float = 60) -> None:
        end = time.monotonic() + limit
        last, since = (self.down, self.up), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < end:
            page.wait_for_timeout(100)
            if (self.down, self.up) != last:
                last, since = (self.down, self.up), time.monotonic()


def echo(page) -> dict:
    try:
        return json.loads(page.locator("code").last.text_content(timeout=2000))
    except Exception:  # noqa: BLE001 - no echo yet (the page still runs): read as empty
        return {}


def wait_selection(page, at_least: int, limit: float = 60) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if echo(page).get("selection", 0) >= at_least:
            return time.perf_counter() - t0
        page.wait_for_timeout(20)
    raise RuntimeError(f"the selection never reached Python (last echo {echo(page)})")


def rerun_cost(page, traffic: Traffic, first: int) -> dict:
    """Websocket bytes received for a rerun that changes nothing (the Rerun button), and their share of the
    first run's ``first`` bytes."""
    down_before = traffic.down
    page.get_by_role("button", name="Rerun").click()
    page.wait_for_timeout(1500)
    traffic.settle(page)
    got = traffic.down - down_before
    return {"rerun_bytes": got, "rerun_fraction": round(got / first, 5)}


def p90(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 90)) if values else float("nan")


def lasso_box(n: int) -> tuple[float, float, float, float]:
    """A data rectangle holding about 200,000 of the n points (an x band between two quantiles, all y)."""
    x, y = synthetic(n, CLUSTERS)
    share = min(1.0, 200_000 / n)
    lo, hi = np.quantile(x, [0.5 - share / 2, 0.5 + share / 2])
    return float(lo), float(hi), float(y.min()) - 1, float(y.max()) + 1


def warm_server(browser, base: str, n: int, timeout: float) -> None:
    """Open the page once and throw the browser context away: the server's cached points (the app's cached
    map) exist before anything is measured, and every measured page still starts with a cold browser."""
    page = browser.new_page()
    page.goto(base)
    page.wait_for_selector(f".js-scatter[data-ready='1'][data-points='{n}']", timeout=timeout * 1000)
    page.context.close()


def bench_component(browser, base: str, n: int, timeout: float, tool: str = "lasso") -> dict:
    out: dict = {"selection_tool": tool}
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    traffic = Traffic(page)
    t0 = time.perf_counter()
    page.goto(base)
    page.wait_for_selector(f".js-scatter[data-ready='1'][data-points='{n}']", timeout=timeout * 1000)
    out["first_render_wall_s"] = round(time.perf_counter() - t0, 2)  # includes Playwright's polling
    r = page.locator(".js-scatter")
    out["first_render_s"] = int(r.get_attribute("data-t-drawn")) / 1000  # the page's clock: navigation → drawn
    out["first_render_parts_s"] = {"data_arrived": int(r.get_attribute("data-t-data")) / 1000,
                                   "points_prepared": int(r.get_attribute("data-t-points")) / 1000,
                                   "drawn": int(r.get_attribute("data-t-drawn")) / 1000}
    traffic.settle(page)
    first = traffic.down
    out["first_run_bytes"] = first
    out["bytes_per_point"] = round(first / n, 2)

    # pan: drag the map; the intervals between the frames it draws meanwhile
    page.evaluate("""() => { const m = window.jointscopeScatter.get('map'); window.__frames = [];
      m.plot.subscribe('draw', () => window.__frames.push(performance.now())); }""")
    box = page.locator(".js-scatter canvas.js-gl").bounding_box()
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    page.mouse.move(cx, cy)
    page.mouse.down()
    start = page.evaluate("() => performance.now()")
    for i in range(1, 31):
        page.mouse.move(cx + 6 * i, cy + 3 * i)
        page.wait_for_timeout(30)
    page.mouse.up()
    page.wait_for_timeout(1500)
    frames = [f for f in page.evaluate("() => window.__frames") if f >= start]
    gaps = np.diff([start, *frames]) / 1000
    out["pan_frames"] = len(frames)
    out["pan_frame_p90_s"] = round(p90(list(gaps)), 3)
    traffic.settle(page)

    # lasso ~200k points: a rectangle drawn with the lasso tool
    x0, x1, y0, y1 = lasso_box(n)
    pts = page.evaluate("""([x0, x1, y0, y1]) => { const m = window.jointscopeScatter.get('map');
      const v = m.currentView();
      return [m.screenOfData(x0, Math.min(y1, v.y1)), m.screenOfData(x1, Math.max(y0, v.y0))]; }""",
                        [x0, x1, y0, y1])
    (ax, ay), (bx, by) = pts
    ox, oy = box["x"], box["y"]
    ay, by = max(ay, 2), min(by, box["height"] - 2)
    if tool == "lasso":  # freehand: the path is what the mouse events gave (a busy page coalesces them)
        corners = [(ox + ax, oy + ay), (ox + bx, oy + ay), (ox + bx, oy + by), (ox + ax, oy + by),
                   (ox + ax, oy + ay + 8)]
    else:  # box: the rectangle exactly (regl-scatterplot's lasso of its four corners)
        corners = [(ox + ax, oy + ay), (ox + bx, oy + by)]
    page.locator(f".js-scatter button[data-mode='{tool}']").click()
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (px0, py0), (px1, py1) in itertools.pairwise(corners):
        for i in range(1, 9):
            page.mouse.move(px0 + (px1 - px0) * i / 8, py0 + (py1 - py0) * i / 8)
            page.wait_for_timeout(12)
    up_before = traffic.up
    page.mouse.up()
    out["lasso_until_echo_shown_s"] = round(wait_selection(page, 1), 2)
    got = echo(page)
    selected = got["selection"]
    # mouse-up (browser, wall clock) → the start of the Python run that holds the selection
    up_at = int(r.get_attribute("data-pointer-up-at")) / 1000
    out["lasso_s"] = round(got["run_started"] - up_at, 2)
    out["lasso_browser_s"] = round(int(r.get_attribute("data-selection-sent-at")) / 1000 - up_at, 2)
    out["lasso_points"] = selected
    out["lasso_up_bytes_per_point"] = round((traffic.up - up_before) / max(selected, 1), 2)
    traffic.settle(page)
    page.locator(".js-scatter button[data-mode='pan']").click()

    # hover: the pointer rests on a point; the time until its caption (computed in Python for that row) shows
    hovers = []
    rng = np.random.default_rng(1)
    for row in rng.choice(n, 5, replace=False).tolist():
        xy = page.evaluate("(row) => window.jointscopeScatter.get('map').screenOfRow(row)", row)
        if not xy or not (5 < xy[0] < box["width"] - 5 and 5 < xy[1] < box["height"] - 5):
            continue
        page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
        t0 = page.evaluate("() => performance.now()")
        try:
            page.wait_for_function(
                "() => { const t = document.querySelector('.js-scatter .js-tip');"
                " return t && t.style.display === 'block' && t.textContent.startsWith('point '); }", timeout=10_000)
            shown = page.evaluate(
                "() => [performance.now(), document.querySelector('.js-scatter .js-tip').textContent]")
            hovers.append({"row": row, "s": round((shown[0] - t0) / 1000, 3), "caption": shown[1]})
        except Exception as err:  # noqa: BLE001 - recorded, not fatal
            hovers.append({"row": row, "error": str(err)[:120]})
        page.mouse.move(box["x"] + 3, box["y"] + 3)
        page.wait_for_timeout(400)
    times = [h["s"] for h in hovers if "s" in h]
    out["hover_caption_s"] = {"median": float(np.median(times)) if times else None,
                              "max": max(times) if times else None, "points": hovers}
    traffic.settle(page)

    # a rerun that changes nothing
    out.update(rerun_cost(page, traffic, first))
    out["page_errors"] = errors[:5]
    page.close()
    return out


PLOTLY_POINTS = """() => { const gd = document.querySelector('.js-plotly-plot');
  return gd && gd._fullData && gd._fullData[0] ? gd._fullData[0]._length || 0 : 0; }"""
PLOTLY_PAN = """async (dx) => { const gd = document.querySelector('.js-plotly-plot');
  const xr = gd._fullLayout.xaxis.range; const w = (xr[1] - xr[0]) * dx;
  const t0 = performance.now();
  await Plotly.relayout(gd, {'xaxis.range': [xr[0] + w, xr[1] + w]});
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0; }"""


def bench_plotly(browser, base: str, n: int, timeout: float) -> dict:
    out: dict = {}
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(timeout * 1000)  # a page busy with a million points answers late
    traffic = Traffic(page)
    t0 = time.perf_counter()
    page.goto(f"{base}/?engine=plotly")
    page.wait_for_function(f"() => ({PLOTLY_POINTS})() === {n} && (window.__drawnAt = window.__drawnAt || "
                           "performance.now())", polling=50, timeout=timeout * 1000)
    out["first_render_wall_s"] = round(time.perf_counter() - t0, 2)
    out["first_render_s"] = round(page.evaluate("() => window.__drawnAt") / 1000, 3)
    traffic.settle(page)
    first = traffic.down
    out["first_run_bytes"] = first
    out["bytes_per_point"] = round(first / n, 2)
    pans = [page.evaluate(PLOTLY_PAN, 0.02 * (1 if i % 2 else -1)) / 1000 for i in range(10)]
    out["pan_frame_p90_s"] = round(p90(pans), 3)
    # lasso (box select) of ~200k points
    x0, x1, _, _ = lasso_box(n)
    gd = page.locator(".js-plotly-plot").first
    drag = gd.locator(".nsewdrag").first.bounding_box()
    px = page.evaluate("""([x0, x1]) => { const gd = document.querySelector('.js-plotly-plot');
      const xa = gd._fullLayout.xaxis; return [xa.l2p(x0) + xa._offset, xa.l2p(x1) + xa._offset]; }""", [x0, x1])
    page.mouse.move(drag["x"] + drag["width"] / 2, drag["y"] + drag["height"] / 2)  # shows the modebar
    gd.locator('.modebar-btn[data-title="Box Select"]').click()
    sx0 = gd.bounding_box()["x"] + px[0]
    sx1 = gd.bounding_box()["x"] + px[1]
    page.mouse.move(sx0, drag["y"] + 2)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(sx0 + (sx1 - sx0) * i / 10, drag["y"] + 2 + (drag["height"] - 4) * i / 10)
        page.wait_for_timeout(20)
    up_before = traffic.up
    page.mouse.up()
    try:
        out["lasso_s"] = round(wait_selection(page, 1, limit=120), 2)
        selected = echo(page)["selection"]
        out["lasso_points"] = selected
        out["lasso_up_bytes_per_point"] = round((traffic.up - up_before) / max(selected, 1), 2)
    except RuntimeError as err:
        out["lasso_error"] = str(err)
    traffic.settle(page)
    out.update(rerun_cost(page, traffic, first))
    page.close()
    return out


def robust(browser, base: str, n: int, timeout: float) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    t0 = time.perf_counter()
    page.goto(f"{base}/?n={n}")
    page.wait_for_selector(f".js-scatter[data-ready='1'][data-points='{n}']", timeout=timeout * 1000)
    out = {"n": n, "first_render_s": round(time.perf_counter() - t0, 2), "page_errors": errors[:5]}
    page.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--robust-n", type=int, default=2_000_000)
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for the points")
    ap.add_argument("--skip-plotly", action="store_true")
    ap.add_argument("--tool", choices=("lasso", "box"), default="lasso",
                    help="the component's selection tool for the ~200,000-point selection")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    out: dict = {"n": args.n, "clusters": CLUSTERS, "browser": "headless chromium, software WebGL (SwiftShader)"}
    tmp = Path(tempfile.mkdtemp(prefix="jointscope-bench-component-"))
    proc, base = start_server(args.n, tmp / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            warm_server(browser, base, args.n, args.timeout)
            for name, run, wanted in (("component", bench_component, True),
                                      ("plotly_scattergl", bench_plotly, not args.skip_plotly),
                                      ("robust", robust, bool(args.robust_n))):
                if not wanted:
                    continue
                try:
                    size = args.robust_n if name == "robust" else args.n
                    out[name] = (run(browser, base, size, args.timeout, args.tool) if name == "component"
                                 else run(browser, base, size, args.timeout))
                except Exception as err:  # noqa: BLE001 - one failed part is reported, the others still run
                    out[name] = {"error": str(err).splitlines()[0]}
                print(f"{name}: {json.dumps(out[name])}", file=sys.stderr, flush=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    c = out["component"]
    plotly_s = out.get("plotly_scattergl", {}).get("first_render_s")
    ratio = c["first_render_s"] / plotly_s if plotly_s and "first_render_s" in c else None
    out["first_render_vs_plotly"] = round(ratio, 3) if ratio is not None else None
    checks = {k: c.get(k) for k in FLOORS if k in c}
    checks["first_render_vs_plotly"] = out["first_render_vs_plotly"]
    if isinstance(c.get("hover_caption_s"), dict):
        checks["hover_caption_s"] = c["hover_caption_s"]["max"]
    out["floors"] = FLOORS
    out["meets_floors"] = {k: (v is not None and v <= FLOORS[k]) for k, v in checks.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
