"""Charts of measures: the modality gap, text axes, the quality page's spectrum, histograms and recall, and
the concept explanations' weights, heatmaps and shares."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .maps import map_figure
from .style import PALETTE, plot_text


def gap_figure(gap: dict, *, height: int = 180):
    """Horizontal bars of a :func:`core.quality.modality_gap` result: mean cosine of true pairs, of
    random pairs and of the two modality centroids (None values are left out)."""
    import plotly.graph_objects as go

    a, b = gap.get("a", "image"), gap.get("b", "text")
    rows = [(f"true {a}–{b} pairs", gap.get("pair_cosine"), "#00CC96"),
            (f"random {a}–{b} pairs", gap.get("random_pair_cosine"), "#B0B0B0"),
            (f"{a} centroid vs {b} centroid", gap.get("centroid_cosine"), "#636EFA")]
    rows = [r for r in rows if r[1] is not None]
    fig = go.Figure(go.Bar(x=[r[1] for r in rows], y=[plot_text(r[0]) for r in rows], orientation="h",
                           marker_color=[r[2] for r in rows], text=[f"{r[1]:.3f}" for r in rows],
                           textposition="outside", hovertemplate="%{y}: %{x:.3f}<extra></extra>", cliponaxis=False))
    fig.update_layout(height=height, margin={"l": 8, "r": 40, "t": 24, "b": 8},
                      title={"text": "mean cosine", "x": 0, "font": {"size": 13}},
                      xaxis={"range": [min([0.0] + [r[1] for r in rows]), 1.0], "zeroline": True},
                      yaxis={"autorange": "reversed"}, plot_bgcolor="white", showlegend=False)
    return fig


def axes_figure(x: np.ndarray, y: np.ndarray, *, x_terms: tuple[str, str], y_terms: tuple[str, str],
                color=None, color_title: str = "", hover_text: Sequence[str] | None = None,
                customdata: Sequence[str] | None = None, height: int = 560, categorical: bool | None = None):
    """Items placed on two text-defined axes (Parallax-style; see :func:`core.search.text_axes`).

    ``x``, ``y``: (n,) cosines with the axes ``x_terms = (positive, negative)`` and ``y_terms``; each
    axis is titled "negative ← → positive" and keeps its ticks and zero line (the coordinates mean
    something, unlike a map's). ``color`` / ``hover_text`` / ``customdata`` as in :func:`map_figure`.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}")
    for name, pair in (("x_terms", x_terms), ("y_terms", y_terms)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name} must be (positive, negative); got {pair!r}")
    fig = map_figure(np.stack([x, y], axis=1), color=color, color_title=color_title, hover_text=hover_text,
                     customdata=customdata, height=height, categorical=categorical,
                     uirevision="axes-" + "|".join(map(str, (*x_terms, *y_terms))))

    def axis(pair) -> dict:
        pos, neg = (plot_text(t, limit=60) for t in pair)
        return {"title": {"text": f"{neg}  ←  →  {pos}"}, "showticklabels": True, "showgrid": True,
                "gridcolor": "#eeeeee", "zeroline": True, "zerolinecolor": "#999999", "showline": False}

    fig.update_layout(xaxis=axis(x_terms), yaxis=axis(y_terms), dragmode="zoom",
                      margin={"l": 56, "r": 8, "t": 36, "b": 48})
    return fig


# ---- quality (core.quality) ----------------------------------------------------------------------
def spectrum_figure(singular_values, *, rankme: float | None = None, max_rank: int | None = None,
                    height: int = 300, max_points: int = 1024):
    """The singular-value spectrum behind RankMe: each singular value's share of their sum (log scale)
    against its index, with the effective rank marked. ``singular_values``: (m,) descending."""
    import plotly.graph_objects as go

    s = np.asarray(singular_values, dtype=np.float64)[:max_points]
    share = s / s.sum() if s.sum() > 0 else s
    x = np.arange(1, len(share) + 1)
    fig = go.Figure(go.Scatter(x=x, y=np.maximum(share, 1e-12), mode="lines+markers", name="σ share",
                               marker={"size": 4, "color": PALETTE[0]}, line={"width": 1.5},
                               hovertemplate="σ%{x}: %{y:.4f} of the sum<extra></extra>"))
    title = "singular values (share of their sum)"
    if rankme is not None:
        title += f" · RankMe {rankme:.1f}" + (f" of max {max_rank}" if max_rank else "")
        fig.add_vline(x=float(rankme), line={"color": PALETTE[1], "dash": "dash", "width": 1.5},
                      annotation_text=f"RankMe {rankme:.1f}", annotation_position="top right")
    fig.update_layout(height=height, margin={"l": 8, "r": 8, "t": 36, "b": 8}, plot_bgcolor="white",
                      title={"text": plot_text(title), "x": 0, "font": {"size": 13}}, showlegend=False,
                      xaxis={"title": {"text": "index"}, "gridcolor": "#eeeeee"},
                      yaxis={"title": {"text": "share"}, "type": "log", "dtick": 1, "gridcolor": "#eeeeee"})
    return fig


def histogram_figure(values, *, x_title: str, title: str = "", threshold: float | None = None,
                     threshold_label: str = "", bin_size: float | None = None, nbins: int = 40,
                     log_y: bool = False, colour: str = PALETTE[0], height: int = 260, split=None,
                     split_names: tuple[str, str] = ("flagged", "others")):
    """A histogram of ``values`` (n,) (NaN left out), optionally with a dashed threshold line.

    ``split``: (n,) booleans drawing the True values as a second, red, stacked series (e.g. flagged
    items). ``bin_size``: fixed bin width (1 for counts such as N_k); else ``nbins`` bins."""
    import plotly.graph_objects as go

    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v)
    lo = float(v[ok].min()) if ok.any() else 0.0
    hi = float(v[ok].max()) if ok.any() else 1.0
    size = bin_size if bin_size else max((hi - lo) / max(nbins, 1), 1e-9)
    start = (math.floor(lo / bin_size) * bin_size - bin_size / 2) if bin_size else lo
    bins = {"start": start, "end": hi + size, "size": size}
    traces = []
    if split is not None:
        flag = np.asarray(split, dtype=bool)
        for mask, name, col in ((~flag & ok, split_names[1], colour), (flag & ok, split_names[0], PALETTE[1])):
            traces.append(go.Histogram(x=v[mask], xbins=bins, name=plot_text(f"{name} ({int(mask.sum())})"),
                                       marker_color=col, hovertemplate="%{x}: %{y}<extra></extra>"))
    else:
        traces.append(go.Histogram(x=v[ok], xbins=bins, marker_color=colour, name="items",
                                   hovertemplate="%{x}: %{y}<extra></extra>"))
    fig = go.Figure(traces)
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=float(threshold), line={"color": "#444444", "dash": "dash", "width": 1.5},
                      annotation_text=plot_text(threshold_label or f"{threshold:.2f}"),
                      annotation_position="top right")
    legend = split is not None  # the legend goes in a row of its own between the title and the plot
    fig.update_layout(height=height + (24 if legend else 0), barmode="stack", bargap=0.05,
                      margin={"l": 8, "r": 8, "t": 60 if legend else 36, "b": 8}, plot_bgcolor="white",
                      title={"text": plot_text(title), "x": 0, "y": 0.98, "yanchor": "top", "font": {"size": 13}},
                      showlegend=legend, legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right",
                                                 "yanchor": "bottom"},
                      xaxis={"title": {"text": plot_text(x_title)}, "gridcolor": "#eeeeee"},
                      yaxis={"title": {"text": "items"}, "gridcolor": "#eeeeee",
                             **({"type": "log", "dtick": 1} if log_y else {})})
    return fig


def recall_figure(retrieval: dict, *, height: int = 240):
    """Grouped bars of a :func:`core.quality.paired_retrieval` summary: recall@k image→text and text→image."""
    import plotly.graph_objects as go

    traces = []
    for key, name, col in (("image_to_text", "image → text", PALETTE[0]),
                           ("text_to_image", "text → image", PALETTE[2])):
        rec = retrieval.get(key) or {}
        if rec:
            traces.append(go.Bar(x=list(rec), y=[float(v) for v in rec.values()], name=name, marker_color=col,
                                 text=[f"{float(v):.2f}" for v in rec.values()], textposition="outside",
                                 cliponaxis=False, hovertemplate=f"{name} %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(height=height + 24, barmode="group", margin={"l": 8, "r": 8, "t": 60, "b": 8},
                      plot_bgcolor="white", title={"text": "paired retrieval", "x": 0, "y": 0.98, "yanchor": "top",
                                                   "font": {"size": 13}},
                      yaxis={"range": [0, 1.12], "title": {"text": "recall"}, "gridcolor": "#eeeeee"},
                      legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    return fig


# ---- concepts (PACE) ----------------------------------------------------------------------------
def theta_figure(theta: Sequence[float], labels: Sequence[str], *, highlight: int | None = None,
                 height: int | None = None):
    """Horizontal bars of one image's concept proportions θ (K,), labelled with the concepts' names.

    ``highlight`` (a concept index) is drawn in a stronger colour.
    """
    import plotly.graph_objects as go

    th = np.asarray(theta, dtype=float).ravel()
    if len(labels) != len(th):
        raise ValueError(f"labels must have one entry per concept ({len(th)}); got {len(labels)}")
    colours = [PALETTE[0] if highlight is None or k == highlight else "#9aa5f5" for k in range(len(th))]
    fig = go.Figure(go.Bar(x=th, y=[plot_text(s, 60) for s in labels], orientation="h", marker_color=colours,
                           text=[f"{v:.2f}" for v in th], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: θ = %{x:.3f}<extra></extra>"))
    fig.update_layout(height=height or max(160, 26 * len(th) + 50), margin={"l": 8, "r": 40, "t": 28, "b": 8},
                      title={"text": "concept proportions θ", "x": 0, "font": {"size": 13}},
                      xaxis={"range": [0, 1.05], "gridcolor": "#eeeeee"}, yaxis={"autorange": "reversed"},
                      plot_bgcolor="white", showlegend=False)
    return fig


def patch_heatmap_figure(image: np.ndarray, weights: np.ndarray, *, title: str = "", zmax: float = 1.0,
                         opacity: float = 0.55, colorscale: str = "Viridis", size: int = 220,
                         showscale: bool = False):
    """A patch-level map over an image: ``image`` (H, W, 3) uint8 under a translucent heat map of
    ``weights`` (gh, gw) (e.g. φ of one concept), each cell covering its patch."""
    import plotly.graph_objects as go

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3); got shape {img.shape}")
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights must be (rows, columns) over the patch grid; got shape {w.shape}")
    H, W = img.shape[:2]
    gh, gw = w.shape
    fig = go.Figure()
    fig.add_trace(go.Image(z=img, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(z=w, x0=W / gw / 2 - 0.5, dx=W / gw, y0=H / gh / 2 - 0.5, dy=H / gh, zmin=0.0,
                             zmax=zmax, colorscale=colorscale, opacity=opacity, showscale=showscale,
                             hovertemplate="patch row %{y:.0f}, col %{x:.0f}: %{z:.2f}<extra></extra>"))
    fig.update_layout(width=size, height=size + (24 if title else 0),
                      margin={"l": 0, "r": 0, "t": 24 if title else 0, "b": 0},
                      title={"text": plot_text(title, 60), "x": 0, "font": {"size": 12}} if title else None,
                      xaxis={"visible": False, "range": [-0.5, W - 0.5]},
                      yaxis={"visible": False, "range": [H - 0.5, -0.5], "scaleanchor": "x"})
    return fig


def concept_shares_figure(shares: Sequence[float], labels: Sequence[str], *, height: int | None = None):
    """Horizontal bars of each concept's share of the dataset (attention-weighted share of patches)."""
    import plotly.graph_objects as go

    s = np.asarray(shares, dtype=float).ravel()
    if len(labels) != len(s):
        raise ValueError(f"labels must have one entry per concept ({len(s)}); got {len(labels)}")
    fig = go.Figure(go.Bar(x=s, y=[plot_text(t, 60) for t in labels], orientation="h",
                           marker_color=[PALETTE[k % len(PALETTE)] for k in range(len(s))],
                           text=[f"{v:.0%}" for v in s], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:.1%} of the patches<extra></extra>"))
    fig.update_layout(height=height or max(160, 26 * len(s) + 50), margin={"l": 8, "r": 40, "t": 28, "b": 8},
                      title={"text": "share of the dataset", "x": 0, "font": {"size": 13}},
                      xaxis={"range": [0, max(float(s.max(initial=0)) * 1.2, 0.05)], "tickformat": ".0%",
                             "gridcolor": "#eeeeee"},
                      yaxis={"autorange": "reversed"}, plot_bgcolor="white", showlegend=False)
    return fig
