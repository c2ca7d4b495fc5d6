"""The WebGL map: a Streamlit components-v2 element on regl-scatterplot (bundle: assets/scatter/scatter.js).

:func:`scatter_map` draws up to millions of 2-D points in the browser and returns what the user did (lasso,
box or click selection, hovered row, settled view, clicked cluster label). What travels:

* down: the columns as binary Arrow tables — x, y float32 (8 bytes a point) once per ``data_version``, the
  colour code uint8/uint16 (1–2 bytes a point) once per colouring — and small JSON for the rest. Every heavy
  part (points, colours, selected rows, neighbour lines, density grid, thumbnails) has a key; a part this
  browser session already holds goes down as its key alone, so a rerun with an unchanged map sends a few
  hundred bytes. A browser that lacks a key (its store was cleared) asks for it again (trigger
  ``missing``) and the next run sends it.
* up: the selection as base64 packed int32 row numbers (5.3 bytes a selected point; a trigger, sent once and
  kept in the session state), the hovered row, the view {x0, x1, y0, y1} once it settles (250 ms), the
  clicked row and the clicked label's cluster.

Hover captions and thumbnails are computed in Python, only for the hovered row and for the settled view (the
caller's ``thumbnails(view)`` picks at most a few hundred rows spread over it), never for every row.
The bundle is built from frontend/scatter (``make scatter``; Node is only needed to rebuild it).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import streamlit as st

from core.plots import colour_legend, density_layer, encode_colours

log = logging.getLogger(__name__)

COMPONENT = "jointscope.scatter"  # "<project>.<component>", the name Streamlit serves the assets under
KINDS = ("points", "colours", "selected", "lines", "density", "thumbs")

_mounts: dict[int, Callable[..., Any]] = {}  # id(component manager) -> mounting command


def asset_dir() -> Path:
    """The folder holding scatter.js (packaged as core/_assets/scatter, or assets/scatter of a checkout)."""
    from core.encoders import ASSETS_DIR, PROJECT_ROOT

    for folder in (ASSETS_DIR / "scatter", PROJECT_ROOT / "core" / "_assets" / "scatter",
                   PROJECT_ROOT / "assets" / "scatter"):
        if (folder / "scatter.js").is_file():
            return folder
    raise FileNotFoundError(f"the map component's bundle scatter.js is missing under {ASSETS_DIR / 'scatter'} "
                            "(run `make scatter` in a checkout)")


def _mount_command() -> Callable[..., Any]:
    """The component's mounting command on the active Streamlit runtime, registered once per runtime.

    The bundle is served as a file (``/_stcore/bidi-components/jointscope.scatter/scatter.js``, cached by the
    browser) rather than inlined, so a rerun does not carry its 240 kB: the asset folder is declared to the
    runtime's component manager the way a ``[tool.streamlit.component]`` manifest would declare it. Where that
    is refused (another Streamlit) the bundle goes inline. No shadow root (``isolate_styles=False``, its CSS is
    scoped by class): regl-scatterplot finds its canvas with ``document.elementsFromPoint``, which a shadow root
    hides."""
    from streamlit.components.v2.get_bidi_component_manager import get_bidi_component_manager

    manager = get_bidi_component_manager()
    mount = _mounts.get(id(manager))
    if mount is not None and manager.get(COMPONENT) is not None:
        return mount
    folder = asset_dir()
    try:
        from streamlit.components.v2.manifest_scanner import ComponentConfig, ComponentManifest

        project, name = COMPONENT.split(".")
        manager.register_from_manifest(
            ComponentManifest(name=project, version="1", components=[ComponentConfig(name=name, asset_dir=".")]),
            folder)
        mount = st.components.v2.component(COMPONENT, js="scatter.js", isolate_styles=False)
    except Exception as err:  # noqa: BLE001 — any failure of the file-backed route falls back to inline JS
        log.warning("the map component's bundle is sent inline (%s)", err)
        mount = st.components.v2.component(COMPONENT, js=(folder / "scatter.js").read_text(encoding="utf-8"),
                                           isolate_styles=False)
    _mounts[id(manager)] = mount
    return mount


# ---- encoding ----------------------------------------------------------------------------------------------
def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _column(name: str, values, n: int, dtype) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"scatter_map: {name} must be a 1-D array of {n} values (the length of x); "
                         f"got shape {arr.shape}")
    return arr.astype(dtype, copy=False)


def decode_rows(sel: Any, n: int) -> np.ndarray:
    """The rows of a selection state ``{"rows": base64 of little-endian int32, ...}`` as (k,) int32, rows
    outside 0..n-1 dropped; empty for no selection."""
    if not isinstance(sel, dict) or not sel.get("rows"):
        return np.zeros(0, dtype=np.int32)
    try:
        rows = np.frombuffer(base64.b64decode(sel["rows"]), dtype="<i4").astype(np.int32)
    except (ValueError, TypeError):
        log.warning("scatter_map: the selection from the browser is not base64 int32; ignored")
        return np.zeros(0, dtype=np.int32)
    return rows[(rows >= 0) & (rows < n)]


def _view_of(v: Any) -> dict | None:
    if not isinstance(v, dict):
        return None
    try:
        out = {k: float(v[k]) for k in ("x0", "x1", "y0", "y1")}
    except (KeyError, TypeError, ValueError):
        return None
    ok = all(math.isfinite(val) for val in out.values()) and out["x1"] > out["x0"] and out["y1"] > out["y0"]
    for k in ("w", "h"):  # the map's size in CSS pixels, when the browser reports it
        if isinstance(v.get(k), (int, float)) and math.isfinite(v[k]) and v[k] > 0:
            out[k] = float(v[k])
    if isinstance(v.get("points"), str):  # the points it is a view of (see points_key)
        out["points"] = v["points"]
    return out if ok else None


def points_key(data_version: str | int, n: int) -> str:
    """Names the points of a map drawn with ``data_version`` and ``n`` points (what a reported view belongs to)."""
    return f"v:{data_version}:{n}"


def _view_for(v: Any, key: str | None) -> dict | None:
    """A reported view, if it is a view of the points ``key`` (a view that names no points is taken as is)."""
    view = _view_of(v)
    if view is None or (key is not None and view.get("points") not in (None, key)):
        return None
    return view


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _labels(labels: Sequence[dict]) -> list[dict]:
    out = []
    for i, lab in enumerate(labels):
        try:
            x, y = float(lab["x"]), float(lab["y"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"scatter_map: labels[{i}] needs numeric x and y; got {lab!r}") from None
        if math.isfinite(x) and math.isfinite(y):
            out.append({"name": str(lab.get("name", "")), "x": x, "y": y, "cluster": _jsonable(lab.get("cluster")),
                        "n": int(lab.get("n") or 0)})
    return out


# ---- the element -------------------------------------------------------------------------------------------
def _before(key: str) -> dict:
    """The browser's state of this run for the element ``key`` (state values and this run's triggers)."""
    try:
        state = st.session_state[key]
    except (KeyError, AttributeError):
        return {}
    return dict(state) if isinstance(state, dict) else {}


def _selection(key: str, n: int, before: dict) -> dict:
    """The user's last selection {rows (k,) int32, token, clicked}. It comes up once, as a trigger (so the
    following reruns do not carry it up again), and is kept in the session state from then on."""
    name = f"_scatter_selection::{key}"
    event = before.get("selection")
    if isinstance(event, dict):
        clicked = event.get("clicked")
        st.session_state[name] = {"rows": decode_rows(event, n), "token": event.get("token") or None, "n": n,
                                  "clicked": int(clicked) if isinstance(clicked, int) and 0 <= clicked < n else None}
    kept = st.session_state.get(name)
    if not isinstance(kept, dict) or kept.get("n") != n:
        return {"rows": np.zeros(0, dtype=np.int32), "token": None, "clicked": None}
    return kept


def _label_click(event: Any) -> tuple[Any, Any]:
    """``(cluster, click)`` of the last click on a name: the browser keeps it as a state value ``{cluster, click,
    uid}`` (a count, so a rerun racing it cannot drop it); ``(None, None)`` before any click."""
    if isinstance(event, dict) and "cluster" in event:
        return _jsonable(event["cluster"]), (event.get("uid"), event.get("click"))
    return (_jsonable(event), ("legacy", event)) if event is not None else (None, None)


def current_state(key: str, n: int, data_version: str | int | None = None) -> dict:
    """What :func:`scatter_map` with this ``key`` (and ``n`` points) returns in this run, readable before it is
    drawn, so a page can draw the selection it gets in the same run (``selected=``). With ``data_version``, a
    view the browser reported for other points (the last map, before it drew the new one) is None."""
    before = _before(key)
    sel = _selection(key, n, before)
    hovered = before.get("hovered")
    return {
        "selection": sel["rows"],
        "hovered": int(hovered) if isinstance(hovered, int) and 0 <= hovered < n else None,
        "view": _view_for(before.get("view"), None if data_version is None else points_key(data_version, n)),
        "label_clicked": _label_click(before.get("label_clicked"))[0],
        "label_click": _label_click(before.get("label_clicked"))[1],  # names that click: act on a new one only
        "clicked": sel["clicked"],
        "token": sel["token"],  # names one selection the browser made (a new lasso of the same rows has another)
    }


class _Parts:
    """The heavy parts of one run's ``data``: each part has a key, and a part whose key the browser already holds
    (``held``: kind -> key, kept in the session state) goes down as its key alone."""

    def __init__(self, data: dict[str, Any], held: dict[str, str]):
        self.data, self.held = data, held

    def put(self, kind: str, part_key: str | None, make: Callable[[], Any]) -> None:
        """Name part ``kind`` by ``part_key`` (None: no such part) and send ``make()`` when the browser lacks it."""
        self.data[f"{kind}_key"] = part_key
        if part_key is None:
            self.held.pop(kind, None)
            return
        if self.held.get(kind) != part_key:
            self.data[kind] = make()
            self.held[kind] = part_key


def _held(key: str, before: dict) -> dict[str, str]:
    """The parts (kind -> key) the browser holds for the element ``key``, less those it says it lacks."""
    held: dict[str, str] = st.session_state.setdefault(f"_scatter_held::{key}", {})
    missing = before.get("missing")
    if isinstance(missing, list):
        for kind in KINDS:
            if held.get(kind) in missing:
                held.pop(kind, None)
    return held


def _selected_part(parts: _Parts, selected, n: int, token: str | None, reported: np.ndarray) -> None:
    """The selected rows (None: no selection); rows the browser itself reported under ``token`` go by that
    token. Raises ``ValueError`` for a row outside the points."""
    if selected is None:
        parts.put("selected", None, dict)
        return
    rows = np.ascontiguousarray(np.asarray(selected).astype(np.int32).reshape(-1))
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"scatter_map: selected holds row numbers outside 0–{n - 1}")
    same = token and len(rows) == len(reported) and np.array_equal(np.sort(rows), reported)
    parts.put("selected", token if same else _digest(rows.tobytes()), lambda: pa.table({"row": rows}))


def _lines_part(parts: _Parts, lines) -> None:
    """The (m, 2) row pairs drawn as segments (None or empty: none); raises ``ValueError`` for another shape."""
    if lines is None or len(lines) == 0:
        parts.put("lines", None, dict)
        return
    pairs = np.asarray(lines).astype(np.int32)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"scatter_map: lines must be (m, 2) row pairs; got shape {pairs.shape}")
    pairs = np.ascontiguousarray(pairs)
    parts.put("lines", _digest(pairs.tobytes()),
              lambda: pa.table({"a": np.ascontiguousarray(pairs[:, 0]), "b": np.ascontiguousarray(pairs[:, 1])}))


def _density_part(parts: _Parts, density: tuple | None) -> None:
    """The density grid ``(gx, gy, z)`` as the box it covers (JSON) and, when sent, its cells (``density_z``)."""
    if density is None:
        parts.put("density", None, dict)
        return
    try:
        layer = density_layer(*density)
    except ValueError as err:
        raise ValueError(f"scatter_map: {err}") from None
    zf = layer.pop("z")
    meta = layer
    parts.put("density", _digest(zf.tobytes(), json.dumps(meta)), lambda: meta)
    if "density" in parts.data:
        parts.data["density_z"] = pa.table({"z": zf})


def _thumbs_part(parts: _Parts, key: str, thumbnails: Callable[[dict], Sequence[tuple[int, str]]] | None,
                 current_view: dict | None, drawn: str, n: int) -> None:
    """The thumbnails of the settled view: ``thumbnails(view)`` runs once per view (kept in the session state);
    only ``data:image/`` URLs of rows among the points are kept."""
    if thumbnails is None or current_view is None or n == 0:
        parts.put("thumbs", None, dict)
        return
    vkey = _digest(drawn, json.dumps(current_view, sort_keys=True))
    cache_name = f"_scatter_held::{key}::thumbs"
    cached = st.session_state.get(cache_name)
    if not (isinstance(cached, dict) and cached.get("key") == vkey):
        items = [{"row": int(r), "url": u} for r, u in thumbnails(current_view)
                 if isinstance(u, str) and u.startswith("data:image/") and 0 <= int(r) < n]
        cached = {"key": vkey, "items": items}
        st.session_state[cache_name] = cached
    parts.put("thumbs", vkey, lambda: {"items": cached["items"]})


def scatter_map(*, key: str, x, y, codes=None, categories: Sequence[str] = (), palette: Sequence[str] = (),
                values=None, colorscale: Sequence[str] | None = None,
                value_range: tuple[float, float] | None = None, colour_title: str = "", labels: Sequence[dict] = (),
                selected=None, lines=None, density: tuple | None = None, height: int = 640,
                view: dict | None = None, point_size: float | None = None,
                hover_text: Callable[[int], str] | None = None,
                thumbnails: Callable[[dict], Sequence[tuple[int, str]]] | None = None,
                data_version: str | int | None = None) -> dict:
    """Draw a WebGL map of ``len(x)`` points and return what the user did with it.

    Parameters (all keyword-only):
        key: the element's Streamlit key (also names its session state).
        x, y: (n,) map coordinates (float32 on the wire); a point with a NaN coordinate is not drawn.
        codes: (n,) small ints, each point's index into ``palette`` (hex colours); ``categories`` names them.
        values: (n,) floats coloured along ``colorscale`` (hex colours) over ``value_range`` (default min–max).
        colour_title: names the colouring in the map's legend (categories with their counts, or a ramp).
        labels: cluster names ``[{name, x, y, cluster, n}]`` drawn at (x, y), the largest (``n``) first; one that
            would cover a larger one is hidden until a zoom separates them. Clicking one reports its cluster.
        selected: row numbers drawn in their colour while every other point is grey; None: no selection.
        lines: (m, 2) row pairs drawn as segments (e.g. the true neighbours of a clicked point).
        density: ``(gx (w,), gy (h,), z (h, w))`` grid drawn under the points as a heat layer.
        height: pixels. view: {x0, x1, y0, y1} to show (pass the returned view back to keep it on reload).
        point_size: pixels (default: from n). hover_text: ``row -> caption``, called for the hovered row only.
        thumbnails: ``view -> [(row, data: URL)]``, called once per settled view {x0, x1, y0, y1, w, h} (w, h:
            the map's size in CSS pixels); the images are drawn small at their points (e.g.
            :meth:`core.mapview.MapView.thumbnail_items`).
        data_version: names the (x, y) columns; the same version is not sent again. Default: their hash.

    Returns {"selection": (k,) int32 rows (lasso, box or click; empty when none), "hovered": row | None,
    "view": {x0, x1, y0, y1} | None, "label_clicked": the cluster of the last click on a name (None before one),
    "label_click": names that click (a new value: a new click), "clicked": row | None,
    "token": names the selection (None for none)}.
    """
    xa = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    n = len(xa)
    if np.asarray(x).ndim != 1:
        raise ValueError(f"scatter_map: x must be 1-D; got shape {np.asarray(x).shape}")
    ya = np.ascontiguousarray(_column("y", y, n, np.float32))
    colour_codes, pal = encode_colours(n, codes=codes, palette=palette, categories=categories, values=values,
                                       colorscale=colorscale, value_range=value_range)
    before = _before(key)
    held = _held(key, before)  # parts the browser says it lacks are sent again
    sel_kept = _selection(key, n, before)
    reported, token = sel_kept["rows"], sel_kept["token"]
    if token and st.session_state.get(f"_scatter_held::{key}::token") != token:
        st.session_state[f"_scatter_held::{key}::token"] = token
        held["selected"] = token  # the browser stored the rows it reported under this token
    data: dict[str, Any] = {"uid": str(key), "n": n, "height": int(height), "palette": pal,
                            "point_size": float(point_size) if point_size else None}
    parts = _Parts(data, held)

    drawn = points_key(data_version if data_version is not None else _digest(xa.tobytes(), ya.tobytes()), n)
    parts.put("points", drawn, lambda: pa.table({"x": xa, "y": ya}))
    if colour_codes is None:
        parts.put("colours", None, dict)
    else:
        parts.put("colours", _digest(colour_codes.tobytes()), lambda: pa.table({"c": colour_codes}))
    _selected_part(parts, selected, n, token, reported)
    _lines_part(parts, lines)
    _density_part(parts, density)
    _thumbs_part(parts, key, thumbnails, _view_for(before.get("view"), drawn) or _view_of(view), drawn, n)

    data["labels"] = _labels(labels)
    data["legend"] = colour_legend(colour_codes, pal, categories=categories, title=colour_title, values=values,
                                   value_range=value_range)
    hovered = before.get("hovered")
    hovered = int(hovered) if isinstance(hovered, int) and 0 <= hovered < n else None
    data["hover"] = ({"row": hovered, "text": str(hover_text(hovered))}
                     if hover_text is not None and hovered is not None else None)
    data["view"] = _view_of(view)
    data["selection_token"] = token  # the browser sends a selection again until it sees its token here

    _mount_command()(
        key=key, data=data, height="content",
        on_selection_change=lambda: None, on_hovered_change=lambda: None, on_view_change=lambda: None,
        on_label_clicked_change=lambda: None, on_missing_change=lambda: None)
    return current_state(key, n, data_version)  # the state and triggers of this run (read before it was drawn)
