"""The measures of a joint space, on arrays (``X`` is an (n, d) float array; unless a docstring says otherwise its
rows are L2-normalised here, i.e. everything is measured in cosine geometry): effective rank, alignment and
uniformity, the modality gap, hubness, outliers and paired retrieval with the noisy-pair flags; the thresholds
of the per-item flags."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..encoders import unit_rows

RETRIEVAL_KS = (1, 5, 10)
NOISY_Z = 3.0  # a pair is noisy when its CSLS score is this many robust SDs below the median pair
HUB_SIGMA = 2.0  # a hub's N_k is more than this many SDs above the mean k (Radovanović et al. 2010)
OUTLIER_LOF = 1.5  # local outlier factor above which an item is flagged as an outlier
MIN_PAIRS_FOR_FLAGS = 8  # median/MAD of fewer pair scores say nothing
TOP = 10  # items listed per flag in the report


def json_float(x) -> float | None:
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


def workspace_modality_gap(ws, model: str, *, ids: Sequence[str] | None = None, max_items: int = GAP_SAMPLE) -> dict:
    """:func:`modality_gap` of the model's vectors in ``ws`` (uncorrected space), true pairs included.

    ``ids``: the items to measure (e.g. a map's; default every item with a vector for ``model``). Above
    ``max_items`` of them it measures :func:`gap_sample_ids` (reading every vector would take too long);
    ``"sampled"`` is then the number of items measured, else None.
    """
    items = ws.items
    among = ws.vector_ids(model) if ids is None else np.asarray(ids).astype(str)
    chosen = gap_sample_ids(among, items, max_items=max_items)
    X, chosen = ws.vectors(model, ids=chosen)
    chosen = chosen.astype(str)
    mods = items.set_index("id")["modality"].reindex(chosen).fillna("row").to_numpy()
    out = modality_gap(X, mods, pair_positions(items, chosen))
    out["sampled"] = len(chosen) if len(chosen) < len(among) else None
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
    from ..index import NeighborIndex

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
    from ..index import NeighborIndex

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
