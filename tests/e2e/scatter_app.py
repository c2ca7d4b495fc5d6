"""A tiny Streamlit script for the WebGL map's browser tests and bench (not a page of the app).

It draws JOINTSCOPE_SCATTER_N synthetic points (default 200,000) in JOINTSCOPE_SCATTER_CLUSTERS Gaussian
clusters with :func:`pages.ui.scatter.scatter_map`, passes the returned selection back in as ``selected``,
keeps the view in the URL (``?view=x0,x1,y0,y1``, so a reload keeps it) and echoes the returned state as
text (inline code in st.markdown, which needs no syntax highlighter: the page loads what the Map page
loads) for the test to read. JOINTSCOPE_SCATTER_NAN=k gives the first k points NaN
coordinates; ?n= and ?nan= in the URL override both. ?engine=plotly draws the same points with lean Plotly
scattergl instead (the bench's baseline). Overlays, all off by default: ?density=W draws a W × W histogram of
the points as the density layer, ?lines=a-b,c-d draws segments between those row pairs (as the Map draws a
clicked point's true neighbours), and ?thumbs=0 leaves thumbnails out (they would cover the overlay canvas).
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import streamlit as st

STARTED = time.time()  # this run's start (the bench compares it with the browser's mouse-up)
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pages.ui.scatter import current_state, scatter_map  # noqa: E402

# sizes: the environment, or the URL (?n=…&nan=…) so that one server serves every test
N = int(st.query_params.get("n") or os.environ.get("JOINTSCOPE_SCATTER_N", "200000"))
CLUSTERS = int(os.environ.get("JOINTSCOPE_SCATTER_CLUSTERS", "8"))
NAN = int(st.query_params.get("nan") or os.environ.get("JOINTSCOPE_SCATTER_NAN", "0"))
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def synthetic(n: int, clusters: int, nan: int = 0):
    """(x, y float32 (n,), codes uint8 (n,), centres (clusters, 2)): n points around `clusters` centres on a
    circle of radius 10, seeded (tests/e2e/test_scatter_browser.py builds the same points to know the answers)."""
    rng = np.random.default_rng(0)
    angle = np.linspace(0, 2 * np.pi, clusters, endpoint=False)
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 10
    codes = rng.integers(0, clusters, n)
    xy = centres[codes] + rng.normal(0, 1.2, (n, 2))
    x, y = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    x[:nan] = np.nan
    return x, y, (codes % len(PALETTE)).astype(np.uint8), centres


points = st.cache_resource(synthetic)


@st.cache_data
def thumb(row: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 24), ((row * 37) % 256, (row * 91) % 256, 160)).save(buf, "PNG")
    import base64

    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def density_grid(x: np.ndarray, y: np.ndarray, bins: int):
    """(gx (bins,), gy (bins,), z (bins, bins)): the points' 2-D histogram over their finite extent, bin centres
    as the grid, row 0 of z the lowest y (what scatter_map's ``density`` takes)."""
    ok = np.isfinite(x) & np.isfinite(y)
    z, ex, ey = np.histogram2d(x[ok], y[ok], bins=bins)
    return (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2, z.T


def row_pairs(text: str) -> np.ndarray:
    """``"a-b,c-d"`` -> (m, 2) int rows."""
    return np.array([[int(v) for v in pair.split("-")] for pair in text.split(",") if pair], dtype=np.int64)


def thumbnails(view: dict) -> list[tuple[int, str]]:
    """The (row, image) pairs of the settled view: spread over it, one per 48-pixel cell, as the Map page does."""
    from core.mapview import THUMB_CELL_PX, spread_rows

    grid = (max(1, int(view["w"] // THUMB_CELL_PX)), max(1, int(view["h"] // THUMB_CELL_PX))) if "w" in view else None
    rows = spread_rows(x, y, (view["x0"], view["x1"], view["y0"], view["y1"]), limit=150, grid=grid,
                       per_cell=1 if grid else None)
    return [(int(r), thumb(int(r))) for r in rows]


x, y, codes, centres = points(N, CLUSTERS, NAN)
if st.query_params.get("engine") == "plotly":
    # the baseline of bench/map_component.py: lean Plotly scattergl (float32 columns, no per-point text)
    import plotly.graph_objects as go

    fig = go.Figure(go.Scattergl(x=x, y=y, mode="markers", hoverinfo="none",
                                 marker={"color": codes, "colorscale": "Turbo", "size": 2}))
    fig.update_layout(height=600, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode="pan")
    event = st.plotly_chart(fig, key="plotly", on_select="rerun", selection_mode=("box", "lasso"))
    rows = event.selection.point_indices if event and event.selection else []
    st.markdown(f"`{json.dumps({'selection': len(rows)})}`")
    st.button("Rerun")
    st.stop()
qp = st.query_params.get("view")
view = None
if qp:
    vals = [float(v) for v in qp.split(",")]
    view = dict(zip(("x0", "x1", "y0", "y1"), vals))
labels = [{"name": f"cluster {k}", "x": float(c[0]), "y": float(c[1]), "cluster": k} for k, c in enumerate(centres)]
now = current_state("map", N)  # what the browser reported in this run: drawn back in this run (as the Map page does)
sel = now["selection"]
view = now["view"] or view  # the view it reports; the URL's only on a reload (a stale one would move the camera back)
state = scatter_map(key="map", x=x, y=y, codes=codes, palette=PALETTE[:max(1, min(CLUSTERS, len(PALETTE)))],
                    categories=[f"cluster {k}" for k in range(CLUSTERS)], labels=labels,
                    selected=sel if len(sel) else None, view=view,
                    lines=row_pairs(st.query_params["lines"]) if st.query_params.get("lines") else None,
                    density=density_grid(x, y, int(st.query_params["density"])) if st.query_params.get("density")
                    else None,
                    hover_text=lambda r: f"point {r} of cluster {int(codes[r])}",
                    thumbnails=None if st.query_params.get("thumbs") == "0" else thumbnails,
                    data_version=f"demo-{N}-{CLUSTERS}-{NAN}", height=600)
if state["view"]:
    v = state["view"]
    st.query_params["view"] = ",".join(f"{v[k]:.6g}" for k in ("x0", "x1", "y0", "y1"))
if state["label_click"] is not None and state["label_click"] != st.session_state.get("label_click"):  # a new click
    st.session_state["label_click"] = state["label_click"]
    st.session_state["last_label"] = state["label_clicked"]
echo = {"last_label": st.session_state.get("last_label"), "selection": len(state["selection"]),
        "hovered": state["hovered"], "view": state["view"],
        "label_clicked": state["label_clicked"], "clicked": state["clicked"],
        "first_rows": [int(r) for r in state["selection"][:5]], "run_started": STARTED}
st.markdown(f"`{json.dumps(echo)}`")
st.button("Rerun")
