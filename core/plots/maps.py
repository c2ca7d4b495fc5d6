"""Map figures: :func:`map_figure` (a scatter map of 2-D or 3-D coordinates with its layers: density contours,
pair lines, true neighbours, selection rings, cluster names) and the layers the WebGL maps share
(:func:`density_grid`, :func:`density_layer`, :func:`label_layer`)."""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .style import (
    MAX_CATEGORIES,
    MISSING,
    OTHER_COLOUR,
    PALETTE,
    category_codes,
    is_categorical,
    is_colour_name,
    plot_text,
)

UNSELECTED_COLOUR = "#cfcfcf"  # points outside the selection
NEIGHBOUR_COLOUR = "rgba(20, 20, 20, 0.8)"  # lines from a point to its true neighbours
DENSITY_SCALE = [[0.0, "rgba(255,255,255,0)"], [1.0, "rgba(90,110,160,0.35)"]]
DENSITY_LINE = "rgba(90,110,160,0.45)"
PAIR_COLOUR = "rgba(90, 90, 90, 0.35)"
NAMED_OUTLINE = {"width": 0.6, "color": "rgba(60, 60, 60, 0.7)"}  # keeps "white" or "yellow" points visible
MAX_RINGED = 20  # a selection of at most this many points is ringed, so a lone point is seen at once
RING = {"size": 18.0, "width": 2.5, "color": "rgba(20, 20, 20, 0.9)"}  # open circle around a selected point
UIREVISION = "jointscope-map"


def marker_size(n: int, dim: int = 2) -> float:
    """Point size that keeps 100 points readable and 100k points from becoming one blob."""
    base = 9.0 - 1.5 * math.log10(max(n, 1))  # 100 -> 6, 10k -> 3, 100k -> 1.5
    return round(max(base, 2.0) * (0.7 if dim == 3 else 1.0), 2)


def _axis(dim: int = 2) -> dict:
    if dim == 3:  # plotly names empty 3-D axis titles x/y/z; the axes have no units to show anyway
        return {"visible": False}
    # not visible at all: no tick marks either, whatever the traces (a density contour) or the theme ask
    return {"visible": False, "showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False,
            "title": {"text": ""}, "showline": False}


@dataclass(frozen=True)
class _Points:
    """What every point trace of one map shares: ``coords`` (n, dim) float32, escaped hover ``text`` and item
    ``ids`` ((n,) object arrays or None), the trace type (``Scattergl`` / ``Scatter3d``), marker size and
    opacity and the hover template's start."""

    coords: np.ndarray
    dim: int
    text: np.ndarray | None
    ids: np.ndarray | None
    trace: type
    size: float
    opacity: float
    base_hover: str

    def rows(self, rows: np.ndarray) -> dict:
        """``x, y`` (``z``), ``text`` and ``customdata`` of the points at ``rows`` (the ones there are)."""
        out = {"x": self.coords[rows, 0], "y": self.coords[rows, 1]}
        if self.dim == 3:
            out["z"] = self.coords[rows, 2]
        if self.text is not None:
            out["text"] = self.text[rows]
        if self.ids is not None:
            out["customdata"] = self.ids[rows]
        return out


def _check_map_inputs(coords, dim: int, **per_point) -> np.ndarray:
    """``coords`` as a float32 (n, >= dim) array, after checking ``dim`` and that every array of ``per_point``
    (None or one entry per point) has n entries; raises ``ValueError`` naming the argument."""
    coords = np.asarray(coords, dtype=np.float32)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3; got {dim!r}")
    if coords.ndim != 2 or coords.shape[1] < dim:
        raise ValueError(f"coords must be (n, {dim}); got shape {coords.shape}")
    n = len(coords)
    for name, arr in per_point.items():
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} must have one entry per point ({n}); got {len(arr)}")
    return coords


def _underlays(pts: _Points, *, density: bool, pair_segments: np.ndarray | None) -> list:
    """The traces drawn below the points: density contours (2-D, at least 3 points) and one trace of thin lines
    joining the pairs ``pair_segments`` (p, 2) rows."""
    import plotly.graph_objects as go

    coords, dim, traces = pts.coords, pts.dim, []
    if density and dim == 2 and len(coords) >= 3:
        gx, gy, z = density_grid(coords[:, :2])
        traces.append(go.Contour(x=gx, y=gy, z=z, name="density", showscale=False, hoverinfo="skip",
                                 ncontours=8, colorscale=DENSITY_SCALE, line={"width": 0.6, "color": DENSITY_LINE},
                                 contours={"coloring": "fill", "start": float(z.max()) * 0.08,
                                           "end": float(z.max()), "showlines": True}))
    if pair_segments is not None and len(pair_segments):
        seg = np.asarray(pair_segments, dtype=np.int64)
        line_pts = np.full((len(seg) * 3, dim), np.nan, dtype=np.float32)
        line_pts[0::3] = coords[seg[:, 0], :dim]
        line_pts[1::3] = coords[seg[:, 1], :dim]
        line = {"x": line_pts[:, 0], "y": line_pts[:, 1]} | ({"z": line_pts[:, 2]} if dim == 3 else {})
        traces.append(pts.trace(**line, mode="lines", name=f"pairs ({len(seg)})", hoverinfo="skip",
                                line={"color": PAIR_COLOUR, "width": 1}, connectgaps=False))
    return traces


def _category_traces(pts: _Points, codes: np.ndarray, order: list[str], colours: Sequence[str]) -> list:
    """One point trace (and legend entry) per category of ``order`` that has points; ``codes`` (n,) int index
    ``order`` and ``colours``. Points named by a colour word get an outline."""
    traces = []
    for j, cat in enumerate(order):
        rows = np.flatnonzero(codes == j)
        if not len(rows):
            continue
        marker = {"size": pts.size, "color": colours[j], "opacity": pts.opacity}
        if is_colour_name(cat):
            marker["line"] = NAMED_OUTLINE
        name = plot_text(cat, limit=60)
        traces.append(pts.trace(**pts.rows(rows), mode="markers", name=f"{name} ({len(rows)})", legendgroup=name,
                                marker=marker, hovertemplate=pts.base_hover + f"<extra>{name}</extra>"))
    return traces


def _value_traces(pts: _Points, color, *, color_title: str, colorscale: str,
                  color_range: tuple[float, float] | None) -> list:
    """The points coloured by number: one trace on ``colorscale`` over ``color_range`` (default: the finite
    values' range) with a colour bar, and one grey trace of the points without a number."""
    values = pd.to_numeric(pd.Series(color), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values)
    lo, hi = color_range if color_range else ((float(values[ok].min()), float(values[ok].max()))
                                              if ok.any() else (0.0, 1.0))
    title = plot_text(color_title, limit=40)
    rows = np.flatnonzero(ok)
    traces = [pts.trace(**pts.rows(rows), mode="markers", name=title or "value", showlegend=False,
                        marker={"size": pts.size, "color": values[rows].astype(np.float32),
                                "colorscale": colorscale, "cmin": lo, "cmax": hi, "opacity": pts.opacity,
                                "colorbar": {"title": {"text": title}, "thickness": 12, "len": 0.6}},
                        hovertemplate=pts.base_hover + f"<br>{title}: %{{marker.color:.3f}}<extra></extra>")]
    if (~ok).any():
        rows = np.flatnonzero(~ok)
        traces.append(pts.trace(**pts.rows(rows), mode="markers", name=f"{MISSING} ({len(rows)})",
                                marker={"size": pts.size, "color": OTHER_COLOUR, "opacity": pts.opacity},
                                hovertemplate=pts.base_hover + f"<extra>{MISSING}</extra>"))
    return traces


def _neighbour_lines(pts: _Points, neighbours: tuple[int, Sequence[int]]):
    """Lines from the point at ``neighbours[0]`` to the points at ``neighbours[1]`` (2-D)."""
    row, rows = int(neighbours[0]), np.asarray(neighbours[1], dtype=np.int64)
    line_pts = np.full((len(rows) * 3, 2), np.nan, dtype=np.float32)
    line_pts[0::3] = pts.coords[row, :2]
    line_pts[1::3] = pts.coords[rows, :2]
    return pts.trace(x=line_pts[:, 0], y=line_pts[:, 1], mode="lines", name=f"true neighbours ({len(rows)})",
                     hoverinfo="skip", line={"color": NEIGHBOUR_COLOUR, "width": 1.6}, connectgaps=False)


def _map_layout(fig, coords: np.ndarray, *, dim: int, height: int, uirevision: str, legend_title: str,
                notes: list, thumbs, thumb_size: float) -> None:
    """Size, legend, hidden axes, drag and click modes, cluster-name annotations ``notes`` and, in 2-D, the
    thumbnails ``thumbs`` ((x, y, data URI), each ``thumb_size`` of the span) of a map figure."""
    fig.update_layout(
        height=height, uirevision=uirevision,
        margin={"l": 8, "r": 8, "t": 36, "b": 8},  # the top margin keeps the toolbar off the legend
        legend={"title": {"text": legend_title}, "itemsizing": "constant", "orientation": "v",
                "bgcolor": "rgba(255,255,255,0.6)"},
        hoverlabel={"align": "left"}, plot_bgcolor="white",
    )
    if dim == 2:
        # map axes have no units: fill the box. Dragging pans, so that a click selects the point (or the
        # name) under it: Streamlit turns click selection off while the lasso or box tool is active
        fig.update_layout(xaxis=_axis(), yaxis=_axis(), dragmode="pan", clickmode="event+select", annotations=notes)
        if thumbs and len(coords):
            span = float(max(np.ptp(coords[:, 0]), np.ptp(coords[:, 1]), 1e-6))
            s = thumb_size * span
            fig.update_layout(images=[{"source": uri, "x": float(x), "y": float(y), "xref": "x", "yref": "y",
                                       "sizex": s, "sizey": s, "xanchor": "center", "yanchor": "middle",
                                       "layer": "above", "sizing": "contain"} for x, y, uri in thumbs])
    else:
        fig.update_layout(scene={"xaxis": _axis(3), "yaxis": _axis(3), "zaxis": _axis(3), "aspectmode": "data",
                                 "uirevision": uirevision, "annotations": notes})


def map_figure(coords: np.ndarray, *, color=None, color_title: str = "", hover_text: Sequence[str] | None = None,
               customdata: Sequence[str] | None = None, dim: int = 2, pair_segments: np.ndarray | None = None,
               thumbs: Sequence[tuple[float, float, str]] | None = None, height: int = 640,
               colorscale: str = "Viridis", color_range: tuple[float, float] | None = None,
               categorical: bool | None = None, max_categories: int = MAX_CATEGORIES,
               uirevision: str = UIREVISION, thumb_size: float = 0.05, selected: Collection[str] | None = None,
               density: bool = False, neighbours: tuple[int, Sequence[int]] | None = None,
               labels: Sequence[dict] | None = None, categories: Sequence[str] | None = None,
               palette: Sequence[str] | None = None):
    """A scatter map of ``coords`` (n, dim) float: WebGL ``Scattergl`` in 2-D, ``Scatter3d`` in 3-D.

    color: (n,) categories (one trace and legend entry per category, see :func:`categories`) or
        numbers (one trace with a continuous ``colorscale`` and colour bar; NaN is drawn grey);
        None: one colour. With ``categories`` (and ``palette``, one colour per category; default
        :func:`category_codes`' colours), ``color`` holds integer codes into ``categories`` instead
        (:class:`core.mapview.MapView` gives them).
    hover_text: (n,) plain strings shown on hover ("\\n" breaks lines; escaped, never HTML).
    customdata: (n,) item ids, carried by every point (selection events report them).
    pair_segments: (p, 2) row positions of pairs joined by thin lines (one trace, drawn below points).
    thumbs: (x, y, data URI) of images drawn on the map (2-D only), each ``thumb_size`` of the span.
    uirevision: keep the user's zoom and drag mode while this string stays the same.
    selected: item ids (``customdata``) drawn as selected (2-D); the other points turn grey, as they do
        while the user lassos points. None or empty: no selection.
    density: density contours of the points drawn under them (2-D; see :func:`density_grid`).
    neighbours: ``(row, rows)``: lines from the point at ``row`` to the points at ``rows`` (its true
        neighbours, see :func:`core.projection.true_neighbours`), drawn over the points (2-D).
    labels: named clusters (:func:`core.labels.map_labels` dicts: ``name``, ``n``, ``x``, ``y`` (``z``),
        ``cluster``, ``score``, ``runner_up``, ``runner_up_score``) drawn at their centres; see :func:`label_layer`.
    """
    import plotly.graph_objects as go

    coords = _check_map_inputs(coords, dim, color=color, hover_text=hover_text, customdata=customdata)
    n = len(coords)
    text = np.array([plot_text(t) for t in hover_text], dtype=object) if hover_text is not None else None
    base_hover = "%{text}" if text is not None else ("%{x:.2f}, %{y:.2f}" + (", %{z:.2f}" if dim == 3 else ""))
    pts = _Points(coords=coords, dim=dim, text=text,
                  ids=np.asarray(list(customdata), dtype=object) if customdata is not None else None,
                  trace=go.Scattergl if dim == 2 else go.Scatter3d, size=marker_size(n, dim),
                  opacity=0.85 if n < 5000 else 0.7, base_hover=base_hover)

    traces = _underlays(pts, density=density, pair_segments=pair_segments)
    given_codes = categories is not None and color is not None
    if given_codes and palette is not None and len(palette) != len(categories):
        raise ValueError(f"palette must have one colour per category ({len(categories)}); got {len(palette)}")
    if color is None:
        all_rows = np.arange(n)
        traces.append(pts.trace(**pts.rows(all_rows), mode="markers", name="items", showlegend=False,
                                marker={"size": pts.size, "color": PALETTE[0], "opacity": pts.opacity},
                                hovertemplate=base_hover + "<extra></extra>"))
    elif given_codes:
        order = [str(c) for c in categories]
        colours = list(palette) if palette is not None else category_codes(order, max_categories)[2]
        traces += _category_traces(pts, np.asarray(color), order, colours)
    elif is_categorical(color) if categorical is None else categorical:
        traces += _category_traces(pts, *category_codes(color, max_categories))
    else:
        traces += _value_traces(pts, color, color_title=color_title, colorscale=colorscale, color_range=color_range)

    if neighbours is not None and dim == 2 and len(neighbours[1]):
        traces.append(_neighbour_lines(pts, neighbours))
    if dim == 2:
        _mark_selection(traces, set(map(str, selected or ())))
        ring = selection_rings(coords, pts.ids, selected, pts.size)
        if ring is not None:
            traces.append(ring)
    notes = []
    if labels:
        label_trace, notes = label_layer(labels, dim)
        traces.append(label_trace)
    fig = go.Figure(traces)
    _map_layout(fig, coords, dim=dim, height=height, uirevision=uirevision, notes=notes, thumbs=thumbs,
                thumb_size=thumb_size, legend_title=plot_text(color_title, limit=40) if color is not None else "")
    return fig


def density_grid(xy: np.ndarray, *, bins: int = 90, sigma: float = 1.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed point density of 2-D coordinates for contours: ``(x centres (bins,), y centres (bins,),
    z (bins, bins))``, z[i, j] for y centre i and x centre j. numpy's histogram2d smoothed by scipy's
    gaussian_filter (``sigma`` in bins); a few kilobytes whatever the number of points."""
    from scipy.ndimage import gaussian_filter

    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(0), xy.max(0)
    pad = (hi - lo) * 0.05 + 1e-9
    H, ex, ey = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins, range=[[lo[0] - pad[0], hi[0] + pad[0]],
                                                                     [lo[1] - pad[1], hi[1] + pad[1]]])
    z = gaussian_filter(H, sigma=sigma).T
    return (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2, z


LABEL_FONT = {"size": 14, "color": "#111111", "weight": "bold",
              "shadow": "0 0 3px #ffffff, 0 0 3px #ffffff, 0 0 2px #ffffff"}  # dark text, white halo


def density_layer(gx: np.ndarray, gy: np.ndarray, z: np.ndarray) -> dict:
    """A density grid (:func:`density_grid`: cell centres ``gx`` (w,), ``gy`` (h,), values ``z`` (h, w)) as the
    WebGL maps draw it: the box its w × h cells cover — the outer centres plus half a cell — ``{x0, x1, y0, y1,
    w, h}`` and ``z`` flattened row by row (float32, row 0 the lowest y)."""
    gx, gy, z = (np.asarray(a, dtype=np.float32) for a in (gx, gy, z))
    if gx.ndim != 1 or gy.ndim != 1 or z.shape != (len(gy), len(gx)) or len(gx) < 2 or len(gy) < 2:
        raise ValueError(f"density must be (gx (w,), gy (h,), z (h, w)) with w, h >= 2; got gx {gx.shape}, "
                         f"gy {gy.shape}, z {z.shape}")
    hx = float(gx[-1] - gx[0]) / (len(gx) - 1) / 2
    hy = float(gy[-1] - gy[0]) / (len(gy) - 1) / 2
    return {"x0": float(gx[0]) - hx, "x1": float(gx[-1]) + hx, "y0": float(gy[0]) - hy, "y1": float(gy[-1]) + hy,
            "w": len(gx), "h": len(gy), "z": np.ascontiguousarray(z.reshape(-1))}


def label_hover(label: dict) -> str:
    """Plain hover line of a named cluster: "name · n items · score s (runner-up w s2)"."""
    out = f"{label['name']} · {label['n']:,} items"
    if label.get("score") is not None:
        out += f" · score {label['score']:.3f}"
        if label.get("runner_up") is not None:
            out += f" (runner-up {label['runner_up']} {label['runner_up_score']:.3f})"
    return out


def label_layer(labels: Sequence[dict], dim: int = 2):
    """Cluster names on a map: ``(trace, annotations)``.

    The names are drawn as annotations (bold dark text with a white halo, above every point: WebGL points
    cover any SVG trace, annotations lie above them) and carried by one ``mode="text"`` trace of the
    same type as the points (``Scattergl`` / ``Scatter3d``, its own glyphs transparent under the
    annotations) at the centres, with ``customdata`` ``"cluster:<cluster>"`` (clicks and selections
    report it) and the hover line of :func:`label_hover`. Names and hover text are escaped.
    """
    import plotly.graph_objects as go

    names = [plot_text(d["name"], limit=40) for d in labels]
    xyz = {a: [float(d[a]) for d in labels] for a in "xyz"[:dim]}
    trace = (go.Scattergl if dim == 2 else go.Scatter3d)(
        **xyz, mode="text", text=names, customdata=[f"cluster:{d['cluster']}" for d in labels],
        hovertext=[plot_text(label_hover(d)) for d in labels], hovertemplate="%{hovertext}<extra></extra>",
        textfont={"size": LABEL_FONT["size"], "color": "rgba(0,0,0,0)"}, name="cluster names", showlegend=False)
    notes = [{**{a: v[i] for a, v in xyz.items()}, "text": t, "showarrow": False, "font": LABEL_FONT,
              **({"xref": "x", "yref": "y"} if dim == 2 else {})} for i, t in enumerate(names)]
    return trace, notes


def selection_rings(coords: np.ndarray, ids: np.ndarray | None, selected: Collection[str] | None, size: float):
    """An open dark circle around each selected point of a 2-D map when at most :data:`MAX_RINGED` are
    selected (a lone point of a few pixels is otherwise lost among the grey ones), or None. The ring is
    at least three times the point ``size``; it carries no ``customdata`` and no hover, so clicks and
    selections pass to the points under it."""
    import plotly.graph_objects as go

    if ids is None or not selected or len(selected) > MAX_RINGED:
        return None
    want = set(map(str, selected))
    rows = [i for i, cid in enumerate(ids) if str(cid) in want]
    if not rows:
        return None
    return go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=f"selected ({len(rows)})",
                        showlegend=False, hoverinfo="skip",
                        marker={"symbol": "circle-open", "size": max(RING["size"], 3 * size),
                                "line": {"width": RING["width"], "color": RING["color"]}, "color": RING["color"]})


def _mark_selection(traces, selected: set[str]) -> None:
    """Grey for unselected points (plotly's own selection styling, also used while the user lassos);
    with ``selected``, the points of those ids are selected in every point trace."""
    for tr in traces:
        if getattr(tr, "mode", None) != "markers" or tr.customdata is None:
            continue
        tr.unselected = {"marker": {"color": UNSELECTED_COLOUR, "opacity": 0.35}}
        if selected:
            tr.selectedpoints = [i for i, cid in enumerate(tr.customdata) if str(cid) in selected]
