"""Session state: the keys, the chosen workspace and model, the selection, page settings in the URL.

Session state holds small values and ids only (workspace name, model id, last reports as plain dicts);
heavy objects live in the caches of :mod:`pages.ui.cached`. What a page keeps for the open workspace is
named in one registry (``WORKSPACE_PREFIXES`` and friends): :func:`select` drops it when the workspace
changes (:func:`on_workspace_change`) and :func:`after_delete` takes deleted items out of it.
"""
from __future__ import annotations

import contextlib
import math
import re

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

import core
from pages.ui.cached import open_workspace
from pages.ui.text import plain

WS = "workspace"        # str | None — name of the open workspace under JOINTSCOPE_HOME
MODEL = "model"         # str | None — chosen model id
SHOW_HUB = "show_hub"   # bool — list every open_clip hub model in the sidebar
LAST_INGEST = "last_ingest"  # dict | None — IngestReport.to_dict() of the last import
LAST_EMBED = "last_embed"    # dict | None — EmbedReport.to_dict() of the last embedding run
EMBED_RUN = "embed_run"      # dict | None — {workspace, model} while an embedding runs; left set when it was stopped
UPLOAD_ROUND = "upload_round"  # int — bumped after an import to clear the uploader and text area
SELECTION = "selection"      # dict | None — {workspace, ids}: the workspace-level selection (Map, Search, Concepts…)
SELECTION_ROUND = "selection_round"  # int — bumped by Clear selection: selection tables start unselected
WORKSPACE_ROUND = "workspace_round"  # int — bumped by a workspace change: a map element without the old one's state
MODEL_NOTE = "model_note"    # str | None — said once on the next page run: a model switch, a link's missing workspace
URL_WS, URL_MODEL = "ws", "model"  # query parameters of the chosen workspace and model
DEMO_NAME = "demo"
DEMO_MODEL = "demo"


def list_workspaces() -> list[str]:
    try:
        return core.list_workspaces()
    except OSError:
        return []


def get_workspace(name: str | None = None) -> core.Workspace | None:
    """The open workspace (default: the chosen one); one cached object per folder.

    Raises ValueError for a bad name and FileNotFoundError when the folder is not a workspace.
    """
    name = st.session_state.get(WS) if name is None else name
    if not name:
        return None
    path = core.workspace_path(name).resolve()
    if not (path / "workspace.json").is_file():
        open_workspace.clear()
        raise FileNotFoundError(f"workspace {name!r} does not exist (any more) under {path.parent}")
    return open_workspace(str(path))


def create_workspace(name: str) -> core.Workspace:
    """Create (or open) the named workspace and select it. ValueError names what is wrong."""
    name = (name or "").strip()
    path = core.workspace_path(name)
    ws = core.Workspace(path, create=True)
    select(workspace=name)
    return ws


_KEEP = object()


def select(*, workspace: object = _KEEP, model: object = _KEEP) -> None:
    """Change the chosen workspace and/or model (the sidebar follows on the next run).

    A different workspace goes through :func:`on_workspace_change`: what the pages kept for the old one
    is dropped and, unless ``model`` is given too, the model is fitted to the new workspace.
    """
    ss = st.session_state
    if model is not _KEEP:
        ss[MODEL] = model
    if workspace is not _KEEP:
        changed = workspace != ss.get(WS)
        ss[WS] = workspace
        if changed:
            on_workspace_change(fit=model is _KEEP)


# ---- state that belongs to one workspace ----------------------------------------------------------
# Every session key a page keeps for the open workspace: item ids, a query, a result's parameters, a
# page's settings. One registry, so a workspace switch or a deletion cannot miss one page's copy.
WORKSPACE_PREFIXES = ("search_", "axes_", "map_", "concepts_", "items_", "ana_", "quality_", "clusters_",
                      "delete_ws_", "embed_refresh", "neighbours_", "selection_labels", "selection_table",
                      "_kept_", "_scatter_")  # _kept_: a page's last widget values (see bind_url); _scatter_:
# what a WebGL map holds (pages.ui.scatter)
WORKSPACE_KEYS = (LAST_INGEST, LAST_EMBED, "delete_items_confirm", "eval_request")  # set to None
ITEM_ID_LISTS = ("search_ids", "search_query_ids")  # lists of item ids (Search's query, its inbox)
ITEM_ID_TEXTS = {"search_item_input": "tokens", "ana_plus": "lines", "ana_minus": "lines"}  # ids typed in texts
RESULT_PARAMS = ("concepts_params",)  # {workspace, ids, …} of a computed result, redone from its ids
PAGE_URL_KEEP = (URL_WS, URL_MODEL)  # every other query parameter is a page's setting for the open workspace


def workspace_scoped(key: str) -> bool:
    """Whether the session key ``key`` holds something of the open workspace (see WORKSPACE_PREFIXES)."""
    return key in WORKSPACE_KEYS or key in RESULT_PARAMS or key.startswith(WORKSPACE_PREFIXES)


def on_workspace_change(*, fit: bool = True) -> None:
    """The open workspace changed (sidebar, Data page, a deletion, the demo button): drop every page's
    state of the old one (queries, item ids, settings, their copies in the URL), so nothing of it
    runs in the new one; then, with ``fit``, choose a model that has vectors in the new one
    (:func:`fit_model`)."""
    ss = st.session_state
    for key in [k for k in list(ss.keys()) if workspace_scoped(str(k))]:
        if key in WORKSPACE_KEYS:
            ss[key] = None
        else:
            del ss[key]
    ss[WORKSPACE_ROUND] = ss.get(WORKSPACE_ROUND, 0) + 1
    qp = st.query_params
    for param in [p for p in list(qp.keys()) if p not in PAGE_URL_KEEP]:
        del qp[param]  # else bind_url would give the new workspace the old one's query
    if fit and ss.get(WS):
        with contextlib.suppress(Exception):  # the page reports a broken or vanished workspace itself
            fit_model(get_workspace(), why="for this workspace")


def _without_ids(text: str, gone: set[str], how: str) -> str:
    """``text`` without the item ids of ``gone``: ``lines`` drops lines ``item:<id>``; ``tokens`` drops
    ids typed bare or as ``item:<id>``, separated by spaces, commas or semicolons."""
    if how == "lines":
        def kept(line: str) -> bool:
            term = line.strip()
            return not (term.startswith("item:") and term[5:] in gone)

        return "\n".join(line for line in text.splitlines() if kept(line))
    return " ".join(t for t in re.split(r"[\s,;]+", text.strip()) if t and t.removeprefix("item:") not in gone)


def after_delete(ws_name: str, ids) -> None:
    """Items ``ids`` of workspace ``ws_name`` were deleted: take them out of every session value that
    names items (Search's query, ids typed on Search and Analogies, the selection) and drop the
    parameters of a result computed from the workspace's items (the Concepts run), so no page keeps
    asking for items that are gone."""
    ss = st.session_state
    gone = {str(i) for i in ids}
    if not gone:
        return
    for key in ITEM_ID_LISTS:
        if ss.get(key):
            ss[key] = [i for i in ss[key] if str(i) not in gone]
    for key, how in ITEM_ID_TEXTS.items():
        for k in (key, f"_kept_{key}"):
            text = ss.get(k)
            if not isinstance(text, str) or not text:
                continue
            new = _without_ids(text, gone, how)
            if new != _without_ids(text, set(), how):  # an id of a deleted item was in it
                try:
                    ss[k] = new
                except StreamlitAPIException:  # the widget is on this run's page already: start it afresh
                    del ss[k]
    sel = ss.get(SELECTION)
    if sel and sel.get("workspace") == ws_name:
        set_ids = [i for i in sel.get("ids") or [] if i not in gone]
        ss[SELECTION] = {"workspace": ws_name, "ids": set_ids} if set_ids else None
    for key in RESULT_PARAMS:
        params = ss.get(key)
        if params and params.get("workspace") == ws_name:
            ss[key] = None  # its items changed (and core dropped what was computed from them): run again


def default_model(ws_models: dict | None = None) -> str | None:
    """The model to open with: one that has vectors in the open workspace (``demo`` first), else
    ``demo`` when it is usable, else any offline one."""
    if ws_models:
        return DEMO_MODEL if DEMO_MODEL in ws_models else next(iter(ws_models))
    try:
        bundled = core.list_models(include_hub=False)
    except Exception:  # noqa: BLE001 - a broken registry must not stop the app from opening
        bundled = []
    ok = [m.id for m in bundled if m.available]
    if DEMO_MODEL in ok:
        return DEMO_MODEL
    return ok[0] if ok else None




def from_url() -> None:
    """A new session (a reload, a shared link) starts from the workspace and model in the URL (once per session)."""
    ss = st.session_state
    if "_url_read" in ss:
        return
    ss["_url_read"] = True
    name, model = st.query_params.get(URL_WS), st.query_params.get(URL_MODEL)
    if name:
        if name in list_workspaces():
            ss[WS] = name
        else:
            ss[MODEL_NOTE] = f"The link names workspace {name}, which does not exist here; opened another one."
            for param in [p for p in list(st.query_params.keys()) if p not in PAGE_URL_KEEP]:
                del st.query_params[param]  # its page settings (a query…) were for that workspace
    if model:
        ss[MODEL] = model


def sync_url() -> None:
    """Write the chosen workspace and model into the URL's query parameters (only what changed)."""
    ss, qp = st.session_state, st.query_params
    for param, value in ((URL_WS, ss.get(WS)), (URL_MODEL, ss.get(MODEL))):
        if value and qp.get(param) != value:
            qp[param] = value
        elif not value and param in qp:
            del qp[param]


def bind_url(params: dict[str, tuple[str, object]]) -> None:
    """Keep page widgets in the URL: ``{param: (widget key, default)}``.

    Call before the widgets are drawn (they must take their default from session state, not from a
    ``value=`` argument): a widget with no state yet (a new session, or the page entered again) starts
    from the URL's value, converted to the default's type. :func:`write_url` puts the values back.
    """
    ss, qp = st.session_state, st.query_params
    for param, (key, default) in params.items():
        if key in ss:
            continue
        raw = qp.get_all(param) if isinstance(default, list) else qp.get(param)
        # no value in the URL: the page's last value in this session (Streamlit forgets the state of
        # widgets that were not drawn, e.g. while another page was open), else the default
        ss[key] = _typed(raw, default) if raw not in (None, []) else ss.get(f"_kept_{key}", default)


def write_url(params: dict[str, tuple[str, object]]) -> None:
    """Write the widgets of :func:`bind_url` into the URL (a value equal to its default is left out)."""
    ss, qp = st.session_state, st.query_params
    for param, (key, default) in params.items():
        value = ss.get(key, default)
        ss[f"_kept_{key}"] = value
        if value == default or value is None:
            if param in qp:
                del qp[param]
        elif isinstance(value, list):
            if qp.get_all(param) != [str(v) for v in value]:
                qp[param] = [str(v) for v in value]
        elif qp.get(param) != _url_text(value):
            qp[param] = _url_text(value)


def _url_text(value: object) -> str:
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def _typed(raw, default):
    """A query-parameter string as the type of ``default``; the default when it does not parse."""
    try:
        if isinstance(default, bool):
            return raw in ("1", "true", "True")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            return value if math.isfinite(value) else default
        if isinstance(default, list):
            return [str(v) for v in raw]
    except ValueError:
        return default
    return str(raw)


# ---- the selection --------------------------------------------------------------------------------
def selection(ws: core.Workspace | None) -> list[str]:
    """The workspace-level selection (item ids, in order) when it belongs to ``ws``; deleted items drop out."""
    sel = st.session_state.get(SELECTION)
    if ws is None or not sel or sel.get("workspace") != ws.name:
        return []
    ids = sel.get("ids") or []
    if not ids:
        return []
    key = (ws.name, ws.items_version(), len(ids), hash(tuple(ids)))  # pages ask several times a run
    cached = st.session_state.get("_selection_known")
    if cached is None or cached[0] != key:
        cached = (key, pd.Index(ids)[pd.Index(ids).isin(ws.items["id"])].tolist())
        st.session_state["_selection_known"] = cached
    return list(cached[1])


def set_selection(ws: core.Workspace, ids) -> None:
    """Make ``ids`` the selection of ``ws`` (an empty list clears it)."""
    ids = [str(i) for i in dict.fromkeys(ids)]
    st.session_state[SELECTION] = {"workspace": ws.name, "ids": ids} if ids else None


def clear_selection() -> None:
    """Clear the selection (a button callback); the map chart is drawn again without one."""
    ss = st.session_state
    ss[SELECTION] = None
    ss[SELECTION_ROUND] = ss.get(SELECTION_ROUND, 0) + 1


# ---- the right model --------------------------------------------------------------------------------
def models_with_vectors(ws: core.Workspace | None) -> dict[str, int]:
    """:meth:`core.Workspace.models_with_vectors` of ``ws`` ({} without one, or when it cannot be read)."""
    if ws is None:
        return {}
    try:
        return ws.models_with_vectors()
    except Exception:  # noqa: BLE001 - the page reports a broken workspace itself
        return {}


def fit_model(ws: core.Workspace | None, *, why: str) -> str | None:
    """When the chosen model has no vectors in ``ws`` but others do, switch to the one with the most
    (``demo`` first) and remember one line saying so (shown by :func:`model_note`). Returns the new id."""
    ss = st.session_state
    have = models_with_vectors(ws)
    old = ss.get(MODEL)
    if not have:
        # a table's own vectors (a model that encodes nothing) mean nothing in a workspace without them
        if ws is None or not old or _encodes_something(old):
            return None
        new = default_model(None)
        if new is None or new == old:
            return None
        select(model=new)
        ss[MODEL_NOTE] = (f"Switched the model to {new} {why}: {old} stands for vectors that come with a "
                          f"table's data, and {ws.name} has none for it.")
        return new
    if old in have:
        return None
    new = default_model(have)
    select(model=new)
    others = [m for m in have if m != new]
    ss[MODEL_NOTE] = (f"Switched the model to {new} {why}: {ws.name} has {have[new]:,} vectors for it"
                      + (f" and none for {old}" if old else "")
                      + (f" (also vectors for: {', '.join(others)})" if others else "") + ".")
    return new


def _encodes_something(model: str) -> bool:
    """Whether ``model`` encodes anything itself (an unknown id counts as one that does: it is left alone)."""
    try:
        from core.encoders import modalities_of

        return bool(modalities_of(model))
    except ValueError:
        return True


def model_note() -> None:
    """Say once (an st.info) that the model was switched, or that a link's workspace is missing."""
    note = st.session_state.pop(MODEL_NOTE, None)
    if note:
        st.info(plain(note), icon=":material/swap_horiz:")




def can_encode(model: str | None, modality: str) -> bool:
    """Whether the model encodes texts / images (without loading it); unknown ids: False."""
    if not model:
        return False
    try:
        from core.encoders import modalities_of

        return modality in modalities_of(model)
    except ValueError:
        return False
