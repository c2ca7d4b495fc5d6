"""The Map page with 100k points in a real browser (the WebGL map); prints one JSON document.

Builds a workspace of N text items with precomputed 128-d vectors (50 clusters), computes its UMAP map
(timed; cached in the workspace like the app does), starts the app on 127.0.0.1 and opens the Map page
in Debian chromium (Playwright), then measures:

* ``first_render_s``: from navigation until the WebGL map (pages/ui/scatter.py) has drawn all N points, on
  a server just started (``second_visit_render_s``: the same for a new page on the warm server);
* ``zoom_ms``: median time of a zoom of the WebGL map (in and out by 2×, six times) until the new view is
  drawn and painted — interactivity;
* websocket bytes the browser received for the first page run vs a rerun that changes nothing on the
  map (pressing "r"): Streamlit sends unchanged large elements as a hash reference only.

    python bench/map_browser.py [--n 100000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import CHROMIUM, CHROMIUM_ARGS, MAP_POINTS_JS, free_port, map_view_js  # noqa: E402

# a zoom of the WebGL map by factor f around the view's centre: from the call until the map has drawn the
# new view (regl-scatterplot's next "draw") and the browser has painted it
ZOOM_JS = """async (f) => {
  const view = (""" + map_view_js("view") + """)();
  const v = view.currentView();
  const cx = (v.x0 + v.x1) / 2, cy = (v.y0 + v.y1) / 2, w = (v.x1 - v.x0) * f / 2, h = (v.y1 - v.y0) * f / 2;
  const t0 = performance.now();
  const drawn = new Promise((r) => view.plot.subscribe('draw', r, 1));
  view.applyView({x0: cx - w, x1: cx + w, y0: cy - h, y1: cy + h});
  await drawn;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}"""


def build_workspace(path: Path, n: int, seed: int = 0):
    import numpy as np

    import core
    from core.ingest import Candidate

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, 128)).astype(np.float32)
    labels = rng.integers(0, 50, n)
    X = centres[labels] + 0.6 * rng.normal(size=(n, 128)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ws = core.Workspace(path)
    cands = [Candidate(modality="text", source=f"row {i}", text=f"point {i} of cluster {labels[i]}",
                       meta={"cluster": f"c{labels[i]:02d}"}, vectors={"precomputed:vec": X[i]})
             for i in range(n)]
    ws.add_candidates(cands)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the points")
    args = ap.parse_args()

    from core.projection import compute_map

    out: dict = {"n": args.n}
    tmp = Path(tempfile.mkdtemp(prefix="jointscope-bench-browser-"))
    proc = None
    try:
        home = tmp / "home"
        t0 = time.perf_counter()
        ws = build_workspace(home / "big", args.n)
        out["build_workspace_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        res = compute_map(ws, "precomputed:vec")
        out["umap_first_map_s"] = round(time.perf_counter() - t0, 1)
        out["trustworthiness"] = round(res.trustworthiness, 4)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, JOINTSCOPE_HOME=str(home), JOINTSCOPE_AUTODEMO="0", PYTHONWARNINGS="ignore")
        log = open(tmp / "server.log", "w+b")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true",
                                 "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(log.read().decode()[-3000:]) from None
                time.sleep(0.3)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.set_default_timeout(args.timeout * 1000)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            received = {"bytes": 0}
            cdp.on("Network.webSocketFrameReceived",
                   lambda e: received.__setitem__("bytes", received["bytes"] + len(e["response"]["payloadData"])))
            t0 = time.perf_counter()
            page.goto(f"{base}/")
            try:
                page.wait_for_function(f"() => ({MAP_POINTS_JS})() === {args.n}", polling=200,
                                       timeout=args.timeout * 1000)
            except Exception:  # noqa: BLE001 - a timeout or a crashed page: both end in the report below
                shot = tmp.parent / "jointscope_map_browser_timeout.png"
                page.screenshot(path=str(shot), full_page=True)
                out.update(error="points not drawn in time", points_seen=page.evaluate(MAP_POINTS_JS),
                           screenshot=str(shot), page_text=page.inner_text("body")[-2000:])
                print(json.dumps(out, indent=1))
                raise SystemExit(1) from None
            out["first_render_s"] = round(time.perf_counter() - t0, 2)
            page.wait_for_timeout(3000)  # let the rest of the page arrive
            out["first_run_ws_bytes"] = received["bytes"]

            zooms = [page.evaluate(ZOOM_JS, f) for f in (0.5, 2.0, 0.5, 2.0, 0.5, 2.0)]
            out["zoom_ms_median"] = round(sorted(zooms)[len(zooms) // 2], 1)

            received["bytes"] = 0
            page.mouse.click(5, 5)  # focus the document (not a widget) so "r" reaches Streamlit
            page.keyboard.press("r")  # Streamlit: rerun the page
            page.wait_for_timeout(8000)
            out["rerun_ws_bytes"] = received["bytes"]
            out["rerun_vs_first_bytes"] = round(received["bytes"] / max(out["first_run_ws_bytes"], 1), 4)
            assert page.evaluate(MAP_POINTS_JS) == args.n
            # a second visit: a new browser page (a new session) on the warm server
            again = browser.new_page(viewport={"width": 1440, "height": 1200})
            t0 = time.perf_counter()
            again.goto(f"{base}/")
            again.wait_for_function(f"() => ({MAP_POINTS_JS})() === {args.n}", polling=200,
                                    timeout=args.timeout * 1000)
            out["second_visit_render_s"] = round(time.perf_counter() - t0, 2)
            again.close()
            page.screenshot(path=str(tmp.parent / "jointscope_map_100k.png"))
            browser.close()
        out["screenshot"] = str(tmp.parent / "jointscope_map_100k.png")
        print(json.dumps(out, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
