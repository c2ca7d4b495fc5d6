"""What every query over a joint space shares: terms and their vectors, candidate filters, hits, ranking helpers.

Used by :mod:`core.search` (search, text axes), :mod:`core.analogies` and :mod:`core.vocabulary`; the
terms, filters and hits are importable from ``core.search`` as well. The term syntax is in docs/search.md and
:mod:`core.search`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .params import Interval, validate

if TYPE_CHECKING:  # pragma: no cover
    from .encoders import Encoder
    from .workspace import Workspace


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


def model_id(model: str | Encoder) -> str:
    """The model id of a model id or an Encoder."""
    return model if isinstance(model, str) else model.id


def can_encode(model: str | Encoder, modality: str) -> bool:
    """Whether ``model`` (an id or an Encoder) encodes ``modality`` (``text`` or ``image``)."""
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
    mid = model_id(model)
    out: list[np.ndarray | None] = [None] * len(parsed)
    by_kind: dict[str, list[int]] = {}
    for i, t in enumerate(parsed):
        by_kind.setdefault(t.kind, []).append(i)
    for kind in ("text", "image"):
        if kind in by_kind and not can_encode(model, kind):
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


def make_hits(ws: Workspace, ids: Sequence[str], scores: Sequence[float]) -> list[Hit]:
    """One :class:`Hit` per id (with its score), filled from the workspace's items; order kept."""
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


def index_mask(idx, items: pd.DataFrame, filter: FilterSpec, modality: ModalitySpec) -> np.ndarray | None:
    """Boolean mask over the index's ids ``(n,)`` of the items passing :func:`filter_mask`; None when unfiltered."""
    if filter is None and modality is None:
        return None
    allowed = items["id"].to_numpy()[filter_mask(items, filter, modality)]
    return np.asarray(pd.Index(idx.ids_).isin(allowed))


# the parameters every query shares, declared once (core.params): the CLI's --k reads them too
QUERY_CONSTRAINTS: dict[str, list] = {"k": [Interval(Integral, 1, None)]}


def check_k(k, owner: str = "query") -> int:
    """``k`` as an int; raises ValueError (naming ``owner``) unless :data:`QUERY_CONSTRAINTS` allow it (an
    integer >= 1)."""
    validate({"k": k}, QUERY_CONSTRAINTS, owner)
    return int(k)


def nonzero(v: np.ndarray, what: str) -> np.ndarray:
    """``v`` unchanged; raises ValueError naming ``what`` when its norm is (near) zero."""
    if not np.linalg.norm(v) > 1e-6:
        raise ValueError(f"the {what} vector is zero (its terms cancel out); change the terms")
    return v


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest finite scores of ``(n,)`` ``scores``, best first (ties by position)."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]
