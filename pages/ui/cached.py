"""Streamlit caches around core: ``st.cache_resource`` for shared heavy objects (workspaces, encoders,
figures), ``st.cache_data`` for frames and results. Each wrapper calls one core function.

Every wrapper of something computed from a workspace takes a :class:`DataKey` (:func:`data_key`) as its first
argument and opens the workspace from it (:func:`workspace`). The key holds the workspace folder, the items
version and, for results that read vectors, the model and its vectors version: rewriting the items or
committing the model's vectors misses the cache, and nothing else does. Arguments starting with ``_`` are not
hashed: they are results already computed from the same key, named by a plain argument beside them
(``map_path``: the drawn map's file plus its added matches).
"""
from __future__ import annotations

import os
import threading
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

import core
from core.mapview import QUALITY_K as MAP_QUALITY_K


@st.cache_resource(show_spinner=False)
def embed_runs() -> dict[str, threading.Event]:
    """Embedding runs of this server process that were interrupted: run id -> set once the run has let go
    (committed what it encoded). Streamlit starts the next run of a page at once (fast reruns) while the
    interrupted one still finishes its batch, so the next run waits for this before it reports."""
    return {}


@st.cache_resource(show_spinner=False, max_entries=64)
def open_workspace(path: str) -> core.Workspace:
    """The one shared :class:`core.Workspace` of the folder ``path`` per server process (read by every session;
    ``open_workspace.clear()`` forgets them all, e.g. when a folder vanished)."""
    return core.Workspace(path, create=False)


class DataKey(NamedTuple):
    """What a result computed from a workspace depends on: the cache key of every wrapper below.

    ``path``: the resolved workspace folder; ``items``: :meth:`core.Workspace.items_version`; ``model`` and
    ``vectors`` (:meth:`core.Workspace.vectors_version`, ``()`` without vectors): the model whose vectors the
    result reads, None and ``()`` for results of the items alone.
    """

    path: str
    items: tuple
    model: str | None = None
    vectors: tuple = ()


def data_key(ws: core.Workspace, model: str | None = None) -> DataKey:
    """The :class:`DataKey` of ``ws`` now: of its items alone, or with ``model``, of its items and the model's
    vectors. It changes whenever the items are rewritten (or, with ``model``, the model's vectors commit)."""
    vectors = (ws.vectors_version(model) or ()) if model else ()
    return DataKey(str(ws.path.resolve()), ws.items_version(), model, vectors)


def workspace(key: DataKey) -> core.Workspace:
    """The shared workspace of ``key`` (:func:`open_workspace` of its folder)."""
    return open_workspace(key.path)


@st.cache_data(show_spinner=False, ttl=600)
def model_catalogue(include_hub: bool) -> list[dict]:
    """Known models as plain dicts, bundled first: id, family, available, description, bundled."""
    bundled = core.list_models(include_hub=False)
    names = {m.id for m in bundled}
    infos = core.list_models(include_hub=True) if include_hub else bundled
    out = [dict(m.to_dict(), bundled=m.id in names) for m in infos if m.id in names]
    out += [dict(m.to_dict(), bundled=False) for m in infos if m.id not in names]
    return out


@st.cache_resource(show_spinner=False, max_entries=4)
def get_encoder(model_id: str):
    """The encoder for a model id, loaded once per process (read-only, shared)."""
    return core.load_encoder(model_id)


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


@st.cache_data(show_spinner=False, max_entries=32)
def stale_vectors(key: DataKey, weights: tuple) -> dict | None:
    """:meth:`core.Workspace.stale_vectors` of ``key.model`` (``weights``: :func:`core.encoders.weights_key` of
    its local weights, so new weights are checked again); None when they match or the model cannot load."""
    try:
        return workspace(key).stale_vectors(key.model, get_encoder(key.model))
    except Exception:  # noqa: BLE001 - a model that cannot load is reported where it is used
        return None


@st.cache_data(show_spinner=False, max_entries=32)
def _filtered_items(key: DataKey, modality: str | None, query: str) -> pd.DataFrame:
    ws = workspace(key)
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
    return _filtered_items(data_key(ws), modality or None, query or "")


@st.cache_data(show_spinner=False, max_entries=5000)
def thumb_data_uri(path: str) -> str | None:
    """:func:`core.export.thumb_data_uri`: a stored thumbnail as a base64 ``data:`` URI (for
    st.column_config.ImageColumn and thumbnails on the map)."""
    from core.export import thumb_data_uri as data_uri

    return data_uri(path)


@st.cache_resource(show_spinner=False)
def first_start_gate() -> threading.Event:
    """Set once this server process has no first-start build of the demo ahead of it: at once when a
    workspace exists or JOINTSCOPE_AUTODEMO=0, else when the first start has built (or skipped) the demo."""
    gate = threading.Event()
    if os.environ.get("JOINTSCOPE_AUTODEMO", "1") == "0" or _has_workspaces():
        gate.set()
    return gate


def _has_workspaces() -> bool:
    try:
        return bool(core.list_workspaces())
    except OSError:
        return False


@st.cache_resource(show_spinner=False)
def start_umap_warm_up():
    """Compile umap's numba kernels in a background thread, once per server process. On a first start it
    waits until the demo workspace is built (:func:`first_start_gate`): on two cores the compile would
    slow the build down, and no map is drawn before the workspace exists."""
    from core.projection import start_warm_up

    return start_warm_up(after=first_start_gate())


class _NotCached(Exception):
    """Raised inside a cached function so that 'no map yet' is never memoised."""


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_map(key: DataKey, params: tuple):
    from core.projection import cached_map

    res = cached_map(workspace(key), key.model, **dict(params))
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
        return _stored_map(data_key(ws, model), _map_params(params))
    except _NotCached:
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def map_with_matches(key: DataKey, map_path: str, query: str, k: int, _res):
    """The map ``_res`` (named by ``map_path``) plus the ``k`` items most similar to ``query`` among
    every item of the workspace (search over the full index), placed into the map where not on it."""
    from core.projection import place_in_map
    from core.search import search

    ws = workspace(key)
    hits = search(ws, key.model, query, k=k)
    from dataclasses import replace

    out = place_in_map(ws, key.model, _res, [h.id for h in hits])
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
def pca_preview(key: DataKey, modalities: tuple | None, dim: int, gap_corrected: bool,
                max_points: int | None = None):
    """A quick PCA map of the same items (the same sample with ``max_points``):
    ``(coords (n, dim) float32, ids (n,) str, modality (n,) str)``."""
    from core.projection import Projector, workspace_vectors

    X, ids, mods, _ = workspace_vectors(workspace(key), key.model, list(modalities) if modalities else None, max_points)
    coords = Projector("pca", n_components=dim, gap_corrected=gap_corrected).fit(X, modalities=mods).embedding_
    return coords, ids, mods


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_view(key: DataKey, map_path: str, params, _res, _quality):
    from core.mapview import COLOUR_SIMILARITY, build_view

    encoder = get_encoder(key.model) if params.colour == COLOUR_SIMILARITY and params.text else None
    return build_view(workspace(key), key.model, params, res=_res, quality=_quality, encoder=encoder)


def map_view(ws: core.Workspace, model: str, res, params, *, map_path: str, quality: pd.DataFrame | None = None):
    """:func:`core.mapview.build_view` of the map ``res`` (``map_path`` names its point set) for ``params``
    (a :class:`core.mapview.MapParams`), built once per data key + ``params.data_params()`` (an overlay
    toggle reuses it) and shared read-only; ``quality``: the per-item quality frame when colouring by a
    quality score. The returned view carries ``params`` themselves."""
    from dataclasses import replace

    view = _map_view(data_key(ws, model), map_path, params.data_params(), res, quality)
    return replace(view, params=params)


@st.cache_data(show_spinner=False, max_entries=16)
def map_hover(key: DataKey, map_path: str, _view) -> list[str]:
    """:meth:`core.mapview.MapView.hover_texts` of every point (caption, file, modality, a few metadata
    values), computed once per map: the figure is rebuilt whenever the colouring or the selection changes."""
    return _view.hover_texts()


@st.cache_data(show_spinner=False, max_entries=16)
def cluster_table(key: DataKey, map_path: str, level: str, _labels: list[dict]) -> pd.DataFrame:
    """The named clusters of a map as a table: name, items, score, runner-up and the captions (else file
    names) of the first three typical members (``map_path`` and ``level`` name the label set)."""
    from core.export import item_rows
    from core.items import item_titles

    ws = workspace(key)
    rows = item_rows(ws, list(dict.fromkeys(i for lab in _labels for i in lab["top_ids"][:3])))
    first = dict(zip(rows["id"], item_titles(ws.items, rows, limit=40)))
    return pd.DataFrame({
        "name": [lab["name"] for lab in _labels], "items": [lab["n"] for lab in _labels],
        "named by": [lab["method"] for lab in _labels],
        # the share of the cluster's texts holding the name, or of its items holding the metadata value
        "share": [lab.get("share") for lab in _labels],
        "score": [lab["score"] for lab in _labels], "runner-up": [lab["runner_up"] or "" for lab in _labels],
        "top items": [" · ".join(first.get(i, "") for i in lab["top_ids"][:3]) for lab in _labels]})


@st.cache_data(show_spinner=False, max_entries=64)
def true_neighbours(key: DataKey, map_path: str, row: int, k: int, _view) -> pd.DataFrame:
    """:meth:`core.mapview.MapView.neighbours` of the point at ``row`` (``map_path`` names the map):
    ``row, cosine, map_rank``, plus each neighbour's ``id`` and ``item`` (caption, else source)."""
    return _view.neighbours(row, k)


@st.cache_data(show_spinner=False, max_entries=16)
def modality_gap(key: DataKey) -> dict:
    """:func:`core.quality.workspace_modality_gap` (all the model's vectors, uncorrected; a pair-keeping
    sample in a large workspace)."""
    from core.quality import workspace_modality_gap

    return workspace_modality_gap(workspace(key), key.model)


QUALITY_K = MAP_QUALITY_K  # neighbours for hubness, outliers and pair scores (Quality page default, Map colours)


@st.cache_data(show_spinner=False, max_entries=8)
def quality_analysis(key: DataKey, k: int = QUALITY_K):
    """:func:`core.quality.quality_analysis` of the model's vectors, cached per workspace + items
    version + vectors version (``key`` from :func:`data_key`) + k."""
    from core.quality import quality_analysis as _analyse

    return _analyse(workspace(key), key.model, k=k)


def quality_flags(key: DataKey) -> pd.DataFrame:
    """Per-item quality scores and flags (``id, n_k, lof, noisy_score, noisy_pair, hub, outlier``...)."""
    return quality_analysis(key, QUALITY_K).items


@st.cache_data(show_spinner=False, max_entries=8)
def model_comparison(key_a: DataKey, key_b: DataKey, modality: str | None, method: str, k: int = QUALITY_K):
    """:func:`core.quality.compare_models` of ``key_a.model`` and ``key_b.model`` (two models' keys of one
    workspace)."""
    from core.quality import compare_models

    if key_a.path != key_b.path:
        raise ValueError(f"model comparison: {key_a.path} and {key_b.path} are two workspaces, not one")
    return compare_models(workspace(key_a), key_a.model, key_b.model, modality=modality, k=k, method=method)


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_figure(key: str, _build):
    """A plotly figure built once per ``key`` (which must name every input of ``_build``).

    Kept as one shared object (no copy per run: pickling a 100k-point figure costs as much as
    building it); pages treat it as read-only.
    """
    return _build()


@st.cache_data(show_spinner=False, max_entries=32)
def vector_modalities(key: DataKey) -> dict[str, int]:
    """:func:`core.projection.vector_modalities`: ``{modality: count}`` of the items with a vector for ``model``."""
    from core.projection import vector_modalities as _counts

    return _counts(workspace(key), key.model)


def filter_key(filters: dict[str, list[str]] | None) -> tuple:
    """A metadata filter as a hashable cache key."""
    return tuple(sorted((k, tuple(v)) for k, v in (filters or {}).items() if v))


@st.cache_data(show_spinner=False, max_entries=64)
def metadata_options(key: DataKey) -> dict[str, list[str]]:
    """:func:`core.search.metadata_values` of the workspace's items (columns that can filter results); ``key``:
    of the items alone (``data_key(ws)``), as the values do not depend on vectors."""
    from core.search import metadata_values

    return metadata_values(workspace(key).items)


@st.cache_data(show_spinner=False, max_entries=64)
def search_results(key: DataKey, query: tuple[str, ...], k: int, modality: str | None,
                   filters: tuple, exclude: tuple[str, ...] = ()) -> list[dict]:
    """:func:`core.search.search` of the terms ``query`` (their mean), as ``Hit.to_dict()`` dicts."""
    from core.search import search

    hits = search(workspace(key), key.model, list(query), k=k, modality=modality,
                  filter=dict(filters) or None, exclude=list(exclude) or None)
    return [h.to_dict() for h in hits]


@st.cache_data(show_spinner=False, max_entries=64)
def analogy_results(key: DataKey, plus: tuple[str, ...], minus: tuple[str, ...], method: str, k: int,
                    modality: str | None, filters: tuple) -> list[dict]:
    """:func:`core.analogies.analogy` as ``Hit.to_dict()`` dicts."""
    from core.analogies import analogy

    hits = analogy(workspace(key), key.model, list(plus), list(minus), method=method, k=k,
                   modality=modality, filter=dict(filters) or None)
    return [h.to_dict() for h in hits]


@st.cache_data(show_spinner=False, max_entries=64)
def term_labels(key: DataKey, terms: tuple[str, ...], vocabulary: tuple[str, ...] | None,
                k: int = 10) -> pd.DataFrame:
    """Zero-shot labels (:func:`core.vocabulary.zero_shot_labels`) of the mean of the terms' vectors."""
    from core.terms import term_vectors
    from core.vocabulary import zero_shot_labels

    V = term_vectors(workspace(key), key.model, list(terms))
    return zero_shot_labels(V, key.model, list(vocabulary) if vocabulary else None, k=k)


@st.cache_data(show_spinner=False, max_entries=32)
def item_labels(key: DataKey, ids: tuple[str, ...], vocabulary: tuple[str, ...] | None = None,
                k: int = 8, contrast: bool = False) -> pd.DataFrame:
    """Zero-shot labels of items (:func:`core.vocabulary.zero_shot_labels` with ``ids``): label, prompt, score."""
    from core.vocabulary import zero_shot_labels

    return zero_shot_labels(workspace(key), key.model, list(vocabulary) if vocabulary else None,
                            ids=list(ids), k=k, contrast=contrast)


@st.cache_data(show_spinner=False, max_entries=16)
def axes_frame(key: DataKey, x: tuple[str, str], y: tuple[str, str]) -> pd.DataFrame:
    """:func:`core.search.text_axes` of every item with a vector, with its caption (:func:`core.items.captions`),
    source and metadata."""
    from core.items import captions
    from core.search import text_axes

    ws = workspace(key)
    df = text_axes(ws, key.model, x=x, y=y)
    items = ws.items.assign(caption=captions(ws.items)).set_index("id")
    extra = items.drop(columns=[c for c in ("modality", "text", "image", "thumb", "added", "width", "height")
                                if c in items.columns])
    return df.join(extra.drop(columns=["pair"], errors="ignore"), on="id")


@st.cache_data(show_spinner=False, max_entries=16)
def analogy_evaluation(space: DataKey | str, set_name: str, data: bytes, method: str, k: int) -> dict:
    """:func:`core.analogies.evaluate_analogies` of a CSV (``data``): ``space`` is a model's :class:`DataKey` (on
    that workspace's items) or a model id (on the vocabulary of the set's words encoded with that model).
    Returns ``AnalogyEvaluation.to_dict(rows=True)``."""
    from core.analogies import evaluate_analogies, load_analogy_set

    rows = load_analogy_set(data, name=set_name)
    if isinstance(space, str):
        return evaluate_analogies(space, rows, k=k, method=method).to_dict(rows=True)
    return evaluate_analogies(workspace(space), rows, model=space.model, k=k, method=method).to_dict(rows=True)


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


@st.cache_data(show_spinner=False, max_entries=32)
def fit_verdict(key: DataKey) -> dict:
    """:func:`core.quality.fit_verdict` (does the model fit this workspace's data?), cached per workspace +
    items version + vectors version (``key`` from :func:`data_key`)."""
    from core.quality import fit_verdict as _fit_verdict

    return _fit_verdict(workspace(key), key.model)
