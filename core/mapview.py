"""The map as a view model: what one map view shows, built once in core and drawn by every front end.

:class:`MapParams` is everything that defines a view (projection, colouring, overlays), validated in one
place against :data:`PARAMETERS` (bounds, choices, defaults and help, declared once: the Map page's widgets
and URL fallback and the CLI's options read them from here). :func:`build_view` turns a workspace, a model
and the parameters into a :class:`MapView`: the map's float32 coordinates, its colouring as integer codes
with categories and a hex palette, or as float32 values with a colour scale, the named clusters and the
selected rows. What is costly per point (hover texts, thumbnails, true neighbours, density) is computed
on demand, for the rows a renderer asks for. :func:`view_figure` renders a view with plotly
(:func:`core.plots.map_figure`) for the Map page's plotly maps and 3-D HTML maps; 2-D maps of the standalone HTML map
(:func:`core.export.map_html`, ``jointscope map --html``) are drawn by the WebGL map (:func:`core.export.map_payload`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# ---- parameters ----------------------------------------------------------------------------------
COLOUR_MODALITY, COLOUR_CLUSTER, COLOUR_SIMILARITY, COLOUR_TRUST = "modality", "cluster", "similarity", "trust"
# quality scores (core.quality's per-item frame, neighbours k=QUALITY_K): key -> (colour scale, label)
QUALITY_COLOURS = {"noisy_score": ("Reds", "noisy-pair score"), "n_k": ("Viridis", "hubness (N_k)"),
                   "lof": ("Reds", "outlier score (LOF)")}
QUALITY_K = 10
# how the Map page names the built-in colourings (a metadata column is shown by its own name)
COLOUR_LABELS = {COLOUR_MODALITY: "modality", COLOUR_CLUSTER: "cluster (KMeans)",
                 COLOUR_SIMILARITY: "similarity to a text", COLOUR_TRUST: "trust (neighbours kept)",
                 **{k: label for k, (_, label) in QUALITY_COLOURS.items()}}
NAMES_COARSE, NAMES_FINE, NAMES_OFF = "coarse", "fine", "off"
MAX_THUMBNAILS = 150  # thumbnail_rows' default
THUMB_CELL_PX = 48  # with the map's pixel size known, one thumbnail (drawn 36 px) at most per cell of this size


@dataclass(frozen=True)
class Parameter:
    """One map-view setting: its default, allowed values (``choices``) or closed interval (``low``,
    ``high``), and a help line shared by the page's widget and the CLI's option."""

    name: str
    default: object
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None

    def check(self, value):
        """``value`` converted to this parameter's type; ValueError naming the parameter otherwise."""
        if self.choices is not None:
            if value not in self.choices:
                allowed = ", ".join(map(repr, self.choices))
                raise ValueError(f"{self.name} must be one of {allowed}; got {value!r}")
            return value
        if isinstance(self.default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{self.name} must be True or False; got {value!r}")
            return bool(value)
        if isinstance(self.default, int):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{self.name} must be an integer in [{self.low}, {self.high}]; got {value!r}")
            value = int(value)
        elif isinstance(self.default, float):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{self.name} must be a number in [{self.low}, {self.high}]; got {value!r}")
            value = float(value)
        elif isinstance(self.default, str):
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string; got {value!r}")
            return value
        if self.low is not None and not (self.low <= value <= self.high):  # NaN fails too
            raise ValueError(f"{self.name} must be in [{self.low}, {self.high}]; got {value!r}")
        return value

    def clamp(self, value):
        """``value`` (any text or number, e.g. from a URL) as the nearest allowed value; the default when it
        cannot be read or is not among the choices."""
        if self.choices is not None:
            return value if value in self.choices else self.default
        try:
            v = float(value)
        except (TypeError, ValueError):
            return self.default
        if not math.isfinite(v):
            return self.default
        v = min(max(v, self.low), self.high)
        return round(v) if isinstance(self.default, int) else v


def _projector(name: str, help: str) -> Parameter:
    """The map setting that is the Projector's parameter ``name`` (``n_components`` is the map's ``dim``,
    ``random_state`` its ``seed``): its default, and its choices or bounds as
    ``core.projection.PROJECTOR_CONSTRAINTS`` (the Projector's ``parameter_constraints``) declares them (the
    one place they are written)."""
    from .params import bounds, options
    from .projection import PROJECTOR_CONSTRAINTS, PROJECTOR_DEFAULTS

    C, label = PROJECTOR_CONSTRAINTS, {"n_components": "dim", "random_state": "seed"}.get(name, name)
    default = PROJECTOR_DEFAULTS[name]
    try:
        return Parameter(label, default, help, choices=options(C, name))
    except ValueError:  # a number in an interval
        low, high = bounds(C, name, step=0.01)
        return Parameter(label, default, help, low=low, high=high)


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    _projector("method", "UMAP keeps local neighbourhoods; PCA is linear, fast and keeps global directions."),
    _projector("n_components", "a 2-D or a 3-D map"),
    Parameter("gap_corrected", False, "Subtract each modality's mean vector before projecting, so images and texts "
              "are not drawn as two separate islands (the modality gap)."),
    _projector("n_neighbors", "UMAP neighbours: more give more global structure and are slower."),
    _projector("min_dist", "UMAP minimum distance: smaller gives tighter clusters."),
    _projector("random_state", "random seed of the layout"),
    Parameter("colour", COLOUR_MODALITY, "what colours the points: modality, cluster, trust, similarity to a "
              "text, a quality score or a metadata column"),
    Parameter("k", 8, "clusters (k-means) when colouring by cluster", low=2, high=30),
    Parameter("text", "", "the text whose cosine similarity colours the points (colour 'similarity')"),
    Parameter("pairs", False, "Join each image to its caption."),
    Parameter("thumbnails", False, "Draw a sample of the images on the map (2-D)."),
    Parameter("density", False, "Draw density contours under the points (2-D): where the map is crowded."),
    Parameter("names", NAMES_COARSE, "named clusters: coarse (a few large ones), fine (each split) or off",
              choices=(NAMES_COARSE, NAMES_FINE, NAMES_OFF)),
)}


def colour_choices(columns: Sequence[str] = (), *, text: bool = False, quality: bool = False,
                   metadata_first: bool = False) -> list[str]:
    """What a map can be coloured by: modality, cluster, ``similarity`` (``text``: the model encodes
    texts), trust, the quality scores (``quality``) and the metadata ``columns`` — after the built-in ones,
    or right after modality with ``metadata_first`` (the Map page's order). A column named like a built-in
    colouring is shadowed by it."""
    built_in = [COLOUR_CLUSTER, *([COLOUR_SIMILARITY] if text else []), COLOUR_TRUST]
    built_in += list(QUALITY_COLOURS) if quality else []
    meta = [c for c in columns if c not in COLOUR_LABELS]
    return [COLOUR_MODALITY, *meta, *built_in] if metadata_first else [COLOUR_MODALITY, *built_in, *meta]


def colour_key(choice: str, columns: Sequence[str] = ()) -> str:
    """The colouring a page label names (``"cluster (KMeans)"`` -> ``"cluster"``); other values unchanged."""
    if choice in columns and choice not in COLOUR_LABELS:
        return choice
    return {label: key for key, label in COLOUR_LABELS.items()}.get(choice, choice)


@dataclass(frozen=True)
class MapParams:
    """Everything that defines one map view; immutable and hashable (a cache key).

    ``method`` "umap" | "pca"; ``dim`` 2 | 3; ``modalities`` the mapped modalities (None: all);
    ``gap_corrected``; ``n_neighbors``, ``min_dist`` (UMAP); ``seed``; ``colour`` (see
    :func:`colour_choices`); ``k`` clusters; ``text`` (colour "similarity"); overlays ``pairs``,
    ``thumbnails``, ``density``; ``names`` "coarse" | "fine" | "off". Bounds and choices: :data:`PARAMETERS`;
    every value is checked on construction (ValueError naming the parameter, the allowed range and the
    value); the colour against a workspace's columns by :meth:`validate` or :meth:`from_dict`.
    """

    method: str = "umap"
    dim: int = 2
    modalities: tuple[str, ...] | None = None
    gap_corrected: bool = False
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0
    colour: str = COLOUR_MODALITY
    k: int = 8
    text: str = ""
    pairs: bool = False
    thumbnails: bool = False
    density: bool = False
    names: str = NAMES_COARSE

    def __post_init__(self):
        for name, spec in PARAMETERS.items():
            object.__setattr__(self, name, spec.check(getattr(self, name)))
        object.__setattr__(self, "text", self.text.strip())
        if self.modalities is not None:
            if isinstance(self.modalities, str) or not all(isinstance(m, str) for m in self.modalities):
                raise ValueError(f"modalities must be a list of modality names or None; got {self.modalities!r}")
            if not self.modalities:
                raise ValueError("modalities must name at least one modality (None: all)")
            object.__setattr__(self, "modalities", tuple(sorted(set(self.modalities))))

    @classmethod
    def from_dict(cls, raw: Mapping, *, columns: Sequence[str] | None = None, text: bool = True,
                  quality: bool = True) -> MapParams:
        """Parameters from a mapping of names to values (unknown names are an error). ``colour`` may be a
        key or the Map page's label; with ``columns`` (the metadata columns) it must be one of
        :func:`colour_choices` ``(columns, text=text, quality=quality)``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown map parameter(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(sorted(names))}")
        kw = dict(raw)
        if "method" in kw and isinstance(kw["method"], str):
            kw["method"] = kw["method"].lower()
        if kw.get("modalities") is not None and not isinstance(kw["modalities"], str):
            kw["modalities"] = tuple(kw["modalities"])
        if "colour" in kw:
            kw["colour"] = colour_key(kw["colour"], columns or ())
        params = cls(**kw)
        if columns is not None:
            params.check_colour(colour_choices(columns, text=text, quality=quality))
        return params

    def check_colour(self, choices: Sequence[str]) -> MapParams:
        """Self, when ``colour`` is one of ``choices``; ValueError listing them otherwise."""
        if self.colour not in choices:
            raise ValueError(f"colour must be one of {', '.join(choices)}; got {self.colour!r}")
        return self

    def validate(self, ws, model: str) -> MapParams:
        """Self, when the workspace can draw this view with ``model``: the colour is one it offers
        (:func:`colour_choices` of its metadata columns; "similarity" needs a model that encodes texts)."""
        from .encoders import modalities_of
        from .export import metadata_columns

        try:
            text = "text" in modalities_of(model)
        except ValueError:
            text = False
        return self.check_colour(colour_choices(metadata_columns(ws.items), text=text, quality=True))

    def replace(self, **changes) -> MapParams:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def map_kwargs(self) -> dict:
        """The keyword arguments of :func:`core.projection.compute_map` (and ``cached_map``) of this view."""
        return {"method": self.method, "dim": self.dim,
                "modalities": list(self.modalities) if self.modalities else None,
                "gap_corrected": self.gap_corrected, "n_neighbors": self.n_neighbors, "min_dist": self.min_dist,
                "random_state": self.seed}

    def data_params(self) -> MapParams:
        """These parameters without the overlays and the settings the colouring does not use: everything
        :func:`build_view` computes from (a cache key that a pairs/thumbnails/density toggle leaves alone)."""
        return self.replace(pairs=False, thumbnails=False, density=False,
                            k=self.k if self.colour == COLOUR_CLUSTER else PARAMETERS["k"].default,
                            text=self.text if self.colour == COLOUR_SIMILARITY else "")

    def to_dict(self) -> dict:
        """JSON-safe: every parameter (``modalities`` a list or None)."""
        out = dataclasses.asdict(self)
        out["modalities"] = list(self.modalities) if self.modalities else None
        return out


# ---- the view ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MapView:
    """One map view, ready to draw (see the module docstring). Treat as read-only; share freely.

    ``res``: the :class:`core.projection.MapResult` (``coords`` (n, dim) float32, ``ids`` (n,) str,
    ``modality`` (n,) str, ``trust`` (n,) float32). ``items``: the mapped items' rows in map order.
    Colour: either ``codes`` (n,) uint8/uint16 indexing ``categories`` with ``palette`` (one ``#rrggbb``
    per category; a CSS colour-name category in its own colour, grey for "(missing)" and "other"), or
    ``values`` (n,) float32 (NaN: not measured) with ``colorscale`` and ``value_range`` (lo, hi); neither
    when there is nothing to colour by (similarity without a text). ``colour_title`` names the colouring.
    ``labels``: named clusters (:func:`core.labels.map_labels`; empty when names are off). ``selection``:
    (s,) int32 rows of the selected ids on the map, in the order they were selected. ``note``: a line for
    the user about the colouring ("" when none).
    """

    ws: object
    model: str
    params: MapParams
    res: object
    items: pd.DataFrame
    colour_title: str = ""
    codes: np.ndarray | None = None
    categories: tuple[str, ...] = ()
    palette: tuple[str, ...] = ()
    values: np.ndarray | None = None
    colorscale: str = "Viridis"
    value_range: tuple[float, float] | None = None
    labels: tuple[dict, ...] = ()
    selection: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    note: str = ""
    memo: dict = field(default_factory=dict, repr=False)  # lazy look-ups, shared by with_selection copies

    # -- arrays a renderer takes as they are
    @property
    def coords(self) -> np.ndarray:
        """(n, dim) float32 map coordinates."""
        return self.res.coords

    @property
    def x(self) -> np.ndarray:
        """(n,) float32 first coordinates (contiguous)."""
        return np.ascontiguousarray(self.res.coords[:, 0], dtype=np.float32)

    @property
    def y(self) -> np.ndarray:
        """(n,) float32 second coordinates (contiguous)."""
        return np.ascontiguousarray(self.res.coords[:, 1], dtype=np.float32)

    @property
    def ids(self) -> np.ndarray:
        return self.res.ids

    @property
    def modality(self) -> np.ndarray:
        return self.res.modality

    @property
    def n(self) -> int:
        return len(self.res.ids)

    @property
    def dim(self) -> int:
        return self.res.dim

    @property
    def colour_kind(self) -> str:
        """"categories" (codes), "values" (a colour scale) or "none"."""
        return "categories" if self.codes is not None else "values" if self.values is not None else "none"

    @property
    def selected_ids(self) -> list[str]:
        """The ids of :attr:`selection`."""
        return [str(i) for i in self.res.ids[self.selection]]

    def row_of(self, item_id: str) -> int | None:
        """The row of an item on the map, or None."""
        pos = self._positions()
        return pos.get(str(item_id))

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """(m,) int32 rows of those of ``ids`` that are on the map, in the order of ``ids`` (each once)."""
        pos = self._positions()
        return np.asarray(list(dict.fromkeys(pos[i] for i in map(str, ids) if i in pos)), dtype=np.int32)

    def with_colour(self, values, title: str, **options) -> MapView:
        """The same view coloured by (n,) ``values`` instead (:func:`colour_fields` with ``options``)."""
        if values is not None and len(values) != self.n:
            raise ValueError(f"values must have one entry per point ({self.n}); got {len(values)}")
        cleared = {"codes": None, "categories": (), "palette": (), "values": None, "value_range": None, "note": ""}
        return dataclasses.replace(self, **{**cleared, **colour_fields(values, title, **options)})

    def with_selection(self, ids: Sequence[str] | None) -> MapView:
        """The same view with ``ids`` selected (ids not on the map are ignored); shares every array."""
        return dataclasses.replace(self, selection=self.rows_of(ids or []))

    def _positions(self) -> dict[str, int]:
        if "positions" not in self.memo:
            self.memo["positions"] = {k: i for i, k in enumerate(self.res.ids.tolist())}
        return self.memo["positions"]

    # -- hover texts
    def _hover_lookup(self) -> tuple[np.ndarray, list[str]]:
        """((n,) object caption of every point, :func:`core.items.captions`; shown metadata columns), built
        once per view."""
        if "hover" not in self.memo:
            from .export import hover_columns, metadata_columns
            from .items import captions

            caps = captions(self.ws.items, self.items).to_numpy(dtype=object)
            self.memo["hover"] = (caps, hover_columns(metadata_columns(self.items)))
        return self.memo["hover"]

    def caption(self, row: int) -> str | None:
        """The caption of the point at ``row`` (:func:`core.items.captions`), None when it has none."""
        caps, _ = self._hover_lookup()
        return caps[int(row)]

    def hover_text(self, row: int) -> str:
        """Plain hover text of the point at ``row``: its text, or an image's caption and file, then its
        modality and up to four metadata values (:func:`core.export.hover_line`; renderers escape it)."""
        from .export import hover_line

        if not 0 <= int(row) < self.n:
            raise ValueError(f"row must be in [0, {self.n}); got {row}")
        _, shown = self._hover_lookup()
        return hover_line(self.items.iloc[int(row)].to_dict(), self.caption(row), shown)

    def hover_texts(self, rows: Sequence[int] | None = None) -> list[str]:
        """:meth:`hover_text` of ``rows`` (default: every point, built once per view and kept)."""
        if rows is not None:
            return [self.hover_text(r) for r in rows]
        if "hover_all" not in self.memo:
            from .export import hover_lines

            caps, shown = self._hover_lookup()
            self.memo["hover_all"] = hover_lines(self.items, shown, captions=caps)
        return self.memo["hover_all"]

    # -- thumbnails
    def image_rows(self) -> np.ndarray:
        """(m,) int32 rows of the images that have a stored thumbnail."""
        if "images" not in self.memo:
            has = (self.items["modality"] == "image").to_numpy() & self.items["thumb"].notna().to_numpy()
            self.memo["images"] = np.flatnonzero(has).astype(np.int32)
        return self.memo["images"]

    def thumbnail_rows(self, view_box: Sequence[float] | None = None, max_n: int = MAX_THUMBNAILS,
                       seed: int = 0, pixels: tuple[float, float] | None = None) -> np.ndarray:
        """Up to ``max_n`` rows of images with a thumbnail inside ``view_box`` ``(x0, x1, y0, y1)`` (None:
        the whole map), spread over it by :func:`spread_rows`; with the map's size in ``pixels`` (w, h) at most
        one per :data:`THUMB_CELL_PX`-pixel cell, so they do not cover one another. (k,) int32, sorted."""
        if max_n < 0:
            raise ValueError(f"max_n must be >= 0; got {max_n}")
        rows = self.image_rows()
        xy = self.res.coords[rows, :2]
        grid = per_cell = None
        if pixels is not None:
            grid = (max(1, int(pixels[0] // THUMB_CELL_PX)), max(1, int(pixels[1] // THUMB_CELL_PX)))
            per_cell = 1
        picked = spread_rows(xy[:, 0], xy[:, 1], view_box, limit=max_n, grid=grid, per_cell=per_cell, seed=seed)
        return np.sort(rows[picked]).astype(np.int32)

    def thumbnail_items(self, view: dict, max_n: int = MAX_THUMBNAILS) -> list[tuple[int, str]]:
        """The ``(row, data: URL)`` thumbnails to draw for a map view ``{x0, x1, y0, y1}`` (with ``w``, ``h``: its
        size in pixels) — what the WebGL map asks for when a view settles (:func:`pages.ui.scatter.scatter_map`)."""
        box = (view["x0"], view["x1"], view["y0"], view["y1"])
        pixels = (view["w"], view["h"]) if view.get("w") and view.get("h") else None
        rows = self.thumbnail_rows(box, max_n=max_n, pixels=pixels)
        return [(int(r), u) for r, u in zip(rows, self.thumbnails(rows)) if u]

    def thumbnails(self, rows: Sequence[int]) -> list[str | None]:
        """The stored thumbnails of ``rows`` as ``data:`` URLs (None where a row has none or it cannot be
        read), one per row."""
        from .export import thumb_data_uri

        thumbs = self.items["thumb"]
        out = []
        for r in rows:
            t = thumbs.iloc[int(r)]
            out.append(thumb_data_uri(self.ws.abspath(t)) if isinstance(t, str) else None)
        return out

    # -- the rest, on demand
    def neighbours(self, row: int, k: int = 10) -> pd.DataFrame:
        """The ``k`` true neighbours (original space) of the point at ``row``
        (:func:`core.projection.true_neighbours`): ``row, cosine, map_rank``, plus each neighbour's ``id``
        and ``item`` (its caption, else where it came from)."""
        from .export import item_rows
        from .items import item_titles
        from .mapvectors import MapVectors
        from .projection import neighbours_by_cosine

        if not 0 <= int(row) < self.n:
            raise ValueError(f"row must be in [0, {self.n}); got {row}")
        # the cosine with every mapped point, read chunk by chunk: memory does not grow with the map
        vectors = MapVectors(self.ws, self.model, self.res.ids)
        query = vectors.unit(np.array([int(row)]))[0]
        cos = np.empty(self.n, dtype=np.float32)
        for rows, unit in vectors.chunks():
            cos[rows] = unit @ query
        near = neighbours_by_cosine(cos, self.res.coords, int(row), k=k)
        rows = item_rows(self.ws, [str(self.res.ids[r]) for r in near["row"]])
        return near.assign(id=rows["id"].to_numpy(), item=item_titles(self.ws.items, rows).to_numpy())

    def density_grid(self, **options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`core.plots.density_grid` of the 2-D coordinates: ``(x (bins,), y (bins,), z (bins, bins))``."""
        from .plots import density_grid

        return density_grid(self.res.coords[:, :2], **options)

    def pair_rows(self) -> np.ndarray:
        """(p, 2) int64 rows of (image, caption) pairs on the map (:func:`core.quality.pair_positions`)."""
        if "pairs" not in self.memo:
            from .quality import pair_positions

            self.memo["pairs"] = pair_positions(self.items, self.res.ids)
        return self.memo["pairs"]

    def colour_options(self) -> dict:
        """The colouring as :func:`core.plots.map_figure` keywords (``color``, ``color_title``, and
        ``categories``/``palette`` or ``categorical``/``colorscale``/``color_range``)."""
        if self.codes is not None:
            return {"color": self.codes, "color_title": self.colour_title, "categories": list(self.categories),
                    "palette": list(self.palette)}
        if self.values is not None:
            return {"color": self.values, "color_title": self.colour_title, "categorical": False,
                    "colorscale": self.colorscale, "color_range": self.value_range}
        return {"color": None, "color_title": ""}

    def to_dict(self) -> dict:
        """A JSON-safe summary: parameters, points, colouring (categories with their colour and count, or
        the scale and range), named clusters (without member ids) and the selection's size."""
        out = {"params": self.params.to_dict(), "n": self.n, "dim": self.dim, "colour": self.params.colour,
               "colour_title": self.colour_title, "colour_kind": self.colour_kind}
        if self.codes is not None:
            counts = np.bincount(self.codes, minlength=len(self.categories))
            out["categories"] = [{"name": c, "colour": p, "n": int(k)}
                                 for c, p, k in zip(self.categories, self.palette, counts)]
        elif self.values is not None:
            out["colorscale"] = self.colorscale
            out["value_range"] = [float(v) for v in self.value_range] if self.value_range else None
        out["labels"] = [{k: v for k, v in lab.items() if k not in ("ids", "top_ids")} for lab in self.labels]
        out["selected"] = len(self.selection)
        if self.note:
            out["note"] = self.note
        return out


# ---- building a view -----------------------------------------------------------------------------
def colour_fields(values, title: str, *, categorical: bool | None = None, colorscale: str = "Viridis",
                  color_range: tuple[float, float] | None = None, max_categories: int | None = None) -> dict:
    """MapView's colour fields for (n,) ``values`` as :func:`core.plots.map_figure` takes them: categories
    (strings, booleans, few integers; or ``categorical=True``) as ``codes``/``categories``/``palette``
    (:func:`core.plots.category_codes`, hex colours), numbers as float32 ``values`` with ``colorscale``
    and ``value_range`` (``color_range``, else the finite values' min and max). None: no colour."""
    from .plots import MAX_CATEGORIES, category_codes, hex_colour, is_categorical

    if values is None:
        return {"colour_title": ""}
    if is_categorical(values) if categorical is None else categorical:
        codes, cats, palette = category_codes(values, max_categories or MAX_CATEGORIES)
        return {"codes": codes, "categories": tuple(cats), "palette": tuple(hex_colour(c) for c in palette),
                "colour_title": title}
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v)
    if color_range is None:
        color_range = (float(v[ok].min()), float(v[ok].max())) if ok.any() else (0.0, 1.0)
    return {"values": v.astype(np.float32), "colorscale": colorscale,
            "value_range": (float(color_range[0]), float(color_range[1])), "colour_title": title}


def colour_values(ws, model: str, params: MapParams, res, items: pd.DataFrame | None = None, *,
                  quality: pd.DataFrame | None = None, encoder=None) -> tuple[object, str, dict]:
    """What ``params.colour`` colours the points of map ``res`` by: ``(values (n,) or None, title,
    options)`` with ``options`` the :func:`colour_fields` keywords (``categorical``, ``colorscale``,
    ``color_range``). Clusters: :func:`core.projection.cluster_labels` (``params.k``); similarity:
    :func:`core.projection.similarity_to_text` of ``params.text`` (None without a text); quality scores:
    ``quality`` (core.quality's per-item frame; computed when not given)."""
    colour = params.colour
    if colour == COLOUR_MODALITY:
        return res.modality, "modality", {}
    if colour == COLOUR_TRUST:
        return res.trust, "trust", {"colorscale": "RdYlGn", "color_range": (0.0, 1.0), "categorical": False}
    if colour in QUALITY_COLOURS:
        if quality is None:
            from .quality import quality_analysis

            quality = quality_analysis(ws, model, k=QUALITY_K).items
        scores = quality.set_index("id")[colour].reindex(res.ids.astype(str)).to_numpy(np.float64)
        scale, label = QUALITY_COLOURS[colour]
        return scores, label, {"categorical": False, "colorscale": scale}
    if colour == COLOUR_CLUSTER:
        from .mapvectors import MapVectors
        from .projection import cluster_codes

        codes = cluster_codes(MapVectors(ws, model, res.ids), k=params.k, seed=0)
        names = [f"cluster {c + 1}" for c in range(int(codes.max()) + 1 if len(codes) else 0)]
        # the labels of cluster_labels as a Categorical: no string per point (a million points colour fast)
        return pd.Categorical.from_codes(codes, categories=names), f"cluster (k={params.k})", {}
    if colour == COLOUR_SIMILARITY:
        if not params.text:
            return None, "", {}
        from .mapvectors import MapVectors
        from .projection import similarity_to_text

        if encoder is None:
            from .encoders import load_encoder

            encoder = load_encoder(model)
        sim = similarity_to_text(MapVectors(ws, model, res.ids), text=params.text, encoder=encoder)
        return sim, "similarity", {"categorical": False}
    items = map_items(ws, res.ids) if items is None else items
    if colour not in items.columns:
        from .export import metadata_columns

        raise ValueError(f"colour must be one of {', '.join(colour_choices(metadata_columns(ws.items)))}; "
                         f"got {colour!r}")
    return items[colour].to_numpy(), colour, {}


def map_items(ws, ids: Sequence[str]) -> pd.DataFrame:
    """The items of a map, one row per id in map order (every column of ``ws.items``)."""
    return ws.items.set_index("id").reindex([str(i) for i in ids]).reset_index()


def build_view(ws, model: str, params: MapParams, *, res=None, selection: Sequence[str] | None = None,
               quality: pd.DataFrame | None = None, encoder=None, labels: Sequence[dict] | None = None) -> MapView:
    """The :class:`MapView` of ``params`` for ``model``'s vectors in ``ws``.

    ``res``: the map to draw (a :class:`core.projection.MapResult`, e.g. one with search matches placed
    into it); default :func:`core.projection.compute_map` of ``params.map_kwargs()`` (read from the
    workspace's cache when there). ``selection``: item ids to select. ``quality`` (core.quality's
    per-item frame), ``encoder`` (for "similarity") and ``labels`` (named clusters) may be given when the
    caller holds them already; otherwise they are computed here. Per-point texts and thumbnails are not
    built here (see :meth:`MapView.hover_text`, :meth:`MapView.thumbnails`).
    """
    if not isinstance(params, MapParams):
        raise TypeError(f"params must be a MapParams; got {type(params).__name__}")
    if res is None:
        from .projection import compute_map

        res = compute_map(ws, model, **params.map_kwargs())
    items = map_items(ws, res.ids)
    values, title, options = colour_values(ws, model, params, res, items, quality=quality, encoder=encoder)
    colour = colour_fields(values, title, **options)
    if params.colour == COLOUR_SIMILARITY and not params.text:
        colour["note"] = "Type a text to colour every point by its cosine similarity to it."
    if labels is None and params.names != NAMES_OFF:
        from .labels import map_labels

        labels = map_labels(ws, model, res, level=params.names)
    view = MapView(ws=ws, model=model, params=params, res=res, items=items, labels=tuple(labels or ()), **colour)
    return view.with_selection(selection) if selection else view


# ---- plotly ----------------------------------------------------------------------------------------
def spread_rows(x: np.ndarray, y: np.ndarray, box: Sequence[float] | None = None, *, limit: int,
                grid: tuple[int, int] | None = None, per_cell: int | None = None, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` indices (int64, sorted) of the points (x, y) inside ``box`` ``(x0, x1, y0, y1)`` (None: all
    finite points), spread over it: the box is cut into ``grid`` (nx, ny) cells (default about ``limit`` square
    cells) visited round-robin, each giving the next point of a seeded shuffle, so sparse regions get points as
    well as dense ones; ``per_cell`` caps what one cell gives. Without a cap every point inside is returned when
    they are at most ``limit``. Deterministic for one box and seed."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if box is None:
        if not finite.any():
            return np.zeros(0, dtype=np.int64)
        box = (x[finite].min(), x[finite].max(), y[finite].min(), y[finite].max())
    x0, x1, y0, y1 = (float(v) for v in box)
    if not (x0 <= x1 and y0 <= y1):
        raise ValueError(f"box must be (x0, x1, y0, y1) with x0 <= x1 and y0 <= y1; got {tuple(box)}")
    with np.errstate(invalid="ignore"):
        inside = np.flatnonzero(finite & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    if limit <= 0 or not len(inside):
        return np.zeros(0, dtype=np.int64)
    if per_cell is None and len(inside) <= limit:
        return inside
    nx, ny = grid or (max(1, math.ceil(math.sqrt(limit))),) * 2
    order = inside[np.random.default_rng(seed).permutation(len(inside))]
    gx = np.minimum(((x[order] - x0) / max(x1 - x0, 1e-12) * nx).astype(np.int64), nx - 1)
    gy = np.minimum(((y[order] - y0) / max(y1 - y0, 1e-12) * ny).astype(np.int64), ny - 1)
    cell = gy * nx + gx
    by_cell = np.argsort(cell, kind="stable")  # rank of each point in its cell, in the shuffled order
    sorted_cells = cell[by_cell]
    rank = np.empty(len(order), dtype=np.int64)
    rank[by_cell] = np.arange(len(order)) - np.searchsorted(sorted_cells, sorted_cells, side="left")
    pick = np.lexsort((cell, rank))  # every cell's first point, then every cell's second, …
    if per_cell is not None:
        pick = pick[rank[pick] < per_cell]
    return np.sort(order[pick[:limit]])


def view_figure(view: MapView, *, hover: Sequence[str] | None = None, pair_rows: np.ndarray | None = None,
                thumbnail_rows: Sequence[int] | None = None, neighbours: tuple[int, Sequence[int]] | None = None,
                uirevision: str | None = None, **figure_options):
    """:func:`core.plots.map_figure` of ``view``: its colouring, hover texts (``hover``, default
    :meth:`MapView.hover_texts` of every point), selection (2-D), named clusters, density (when
    ``view.params.density``), the pairs of ``pair_rows`` (default: every pair when ``view.params.pairs``),
    the thumbnails of ``thumbnail_rows`` (2-D; default none) and the lines of ``neighbours``
    ``(row, rows)``. ``figure_options`` go to map_figure (``height``...)."""
    from .plots import UIREVISION, map_figure

    p = view.params
    if pair_rows is None:
        pair_rows = view.pair_rows() if p.pairs else None
    thumbs = []
    if thumbnail_rows is not None and view.dim == 2 and len(thumbnail_rows):
        rows = list(thumbnail_rows)
        thumbs = [(float(view.coords[r, 0]), float(view.coords[r, 1]), uri)
                  for r, uri in zip(rows, view.thumbnails(rows)) if uri]
    return map_figure(view.coords, **view.colour_options(), hover_text=hover if hover is not None
                      else view.hover_texts(), customdata=view.ids, dim=view.dim, pair_segments=pair_rows,
                      thumbs=thumbs, uirevision=uirevision or UIREVISION,
                      selected=view.selected_ids if view.dim == 2 else None, density=p.density,
                      neighbours=neighbours, labels=list(view.labels) or None, **figure_options)
