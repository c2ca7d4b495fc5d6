"""Comparing two representations of the same items: linear CKA, kNN overlap, Procrustes-aligned maps, and
:func:`compare_models` (two models of a workspace on the items both have)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..encoders import unit_rows
from ..progress import StageProgress
from .metrics import TOP
from .metrics import json_float as _f


# ---- comparing representations -----------------------------------------------------------------
def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n items.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc (n, d1), Yc (n, d2)
    (the HSIC form with linear kernels), used as given. 1 = the same up to rotation and isotropic
    scale; near 0 = unrelated. Invariant to orthogonal transforms, not to arbitrary linear ones.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"X and Y must be (n, d) arrays with the same n; got {X.shape} and {Y.shape}")
    if len(X) < 2:
        raise ValueError(f"CKA needs at least 2 items; got {len(X)}")
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    num = np.linalg.norm(Yc.T @ Xc) ** 2
    den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    return float(num / den) if den > 0 else 0.0


def align_maps(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Align map B onto map A (both (n, dim) coordinates of the same items).

    Both are centred and scaled to unit Frobenius norm, then B gets the rotation/reflection that
    fits A best (``scipy.linalg.orthogonal_procrustes``; no extra shrinking of B, so both maps keep
    the same size on screen). Returns ``(A', B', displacement (n,), disparity)``: coordinates in
    units of the map's RMS radius (a typical point lies ~1 from the centre), per-item distance
    between its two positions in those units, and ``sum ||A' - B'||^2 / n`` in [0, 4] (0 = the same
    map up to rotation, reflection, shift and scale).
    """
    from scipy.linalg import orthogonal_procrustes

    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2 or len(A) < 2:
        raise ValueError(f"A and B must be (n, dim) arrays of the same shape with n >= 2; got {A.shape}, {B.shape}")
    n = len(A)

    def standard(M):
        M = M - M.mean(0)
        norm = np.linalg.norm(M)
        return M / norm if norm > 0 else M

    A0, B0 = standard(A), standard(B)
    R, _ = orthogonal_procrustes(B0, A0)
    A1, B1 = A0 * np.sqrt(n), (B0 @ R) * np.sqrt(n)
    disp = np.linalg.norm(A1 - B1, axis=1)
    return A1, B1, disp, float(np.sum(disp**2) / n)


def knn_jaccard(knn_a: np.ndarray, knn_b: np.ndarray) -> np.ndarray:
    """Per item, the Jaccard overlap |A ∩ B| / |A ∪ B| of its neighbour sets in two spaces.
    ``knn_a``, ``knn_b``: (n, k) positions of the same items, self excluded. Returns (n,) float64."""
    a, b = np.asarray(knn_a), np.asarray(knn_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"both kNN lists need one row per item; got {a.shape} and {b.shape}")
    inter = np.array([len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist())], dtype=np.float64)
    union = a.shape[1] + b.shape[1] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# ---- comparing two models ----------------------------------------------------------------------
@dataclass
class ModelComparison:
    """Two models on the same items (see :func:`compare_models`).

    ``items``: one row per common item: ``id, modality, knn_overlap`` (Jaccard of the k-neighbour
    sets), ``displacement`` (distance between its two aligned map positions, in map radii), ``ax, ay``
    / ``bx, by`` (aligned map coordinates; model B's map rotated onto model A's, see :func:`align_maps`).
    """

    model_a: str
    model_b: str
    modalities: list[str]
    k: int
    knn_overlap: float
    cka: float
    disparity: float
    method: str
    items: pd.DataFrame
    seconds: float

    @property
    def n(self) -> int:
        return len(self.items)

    def to_dict(self, top: int = TOP) -> dict:
        moved = self.items.sort_values("displacement", ascending=False, kind="stable").head(top)
        return {"model_a": self.model_a, "model_b": self.model_b, "modalities": self.modalities, "n": self.n,
                "k": self.k, "knn_overlap": _f(self.knn_overlap), "cka": _f(self.cka),
                "procrustes_disparity": _f(self.disparity), "method": self.method,
                "mean_displacement": _f(self.items["displacement"].mean()) if self.n else None,
                "most_moved": [{"id": r.id, "modality": r.modality, "displacement": _f(r.displacement),
                                "knn_overlap": _f(r.knn_overlap)} for r in moved.itertuples(index=False)],
                "seconds": round(self.seconds, 3)}


def compare_models(ws, model_a: str, model_b: str, *, modality: str | Sequence[str] | None = None, k: int = 10,
                   method: str = "umap", seed: int = 0, progress: StageProgress | None = None) -> ModelComparison:
    """Compare two models' spaces on the items both have vectors for (optionally one modality).

    * kNN overlap: per item, the Jaccard overlap of its k nearest neighbours (cosine, among the
      common items) in the two spaces; overall = the mean.
    * linear CKA (:func:`linear_cka`) of the two sets of unit vectors.
    * aligned maps: each model's map of the common modalities from ``core.projection.compute_map``
      (``method`` umap|pca; cached in the workspace), restricted to the common items and aligned with
      :func:`align_maps` (orthogonal Procrustes); ``displacement`` = how far each item moved, in map
      radii; ``disparity`` = the mean squared displacement (0 = the same map up to rotation).
    """
    from ..index import NeighborIndex
    from ..projection import compute_map

    t0 = time.perf_counter()
    if model_a == model_b:
        raise ValueError(f"choose two different models; got {model_a!r} twice")
    want = None if modality is None else ([modality] if isinstance(modality, str) else list(modality))
    Xa, ia = ws.vectors(model_a, modality=want)
    Xb, ib = ws.vectors(model_b, modality=want)
    common = np.intersect1d(ia.astype(str), ib.astype(str))
    if len(common) < 4:
        what = f" of modality {want}" if want else ""
        raise ValueError(f"{model_a!r} and {model_b!r} share {len(common)} items{what} with vectors; "
                         "comparing needs at least 4 (embed both models first)")
    common = np.sort(common).astype(object)
    Xa, _ = ws.vectors(model_a, ids=common)
    Xb, _ = ws.vectors(model_b, ids=common)
    Ua, Ub = unit_rows(Xa), unit_rows(Xb)
    mods = ws.items.set_index("id")["modality"].reindex(common.astype(str)).fillna("row")
    mods = mods.to_numpy().astype(str)
    n = len(common)
    kk = min(k, n - 1)
    if progress:
        progress("neighbours", 0, 4)
    na, _ = NeighborIndex("cosine").fit(Ua, np.arange(n)).kneighbors(kk + 1)
    nb, _ = NeighborIndex("cosine").fit(Ub, np.arange(n)).kneighbors(kk + 1)
    overlap = knn_jaccard(na[:, 1:], nb[:, 1:])
    cka = linear_cka(Ua, Ub)
    used = sorted(set(mods.tolist()))
    coords = []
    for i, m in enumerate((model_a, model_b)):
        if progress:
            progress(f"map {m}", i + 1, 4)
        res = compute_map(ws, m, method=method, dim=2, modalities=used, random_state=seed)
        pos = pd.Series(np.arange(res.n), index=res.ids.astype(str))
        coords.append(np.asarray(res.coords, dtype=np.float64)[pos.reindex(common.astype(str)).to_numpy(np.int64)])
    A, B, disp, disparity = align_maps(coords[0], coords[1])
    if progress:
        progress("done", 4, 4)
    frame = pd.DataFrame({"id": common.astype(str), "modality": mods, "knn_overlap": overlap, "displacement": disp,
                          "ax": A[:, 0], "ay": A[:, 1], "bx": B[:, 0], "by": B[:, 1]})
    return ModelComparison(model_a=model_a, model_b=model_b, modalities=used, k=int(kk),
                           knn_overlap=float(overlap.mean()), cka=cka, disparity=float(disparity), method=method,
                           items=frame, seconds=time.perf_counter() - t0)
