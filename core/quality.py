"""Measures of a joint space: how good it is, which items look wrong, and how two models differ.

Array functions (``X`` is an (n, d) float array; unless a docstring says otherwise its rows are
L2-normalised here, i.e. everything is measured in cosine geometry):

* :func:`rankme` — effective rank (Garrido et al. 2023) with its maximum min(n, d) and the spectrum;
* :func:`alignment`, :func:`uniformity` — Wang & Isola (2020) on true pairs / on all pairs;
* :func:`modality_gap` (+ :func:`modality_separability`) — centroid distance, pair vs random cosines,
  cross-validated linear separability of the two modalities (:func:`workspace_modality_gap`: of a
  workspace's vectors, on a pair-keeping sample above :data:`GAP_SAMPLE` items);
* :func:`k_occurrence`, :func:`hubness`, :func:`cross_modal_hubness` — skewness of the k-occurrence
  distribution N_k and the hub items (Radovanović et al. 2010);
* :func:`paired_retrieval` — image→text / text→image recall@k and, per pair, the rank of its true
  partner and a hubness-corrected pair score (CSLS, Conneau et al. 2018);
* :func:`robust_z`, :func:`local_outlier_factor` — the statistics behind the per-item flags;
* :func:`linear_cka`, :func:`knn_jaccard` — comparing two representations of the same items.

Workspace functions (a :class:`core.workspace.Workspace` and a model id):

* :func:`quality_analysis` — everything above on the model's vectors, with per-item scores and flags
  (``noisy_pair``, ``hub``, ``outlier``) as a DataFrame; :func:`quality_report` is its JSON summary
  (the ``jointscope quality`` output) and :func:`item_flags` its per-item frame;
* :func:`compare_models` — two models on the items both have: kNN overlap per item, linear CKA, and
  their maps (``core.projection.compute_map``) aligned by Procrustes with per-item displacement.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .progress import StageProgress

log = logging.getLogger(__name__)

RETRIEVAL_KS = (1, 5, 10)
NOISY_Z = 3.0  # a pair is noisy when its CSLS score is this many robust SDs below the median pair
HUB_SIGMA = 2.0  # a hub's N_k is more than this many SDs above the mean k (Radovanović et al. 2010)
OUTLIER_LOF = 1.5  # local outlier factor above which an item is flagged as an outlier
MIN_PAIRS_FOR_FLAGS = 8  # median/MAD of fewer pair scores say nothing
TOP = 10  # items listed per flag in the report



def _f(x) -> float | None:
    """A JSON-able float (None for None / NaN / inf)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def pair_positions(items: pd.DataFrame, ids: Sequence[str], *, text_links: bool = False) -> np.ndarray:
    """(p, 2) int positions into ``ids`` of (image, text) pairs, from the workspace's ``pair`` column.

    An image's ``pair`` names its caption; both must be among ``ids``. Each (image, caption) pair once.
    ``text_links``: also the pairs named only by a caption's ``pair`` (a second caption of an image:
    the image names its first caption, every caption names its image).
    """
    pos = {str(k): i for i, k in enumerate(ids)}
    df = items[items["modality"] == "image"][["id", "pair"]].dropna()
    out = [(pos[a], pos[b]) for a, b in zip(df["id"].astype(str), df["pair"].astype(str)) if a in pos and b in pos]
    if text_links:
        seen = set(out)
        mods = dict(zip(items["id"].astype(str), items["modality"]))
        tx = items[items["modality"] == "text"][["id", "pair"]].dropna()
        for t, a in zip(tx["id"].astype(str), tx["pair"].astype(str)):
            if a in pos and t in pos and mods.get(a) == "image" and (pos[a], pos[t]) not in seen:
                seen.add((pos[a], pos[t]))
                out.append((pos[a], pos[t]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


# ---- effective rank ----------------------------------------------------------------------------
def rankme(X: np.ndarray, *, eps: float = 1e-7, max_rows: int | None = None, seed: int = 0) -> dict:
    """RankMe effective rank (Garrido et al. 2023) of ``X`` (n, d), used as given (not normalised).

    ``exp(-sum_i p_i log p_i)`` with ``p_i = sigma_i / sum_j sigma_j + eps`` over the singular values
    ``sigma`` of X. It lies in [1, min(n, d)]: a matrix of rank r with r equal singular values scores
    r; a space whose vectors use few directions scores low (dimensional collapse).

    ``max_rows``: use a seeded sample of at most this many rows. Returns ``{"value": float, "max":
    min(n_used, d), "n": rows used, "singular_values": (min(n_used, d),) float64, descending}``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or min(X.shape) < 1:
        raise ValueError(f"X must be a non-empty (n, d) array; got shape {X.shape}")
    if max_rows is not None and len(X) > max_rows:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))]
    s = np.linalg.svd(X, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return {"value": 1.0, "max": int(min(X.shape)), "n": len(X), "singular_values": s}
    p = s / total + eps
    value = float(np.exp(-np.sum(p * np.log(p))))
    return {"value": value, "max": int(min(X.shape)), "n": len(X), "singular_values": s}


# ---- alignment and uniformity ------------------------------------------------------------------
def alignment(Xa: np.ndarray, Xb: np.ndarray, alpha: float = 2) -> float:
    """Alignment (Wang & Isola 2020): ``mean_i ||f(a_i) - f(b_i)||^alpha`` over true pairs (row i of
    ``Xa`` with row i of ``Xb``), on unit rows. 0 = every pair coincides; lower is better (max 2^alpha)."""
    A, B = unit_rows(Xa).astype(np.float64), unit_rows(Xb).astype(np.float64)
    if A.shape != B.shape or A.ndim != 2:
        raise ValueError(f"Xa and Xb must be (p, d) arrays of the same shape; got {A.shape} and {B.shape}")
    if not len(A):
        raise ValueError("alignment needs at least one pair; got 0")
    return float(np.mean(np.linalg.norm(A - B, axis=1) ** alpha))


def uniformity(X: np.ndarray, t: float = 2, *, max_pairs: int = 50_000, seed: int = 0) -> float:
    """Uniformity (Wang & Isola 2020): ``log mean exp(-t ||f(x) - f(y)||^2)`` on unit rows.

    Convention: the mean runs over distinct unordered pairs {i, j}, i < j (as ``torch.pdist`` in the
    authors' code); no item is paired with itself. When there are more than ``max_pairs`` of them, a
    seeded sample of ``max_pairs`` pairs (i != j) is used. Range [-4t, 0]: more negative = the points
    spread more uniformly over the sphere; 0 = all points coincide.
    """
    from scipy.spatial.distance import pdist
    from scipy.special import logsumexp

    U = unit_rows(X).astype(np.float64)
    n = len(U)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 items; got {n}")
    if n * (n - 1) // 2 <= max_pairs:
        d2 = pdist(U, "sqeuclidean")
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n  # j != i
        d2 = np.sum((U[i] - U[j]) ** 2, axis=1)
    return float(logsumexp(-t * d2) - np.log(len(d2)))


# ---- modality gap ------------------------------------------------------------------------------
def modality_separability(X: np.ndarray, modalities: Sequence[str], *, a: str = "image", b: str = "text",
                          max_per_modality: int = 2000, folds: int = 5, seed: int = 0) -> dict | None:
    """How well a linear classifier tells modality ``a`` from ``b`` (unit rows).

    Cross-validated accuracy of scikit-learn's ``LogisticRegression`` (stratified ``folds``-fold, on a
    seeded sample of at most ``max_per_modality`` items of each modality). 1.0 = the modalities live in
    separate regions (a strong modality gap); ``chance`` = the share of the larger class.
    Returns ``{"accuracy", "std", "chance", "folds", "n"}`` or None when a modality has fewer than
    ``folds`` items.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    U = unit_rows(X)
    mods = np.asarray(list(modalities)).astype(str)
    rng = np.random.default_rng(seed)
    rows = []
    for m in (a, b):
        idx = np.flatnonzero(mods == m)
        if len(idx) < folds:
            return None
        rows.append(np.sort(rng.choice(idx, size=min(max_per_modality, len(idx)), replace=False)))
    sel = np.concatenate(rows)
    y = (mods[sel] == b).astype(int)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(max_iter=1000), U[sel], y, cv=cv, scoring="accuracy")
    return {"accuracy": float(scores.mean()), "std": float(scores.std()), "chance": float(max(y.mean(), 1 - y.mean())),
            "folds": int(folds), "n": len(sel)}


def modality_gap(X: np.ndarray, modalities: Sequence[str], pairs: np.ndarray | None = None, *,
                 a: str = "image", b: str = "text", n_random: int = 20_000, seed: int = 0,
                 separability: bool = False) -> dict:
    """How far apart two modalities sit in the space.

    Returns ``{"centroid_distance": ||mean(a) - mean(b)|| of unit rows, "centroid_cosine": cosine of
    the two centroids, "pair_cosine": mean cosine of true (a, b) pairs (None without pairs),
    "random_pair_cosine": mean cosine of random (a, b) pairs, "n_a", "n_b", "n_pairs",
    "separability": :func:`modality_separability` when ``separability`` (else None)}``.
    A CLIP-style space typically shows a clear centroid distance and pair cosines well above random
    ones; the gap-corrected map removes the centroid offset before projecting.
    """
    Xu = unit_rows(X)
    mods = np.asarray(list(modalities)).astype(str)
    ia, ib = np.flatnonzero(mods == a), np.flatnonzero(mods == b)
    out = {"n_a": len(ia), "n_b": len(ib), "n_pairs": 0, "centroid_distance": None,
           "centroid_cosine": None, "pair_cosine": None, "random_pair_cosine": None, "a": a, "b": b,
           "separability": None}
    if not len(ia) or not len(ib):
        return out
    ca, cb = Xu[ia].mean(0), Xu[ib].mean(0)
    out["centroid_distance"] = float(np.linalg.norm(ca - cb))
    out["centroid_cosine"] = float(ca @ cb / max(np.linalg.norm(ca) * np.linalg.norm(cb), 1e-12))
    rng = np.random.default_rng(seed)
    ra = rng.choice(ia, size=min(n_random, len(ia) * len(ib)))
    rb = rng.choice(ib, size=len(ra))
    out["random_pair_cosine"] = float(np.mean(np.sum(Xu[ra] * Xu[rb], axis=1)))
    if pairs is not None and len(pairs):
        pairs = np.asarray(pairs, dtype=np.int64)
        ok = (mods[pairs[:, 0]] == a) & (mods[pairs[:, 1]] == b)
        pairs = pairs[ok]
        if len(pairs):
            out["n_pairs"] = len(pairs)
            out["pair_cosine"] = float(np.mean(np.sum(Xu[pairs[:, 0]] * Xu[pairs[:, 1]], axis=1)))
    if separability:
        out["separability"] = modality_separability(Xu, mods, a=a, b=b, seed=seed)
    return out


GAP_SAMPLE = 50_000  # items (with their pair partners) behind workspace_modality_gap at most


def gap_sample_ids(ids: Sequence[str], items: pd.DataFrame, *, max_items: int = GAP_SAMPLE) -> np.ndarray:
    """The ids behind a workspace's gap numbers: ``ids`` (n,) as str when ``n <= max_items``; else the
    ``max_items // 2`` smallest ids (content hashes: a uniform random sample) plus those of their pair
    partners (``items["pair"]``) that are in ``ids``, so true pairs stay whole — (m,) str, sorted, unique.
    """
    ids = np.asarray(ids).astype(str)
    if len(ids) <= max_items:
        return ids
    sample = np.sort(ids)[: max_items // 2]
    partners = items.loc[items["id"].isin(sample), "pair"].dropna().astype(str).to_numpy()
    return np.unique(np.concatenate([sample, partners[np.isin(partners, ids)]]))


def workspace_modality_gap(ws, model: str, *, max_items: int = GAP_SAMPLE) -> dict:
    """:func:`modality_gap` of the model's vectors in ``ws`` (uncorrected space), true pairs included.

    Above ``max_items`` vectors it measures :func:`gap_sample_ids` (reading every vector would take too
    long); ``"sampled"`` is then the number of items measured, else None.
    """
    items = ws.items
    ids = gap_sample_ids(ws.vector_ids(model), items, max_items=max_items)
    X, ids = ws.vectors(model, ids=ids)
    ids = ids.astype(str)
    mods = items.drop_duplicates("id").set_index("id")["modality"].reindex(ids).fillna("row").to_numpy()
    out = modality_gap(X, mods, pair_positions(items, ids))
    out["sampled"] = len(ids) if len(ids) < ws.store(model).count() else None
    return out

# ---- hubness -----------------------------------------------------------------------------------
def k_occurrence(neighbours: np.ndarray, n: int) -> np.ndarray:
    """N_k: how often each of ``n`` items appears in the kNN lists ``neighbours`` (m, k) int positions
    (self excluded by the caller). Returns (n,) int64; its mean is m * k / n."""
    nb = np.asarray(neighbours, dtype=np.int64).ravel()
    return np.bincount(nb[nb >= 0], minlength=n).astype(np.int64)


def _hub_summary(n_k: np.ndarray, k: int, sigma: float) -> dict:
    from scipy.stats import skew

    n_k = np.asarray(n_k, dtype=np.int64)
    sd = float(n_k.std()) if len(n_k) else 0.0
    mean = float(n_k.mean()) if len(n_k) else 0.0
    sk = float(skew(n_k.astype(np.float64))) if len(n_k) > 2 and sd > 0 else 0.0
    threshold = mean + sigma * sd
    hubs = np.flatnonzero(n_k > threshold) if sd > 0 else np.zeros(0, np.int64)
    hubs = hubs[np.argsort(-n_k[hubs], kind="stable")]
    return {"k": int(k), "n_k": n_k, "skewness": sk, "mean": mean, "std": sd, "threshold": float(threshold),
            "hubs": hubs, "antihubs": int(np.sum(n_k == 0)), "max_n_k": int(n_k.max()) if len(n_k) else 0}


def hubness(X: np.ndarray | None = None, *, k: int = 10, knn: np.ndarray | None = None,
            sigma: float = HUB_SIGMA) -> dict:
    """Hubness of a space: the k-occurrence N_k of every item in the others' k-nearest-neighbour
    lists (cosine, self excluded) and its skewness (``scipy.stats.skew``).

    Give ``X`` (n, d), or ``knn`` (n, >= k+1) positions, self first (``NeighborIndex.kneighbors``).
    A skewness near 0 means every item is a neighbour about equally often; a large positive skew
    means a few hubs sit in many neighbour lists (they crowd retrieval results). Hubs: ``N_k >
    mean + sigma * std``. Returns ``{"k", "n_k": (n,) int64, "skewness", "mean", "std", "threshold",
    "hubs": positions, most frequent first, "antihubs": count of N_k = 0, "max_n_k"}``.
    """
    from .index import NeighborIndex

    if knn is None:
        if X is None:
            raise ValueError("give X or knn")
        n = len(X)
        if n < 2:
            raise ValueError(f"hubness needs at least 2 items; got {n}")
        k = min(k, n - 1)
        knn, _ = NeighborIndex("cosine").fit(X, np.arange(n)).kneighbors(k + 1)
    knn = np.asarray(knn, dtype=np.int64)
    n = len(knn)
    k = min(k, knn.shape[1] - 1)
    if k < 1:
        raise ValueError(f"k must be >= 1 (knn has {knn.shape[1]} columns, self first)")
    return _hub_summary(k_occurrence(knn[:, 1 : k + 1], n), k, sigma)


def cross_modal_hubness(X_targets: np.ndarray, X_queries: np.ndarray, *, k: int = 10,
                        sigma: float = HUB_SIGMA) -> dict:
    """Hubness of targets (e.g. images) in the queries' (e.g. captions') k-nearest-target lists:
    N_k of every target among the k nearest targets of each query (cosine). Same keys as :func:`hubness`;
    positions index ``X_targets``. A hub image here is returned for many unrelated captions."""
    from .index import NeighborIndex

    nt = len(X_targets)
    if nt < 1 or not len(X_queries):
        raise ValueError("cross-modal hubness needs at least one target and one query")
    k = min(k, nt)
    got, _ = NeighborIndex("cosine").fit(X_targets, np.arange(nt)).query(X_queries, k=k)
    return _hub_summary(k_occurrence(got.astype(np.int64), nt), k, sigma)


# ---- outliers ----------------------------------------------------------------------------------
def local_outlier_factor(knn: np.ndarray, sim: np.ndarray, *, k: int = 10) -> np.ndarray:
    """scikit-learn's local outlier factor of every item from a cosine kNN graph.

    ``knn`` (n, >= k+1) positions and ``sim`` (n, >= k+1) cosines, self first (``NeighborIndex.
    kneighbors``); the graph is handed to ``LocalOutlierFactor(metric="precomputed")`` as a sparse
    distance matrix (1 - cosine), so no second neighbour search runs. ~1 = as dense as its neighbours;
    well above 1 = in a sparser region than its neighbours (an outlier). Returns (n,) float64.
    """
    import scipy.sparse
    from sklearn.neighbors import LocalOutlierFactor

    knn = np.asarray(knn, dtype=np.int64)
    n, m = knn.shape
    k = min(k, m - 1)
    if k < 1:
        return np.ones(n)
    dist = np.clip(1.0 - np.asarray(sim, dtype=np.float64)[:, : k + 1], 0.0, 2.0)
    dist[:, 0] = 0.0  # explicit zeros are kept: sklearn expects every item to be its own neighbour
    graph = scipy.sparse.csr_matrix((dist.ravel(), knn[:, : k + 1].ravel(), np.arange(0, n * (k + 1) + 1, k + 1)),
                                    shape=(n, n))
    lof = LocalOutlierFactor(n_neighbors=k, metric="precomputed").fit(graph)
    return -lof.negative_outlier_factor_.astype(np.float64)


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)``: a z-score that a few extreme values do not distort
    (the modified z-score of Iglewicz & Hoaglin; |z| > 3.5 is their outlier rule). NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    out = np.full(v.shape, np.nan)
    if not ok.any():
        return out
    med = np.median(v[ok])
    mad = 1.4826 * np.median(np.abs(v[ok] - med))
    if mad <= 1e-12:  # over half the values are equal: fall back to the mean absolute deviation
        mad = 1.2533 * np.mean(np.abs(v[ok] - med))
    out[ok] = (v[ok] - med) / mad if mad > 1e-12 else 0.0
    return out


# ---- paired retrieval --------------------------------------------------------------------------
def _one_side(Q: np.ndarray, C: np.ndarray, q_of_pair: np.ndarray, c_of_pair: np.ndarray, partners, true: np.ndarray,
              k_csls: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """For queries Q (rows named by pairs) against candidates C: per pair the rank of its true
    candidate among the non-partner ones, and per query row the mean cosine of its k_csls nearest
    candidates. Batched over the queries that occur in pairs."""
    rank = np.empty(len(q_of_pair), np.int64)
    r_top = np.full(len(Q), np.nan)
    uq = np.unique(q_of_pair)
    kk = min(k_csls, C.shape[0])
    order = np.argsort(q_of_pair, kind="stable")
    sorted_q = q_of_pair[order]
    for start in range(0, len(uq), batch):
        chunk = uq[start : start + batch]
        S = Q[chunk] @ C.T  # (c, n_candidates)
        r_top[chunk] = -np.mean(np.partition(-S, kk - 1, axis=1)[:, :kk], axis=1)
        lo, hi = np.searchsorted(sorted_q, chunk[0], side="left"), np.searchsorted(sorted_q, chunk[-1], side="right")
        sel = order[lo:hi]
        local = np.searchsorted(chunk, q_of_pair[sel])
        rows = S[local]
        mask = partners[q_of_pair[sel]].toarray()
        rank[sel] = 1 + np.sum((rows > true[sel, None]) & ~mask, axis=1)
    return rank, r_top


def paired_retrieval(X: np.ndarray, modalities: Sequence[str], pairs: np.ndarray, *,
                     ks: Sequence[int] = RETRIEVAL_KS, k_csls: int = 10, batch: int = 512) -> tuple[dict, pd.DataFrame]:
    """Image↔text retrieval over true pairs, and per pair how well its partner ranks.

    ``pairs`` (p, 2) positions (image, text) into X; candidates are every image / every text of X.
    Ranks are "filtered": a pair's rank counts the candidates that score higher than its partner and
    are not themselves true partners of the query (so a caption shared by several images counts for
    each of them, and an image's other captions do not push its caption down). Recall@k = share of
    pairs whose partner ranks <= k.

    CSLS (Conneau et al. 2018) corrects the pair cosine for hubness:
    ``2 cos(i, t) - r_text(i) - r_image(t)`` with ``r_text(i)`` the mean cosine of image i to its
    ``k_csls`` nearest texts (and vice versa); a wrong caption scores far below the other pairs.

    Returns ``(summary, frame)``: summary ``{"n_pairs", "n_images", "n_texts", "image_to_text":
    {"recall@k"...}, "text_to_image": {...}, "median_rank": {"image_to_text", "text_to_image"},
    "pair_cosine"}``; frame one row per pair: ``image, text`` (positions), ``cosine, rank_i2t,
    rank_t2i, csls`` (rank_i2t: rank of the caption for the image query; rank_t2i: of the image for
    the caption query).
    """
    import scipy.sparse

    U = unit_rows(X)
    mods = np.asarray(list(modalities)).astype(str)
    pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    if len(pairs):
        ok = (mods[pairs[:, 0]] == "image") & (mods[pairs[:, 1]] == "text")
        pairs = pairs[ok]
    ii, tt = np.flatnonzero(mods == "image"), np.flatnonzero(mods == "text")
    cols = ["image", "text", "cosine", "rank_i2t", "rank_t2i", "csls"]
    summary = {"n_pairs": len(pairs), "n_images": len(ii), "n_texts": len(tt),
               "image_to_text": None, "text_to_image": None, "median_rank": None, "pair_cosine": None}
    if not len(pairs):
        return summary, pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    row_of = np.full(len(U), -1, np.int64)
    row_of[ii] = np.arange(len(ii))
    row_of[tt] = np.arange(len(tt))
    pi, pt = row_of[pairs[:, 0]], row_of[pairs[:, 1]]
    Ui, Ut = U[ii], U[tt]
    true = np.sum(Ui[pi] * Ut[pt], axis=1).astype(np.float32)
    partners = scipy.sparse.csr_matrix((np.ones(len(pi), bool), (pi, pt)), shape=(len(ii), len(tt)))
    r_i2t, top_i = _one_side(Ui, Ut, pi, pt, partners, true, k_csls, batch)
    r_t2i, top_t = _one_side(Ut, Ui, pt, pi, partners.T.tocsr(), true, k_csls, batch)
    csls = 2 * true.astype(np.float64) - top_i[pi] - top_t[pt]
    frame = pd.DataFrame({"image": pairs[:, 0], "text": pairs[:, 1], "cosine": true, "rank_i2t": r_i2t,
                          "rank_t2i": r_t2i, "csls": csls})
    summary["image_to_text"] = {f"recall@{k}": float(np.mean(r_i2t <= k)) for k in ks}
    summary["text_to_image"] = {f"recall@{k}": float(np.mean(r_t2i <= k)) for k in ks}
    summary["median_rank"] = {"image_to_text": float(np.median(r_i2t)), "text_to_image": float(np.median(r_t2i))}
    summary["pair_cosine"] = float(np.mean(true))
    return summary, frame


def flag_noisy_pairs(frame: pd.DataFrame, *, threshold: float = NOISY_Z) -> pd.DataFrame:
    """Add ``noisy_score`` (how many robust SDs a pair's CSLS lies below the median pair: ``-robust_z``)
    and ``noisy`` (score > ``threshold``) to a :func:`paired_retrieval` frame. With fewer than
    ``MIN_PAIRS_FOR_FLAGS`` pairs nothing is flagged."""
    out = frame.copy()
    out["noisy_score"] = -robust_z(out["csls"].to_numpy()) if len(out) else np.zeros(0)
    out["noisy"] = (out["noisy_score"] > threshold) & (len(out) >= MIN_PAIRS_FOR_FLAGS)
    return out


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


# ---- workspace level ---------------------------------------------------------------------------
@dataclass
class QualityAnalysis:
    """Everything :func:`quality_analysis` measured.

    ``report``: the JSON-able summary (see :func:`quality_report`). ``items``: one row per item with a
    vector (``id, modality, n_k, knn_similarity, lof, pair_cosine, partner_rank, noisy_score,
    noisy_pair, hub, outlier``; pair columns are NaN for items without a pair). ``pairs``: one row per
    (image, caption) pair (``image_id, text_id, cosine, rank_i2t, rank_t2i, csls, noisy_score,
    noisy``). ``singular_values``: the spectrum behind RankMe. ``cross_n_k``: per image, N_k in the
    captions' image-kNN lists (None without both modalities).
    """

    report: dict
    items: pd.DataFrame
    pairs: pd.DataFrame
    singular_values: np.ndarray
    cross_n_k: pd.Series | None = None
    extra: dict = field(default_factory=dict)


def _item_records(items: pd.DataFrame, ids: Sequence[str], **cols) -> list[dict]:
    """``[{id, modality, text, source, **cols}]`` for JSON lists (text: a caption or an image's caption)."""
    by_id = items.drop_duplicates("id").set_index("id")
    out = []
    for j, i in enumerate(ids):
        row = by_id.loc[i] if i in by_id.index else None
        text = None if row is None else row.get("text")
        if row is not None and row.get("modality") == "image" and isinstance(row.get("pair"), str) \
                and row["pair"] in by_id.index:
            text = by_id.loc[row["pair"], "text"]
        rec = {"id": str(i), "modality": None if row is None else row.get("modality"),
               "text": text if isinstance(text, str) else None,
               "source": None if row is None or not isinstance(row.get("source"), str) else row.get("source")}
        for k, v in cols.items():
            val = v[j]
            rec[k] = int(val) if isinstance(val, (np.integer, int)) else _f(val)
        out.append(rec)
    return out


def _workspace_knn(ws, model: str, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN (positions into ``ids``, self first) and cosines from the workspace's neighbour index."""
    from .index import NeighborIndex, workspace_index

    idx = workspace_index(ws, model)
    if len(idx.ids_) != len(ids) or set(idx.ids_.tolist()) != set(ids.tolist()):
        X, _ = ws.vectors(model, ids=ids)
        idx = NeighborIndex("cosine").fit(X, ids)
    pos_of = {k_: i for i, k_ in enumerate(ids.tolist())}
    perm = np.array([pos_of[k_] for k_ in idx.ids_.tolist()], dtype=np.int64)  # index row -> our row
    p, sim = idx.kneighbors(k)
    out = np.empty_like(p)
    out[perm] = perm[p]
    s = np.empty_like(sim)
    s[perm] = sim
    return out, s


def quality_analysis(ws, model: str, *, k: int = 10, sample: int = 10_000, seed: int = 0,
                     noisy_threshold: float = NOISY_Z, outlier_threshold: float = OUTLIER_LOF,
                     hub_sigma: float = HUB_SIGMA, progress: StageProgress | None = None) -> QualityAnalysis:
    """Measure the quality of ``model``'s space in workspace ``ws`` (cosine geometry, unit rows).

    ``k``: neighbours for hubness, outliers and CSLS. ``sample``: at most this many items for RankMe,
    uniformity and separability, and at most this many pairs for retrieval and the noisy-pair flags
    (seeded samples; hubness and outliers always cover every item, through the workspace's index).
    Raises ``ValueError`` when the workspace has no vectors for the model.
    """
    t0 = time.perf_counter()

    def step(stage: str, i: int) -> None:
        if progress is not None:
            progress(stage, i, 6)

    X, ids = ws.vectors(model)
    if not len(ids):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}; embed it first")
    if len(ids) < 3:
        raise ValueError(f"quality needs at least 3 items with vectors for {model!r}; workspace "
                         f"{ws.name!r} has {len(ids)}")
    if not k >= 1:
        raise ValueError(f"k must be >= 1; got {k}")
    ids = ids.astype(str)
    U = unit_rows(X)
    items = ws.items
    mods = items.drop_duplicates("id").set_index("id")["modality"].reindex(ids).fillna("row").to_numpy().astype(str)
    n, d = U.shape
    rng = np.random.default_rng(seed)
    present = [m for m in ("image", "text", "row") if (mods == m).any()]

    step("rank", 0)
    rk = rankme(U, max_rows=sample, seed=seed)
    by_mod_rank = {}
    for m in present:
        if (mods == m).sum() >= 2:
            r = rankme(U[mods == m], max_rows=sample, seed=seed)
            by_mod_rank[m] = {"value": r["value"], "max": r["max"]}
    uni = uniformity(U, seed=seed)
    uni_by = {m: uniformity(U[mods == m], seed=seed) for m in present if (mods == m).sum() >= 2}

    step("pairs", 1)
    pairs = pair_positions(items, ids, text_links=True)
    if len(pairs) > sample:
        pairs = pairs[np.sort(rng.choice(len(pairs), size=sample, replace=False))]
    align = alignment(U[pairs[:, 0]], U[pairs[:, 1]]) if len(pairs) else None
    gap = modality_gap(U, mods, pairs, seed=seed, separability=True)

    step("neighbours", 2)
    kk = min(k, n - 1)
    knn, sim = _workspace_knn(ws, model, np.asarray(ids, dtype=object), kk + 1)
    hub = hubness(knn=knn, k=kk, sigma=hub_sigma)
    cross = None
    cross_n_k = None
    if "image" in present and "text" in present:
        cross = cross_modal_hubness(U[mods == "image"], U[mods == "text"], k=kk, sigma=hub_sigma)
        cross_n_k = pd.Series(cross["n_k"], index=ids[mods == "image"], name="n_k_cross")

    step("outliers", 3)
    lof = local_outlier_factor(knn, sim, k=kk)
    knn_sim = sim[:, 1 : kk + 1].mean(1).astype(np.float64)

    step("retrieval", 4)
    retrieval, pf = paired_retrieval(U, mods, pairs, k_csls=kk)
    pf = flag_noisy_pairs(pf, threshold=noisy_threshold)
    pf.insert(0, "image_id", ids[pf["image"].to_numpy(np.int64)] if len(pf) else pd.Series(dtype=object))
    pf.insert(1, "text_id", ids[pf["text"].to_numpy(np.int64)] if len(pf) else pd.Series(dtype=object))
    pf = pf.drop(columns=["image", "text"]).sort_values("noisy_score", ascending=False, kind="stable")
    pf = pf.reset_index(drop=True)

    step("flags", 5)
    frame = pd.DataFrame({"id": ids, "modality": mods, "n_k": hub["n_k"], "knn_similarity": knn_sim, "lof": lof})
    # per item, its most suspicious pair (an image with two captions, a caption of several images)
    worst = pd.concat([pf[["image_id", "cosine", "rank_i2t", "noisy_score", "noisy"]]
                       .rename(columns={"image_id": "id", "rank_i2t": "partner_rank"}),
                       pf[["text_id", "cosine", "rank_t2i", "noisy_score", "noisy"]]
                       .rename(columns={"text_id": "id", "rank_t2i": "partner_rank"})])
    worst = worst.sort_values("noisy_score", ascending=False, kind="stable").drop_duplicates("id").set_index("id")
    frame["pair_cosine"] = frame["id"].map(worst["cosine"]).astype(np.float64)
    frame["partner_rank"] = frame["id"].map(worst["partner_rank"]).astype(np.float64)
    frame["noisy_score"] = frame["id"].map(worst["noisy_score"]).astype(np.float64)
    frame["noisy_pair"] = frame["id"].isin(worst.index[worst["noisy"].to_numpy(bool)])
    frame["hub"] = np.isin(np.arange(n), hub["hubs"])
    frame["outlier"] = lof > outlier_threshold

    hubs_top = hub["hubs"][:TOP]
    out_order = np.argsort(-lof, kind="stable")
    out_top = out_order[lof[out_order] > outlier_threshold][:TOP]
    noisy_top = pf[pf["noisy"]].head(TOP)
    text_of = items.drop_duplicates("id").set_index("id")
    noisy_list = [{"image_id": str(r.image_id), "text_id": str(r.text_id),
                   "text": text_of["text"].get(r.text_id), "image_source": text_of["source"].get(r.image_id),
                   "cosine": _f(r.cosine), "rank_i2t": int(r.rank_i2t), "rank_t2i": int(r.rank_t2i),
                   "noisy_score": _f(r.noisy_score)} for r in noisy_top.itertuples(index=False)]
    hub_json = {k_: v for k_, v in hub.items() if k_ not in ("n_k", "hubs")}
    hub_json.update(n_hubs=len(hub["hubs"]),
                    top=_item_records(items, ids[hubs_top], n_k=hub["n_k"][hubs_top]))
    if cross is not None:
        img_ids = ids[mods == "image"]
        ctop = cross["hubs"][:TOP]
        hub_json["cross_modal"] = {**{k_: v for k_, v in cross.items() if k_ not in ("n_k", "hubs")},
                                   "n_hubs": len(cross["hubs"]),
                                   "top": _item_records(items, img_ids[ctop], n_k=cross["n_k"][ctop])}
    else:
        hub_json["cross_modal"] = None
    report = {
        "rankme": {"value": rk["value"], "max": rk["max"], "ratio": rk["value"] / rk["max"], "n": rk["n"],
                   "by_modality": by_mod_rank},
        "alignment": _f(align),
        "uniformity": _f(uni),
        "modality_gap": gap,
        "hubness": hub_json,
        "retrieval": retrieval,
        "flags": {"noisy_pair": int(frame["noisy_pair"].sum()), "noisy_pairs": int(pf["noisy"].sum()) if len(pf) else 0,
                  "hub": int(frame["hub"].sum()), "outlier": int(frame["outlier"].sum()),
                  "thresholds": {"noisy_score": noisy_threshold, "hub_n_k": hub["threshold"],
                                 "lof": outlier_threshold}},
        "noisy_pairs": noisy_list,
        "outliers": _item_records(items, ids[out_top], lof=lof[out_top]),
        "uniformity_by_modality": uni_by,
        "model": model, "n": int(n), "dim": int(d),
        "by_modality": {m: int((mods == m).sum()) for m in present},
        "k": int(kk), "alignment_alpha": 2, "uniformity_t": 2, "n_pairs": len(pairs),
        "seconds": 0.0,
    }
    report["seconds"] = round(time.perf_counter() - t0, 3)
    step("done", 6)
    log.info("quality of %s in %s: %.1fs", model, ws.name, report["seconds"])
    return QualityAnalysis(report=report, items=frame, pairs=pf, singular_values=rk["singular_values"],
                           cross_n_k=cross_n_k)


def quality_report(ws, model: str, *, k: int = 10, sample: int = 10_000, seed: int = 0, **kw) -> dict:
    """The JSON summary of :func:`quality_analysis` (``jointscope quality``'s output).

    Keys, those docs/cli.md lists for ``jointscope quality`` first: ``rankme`` ({value, max = min(n, d),
    ratio, by_modality}), ``alignment`` (image–caption pairs, alpha = 2; None without pairs), ``uniformity``
    (all items, t = 2), ``modality_gap`` (:func:`modality_gap` with separability), ``hubness`` ({k, skewness, n_hubs,
    top, cross_modal, ...}), then ``retrieval`` (recall@1/5/10 both ways), ``flags`` (counts and
    thresholds), ``noisy_pairs`` / ``outliers`` (top items with ids, text and source),
    ``uniformity_by_modality``, ``model, n, dim, by_modality, k, n_pairs, seconds``.
    """
    return quality_analysis(ws, model, k=k, sample=sample, seed=seed, **kw).report


def item_flags(ws, model: str, **kw) -> pd.DataFrame:
    """Per-item quality scores and flags of :func:`quality_analysis` (``id`` + numbers + booleans),
    usable as a colour or a filter on a map."""
    return quality_analysis(ws, model, **kw).items


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
    from .index import NeighborIndex
    from .projection import compute_map

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
    mods = ws.items.drop_duplicates("id").set_index("id")["modality"].reindex(common.astype(str)).fillna("row")
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


# ---- does the model fit the data? ----------------------------------------------------------------
FIT_MIN_ITEMS = 20  # fewer items (or pairs) with vectors than this say nothing either way
FIT_SAMPLE = 2000  # pairs (or items) a verdict measures at most: a seeded sample
FIT_Z = 1.96  # two-sided 95 % confidence bounds
# a "small" effect (Cohen's d = 0.2), and the odds ratio that matches it (ln OR = d * pi / sqrt(3),
# Hasselblad & Hedges 1995): a margin over chance below this is not a meaningful one
FIT_SMALL_D = 0.2
FIT_SMALL_ODDS = float(np.exp(FIT_SMALL_D * np.pi / np.sqrt(3)))  # ≈ 1.44
FIT_LOG_RANK = 0.5  # a fitting model removes at least half of chance's log-rank (see log_rank_score)
FIT_KNOWN_MOST = 0.5  # below this share of known words the model never saw most of the words
FIT_KNOWN_NEARLY_ALL = 0.9  # below this, about one word in ten (one a sentence) is unknown to it
FIT_K = 10  # neighbours behind the neighbour-structure test
VERDICTS = ("fits", "weak", "near chance", "unknown")


def wilson_interval(hits: int, n: int, z: float = FIT_Z) -> tuple[float, float]:
    """Wilson score interval (lower, upper) of a proportion ``hits / n``; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def odds_ratio(p: float, chance: float) -> float:
    """Odds of ``p`` over the odds of ``chance`` (both in [0, 1]); inf when p = 1, 0 when p = 0."""
    p, chance = float(np.clip(p, 0.0, 1.0)), float(np.clip(chance, 1e-12, 1 - 1e-12))
    if p >= 1.0:
        return float("inf")
    return (p / (1 - p)) / (chance / (1 - chance))


def log_rank_score(ranks: np.ndarray, candidates: np.ndarray, z: float = FIT_Z) -> dict:
    """How much of the uncertainty about a query's partner a ranking removes, on a log scale.

    ``ranks`` (p,) filtered ranks of the true partners (1 = first) among ``candidates`` (p,) positions each
    (the non-partners + 1). A random ranking puts a partner at a uniform rank, whose mean log is
    ``ln(m!) / m`` (about ``ln m - 1``); the score is ``1 - mean(ln rank) / mean(ln(m!) / m)``: 0 = chance,
    1 = every partner first. 0.5 means the partners' geometric-mean rank is about the square root of a
    random ranking's. Returns ``{"value", "lower", "upper"}`` (normal bounds of the mean log rank).
    """
    from scipy.special import gammaln

    r = np.log(np.maximum(np.asarray(ranks, dtype=np.float64), 1.0))
    m = np.maximum(np.asarray(candidates, dtype=np.float64), 1.0)
    e0 = float(np.mean(gammaln(m + 1) / m))
    if not len(r) or e0 <= 0:
        return {"value": None, "lower": None, "upper": None}
    se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("inf")
    mean = float(r.mean())
    return {"value": 1 - mean / e0, "lower": 1 - (mean + z * se) / e0, "upper": 1 - (mean - z * se) / e0}


def _effect(a: np.ndarray, b: np.ndarray, z: float = FIT_Z) -> dict:
    """Cohen's d of mean(a) - mean(b) over their pooled SD, with a normal bound from its standard error
    (Hedges & Olkin: sqrt((na + nb) / (na nb) + d^2 / (2 (na + nb))))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = len(a), len(b)
    sd = float(np.sqrt((a.var(ddof=1) * (na - 1) + b.var(ddof=1) * (nb - 1)) / max(na + nb - 2, 1)))
    d = float((a.mean() - b.mean()) / sd) if sd > 1e-12 else 0.0
    se = float(np.sqrt((na + nb) / (na * nb) + d * d / (2 * (na + nb))))
    return {"d": d, "lower": d - z * se, "upper": d + z * se}


def shuffle_dimensions(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """``X`` (n, d) with each column permuted independently across rows (seeded): every dimension keeps
    its values (and the space its mean direction), but which values occur together is random — the
    baseline of a space without structure beyond its marginals."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X)
    return np.stack([X[rng.permutation(len(X)), j] for j in range(X.shape[1])], axis=1)


def _knn_cosine(U: np.ndarray, k: int) -> np.ndarray:
    """Per row of unit rows ``U`` (m, d), the mean cosine of its k nearest other rows: (m,) float64."""
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    return np.mean(-np.partition(-S, k - 1, axis=1)[:, :k], axis=1).astype(np.float64)


def neighbour_structure(X: np.ndarray, *, k: int = FIT_K, seed: int = 0) -> dict:
    """Whether a space has neighbourhoods beyond noise: the mean cosine of each item to its ``k`` nearest
    neighbours, against the same in :func:`shuffle_dimensions` of the vectors (rows L2-normalised in both).

    ``X`` (m, d), m >= 3. Returns ``{"n", "k", "knn_cosine", "shuffled_knn_cosine", "effect",
    "effect_lower"}``: ``effect`` = Cohen's d of the per-item values (real − shuffled) and its 95 % lower
    bound. Vectors without structure (e.g. Gaussian noise) give an effect near 0; real embeddings of
    related items give several SDs.
    """
    X = np.asarray(X, dtype=np.float32)
    m = len(X)
    if m < 3:
        raise ValueError(f"neighbour structure needs at least 3 items; got {m}")
    kk = min(k, m - 1)
    real = _knn_cosine(unit_rows(X), kk)
    shuffled = _knn_cosine(unit_rows(shuffle_dimensions(X, seed)), kk)
    eff = _effect(real, shuffled)
    return {"n": int(m), "k": int(kk), "knn_cosine": float(real.mean()), "shuffled_knn_cosine": float(shuffled.mean()),
            "effect": eff["d"], "effect_lower": eff["lower"]}


def zero_shot_margin(X: np.ndarray, vocab_vectors: np.ndarray, *, seed: int = 0) -> dict:
    """How peaked a model's best vocabulary word is for each item, against structure-less vectors.

    ``X`` (m, d) item vectors (e.g. images), ``vocab_vectors`` (V, d) unit prompt vectors, V >= 3. Per item,
    ``(best - runner-up) / SD`` of its cosines to the V words; the baseline is the same on
    :func:`shuffle_dimensions` of X. Returns ``{"n", "words", "margin", "shuffled_margin", "effect",
    "effect_lower"}`` (Cohen's d real − shuffled and its 95 % lower bound).
    """
    T = np.asarray(vocab_vectors, dtype=np.float32)
    if T.ndim != 2 or len(T) < 3:
        raise ValueError(f"zero-shot margins need at least 3 words; got {len(T)}")

    def margins(U):
        S = np.sort(U @ T.T, axis=1)
        return ((S[:, -1] - S[:, -2]) / np.maximum(S.std(axis=1), 1e-9)).astype(np.float64)

    X = np.asarray(X, dtype=np.float32)
    real, shuffled = margins(unit_rows(X)), margins(unit_rows(shuffle_dimensions(X, seed)))
    eff = _effect(real, shuffled)
    return {"n": len(X), "words": len(T), "margin": float(real.mean()), "shuffled_margin": float(shuffled.mean()),
            "effect": eff["d"], "effect_lower": eff["lower"]}


def _trained_on(model: str) -> str | None:
    """What a named model was trained on, from its registry description (``... trained on X; ...``)."""
    import re

    from .encoders import list_models

    for info in list_models(include_hub=False):
        if info.id == model:
            m = re.search(r"\btrained on ([^;.]+)", info.description)
            return m.group(1).strip() if m else None
    return None


def _advice(images: bool) -> str:
    """What to try instead, for a workspace with images (``images``) or with texts / rows only."""
    return ("Try a model trained on data like yours, e.g. an open_clip model." if images else
            "Try a model trained on texts like yours, e.g. a sentence-transformers model such as minilm.")


def _share(x: float) -> str:
    """A proportion for a sentence: two decimals, or one significant digit below 0.01."""
    return f"{x:.2f}" if x >= 0.01 else f"{x:.1g}"


def _fit(verdict: str, evidence: dict, reason: str) -> dict:
    assert verdict in VERDICTS
    return {"verdict": verdict, "evidence": evidence, "reason": reason}


def _retrieval_direction(ranks: np.ndarray, query: np.ndarray, n_candidates: int, n_partners: np.ndarray) -> dict:
    """Recall@1 with its Wilson bounds, chance, odds ratios and the log-rank score of one direction.
    ``ranks`` (p,), ``query`` (p,) the query row of each pair, ``n_partners`` per query row."""
    p = len(ranks)
    m = n_candidates - n_partners[query] + 1  # positions a true partner can take among the non-partners
    chance = float(np.mean(1.0 / m))
    hits = int(np.sum(ranks <= 1))
    lo, hi = wilson_interval(hits, p)
    lr = log_rank_score(ranks, m)
    return {"recall@1": hits / p, "lower": lo, "upper": hi, "chance": chance, "candidates": int(n_candidates),
            "odds_ratio": _f(odds_ratio(hits / p, chance)), "odds_ratio_lower": _f(odds_ratio(lo, chance)),
            "median_rank": float(np.median(ranks)), "log_rank_score": _f(lr["value"]),
            "log_rank_score_lower": _f(lr["lower"])}


def _paired_fit(ws, model: str, ids: np.ndarray, pairs: np.ndarray, *, max_items: int, seed: int) -> dict:
    """The verdict from image–caption retrieval among a seeded sample of at most ``max_items`` pairs."""
    rng = np.random.default_rng(seed)
    n_total = len(pairs)
    if n_total > max_items:
        pairs = pairs[np.sort(rng.choice(n_total, size=max_items, replace=False))]
    used = np.unique(pairs.ravel())
    X, got = ws.vectors(model, ids=ids[used])
    if len(got) != len(used):  # the ids come from the model's own store: only a concurrent deletion does this
        raise ValueError(f"workspace {ws.name!r}: {len(used) - len(got)} paired items lost their {model!r} vectors "
                         "while the fit was measured; try again")
    local = np.full(len(ids), -1, np.int64)
    local[used] = np.arange(len(used))
    P = local[pairs]
    mods = np.array(["text"] * len(used), dtype=object)
    mods[np.isin(np.arange(len(used)), P[:, 0])] = "image"
    U = unit_rows(X)
    summary, frame = paired_retrieval(U, mods.astype(str), P)
    n_img, n_txt = summary["n_images"], summary["n_texts"]
    row_of = np.full(len(U), -1, np.int64)
    row_of[mods == "image"] = np.arange(n_img)
    row_of[mods == "text"] = np.arange(n_txt)
    pi, pt = row_of[frame["image"].to_numpy(np.int64)], row_of[frame["text"].to_numpy(np.int64)]
    i2t = _retrieval_direction(frame["rank_i2t"].to_numpy(), pi, n_txt, np.bincount(pi, minlength=n_img))
    t2i = _retrieval_direction(frame["rank_t2i"].to_numpy(), pt, n_img, np.bincount(pt, minlength=n_txt))
    # true-pair cosine against random image–caption pairs of the sample
    true = frame["cosine"].to_numpy(np.float64)
    Ui, Ut = U[mods == "image"], U[mods == "text"]
    ri, rt = rng.integers(0, n_img, size=20_000), rng.integers(0, n_txt, size=20_000)
    partner = set(zip(pi.tolist(), pt.tolist()))
    keep = np.array([(a, b) not in partner for a, b in zip(ri.tolist(), rt.tolist())], dtype=bool)
    rand = np.sum(Ui[ri[keep]] * Ut[rt[keep]], axis=1).astype(np.float64)
    se = float(np.sqrt(true.var(ddof=1) / len(true) + rand.var(ddof=1) / max(len(rand), 1))) if len(rand) > 1 else 0.0
    diff = float(true.mean() - rand.mean()) if len(rand) else 0.0
    rand_sd = float(rand.std(ddof=1)) if len(rand) > 1 else 0.0
    effect = diff / rand_sd if rand_sd > 1e-12 else 0.0
    effect_lower = (diff - FIT_Z * se) / rand_sd if rand_sd > 1e-12 else 0.0
    evidence = {
        "method": "pairs", "n_pairs": len(frame), "n_pairs_total": int(n_total), "sampled": n_total > max_items,
        "image_to_text": i2t, "text_to_image": t2i,
        "pair_cosine": _f(true.mean()), "random_pair_cosine": _f(rand.mean()) if len(rand) else None,
        "random_pair_sd": _f(rand_sd), "pair_cosine_effect": _f(effect), "pair_cosine_effect_lower": _f(effect_lower),
        "pair_cosine_significant": bool(se > 0 and diff - FIT_Z * se > 0),
        "log_rank_score": _f(np.mean([i2t["log_rank_score"] or 0.0, t2i["log_rank_score"] or 0.0])),
        "cut_points": {"odds_ratio": FIT_SMALL_ODDS, "effect": FIT_SMALL_D, "log_rank_score": FIT_LOG_RANK},
    }
    best_or = max(i2t["odds_ratio_lower"] or 0.0, t2i["odds_ratio_lower"] or 0.0)
    who = model + (f" (trained on {t})" if (t := _trained_on(model)) else "")
    nums = (f"recall@1 {i2t['recall@1']:.2f} image→caption against {_share(i2t['chance'])} by chance, "
            f"{len(frame)} pairs")
    if best_or < FIT_SMALL_ODDS and (effect_lower < FIT_SMALL_D):
        return _fit("near chance", evidence,
                    f"{who} matches images to their captions here no better than chance ({nums}): its results "
                    f"will not mean much on this workspace. {_advice(True)}")
    if evidence["log_rank_score"] < FIT_LOG_RANK:
        return _fit("weak", evidence,
                    f"{who} matches images to their captions here better than chance but far from what a fitting "
                    f"model does ({nums}): read its results with care. {_advice(True)}")
    return _fit("fits", evidence, f"{model} matches images to their captions here well ({nums}).")


def _items_fit(ws, model: str, ids: np.ndarray, *, max_items: int, seed: int, n_pairs: int) -> dict:
    """The verdict without enough pairs: neighbour structure per modality, known words, zero-shot margins."""
    from .encoders import ModelLoadError, modalities_of
    from .vocabulary import default_vocabulary, known_words, vocabulary_vectors, words_of

    rng = np.random.default_rng(seed)
    if len(ids) > max_items:
        ids = ids[np.sort(rng.choice(len(ids), size=max_items, replace=False))]
    X, ids = ws.vectors(model, ids=ids)
    ids = ids.astype(str)
    by_id = ws.items.drop_duplicates("id").set_index("id")
    mods = by_id["modality"].reindex(ids).fillna("row").to_numpy().astype(str)
    precomputed = model.startswith("precomputed:")
    evidence: dict = {"method": "items", "n_items": len(ids), "n_pairs": int(n_pairs), "structure": {},
                      "known_word_share": None, "zero_shot": None,
                      "cut_points": {"effect": FIT_SMALL_D, "known_word_share": [FIT_KNOWN_MOST, FIT_KNOWN_NEARLY_ALL]}}
    for m in ("image", "text", "row"):
        if (mods == m).sum() >= FIT_MIN_ITEMS:
            evidence["structure"][m] = neighbour_structure(X[mods == m], seed=seed)
    if not evidence["structure"]:
        counts = ", ".join(f"{int((mods == m).sum())} {m}s" for m in ("image", "text", "row") if (mods == m).any())
        return _fit("unknown", evidence, f"Too few items of one kind ({counts}) to tell whether {model} fits this "
                                         f"workspace; {FIT_MIN_ITEMS} of a kind are needed.")
    flat = [m for m, s in evidence["structure"].items() if s["effect_lower"] < FIT_SMALL_D]
    texts = by_id["text"].reindex(ids[mods == "text"]).dropna().astype(str).tolist()
    known = None if precomputed else known_words(model)
    unknown_list: list[str] = []
    if known is not None and texts:
        words = [w for t in texts for w in words_of(t)]
        if words:
            evidence["known_word_share"] = float(np.mean([w in known for w in words]))
            evidence["n_words"] = len(words)
            unknown_list = list(dict.fromkeys(w for w in words if w not in known))[:10]
            evidence["unknown_words"] = unknown_list
    img = mods == "image"
    try:
        reads_text = "text" in modalities_of(model)
    except ValueError:  # vectors of a model id this version no longer knows
        reads_text = False
    if not precomputed and img.sum() >= FIT_MIN_ITEMS and reads_text:
        try:
            T = vocabulary_vectors(model, default_vocabulary(model))
            evidence["zero_shot"] = zero_shot_margin(X[img], T, seed=seed)
        except (ValueError, OSError, ModelLoadError) as e:
            evidence["zero_shot_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    who = model + (f" (trained on {t})" if (t := _trained_on(model)) else "")
    share = evidence["known_word_share"]
    advice = _advice("image" in evidence["structure"])
    if flat:
        kinds = " and ".join(f"{m}s" for m in flat)
        return _fit("near chance", evidence,
                    f"The {kinds} have no neighbour structure beyond noise in {model}'s space: its maps and "
                    f"neighbours will not mean much here." + ("" if precomputed else f" {advice}"))
    if precomputed:
        return _fit("unknown", evidence,
                    f"{model} are your own vectors: they have neighbour structure beyond noise, but without "
                    "image–caption pairs nothing here says what they capture.")
    if share is not None and share < FIT_KNOWN_MOST:
        return _fit("near chance", evidence,
                    f"{who} never saw {1 - share:.0%} of the words in these texts (e.g. "
                    f"{', '.join(unknown_list[:4])}): its results will not mean much here. {advice}")
    zs = evidence["zero_shot"]
    if share is not None and share < FIT_KNOWN_NEARLY_ALL:
        return _fit("weak", evidence,
                    f"{who} never saw {1 - share:.0%} of the words in these texts (e.g. "
                    f"{', '.join(unknown_list[:4])}): read its results with care. {advice}")
    if zs is not None and zs["effect_lower"] < FIT_SMALL_D:
        return _fit("weak", evidence,
                    f"{who} names these images no more clearly than it names noise (its best word stands out "
                    f"{zs['margin']:.2f} SDs against {zs['shuffled_margin']:.2f}): read its results with care. "
                    f"{advice}")
    return _fit("fits", evidence, f"{model}'s space has clear neighbour structure on these items"
                + ("" if share is None else f" and it knows {share:.0%} of their words") + ".")


def _pair_array(items: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """The pairs of :func:`pair_positions` (``text_links=True``) as a set, vectorised for large workspaces:
    (p, 2) int64 positions into ``ids``, sorted."""
    index = pd.Index(np.asarray(ids), dtype=object)
    mod = items["modality"].to_numpy()
    img, txt = items[mod == "image"][["id", "pair"]].dropna(), items[mod == "text"][["id", "pair"]].dropna()
    txt = txt[txt["pair"].isin(items.loc[mod == "image", "id"])]
    a = np.concatenate([img["id"].to_numpy(object), txt["pair"].to_numpy(object)])
    b = np.concatenate([img["pair"].to_numpy(object), txt["id"].to_numpy(object)])
    P = np.stack([index.get_indexer(a), index.get_indexer(b)], axis=1).astype(np.int64)
    P = P[(P >= 0).all(axis=1)]
    _, first = np.unique(P[:, 0] * (len(index) + 1) + P[:, 1], return_index=True)  # each pair once, sorted
    return P[first].reshape(-1, 2)


def fit_verdict(ws, model: str, *, max_items: int = FIT_SAMPLE, seed: int = 0, pairs: bool = True) -> dict:
    """Does ``model`` fit the data of workspace ``ws``? ``{"verdict", "evidence", "reason"}``, JSON-safe.

    ``verdict`` is one of ``"fits"``, ``"weak"``, ``"near chance"``, ``"unknown"``; ``reason`` one plain
    sentence for a user; ``evidence`` the numbers behind it. With at least :data:`FIT_MIN_ITEMS`
    image–caption pairs (and ``pairs``), from retrieval among a seeded sample of at most ``max_items``
    pairs (candidates: the sample's images and captions):

    * per direction, recall@1 with its Wilson 95 % interval against chance (a random ranking's recall@1,
      1 / (candidates − other partners of the query)), as odds ratios; the log-rank score
      (:func:`log_rank_score`); the true-pair cosine against random image–caption pairs (Cohen's d over the
      random pairs' SD, with its 95 % lower bound, and whether the difference is significant);
    * "near chance" when neither direction's recall@1 lower bound reaches the odds ratio of a small effect
      over chance (:data:`FIT_SMALL_ODDS`) and the lower bound of the pair-cosine effect is below a small
      effect (:data:`FIT_SMALL_D`); else "weak" when the mean log-rank score of the two directions is below
      :data:`FIT_LOG_RANK`; else "fits".

    Otherwise (texts only, images only, tables, few pairs), on a seeded sample of at most ``max_items``
    items: :func:`neighbour_structure` per modality (with at least :data:`FIT_MIN_ITEMS` items), the share
    of the texts' words the model knows (local models with a word list; hub models have none, which is no
    evidence) and, for images, :func:`zero_shot_margin` over the model's default vocabulary:

    * "near chance" when a modality shows no neighbour structure beyond a small effect, or the model
      never saw most of the words (share < :data:`FIT_KNOWN_MOST`);
    * "weak" when it misses about one word in ten or more (share < :data:`FIT_KNOWN_NEARLY_ALL`) or its
      best word for the images stands out no more than for structure-less vectors; else "fits".

    ``precomputed:*`` vectors are the user's own: "near chance" without neighbour structure, else
    "unknown". "unknown" too with fewer than :data:`FIT_MIN_ITEMS` items with vectors.
    """
    ids = ws.vector_ids(model)
    if not len(ids):
        return _fit("unknown", {"method": None, "n_items": 0},
                    f"This workspace has no vectors for {model} yet, so nothing says whether it fits; embed it "
                    "first.")
    ids = np.asarray(ids).astype(str).astype(object)
    if len(ids) < FIT_MIN_ITEMS:
        return _fit("unknown", {"method": None, "n_items": len(ids)},
                    f"Too few items ({len(ids)}) with vectors to tell whether {model} fits this workspace; "
                    f"{FIT_MIN_ITEMS} are needed.")
    pos = _pair_array(ws.items, ids)
    if pairs and len(pos) >= FIT_MIN_ITEMS and not model.startswith("precomputed:"):
        return _paired_fit(ws, model, ids, pos, max_items=max_items, seed=seed)
    return _items_fit(ws, model, ids, max_items=max_items, seed=seed, n_pairs=len(pos))
