"""The map estimator: :class:`Projector` (UMAP or PCA as a scikit-learn estimator) and the placement of new
points in a fitted UMAP layout.

Its own module because subclassing scikit-learn's ``BaseEstimator`` imports scikit-learn (seconds on a busy
machine): the map's settings, their checks and the workspace's cached maps (:mod:`core.projection`,
:mod:`core.maps`) are read without it. ``from core.projection import Projector`` keeps working.
"""
from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from .encoders import unit_rows
from .params import validate
from .progress import StageProgress
from .projection import PROJECTOR_CONSTRAINTS, enable_jit_cache, knn_graph
from .projection import PROJECTOR_DEFAULTS as _D

__all__ = ["Projector"]


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

    enable_jit_cache()
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
class Projector(BaseEstimator):
    """Project (n, d) vectors to ``n_components`` dimensions with UMAP or PCA (a scikit-learn estimator:
    ``get_params``, ``set_params`` and ``sklearn.base.clone`` work).

    Parameters
    ----------
    method : "umap" | "pca"
    n_components : 2 or 3
    n_neighbors, min_dist, n_epochs : UMAP parameters (``n_epochs=None``: umap-learn's default).
    init : UMAP initialisation; "pca" (default) starts from the PCA map, so the UMAP map keeps its
        global orientation and the PCA preview morphs into it.
    gap_corrected : mean-centre every modality before projecting (needs ``modalities`` in fit).
    random_state : seed; the same data and seed give the same coordinates.

    The allowed values of every parameter are declared once, in :attr:`parameter_constraints`
    (:mod:`core.params`); ``fit`` checks them, and the CLI's options and the Map page's widgets read their
    bounds from there (through :data:`core.mapview.PARAMETERS`).

    Vectors are compared by cosine (rows are L2-normalised after the optional centring). Fitted attributes:
    ``embedding_`` (n, n_components) float32, ``prepared_`` (n, d) the fitted rows as compared (unit length,
    centred per modality with gap correction; None for a PCA map rebuilt by :meth:`from_state`),
    ``modality_means_``, ``n_features_in_``; ``pca_`` (PCA) or ``a_``, ``b_``, ``n_neighbors_`` (UMAP).
    """

    parameter_constraints: ClassVar[dict[str, list]] = PROJECTOR_CONSTRAINTS

    # the defaults are declared once, in core.projection (read there without scikit-learn)
    def __init__(self, method: str = _D["method"], *, n_components: int = _D["n_components"],
                 n_neighbors: int = _D["n_neighbors"], min_dist: float = _D["min_dist"],
                 n_epochs: int | None = _D["n_epochs"], init: str = _D["init"],
                 gap_corrected: bool = _D["gap_corrected"], random_state: int = _D["random_state"]):
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
        Z = self.prepare(X, modalities)
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
        self.prepared_ = Z
        return self

    def fit_transform(self, X, **kw) -> np.ndarray:
        return self.fit(X, **kw).embedding_

    def transform(self, X: np.ndarray, *, modalities: Sequence[str] | None = None,
                  prepared: bool = False) -> np.ndarray:
        """Coordinates (m, n_components) float32 for new rows ``X`` (m, d) in the fitted map (the fitted ones do
        not move). ``prepared``: ``X`` are rows :meth:`prepare` returned already (``modalities`` unused)."""
        self._require_fitted()
        X = self._check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns (as in fit); got {X.shape[1]}")
        if self.gap_corrected and not prepared:
            mods = self._check_modalities(modalities, len(X))
            unknown = sorted(set(mods.tolist()) - set(self.modality_means_))
            if unknown:
                raise ValueError(f"modalities {unknown} were not in the fitted data {sorted(self.modality_means_)}")
        Z = X if prepared else self.prepare(X, modalities)
        if not len(Z):
            return np.zeros((0, self.n_components), np.float32)
        if self.method == "pca":
            emb = self.pca_.transform(Z)
            if emb.shape[1] < self.n_components:
                emb = np.hstack([emb, np.zeros((len(Z), self.n_components - emb.shape[1]))])
            return emb.astype(np.float32)
        from .index import NeighborIndex

        k = min(self.n_neighbors_, len(self.prepared_))
        index = NeighborIndex("cosine").fit(self.prepared_, np.arange(len(self.prepared_)))
        pos, sim = index.query(Z, k=k)
        dist = np.clip(1.0 - sim, 0.0, 2.0)
        epochs = self.n_epochs // 3 if self.n_epochs else (100 if len(self.prepared_) <= 10_000 else 30)
        return _umap_place(pos.astype(np.int32), dist, self.embedding_, a=self.a_, b=self.b_,
                           n_epochs=max(epochs, 1), seed=self.random_state or 0)

    def prepare(self, X: np.ndarray, modalities: Sequence[str] | None = None) -> np.ndarray:
        """The rows of ``X`` (n, d) as this projector compares them: (n, d) float32, unit length, and with gap
        correction each row's modality mean (from fit) subtracted before scaling to unit length again (rows
        of a modality the fit never saw are only scaled). Needs a fit only with ``gap_corrected``."""
        X = unit_rows(X)
        if self.gap_corrected and len(X):
            if not hasattr(self, "modality_means_"):
                self._require_fitted()
            mods = self._check_modalities(modalities, len(X))
            X = X.copy()
            for m, mu in self.modality_means_.items():
                X[mods == m] -= mu
            X = unit_rows(X)
        return X

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
            self.prepared_ = None
        else:
            self.a_, self.b_ = _umap_ab(self.min_dist)
            self.n_neighbors_ = min(self.n_neighbors, len(X) - 1)
        return self._attach_fitted_rows(X, state.get("modalities"))

    def _attach_fitted_rows(self, X: np.ndarray, modalities) -> Projector:
        if self.method == "umap":
            self.prepared_ = self.prepare(X, modalities)
        if len(X) != len(self.embedding_):
            raise ValueError(f"{len(X)} fitted rows but {len(self.embedding_)} coordinates")
        return self

    # -- internals --
    def _fit_umap(self, Z, idx, dist, k, progress) -> None:
        enable_jit_cache()
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
        """Every parameter against :attr:`parameter_constraints` (ValueError naming it, its range and value)."""
        validate(self.get_params(deep=False), self.parameter_constraints, type(self).__name__)

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
