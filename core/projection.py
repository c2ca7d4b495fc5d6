"""Projections of a joint space: the :class:`Projector` estimator (UMAP and PCA to 2-D or 3-D, gap
correction), trust measures of a map, and colouring a map's points.

* :class:`Projector` — a scikit-learn estimator (``BaseEstimator``: parameters in ``__init__``, declared
  once in :data:`PROJECTOR_CONSTRAINTS`, its ``parameter_constraints``; ``fit`` returns self, ``embedding_``,
  ``transform`` for new items) over an (n, d) array. It lives in :mod:`core.projector` (importing
  scikit-learn takes seconds; reading a cached map does not need it) and is importable from here. UMAP
  runs on a precomputed k-nearest-neighbour graph (from :class:`core.index.NeighborIndex`, so the
  neighbour index of a workspace is reused), and ``transform``
  places new items next to their neighbours among the fitted ones with umap-learn's own placement
  routine, so adding items never refits the map.
* Trust: :func:`neighbour_overlap` (per point), :func:`sampled_trustworthiness`,
  :func:`neighbour_label_agreement`.
* Colouring a map: :func:`cluster_labels` (seeded KMeans in cosine geometry), :func:`similarity_to_text`
  (cosine of every point with an encoded text); :func:`true_neighbours` of a point.

Workspace maps (:func:`compute_map`, :func:`cached_map`, :func:`place_in_map`, :class:`MapResult`, map
files and their cache, :func:`map_vectors`, :func:`vector_modalities`) live in :mod:`core.maps`; their
names are importable from here as well.

Gap correction: every modality is mean-centred (its centroid subtracted) before projecting, so the
map shows the same data without the offset between images and texts (the "modality gap").

umap-learn compiles its numba kernels on first use (tens of seconds). :func:`warm_up` compiles the
kernels this module uses — with numba's on-disk cache switched on for them, so later processes load
them instead of compiling — and is meant to run in a background thread when a server starts.
"""
from __future__ import annotations

import logging
import threading
import time
from numbers import Integral, Real

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .errors import not_fitted_getattr
from .params import Interval, Options

log = logging.getLogger(__name__)

METHODS = ("umap", "pca")
TRUST_K = 10  # neighbours compared for per-point trust and trustworthiness
TRUST_SAMPLE = 2000  # points used for sklearn's trustworthiness (it is quadratic in n)

_not_fitted = not_fitted_getattr(__name__)


def __getattr__(name: str):
    """``NotFittedError`` (scikit-learn's) and the names of :mod:`core.maps` (``compute_map``, ``MapResult``,
    ...), imported when first asked for, so ``from core.projection import compute_map`` keeps working."""
    if name == "Projector":  # the estimator lives in core.projector (it imports scikit-learn)
        from .projector import Projector

        return Projector
    if not name.startswith("_") and name != "NotFittedError":
        from . import maps

        if hasattr(maps, name):
            return getattr(maps, name)
    return _not_fitted(name)


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


def enable_jit_cache() -> None:
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
    enable_jit_cache()
    from .projector import Projector

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


# ---- the estimator's parameters ------------------------------------------------------------------
# declared here, where importing costs nothing: the estimator (core.projector) imports scikit-learn, which the
# map's settings, checks and cache look-ups do not need
PROJECTOR_CONSTRAINTS: dict[str, list] = {
    "method": [Options(METHODS)],
    "n_components": [Options((2, 3))],
    "n_neighbors": [Interval(Integral, 2, 200)],
    "min_dist": [Interval(Real, 0.0, 0.99)],
    "n_epochs": [Interval(Integral, 1, None), None],
    "init": [Options(("pca", "spectral", "random"))],
    "gap_corrected": [bool],
    "random_state": [Interval(Integral, 0, 2**31 - 1), None],
}
PROJECTOR_DEFAULTS: dict = {"method": "umap", "n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "n_epochs": None,
                            "init": "pca", "gap_corrected": False, "random_state": 0}


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


# ---- colouring a map ---------------------------------------------------------------------------
KMEANS_FULL_MAX = 20_000  # rows up to which cluster_labels runs full KMeans; MiniBatchKMeans above
CLUSTER_FIT_MAX = 100_000  # rows MiniBatchKMeans is fitted on at most (a seeded sample); the rest are assigned
ROWS_AT_ONCE = 65_536  # rows of an array scaled and scored at a time


def _rows_of(X, rows: np.ndarray) -> np.ndarray:
    """The unit rows ``rows`` of ``X``: an (n, d) array, or a row source with ``unit(rows)`` that reads them
    from a store (:class:`core.mapvectors.MapVectors`)."""
    return X.unit(rows) if hasattr(X, "unit") else unit_rows(np.asarray(X)[rows])


def _unit_chunks(X):
    """Every unit row of ``X`` (an array or a row source, see :func:`_rows_of`), a chunk at a time:
    yields ``(rows (m,) int, (m, d) float32)``; a row source reads each chunk from its store."""
    if hasattr(X, "chunks"):
        yield from X.chunks()
        return
    for start in range(0, len(X), ROWS_AT_ONCE):
        rows = np.arange(start, min(len(X), start + ROWS_AT_ONCE))
        yield rows, _rows_of(X, rows)


def cluster_labels(X, *, k: int, seed: int = 0) -> list[str]:
    """KMeans clusters of the rows of ``X`` in cosine geometry (rows scaled to unit length first).

    ``X``: an (n, d) array, or a row source (``len``, ``unit(rows)``, ``chunks()``, e.g.
    :class:`core.mapvectors.MapVectors`) whose rows are read from the workspace a chunk at a time.
    Returns n labels ``"cluster 1"`` .. ``"cluster k"``; ``k`` is clipped to ``[1, n]``. Up to
    :data:`KMEANS_FULL_MAX` rows scikit-learn's ``KMeans`` (``n_init=3``); above that ``MiniBatchKMeans``
    (``batch_size=4096``) fitted on every row up to :data:`CLUSTER_FIT_MAX` rows, else on a seeded sample of
    that many, and every row assigned to its nearest centre chunk by chunk (memory bounded by the sample);
    both with ``random_state=seed``, so the same input gives the same clusters. :func:`cluster_codes` gives
    the same clusters as numbers (no string per row).
    """
    return [f"cluster {int(v) + 1}" for v in cluster_codes(X, k=k, seed=seed)]


def cluster_codes(X, *, k: int, seed: int = 0) -> np.ndarray:
    """The clusters of :func:`cluster_labels` as (n,) int64 codes: code ``c`` is ``"cluster {c + 1}"``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(X)
    k = max(1, min(int(k), n))
    if n <= KMEANS_FULL_MAX:
        return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(_rows_of(X, np.arange(n))).astype(np.int64)
    fit_rows = (np.arange(n) if n <= CLUSTER_FIT_MAX else
                np.sort(np.random.default_rng(seed).choice(n, size=CLUSTER_FIT_MAX, replace=False)))
    algo = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=4096).fit(_rows_of(X, fit_rows))
    codes = np.empty(n, dtype=np.int64)
    for rows, U in _unit_chunks(X):
        codes[rows] = algo.predict(U)
    return codes


def similarity_to_text(X, *, text: str, encoder) -> np.ndarray:
    """Cosine of every row of ``X`` with ``text`` encoded by ``encoder`` (``encode_texts``): (n,) float32.
    ``X``: an (n, d) array or a row source read chunk by chunk (see :func:`cluster_labels`). The rows are
    scaled to unit length; the text vector is used as the encoder gives it (unit length for encoder models)."""
    q = np.asarray(encoder.encode_texts([text])[0], dtype=np.float32)
    out = np.empty(len(X), dtype=np.float32)
    for rows, U in _unit_chunks(X):
        out[rows] = U @ q
    return out


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
