"""NeighborIndex: exact and hnswlib backends, recall against exact search, filters, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from core.index import NeighborIndex, NotFittedError


def data(n=3000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    X = centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, d))
    return X.astype(np.float32), np.array([f"id{i}" for i in range(n)], dtype=object)


def brute(X, Q, k, space):
    if space == "cosine":
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        S = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ Xn.T
    elif space == "ip":
        S = Q @ X.T
    else:
        S = -((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.argsort(-S, axis=1)[:, :k], S


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_backend_matches_brute_force(space):
    X, ids = data(500)
    idx = NeighborIndex(space).fit(X, ids)
    assert idx.backend_ == "exact"
    got, scores = idx.query(X[:7], k=5)
    want, S = brute(X, X[:7], 5, space)
    assert got.shape == (7, 5) and scores.dtype == np.float32
    assert (got == ids[want]).all()
    np.testing.assert_allclose(scores, np.take_along_axis(S, want, 1), rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_hnsw_reaches_its_recall_target(space):
    X, ids = data(3000)
    idx = NeighborIndex(space, exact_threshold=1000, recall_target=0.95).fit(X, ids)
    assert idx.backend_ == "hnsw" and idx.ef_ >= 10
    Q = X[::50] + 0.01
    got, _ = idx.query(Q, k=10)
    want, _ = brute(X, Q, 10, space)
    recall = np.mean([len(set(a) & set(ids[b])) / 10 for a, b in zip(got, want)])
    assert recall >= 0.9


def test_default_ef_reaches_the_recall_floor_on_new_queries():
    """ef is tuned on held-out-like queries, so queries that are NOT indexed reach the 0.98 target."""
    Xa, ida = data(6200, d=64, seed=3)
    X, ids, Q = Xa[:6000], ida[:6000], Xa[6000:]
    idx = NeighborIndex(exact_threshold=1000).fit(X, ids)
    assert idx.recall_target == 0.98
    got, _ = idx.query(Q, k=10)
    want, _ = brute(X, Q, 10, "cosine")
    recall = np.mean([len(set(a) & set(ids[b])) / 10 for a, b in zip(got, want)])
    assert recall >= 0.97, (idx.ef_, recall)


def test_filters_still_return_k_and_exclude_inputs():
    X, ids = data(2000)
    for threshold in (10_000, 500):  # exact, then hnsw
        idx = NeighborIndex(exact_threshold=threshold).fit(X, ids)
        even = np.arange(2000) % 2 == 0
        got, _ = idx.query(X[:3], k=10, filter=even)
        assert got.shape == (3, 10)
        assert all(int(g[2:]) % 2 == 0 for g in got.ravel())
        got, _ = idx.query(X[:1], k=5, exclude=[ids[0]])
        assert ids[0] not in got[0]
        few = {"id1", "id3", "id5"}
        got, _ = idx.query(X[:2], k=10, filter=few)
        assert got.shape == (2, 3) and set(got[0]) == few
        got, _ = idx.query(X[:1], k=4, filter=lambda a: np.char.endswith(a.astype(str), "7"))
        assert got.shape == (1, 4) and all(g.endswith("7") for g in got[0])


def test_incremental_add_and_switch_to_hnsw():
    X, ids = data(1200)
    idx = NeighborIndex(exact_threshold=1000).fit(X[:600], ids[:600])
    assert idx.backend_ == "exact"
    idx.add(X[600:], ids[600:])
    idx.add(X[:10], ids[:10])  # already there: ignored
    assert idx.backend_ == "hnsw" and len(idx.ids_) == 1200
    got, _ = idx.query(X[1100:1101], k=1)
    assert got[0, 0] == ids[1100]


def test_save_load_roundtrip_keeps_ef_and_results(tmp_path):
    X, ids = data(1500)
    idx = NeighborIndex(exact_threshold=1000).fit(X, ids)
    a, sa = idx.query(X[:5], k=8)
    idx.save(tmp_path / "ix", extra={"model": "demo"})
    back = NeighborIndex.load(tmp_path / "ix")
    assert back.ef_ == idx.ef_ and back.backend_ == "hnsw"
    b, sb = back.query(X[:5], k=8)
    assert (a == b).all()
    np.testing.assert_allclose(sa, sb, atol=1e-5)


def test_clear_errors():
    X, ids = data(50, d=8)
    with pytest.raises(NotFittedError, match="call fit"):
        NeighborIndex().query(X[:1])
    idx = NeighborIndex().fit(X, ids)
    with pytest.raises(ValueError, match=r"k must be in \[1, n_items=50\]; got 500"):
        idx.query(X[:1], k=500)
    with pytest.raises(ValueError, match="dim 8"):
        idx.query(np.zeros((1, 9)))
    with pytest.raises(ValueError, match="space must be one of"):
        NeighborIndex("manhattan").fit(X, ids)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"id3.*NaN"):
        NeighborIndex().fit(bad, ids)
    with pytest.raises(ValueError, match="unique"):
        NeighborIndex().fit(X[:2], ["a", "a"])
