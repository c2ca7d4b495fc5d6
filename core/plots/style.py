"""How values and user text reach plotly: :func:`plot_text` (escaped user text), the fixed palette, colours of
categories and of values (:func:`category_codes`, :func:`encode_colours`, :func:`colour_legend`) and which
values count as categories (:func:`is_categorical`, :func:`categories`)."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_CATEGORIES = 20  # above this, the 19 most common values keep a colour and the rest become "other"
MISSING = "(missing)"
OTHER_COLOUR = "#b0b0b0"
# 20 distinct colours (plotly's default 10, then the lighter D3 companions), fixed order
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
           "#FF97FF", "#FECB52", "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B",
           "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF")


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
    fast = _few_categories(values, max_categories)
    if fast is not None:  # none missing, no "other": the same codes without a label per point
        codes, order = fast
        colours = category_colours(order)
        return codes.astype(np.uint8 if len(order) <= 256 else np.uint16), order, [colours[c][0] for c in order]
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


def _few_categories(values, max_categories: int) -> tuple[np.ndarray, list[str]] | None:
    """``(codes, order)`` as :func:`categories` orders them, computed without a Python call per point, for
    values that are a Categorical or all strings, none missing, with at most ``max_categories`` distinct ones
    (e.g. a million points coloured by cluster or modality); None for anything else."""
    s = pd.Series(values).reset_index(drop=True)
    if isinstance(s.dtype, pd.CategoricalDtype):
        if s.isna().any():
            return None
        s = s.cat.remove_unused_categories()
        order = [str(c) for c in s.cat.categories]
        codes = s.cat.codes.to_numpy()
    elif s.dtype == object and len(s) and pd.api.types.infer_dtype(s, skipna=False) == "string":
        if len(pd.unique(s.iloc[:10_000])) > max_categories:  # many values (ids, captions): no factorizing of all
            return None
        first, uniques = pd.factorize(s)
        if len(uniques) > max_categories:
            return None
        keys = [tuple(_natural_key(u)) for u in uniques]
        if len(set(keys)) != len(keys):  # names equal but for case or leading zeros: the general path's order
            return None
        by_name = sorted(range(len(uniques)), key=keys.__getitem__)
        rank = np.empty(len(uniques), np.int64)
        rank[by_name] = np.arange(len(uniques))
        order = [str(uniques[j]) for j in by_name]
        codes = rank[first]
    else:
        return None
    if len(order) > max_categories or len(set(order)) != len(order):
        return None
    return codes, order


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
