"""Exports: a model's vectors with item metadata (Parquet, or TSV for the TensorFlow Embedding Projector),
a table of selected items (:func:`selection_table`) and a map as one standalone HTML file (:func:`map_html`).
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .items import captions, item_titles  # noqa: F401 - re-exported: core.export.captions keeps working
from .storage import atomic_write, atomic_write_bytes, atomic_write_parquet
from .workspace import ITEM_COLUMNS

log = logging.getLogger(__name__)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """One TSV/CSV cell: no tabs/newlines, and no leading formula characters (spreadsheet injection)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    s = str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")
    if s.startswith(_FORMULA_START):
        s = "'" + s
    return s


def safe_csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV with every text cell passed through :func:`safe_cell` (for download buttons)."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_object_dtype(out[col]) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else safe_cell(v))
    return out.to_csv(index=False).encode("utf-8")


def user_columns(items: pd.DataFrame) -> list[str]:
    """The user's metadata columns of an items frame (every column but :data:`core.workspace.ITEM_COLUMNS`)."""
    return [c for c in items.columns if c not in ITEM_COLUMNS]


def metadata_columns(items: pd.DataFrame) -> list[str]:
    """The user's metadata columns that have a value for at least one of ``items``."""
    return [c for c in user_columns(items) if items[c].notna().any()]


def _free_name(name: str, taken) -> str:
    """``name``, or ``meta_name`` (``meta_meta_name``…) when an export's own column already has it."""
    while name in taken:
        name = f"meta_{name}"
    return name


def export(ws, model: str, out_dir: str | Path, *, fmt: str = "parquet") -> dict:
    """Write the vectors of ``model`` and their items to ``out_dir``; returns ``{path, n, format}``."""
    X, ids = ws.vectors(model)
    if len(ids) == 0:
        raise ValueError(f"workspace {ws.name!r} has no vectors for {model!r}; run `jointscope embed` first")
    items = ws.items.set_index("id").loc[list(ids)].reset_index()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df = items.copy()
        df["vector"] = list(np.asarray(X, dtype=np.float32))
        path = out / f"{ws.name}.parquet"
        atomic_write_parquet(path, df)
    elif fmt == "tsv":
        path = out / "vectors.tsv"
        atomic_write(path, lambda f: np.savetxt(f, X, delimiter="\t", fmt="%.6g"))
        label = items["text"].where(items["text"].notna(), items["source"])
        columns = {"label": label, "id": items["id"], "modality": items["modality"], "source": items["source"]}
        for c in user_columns(items):  # a user column called "label" must not replace the Projector's label
            columns[_free_name(c, columns)] = items[c]
        meta = pd.DataFrame(columns)

        def write_meta(f):
            txt = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(txt, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            w.writerow([safe_cell(c) for c in meta.columns])
            for row in meta.itertuples(index=False):
                w.writerow([safe_cell(v) for v in row])
            txt.flush()
            txt.detach()

        atomic_write(out / "metadata.tsv", write_meta)
    else:
        raise ValueError(f"format must be 'parquet' or 'tsv'; got {fmt!r}")
    log.info("exported %d vectors of %s to %s", len(ids), model, path)
    return {"path": str(path), "n": len(ids), "format": fmt, "model": model}


# ---- selections ----------------------------------------------------------------------------------
SELECTION_COLUMNS = ("id", "modality", "caption", "file", "map_x", "map_y", "map_z")


def item_rows(ws, ids: Sequence[str]) -> pd.DataFrame:
    """The items of ``ids``, one row per id in that order; ValueError naming ids the workspace lacks."""
    items = ws.items.set_index("id")
    ids = [str(i) for i in ids]
    missing = pd.Index(ids).difference(items.index)
    if len(missing):
        raise ValueError(f"{len(missing)} item id(s) not in workspace {ws.name!r}: "
                         + ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""))
    return items.loc[ids].reset_index()


def selection_table(ws, ids: Sequence[str], coords: np.ndarray | None = None) -> pd.DataFrame:
    """Items for download: ``id, modality, caption, file``, every user metadata column, and ``map_x,
    map_y`` (``map_z``) when ``coords`` (len(ids), 2 or 3) are given; no internal image/thumbnail paths.

    ``caption`` is the item's caption (:func:`core.items.captions`); ``file`` is where the item came from
    (the ``source`` ingest recorded: ``photos.zip:IMG_1.jpg``, ``captions.csv row 3``, a manifest's path
    or URI). A user column named like one of these is exported as ``meta_<name>``.
    """
    rows = item_rows(ws, ids)
    out = pd.DataFrame({"id": rows["id"], "modality": rows["modality"], "caption": captions(ws.items, rows),
                        "file": rows["source"]})
    for c in user_columns(rows):
        out[_free_name(c, SELECTION_COLUMNS)] = rows[c]
    if coords is not None:
        coords = np.asarray(coords, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[0] != len(rows) or coords.shape[1] not in (2, 3):
            raise ValueError(f"coords must be ({len(rows)}, 2 or 3); got shape {coords.shape}")
        for j, axis in enumerate("xyz"[: coords.shape[1]]):
            out[f"map_{axis}"] = coords[:, j]
    return out


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as a Parquet file in memory (for download buttons)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def hover_lines(items: pd.DataFrame, meta: Sequence[str] | None = None, captions: Sequence | None = None
                ) -> list[str]:
    """One hover text per item (plain text; :func:`core.plots.map_figure` escapes it): the text, or for an
    image its caption (when ``captions`` gives one, see :func:`captions`) and file, or the file; then the
    modality and up to four ``meta`` values (default: the metadata columns with a value)."""
    meta = metadata_columns(items) if meta is None else meta
    shown = hover_columns(meta)
    caps = [None] * len(items) if captions is None else list(captions)
    return [hover_line(row._asdict(), cap, shown) for row, cap in zip(items.itertuples(index=False), caps)]


def hover_columns(meta: Sequence[str]) -> list[str]:
    """The metadata columns a hover text shows: the first four of ``meta`` that are identifiers."""
    return [k for k in list(meta)[:4] if k.isidentifier()]


def hover_line(row, caption: str | None, shown: Sequence[str]) -> str:
    """The hover text of one item (see :func:`hover_lines`): ``row`` maps column -> value (``modality``,
    ``text``, ``source`` and the ``shown`` columns, from :func:`hover_columns`); ``caption`` is an
    image's caption (:func:`captions`) or None."""
    source, text, modality = row.get("source"), row.get("text"), row.get("modality")
    file = source if isinstance(source, str) else ""
    if modality != "image" and isinstance(text, str):
        head = text[:120]
    else:
        head = f"{str(caption)[:120]}\n{file}" if isinstance(caption, str) else file[:120]
    vals = ", ".join(f"{k}={row.get(k)}" for k in shown if pd.notna(row.get(k)))
    return f"{head}\n{modality}" + (f" · {vals}" if vals else "")


def thumb_data_uri(path: str | Path | None) -> str | None:
    """A stored thumbnail (or any small image file) as a base64 ``data:`` URI; None when it cannot be read."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    ext = Path(path).suffix.lower().lstrip(".")
    mime = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "gif": "gif"}.get(ext, "webp")
    return f"data:image/{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ---- a map as one standalone HTML file -------------------------------------------------------------
MAX_HTML_THUMBS = 150  # images drawn as thumbnails (a sample spread over the map)
MAX_HTML_CAPTIONS = 200_000  # 2-D maps of up to this many points carry every point's hover text
MAX_HTML_CAPTION_CHARS = 240  # each hover text cut to this (its caption to 120, see hover_line)
MAX_HTML_LINES = 50_000  # image-caption pair lines drawn (a seeded sample above)
MAP_COLOURS = ("modality", "cluster", "trust")  # besides the user's metadata columns (core.mapview.colour_choices)
# the file may run its inline scripts and show inline images, and load nothing from anywhere
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def colour_choices(ws) -> list[str]:
    """What a map can be coloured by (:func:`map_colour`): modality, cluster, trust, metadata columns
    (:func:`core.mapview.colour_choices` of the workspace's metadata columns)."""
    from .mapview import colour_choices as choices

    return choices(metadata_columns(ws.items))


def map_colour(ws, model: str, res, name: str = "modality", *, k: int = 8) -> tuple[object, str, dict]:
    """``(values, title, map_figure options)`` colouring the points of map ``res`` by ``name``: "modality",
    "cluster" (``k`` k-means clusters, :func:`core.projection.cluster_labels`), "trust" (per-point
    trust), or a metadata column (:func:`core.mapview.colour_values`, what :func:`core.mapview.build_view`
    colours by)."""
    from .mapview import MapParams, colour_values

    choices = colour_choices(ws)
    if name not in choices:
        raise ValueError(f"cannot colour by {name!r}: choose one of {', '.join(choices)}")
    return colour_values(ws, model, MapParams(dim=res.dim, colour=name, k=k, names="off"), res)


def map_html(ws, model: str, res, *, color=None, color_title: str = "modality", thumbs: int = MAX_HTML_THUMBS,
             pairs: bool = False, labels: Sequence[dict] | None = None, view=None, **figure_options) -> str:
    """Map ``res`` (a :class:`core.projection.MapResult` of ``model`` in ``ws``) as one HTML document that
    opens offline and loads nothing (a content security policy forbids every request); see :func:`view_html`.

    ``view``: a :class:`core.mapview.MapView` of ``res`` to draw as it is (its colouring, names, pairs,
    density; ``color``, ``pairs`` and ``labels`` are then ignored). Else ``color``: (n,) values
    (default: the modality) with ``color_title`` and the colour options among ``figure_options``
    (``categorical``, ``colorscale``, ``color_range``, ``max_categories``; see :func:`map_colour`);
    ``pairs`` joins images and captions; ``labels`` (:func:`core.labels.map_labels`) names the clusters.
    ``thumbs``: at most this many images (spread over the map) drawn as thumbnails. The other
    ``figure_options`` go to the plotly figure of a 3-D map (``height``...).
    """
    from .mapview import MapParams, build_view

    colour_keys = ("categorical", "colorscale", "color_range", "max_categories")  # colour_fields' options
    if view is None:
        params = MapParams(method=res.method, dim=res.dim, gap_corrected=bool(res.gap_corrected), pairs=bool(pairs),
                           names="off")
        view = build_view(ws, model, params, res=res, labels=labels or ())
        if color is not None:
            view = view.with_colour(color, color_title, **{k: figure_options[k] for k in colour_keys
                                                           if k in figure_options})
    return view_html(view, thumbs=thumbs, **{k: v for k, v in figure_options.items() if k not in colour_keys})


def standalone_script() -> str:
    """The standalone map's script (assets/scatter/standalone.js, built from frontend/scatter/src/standalone.js:
    the Map page's WebGL map as one classic script that sets ``window.jointscopeMap``)."""
    from .encoders import ASSETS_DIR, PROJECT_ROOT

    for folder in (ASSETS_DIR / "scatter", PROJECT_ROOT / "core" / "_assets" / "scatter",
                   PROJECT_ROOT / "assets" / "scatter"):
        path = folder / "standalone.js"
        if path.is_file():
            js = path.read_text(encoding="utf-8")
            if "</script" in js.lower():  # would end the inline <script> element early
                raise ValueError(f"{path} contains '</script' and cannot be inlined into an HTML page")
            return js
    raise FileNotFoundError(f"the standalone map's script standalone.js is missing under {ASSETS_DIR / 'scatter'} "
                            "(run `make scatter` in a checkout)")


def _b64_column(values, dtype: str) -> dict:
    """(m,) values as ``{dtype, b64}``: little-endian ``dtype`` ("f4", "i4", "u1", "u2") bytes in base64."""
    arr = np.ascontiguousarray(np.asarray(values).astype(f"<{dtype}", copy=False).reshape(-1))
    return {"dtype": dtype, "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def colour_codes(view) -> tuple[np.ndarray | None, list[str]]:
    """The colouring of ``view`` as the WebGL map draws it (:func:`core.plots.encode_colours`): one small-int
    code per point and the palette it indexes (categories keep their codes and colours; continuous values in
    :data:`core.plots.VALUE_STEPS` steps of the view's colour scale, the last slot for a missing value).
    ``(None, [one colour])`` when nothing colours it."""
    from .plots import colorscale_hex, encode_colours

    if view.codes is not None:
        palette = [p if _HEX.fullmatch(str(p)) else "#888888" for p in view.palette]
        return encode_colours(view.n, codes=view.codes, palette=palette, categories=view.categories)
    if view.values is not None:
        return encode_colours(view.n, values=view.values, colorscale=colorscale_hex(view.colorscale, 11),
                              value_range=view.value_range)
    return encode_colours(view.n)


def map_payload(view, *, thumbs: int = MAX_HTML_THUMBS, max_captions: int = MAX_HTML_CAPTIONS) -> dict:
    """What the standalone map's script draws for the 2-D ``view`` (JSON-safe; the format is described at the
    top of frontend/scatter/src/standalone.js): x, y (float32), colour codes (uint8/uint16) and the
    label/selection rows (int32) as base64; every point's hover text (:meth:`core.mapview.MapView.hover_text`,
    cut to :data:`MAX_HTML_CAPTION_CHARS`) when the map has at most ``max_captions`` points, else None; the
    named clusters with their rows; image-caption pair lines (``view.params.pairs``, at most
    :data:`MAX_HTML_LINES`); the density grid (``view.params.density``); up to ``thumbs`` thumbnails as
    ``data:`` URLs with their rows."""
    from .plots import colour_legend, density_layer

    if view.dim != 2:
        raise ValueError(f"map_payload draws 2-D maps; this view is {view.dim}-D")
    codes, palette = colour_codes(view)
    columns = {"x": _b64_column(view.x, "f4"), "y": _b64_column(view.y, "f4")}
    if codes is not None:
        columns["c"] = _b64_column(codes, "u1" if codes.dtype == np.uint8 else "u2")
    out: dict = {"uid": "html-map", "n": view.n, "height": None, "point_size": None, "palette": palette,
                 "colour_title": view.colour_title, "columns": columns,
                 "categories": [str(c) for c in view.categories] if view.codes is not None else None,
                 "value_range": ([float(v) for v in view.value_range]
                                 if view.values is not None and view.value_range else None),
                 "legend": colour_legend(codes, palette, categories=view.categories if view.codes is not None else (),
                                         title=view.colour_title, values=view.values,
                                         value_range=view.value_range)}
    captions = None
    if view.n <= max_captions:
        captions = [t[:MAX_HTML_CAPTION_CHARS] for t in view.hover_texts()]
    out["captions"] = captions
    out["labels"] = [{"name": str(lab["name"]), "x": float(lab["x"]), "y": float(lab["y"]),
                      "cluster": lab["cluster"].item() if isinstance(lab["cluster"], np.generic) else lab["cluster"],
                      "n": int(lab.get("n") or 0), "rows": _b64_column(view.rows_of(lab.get("ids", ())), "i4")}
                     for lab in view.labels if np.isfinite([lab["x"], lab["y"]]).all()]
    out["selected"] = _b64_column(view.selection, "i4") if len(view.selection) else None
    out["lines"] = out["n_lines"] = None
    if view.params.pairs:
        pairs = np.asarray(view.pair_rows(), dtype=np.int64).reshape(-1, 2)
        out["n_lines"] = [min(len(pairs), MAX_HTML_LINES), len(pairs)]
        if len(pairs) > MAX_HTML_LINES:
            pairs = pairs[np.sort(np.random.default_rng(0).choice(len(pairs), MAX_HTML_LINES, replace=False))]
        if len(pairs):
            out["lines"] = {"a": _b64_column(pairs[:, 0], "i4"), "b": _b64_column(pairs[:, 1], "i4")}
    out["density"] = None
    if view.params.density and view.n >= 2:
        layer = density_layer(*view.density_grid())
        out["density"] = {**layer, "z": _b64_column(layer["z"], "f4")}
    rows = view.thumbnail_rows(max_n=thumbs) if thumbs > 0 else []
    out["thumbs"] = [{"row": int(r), "url": u} for r, u in zip(rows, view.thumbnails(rows)) if u]
    return out


def _script_json(obj) -> str:
    """``obj`` as JSON to sit inside a ``<script type="application/json">`` element: every ``<`` written as
    ``\\u003c`` (so no string in it can close the element or open a comment), ``&`` and ``>`` likewise."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _title(view) -> str:
    ws, model, res = view.ws, view.model, view.res
    n_total = res.n_total if res.n_total is not None else res.n
    return (f"{ws.name} · {model} · {res.method.upper()} {res.dim}-D map · {res.n:,} points"
            + (f" (a sample of {n_total:,} items)" if n_total > res.n else "")
            + (", gap-corrected" if res.gap_corrected else ""))


def _document(title: str, body: str, style: str = "") -> str:
    esc = html.escape
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            '<style>body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222}'
            'h1{font-size:18px;font-weight:600;margin:0 0 8px}footer{font-size:13px;color:#555;margin-top:8px}'
            f'{style}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n')


def view_html(view, *, thumbs: int = MAX_HTML_THUMBS, **figure_options) -> str:
    """A :class:`core.mapview.MapView` as one standalone HTML document: a title line (workspace, model,
    method, points), the map, a plain-text footer; it opens offline and loads nothing (a content security
    policy forbids every request).

    A 2-D map is drawn with the Map page's WebGL map (regl-scatterplot; assets/scatter/standalone.js, inline)
    from :func:`map_payload` inlined as JSON, so every point is drawn, a million included: pan and zoom,
    lasso, box, a click on a point or on a cluster's name select (the other points turn grey, the count
    shows above the map; Escape or Clear clears), hover shows a point's text (caption cut to 120
    characters, file, modality, metadata) for maps of up to :data:`MAX_HTML_CAPTIONS` points (above that
    the point's colour category or value), up to ``thumbs`` images are drawn as thumbnails, and the
    toolbar's PNG button saves the view. The legend on the map shows the colours. A 3-D map is a
    plotly figure (plotly.js inline; ``figure_options`` go to :func:`core.mapview.view_figure`).
    """
    if view.dim != 2:
        return _plotly_html(view, **figure_options)
    payload = map_payload(view, thumbs=thumbs)
    labels = list(view.labels)
    color_title = view.colour_title or "one colour"
    lines = payload["n_lines"]
    captions = (f"hover a point for its caption, file and metadata (included for maps of up to "
                f"{MAX_HTML_CAPTIONS:,} points)" if payload["captions"] is not None else
                f"hover a point for its {view.colour_title or 'number'} (this map has more than "
                f"{MAX_HTML_CAPTIONS:,} points, so captions are not inlined)")
    footer = (f"Coloured by {color_title}. Every point is drawn: drag to pan, scroll to zoom; {captions}. "
              "Lasso or Box in the map's toolbar, a click on a point"
              + (" or on a cluster's name" if labels else "")
              + " selects: the other points turn grey and the count shows above the map; Escape or Clear clears "
              "the selection. PNG saves the view as an image"
              + (f"; {len(payload['thumbs'])} images drawn as thumbnails where they are in view"
                 if payload["thumbs"] else "")
              + (f"; {len(labels)} clusters named ({', '.join(sorted({str(d.get('method')) for d in labels}))})"
                 if labels else "")
              + (f"; lines join {lines[0]:,} image-caption pairs" + (f" (a sample of {lines[1]:,})"
                                                                     if lines[1] > lines[0] else "")
                 if lines and lines[0] else "")
              + f". Exported from Jointscope on {datetime.date.today().isoformat()}; "
              "this file is self-contained and works offline.")
    body = ('<div id="jointscope-map"></div>\n'
            f'<script type="application/json" id="jointscope-map-data">{_script_json(payload)}</script>\n'
            f"<script>{standalone_script()}</script>\n"
            "<script>window.jointscopeMap.mount(document.getElementById('jointscope-map'), "
            "JSON.parse(document.getElementById('jointscope-map-data').textContent));</script>\n"
            f"<footer>{html.escape(footer)}</footer>")
    return _document(_title(view), body)


def _plotly_html(view, **figure_options) -> str:
    """A 3-D :class:`core.mapview.MapView` as a standalone HTML document with its plotly figure."""
    from .mapview import view_figure

    fig = view_figure(view, **figure_options)
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id="jointscope-map",
                       config={"displaylogo": False, "responsive": True, "scrollZoom": True})
    labels = list(view.labels)
    footer = (f"Coloured by {view.colour_title or 'modality'}. Hover a point for its caption, file and metadata; "
              "drag to turn the map, scroll to zoom, click a legend entry to hide it"
              + (f"; {len(labels)} clusters named ({', '.join(sorted({d['method'] for d in labels}))}; "
                 "hover a name for its score)" if labels else "")
              + f". Exported from Jointscope on {datetime.date.today().isoformat()}; "
              "this file is self-contained and works offline.")
    return _document(_title(view), f"{plot}\n<footer>{html.escape(footer)}</footer>")


def write_map_html(path: str | Path, ws, model: str, res, **options) -> Path:
    """Write :func:`map_html` ``(ws, model, res, **options)`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, map_html(ws, model, res, **options).encode("utf-8"))
