"""Queries over a joint space: cross-modal search, analogies (vector arithmetic), analogy evaluation,
text-defined axes and zero-shot labels.

Terms
-----
A *term* names a vector in a model's space (docs/search.md):

- ``"a red circle"``      a text, encoded with the model;
- ``"item:<id>"``         an item of the workspace, its stored vector;
- ``"image:<path>"``      an image file, encoded with the model.

Any term can be compared with any item, whatever the modalities (text -> image, image -> text, image ->
image, table row -> image ...). Vectors are unit-normalised before they are combined.

Analogy sets (``evaluate_analogies``)
-------------------------------------
A CSV with columns ``a, b, c, d`` (one analogy ``a : b :: c : d`` per row, so ``d ≈ b − a + c``);
any other column is kept (``category`` gives per-category accuracy). Two kinds of space:

- a **vocabulary** (a model id such as ``minilm`` or an Encoder): every cell is a text; the candidates
  are every distinct text in the set; ``a``, ``b`` and ``c`` of a row are never candidates for it.
- a **workspace** (with ``model=``): ``a``, ``b``, ``c`` are texts, item ids (bare or ``item:<id>``) or
  ``image:<path>``; candidates are the workspace's items (only those of the modality in an optional
  ``modality`` column, or of the ``modality`` argument); input items are never candidates. ``d`` is
  the expectation, one of

  * attribute constraints ``column=value[;column=value...]`` matched (case-insensitively, as text)
    against the items' metadata, e.g. ``colour=blue;shape=circle``: any matching item is a hit;
  * an item id (bare or ``item:<id>``): that item is the only hit;
  * a text: a text item with exactly that text (case-insensitive) is the hit.

Accuracy@1 / @k count rows whose top-1 / top-k results hold a hit. The baseline ranks the
candidates by similarity to ``c`` alone (inputs excluded), the "plain nearest neighbour" an analogy
has to beat. Rows that cannot be evaluated are listed in ``skipped`` with the row number (1-based,
header not counted) and the reason; they do not count in ``n``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .errors import one_line

if TYPE_CHECKING:  # pragma: no cover
    from .encoders import Encoder
    from .workspace import Workspace

log = logging.getLogger(__name__)

METHODS = ("3cosadd", "3cosmul")
COSMUL_EPS = 1e-3  # Levy & Goldberg (2014)
COSMUL_EXACT_LIMIT = 500_000  # above: 3CosMul ranks a candidate pool picked by the index
COSMUL_POOL = 5_000
ANALOGY_COLUMNS = ("a", "b", "c", "d")

FilterSpec = Mapping[str, Any] | Callable[[pd.DataFrame], Any] | None
ModalitySpec = str | Sequence[str] | None


# ---- terms --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One parsed term: ``kind`` is ``text``, ``item`` or ``image``; ``value`` the text, id or path."""

    kind: str
    value: str

    def __str__(self) -> str:
        return self.value if self.kind == "text" else f"{self.kind}:{self.value}"


def parse_term(term: str | Term) -> Term:
    """``"item:<id>"`` -> item, ``"image:<path>"`` -> image, anything else -> text."""
    if isinstance(term, Term):
        return term
    if not isinstance(term, str):
        raise ValueError(f"a term must be a text, 'item:<id>' or 'image:<path>'; got {term!r}")
    for kind in ("item", "image"):
        if term.startswith(kind + ":"):
            value = term[len(kind) + 1 :].strip()
            if not value:
                raise ValueError(f"term {term!r}: nothing after '{kind}:'")
            return Term(kind, value)
    if not term.strip():
        raise ValueError("term is empty; give a text, 'item:<id>' or 'image:<path>'")
    return Term("text", term)


def _encoder(model: str | Encoder) -> Encoder:
    from .encoders import load_encoder

    return load_encoder(model) if isinstance(model, str) else model


def _model_id(model: str | Encoder) -> str:
    return model if isinstance(model, str) else model.id


def _can_encode(model: str | Encoder, modality: str) -> bool:
    from .encoders import modalities_of

    mods = modalities_of(model) if isinstance(model, str) else model.modalities
    return modality in mods


def term_id(term: str | Term) -> str | None:
    """The workspace id the term's content would have (same text or bytes -> same id), if any."""
    from .workspace import content_id

    t = parse_term(term)
    if t.kind == "item":
        return t.value
    if t.kind == "text":
        return content_id("text", t.value.encode("utf-8"))
    try:
        return content_id("image", Path(t.value).expanduser().read_bytes())
    except OSError:
        return None


def term_vectors(ws: Workspace | None, model: str | Encoder,
                 terms: Sequence[str | Term]) -> np.ndarray:
    """Vectors of terms: ``(m, d)`` float32, unit rows, in the order given.

    Texts and images are encoded with ``model`` (batched, each kind once); items take their stored
    vector in ``ws``. Raises ``ValueError`` naming the term when the model lacks the term's modality,
    the item is unknown or has no vector for the model, or the image cannot be read.
    """
    parsed = [parse_term(t) for t in terms]
    if not parsed:
        raise ValueError("no terms given")
    mid = _model_id(model)
    out: list[np.ndarray | None] = [None] * len(parsed)
    by_kind: dict[str, list[int]] = {}
    for i, t in enumerate(parsed):
        by_kind.setdefault(t.kind, []).append(i)
    for kind in ("text", "image"):
        if kind in by_kind and not _can_encode(model, kind):
            t = parsed[by_kind[kind][0]]
            what = "texts" if kind == "text" else "images"
            raise ValueError(f"term {str(t)!r}: model {mid!r} cannot encode {what}; "
                             "use a model with that modality or an item:<id> term")
    if "text" in by_kind:
        X = _encoder(model).encode_texts([parsed[i].value for i in by_kind["text"]])
        for i, x in zip(by_kind["text"], X):
            out[i] = x
    if "image" in by_kind:
        from .images import ImageReadError

        idx = by_kind["image"]
        try:  # streamed like every image encode (reduced decoding, bounded prefetch)
            X = _encoder(model).encode_images([Path(parsed[i].value).expanduser() for i in idx])
        except ImageReadError as e:  # any unreadable file ends here, named
            raise ValueError(f"term {str(parsed[idx[e.index]])!r}: cannot read the image ({e.reason})") from None
        for i, x in zip(idx, X):
            out[i] = x
    if "item" in by_kind:
        if ws is None:
            t = parsed[by_kind["item"][0]]
            raise ValueError(f"term {str(t)!r}: item terms need a workspace")
        want = [parsed[i].value for i in by_kind["item"]]
        X, got = ws.vectors(mid, ids=want)
        pos = {k: j for j, k in enumerate(got.tolist())}
        known = None
        for i, item_id in zip(by_kind["item"], want):
            if item_id not in pos:
                known = set(ws.items["id"]) if known is None else known
                why = (f"has no vector for model {mid!r} (embed the workspace with it)" if item_id in known
                       else f"is not in workspace {ws.name!r}")
                raise ValueError(f"term {str(parsed[i])!r}: item {item_id!r} {why}")
            out[i] = X[pos[item_id]]
    return unit_rows(np.stack(out))


# ---- results ------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One result: the item, its score (higher is better) and what a gallery shows."""

    id: str
    score: float
    modality: str
    text: str | None = None
    image: str | None = None  # absolute path of the stored image file
    thumb: str | None = None  # absolute path of the thumbnail
    source: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(float(self.score), 6), "modality": self.modality,
                "text": self.text, "image": self.image, "thumb": self.thumb, "source": self.source}


def _none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v


def _hits(ws: Workspace, ids: Sequence[str], scores: Sequence[float]) -> list[Hit]:
    items = ws.items.set_index("id", drop=False)
    out = []
    for item_id, s in zip(ids, scores):
        r = items.loc[item_id]
        img, th = ws.abspath(_none(r["image"])), ws.abspath(_none(r["thumb"]))
        out.append(Hit(id=str(item_id), score=float(s), modality=str(r["modality"]), text=_none(r["text"]),
                       image=str(img) if img else None, thumb=str(th) if th else None,
                       source=_none(r["source"])))
    return out


# ---- candidate selection ------------------------------------------------------------------------
def filter_mask(items: pd.DataFrame, filter: FilterSpec = None, modality: ModalitySpec = None) -> np.ndarray:
    """Boolean mask over the rows of ``items``: the modality (one or several) and metadata filter.

    ``filter`` is ``{column: value or [values]}`` (values compared case-insensitively as text; all
    columns must match) or a callable taking the items frame and returning a boolean mask.
    """
    keep = np.ones(len(items), dtype=bool)
    if modality is not None:
        mods = [modality] if isinstance(modality, str) else list(modality)
        keep &= items["modality"].isin(mods).to_numpy()
    if filter is None:
        return keep
    if callable(filter):
        m = np.asarray(filter(items), dtype=bool)
        if m.shape != (len(items),):
            raise ValueError(f"filter callable must return a mask of {len(items)} booleans; got shape {m.shape}")
        return keep & m
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be {{column: value}} or a callable; got {type(filter).__name__}")
    for col, want in filter.items():
        if col not in items.columns:
            cols = ", ".join(c for c in items.columns if c not in ("thumb", "added"))
            raise ValueError(f"filter column {col!r} is not in the workspace; columns: {cols}")
        values = [want] if isinstance(want, (str, int, float, bool)) or want is None else list(want)
        values = {str(v).strip().lower() for v in values}
        have = items[col].astype("string").str.strip().str.lower().fillna("<na>")
        keep &= have.isin(values).to_numpy()
    return keep


def _index_mask(idx, items: pd.DataFrame, filter: FilterSpec, modality: ModalitySpec) -> np.ndarray | None:
    if filter is None and modality is None:
        return None
    allowed = items["id"].to_numpy()[filter_mask(items, filter, modality)]
    return np.asarray(pd.Index(idx.ids_).isin(allowed))


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return int(k)


def _query_vector(ws: Workspace, model: str, query) -> tuple[np.ndarray, list[str]]:
    """(d,) unit query vector and the ids to exclude (the query's own items)."""
    if isinstance(query, (str, Term)):
        query = [query]
    if isinstance(query, np.ndarray) or (isinstance(query, (list, tuple)) and query
                                         and not isinstance(query[0], (str, Term))):
        Q = np.atleast_2d(np.asarray(query, dtype=np.float32))
        if Q.ndim != 2 or not np.isfinite(Q).all():
            raise ValueError(f"query vector must be (d,) or (m, d) and finite; got shape {Q.shape}")
        return _nonzero(unit_rows(unit_rows(Q).mean(0)), "query"), []
    terms = list(query)
    if not terms:
        raise ValueError("query is empty; give a text, 'item:<id>', 'image:<path>' or a vector")
    V = term_vectors(ws, model, terms)
    exclude = [i for i in (term_id(t) for t in terms) if i is not None]
    return _nonzero(unit_rows(V.mean(0)), "query"), exclude


def _nonzero(v: np.ndarray, what: str) -> np.ndarray:
    if not np.linalg.norm(v) > 1e-6:
        raise ValueError(f"the {what} vector is zero (its terms cancel out); change the terms")
    return v


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

    k = _check_k(k)
    q, own = _query_vector(ws, model, query)
    idx = workspace_index(ws, model)
    if q.shape[0] != idx.dim_:
        raise ValueError(f"query vector has dim {q.shape[0]}; model {model!r} has dim {idx.dim_}")
    mask = _index_mask(idx, ws.items, filter, modality)
    ids, scores = idx.query(q[None], k=min(k, len(idx.ids_)), filter=mask,
                            exclude=(own + list(exclude or [])) or None)
    return _hits(ws, ids[0], scores[0])


# ---- analogies ----------------------------------------------------------------------------------
def analogy_scores(X: np.ndarray, plus: np.ndarray, minus: np.ndarray, method: str = "3cosadd") -> np.ndarray:
    """Score candidates ``X`` (n, d) unit rows against terms ``plus`` (p, d) and ``minus`` (q, d), unit rows.

    ``3cosadd``: cos(x, Σplus − Σminus). ``3cosmul`` (Levy & Goldberg 2014):
    Π cos'(x, plus) / (Π cos'(x, minus) + ε) with cos' = (cos + 1) / 2 and ε = 0.001.
    Returns (n,) float32, higher is better.
    """
    method = _check_method(method)
    if method == "3cosadd":
        q = _nonzero(np.asarray(plus).sum(0) - np.asarray(minus).reshape(-1, X.shape[1]).sum(0), "analogy")
        return (X @ unit_rows(q)).astype(np.float32)
    cp = (X @ np.asarray(plus).T + 1.0) / 2.0
    cm = (X @ np.asarray(minus).reshape(-1, X.shape[1]).T + 1.0) / 2.0
    return (cp.prod(1) / (cm.prod(1) + COSMUL_EPS)).astype(np.float32)


def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return m


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def analogy(ws: Workspace, model: str, plus: Sequence[str | Term], minus: Sequence[str | Term] = (), *,
            method: str = "3cosadd", k: int = 10, modality: ModalitySpec = None, filter: FilterSpec = None,
            exclude: Sequence[str] | None = None) -> list[Hit]:
    """Vector arithmetic over terms of any modality, e.g. ``plus=["item:<red car>", "blue"], minus=["red"]``.

    ``3cosadd`` ranks items by cos(x, Σplus − Σminus) through the workspace's neighbour index.
    ``3cosmul`` ranks by Π cos'(x, plus) / (Π cos'(x, minus) + 0.001), cos' = (cos + 1) / 2, exactly over
    every candidate up to ``COSMUL_EXACT_LIMIT`` (500k) items; above that the candidates are a pool
    of the ``COSMUL_POOL`` nearest items of the 3CosAdd vector and of each plus term, found with the
    index (the 3CosMul top-k can then, rarely, miss an item outside the pool). Term vectors are unit
    normalised; input items (and stored copies of input texts/images) are never returned. Hit
    scores are the method's score. ``modality`` / ``filter`` as in :func:`search`.
    """
    from .index import workspace_index

    method = _check_method(method)
    k = _check_k(k)
    plus, minus = list(plus), list(minus)
    if not plus:
        raise ValueError("an analogy needs at least one plus term")
    V = term_vectors(ws, model, plus + minus)
    P, M = V[: len(plus)], V[len(plus):]
    own = [i for i in (term_id(t) for t in plus + minus) if i is not None] + list(exclude or [])
    idx = workspace_index(ws, model)
    if V.shape[1] != idx.dim_:
        raise ValueError(f"term vectors have dim {V.shape[1]}; model {model!r} has dim {idx.dim_}")
    items = ws.items
    mask = _index_mask(idx, items, filter, modality)
    if method == "3cosadd":
        q = _nonzero(P.sum(0) - M.sum(0), "analogy")
        ids, scores = idx.query(q[None], k=min(k, len(idx.ids_)), filter=mask, exclude=own or None)
        return _hits(ws, ids[0], scores[0])
    # 3CosMul: exact over the candidates that pass
    allowed = idx.ids_ if mask is None else idx.ids_[mask]
    if len(allowed) > COSMUL_EXACT_LIMIT:
        pool_k = min(COSMUL_POOL, len(idx.ids_))
        Q = np.vstack([unit_rows(P.sum(0) - M.sum(0))[None], P])
        pool, _ = idx.query(Q, k=pool_k, filter=mask, exclude=own or None)
        allowed = pd.unique(pool.ravel())
        log.info("3CosMul over %d items: ranking a pool of %d found with the index", len(idx.ids_), len(allowed))
    own_set = set(own)
    allowed = [a for a in allowed.tolist() if a not in own_set]
    X, cand = ws.vectors(model, ids=allowed)
    if not len(cand):
        return []
    s = analogy_scores(unit_rows(X), P, M, "3cosmul")
    top = _top(s, k)
    return _hits(ws, cand[top], s[top])


# ---- analogy evaluation -------------------------------------------------------------------------
@dataclass
class AnalogyEvaluation:
    """Scores of an analogy set; ``to_dict()`` is the JSON of ``jointscope analogy --eval``."""

    method: str
    k: int
    space: str
    n: int = 0
    candidates: int = 0
    hits_at_1: int = 0
    hits_at_k: int = 0
    baseline_at_1: int = 0
    baseline_at_k: int = 0
    per_category: dict[str, dict] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """acc@1."""
        return self.hits_at_1 / self.n if self.n else float("nan")

    @property
    def accuracy_at_k(self) -> float:
        return self.hits_at_k / self.n if self.n else float("nan")

    @property
    def baseline_accuracy(self) -> float:
        return self.baseline_at_1 / self.n if self.n else float("nan")

    def to_dict(self, *, rows: bool = True) -> dict:
        def acc(h1, hk, n):
            return {"acc@1": _ratio(h1, n), f"acc@{self.k}": _ratio(hk, n)}

        out = {"method": self.method, "k": self.k, "space": self.space, "n": self.n,
               "candidates": self.candidates, **acc(self.hits_at_1, self.hits_at_k, self.n),
               "baseline": acc(self.baseline_at_1, self.baseline_at_k, self.n), "per_category": {}}
        for cat, c in self.per_category.items():
            out["per_category"][cat] = {"n": c["n"], **acc(c["h1"], c["hk"], c["n"]),
                                        "baseline": acc(c["b1"], c["bk"], c["n"])}
        out["skipped"] = [{"row": r, "reason": why} for r, why in self.skipped]
        if rows:
            out["rows"] = self.rows
        return out


def _ratio(h: int, n: int) -> float | None:
    return round(h / n, 4) if n else None


def load_analogy_set(source: str | Path | bytes | pd.DataFrame | Sequence[Mapping], *,
                     name: str | None = None) -> pd.DataFrame:
    """An analogy set as a frame of text cells (columns a, b, c, d, then any extra columns).

    ``source``: a CSV path, the bytes of a CSV (an upload; ``name`` is its file name, used in errors),
    a DataFrame or a list of dicts. Raises ``ValueError`` when a required column is missing (naming
    it) or the file cannot be read.
    """
    if isinstance(source, (bytes, bytearray)):
        label = name or "the uploaded CSV"
        try:
            df = pd.read_csv(io.BytesIO(bytes(source)), dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"analogy set {label!r} is not a readable CSV "
                             f"({type(e).__name__}: {one_line(e, limit=None)})") from None
        where = repr(label)
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except FileNotFoundError:
            raise ValueError(f"analogy set {str(path)!r} does not exist") from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"analogy set {str(path)!r} is not a readable CSV "
                             f"({type(e).__name__}: {one_line(e, limit=None)})") from None
        where = repr(str(path))
    else:
        df = pd.DataFrame(source) if not isinstance(source, pd.DataFrame) else source.copy()
        where = "the analogy set"
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ANALOGY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where} lacks column(s) {', '.join(missing)}; expected a, b, c, d "
                         f"(got {', '.join(df.columns) or 'none'})")
    df = df.fillna("").astype(str)
    for c in df.columns:
        df[c] = df[c].str.strip()
    return df.reset_index(drop=True)


_CONSTRAINT = re.compile(r"^\s*([^=;]+?)\s*=\s*([^;]*?)\s*$")


def _parse_constraints(cell: str) -> dict[str, str] | None:
    parts = [p for p in cell.split(";") if p.strip()]
    if not parts:
        return None
    out = {}
    for p in parts:
        m = _CONSTRAINT.match(p)
        if not m:
            return None
        out[m.group(1)] = m.group(2)
    return out


_CONTENT_ID = re.compile(r"^[0-9a-f]{16}$")


def suggested_space(rows) -> str:
    """``"workspace"`` or ``"vocabulary"``: where an analogy set is meant to be scored.

    A set refers to a workspace when a cell is an ``item:``/``image:`` term or a bare item id (16 hex
    digits), ``d`` holds attribute constraints (``colour=blue``), or it has a ``modality`` column;
    otherwise (plain words, like ``minilm.csv``) its own words are the candidates.
    """
    df = load_analogy_set(rows)
    if "modality" in df.columns and df["modality"].str.len().gt(0).any():
        return "workspace"
    for col in ANALOGY_COLUMNS:
        for cell in df[col]:
            if not cell:
                continue
            if cell.startswith(("item:", "image:")) or _CONTENT_ID.match(cell):
                return "workspace"
            if col == "d" and "=" in cell and _parse_constraints(cell) is not None:
                return "workspace"
    return "vocabulary"


def evaluate_analogies(space: Workspace | str | Encoder, rows, *, model: str | None = None, k: int = 5,
                       method: str = "3cosadd", modality: ModalitySpec = None) -> AnalogyEvaluation:
    """Score an analogy set ``a : b :: c : d`` (see the module docstring for the format and spaces).

    ``space``: a model id or Encoder (vocabulary of the set's texts) or a Workspace (with ``model``).
    ``rows``: a CSV path, DataFrame or list of dicts. Reports acc@1, acc@k and the nearest-neighbour
    baseline (neighbours of ``c`` alone, inputs excluded), per category when the set has a
    ``category`` column, and the skipped rows with their reasons.
    """
    method = _check_method(method)
    k = _check_k(k)
    df = load_analogy_set(rows)
    from .workspace import Workspace

    if isinstance(space, Workspace):
        if model is None:
            raise ValueError("evaluating on a workspace needs model=<id>")
        return _evaluate_workspace(space, model, df, k=k, method=method, modality=modality)
    if model is not None and not isinstance(space, str):
        raise ValueError("give the model either as space or as model=, not both")
    return _evaluate_vocabulary(space if model is None else model, df, k=k, method=method)


def _record(ev: AnalogyEvaluation, row_no: int, r: pd.Series, rank: int | None, base_rank: int | None,
            predicted, expected_hits: int) -> None:
    cat = r["category"] if "category" in r.index else ""
    ev.n += 1
    h1, hk = rank == 1, rank is not None and rank <= ev.k
    b1, bk = base_rank == 1, base_rank is not None and base_rank <= ev.k
    ev.hits_at_1 += h1
    ev.hits_at_k += hk
    ev.baseline_at_1 += b1
    ev.baseline_at_k += bk
    if cat:
        c = ev.per_category.setdefault(cat, {"n": 0, "h1": 0, "hk": 0, "b1": 0, "bk": 0})
        c["n"] += 1
        c["h1"] += h1
        c["hk"] += hk
        c["b1"] += b1
        c["bk"] += bk
    ev.rows.append({"row": row_no, **{c: r[c] for c in ANALOGY_COLUMNS}, "category": cat or None,
                    "predicted": predicted, "rank": rank, "baseline_rank": base_rank,
                    "expected_matches": expected_hits})


def _rank_of_first_hit(scores: np.ndarray, hit: np.ndarray, k: int) -> int | None:
    """1-based rank of the best-scored hit if it is within the top k (ties broken by position)."""
    order = _top(scores, k)
    where = np.flatnonzero(hit[order])
    return int(where[0]) + 1 if len(where) else None


def _evaluate_vocabulary(model: str | Encoder, df: pd.DataFrame, *, k: int, method: str) -> AnalogyEvaluation:
    ev = AnalogyEvaluation(method=method, k=k, space=f"vocabulary:{_model_id(model)}")
    valid = []
    for i, r in df.iterrows():
        empty = [c for c in ANALOGY_COLUMNS if not r[c]]
        if empty:
            ev.skipped.append((i + 1, f"row {i + 1}: column(s) {', '.join(empty)} empty"))
            continue
        if r["d"] in (r["a"], r["b"], r["c"]):
            ev.skipped.append((i + 1, f"row {i + 1}: d={r['d']!r} is also an input, and inputs are excluded"))
            continue
        kinds = [c for c in ANALOGY_COLUMNS if parse_term(r[c]).kind != "text"]
        if kinds:
            ev.skipped.append((i + 1, f"row {i + 1}: {kinds[0]}={r[kinds[0]]!r} is an item/image term; "
                                      "a vocabulary holds texts only (evaluate on a workspace instead)"))
            continue
        valid.append((i, r))
    words = sorted({r[c] for _, r in valid for c in ANALOGY_COLUMNS})
    ev.candidates = len(words)
    if not valid:
        return ev
    E = term_vectors(None, model, words)
    pos = {w: j for j, w in enumerate(words)}
    for i, r in valid:
        a, b, c = (pos[r[x]] for x in ("a", "b", "c"))
        s = analogy_scores(E, E[[b, c]], E[[a]], method)
        base = (E @ E[c]).astype(np.float32)
        s[[a, b, c]] = -np.inf
        base[[a, b, c]] = -np.inf
        hit = np.zeros(len(words), bool)
        hit[pos[r["d"]]] = True
        top = _top(s, 1)
        _record(ev, i + 1, r, _rank_of_first_hit(s, hit, k), _rank_of_first_hit(base, hit, k),
                words[top[0]] if len(top) else None, 1)
    return ev


def _evaluate_workspace(ws: Workspace, model: str, df: pd.DataFrame, *, k: int, method: str,
                        modality: ModalitySpec) -> AnalogyEvaluation:
    ev = AnalogyEvaluation(method=method, k=k, space=f"workspace:{ws.name}:{model}")
    X_all, ids_all = ws.vectors(model)
    if not len(ids_all):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}; embed it first")
    X_all = unit_rows(X_all)
    items = ws.items.set_index("id", drop=False).loc[ids_all].reset_index(drop=True)
    known = set(ids_all.tolist())
    text_key = items["text"].astype("string").str.strip().str.lower()

    def as_term(cell: str) -> Term:
        t = parse_term(cell)
        return Term("item", cell) if t.kind == "text" and cell in known else t

    ev.candidates = len(ids_all)
    base_mask = filter_mask(items, None, modality)
    for i, r in df.iterrows():
        row_no = i + 1
        empty = [c for c in ANALOGY_COLUMNS if not r[c]]
        if empty:
            ev.skipped.append((row_no, f"row {row_no}: column(s) {', '.join(empty)} empty"))
            continue
        terms = [as_term(r[c]) for c in ("a", "b", "c")]
        try:
            V = term_vectors(ws, model, terms)
        except ValueError as e:
            ev.skipped.append((row_no, f"row {row_no}: {e}"))
            continue
        cand = base_mask.copy()
        row_mod = r.get("modality", "") if "modality" in r.index else ""
        if row_mod:
            cand &= filter_mask(items, None, [m.strip() for m in row_mod.split("|")])
        own = {term_id(t) for t in terms} - {None}
        cand &= ~items["id"].isin(own).to_numpy()
        # the expectation
        d = r["d"]
        cons, dt = _parse_constraints(d), as_term(d)
        try:
            if cons is not None:
                hit = filter_mask(items, cons)
            elif dt.kind in ("item", "image"):
                hit = (items["id"] == term_id(dt)).to_numpy()
            else:
                hit = (text_key == d.strip().lower()).fillna(False).to_numpy(dtype=bool)
        except ValueError as e:
            ev.skipped.append((row_no, f"row {row_no}: d={d!r}: {e}"))
            continue
        hit &= cand
        if not hit.any():
            ev.skipped.append((row_no, f"row {row_no}: no candidate item matches d={d!r}"
                                       + (f" among {row_mod} items" if row_mod else "")))
            continue
        s = analogy_scores(X_all, V[[1, 2]], V[[0]], method)
        base = (X_all @ V[2]).astype(np.float32)
        s[~cand] = -np.inf
        base[~cand] = -np.inf
        top = _top(s, 1)
        _record(ev, row_no, r, _rank_of_first_hit(s, hit, k), _rank_of_first_hit(base, hit, k),
                str(ids_all[top[0]]) if len(top) else None, int(hit.sum()))
    return ev


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
        axis = _nonzero(V[0] - V[1], f"axis {name} ({pos!s} − {neg!s})")
        out[name] = X @ unit_rows(axis)
    return out


# ---- zero-shot labels ---------------------------------------------------------------------------
VOCABULARY_FILE = "vocabulary.txt"


def _read_words(path) -> list[str]:
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(w for w in words if w and not w.startswith("#")))


def model_vocabulary_file(model: str | None) -> Path | None:
    """The ``vocabulary.txt`` a local model folder ships (the words its text tower was trained on), if any.

    Only local folders are looked at (``openclip-local:<dir>``, ``st:<dir>`` and aliases of such folders,
    e.g. ``demo``; :func:`core.encoders.local_model_folder`); hub models have none and use the bundled
    general vocabulary.
    """
    from .encoders import local_model_folder

    folder = local_model_folder(model)
    path = None if folder is None else folder / VOCABULARY_FILE
    return path if path is not None and path.is_file() else None


def default_vocabulary(model: str | None = None) -> list[str]:
    """The default zero-shot vocabulary of ``model``.

    A local model folder that ships a ``vocabulary.txt`` (the bundled ``demo`` model does: the words of
    its world, which are all its text tower knows) names with those words; otherwise the bundled
    general list (assets/vocabulary.txt: general words + the demo world's words).
    """
    from .encoders import ASSETS_DIR

    own = model_vocabulary_file(model)
    return _read_words(own if own is not None else ASSETS_DIR / VOCABULARY_FILE)


def naming_vocabulary(model: str | None, words: Sequence[str] = (), *, only: bool = False) -> list[str] | None:
    """The word list a user asked for: ``words`` alone (``only``), or the model's default vocabulary plus
    ``words``; None (the default list) when no words are given. ``only`` without words is a ValueError."""
    extra = [str(w).strip() for w in words if str(w).strip()]
    if only and not extra:
        raise ValueError("naming with your words only needs at least one word")
    if only:
        return extra
    return default_vocabulary(model) + extra if extra else None


@functools.lru_cache(maxsize=32)
def _vocab_vectors_cached(model: str, words: tuple[str, ...], template: str, digest: str) -> np.ndarray:
    return term_vectors(None, model, [template.format(w) for w in words])


def vocabulary_vectors(model: str | Encoder, vocabulary: Sequence[str], template: str = "{}") -> np.ndarray:
    """Prompt vectors of a vocabulary, ``(len(vocabulary), d)`` float32 unit rows (cached per model id)."""
    words = tuple(str(w) for w in vocabulary)
    if not words:
        raise ValueError("the vocabulary is empty")
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' where the word goes; got {template!r}")
    if not _can_encode(model, "text"):
        raise ValueError(f"model {_model_id(model)!r} cannot encode texts, so it cannot rank a vocabulary")
    if not isinstance(model, str):
        return term_vectors(None, model, [template.format(w) for w in words])
    digest = hashlib.sha1("\0".join(words).encode()).hexdigest()
    return _vocab_vectors_cached(model, words, template, digest)


def zero_shot_labels(source: Workspace | np.ndarray, model: str | Encoder, vocabulary: Sequence[str] | None = None,
                     *, ids: str | Sequence[str] | None = None, k: int | None = 5, template: str = "{}",
                     modality: ModalitySpec = None, contrast: bool = False) -> pd.DataFrame:
    """Rank a vocabulary against an item, a selection or any vectors.

    ``source``: a Workspace (then ``ids`` is one item id or a list; None = every item, optionally of
    ``modality``) or vectors ``(d,)`` / ``(m, d)``. A selection is summarised by the mean of its unit
    vectors. Each word becomes ``template.format(word)`` (e.g. ``"a photo of a {}"``) and is encoded
    with ``model``; ``vocabulary`` defaults to :func:`default_vocabulary`. Returns the top ``k``
    (None = all) as a frame ``label, prompt, score`` (cosine), best first.

    ``contrast=True`` (a Workspace selection only) ranks by cosine with the selection minus cosine with
    the mean of every item of the workspace, so words that fit the whole collection ("object" on the
    demo world) do not win: the labels say what sets the selection apart. ``cosine`` is then a column.
    """
    from .workspace import Workspace

    vocab = list(vocabulary) if vocabulary is not None else default_vocabulary(_model_id(model))
    if isinstance(source, Workspace):
        want = [ids] if isinstance(ids, str) else ids
        X, got = source.vectors(_model_id(model), modality=modality, ids=want)
        if want is not None and len(got) < len(set(want)):
            missing = sorted(set(want) - set(got.tolist()))
            raise ValueError(f"item(s) {', '.join(map(repr, missing[:3]))}{' ...' if len(missing) > 3 else ''} "
                             f"not in workspace {source.name!r} or without a vector for {_model_id(model)!r}")
        if not len(got):
            raise ValueError(f"workspace {source.name!r} has no vectors for model {_model_id(model)!r}")
    else:
        X = np.atleast_2d(np.asarray(source, dtype=np.float32))
        if X.ndim != 2 or not len(X):
            raise ValueError(f"vectors must be (d,) or (m, d); got shape {np.shape(source)}")
    centre = _nonzero(unit_rows(unit_rows(X).mean(0)), "selection")
    T = vocabulary_vectors(model, vocab, template)
    if T.shape[1] != centre.shape[0]:
        raise ValueError(f"vectors have dim {centre.shape[0]} but model {_model_id(model)!r} gives {T.shape[1]}")
    cos = T @ centre
    s = cos
    if contrast and isinstance(source, Workspace):
        A, _ = source.vectors(_model_id(model), modality=modality)
        s = cos - T @ _nonzero(unit_rows(unit_rows(A).mean(0)), "workspace")
    top = _top(s, len(vocab) if k is None else _check_k(k))
    out = pd.DataFrame({"label": [vocab[j] for j in top], "prompt": [template.format(vocab[j]) for j in top],
                        "score": s[top].astype(np.float32)})
    if contrast:
        out["cosine"] = cos[top].astype(np.float32)
    return out


def label_clusters(X: np.ndarray, labels: Sequence, vocab_vectors: np.ndarray, vocab: Sequence[str], *,
                   k: int = 3, contrast: bool = True) -> dict[Any, list[tuple[str, float]]]:
    """Name clusters with a vocabulary.

    ``X`` (n, d) vectors, ``labels`` (n,) cluster labels, ``vocab_vectors`` (V, d) unit rows of
    ``vocab`` (see :func:`vocabulary_vectors`). Each cluster is summarised by the mean of its unit
    vectors; words are ranked by cosine with it, minus (``contrast=True``) the word's mean cosine
    over all clusters, so words every cluster shares (the modality, the dataset's theme) do not win
    everywhere. Returns ``{label: [(word, score), ...]}`` with ``k`` words per cluster.
    """
    X = unit_rows(np.asarray(X, dtype=np.float32))
    labels = np.asarray(labels)
    T = np.asarray(vocab_vectors, dtype=np.float32)
    if labels.shape != (len(X),):
        raise ValueError(f"labels must have one entry per row of X ({len(X)}); got shape {labels.shape}")
    if T.shape != (len(vocab), X.shape[1]):
        raise ValueError(f"vocab_vectors must be (len(vocab)={len(vocab)}, d={X.shape[1]}); got {T.shape}")
    k = _check_k(k)
    names = list(pd.unique(labels))
    C = unit_rows(np.stack([X[labels == c].mean(0) for c in names]))
    S = C @ T.T
    if contrast and len(names) > 1:
        S = S - S.mean(0, keepdims=True)
    out = {}
    for c, s in zip(names, S):
        top = _top(s, k)
        out[c.item() if hasattr(c, "item") else c] = [(vocab[j], float(s[j])) for j in top]
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
    columns, ``id``. An image's ``text`` is its paired caption (if any)."""
    from .workspace import ITEM_COLUMNS

    rows = [h.to_dict() if isinstance(h, Hit) else dict(h) for h in hits]
    items = ws.items.drop_duplicates("id").set_index("id", drop=False)
    meta = [c for c in items.columns if c not in ITEM_COLUMNS]
    ids = [str(r["id"]) for r in rows]
    found = items.reindex(ids)
    caption = found["text"].where(found["text"].notna(), found["pair"].map(items["text"]))
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


def worked_example(ws: Workspace, model: str) -> dict | None:
    """A cross-modal analogy on the demo world, or None when the workspace cannot host it.

    Image of a red circle − "a red object" + "a blue object" -> images of blue circles. The red circle
    is the first image (a single-object one when the world records ``n_objects``) with metadata
    ``colour=red, shape=circle`` and a vector for ``model``. Returns ``{"plus": [terms], "minus":
    [terms], "modality": "image", "expect": {"colour": "blue", "shape": "circle"}, "item": id}``.
    """
    items = ws.items.drop_duplicates("id")
    if not {"colour", "shape"} <= set(items.columns):
        return None
    have = set(ws.store(model).ids()) if model in ws.models() else set()
    mask = filter_mask(items, {"colour": "red", "shape": "circle"}, "image") & items["id"].isin(have).to_numpy()
    if "n_objects" in items.columns:
        single = mask & filter_mask(items, {"n_objects": "1"})
        mask = single if single.any() else mask
    if not mask.any():
        return None
    item_id = str(items["id"].to_numpy()[mask][0])
    return {"plus": [f"item:{item_id}", "a blue object"], "minus": ["a red object"], "modality": "image",
            "expect": {"colour": "blue", "shape": "circle"}, "item": item_id}
