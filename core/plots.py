"""Pure functions that turn arrays into plotly figures (no Streamlit here; pages render them).

Every function is deterministic: the same inputs give a byte-identical ``fig.to_json()`` (no random or
time-dependent values), so a Streamlit rerun with unchanged inputs resends nothing new.

User text (captions, file names, metadata values, column names) reaches plotly only through
:func:`plot_text`: plotly renders a small HTML subset (``<b>``, ``<a href>``, ``<br>``) in hover labels,
legends and titles, so ``& < >`` are escaped and the text shows literally.
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

MAX_CATEGORIES = 20  # above this, the 19 most common values keep a colour and the rest become "other"
MISSING = "(missing)"
OTHER_COLOUR = "#b0b0b0"
UNSELECTED_COLOUR = "#cfcfcf"  # points outside the selection
NEIGHBOUR_COLOUR = "rgba(20, 20, 20, 0.8)"  # lines from a point to its true neighbours
DENSITY_SCALE = [[0.0, "rgba(255,255,255,0)"], [1.0, "rgba(90,110,160,0.35)"]]
DENSITY_LINE = "rgba(90,110,160,0.45)"
PAIR_COLOUR = "rgba(90, 90, 90, 0.35)"
# 20 distinct colours (plotly's default 10, then the lighter D3 companions), fixed order
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
           "#FF97FF", "#FECB52", "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B",
           "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF")
NAMED_OUTLINE = {"width": 0.6, "color": "rgba(60, 60, 60, 0.7)"}  # keeps "white" or "yellow" points visible
MAX_RINGED = 20  # a selection of at most this many points is ringed, so a lone point is seen at once
RING = {"size": 18.0, "width": 2.5, "color": "rgba(20, 20, 20, 0.9)"}  # open circle around a selected point
UIREVISION = "jointscope-map"


def plot_text(text: object, limit: int = 200) -> str:
    """User text for a plotly label: ``& < >`` escaped (shown literally), newlines become ``<br>``.

    Only ``&``, ``<`` and ``>`` are escaped because plotly decodes just a few named entities
    (``&amp; &lt; &gt;``); without ``<`` no tag can start.
    """
    lines = []
    for line in str(text).split("\n"):
        s = " ".join(line.split())
        if len(s) > limit:
            s = s[: limit - 1] + "…"
        lines.append(s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "<br>".join(lines)


def safe_palette() -> tuple[str, ...]:
    """Colours for categories that are not colour names: plotly's colour-blind-safe qualitative palette
    (``plotly.colors.qualitative.Safe``) without its grey, which stands for missing values and "other"."""
    from plotly.colors import qualitative

    return tuple(c for c in qualitative.Safe if c != "rgb(136, 136, 136)")


def category_colours(order: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """Colour of each category: ``(colour, named)``. A value that is a CSS colour name ("red", "Orange",
    "dark green": Pillow's ImageColor table, case and spaces ignored) is drawn in that colour; the other
    values take :func:`safe_palette` in order (cycling beyond its 10 colours)."""
    from PIL import ImageColor

    palette = safe_palette()
    out, k = {}, 0
    for cat in order:
        key = "".join(str(cat).lower().split())
        if key in ImageColor.colormap:
            out[cat] = ("#{:02x}{:02x}{:02x}".format(*ImageColor.getrgb(key)[:3]), True)
        else:
            out[cat] = (palette[k % len(palette)], False)
            k += 1
    return out


def is_colour_name(value: object) -> bool:
    """Whether ``value`` is a CSS colour name (Pillow's ImageColor table, case and spaces ignored)."""
    from PIL import ImageColor

    return "".join(str(value).lower().split()) in ImageColor.colormap


def hex_colour(colour: str) -> str:
    """A plotly colour as ``#rrggbb``: ``#RRGGBB`` (lower-cased), ``rgb(r, g, b)`` or a CSS colour name."""
    c = str(colour).strip()
    if c.startswith("#") and len(c) == 7:
        return c.lower()
    m = re.fullmatch(r"rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*[\d.]+\s*)?\)", c)
    if m:
        return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in m.groups()))
    from PIL import ImageColor

    return "#{:02x}{:02x}{:02x}".format(*ImageColor.getrgb(c)[:3])


def category_codes(values, max_categories: int = MAX_CATEGORIES) -> tuple[np.ndarray, list[str], list[str]]:
    """Categorical colours of ``values`` (n,): ``(codes (n,) uint8/uint16, categories, palette)``.

    ``categories`` and their order are :func:`categories`' ("(missing)" last, "other (N values)" beyond
    ``max_categories``); ``codes[i]`` indexes them; ``palette[j]`` is category j's colour
    (:func:`category_colours`: its own colour for a CSS colour name, else the safe palette in order; grey,
    :data:`OTHER_COLOUR`, for "(missing)" and "other")."""
    labels, order = categories(values, max_categories)
    n_coloured = len(order) - 1 - (MISSING in order)  # position of "other (N values)" when present
    has_other = pd.Series(values).nunique(dropna=True) > max_categories
    greys = {cat for i, cat in enumerate(order) if cat == MISSING or (has_other and i == n_coloured)}
    colours = category_colours([cat for cat in order if cat not in greys])
    palette = [colours[cat][0] if cat in colours else OTHER_COLOUR for cat in order]
    codes = pd.Categorical(labels, categories=order).codes
    return codes.astype(np.uint8 if len(order) <= 256 else np.uint16), list(order), palette


def colorscale_hex(name: str, steps: int = 11) -> list[str]:
    """A plotly colour scale (a name such as "Viridis" or "RdYlGn") as ``steps`` evenly spaced ``#rrggbb``
    colours, for renderers that take a list of colours (the WebGL map)."""
    from plotly.colors import get_colorscale, sample_colorscale

    rgb = sample_colorscale(get_colorscale(name), [i / (steps - 1) for i in range(steps)], colortype="rgb")
    return [hex_colour(c) for c in rgb]


VALUE_STEPS = 255  # continuous colour on the WebGL maps: codes 0..254 step along the scale, 255: no value
NO_VALUE_COLOUR = "#e0e0e0"
MAX_LEGEND = 15  # categories listed in a WebGL map's legend, the largest (the rest are counted in one line)


def interpolate_colours(colorscale: Sequence[str], steps: int) -> list[str]:
    """``steps`` hex colours evenly along ``colorscale`` (a list of at least one hex colour)."""
    rgb = []
    for c in colorscale:
        s = str(c).lstrip("#")
        if len(s) == 3:
            s = "".join(ch * 2 for ch in s)
        try:
            rgb.append([int(s[i:i + 2], 16) for i in (0, 2, 4)])
        except ValueError:
            raise ValueError(f"colorscale colour {c!r} is not a hex colour (#rrggbb)") from None
    if not rgb:
        raise ValueError("colorscale must list at least one hex colour")
    if len(rgb) == 1:
        return ["#{:02x}{:02x}{:02x}".format(*rgb[0])] * steps
    stops = np.asarray(rgb, dtype=float)
    pos = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, steps)
    out = np.stack([np.interp(t, pos, stops[:, k]) for k in range(3)], axis=1).round().astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*c) for c in out]


def encode_colours(n: int, *, codes=None, palette: Sequence[str] = (), categories: Sequence[str] = (),
                   values=None, colorscale: Sequence[str] | None = None,
                   value_range: tuple[float, float] | None = None) -> tuple[np.ndarray | None, list[str]]:
    """One small-int colour code per point and the palette it indexes: ``(codes (n,) uint8/uint16 or None,
    palette)``. Categories keep their codes; continuous ``values`` are cut into :data:`VALUE_STEPS` steps of
    ``colorscale`` over ``value_range`` (default: their finite min–max), a missing value takes the last slot."""
    if codes is not None and values is not None:
        raise ValueError("pass codes (categories) or values (continuous colour), not both")
    if codes is not None:
        c = np.asarray(codes)
        if c.ndim != 1 or len(c) != n:
            raise ValueError(f"codes must be a 1-D array of {n} ints; got shape {c.shape}")
        if len(c) and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0):
            raise ValueError("codes must be non-negative integers (indices into palette)")
        top = int(c.max()) + 1 if len(c) else 1
        pal = [str(p) for p in palette] or interpolate_colours(["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"],
                                                        max(top, len(categories), 1))
        if top > len(pal):
            raise ValueError(f"codes go up to {top - 1} but palette has {len(pal)} colours")
        if len(pal) > 65535:
            raise ValueError(f"palette has {len(pal)} colours; at most 65,535 are drawn")
        return c.astype(np.uint8 if len(pal) <= 255 else np.uint16, copy=False), pal
    if values is not None:
        v = np.asarray(values, dtype=np.float32)
        if v.ndim != 1 or len(v) != n:
            raise ValueError(f"values must be a 1-D array of {n} numbers; got shape {v.shape}")
        finite = np.isfinite(v)
        if value_range is not None:
            lo, hi = (float(value_range[0]), float(value_range[1]))
        elif finite.any():
            lo, hi = float(v[finite].min()), float(v[finite].max())
        else:
            lo, hi = 0.0, 1.0
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"value_range must be two finite numbers; got {value_range!r}")
        span = hi - lo if hi > lo else 1.0
        with np.errstate(invalid="ignore"):
            q = np.clip(np.rint((v - lo) / span * (VALUE_STEPS - 1)), 0, VALUE_STEPS - 1)
        c = np.where(finite, q, VALUE_STEPS).astype(np.uint8)
        steps = interpolate_colours(colorscale or ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"], VALUE_STEPS)
        return c, [*steps, NO_VALUE_COLOUR]
    return None, [str(palette[0])] if palette else ["#1f77b4"]


def colour_legend(codes: np.ndarray | None, palette: Sequence[str], *, categories: Sequence[str] = (),
           title: str = "", values=None, value_range: tuple[float, float] | None = None) -> dict | None:
    """What the map's colours mean, for the legend drawn on it: ``{title, items: [{name, colour, count}],
    more}`` for categories (the :data:`MAX_LEGEND` largest, by count), ``{title, ramp, low, high, missing}`` for
    continuous values; None when every point has one colour and nothing names it."""
    if values is not None:
        v = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(v)
        if value_range is None:
            value_range = (float(v[finite].min()), float(v[finite].max())) if finite.any() else (0.0, 1.0)
        ramp = list(palette[:-1:max(1, (len(palette) - 1) // 8)])
        n_missing = int((~finite).sum())
        return {"title": title, "ramp": [*ramp, palette[-2]], "low": f"{value_range[0]:.3g}",
                "high": f"{value_range[1]:.3g}",
                "missing": f"{n_missing:,} without a value (grey)" if n_missing else ""}
    if codes is None or not len(categories):
        return None
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(categories))[:len(categories)]
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    items = [{"name": str(categories[i]), "colour": str(palette[i]), "count": int(counts[i])}
             for i in order[:MAX_LEGEND]]
    rest = order[MAX_LEGEND:]
    more = f"… and {len(rest):,} more ({int(counts[rest].sum()):,} points)" if rest else ""
    return {"title": title, "items": items, "more": more}


def _natural_key(s: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", s) if t]


def is_categorical(values) -> bool:
    """Whether colour values are categories (strings, booleans, few distinct integers) or numbers."""
    s = pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s):
        return True
    if pd.api.types.is_integer_dtype(s):
        return s.nunique(dropna=True) <= MAX_CATEGORIES
    return not pd.api.types.is_numeric_dtype(s)


def categories(values, max_categories: int = MAX_CATEGORIES) -> tuple[np.ndarray, list[str]]:
    """Category labels of every point and their legend order: ``(labels (n,) object, order)``.

    Missing values become "(missing)" (last); when there are more than ``max_categories`` values, the
    ``max_categories - 1`` most common keep their own colour and the rest are "other (N values)".
    Order: natural sort ("cluster 2" before "cluster 10"), or the categorical dtype's own order.
    """
    s = pd.Series(values).reset_index(drop=True)
    if isinstance(s.dtype, pd.CategoricalDtype):
        order = [str(c) for c in s.cat.categories]
        s = s.astype(object)
    else:
        order = None
    missing = s.isna().to_numpy()
    labels = np.array([MISSING if m else str(v) for v, m in zip(s.tolist(), missing)], dtype=object)
    present = pd.Series(labels[~missing]).value_counts()
    if order is None:
        order = sorted(present.index.tolist(), key=_natural_key)
    else:
        order = [c for c in order if c in present.index]
    if len(order) > max_categories:
        # most common first; ties by name so the choice is deterministic
        ranked = sorted(present.items(), key=lambda kv: (-kv[1], _natural_key(kv[0])))
        keep = {k for k, _ in ranked[: max_categories - 1]}
        rest = len(order) - len(keep)
        other = f"other ({rest} values)"
        labels = np.array([v if v in keep or v == MISSING else other for v in labels], dtype=object)
        order = [c for c in order if c in keep] + [other]
    if missing.any():
        order.append(MISSING)
    return labels, order


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

    coords = np.asarray(coords, dtype=np.float32)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3; got {dim!r}")
    if coords.ndim != 2 or coords.shape[1] < dim:
        raise ValueError(f"coords must be (n, {dim}); got shape {coords.shape}")
    n = len(coords)
    for name, arr in (("color", color), ("hover_text", hover_text), ("customdata", customdata)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} must have one entry per point ({n}); got {len(arr)}")
    text = np.array([plot_text(t) for t in hover_text], dtype=object) if hover_text is not None else None
    ids = np.asarray(list(customdata), dtype=object) if customdata is not None else None
    size = marker_size(n, dim)
    opacity = 0.85 if n < 5000 else 0.7
    trace = go.Scattergl if dim == 2 else go.Scatter3d

    def xyz(rows) -> dict:
        out = {"x": coords[rows, 0], "y": coords[rows, 1]}
        if dim == 3:
            out["z"] = coords[rows, 2]
        return out

    def extra(rows) -> dict:
        out = {}
        if text is not None:
            out["text"] = text[rows]
        if ids is not None:
            out["customdata"] = ids[rows]
        return out

    traces = []
    if density and dim == 2 and n >= 3:
        gx, gy, z = density_grid(coords[:, :2])
        traces.append(go.Contour(x=gx, y=gy, z=z, name="density", showscale=False, hoverinfo="skip",
                                 ncontours=8, colorscale=DENSITY_SCALE, line={"width": 0.6, "color": DENSITY_LINE},
                                 contours={"coloring": "fill", "start": float(z.max()) * 0.08,
                                           "end": float(z.max()), "showlines": True}))
    if pair_segments is not None and len(pair_segments):
        seg = np.asarray(pair_segments, dtype=np.int64)
        pts = np.full((len(seg) * 3, dim), np.nan, dtype=np.float32)
        pts[0::3] = coords[seg[:, 0], :dim]
        pts[1::3] = coords[seg[:, 1], :dim]
        line = {"x": pts[:, 0], "y": pts[:, 1]} | ({"z": pts[:, 2]} if dim == 3 else {})
        traces.append(trace(**line, mode="lines", name=f"pairs ({len(seg)})", hoverinfo="skip",
                            line={"color": PAIR_COLOUR, "width": 1}, connectgaps=False))

    given_codes = categories is not None and color is not None
    if given_codes and palette is not None and len(palette) != len(categories):
        raise ValueError(f"palette must have one colour per category ({len(categories)}); got {len(palette)}")
    base_hover = "%{text}" if text is not None else ("%{x:.2f}, %{y:.2f}" + (", %{z:.2f}" if dim == 3 else ""))
    all_rows = np.arange(n)
    if color is None:
        traces.append(trace(**xyz(all_rows), **extra(all_rows), mode="markers", name="items", showlegend=False,
                            marker={"size": size, "color": PALETTE[0], "opacity": opacity},
                            hovertemplate=base_hover + "<extra></extra>"))
    elif given_codes or (is_categorical(color) if categorical is None else categorical):
        if given_codes:
            codes, order = np.asarray(color), [str(c) for c in categories]
            colours = list(palette) if palette is not None else category_codes(order, max_categories)[2]
        else:
            codes, order, colours = category_codes(color, max_categories)
        for j, cat in enumerate(order):
            rows = np.flatnonzero(codes == j)
            if not len(rows):
                continue
            marker = {"size": size, "color": colours[j], "opacity": opacity}
            if is_colour_name(cat):
                marker["line"] = NAMED_OUTLINE
            name = plot_text(cat, limit=60)
            traces.append(trace(**xyz(rows), **extra(rows), mode="markers", name=f"{name} ({len(rows)})",
                                legendgroup=name, marker=marker, hovertemplate=base_hover + f"<extra>{name}</extra>"))
    else:
        values = pd.to_numeric(pd.Series(color), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(values)
        lo, hi = color_range if color_range else ((float(values[ok].min()), float(values[ok].max()))
                                                  if ok.any() else (0.0, 1.0))
        title = plot_text(color_title, limit=40)
        rows = np.flatnonzero(ok)
        traces.append(trace(**xyz(rows), **extra(rows), mode="markers", name=title or "value", showlegend=False,
                            marker={"size": size, "color": values[rows].astype(np.float32),
                                    "colorscale": colorscale, "cmin": lo, "cmax": hi, "opacity": opacity,
                                    "colorbar": {"title": {"text": title}, "thickness": 12, "len": 0.6}},
                            hovertemplate=base_hover + f"<br>{title}: %{{marker.color:.3f}}<extra></extra>"))
        if (~ok).any():
            rows = np.flatnonzero(~ok)
            traces.append(trace(**xyz(rows), **extra(rows), mode="markers", name=f"{MISSING} ({len(rows)})",
                                marker={"size": size, "color": OTHER_COLOUR, "opacity": opacity},
                                hovertemplate=base_hover + f"<extra>{MISSING}</extra>"))

    if neighbours is not None and dim == 2 and len(neighbours[1]):
        row, rows = int(neighbours[0]), np.asarray(neighbours[1], dtype=np.int64)
        pts = np.full((len(rows) * 3, 2), np.nan, dtype=np.float32)
        pts[0::3] = coords[row, :2]
        pts[1::3] = coords[rows, :2]
        traces.append(trace(x=pts[:, 0], y=pts[:, 1], mode="lines", name=f"true neighbours ({len(rows)})",
                            hoverinfo="skip", line={"color": NEIGHBOUR_COLOUR, "width": 1.6}, connectgaps=False))
    if dim == 2:
        _mark_selection(traces, set(map(str, selected or ())))
        ring = selection_rings(coords, ids, selected, size)
        if ring is not None:
            traces.append(ring)
    notes = []
    if labels:
        label_trace, notes = label_layer(labels, dim)
        traces.append(label_trace)
    fig = go.Figure(traces)
    legend_title = plot_text(color_title, limit=40) if color is not None else ""
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
        if thumbs and n:
            span = float(max(np.ptp(coords[:, 0]), np.ptp(coords[:, 1]), 1e-6))
            s = thumb_size * span
            fig.update_layout(images=[{"source": uri, "x": float(x), "y": float(y), "xref": "x", "yref": "y",
                                       "sizex": s, "sizey": s, "xanchor": "center", "yanchor": "middle",
                                       "layer": "above", "sizing": "contain"} for x, y, uri in thumbs])
    else:
        fig.update_layout(scene={"xaxis": _axis(3), "yaxis": _axis(3), "zaxis": _axis(3), "aspectmode": "data",
                                 "uirevision": uirevision, "annotations": notes})
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
