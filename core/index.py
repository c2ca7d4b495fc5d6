"""Nearest-neighbour index over one model's vectors: exact below a size threshold, hnswlib above.

Hides hnswlib's traps (two-step init, ``ef`` not saved with the index, ``k`` larger than the count,
growing capacity) behind a small estimator-style API::

    idx = NeighborIndex(space="cosine").fit(X, ids)
    ids, scores = idx.query(Q, k=10)          # (m, k) arrays; scores: higher is more similar

Scores are cosine similarity (``cosine``), inner product (``ip``) or negative squared L2 distance
(``l2``), so that higher is always better.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .artifacts import Codec, register_codec
from .errors import not_fitted_getattr
from .storage import atomic_save_npy, atomic_write, atomic_write_json

log = logging.getLogger(__name__)

SPACES = ("cosine", "ip", "l2")
_EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

__getattr__ = not_fitted_getattr(__name__)  # NotFittedError: scikit-learn's


class NeighborIndex:
    """k-nearest-neighbour search over (n, d) float32 vectors with string ids.

    Parameters
    ----------
    space : "cosine" | "ip" | "l2"
    exact_threshold : collections with fewer items use exact (matrix) search; above it, hnswlib.
    recall_target : ``ef`` is the smallest value whose recall@10 against exact search reaches this
        target on held-out queries (a sample of the items searched for before they are added to the
        graph; measured at fit time).
    M, ef_construction : hnswlib graph parameters.
    """

    def __init__(self, space: str = "cosine", *, exact_threshold: int = 20_000, recall_target: float = 0.98,
                 M: int = 16, ef_construction: int = 200, seed: int = 0):
        self.space = space
        self.exact_threshold = exact_threshold
        self.recall_target = recall_target
        self.M = M
        self.ef_construction = ef_construction
        self.seed = seed

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, X: np.ndarray, ids) -> NeighborIndex:
        """Index vectors ``X`` (n, d) with their ids (n,). Returns self."""
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}; got {self.space!r}")
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"recall_target must be in (0, 1]; got {self.recall_target}")
        X, ids = self._check(X, ids, dim=None)
        self.dim_ = X.shape[1]
        self.ids_ = ids
        self._pos = {k: i for i, k in enumerate(ids.tolist())}
        if len(self._pos) != len(ids):
            raise ValueError("ids must be unique")
        self._X = self._prep(X)
        self.backend_ = "exact" if len(ids) < self.exact_threshold else "hnsw"
        self._hnsw = None
        self.ef_ = None
        if self.backend_ == "hnsw":
            self._build_hnsw()
        return self

    def add(self, X: np.ndarray, ids) -> NeighborIndex:
        """Add new items (ids already present are ignored). Switches to hnswlib past the threshold."""
        self._require_fitted()
        X, ids = self._check(X, ids, dim=self.dim_)
        new = np.array([k not in self._pos for k in ids.tolist()], dtype=bool)
        X, ids = X[new], ids[new]
        if not len(ids):
            return self
        start = len(self.ids_)
        self.ids_ = np.concatenate([self.ids_, ids])
        self._pos.update({k: start + i for i, k in enumerate(ids.tolist())})
        P = self._prep(X)
        self._X = np.concatenate([self._X, P])
        if self._hnsw is not None:
            if len(self.ids_) > self._hnsw.get_max_elements():
                self._hnsw.resize_index(max(len(self.ids_), 2 * self._hnsw.get_max_elements()))
            self._hnsw.add_items(P, np.arange(start, len(self.ids_)))
        elif len(self.ids_) >= self.exact_threshold:
            self.backend_ = "hnsw"
            self._build_hnsw()
        return self

    # ---- querying --------------------------------------------------------------------------
    def query(self, Q: np.ndarray, k: int = 10, *, filter=None, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items of each query row.

        ``filter``: a boolean mask over the indexed items (in ``ids_`` order), a callable taking the
        ids array and returning such a mask, or an iterable of allowed ids. ``exclude``: ids never
        returned (e.g. the query items themselves). Returns ``(ids (m, k) object, scores (m, k)
        float32)``; k shrinks to the number of items that pass when fewer do.
        """
        self._require_fitted()
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
        if Q.shape[1] != self.dim_:
            raise ValueError(f"queries must have dim {self.dim_} (the index's); got {Q.shape[1]}")
        n = len(self.ids_)
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be in [1, n_items={n}]; got {k}")
        mask = self._mask(filter, exclude)
        allowed = n if mask is None else int(mask.sum())
        k_eff = min(k, allowed)
        if k_eff == 0:
            return np.empty((len(Q), 0), dtype=object), np.empty((len(Q), 0), dtype=np.float32)
        P = self._prep(Q)
        if self.backend_ == "exact" or (mask is not None and allowed <= 4 * k_eff):
            idx, score = self._exact(P, k_eff, mask)
        else:
            idx, score = self._approx(P, k_eff, mask)
        return self.ids_[idx].astype(object), score.astype(np.float32)

    def kneighbors(self, k: int = 15, *, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed items of every indexed item, the item itself first.

        Returns ``(positions (n, k) int64, scores (n, k) float32)``; positions index ``ids_``. Items
        with exact duplicates still get themselves in column 0 (what UMAP's precomputed kNN expects).
        """
        self._require_fitted()
        n = len(self.ids_)
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be in [1, n_items={n}]; got {k}")
        kq = min(k + 1, n)
        pos = np.empty((n, k), dtype=np.int64)
        score = np.empty((n, k), dtype=np.float32)
        for start in range(0, n, batch):
            P = self._X[start : start + batch]
            if self.backend_ == "exact":
                idx, s = self._exact(P, kq, None)
            else:
                idx, s = self._approx(P, kq, None)
            for r in range(len(P)):
                i = start + r
                keep = idx[r] != i
                pos[i, 0], score[i, 0] = i, self._self_score(i)
                pos[i, 1:] = idx[r][keep][: k - 1]
                score[i, 1:] = s[r][keep][: k - 1]
        return pos, score

    def _self_score(self, i: int) -> float:
        if self.space == "l2":
            return 0.0
        x = self._X[i]
        return float(x @ x)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, folder: str | Path, *, extra: dict | None = None) -> Path:
        """Write the index to a folder (atomic per file; meta.json, with ``extra``, is written last)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.save_arrays(lambda name: folder / name)
        atomic_write_json(folder / "meta.json", {**meta, **(extra or {})})
        return folder

    def save_arrays(self, path_of: Callable[[str], Path]) -> dict:
        """Write the index's files but its ``meta.json``: ``vectors.npy``, ``ids.npy`` and, for an hnswlib
        index, ``hnsw.bin``, each atomically to ``path_of(name)``. Returns the meta dict, which the caller
        writes last as ``meta.json`` beside them (the commit point :meth:`load` reads)."""
        self._require_fitted()
        atomic_save_npy(path_of("vectors.npy"), self._X)
        atomic_save_npy(path_of("ids.npy"), self.ids_.astype(str))
        if self._hnsw is not None:
            graph = path_of("hnsw.bin")
            tmp = graph.with_name(f".{graph.name}.hnswlib.tmp")  # a leftover is removed with hnsw.bin's temp files
            self._hnsw.save_index(str(tmp))
            # streamed, not read whole: at 1M x 512 the graph file is 2 GB
            atomic_write(graph, lambda f: _copy_file(tmp, f))
            tmp.unlink(missing_ok=True)
        return {"format": 1, "space": self.space, "dim": self.dim_, "n": len(self.ids_),
                "backend": self.backend_, "ef": self.ef_, "M": self.M, "ef_construction": self.ef_construction,
                "exact_threshold": self.exact_threshold, "recall_target": self.recall_target}

    @classmethod
    def load(cls, folder: str | Path) -> NeighborIndex:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        self = cls(meta["space"], exact_threshold=meta["exact_threshold"], recall_target=meta["recall_target"],
                   M=meta["M"], ef_construction=meta["ef_construction"])
        # memory-mapped: hnsw queries never touch it, so a large index opens without reading it
        self._X = np.load(folder / "vectors.npy", mmap_mode="r")
        self.ids_ = np.load(folder / "ids.npy").astype(object)
        if len(self.ids_) != meta["n"] or len(self._X) != meta["n"]:
            raise ValueError(f"index in {str(folder)!r} is inconsistent (meta says {meta['n']} items)")
        self.dim_ = int(meta["dim"])
        self._pos = {k: i for i, k in enumerate(self.ids_.tolist())}
        self.backend_ = meta["backend"]
        self.ef_ = meta["ef"]
        self._hnsw = None
        if self.backend_ == "hnsw":
            import hnswlib

            self._hnsw = hnswlib.Index(space=self._hnsw_space, dim=self.dim_)
            self._hnsw.load_index(str(folder / "hnsw.bin"), max_elements=len(self.ids_))
            self._hnsw.set_ef(self.ef_)  # hnswlib does not store ef
        return self

    @property
    def hnsw(self):
        """The hnswlib graph behind an approximate index (``backend_ == "hnsw"``), else None; read it only
        (e.g. ``save_index`` to measure its size), the index keeps it in step with its items."""
        return getattr(self, "_hnsw", None)  # None before fit / load too

    # ---- internals -------------------------------------------------------------------------
    @property
    def _hnsw_space(self) -> str:
        return {"cosine": "ip", "ip": "ip", "l2": "l2"}[self.space]  # cosine: rows are normalised first

    def _require_fitted(self) -> None:
        if not hasattr(self, "ids_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this NeighborIndex is not fitted yet; call fit(X, ids) first")

    @staticmethod
    def _check(X, ids, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        ids = np.asarray(list(ids), dtype=object)
        if X.ndim != 2 or len(X) != len(ids):
            raise ValueError(f"X must be (n, d) aligned with n ids; got {X.shape} and {len(ids)} ids")
        if dim is not None and X.shape[1] != dim:
            raise ValueError(f"vectors must have dim {dim} (the index's); got {X.shape[1]}")
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X).all(1))[0])
            raise ValueError(f"vector of item {ids[bad]!r} has NaN/inf values")
        return X, ids

    def _prep(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.space == "cosine":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return X

    def _build_hnsw(self, n_holdout: int = 200) -> None:
        """Build the hnswlib graph and set ``ef_`` from held-out queries.

        ``ef`` is tuned on true held-out queries: a seeded sample of the items is left out of the graph,
        each is searched for among the others and compared with exact search; then the sample is
        added. (An item searched for while indexed is linked to its own neighbours by the graph, so
        it reaches a recall that new queries do not.)
        """
        import hnswlib

        n = len(self.ids_)
        self._hnsw = hnswlib.Index(space=self._hnsw_space, dim=self.dim_)
        self._hnsw.init_index(max_elements=max(n, 16), ef_construction=self.ef_construction, M=self.M,
                              random_seed=self.seed)
        rng = np.random.default_rng(self.seed)
        hold = np.sort(rng.choice(n, size=min(n_holdout, n // 10), replace=False))
        keep = np.ones(n, bool)
        keep[hold] = False
        pos = np.flatnonzero(keep)
        for s in range(0, len(pos), 65_536):  # in chunks: no second full copy of the vectors
            self._hnsw.add_items(self._X[pos[s : s + 65_536]], pos[s : s + 65_536])
        self.ef_ = self._tune_ef(hold, keep)
        if len(hold):
            self._hnsw.add_items(self._X[hold], hold)

    def _tune_ef(self, hold: np.ndarray, keep: np.ndarray, k: int = 10) -> int:
        """Smallest ``ef`` of the ladder whose recall@k of the held-out rows reaches the target."""
        kk = min(k, int(keep.sum()))
        if not len(hold) or kk < 1:
            return _EF_LADDER[0]
        q = np.asarray(self._X[hold], dtype=np.float32)
        # exact truth in blocks of queries: all 200 at once (scores, masked copy, argpartition) take
        # ~4 GB at 1M items; blocks of 64M scores keep it near 1 GB and read the vectors 4 times
        step = max(1, 64_000_000 // max(len(self.ids_), 1))
        truth = np.concatenate([self._exact(q[s : s + step], kk, keep)[0] for s in range(0, len(q), step)])
        for ef in _EF_LADDER:
            self._hnsw.set_ef(max(ef, kk))
            got, _ = self._hnsw.knn_query(q, k=kk)
            recall = np.mean([len(set(a) & set(b)) / kk for a, b in zip(got.tolist(), truth.tolist())])
            if recall >= self.recall_target:
                log.info("hnsw ef=%d reaches recall@%d=%.3f on %d held-out items", ef, kk, recall, len(hold))
                return max(ef, kk)
        return _EF_LADDER[-1]

    def _scores_exact(self, P: np.ndarray) -> np.ndarray:
        if self.space == "l2":
            return -(np.sum(P**2, 1)[:, None] - 2 * P @ self._X.T + np.sum(self._X**2, 1)[None, :])
        return P @ self._X.T

    def _exact(self, P: np.ndarray, k: int, mask) -> tuple[np.ndarray, np.ndarray]:
        S = self._scores_exact(P)
        if mask is not None:
            S = np.where(mask[None, :], S, -np.inf)
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(S, part, 1)
        order = np.argsort(-top, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, 1)
        return idx, np.take_along_axis(S, idx, 1)

    def _approx(self, P: np.ndarray, k: int, mask) -> tuple[np.ndarray, np.ndarray]:
        self._hnsw.set_ef(max(self.ef_ or 64, k))
        if mask is None:
            labels, dist = self._hnsw.knn_query(P, k=k)
        else:
            labels, dist = self._hnsw.knn_query(P, k=k, filter=lambda i: bool(mask[i]))
        labels = labels.astype(np.int64)
        score = -dist if self.space == "l2" else 1.0 - dist
        return labels, score

    def _mask(self, filter, exclude) -> np.ndarray | None:
        n = len(self.ids_)
        mask = None
        if filter is not None:
            if callable(filter):
                mask = np.asarray(filter(self.ids_), dtype=bool)
            elif isinstance(filter, np.ndarray) and filter.dtype == bool:
                mask = filter
            else:
                mask = np.zeros(n, bool)
                for k in filter:
                    i = self._pos.get(k)
                    if i is not None:
                        mask[i] = True
            if mask.shape != (n,):
                raise ValueError(f"filter mask must have shape ({n},); got {mask.shape}")
        if exclude is not None:
            mask = np.ones(n, bool) if mask is None else mask.copy()
            for k in ([exclude] if isinstance(exclude, str) else exclude):
                i = self._pos.get(k)
                if i is not None:
                    mask[i] = False
        return mask


def _copy_file(src: Path, dst) -> None:
    import shutil

    with open(src, "rb") as f:
        shutil.copyfileobj(f, dst, 16 * 1024 * 1024)


# ---- the persistent index of a workspace ------------------------------------------------------
INDEX_KEY = "meta"  # one index per model: derived/index/<model-slug>/meta.json (+ ids.npy, vectors.npy, hnsw.bin)


def _save_index(f, idx: NeighborIndex) -> None:
    """The index codec's save: the arrays as companions, then ``meta.json`` (the commit file) into ``f``."""
    meta = idx.save_arrays(f.companion)
    f.write(json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))


def _load_index(path: Path) -> NeighborIndex | None:
    if not path.is_file():
        return None
    try:
        return NeighborIndex.load(path.parent)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log.warning("rebuilding the neighbour index in %s: %s", path.parent, e)
        return None


def _index_ids(path: Path) -> np.ndarray:
    """The item ids a saved index holds: its ``ids.npy`` (n,) str."""
    return np.load(path.parent / "ids.npy", allow_pickle=False).astype(str)


INDEX_CODEC = register_codec("neighbour-index", Codec(".json", _save_index, _load_index, ids=_index_ids))


def index_dir(ws, model: str) -> Path:
    """Folder of the saved neighbour index of ``model`` in workspace ``ws``."""
    return ws.derived_dir("index", model)


def workspace_index(ws, model: str, *, space: str = "cosine") -> NeighborIndex:
    """The neighbour index over every vector of ``model`` in ``ws``, kept on disk and brought up to date.

    Loads the saved index when there is one (a derived artifact, see core.artifacts); items embedded
    since are added (only their vectors are read, and the index saved again); an index that holds items
    the workspace no longer has, or was built for another space, is rebuilt. Raises ``ValueError`` when
    the workspace has no vectors for the model.
    """
    import pandas as pd

    ids = ws.vector_ids(model)
    if not len(ids):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}; embed it first")
    dim = ws.store(model).dim

    def build() -> NeighborIndex:
        X, got = ws.vectors(model, ids=ids)
        return NeighborIndex(space).fit(X, got)  # X is freed on return: the index keeps its own normalised copy

    idx = ws.artifact("index", model, INDEX_KEY, build, codec=INDEX_CODEC)
    if idx.space != space or idx.dim_ != dim or not pd.Index(idx.ids_).isin(ids).all():
        return ws.artifact("index", model, INDEX_KEY, build, codec=INDEX_CODEC, reuse=False)
    new = ~pd.Index(ids).isin(idx.ids_)
    if new.any():  # incremental: read and add only the items embedded since the index was saved
        X_new, ids_new = ws.vectors(model, ids=ids[new])
        idx.add(X_new, ids_new)
        ws.artifact("index", model, INDEX_KEY, lambda: idx, codec=INDEX_CODEC, reuse=False)  # the index grows in place
    return idx
