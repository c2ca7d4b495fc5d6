"""Queries over a joint space: cross-modal search with filters, text-defined axes and result views.

Terms
-----
A *term* names a vector in a model's space (docs/search.md):

- ``"a red circle"``      a text, encoded with the model;
- ``"item:<id>"``         an item of the workspace, its stored vector;
- ``"image:<path>"``      an image file, encoded with the model.

Any term can be compared with any item, whatever the modalities (text -> image, image -> text, image ->
image, table row -> image ...). Vectors are unit-normalised before they are combined.

Modules
-------
Terms, filters and hits live in :mod:`core.terms`, analogies and analogy sets in :mod:`core.analogies`,
vocabularies and zero-shot labels in :mod:`core.vocabulary`, the demo's worked example in
:mod:`core.demo.examples`: import each name from the module that defines it. The terms, filters and hits
that :func:`search` takes and returns are importable from here as well.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .terms import (
    FilterSpec,
    Hit,
    ModalitySpec,
    Term,
    check_k,
    filter_mask,
    index_mask,
    make_hits,
    nonzero,
    parse_term,
    term_id,
    term_vectors,
)

if TYPE_CHECKING:  # pragma: no cover
    from .workspace import Workspace

__all__ = [
    # search, text axes, result views (this module)
    "search", "text_axes", "metadata_values", "hits_frame",
    # the terms, filters and hits these take and return (core.terms)
    "Term", "parse_term", "term_id", "term_vectors", "Hit", "filter_mask", "FilterSpec", "ModalitySpec",
]


def _query_vector(ws: Workspace, model: str, query) -> tuple[np.ndarray, list[str]]:
    """(d,) unit query vector and the ids to exclude (the query's own items)."""
    if isinstance(query, (str, Term)):
        query = [query]
    if isinstance(query, np.ndarray) or (isinstance(query, (list, tuple)) and query
                                         and not isinstance(query[0], (str, Term))):
        Q = np.atleast_2d(np.asarray(query, dtype=np.float32))
        if Q.ndim != 2 or not np.isfinite(Q).all():
            raise ValueError(f"query vector must be (d,) or (m, d) and finite; got shape {Q.shape}")
        return nonzero(unit_rows(unit_rows(Q).mean(0)), "query"), []
    terms = list(query)
    if not terms:
        raise ValueError("query is empty; give a text, 'item:<id>', 'image:<path>' or a vector")
    V = term_vectors(ws, model, terms)
    exclude = [i for i in (term_id(t) for t in terms) if i is not None]
    return nonzero(unit_rows(V.mean(0)), "query"), exclude


# ---- search -------------------------------------------------------------------------------------
def search(ws: Workspace, model: str, query, *, k: int = 10, modality: ModalitySpec = None,
           filter: FilterSpec = None, exclude: Sequence[str] | None = None) -> list[Hit]:
    """The ``k`` items nearest to a query (cosine similarity, best first), any modality to any modality.

    ``query``: a term (text, ``item:<id>``, ``image:<path>``), a list of terms (their unit vectors
    averaged: "more like these"), a vector ``(d,)`` or an ``(m, d)`` array (mean of its unit rows).
    ``modality`` / ``filter`` restrict the results (see :func:`filter_mask`); k results come back
    whenever k items pass. The query's own items (and a stored copy of a query text or image) and
    ``exclude`` are never returned. Uses the workspace's persistent neighbour index.
    """
    from .index import workspace_index

    k = check_k(k)
    q, own = _query_vector(ws, model, query)
    idx = workspace_index(ws, model)
    if q.shape[0] != idx.dim_:
        raise ValueError(f"query vector has dim {q.shape[0]}; model {model!r} has dim {idx.dim_}")
    mask = index_mask(idx, ws.items, filter, modality)
    ids, scores = idx.query(q[None], k=min(k, len(idx.ids_)), filter=mask,
                            exclude=(own + list(exclude or [])) or None)
    return make_hits(ws, ids[0], scores[0])


# ---- text-defined axes --------------------------------------------------------------------------
def text_axes(ws: Workspace, model: str, x: tuple = ("day", "night"), y: tuple | None = ("photo", "sketch"),
              *, ids: Sequence[str] | None = None, modality: ModalitySpec = None) -> pd.DataFrame:
    """Place items on axes defined by pairs of terms (Parallax-style).

    Each axis is the normalised difference of two unit term vectors, ``unit(v(pos) − v(neg))``; an
    item's coordinate is the cosine between its vector and the axis (in [-1, 1]; positive = nearer
    ``pos``). Terms may be texts, ``item:<id>`` or ``image:<path>``. Returns a frame with columns
    ``id, modality, x`` (and ``y`` when ``y`` is given), one row per item with a vector.
    """
    axes = {"x": x} if y is None else {"x": x, "y": y}
    for name, pair in axes.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"axis {name} must be a pair of terms (positive, negative); got {pair!r}")
    X, got = ws.vectors(model, modality=modality, ids=ids)
    if not len(got):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}"
                         + (" among the given ids" if ids is not None else "") + "; embed it first")
    X = unit_rows(X)
    out = pd.DataFrame({"id": got.astype(str)})
    mods = ws.items.set_index("id")["modality"]
    out["modality"] = mods.reindex(out["id"]).to_numpy()
    for name, (pos, neg) in axes.items():
        V = term_vectors(ws, model, [pos, neg])
        axis = nonzero(V[0] - V[1], f"axis {name} ({pos!s} − {neg!s})")
        out[name] = X @ unit_rows(axis)
    return out


# ---- helpers for result views -------------------------------------------------------------------
def metadata_values(items: pd.DataFrame, *, max_values: int = 200) -> dict[str, list[str]]:
    """The user's metadata columns that can filter results: ``{column: sorted distinct values}``.

    Columns of the item schema (id, text, ...) and columns with no value or more than ``max_values``
    distinct values (free text, numbers) are left out. Values are strings, in natural order, as
    :func:`filter_mask` compares them.
    """
    from .workspace import ITEM_COLUMNS

    out: dict[str, list[str]] = {}
    for col in items.columns:
        if col in ITEM_COLUMNS:
            continue
        vals = items[col].dropna().astype(str).str.strip()
        vals = vals[vals != ""].unique()
        if 0 < len(vals) <= max_values:
            out[str(col)] = sorted(vals.tolist(), key=lambda v: [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
                                                                 for t in re.split(r"(\d+)", v) if t])
    return out


def hits_frame(ws: Workspace, hits: Sequence[Hit | Mapping]) -> pd.DataFrame:
    """Results as a table, best first: ``rank, score, modality, text, source``, the user's metadata
    columns, ``id``. An image's ``text`` is its caption (:func:`core.items.captions`; None without one)."""
    from .items import captions
    from .workspace import ITEM_COLUMNS

    rows = [h.to_dict() if isinstance(h, Hit) else dict(h) for h in hits]
    items = ws.items.set_index("id", drop=False)
    meta = [c for c in items.columns if c not in ITEM_COLUMNS]
    ids = [str(r["id"]) for r in rows]
    found = items.reindex(ids)
    caption = captions(ws.items, found)
    out = pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1),
        "score": np.array([float(r["score"]) for r in rows], dtype=np.float32),
        "modality": [r["modality"] for r in rows],
        "text": caption.to_numpy(dtype=object),
        "source": found["source"].to_numpy(dtype=object),
    })
    for c in meta:
        out[c] = found[c].to_numpy()
    out["id"] = ids
    return out
