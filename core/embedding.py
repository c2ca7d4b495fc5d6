"""Embedding a workspace's items: the plan (which items need a vector of a model), the checks before vectors
are added (storage dtype, dimension, stale weights), the incremental run in this process, and
:class:`VectorCommit`, the one way encoded vectors enter a workspace (``Workspace.embed`` and the sink of
core.distributed both commit through it).

Every function takes the :class:`~core.workspace.Workspace` first and uses only its public methods;
``Workspace.embed``, ``plan_embed``, ``check_embed``, ``stale_vectors`` and ``check_vectors_current`` are thin
methods calling these.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .progress import Progress

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger(__name__)

STALE_COSINE = 0.99  # stored vs re-encoded: float16/int8 storage and other devices stay above 0.999


class StaleVectorsError(ValueError):
    """The stored vectors of a model are not what the model gives now (its weights changed)."""


@dataclass
class EmbedReport:
    model: str
    embedded: int = 0
    cached: int = 0
    unsupported: int = 0  # items of a modality this model does not encode
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "embedded": self.embedded, "cached": self.cached,
                "unsupported": self.unsupported, "seconds": round(self.seconds, 3),
                "errors": [{"source": s, "reason": r} for s, r in self.errors]}


EmbedProgress = Progress  # the earlier name of the embedding progress callback


@dataclass
class EmbedPlan:
    """What an embedding run does (see :func:`plan_embed`)."""

    model: str
    todo: pd.DataFrame  # id, modality, text, image (absolute path or URI), source
    cached: int
    unsupported: int
    dtype: str | None = None


def image_source(ws: Workspace, ref) -> str | None:
    """Where to read a stored item's image: an absolute path (workspace-relative ``images/...``, or the
    absolute path a manifest item references) or a URI (``s3://...``); None when there is none."""
    if not isinstance(ref, str) or not ref:
        return None
    return ref if "://" in ref else str(ws.path / ref)


def stale_reason(model: str, stale: dict) -> str:
    """The common words of every stale-vector message (the embed error, the CLI warning, the pages'
    warning), from a :func:`stale_vectors` finding."""
    return (f"the stored vectors of {model!r} were made with other weights than the model has now (cosine "
            f"{stale['min_cosine']:.2f} for an item encoded again)")


class VectorCommit:
    """Commits encoded vectors of ``model`` into ``ws``, the same way for every engine: under the workspace's
    write lock, the ids that another writer stored since this run read the store are dropped (one vector per
    item, whoever encoded it first), then the rest is appended as one shard (the manifest is the commit point).

    Create it before reading which items need a vector (the plan): a commit of another writer after that is
    noticed by the store's version token (:meth:`Workspace.vectors_version`), and from then on every commit
    of this run checks its ids against the store. ``dtype``: storage dtype when this run creates the store.
    """

    def __init__(self, ws: Workspace, model: str, *, dtype: str | None = None):
        self.ws, self.model, self.dtype = ws, model, dtype
        self._seen = ws.vectors_version(model)
        self._raced = False  # another writer committed vectors of this model since this run began

    def __call__(self, X: np.ndarray, ids) -> int:
        """Store ``X`` (n, d) float32 for ``ids`` (n,) (distinct ids); returns how many were stored (ids
        another writer stored meanwhile are left out)."""
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=str)
        X = np.asarray(X, dtype=np.float32)
        if not len(ids):
            return 0
        store = self.ws.store(self.model)
        with self.ws.writing():
            self._raced = self._raced or self.ws.vectors_version(self.model) != self._seen
            if self._raced:
                keep = store.positions(ids) < 0
                X, ids = X[keep], ids[keep]
            store.append(X, ids, dtype=self.dtype if store.dtype is None else None)
            self._seen = self.ws.vectors_version(self.model)
        return len(ids)


def stale_vectors(ws: Workspace, model: str, encoder=None, *, n: int = 4) -> dict | None:
    """Whether the stored vectors of ``model`` still match the model: up to ``n`` stored items (images
    and texts alike) are encoded again and compared. Returns None when they match (or there is nothing
    to compare), else ``{"items": [ids], "min_cosine": c}``. Catches a checkpoint replaced under the
    same model id (an updated bundled ``demo``, a retrained local folder)."""
    from .encoders import load_encoder, unit_rows

    store = ws.store(model)
    if store.count() == 0 or model.startswith("precomputed:"):
        return None
    enc = encoder if encoder is not None else load_encoder(model)
    items = ws.items
    items = items[items["id"].isin(store.ids()) & items["modality"].isin(enc.modalities)]
    if items.empty:
        return None
    picked = pd.concat([part.head(max(1, n // 2)) for _, part in items.groupby("modality", sort=True)]).head(n)
    cos, ids = [], []
    for mod, part in picked.groupby("modality", sort=False):
        try:
            Y = (enc.encode_texts(part["text"].tolist()) if mod == "text"
                 else enc.encode_images([image_source(ws, r) for r in part["image"]]))
        except Exception:  # noqa: BLE001 - an unreadable stored image says nothing about the weights
            continue
        X, _ = ws.vectors(model, ids=part["id"].tolist())
        cos += (unit_rows(X) * unit_rows(Y)).sum(1).tolist()
        ids += part["id"].tolist()
    if not cos or min(cos) >= STALE_COSINE:
        return None
    return {"items": ids, "min_cosine": round(float(min(cos)), 4)}


def check_vectors_current(ws: Workspace, model: str, encoder=None) -> None:
    """Raise :class:`StaleVectorsError` when :func:`stale_vectors` finds that ``model`` no longer gives
    the stored vectors: adding vectors then would mix two spaces."""
    stale = stale_vectors(ws, model, encoder)
    if stale is not None:
        raise StaleVectorsError(
            f"workspace {ws.name!r}: {stale_reason(model, stale)}; the model no longer gives them (e.g. an "
            f"updated bundled checkpoint), and embedding new items would mix two spaces. Embed everything "
            f"again: `jointscope embed {ws.path} --model {model} --refresh`, or tick “Embed everything "
            f"again” on the Data page")


def plan_embed(ws: Workspace, model: str, *, encoder=None, dtype: str | None = None) -> EmbedPlan:
    """What an embedding run of ``model`` has to do, the same for every engine (this process, Ray).

    ``todo``: the items without a vector that the model can encode (columns ``id, modality, text,
    image`` = where to read the image: an absolute path or a URI, ``source``), in items order; counts
    of items that already have a vector and of those the model cannot encode. Checks first: ``dtype``
    is valid and matches the store; with ``encoder``, its dimension matches the store; when vectors
    would be added to a store that has some, the model must still give them (:func:`check_vectors_current`;
    without ``encoder`` only models whose weights are a local folder are checked; see :func:`check_embed`).
    """
    from .encoders import modalities_of

    check_embed(ws, model, encoder=encoder, dtype=dtype, stale=False)
    mods = encoder.modalities if encoder is not None else modalities_of(model)
    items = ws.items
    have = ws.store(model).ids_array()
    done = items["id"].isin(have)
    todo = items[~done]
    can = todo["modality"].isin(mods) & ~((todo["modality"] == "text") & todo["text"].isna())
    todo = todo[can]
    plan = EmbedPlan(model=model, todo=pd.DataFrame({
        "id": todo["id"].astype(str).to_numpy(), "modality": todo["modality"].astype(str).to_numpy(),
        "text": todo["text"].to_numpy(dtype=object),
        "image": np.asarray([image_source(ws, r) for r in todo["image"]], dtype=object),
        "source": todo["source"].to_numpy(dtype=object)}),
        cached=int(done.sum()), unsupported=int((~can).sum()), dtype=dtype)
    if len(plan.todo):
        check_embed(ws, model, encoder=encoder, stale=True)
    return plan


def check_embed(ws: Workspace, model: str, *, encoder=None, dtype: str | None = None, stale: bool = True) -> None:
    """The checks before vectors of ``model`` are added (every engine, workspace or manifest input):
    ``dtype`` is a storage dtype and matches the store's; the ``encoder``'s dimension matches the store's;
    with ``stale``, a store that has vectors must still get them from the model
    (:func:`check_vectors_current`; without ``encoder``, only models whose weights are a local folder are
    checked, so a Ray driver never loads a hub model just for this)."""
    from .encoders import local_model_folder
    from .vectorstore import DTYPES

    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    store = ws.store(model)
    if encoder is not None and store.dim is not None and encoder.dim and store.dim != encoder.dim:
        raise ValueError(f"workspace {ws.name!r} holds {store.dim}-d vectors for {model!r} but the model "
                         f"now gives {encoder.dim}-d; delete {store.path} to re-embed")
    if dtype is not None and store.dtype not in (None, dtype):
        raise ValueError(f"workspace {ws.name!r} stores {store.dtype} vectors for {model!r}; got "
                         f"dtype={dtype!r} (convert them with `jointscope compact --dtype {dtype}`)")
    if stale and store.count() and (encoder is not None or local_model_folder(model) is not None):
        check_vectors_current(ws, model, encoder)


class _Pending:
    """Encoded vectors not committed yet; :meth:`commit` hands them to a :class:`VectorCommit`."""

    def __init__(self, commit: VectorCommit, report: EmbedReport):
        self.commit_vectors, self.report = commit, report
        self.ids: list[str] = []
        self.xs: list[np.ndarray] = []

    def add(self, X: np.ndarray, ids: list[str]) -> None:
        self.xs.append(X)
        self.ids += ids

    def commit(self) -> None:
        if not self.ids:
            return
        xs, ids = self.xs, self.ids
        self.xs, self.ids = [], []
        self.report.embedded += self.commit_vectors(np.concatenate(xs, axis=0), ids)


def embed(ws: Workspace, model: str, *, progress: Progress | None = None, device: str = "auto",
          batch_size: int | None = None, chunk_size: int = 1024, dtype: str | None = None,
          refresh: bool = False, reduced_decode: bool = True) -> EmbedReport:
    """Encode every item of ``ws`` that has no vector for ``model`` yet (incremental); see
    :meth:`Workspace.embed <core.workspace.Workspace.embed>` for the parameters."""
    from .encoders import load_encoder

    t0 = time.perf_counter()
    enc = load_encoder(model, device=device)
    report = EmbedReport(model=model)
    if refresh:
        ws.forget_model(model)
    commit = VectorCommit(ws, model, dtype=dtype)  # before the plan reads ids: a commit in between is caught
    plan = plan_embed(ws, model, encoder=enc, dtype=dtype)
    report.cached, report.unsupported = plan.cached, plan.unsupported
    todo = plan.todo
    total, done = len(todo), 0
    pending = _Pending(commit, report)
    if progress is not None:
        progress(0, total)
    try:
        texts = todo[todo["modality"] == "text"]
        for start in range(0, len(texts), chunk_size):
            part = texts.iloc[start:start + chunk_size]
            base = done

            def cb(d, _t, base=base):
                if progress is not None:
                    progress(base + d, total)

            pending.add(enc.encode_texts(part["text"].tolist(), batch_size=batch_size, progress=cb),
                        part["id"].tolist())
            done += len(part)
            pending.commit()
        images = todo[todo["modality"] == "image"]
        if len(images):
            ids, sources = images["id"].tolist(), images["source"].astype(str).tolist()
            for b in enc.iter_encode_images(images["image"].tolist(), batch_size=batch_size, reduced=reduced_decode):
                report.errors += [(sources[i], f"cannot read stored image ({why})") for i, why in b.errors]
                if b.positions:
                    pending.add(b.vectors, [ids[i] for i in b.positions])
                if len(pending.ids) >= chunk_size:
                    pending.commit()
                if progress is not None:
                    progress(done + b.done, total)
            done += len(images)
        pending.commit()
    except BaseException:
        # interrupted (Ctrl-C, a stop from the app, a failing progress callback): keep what was encoded
        try:
            pending.commit()
        except Exception:  # the interruption is what the caller must see
            log.warning("could not commit the encoded vectors after an interruption", exc_info=True)
        raise
    report.seconds = time.perf_counter() - t0
    log.info("embed %s with %s: %d new, %d cached in %.1fs", ws.name, model, report.embedded,
             report.cached, report.seconds)
    return report
