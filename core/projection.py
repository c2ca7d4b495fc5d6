"""Maps of a joint space: UMAP and PCA projections to 2-D or 3-D, gap correction, trust, caching.

Two layers:

* :class:`Projector` — an estimator (parameters in ``__init__``, ``fit`` returns self, ``embedding_``,
  ``transform`` for new items) over an (n, d) array. UMAP runs on a precomputed k-nearest-neighbour
  graph (from :class:`core.index.NeighborIndex`, so the neighbour index of a workspace is reused), and
  ``transform`` places new items next to their neighbours among the fitted ones with umap-learn's own
  placement routine, so adding items never refits the map.
* :func:`compute_map` — one model's vectors of a workspace (any subset of modalities) to a
  :class:`MapResult` with per-point trust and the sampled trustworthiness. Coordinates are cached in
  the workspace keyed by model + parameters + item set; reopening is a cache hit, and after new items
  were embedded only those are placed (``cache="incremental"``).
* Large workspaces: every item is mapped. Above :data:`FIT_POINTS` items (or ``max_points``), UMAP/PCA is
  fitted on a seeded random sample of that many items and every other item is placed: UMAP maps put it
  at the distance-weighted mean of the map positions of its :data:`PLACE_K` nearest sample items (an
  hnswlib :class:`core.index.NeighborIndex` over the sample; a small seeded jitter keeps items with the
  same neighbours from stacking exactly), PCA maps project it with the fitted components.
  ``MapResult.fitted`` says which rows were fitted; the vectors are read in chunks, never all at once.
  :func:`place_in_map` adds items that are not on a map (another modality) without refitting it.
  Reopening a cached map reads ids only, never the vectors.

* Colouring a map: :func:`cluster_labels` (seeded KMeans in cosine geometry), :func:`similarity_to_text`
  (cosine of every point with an encoded text), over :func:`map_vectors` (the vectors of a map's points);
  :func:`vector_modalities` counts the items with vectors per modality.

Gap correction: every modality is mean-centred (its centroid subtracted) before projecting, so the
map shows the same data without the offset between images and texts (the "modality gap").

umap-learn compiles its numba kernels on first use (tens of seconds). :func:`warm_up` compiles the
kernels this module uses — with numba's on-disk cache switched on for them, so later processes load
them instead of compiling — and is meant to run in a background thread when a server starts.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .errors import not_fitted_getattr
from .progress import StageProgress
from .storage import atomic_write, atomic_write_json, read_json, remove_temp_files

log = logging.getLogger(__name__)

METHODS = ("umap", "pca")
TRUST_K = 10  # neighbours compared for per-point trust and trustworthiness
TRUST_SAMPLE = 2000  # points used for sklearn's trustworthiness (it is quadratic in n)
REFIT_SHARE = 0.5  # refit instead of placing new items when they exceed this share of the mapped ones
FIT_POINTS = 50_000  # above this many items a map is fitted on a sample of this size, the rest is placed
PLACE_K = 10  # sample neighbours a placed item's position is the weighted mean of
PLACE_JITTER = 0.05  # placed items move by N(0, 1) x this x the spread of their neighbours' map positions
PLACE_CHUNK = 65_536  # items whose vectors are read and placed at a time
PLACE_RECALL = 0.9  # recall@10 the sample's hnswlib index is tuned to (a weighted mean of 10 needs no more)
PLACE_DIM = 128  # above this many dimensions the sample is searched in its leading singular directions
PLACEMENT = "knn-mean-1"  # names the placement in the cache key of sampled maps
_FORMAT = 1

__getattr__ = not_fitted_getattr(__name__)  # NotFittedError: scikit-learn's


# ---- numba warm-up -----------------------------------------------------------------------------
# Kernels of umap-learn that a fit/transform on a precomputed kNN graph compiles; umap-learn does not
# mark them cache=True, so every new process would compile them again.
_JIT_KERNELS = (
    ("umap.umap_", "smooth_knn_dist"),
    ("umap.umap_", "compute_membership_strengths"),
    ("umap.umap_", "init_graph_transform"),
    ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch"),
    ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch_parallel"),
    ("umap.utils", "tau_rand_int"),
    ("umap.utils", "tau_rand"),
    ("umap.layouts", "clip"),
)
_jit_lock = threading.Lock()
_jit_cached = False
_warm = threading.Event()


def _enable_jit_cache() -> None:
    """Switch on numba's on-disk cache for the umap kernels we use (before they are first compiled)."""
    global _jit_cached
    with _jit_lock:
        if _jit_cached:
            return
        import importlib

        for mod, name in _JIT_KERNELS:
            try:
                disp = getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):  # another umap-learn version: nothing to cache
                continue
            if hasattr(disp, "enable_caching") and not disp.signatures:
                try:
                    disp.enable_caching()
                except Exception as e:  # noqa: BLE001 - e.g. a read-only install: compile per process
                    log.info("numba cache not enabled for %s.%s: %s", mod, name, e)
        _jit_cached = True


def warm_up() -> float:
    """Compile (or load from numba's cache) the UMAP kernels used here; returns the seconds it took.

    Safe to call from a background thread and more than once. Uses a tiny random data set.
    """
    t0 = time.perf_counter()
    if _warm.is_set():
        return 0.0
    _enable_jit_cache()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 8)).astype(np.float32)
    p = Projector("umap", n_neighbors=5, n_epochs=5).fit(X)
    p.transform(X[:4] + 0.01)
    _warm.set()
    dt = time.perf_counter() - t0
    log.info("umap warm-up took %.1fs", dt)
    return dt


def start_warm_up(after: threading.Event | None = None, wait: float = 600) -> threading.Thread:
    """Run :func:`warm_up` in a daemon thread (call once when a server starts).

    ``after``: an event the thread waits for first (at most ``wait`` seconds), so that the compile does
    not share the cores with work that must finish sooner (the app's first-start build of the demo).
    """
    t = threading.Thread(target=_warm_up_quietly, args=(after, wait), name="jointscope-umap-warmup", daemon=True)
    t.start()
    return t


def _warm_up_quietly(after: threading.Event | None = None, wait: float = 600) -> None:
    if after is not None:
        after.wait(wait)
    try:
        warm_up()
    except Exception as e:  # noqa: BLE001 - a failed warm-up only means the first map compiles
        log.warning("umap warm-up failed: %s", e)


# ---- helpers -----------------------------------------------------------------------------------

def knn_graph(X: np.ndarray, k: int, *, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN graph of the rows of X, self first: ``(indices (n, k) int32, distances (n, k) float32)``.

    ``index``: a fitted :class:`core.index.NeighborIndex` over exactly these rows in this order, to
    reuse instead of building one.
    """
    from .index import NeighborIndex

    if index is None:
        index = NeighborIndex("cosine").fit(X, np.arange(len(X)))
    pos, sim = index.kneighbors(k)
    return pos.astype(np.int32), np.clip(1.0 - sim, 0.0, 2.0).astype(np.float32)


def _umap_ab(min_dist: float) -> tuple[float, float]:
    """``a``, ``b`` of UMAP's low-dimensional similarity ``1 / (1 + a·d^(2b))`` for spread 1 and ``min_dist``:
    what ``umap.UMAP`` fits with the settings used here (its public ``find_ab_params``)."""
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(1.0, min_dist)
    return float(a), float(b)


class _TqdmProgress(io.StringIO):
    """A file for tqdm (umap-learn's epoch loop reports through it) that forwards ``n/total``."""

    def __init__(self, progress: StageProgress, stage: str):
        super().__init__()
        self._progress, self._stage = progress, stage

    def write(self, s: str) -> int:
        m = re.findall(r"(\d+)/(\d+)", s)
        if m:
            done, total = m[-1]
            self._progress(self._stage, int(done), int(total))
        return len(s)


def _umap_place(knn_idx: np.ndarray, knn_dist: np.ndarray, fitted: np.ndarray, *, a: float, b: float,
                n_epochs: int, seed: int, negative_sample_rate: int = 5) -> np.ndarray:
    """Place new points in a fitted UMAP layout from their kNN among the fitted points.

    The same steps as ``umap.UMAP.transform`` (fuzzy membership of each new point to its neighbours,
    start at the weighted mean of their positions, a short optimisation with the fitted points held
    fixed), but fed by our neighbour index instead of an NNDescent object.
    """
    import scipy.sparse

    _enable_jit_cache()
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import compute_membership_strengths, init_graph_transform, make_epochs_per_sample, smooth_knn_dist

    n_new, k = knn_idx.shape
    dists = np.ascontiguousarray(knn_dist, dtype=np.float32)
    idx = np.ascontiguousarray(knn_idx, dtype=np.int32)
    sigmas, rhos = smooth_knn_dist(dists, float(k), local_connectivity=0.0)
    rows, cols, vals, _ = compute_membership_strengths(idx, dists, sigmas, rhos, bipartite=True)
    graph = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(n_new, len(fitted)))
    csr = graph.tocsr()
    csr.eliminate_zeros()
    emb = init_graph_transform(csr, fitted.astype(np.float32))
    missing = ~np.isfinite(emb).all(1)
    if missing.any():  # no neighbour with positive weight: put it on its nearest neighbour
        emb[missing] = fitted[idx[missing, 0]]
    graph.data[graph.data < (graph.data.max() / float(n_epochs))] = 0.0
    graph.eliminate_zeros()
    if graph.nnz == 0:
        return emb.astype(np.float32)
    eps = make_epochs_per_sample(graph.data, n_epochs)
    rng_state = np.random.RandomState(seed).randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1,
                                                    3).astype(np.int64)
    emb = optimize_layout_euclidean(emb, fitted.astype(np.float32, copy=True), graph.row, graph.col, n_epochs,
                                    len(fitted), eps, a, b, rng_state, 1.0, 0.25, negative_sample_rate,
                                    parallel=False)
    return np.asarray(emb, dtype=np.float32)


# ---- the estimator -----------------------------------------------------------------------------
class Projector:
    """Project (n, d) vectors to ``n_components`` dimensions with UMAP or PCA.

    Parameters
    ----------
    method : "umap" | "pca"
    n_components : 2 or 3
    n_neighbors, min_dist, n_epochs : UMAP parameters (``n_epochs=None``: umap-learn's default).
    init : UMAP initialisation; "pca" (default) starts from the PCA map, so the UMAP map keeps its
        global orientation and the PCA preview morphs into it.
    gap_corrected : mean-centre every modality before projecting (needs ``modalities`` in fit).
    random_state : seed; the same data and seed give the same coordinates.

    Vectors are compared by cosine (rows are L2-normalised after the optional centring).
    """

    def __init__(self, method: str = "umap", *, n_components: int = 2, n_neighbors: int = 15,
                 min_dist: float = 0.1, n_epochs: int | None = None, init: str = "pca",
                 gap_corrected: bool = False, random_state: int = 0):
        self.method = method
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs
        self.init = init
        self.gap_corrected = gap_corrected
        self.random_state = random_state

    # -- public --
    def fit(self, X: np.ndarray, *, modalities: Sequence[str] | None = None,
            knn: tuple[np.ndarray, np.ndarray] | None = None, progress: StageProgress | None = None) -> Projector:
        """Fit on ``X`` (n, d). ``modalities`` (n,) is required for gap correction. ``knn``: a
        precomputed cosine kNN graph of the rows (``(indices, distances)``, self first, at least
        ``n_neighbors`` columns) — e.g. :func:`knn_graph` over the workspace's neighbour index.
        Stores ``embedding_`` (n, n_components) float32."""
        self._validate()
        X = self._check_X(X)
        self.modality_means_ = {}
        if self.gap_corrected:
            mods = self._check_modalities(modalities, len(X))
            U = unit_rows(X)
            self.modality_means_ = {m: U[mods == m].mean(0) for m in np.unique(mods)}
        Z = self._prepare(X, modalities)
        n = len(Z)
        self.n_features_in_ = X.shape[1]
        if self.method == "pca":
            if n < 2:
                raise ValueError(f"a PCA map needs at least 2 items; got {n}")
            from sklearn.decomposition import PCA

            c = min(self.n_components, n, Z.shape[1])
            self.pca_ = PCA(n_components=c, random_state=self.random_state).fit(Z)
            emb = self.pca_.transform(Z)
            if c < self.n_components:
                emb = np.hstack([emb, np.zeros((n, self.n_components - c))])
            self.embedding_ = emb.astype(np.float32)
        else:
            if n < 4:
                raise ValueError(f"a UMAP map needs at least 4 items; got {n} (use method='pca')")
            k = min(self.n_neighbors, n - 1)
            if knn is None:
                if progress:
                    progress("neighbours", 0, 1)
                knn = knn_graph(Z, k)
            idx, dist = self._check_knn(knn, n, k)
            self._fit_umap(Z, idx, dist, k, progress)
        self._Z = Z
        return self

    def fit_transform(self, X, **kw) -> np.ndarray:
        return self.fit(X, **kw).embedding_

    def transform(self, X: np.ndarray, *, modalities: Sequence[str] | None = None) -> np.ndarray:
        """Coordinates for new rows ``X`` (m, d) in the fitted map (the fitted ones do not move)."""
        self._require_fitted()
        X = self._check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns (as in fit); got {X.shape[1]}")
        if self.gap_corrected:
            mods = self._check_modalities(modalities, len(X))
            unknown = sorted(set(mods.tolist()) - set(self.modality_means_))
            if unknown:
                raise ValueError(f"modalities {unknown} were not in the fitted data {sorted(self.modality_means_)}")
        Z = self._prepare(X, modalities)
        if not len(Z):
            return np.zeros((0, self.n_components), np.float32)
        if self.method == "pca":
            emb = self.pca_.transform(Z)
            if emb.shape[1] < self.n_components:
                emb = np.hstack([emb, np.zeros((len(Z), self.n_components - emb.shape[1]))])
            return emb.astype(np.float32)
        from .index import NeighborIndex

        k = min(self.n_neighbors_, len(self._Z))
        index = NeighborIndex("cosine").fit(self._Z, np.arange(len(self._Z)))
        pos, sim = index.query(Z, k=k)
        dist = np.clip(1.0 - sim, 0.0, 2.0)
        epochs = self.n_epochs // 3 if self.n_epochs else (100 if len(self._Z) <= 10_000 else 30)
        return _umap_place(pos.astype(np.int32), dist, self.embedding_, a=self.a_, b=self.b_,
                           n_epochs=max(epochs, 1), seed=self.random_state or 0)

    # -- state for the workspace cache (no pickle) --
    def state(self) -> dict:
        """Arrays and parameters that :meth:`from_state` needs, besides the fitted vectors."""
        self._require_fitted()
        out = {"embedding": self.embedding_}
        if self.method == "pca":
            out["pca_components"] = self.pca_.components_
            out["pca_mean"] = self.pca_.mean_
        if self.gap_corrected:
            names = sorted(self.modality_means_)
            out["gap_modalities"] = np.array(names, dtype=str)
            out["gap_means"] = np.stack([self.modality_means_[m] for m in names])
        return out

    @classmethod
    def from_state(cls, params: dict, state: dict, X: np.ndarray) -> Projector:
        """Rebuild a fitted projector from :meth:`state`, its parameters and the fitted rows ``X``."""
        self = cls(**params)
        self._validate()
        X = self._check_X(X)
        self.n_features_in_ = X.shape[1]
        self.embedding_ = np.asarray(state["embedding"], np.float32)
        self.modality_means_ = {}
        if self.gap_corrected:
            self.modality_means_ = {str(m): np.asarray(v, np.float32)
                                    for m, v in zip(state["gap_modalities"], state["gap_means"])}
        if self.method == "pca":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=state["pca_components"].shape[0])
            pca.components_ = np.asarray(state["pca_components"])
            pca.mean_ = np.asarray(state["pca_mean"])
            pca.n_components_ = pca.components_.shape[0]
            pca.whiten = False
            self.pca_ = pca
            self._Z = None
        else:
            self.a_, self.b_ = _umap_ab(self.min_dist)
            self.n_neighbors_ = min(self.n_neighbors, len(X) - 1)
        return self._attach_fitted_rows(X, state.get("modalities"))

    def _attach_fitted_rows(self, X: np.ndarray, modalities) -> Projector:
        if self.method == "umap":
            self._Z = self._prepare(X, modalities)
        if len(X) != len(self.embedding_):
            raise ValueError(f"{len(X)} fitted rows but {len(self.embedding_)} coordinates")
        return self

    # -- internals --
    def _fit_umap(self, Z, idx, dist, k, progress) -> None:
        _enable_jit_cache()
        import umap

        kw = {}
        if progress is not None:
            kw["tqdm_kwds"] = {"disable": False, "file": _TqdmProgress(progress, "layout"),
                               "bar_format": "{n}/{total}", "mininterval": 0.25}
        init = self.init
        if init == "pca" and len(Z) <= self.n_components + 1:
            init = "random"
        model = umap.UMAP(n_neighbors=k, n_components=self.n_components, min_dist=self.min_dist,
                          metric="cosine", init=init, n_epochs=self.n_epochs, random_state=self.random_state,
                          precomputed_knn=(idx, dist), force_approximation_algorithm=True, **kw)
        with warnings.catch_warnings():
            # no NNDescent index (we place new points ourselves); n_jobs=1 because of the seed
            warnings.filterwarnings("ignore", message=r".*knn_search_index.*")
            warnings.filterwarnings("ignore", message=r".*n_jobs value 1 overridden.*")
            warnings.filterwarnings("ignore", message=r".*overridden to 1 by setting random_state.*")
            emb = model.fit_transform(Z)
        self.embedding_ = np.asarray(emb, dtype=np.float32)
        self.a_, self.b_ = _umap_ab(self.min_dist)  # the curve the layout was fitted with (spread 1)
        self.n_neighbors_ = k

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.n_components not in (2, 3):
            raise ValueError(f"n_components must be 2 or 3; got {self.n_components!r}")
        if not (isinstance(self.n_neighbors, (int, np.integer)) and self.n_neighbors >= 2):
            raise ValueError(f"n_neighbors must be an integer >= 2; got {self.n_neighbors!r}")
        if not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must be in [0, 1]; got {self.min_dist!r}")

    @staticmethod
    def _check_X(X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n, d); got shape {X.shape}")
        bad = ~np.isfinite(X).all(1)
        if bad.any():
            raise ValueError(f"row {int(np.flatnonzero(bad)[0])} of X has NaN/inf values")
        return X

    @staticmethod
    def _check_modalities(modalities, n: int) -> np.ndarray:
        if modalities is None:
            raise ValueError("gap_corrected=True needs the modality of every row (modalities=...)")
        mods = np.asarray(list(modalities), dtype=object).astype(str)
        if len(mods) != n:
            raise ValueError(f"modalities must have one entry per row ({n}); got {len(mods)}")
        return mods

    def _prepare(self, X: np.ndarray, modalities) -> np.ndarray:
        X = unit_rows(X)
        if self.gap_corrected and len(X):
            mods = self._check_modalities(modalities, len(X))
            X = X.copy()
            for m, mu in self.modality_means_.items():
                X[mods == m] -= mu
            X = unit_rows(X)
        return X

    @staticmethod
    def _check_knn(knn, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = (np.asarray(a) for a in knn)
        if idx.shape != dist.shape or idx.ndim != 2 or idx.shape[0] != n or idx.shape[1] < k:
            raise ValueError(f"knn must be two (n={n}, >= {k}) arrays; got {idx.shape} and {dist.shape}")
        return (np.ascontiguousarray(idx[:, :k], dtype=np.int32),
                np.ascontiguousarray(dist[:, :k], dtype=np.float32))

    def _require_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this Projector is not fitted yet; call fit(X) first")


# ---- trust ---------------------------------------------------------------------------------------
def neighbour_overlap(high_knn: np.ndarray, Y: np.ndarray, k: int = TRUST_K) -> np.ndarray:
    """Per point, the share of its k nearest high-dimensional neighbours that are also among its k
    nearest neighbours on the map. ``high_knn``: (n, >= k+1) indices, self first. Returns (n,) float32."""
    from sklearn.neighbors import NearestNeighbors

    n = len(Y)
    k = min(k, n - 1)
    if k < 1:
        return np.ones(n, np.float32)
    low = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)
    is_self = low == np.arange(n)[:, None]
    low = np.where(is_self, -1, low)
    low[~is_self.any(1), -1] = -1  # self not found (duplicate points): keep the first k others
    hi = np.asarray(high_knn)[:, 1 : k + 1]
    hits = (hi[:, :, None] == low[:, None, :]).any(2).sum(1)
    return (hits / max(hi.shape[1], 1)).astype(np.float32)


def sampled_trustworthiness(X: np.ndarray, Y: np.ndarray, *, n_sample: int = TRUST_SAMPLE, k: int = TRUST_K,
                            seed: int = 0) -> float:
    """scikit-learn's trustworthiness (cosine in the input space) on a seeded sample of the points."""
    from sklearn.manifold import trustworthiness

    n = len(X)
    k = min(k, max(1, n // 2 - 1))
    if n < 4:
        return 1.0
    sel = np.sort(np.random.default_rng(seed).choice(n, size=min(n_sample, n), replace=False))
    return float(trustworthiness(X[sel], Y[sel], n_neighbors=k, metric="cosine"))


def neighbour_label_agreement(coords: np.ndarray, labels, *, k: int = TRUST_K, rows=None) -> float:
    """Mean share of a point's ``k`` nearest map neighbours (among all points) that carry its label.

    ``coords`` (n, dim), ``labels`` (n,); ``rows``: the points to average over (indices or a boolean
    mask; default all). A measure of how well a map keeps labelled groups together (e.g. fitted vs
    placed items of a large map).
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, np.float64)
    labels = np.asarray(labels)
    rows = np.arange(len(coords)) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    k = min(int(k), len(coords) - 1)
    if k < 1 or not len(rows):
        return float("nan")
    _, nb = cKDTree(coords).query(coords[rows], k=k + 1, workers=-1)
    nb = np.asarray(nb).reshape(len(rows), k + 1)
    others = np.where(nb == rows[:, None], -1, nb)
    others[~(nb == rows[:, None]).any(1), -1] = -1  # self not among them (duplicates): drop the last
    same = (labels[np.where(others < 0, 0, others)] == labels[rows][:, None]) & (others >= 0)
    return float(same.sum(1).mean() / k)


# ---- workspace maps --------------------------------------------------------------------------------
@dataclass
class MapResult:
    """A map of one model's vectors in a workspace.

    ``ids`` (n,) item ids, sorted; ``coords`` (n, dim) float32; ``modality`` (n,) str; ``trust`` (n,)
    float32 share of each point's 10 nearest neighbours kept on the map; ``trustworthiness`` on a sample.
    ``cache``: "hit" (read from the workspace), "incremental" (new items placed) or "fit".
    ``fitted``: (n,) bool, the rows UMAP/PCA was fitted on when the map was fitted on a sample (the other
    rows were placed, see the module docstring); None when every row was fitted.
    """

    ids: np.ndarray
    coords: np.ndarray
    modality: np.ndarray
    trust: np.ndarray
    trustworthiness: float
    method: str
    dim: int
    gap_corrected: bool
    params: dict
    seconds: float
    path: Path
    cache: str
    n_new: int = 0
    extra: dict = field(default_factory=dict)
    n_total: int | None = None  # items the map stands for (n: every item is on the map)
    fitted: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_fitted(self) -> int:
        """How many rows UMAP/PCA was fitted on (the others were placed)."""
        return self.n if self.fitted is None else int(np.count_nonzero(self.fitted[: self.n]))

    @property
    def sampled(self) -> bool:
        """Whether the map shows only some of the items (only after :func:`place_in_map` added others)."""
        return self.n_total is not None and self.n_total > self.n


def _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state, fit_points=None) -> dict:
    p = {"method": method, "n_components": int(dim), "gap_corrected": bool(gap_corrected),
         "random_state": int(random_state)}
    if method == "umap":
        p.update(n_neighbors=int(n_neighbors), min_dist=float(min_dist))
    if fit_points is not None:  # only when the map is fitted on a sample, so other maps keep their cache keys
        p["fit_points"] = int(fit_points)
        p["placement"] = PLACEMENT
    return p


def _fit_points(max_points) -> int:
    """The fit sample size: ``max_points`` (an integer >= 4) or :data:`FIT_POINTS`."""
    if max_points is not None and (not isinstance(max_points, (int, np.integer)) or max_points < 4):
        raise ValueError(f"max_points must be an integer >= 4 or None; got {max_points!r}")
    return FIT_POINTS if max_points is None else int(max_points)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def maps_dir(ws, model: str, params: dict, modalities: Sequence[str] | None) -> Path:
    key = _digest({"model": model, "params": params, "modalities": sorted(modalities) if modalities else None})
    return ws.derived_dir("maps", model) / key


def _load_npz(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable map cache %s: %s", path, e)
        return None


def _save_npz(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _commit_map(ws, path: Path, n: int, arrays: dict | None = None) -> None:
    """Publish the map file ``path`` under the workspace's write lock: save ``arrays`` there (when given),
    make ``latest.json`` name it and remove the older maps of its parameters (one map per parameter set).

    With ``arrays=None``, finish the commit of a map file saved earlier: a save killed after the map file's
    rename but before ``latest.json`` leaves a map that reads back as a cache hit; finishing its commit
    keeps later incremental placements starting from it.
    """
    folder = path.parent

    def done() -> bool:
        return ((read_json(folder / "latest.json") or {}).get("file") == path.name
                and all(f.name == path.name for f in folder.glob("*.npz")))

    if arrays is None and done():
        return
    with ws.writing():
        if arrays is None and (done() or not path.is_file()):
            return
        remove_temp_files(folder)  # left by a save that a crash interrupted (we hold the lock)
        if arrays is not None:
            _save_npz(path, arrays)
        atomic_write_json(folder / "latest.json", {"file": path.name, "n": int(n)})
        for old_file in folder.glob("*.npz"):
            if old_file.name != path.name:
                old_file.unlink(missing_ok=True)


def _workspace_ids(ws, model: str, modalities: Sequence[str] | None,
                   max_points: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids (n,) str sorted, modality (n,) str, number of items before sampling); reads no vectors.

    With ``max_points`` and more items than that, the first ``max_points`` sorted ids: ids are content
    hashes, so these are a uniform random sample that changes little when items are added.
    """
    ids = ws.vector_ids(model, modality=list(modalities) if modalities else None)
    if not len(ids):
        what = f" of modality {sorted(modalities)}" if modalities else ""
        raise ValueError(f"workspace {ws.name!r} has no vectors{what} for model {model!r}; embed it first")
    ids = np.sort(ids.astype(str), kind="stable")
    n_total = len(ids)
    if max_points is not None and n_total > max_points:
        ids = ids[:max_points]
    return ids, _modalities_of(ws, ids), n_total


def _modalities_of(ws, ids: np.ndarray) -> np.ndarray:
    return ws.items.set_index("id")["modality"].reindex(ids).fillna("row").to_numpy().astype(str)


def workspace_vectors(ws, model: str, modalities: Sequence[str] | None = None, max_points: int | None = None):
    """The vectors a map of ``ws`` draws: ``(X (n, d) float32, ids (n,) str sorted, modality (n,) str,
    number of items before sampling)``; with ``max_points``, only the sample's vectors are read."""
    ids, mod, n_total = _workspace_ids(ws, model, modalities, max_points)
    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):  # a vector vanished between the two reads
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    return X, ids, mod, n_total


def cached_map(ws, model: str, *, method: str = "umap", dim: int = 2, modalities: Sequence[str] | None = None,
               gap_corrected: bool = False, n_neighbors: int = 15, min_dist: float = 0.1,
               random_state: int = 0, max_points: int | None = None) -> MapResult | None:
    """The cached map for exactly the current items (every item; ``max_points`` as in :func:`compute_map`),
    or None.

    Never computes, and reads ids and the cache file only, no vectors.
    """
    fit_points = _fit_points(max_points)
    ids, mod, n_total = _workspace_ids(ws, model, modalities)
    params = _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state,
                     fit_points if n_total > fit_points else None)
    folder = maps_dir(ws, model, params, modalities)
    path = folder / f"{_digest(ids.tolist())}.npz"
    if not path.is_file():
        return None
    t0 = time.perf_counter()
    z = _load_npz(path)
    if z is None or not np.array_equal(z["ids"].astype(str), ids):
        return None
    meta = json.loads(str(z["meta"]))
    return MapResult(ids=ids, coords=z["embedding"], modality=mod, trust=z["trust"],
                     trustworthiness=float(meta["trustworthiness"]), method=method, dim=dim,
                     gap_corrected=gap_corrected, params=params, seconds=time.perf_counter() - t0, path=path,
                     cache="hit", n_new=0, extra=meta.get("extra", {}), n_total=n_total, fitted=z.get("fitted"))


def compute_map(ws, model: str, *, method: str = "umap", dim: int = 2, modalities: Sequence[str] | None = None,
                gap_corrected: bool = False, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0,
                progress: StageProgress | None = None, use_cache: bool = True,
                max_points: int | None = None) -> MapResult:
    """A map of every item with a vector of ``model`` in workspace ``ws`` (all items, or only ``modalities``).

    Reads the cached map when the item set and parameters match; places items embedded since the last
    map (when they are at most :data:`REFIT_SHARE` of the mapped ones; the mapped ones do not move); else
    fits. UMAP fits reuse the workspace's neighbour index. ``progress(stage, done, total)`` reports the
    stages "neighbours", "layout" (epochs), "placing" (items) and "trust".

    ``max_points``: the most items UMAP/PCA is fitted on (default :data:`FIT_POINTS`). With more items,
    the map is fitted on a seeded random sample of ``max_points`` items and every other item is placed
    (see the module docstring); ``fitted`` of the result marks the sample. Vectors are read in chunks.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    fit_points = _fit_points(max_points)
    if use_cache:
        hit = cached_map(ws, model, method=method, dim=dim, modalities=modalities, gap_corrected=gap_corrected,
                         n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state,
                         max_points=max_points)
        if hit is not None:
            _commit_map(ws, hit.path, hit.n)
            return hit
    ids, mod, n_total = _workspace_ids(ws, model, modalities)
    sampled = n_total > fit_points
    params = _params(method, dim, gap_corrected, n_neighbors, min_dist, random_state,
                     fit_points if sampled else None)
    folder = maps_dir(ws, model, params, modalities)
    latest = read_json(folder / "latest.json") if use_cache else None
    old = _load_npz(folder / latest["file"]) if latest else None
    if sampled:
        coords, trust, tw, state, fitted, cache, n_new = _sampled_map(ws, model, ids, mod, params, fit_points, old,
                                                                      progress)
    else:
        coords, trust, tw, state, cache, n_new = _whole_map(ws, model, ids, mod, params, modalities, old, progress)
        fitted = None

    digest = _digest(ids.tolist())
    path = folder / f"{digest}.npz"
    meta = {"format": _FORMAT, "model": model, "params": params, "modalities": sorted(modalities) if modalities
            else None, "n": len(ids), "n_total": int(n_total), "trustworthiness": tw, "cache": cache,
            "n_new": int(n_new), "n_fitted": int(len(ids) if fitted is None else fitted.sum()),
            "seconds": time.perf_counter() - t0, "extra": {}}
    state["embedding"] = coords
    if fitted is not None:
        state["fitted"] = fitted
    _commit_map(ws, path, len(ids), {"ids": ids, "trust": trust, "meta": np.array(json.dumps(meta)), **state})
    return MapResult(ids=ids, coords=coords, modality=mod, trust=trust, trustworthiness=tw, method=method, dim=dim,
                     gap_corrected=gap_corrected, params=params, seconds=time.perf_counter() - t0, path=path,
                     cache=cache, n_new=int(n_new), n_total=int(n_total), fitted=fitted)


def _whole_map(ws, model, ids, mod, params, modalities, old, progress):
    """Fit (or extend) a map of every item, all vectors in memory: (coords, trust, trustworthiness, state,
    cache, n_new)."""
    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):  # a vector vanished between the two reads
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    proj_params = _projector_params(params)
    method, dim, gap_corrected = params["method"], params["n_components"], params["gap_corrected"]
    coords = None
    n_new = 0
    cache = "fit"
    if old is not None and "fitted" not in old:
        old_ids = old["ids"].astype(str)
        pos = {k: i for i, k in enumerate(ids.tolist())}
        inside = [pos.get(k) for k in old_ids.tolist()]
        n_new = len(ids) - len(old_ids)
        if None not in inside and 0 < n_new <= REFIT_SHARE * len(old_ids):
            inside = np.asarray(inside)
            state = {k: v for k, v in old.items() if k not in ("ids", "trust", "meta")}
            state["modalities"] = mod[inside]
            proj = Projector.from_state(proj_params, state, X[inside])
            is_new = np.ones(len(ids), bool)
            is_new[inside] = False
            if progress:
                progress("placing", 0, int(is_new.sum()))
            coords = np.empty((len(ids), dim), np.float32)
            coords[inside] = proj.embedding_
            coords[is_new] = proj.transform(X[is_new], modalities=mod[is_new])
            proj.embedding_ = coords
            cache = "incremental"
        else:
            n_new = 0

    Z = Projector(**proj_params)._prepare(X, None) if not gap_corrected else None
    knn = None
    if coords is None:
        proj = Projector(**proj_params)
        if method == "umap" and not gap_corrected:
            knn = _workspace_knn(ws, model, ids, X, max(params.get("n_neighbors", 15), TRUST_K + 1), progress)
        proj.fit(X, modalities=mod, knn=knn, progress=progress)
        coords = proj.embedding_
    if gap_corrected:
        Z = proj._prepare(X, mod)
    if knn is None:
        if progress:
            progress("neighbours", 0, 1)
        if not gap_corrected:
            knn = _workspace_knn(ws, model, ids, X, TRUST_K + 1, None)
        else:
            knn = knn_graph(Z, min(TRUST_K + 1, len(Z)))
    if progress:
        progress("trust", 0, 1)
    trust = neighbour_overlap(knn[0], coords)
    tw = sampled_trustworthiness(Z, coords, seed=params["random_state"])
    if progress:
        progress("trust", 1, 1)
    return coords, trust, tw, proj.state(), cache, n_new


def _read_vectors(ws, model: str, ids: np.ndarray) -> np.ndarray:
    """Vectors (len(ids), d) float32 of ``ids``, in their order; ValueError when one has vanished."""
    X, got = ws.vectors(model, ids=ids)
    if len(got) != len(ids):
        raise ValueError(f"the vectors of {model!r} changed while the map was being prepared; try again")
    return X


def _sampled_map(ws, model, ids, mod, params, fit_points, old, progress):
    """A map of every item fitted on a seeded sample of ``fit_points`` of them, the rest placed; or the
    cached map ``old`` extended by placing the new items. Returns (coords, trust, trustworthiness, state,
    fitted mask, cache, n_new). Vectors are read in chunks of :data:`PLACE_CHUNK` items."""

    n = len(ids)
    method, dim, seed = params["method"], params["n_components"], params["random_state"]
    proj_params = _projector_params(params)
    coords = np.full((n, dim), np.nan, np.float32)
    trust = np.full(n, np.nan, np.float32)
    fitted = np.zeros(n, bool)
    cache, n_new, proj, index = "fit", 0, None, None
    if old is not None and "fitted" in old:
        old_ids = old["ids"].astype(str)
        inside = pd.Index(ids).get_indexer(old_ids)
        n_new = n - len(old_ids)
        if (inside >= 0).all() and 0 < n_new <= REFIT_SHARE * len(old_ids):
            old_fitted = old["fitted"].astype(bool)
            coords[inside] = old["embedding"]
            trust[inside] = old["trust"]
            fitted[inside[old_fitted]] = True
            fit_rows = np.flatnonzero(fitted)
            state = {k: v for k, v in old.items() if k not in ("ids", "trust", "meta", "fitted")}
            state["embedding"] = coords[fit_rows]
            state["modalities"] = mod[fit_rows]
            proj = Projector.from_state(proj_params, state, _read_vectors(ws, model, ids[fit_rows]))
            if method == "umap":
                if progress:
                    progress("neighbours", 0, 1)
                index = _SampleSearch(proj._Z, seed)
                if progress:
                    progress("neighbours", 1, 1)
            cache = "incremental"
        else:
            n_new = 0
    if proj is None:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_points, replace=False))
        fitted[fit_rows] = True
        X_fit = _read_vectors(ws, model, ids[fit_rows])
        proj, index, knn = _fit_sample(X_fit, mod[fit_rows], proj_params, seed, progress)
        coords[fit_rows] = proj.embedding_
        trust[fit_rows] = neighbour_overlap(knn[0], proj.embedding_)
        del X_fit
    place = np.flatnonzero(np.isnan(coords[:, 0]))
    _place_rows(ws, model, ids, mod, place, proj, index, fit_rows, coords, trust, seed=seed, progress=progress)
    # trustworthiness on a seeded sample of every item (fitted and placed)
    if progress:
        progress("trust", 0, 1)
    tw_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(TRUST_SAMPLE, n), replace=False))
    Z_tw = proj._prepare(_read_vectors(ws, model, ids[tw_rows]), mod[tw_rows])
    tw = sampled_trustworthiness(Z_tw, coords[tw_rows], seed=seed)
    if progress:
        progress("trust", 1, 1)
    state = {k: v for k, v in proj.state().items() if k != "embedding"}
    return coords, trust, tw, state, fitted, cache, n_new


def _fit_sample(X_fit: np.ndarray, mod_fit: np.ndarray, proj_params: dict, seed: int, progress):
    """Fit a projector on the sample rows ``X_fit`` (m, d): (projector, :class:`_SampleSearch` over the
    prepared sample rows (UMAP only, else None), the sample's cosine kNN graph (self first, >= TRUST_K + 1
    columns))."""
    proj = Projector(**proj_params)
    k = min(max(proj.n_neighbors, TRUST_K + 1), len(X_fit) - 1)
    if proj.gap_corrected:  # the neighbours are those of the centred rows, known after the fit
        proj.fit(X_fit, modalities=mod_fit, progress=progress)
        search = _SampleSearch(proj._Z, seed)
        return proj, (search if proj.method == "umap" else None), search.knn(k)
    if progress:
        progress("neighbours", 0, 1)
    search = _SampleSearch(unit_rows(X_fit), seed)
    knn = search.knn(k)
    if progress:
        progress("neighbours", 1, 1)
    proj.fit(X_fit, modalities=mod_fit, knn=knn if proj.method == "umap" else None, progress=progress)
    return proj, (search if proj.method == "umap" else None), knn


class _SampleSearch:
    """Cosine neighbours among a map's fit sample ``Z_fit`` (m, d) unit rows, through an hnswlib index
    (:class:`core.index.NeighborIndex`, recall@10 tuned to :data:`PLACE_RECALL`, a lighter graph build than
    the workspace's search index). Above :data:`PLACE_DIM` dimensions the rows are first projected on the
    sample's ``PLACE_DIM`` leading singular directions (a seeded randomized SVD): inner products there are
    close to the cosines of the unit rows, and every query costs ``PLACE_DIM / d`` of a full one."""

    def __init__(self, Z_fit: np.ndarray, seed: int):
        from .index import NeighborIndex

        self.V = None
        if Z_fit.shape[1] > PLACE_DIM and len(Z_fit) > PLACE_DIM:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(PLACE_DIM, algorithm="randomized", random_state=seed).fit(Z_fit)
            self.V = np.ascontiguousarray(svd.components_, dtype=np.float32)  # (PLACE_DIM, d)
        self.index = NeighborIndex("cosine" if self.V is None else "ip", recall_target=PLACE_RECALL,
                                   ef_construction=100, seed=seed).fit(self._map(Z_fit), np.arange(len(Z_fit)))

    def _map(self, Z: np.ndarray) -> np.ndarray:
        return Z if self.V is None else np.asarray(Z, np.float32) @ self.V.T

    def query(self, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the sample (m, k) int64, similarities (m, k)) of prepared rows ``Z`` (m, d)."""
        pos, sim = self.index.query(self._map(Z), k=k)
        return pos.astype(np.int64), sim

    def knn(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample's own kNN graph, self first (as :func:`knn_graph`)."""
        return knn_graph(None, k, index=self.index)


def place_by_neighbours(pos: np.ndarray, dist: np.ndarray, fit_coords: np.ndarray, *, jitter: float = PLACE_JITTER,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Map positions of new items from their nearest fitted items.

    ``pos`` (m, k) rows of ``fit_coords`` (n_fit, dim) that are each item's nearest fitted items, ``dist``
    (m, k) their cosine distances. Each item goes to the mean of its neighbours' positions weighted by
    ``1 / (distance + 1e-3)``, plus Gaussian noise of ``jitter`` times the weighted RMS distance of those
    positions from the mean (``rng``; no noise without one), so items with the same neighbours do not
    stack exactly while items in a tight group stay in it. Returns (m, dim) float32.
    """
    pos = np.asarray(pos, np.int64)
    w = 1.0 / (np.clip(np.asarray(dist, np.float64), 0.0, None) + 1e-3)
    w /= w.sum(1, keepdims=True)
    nb = np.asarray(fit_coords, np.float64)[pos]  # (m, k, dim)
    out = np.einsum("mk,mkd->md", w, nb)
    if rng is not None and jitter > 0 and len(out):
        spread = np.sqrt(np.einsum("mk,mk->m", w, ((nb - out[:, None, :]) ** 2).sum(2)))
        out += rng.normal(size=out.shape) * (jitter * spread)[:, None]
    return out.astype(np.float32)


def _place_rows(ws, model, ids, mod, rows, proj, index, fit_rows, coords, trust, *, seed, progress) -> None:
    """Fill ``coords`` (and ``trust``) of ``rows`` (positions in ``ids``) from the fitted sample ``fit_rows``:
    UMAP by :func:`place_by_neighbours` over ``index`` (the prepared sample rows), PCA with its components.

    The trust of a placed UMAP item is the share of its :data:`PLACE_K` nearest sample items that are also
    among its nearest sample items on the map; PCA leaves it NaN (not measured). In place, chunk by chunk.
    """
    if not len(rows):
        return
    fit_coords = coords[fit_rows]
    tree = None
    if index is not None:
        from scipy.spatial import cKDTree

        tree = cKDTree(fit_coords)
    k = min(PLACE_K, len(fit_rows))
    if progress:
        progress("placing", 0, len(rows))
    for start in range(0, len(rows), PLACE_CHUNK):
        r = rows[start : start + PLACE_CHUNK]
        Z = proj._prepare(_read_vectors(ws, model, ids[r]), mod[r])
        if index is None:  # PCA: the fitted linear map
            emb = proj.pca_.transform(Z)
            if emb.shape[1] < proj.n_components:
                emb = np.hstack([emb, np.zeros((len(Z), proj.n_components - emb.shape[1]))])
            coords[r] = emb
        else:
            pos, sim = index.query(Z, k)
            rng = np.random.default_rng([int(seed), int(start)])
            placed = place_by_neighbours(pos, 1.0 - sim, fit_coords, rng=rng)
            coords[r] = placed
            _, low = tree.query(placed, k=k, workers=-1)
            low = np.asarray(low).reshape(len(r), k)
            trust[r] = (pos[:, :, None] == low[:, None, :]).any(2).mean(1)
        if progress:
            progress("placing", min(start + PLACE_CHUNK, len(rows)), len(rows))


def _projector_params(params: dict) -> dict:
    kw = {k: v for k, v in params.items() if k not in ("n_components", "max_points", "fit_points", "placement")}
    return {**kw, "n_components": params["n_components"]}


def place_in_map(ws, model: str, result: MapResult, ids: Sequence[str]) -> MapResult:
    """``result`` plus the items ``ids`` that are not on it, placed into the fitted map (which does not
    move) with :meth:`Projector.transform`; e.g. items of a modality the map leaves out. (Every item of
    the map's modalities is on it already; such ids are left out.)

    Ids without a vector for ``model`` are skipped. Placed points get trust NaN (not measured) and come
    after the map's own points; ``extra["placed"]`` counts them. Nothing is written to the workspace.
    """
    on_map = set(result.ids.tolist())
    want = [str(i) for i in dict.fromkeys(ids) if str(i) not in on_map]
    X_new, new_ids = ws.vectors(model, ids=want)
    if not len(new_ids):
        return result
    z = _load_npz(Path(result.path))
    if z is None:
        raise ValueError(f"the map file {str(result.path)!r} is gone; compute the map again")
    fit_rows = np.arange(result.n) if z.get("fitted") is None else np.flatnonzero(z["fitted"])
    X_fit, got = ws.vectors(model, ids=result.ids[fit_rows])
    if len(got) != len(fit_rows):
        raise ValueError("some mapped items have no vector any more; compute the map again")
    mod_fit = np.asarray(result.modality).astype(str)
    state = {k: v for k, v in z.items() if k not in ("ids", "trust", "meta", "fitted")}
    state["embedding"] = np.asarray(z["embedding"])[fit_rows]
    state["modalities"] = mod_fit[fit_rows]
    proj = Projector.from_state(_projector_params(result.params), state, X_fit)
    new_ids = new_ids.astype(str)
    mod_new = _modalities_of(ws, new_ids)
    if result.gap_corrected:  # a modality the map never saw cannot be placed gap-corrected
        keep = np.isin(mod_new, list(proj.modality_means_))
        X_new, new_ids, mod_new = X_new[keep], new_ids[keep], mod_new[keep]
        if not len(new_ids):
            return result
    coords = proj.transform(X_new, modalities=mod_new)
    from dataclasses import replace

    return replace(result, ids=np.concatenate([result.ids, new_ids]), coords=np.vstack([result.coords, coords]),
                   modality=np.concatenate([mod_fit, mod_new]),
                   trust=np.concatenate([result.trust, np.full(len(new_ids), np.nan, np.float32)]),
                   extra={**result.extra, "placed": len(new_ids)},
                   fitted=(None if result.fitted is None
                           else np.concatenate([result.fitted, np.zeros(len(new_ids), bool)])))


def _workspace_knn(ws, model: str, ids: np.ndarray, X: np.ndarray, k: int, progress) -> tuple[np.ndarray, np.ndarray]:
    """kNN graph of the given items (sorted ids) from the workspace's persistent neighbour index.

    When the map covers every item of the model, the saved index is queried (built or updated first);
    for a subset of modalities a temporary index over the subset is used.
    """
    from .index import NeighborIndex, workspace_index

    k = min(k, len(ids))
    if progress:
        progress("neighbours", 0, 1)
    if ws.store(model).count() == len(ids):
        index = workspace_index(ws, model)
        if len(index.ids_) == len(ids):
            pos_of = {k_: i for i, k_ in enumerate(ids.tolist())}
            perm = np.array([pos_of[str(k_)] for k_ in index.ids_.tolist()])  # index row -> our row
            p, sim = index.kneighbors(k)
            out = np.empty_like(p)
            out[perm] = perm[p]
            s = np.empty_like(sim)
            s[perm] = sim
            if progress:
                progress("neighbours", 1, 1)
            return out.astype(np.int32), np.clip(1.0 - s, 0.0, 2.0).astype(np.float32)
    index = NeighborIndex("cosine").fit(X, np.arange(len(X)))
    res = knn_graph(X, k, index=index)
    if progress:
        progress("neighbours", 1, 1)
    return res


def map_to_json(result: MapResult) -> dict:
    """The CLI/JSON summary of a map (the keys docs/cli.md lists for ``jointscope map`` first)."""
    return {"n": result.n, "n_total": result.n_total if result.n_total is not None else result.n,
            "method": result.method, "dim": result.dim, "seconds": round(result.seconds, 3),
            "trustworthiness": round(result.trustworthiness, 4), "path": str(result.path),
            "n_fitted": result.n_fitted, "n_placed": result.n - result.n_fitted,
            "gap_corrected": result.gap_corrected, "cache": result.cache, "n_new": result.n_new,
            "mean_trust": round(float(np.nanmean(result.trust)), 4) if result.n else None,
            "by_modality": {str(m): int(c) for m, c in zip(*np.unique(result.modality, return_counts=True))}}


# ---- colouring a map ---------------------------------------------------------------------------
KMEANS_FULL_MAX = 20_000  # rows up to which cluster_labels runs full KMeans; MiniBatchKMeans above


def map_vectors(ws, model: str, *, ids: Sequence[str]) -> np.ndarray:
    """The vectors of a map's points: ``X (len(ids), d) float32`` in the order of ``ids``.

    Raises ValueError when an id has no vector for ``model`` any more (the map is older than the vectors).
    """
    X, got = ws.vectors(model, ids=list(ids))
    if len(got) != len(ids):
        raise ValueError(f"{len(ids) - len(got)} mapped items have no vector for {model} any more; "
                         "reload the page")
    return X


def cluster_labels(X: np.ndarray, *, k: int, seed: int = 0) -> list[str]:
    """KMeans clusters of the rows of ``X`` (n, d) in cosine geometry (rows scaled to unit length first).

    Returns n labels ``"cluster 1"`` .. ``"cluster k"``; ``k`` is clipped to ``[1, n]``. Up to
    :data:`KMEANS_FULL_MAX` rows scikit-learn's ``KMeans`` (``n_init=3``), above that ``MiniBatchKMeans``
    (``batch_size=4096``), both with ``random_state=seed``, so the same input gives the same clusters.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    X = unit_rows(X)
    k = max(1, min(int(k), len(X)))
    algo = (KMeans(n_clusters=k, n_init=3, random_state=seed) if len(X) <= KMEANS_FULL_MAX
            else MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=4096))
    return [f"cluster {int(v) + 1}" for v in algo.fit_predict(X)]


def similarity_to_text(X: np.ndarray, *, text: str, encoder) -> np.ndarray:
    """Cosine of every row of ``X`` (n, d) with ``text`` encoded by ``encoder`` (``encode_texts``):
    (n,) float32. The rows are scaled to unit length; the text vector is used as the encoder gives it
    (unit length for encoder models)."""
    q = np.asarray(encoder.encode_texts([text])[0])
    return (unit_rows(X) @ q).astype(np.float32)


def vector_modalities(ws, model: str) -> dict[str, int]:
    """``{modality: count}`` of the items of ``ws`` that have a vector for ``model``; image, text, row
    first, any other modality after them by name."""
    have = ws.store(model).ids()
    items = ws.items.drop_duplicates("id")
    counts = items.loc[items["id"].isin(have), "modality"].value_counts()
    order = ["image", "text", "row"]
    return {str(m): int(counts[m]) for m in sorted(counts.index, key=lambda m: (order.index(m) if m in order
                                                                                  else len(order), m))}


def true_neighbours(X: np.ndarray, coords: np.ndarray, row: int, *, k: int = 10) -> pd.DataFrame:
    """Where a 2-D/3-D map misleads about one point: its ``k`` nearest neighbours in the original space.

    ``X`` (n, d) the mapped points' vectors, ``coords`` (n, dim) their map positions, ``row`` the point.
    Returns one row per neighbour, nearest first: ``row`` (position in the map), ``cosine`` (in the
    original space), ``map_rank`` (1 = the point's nearest neighbour on the map; a neighbour the map kept
    close has a small rank, one it tore away a large one). Exact: a cosine against every mapped point
    (one matrix-vector product), so it holds for the sampled maps of large workspaces too.
    """
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if np.asarray(coords).shape[0] != n:
        raise ValueError(f"coords must have one row per vector ({n}); got {np.asarray(coords).shape[0]}")
    if not 0 <= row < n:
        raise ValueError(f"row must be in [0, {n}); got {row}")
    U = unit_rows(X)
    return neighbours_by_cosine(U @ U[row], coords, row, k=k)


def neighbours_by_cosine(cos: np.ndarray, coords: np.ndarray, row: int, *, k: int = 10) -> pd.DataFrame:
    """:func:`true_neighbours` from ``cos`` (n,), the cosine of the point at ``row`` with every mapped point
    (computed any way, e.g. chunk by chunk), and the map's ``coords`` (n, dim)."""
    cos = np.array(cos, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.float32)
    n = len(cos)
    if coords.shape[0] != n or not 0 <= row < n:
        raise ValueError(f"cos and coords must have one row per point and 0 <= row < {n}; got {coords.shape[0]} "
                         f"coordinates, row {row}")
    k = int(min(max(k, 1), n - 1))
    if k < 1:
        return pd.DataFrame({"row": np.zeros(0, np.int64), "cosine": np.zeros(0, np.float32),
                             "map_rank": np.zeros(0, np.int64)})
    cos[row] = -np.inf
    near = np.argpartition(-cos, k - 1)[:k]
    near = near[np.argsort(-cos[near], kind="stable")]
    dist = np.linalg.norm(coords - coords[row], axis=1)
    dist[row] = -np.inf  # the point itself comes first on the map
    rank = np.empty(n, np.int64)
    rank[np.argsort(dist, kind="stable")] = np.arange(n)  # the point is 0, its nearest on the map 1
    return pd.DataFrame({"row": near.astype(np.int64), "cosine": cos[near].astype(np.float32),
                         "map_rank": rank[near]})
