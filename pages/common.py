"""The one UI module with Streamlit state and caching; pages stay thin.

Session state holds small values and ids only (workspace name, model id, last reports as plain dicts).
Heavy objects (workspaces, encoders) live in ``st.cache_resource``; frames and thumbnails in
``st.cache_data``. Every page calls :func:`init_state` first so it also runs on its own.

User text is never rendered as HTML or Markdown here: tables go through ``st.dataframe``, single
values through :func:`plain` (Markdown-escaped) or ``st.text`` / ``st.code``.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import core
from core.errors import one_line  # pages.common.one_line: the same function
from core.images import IMAGE_EXTENSIONS

log = logging.getLogger("jointscope.app")

# Session-state keys (canonical values; widgets use their own keys and are synced from these).
WS = "workspace"        # str | None — name of the open workspace under JOINTSCOPE_HOME
MODEL = "model"         # str | None — chosen model id
SHOW_HUB = "show_hub"   # bool — list every open_clip hub model in the sidebar
LAST_INGEST = "last_ingest"  # dict | None — IngestReport.to_dict() of the last import
LAST_EMBED = "last_embed"    # dict | None — EmbedReport.to_dict() of the last embedding run
EMBED_RUN = "embed_run"      # dict | None — {workspace, model} while an embedding runs; left set when it was stopped
UPLOAD_ROUND = "upload_round"  # int — bumped after an import to clear the uploader and text area

DEMO_NAME = "demo"
DEMO_MODEL = "demo"


# ---- text safety --------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'%^])")


def plain(text: object, limit: int = 300) -> str:
    """One line of user-derived text, safe to pass to st.caption / st.error / st.info.

    Streamlit renders those as Markdown (links, images, colour directives); escaping every
    punctuation character makes the text show literally.
    """
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", s)


def show_error(e: BaseException | str, *, where=None) -> None:
    """st.error with a one-line reason; the full traceback goes to the server log only."""
    if isinstance(e, BaseException):
        expected = isinstance(e, (ValueError, OSError, KeyError, core.ModelLoadError))
        log.log(logging.INFO if expected else logging.WARNING, "page error: %s", e,
                exc_info=None if expected else e)
        text = one_line(e, limit=None)  # plain() below cuts it
    else:
        text = str(e)
    (where or st).error(plain(text, limit=500), icon=":material/error:")


@contextlib.contextmanager
def guard(where=None) -> Iterator[None]:
    """Run a block; any failure becomes one st.error line. st.rerun/st.stop pass through
    (they are BaseExceptions, not Exceptions)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a page never shows a traceback
        show_error(e, where=where)


@st.cache_resource(show_spinner=False)
def embed_runs() -> dict[str, threading.Event]:
    """Embedding runs of this server process that were interrupted: run id -> set once the run has let go
    (committed what it encoded). Streamlit starts the next run of a page at once (fast reruns) while the
    interrupted one still finishes its batch, so the next run waits for this before it reports."""
    return {}


# ---- workspaces ---------------------------------------------------------------------------------
def list_workspaces() -> list[str]:
    try:
        return core.list_workspaces()
    except OSError:
        return []


@st.cache_resource(show_spinner=False, max_entries=64)
def _open_workspace(path: str) -> core.Workspace:
    return core.Workspace(path, create=False)


def get_workspace(name: str | None = None) -> core.Workspace | None:
    """The open workspace (default: the chosen one); one cached object per folder.

    Raises ValueError for a bad name and FileNotFoundError when the folder is not a workspace.
    """
    name = st.session_state.get(WS) if name is None else name
    if not name:
        return None
    path = core.workspace_path(name).resolve()
    if not (path / "workspace.json").is_file():
        _open_workspace.clear()
        raise FileNotFoundError(f"workspace {name!r} does not exist (any more) under {path.parent}")
    return _open_workspace(str(path))


def create_workspace(name: str) -> core.Workspace:
    """Create (or open) the named workspace and select it. ValueError names what is wrong."""
    name = (name or "").strip()
    path = core.workspace_path(name)
    ws = core.Workspace(path, create=True)
    select(workspace=name)
    return ws


_KEEP = object()


def select(*, workspace: object = _KEEP, model: object = _KEEP) -> None:
    """Change the chosen workspace and/or model (the sidebar follows on the next run)."""
    if workspace is not _KEEP:
        st.session_state[WS] = workspace
    if model is not _KEEP:
        st.session_state[MODEL] = model


# ---- models -------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, ttl=600)
def model_catalogue(include_hub: bool) -> list[dict]:
    """Known models as plain dicts, bundled first: id, family, available, description, bundled."""
    bundled = core.list_models(include_hub=False)
    names = {m.id for m in bundled}
    infos = core.list_models(include_hub=True) if include_hub else bundled
    out = [dict(m.to_dict(), bundled=m.id in names) for m in infos if m.id in names]
    out += [dict(m.to_dict(), bundled=False) for m in infos if m.id not in names]
    return out


def model_label(info: dict | None, model_id: str) -> str:
    if info is None:
        return f"{model_id} (vectors in workspace)"
    if info["available"]:
        return f"{model_id} (offline)"
    return f"{model_id} (download)" if not info["bundled"] else f"{model_id} (not installed)"


@st.cache_resource(show_spinner=False, max_entries=4)
def get_encoder(model_id: str):
    """The encoder for a model id, loaded once per process (read-only, shared)."""
    return core.load_encoder(model_id)


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


# ---- state --------------------------------------------------------------------------------------
def _leave_legacy_pages_mode() -> None:
    """Hand a page that Streamlit ran alone (legacy pages/ folder mode) back to app.py's router.

    Streamlit decides per process: until app.py has called st.navigation once, a ``pages/`` folder
    beside it makes the server run ``pages/<name>.py`` directly when the very first request is a deep
    link (e.g. /map), with no sidebar and a page list that even includes common.py. Clearing the flag
    and rerunning executes app.py, which routes to the same page (same url path).
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - internal module moved; nothing to fix then
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


def make_progress(bar, label: str = ""):
    """progress(done, total) for st.progress: 'done/total · items/s · ETA', at most 5 updates/s."""
    state = {"t0": None, "last": 0.0}

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"] = now
        if 0 < done < total and now - state["last"] < 0.2:
            return
        state["last"] = now
        el = now - state["t0"]
        rate = done / el if el > 0 and done else 0.0
        eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "…"
        frac = min(done / total, 1.0) if total else 1.0
        bar.progress(frac, text=f"{label}{done}/{total} · {rate:.1f} items/s · ETA {eta}")

    return cb


def stage_progress(bar, spans: dict[str, tuple[float, float, str]], prefix: str = ""):
    """progress(stage, done, total) -> one st.progress bar over several stages, at most 5 updates/s.

    ``spans``: stage -> (start, end, words): the share of the bar the stage fills and how it is named.
    """
    last = {"t": 0.0}

    def cb(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if 0 < done < total and now - last["t"] < 0.2:
            return
        last["t"] = now
        lo, hi, words = spans.get(stage, (0.0, 1.0, stage))
        frac = lo + (hi - lo) * (min(done / total, 1.0) if total else 1.0)
        count = f" {done}/{total}" if total > 1 else ""
        bar.progress(frac, text=f"{prefix}{words}{count}…")

    return cb


def no_vectors_info(ws, model: str) -> None:
    """The message of a page that needs vectors of ``model`` when ``ws`` has none yet."""
    st.info(plain(f"No vectors for {model} in workspace {ws.name} yet. Open the Data page and embed the items "
                  f"with {model} (Vectors → Embed), then come back."), icon=":material/bolt:")


def build_demo(*, with_vectors: bool = True) -> None:
    """Build the bundled demo workspace with a progress bar per stage (generate, embed)."""
    from core.demo import DEMO_WORKSPACE, create_demo_workspace

    bar = st.progress(0.0, text="Building the demo workspace…")
    per_stage: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in per_stage:
            per_stage[stage] = make_progress(bar, f"{stage}: ")
        per_stage[stage](done, total)

    create_demo_workspace(core.workspace_path(DEMO_WORKSPACE), progress=progress,
                          **({} if with_vectors else {"model": None}))
    bar.empty()


def _first_start_demo() -> str | None:
    """On a first start (no workspace at all), build the demo so the app opens on something real.

    Off with JOINTSCOPE_AUTODEMO=0 (tests), or when the demo model is not installed.
    """
    if os.environ.get("JOINTSCOPE_AUTODEMO", "1") == "0":
        return None
    if not any(m.id == DEMO_MODEL and m.available for m in core.list_models(include_hub=False)):
        return None
    try:
        with st.spinner("First start: building the demo workspace (world images with captions, "
                        "embedded with the bundled 'demo' model)…"):
            build_demo()
    except Exception as e:  # noqa: BLE001 - the app must still open
        show_error(e)
        return None
    return DEMO_NAME


def init_state() -> None:
    """Defaults for every session key (idempotent); the first start opens the demo if it exists."""
    _leave_legacy_pages_mode()
    ss = st.session_state
    if WS not in ss:
        names = list_workspaces()
        if not names and _first_start_demo():
            names = list_workspaces()
        if DEMO_NAME in names:
            ss[WS] = DEMO_NAME
            ss.setdefault(MODEL, DEMO_MODEL)
        else:
            ss[WS] = names[0] if names else None
    if ss.get(MODEL) is None and ss[WS]:  # a workspace is open: offer a usable model at once
        ss.pop(MODEL, None)
    if MODEL not in ss:
        models = None
        if ss[WS]:
            try:
                models = get_workspace(ss[WS]).models()
            except Exception:  # noqa: BLE001
                models = None
        ss[MODEL] = default_model(models) if ss[WS] else None
    ss.setdefault(SHOW_HUB, False)
    ss.setdefault(LAST_INGEST, None)
    ss.setdefault(LAST_EMBED, None)
    ss.setdefault(EMBED_RUN, None)
    ss.setdefault(UPLOAD_ROUND, 0)


def current() -> tuple[core.Workspace | None, str | None]:
    """(open workspace or None, chosen model id or None); a vanished workspace shows one error."""
    name = st.session_state.get(WS)
    if not name:
        return None, st.session_state.get(MODEL)
    try:
        return get_workspace(name), st.session_state.get(MODEL)
    except Exception as e:  # noqa: BLE001
        show_error(e)
        return None, st.session_state.get(MODEL)


def open_workspace_and_model(purpose: str, *, hint: str = "") -> tuple[core.Workspace | None, str | None]:
    """The sidebar's (workspace, model), or (None, None) after one st.info saying what to choose.

    ``purpose`` completes "Choose a model in the sidebar …" (e.g. "to map its vectors"); ``hint`` is
    added to the no-workspace message (what the page can still do without one).
    """
    ws, model = current()
    if ws is None:
        if not st.session_state.get(WS):  # a workspace that vanished is reported by the sidebar
            st.info("No workspace is open. Create one in the sidebar, or load the demo on the Data page."
                    + (f" {hint}" if hint else ""), icon=":material/folder_open:")
        return None, None
    if model is None:
        st.info(f"Choose a model in the sidebar {purpose}.".replace(" .", "."), icon=":material/info:")
        return None, None
    return ws, model


def workspace_summary(ws: core.Workspace, model: str | None) -> dict:
    """Cheap real numbers for a page header: items, by modality, vectors for the chosen model."""
    items = ws.items
    models = ws.models()
    return {
        "items": len(items),
        "by_modality": {k: int(v) for k, v in items["modality"].value_counts().items()},
        "vectors": int(models.get(model, {}).get("n", 0)) if model else 0,
        "dim": models.get(model, {}).get("dim") if model else None,
    }


def summary_line(ws: core.Workspace | None, model: str | None) -> None:
    """One caption with the workspace, item counts and vectors of the chosen model."""
    if ws is None:
        st.caption("No workspace open — create one or load the demo on the Data page.")
        return
    s = workspace_summary(ws, model)
    mods = ", ".join(f"{v} {k}{'' if v == 1 else 's'}" for k, v in sorted(s["by_modality"].items())) or "empty"
    vec = (f"{s['vectors']} vectors for {model} ({s['dim']}-d)" if s["vectors"]
           else f"no vectors for {model} yet" if model else "no model chosen")
    st.caption(plain(f"Workspace {ws.name}: {s['items']} items ({mods}) · {vec}"))
    if s["vectors"]:
        stale_warning(ws, model)


@st.cache_data(show_spinner=False, max_entries=32)
def _stale(path: str, model: str, vkey: tuple, wkey: tuple) -> dict | None:
    try:
        return _open_workspace(path).stale_vectors(model, get_encoder(model))
    except Exception:  # noqa: BLE001 - a model that cannot load is reported where it is used
        return None


def stale_warning(ws: core.Workspace, model: str) -> None:
    """A warning when the stored vectors of a model whose weights live in a local folder (bundled models,
    local checkpoints) are not what the model gives now; checked again when either changes."""
    from core.encoders import weights_key
    from core.workspace import stale_reason

    wkey = weights_key(model)
    if wkey is None:
        return
    stale = _stale(str(ws.path), model, vectors_key(ws, model), wkey)
    if stale is not None:
        st.warning(plain(f"Stale vectors: {stale_reason(model, stale)}, so text queries and new items land in "
                         f"another space. On the Data page, tick “Embed everything again” and embed.",
                         limit=1000), icon=":material/sync_problem:")


# ---- items --------------------------------------------------------------------------------------
def _items_key(ws: core.Workspace) -> tuple:
    return ws.items_version()


@st.cache_data(show_spinner=False, max_entries=32)
def _filtered_items(path: str, key: tuple, modality: str | None, query: str) -> pd.DataFrame:
    ws = _open_workspace(path)
    df = ws.items
    if modality:
        df = df[df["modality"] == modality]
    q = query.strip()
    if q:
        hit = pd.Series(False, index=df.index)
        for col in ("text", "source", "id"):
            hit |= df[col].astype("string").str.contains(q, case=False, regex=False, na=False)
        df = df[hit]
    return df.reset_index(drop=True)


def items_frame(ws: core.Workspace, *, modality: str | None = None, query: str = "") -> pd.DataFrame:
    """The workspace's items, filtered by modality and a case-insensitive substring of
    text / source / id; cached per workspace + items-file version + filter."""
    return _filtered_items(str(ws.path.resolve()), _items_key(ws), modality or None, query or "")


@st.cache_data(show_spinner=False, max_entries=5000)
def thumb_data_uri(path: str) -> str | None:
    """A stored thumbnail as a base64 ``data:`` URI for st.column_config.ImageColumn."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    ext = Path(path).suffix.lower().lstrip(".")
    mime = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "gif": "gif"}.get(ext, "webp")
    return f"data:image/{mime};base64,{base64.b64encode(data).decode('ascii')}"


def errors_frame(errors) -> pd.DataFrame:
    """Per-item errors (list of (source, reason) or {source, reason}) as a two-column table."""
    rows = [e if isinstance(e, dict) else {"source": e[0], "reason": e[1]} for e in (errors or [])]
    return pd.DataFrame(rows, columns=["source", "reason"])


# ---- maps ---------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def start_umap_warm_up():
    """Compile umap's numba kernels in a background thread, once per server process."""
    from core.projection import start_warm_up

    return start_warm_up()


def vectors_key(ws: core.Workspace, model: str) -> tuple:
    """Changes whenever the model's vectors in the workspace change (Workspace.vectors_version)."""
    return ws.vectors_version(model) or ()


def data_key(ws: core.Workspace, model: str) -> tuple:
    """(workspace folder, items version, vectors version): the cache key of everything derived."""
    return (str(ws.path.resolve()), _items_key(ws), vectors_key(ws, model))


class _NotCached(Exception):
    """Raised inside a cached function so that 'no map yet' is never memoised."""


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_map(key: tuple, model: str, params: tuple):
    from core.projection import cached_map

    res = cached_map(_open_workspace(key[0]), model, **dict(params))
    if res is None:
        raise _NotCached
    return res


def _map_params(params: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def stored_map(ws: core.Workspace, model: str, params: dict):
    """The map saved in the workspace for these parameters and the current items, or None (never computes).

    ``params``: keyword arguments of :func:`core.projection.compute_map` (method, dim, modalities, ...).
    """
    try:
        return _stored_map(data_key(ws, model), model, _map_params(params))
    except _NotCached:
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def map_with_matches(key: tuple, model: str, map_path: str, query: str, k: int, _res):
    """The map ``_res`` (named by ``map_path``) plus the ``k`` items most similar to ``query`` among
    every item of the workspace (search over the full index), placed into the map where not on it."""
    from core.projection import place_in_map
    from core.search import search

    ws = _open_workspace(key[0])
    hits = search(ws, model, query, k=k)
    from dataclasses import replace

    out = place_in_map(ws, model, _res, [h.id for h in hits])
    # a cache key of its own for colours and figures (never changes the cached map object itself)
    return replace(out, extra={**out.extra, "view": f"#matches:{k}:{query}"})


def compute_map(ws: core.Workspace, model: str, params: dict, progress=None):
    """Compute (or place new items in) the map and save it in the workspace; not memoised here —
    :func:`stored_map` reads it back on the next run."""
    from core.projection import compute_map as _compute

    p = dict(params)
    if p.get("modalities") is not None:
        p["modalities"] = list(p["modalities"])
    return _compute(ws, model, progress=progress, **p)


@st.cache_data(show_spinner=False, max_entries=16)
def pca_preview(key: tuple, model: str, modalities: tuple | None, dim: int, gap_corrected: bool,
                max_points: int | None = None):
    """A quick PCA map of the same items (the same sample with ``max_points``):
    ``(coords (n, dim) float32, ids (n,) str, modality (n,) str)``."""
    from core.projection import Projector, workspace_vectors

    ws = _open_workspace(key[0])
    X, ids, mods, _ = workspace_vectors(ws, model, list(modalities) if modalities else None, max_points)
    coords = Projector("pca", n_components=dim, gap_corrected=gap_corrected).fit(X, modalities=mods).embedding_
    return coords, ids, mods


@st.cache_data(show_spinner=False, max_entries=16)
def map_items(key: tuple, map_path: str, _ids) -> pd.DataFrame:
    """The items of a map, one row per point in map order (``map_path`` names the id set)."""
    ws = _open_workspace(key[0])
    items = ws.items.drop_duplicates("id").set_index("id")
    return items.reindex(list(_ids)).reset_index()


@st.cache_data(show_spinner=False, max_entries=16)
def kmeans_labels(key: tuple, model: str, map_path: str, k: int, _ids) -> list[str]:
    """:func:`core.projection.cluster_labels` of the mapped items' vectors (``map_path`` names the id set)."""
    from core.projection import cluster_labels, map_vectors

    return cluster_labels(map_vectors(_open_workspace(key[0]), model, ids=_ids), k=k, seed=0)


@st.cache_data(show_spinner=False, max_entries=32)
def text_similarity(key: tuple, model: str, map_path: str, query: str, _ids) -> np.ndarray:
    """:func:`core.projection.similarity_to_text` of the mapped items and ``query``: (n,) float32."""
    from core.projection import map_vectors, similarity_to_text

    X = map_vectors(_open_workspace(key[0]), model, ids=_ids)
    return similarity_to_text(X, text=query, encoder=get_encoder(model))


@st.cache_data(show_spinner=False, max_entries=16)
def modality_gap(key: tuple, model: str) -> dict:
    """:func:`core.quality.workspace_modality_gap` (all the model's vectors, uncorrected; a pair-keeping
    sample in a large workspace)."""
    from core.quality import workspace_modality_gap

    return workspace_modality_gap(_open_workspace(key[0]), model)


# ---- quality ------------------------------------------------------------------------------------
QUALITY_K = 10  # neighbours for hubness, outliers and pair scores (Quality page default, Map colours)


@st.cache_data(show_spinner=False, max_entries=8)
def quality_analysis(key: tuple, model: str, k: int = QUALITY_K):
    """:func:`core.quality.quality_analysis` of the model's vectors, cached per workspace + items
    version + vectors version (``key`` from :func:`data_key`) + k."""
    from core.quality import quality_analysis as _analyse

    return _analyse(_open_workspace(key[0]), model, k=k)


def quality_flags(key: tuple, model: str) -> pd.DataFrame:
    """Per-item quality scores and flags (``id, n_k, lof, noisy_score, noisy_pair, hub, outlier``...)."""
    return quality_analysis(key, model, QUALITY_K).items


@st.cache_data(show_spinner=False, max_entries=8)
def model_comparison(key_a: tuple, key_b: tuple, model_a: str, model_b: str, modality: str | None,
                     method: str, k: int = QUALITY_K):
    """:func:`core.quality.compare_models` (both models' data keys name its inputs)."""
    from core.quality import compare_models

    return compare_models(_open_workspace(key_a[0]), model_a, model_b, modality=modality, k=k, method=method)


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_figure(key: str, _build):
    """A plotly figure built once per ``key`` (which must name every input of ``_build``).

    Kept as one shared object (no copy per run: pickling a 100k-point figure costs as much as
    building it); pages treat it as read-only.
    """
    return _build()


@st.cache_data(show_spinner=False, max_entries=32)
def vector_modalities(key: tuple, model: str) -> dict[str, int]:
    """:func:`core.projection.vector_modalities`: ``{modality: count}`` of the items with a vector for ``model``."""
    from core.projection import vector_modalities as _counts

    return _counts(_open_workspace(key[0]), model)


def selected_ids(event) -> list[str]:
    """Item ids of the points selected in a map chart (``st.plotly_chart(..., on_select="rerun")``).

    Points carry their item id as ``customdata`` (a list when plotly sends one per dimension); points
    without one (the pair lines) are ignored. First occurrence order, no duplicates.
    """
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out: dict[str, None] = {}
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            out.setdefault(str(cd), None)
    return list(out)


# ---- search and analogies -----------------------------------------------------------------------
IMAGE_TYPES = [e.lstrip(".") for e in IMAGE_EXTENSIONS]  # st.file_uploader types: without the dot
UPLOAD_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "jointscope-uploads"
MODALITY_PLURAL = {"image": "images", "text": "texts", "row": "table rows"}


def can_encode(model: str | None, modality: str) -> bool:
    """Whether the model encodes texts / images (without loading it); unknown ids: False."""
    if not model:
        return False
    try:
        from core.encoders import modalities_of

        return modality in modalities_of(model)
    except ValueError:
        return False


def upload_name(name: str) -> str:
    """An uploaded file's own name without any folder part (uploads never choose where they land)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    return base if base not in ("", ".", "..") else "upload"


def image_upload_term(file) -> str:
    """An uploaded image as an ``image:<path>`` term (see core.search).

    The bytes are decoded first: a corrupt or non-image file raises ValueError naming the file. The
    file is kept in a content-addressed temp folder under its own name, so the same upload is the same
    term (cached results stay valid) and core can exclude a stored copy of it from the results.
    """
    import hashlib
    import io

    from PIL import Image

    from core.encoders import load_image

    name, data = upload_name(file.name), file.getvalue()
    try:
        with Image.open(io.BytesIO(data)) as im:
            load_image(im).load()
    except Exception as e:  # noqa: BLE001 - any unreadable upload ends here, named
        why = ("not an image PIL can read" if isinstance(e, Image.UnidentifiedImageError)
               else one_line(e, limit=None))
        raise ValueError(f"{name} is not a readable image ({why})") from None
    path = UPLOAD_DIR / hashlib.sha256(data).hexdigest()[:20] / name
    if not path.is_file():  # a temp name of its own: two sessions may upload the same image at once
        from core.storage import atomic_write_bytes

        atomic_write_bytes(path, data)
    return f"image:{path}"


def term_label(term: str, items: pd.DataFrame | None = None, limit: int = 60) -> str:
    """A short plain label for a term: the text in quotes, an uploaded image's file name, an item's
    caption or source."""
    from core.search import parse_term

    t = parse_term(term)
    if t.kind == "text":
        s = f"“{t.value}”"
    elif t.kind == "image":
        s = f"image {Path(t.value).name}"
    else:
        s = f"item {t.value}"
        if items is not None and t.value in items.index:
            r = items.loc[t.value]
            if isinstance(r, pd.DataFrame):
                r = r.iloc[0]
            s = f"“{r['text']}”" if isinstance(r["text"], str) else str(r["source"] or s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def filter_key(filters: dict[str, list[str]] | None) -> tuple:
    """A metadata filter as a hashable cache key."""
    return tuple(sorted((k, tuple(v)) for k, v in (filters or {}).items() if v))


@st.cache_data(show_spinner=False, max_entries=64)
def metadata_options(key: tuple) -> dict[str, list[str]]:
    """:func:`core.search.metadata_values` of the workspace's items (columns that can filter results)."""
    from core.search import metadata_values

    return metadata_values(_open_workspace(key[0]).items)


@st.cache_data(show_spinner=False, max_entries=64)
def search_results(key: tuple, model: str, query: tuple[str, ...], k: int, modality: str | None,
                   filters: tuple, exclude: tuple[str, ...] = ()) -> list[dict]:
    """:func:`core.search.search` of the terms ``query`` (their mean), as ``Hit.to_dict()`` dicts."""
    from core.search import search

    hits = search(_open_workspace(key[0]), model, list(query), k=k, modality=modality,
                  filter=dict(filters) or None, exclude=list(exclude) or None)
    return [h.to_dict() for h in hits]


@st.cache_data(show_spinner=False, max_entries=64)
def analogy_results(key: tuple, model: str, plus: tuple[str, ...], minus: tuple[str, ...], method: str, k: int,
                    modality: str | None, filters: tuple) -> list[dict]:
    """:func:`core.search.analogy` as ``Hit.to_dict()`` dicts."""
    from core.search import analogy

    hits = analogy(_open_workspace(key[0]), model, list(plus), list(minus), method=method, k=k,
                   modality=modality, filter=dict(filters) or None)
    return [h.to_dict() for h in hits]


@st.cache_data(show_spinner=False, max_entries=64)
def term_labels(key: tuple, model: str, terms: tuple[str, ...], vocabulary: tuple[str, ...] | None,
                k: int = 10) -> pd.DataFrame:
    """Zero-shot labels (:func:`core.search.zero_shot_labels`) of the mean of the terms' vectors."""
    from core.search import term_vectors, zero_shot_labels

    V = term_vectors(_open_workspace(key[0]), model, list(terms))
    return zero_shot_labels(V, model, list(vocabulary) if vocabulary else None, k=k)


@st.cache_data(show_spinner=False, max_entries=32)
def item_labels(key: tuple, model: str, ids: tuple[str, ...], vocabulary: tuple[str, ...] | None = None,
                k: int = 8, contrast: bool = False) -> pd.DataFrame:
    """Zero-shot labels of items (:func:`core.search.zero_shot_labels` with ``ids``): label, prompt, score."""
    from core.search import zero_shot_labels

    return zero_shot_labels(_open_workspace(key[0]), model, list(vocabulary) if vocabulary else None,
                            ids=list(ids), k=k, contrast=contrast)


@st.cache_data(show_spinner=False, max_entries=16)
def axes_frame(key: tuple, model: str, x: tuple[str, str], y: tuple[str, str]) -> pd.DataFrame:
    """:func:`core.search.text_axes` of every item with a vector, with its caption, source and metadata."""
    from core.search import text_axes

    ws = _open_workspace(key[0])
    df = text_axes(ws, model, x=x, y=y)
    items = ws.items.drop_duplicates("id").set_index("id")
    caption = items["text"].where(items["text"].notna(), items["pair"].map(items["text"]))
    extra = items.drop(columns=[c for c in ("modality", "text", "image", "thumb", "added", "width", "height")
                                if c in items.columns]).assign(caption=caption)
    return df.join(extra.drop(columns=["pair"], errors="ignore"), on="id")


@st.cache_data(show_spinner=False, max_entries=16)
def analogy_evaluation(key: tuple | None, model: str, set_name: str, data: bytes, method: str, k: int) -> dict:
    """:func:`core.search.evaluate_analogies` of a CSV (``data``): on the workspace of ``key`` with ``model``,
    or, with ``key=None``, on the vocabulary of the set's words encoded with ``model``. Returns
    ``AnalogyEvaluation.to_dict(rows=True)``."""
    from core.search import evaluate_analogies, load_analogy_set

    rows = load_analogy_set(data, name=set_name)
    if key is None:
        return evaluate_analogies(model, rows, k=k, method=method).to_dict(rows=True)
    return evaluate_analogies(_open_workspace(key[0]), rows, model=model, k=k, method=method).to_dict(rows=True)


def hit_caption(hit: dict, captions: dict[str, str]) -> str:
    """What a result card says under its score: a text's text, an image's caption or file name."""
    if hit["modality"] == "text" and hit.get("text"):
        return str(hit["text"])
    return captions.get(hit["id"]) or str(hit.get("source") or hit["id"])


def result_cards(hits: list[dict], *, key: str, captions: dict[str, str] | None = None, columns: int = 5,
                 actions=()) -> None:
    """A gallery of results: images as thumbnails, texts as text cards, each with its rank and score.

    User text goes through :func:`plain` (shown literally). ``actions``: ``(label, callback(item_id),
    icon, help)`` tuples, one button each on every card (e.g. "More like this").
    """
    captions = captions or {}
    for start in range(0, len(hits), columns):
        cols = st.columns(columns)
        for rank, (col, hit) in enumerate(zip(cols, hits[start:start + columns]), start=start + 1):
            with col.container(border=True):
                if hit.get("thumb") or hit.get("image"):
                    st.image(hit.get("thumb") or hit["image"], width="stretch")
                    st.caption(f"**{rank}** · score **{hit['score']:.3f}**")
                    st.caption(plain(hit_caption(hit, captions), limit=80))
                else:
                    st.caption(f"**{rank}** · score **{hit['score']:.3f}** · {hit['modality']}")
                    st.markdown(plain(hit_caption(hit, captions), limit=160))
                spots = st.columns(len(actions), gap="small") if len(actions) > 1 else [st.container()] * len(actions)
                for i, (spot, (label, fn, icon, helptext)) in enumerate(zip(spots, actions)):
                    spot.button(label, key=f"{key}_{i}_{hit['id']}", on_click=fn, args=(hit["id"],), icon=icon,
                                type="tertiary", help=helptext)


# ---- concepts -----------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=2000)
def concept_crop(path: str, patch: int, grid: tuple, image_size: tuple, size: int = 56):
    """The crop of one patch (plus half a patch around it) of a stored image, ``size`` px (PIL image)."""
    from core.concepts import patch_crop

    return patch_crop(path, patch, grid, image_size, context=0.5, size=size)


@st.cache_data(show_spinner=False, max_entries=500)
def concept_frame(path: str, image_size: tuple, size: int = 192) -> np.ndarray:
    """A stored image as the model sees it (aligned with the patch grid), enlarged: (size, size, 3) uint8."""
    from core.concepts import input_frame

    return input_frame(path, image_size, size=size)
