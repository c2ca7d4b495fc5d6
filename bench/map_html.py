"""The standalone HTML map (core.export.map_html, 2-D: the WebGL map inline) at 100k and 1M points; prints JSON.

For each N: a workspace of N text items (a caption of about 40 characters and a ``label`` column of 50
values; item rows only, no vectors) and a 2-D map of them in 50 Gaussian clusters, built as a
:class:`core.projection.MapResult` straight from synthetic coordinates (the projection is not what is
measured here; bench/million.py times maps of 1M items). Then ``map_html`` coloured by ``label``, written
to a file and opened from its file:// URL in Debian chromium (software WebGL, every other request aborted):

* ``export_s``: ``map_html`` in Python (the view, the payload, the hover texts), ``html_mb``: the file's size,
  ``captions``: whether every point's hover text is inlined (core.export.MAX_HTML_CAPTIONS);
* ``drawn_s``: from navigation until every point is drawn, on the page's clock (the component's
  ``data-t-drawn``); ``drawn_wall_s``: the same as Playwright saw it (polling);
* ``points``: what the page reports as drawn (must be N); ``csp_violations``: must be 0.

    python bench/map_html.py [--n 100000 1000000] [--save]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

CLUSTERS = 50
WORDS = ("red", "blue", "green", "small", "large", "round", "square", "bright", "dark", "striped")


def build(path: Path, n: int, seed: int = 0):
    """A workspace of ``n`` text items and a 2-D MapResult of them (synthetic coordinates in CLUSTERS
    Gaussian clusters, sorted ids as compute_map returns them)."""
    import pandas as pd

    import core
    from core.projection import MapResult

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLUSTERS, n)
    ids = np.array([f"t{i:08d}" for i in range(n)])
    words = np.array(WORDS)[rng.integers(0, len(WORDS), (n, 3))]
    text = [f"a {a} {b} {c} thing, number {i} of cluster {k}" for i, ((a, b, c), k) in enumerate(zip(words, labels))]
    ws = core.Workspace(path, create=True)
    ws.add_rows(pd.DataFrame({"id": ids, "modality": "text", "text": text, "source": "synthetic",
                              "label": [f"c{k}" for k in labels]}))
    centres = rng.normal(size=(CLUSTERS, 2)) * 10
    coords = (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32)
    res = MapResult(ids=ids, coords=coords, modality=np.full(n, "text"), trust=np.ones(n, np.float32),
                    trustworthiness=float("nan"), method="pca", dim=2, gap_corrected=False, params={}, seconds=0.0,
                    path=path / "synthetic.npz", cache="fit")
    return ws, res, np.array([f"c{k}" for k in labels])


def measure(n: int, tmp: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from core.export import MAX_HTML_CAPTIONS, map_html

    ws, res, label = build(tmp / f"ws{n}", n)
    t0 = time.perf_counter()
    page_html = map_html(ws, "synthetic", res, color=label, color_title="label")
    export_s = time.perf_counter() - t0
    out = tmp / f"map{n}.html"
    out.write_text(page_html, encoding="utf-8")
    doc = {"n": n, "export_s": round(export_s, 2), "html_mb": round(out.stat().st_size / 2**20, 1),
           "captions": n <= MAX_HTML_CAPTIONS}
    del page_html
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        left: list[str] = []
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                   else (left.append(r.request.url), r.abort()))
        page.add_init_script("window.__csp = 0; document.addEventListener('securitypolicyviolation', "
                             "() => { window.__csp += 1; });")
        t0 = time.perf_counter()
        page.goto(out.as_uri(), wait_until="commit")
        page.wait_for_selector(".js-scatter[data-ready='1']", timeout=600_000)
        wall = time.perf_counter() - t0
        ds = page.evaluate("() => ({...document.querySelector('.js-scatter').dataset, csp: window.__csp})")
        browser.close()
    doc.update({"drawn_s": round(int(ds["tDrawn"]) / 1000, 2), "drawn_wall_s": round(wall, 2),
                "points": int(ds["points"]), "csp_violations": ds["csp"], "requests_left": len(left)})
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--save", action="store_true", help="also write bench/results/map_html.json")
    args = ap.parse_args()
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform(), "browser": "Debian chromium, software WebGL"},
           "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            doc["runs"].append(measure(n, Path(tmp)))
    doc["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(doc, indent=1)
    print(text)
    if args.save:
        (ROOT / "bench" / "results" / "map_html.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
