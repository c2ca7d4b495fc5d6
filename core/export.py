"""Exports: a model's vectors with item metadata (Parquet, or TSV for the TensorFlow Embedding Projector),
a table of selected items (:func:`selection_table`) and a map as one standalone HTML file (:func:`map_html`).
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

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
    items = ws.items.drop_duplicates("id").set_index("id")
    ids = [str(i) for i in ids]
    missing = pd.Index(ids).difference(items.index)
    if len(missing):
        raise ValueError(f"{len(missing)} item id(s) not in workspace {ws.name!r}: "
                         + ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""))
    return items.loc[ids].reset_index()


def captions(items: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """The caption of each of ``rows``: a text's own text; an image's paired caption (the text its ``pair``
    names, else the first text that names the image); None for the rest. ``items``: all the workspace's."""
    texts = items[items["modality"] == "text"].drop_duplicates("id")
    by_id = texts.set_index("id")["text"]
    by_image = texts.dropna(subset=["pair"]).drop_duplicates("pair").set_index("pair")["text"]
    paired = rows["pair"].map(by_id).astype(object)
    paired = paired.where(paired.notna(), rows["id"].map(by_image).astype(object))
    out = rows["text"].where(rows["modality"] != "image", paired)
    return out.astype(object).where(out.notna(), None)


def item_titles(items: pd.DataFrame, rows: pd.DataFrame, limit: int = 80) -> pd.Series:
    """One short plain line per row for tables: its caption (:func:`captions`), else where it came from
    (``source``), cut to ``limit`` characters."""
    caption = captions(items, rows)
    head = caption.where(caption.notna(), rows["source"])
    return head.fillna("").astype(str).str.slice(0, limit)


def selection_table(ws, ids: Sequence[str], coords: np.ndarray | None = None) -> pd.DataFrame:
    """Items for download: ``id, modality, caption, file``, every user metadata column, and ``map_x,
    map_y`` (``map_z``) when ``coords`` (len(ids), 2 or 3) are given; no internal image/thumbnail paths.

    ``caption`` is a text's own text or an image's paired caption; ``file`` is where the item came from
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
MAX_HTML_THUMBS = 60
MAP_COLOURS = ("modality", "cluster", "trust")  # besides the user's metadata columns (core.mapview.colour_choices)
# the file may run its inline scripts and show inline images, and load nothing from anywhere
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")


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
    opens offline and loads nothing: plotly.js inline, thumbnails as ``data:`` URIs, a content security
    policy that forbids every request.

    ``view``: a :class:`core.mapview.MapView` of ``res`` to draw as it is (its colouring, names, pairs,
    density; ``color``, ``pairs`` and ``labels`` are then ignored). Else ``color``: (n,) values as
    :func:`core.plots.map_figure` takes them (default: the modality) with ``color_title`` and the colour
    options among ``figure_options`` (``colorscale``, ``color_range``, ``categorical``; see
    :func:`map_colour`); ``pairs`` joins images and captions; ``labels`` (:func:`core.labels.map_labels`)
    draws the clusters' names at their centres. Hover shows each item's caption, file, modality and
    metadata (escaped); up to ``thumbs`` images (spread over the map, 2-D maps) are drawn on the map.
    Above the map a title line (workspace, model, method, points), below it a plain-text footer.
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


def view_html(view, *, thumbs: int = MAX_HTML_THUMBS, **figure_options) -> str:
    """A :class:`core.mapview.MapView` as one standalone HTML document (see :func:`map_html`)."""
    from .mapview import view_figure

    ws, model, res, labels = view.ws, view.model, view.res, list(view.labels)
    rows = view.thumbnail_rows(max_n=thumbs) if res.dim == 2 and thumbs > 0 else []
    fig = view_figure(view, thumbnail_rows=rows, **figure_options)
    n_pictures = len(fig.layout.images) if res.dim == 2 else 0
    if res.dim == 2:
        fig.update_layout(dragmode="zoom")
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id="jointscope-map",
                       config={"displaylogo": False, "responsive": True, "scrollZoom": True})
    n_total = res.n_total if res.n_total is not None else res.n
    title = (f"{ws.name} · {model} · {res.method.upper()} {res.dim}-D map · {res.n:,} points"
             + (f" (a sample of {n_total:,} items)" if n_total > res.n else "")
             + (", gap-corrected" if res.gap_corrected else ""))
    color_title = view.colour_title or "modality"
    footer = (f"Coloured by {color_title}. Hover a point for its caption, file and metadata; drag to zoom, "
              "double-click to zoom out, click a legend entry to hide it"
              + (f"; {n_pictures} images drawn as thumbnails" if n_pictures else "")
              + (f"; {len(labels)} clusters named ({', '.join(sorted({d['method'] for d in labels}))}; "
                 "hover a name for its score)" if labels else "")
              + f". Exported from Jointscope on {datetime.date.today().isoformat()}; "
              "this file is self-contained and works offline.")
    esc = html.escape
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            '<style>body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222}'
            'h1{font-size:18px;font-weight:600;margin:0 0 8px}footer{font-size:13px;color:#555;margin-top:8px}'
            '</style>\n</head>\n<body>\n'
            f'<h1>{esc(title)}</h1>\n{plot}\n<footer>{esc(footer)}</footer>\n</body>\n</html>\n')


def write_map_html(path: str | Path, ws, model: str, res, **options) -> Path:
    """Write :func:`map_html` ``(ws, model, res, **options)`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, map_html(ws, model, res, **options).encode("utf-8"))
