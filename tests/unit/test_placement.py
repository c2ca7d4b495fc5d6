"""Maps of every item: above the fit sample size, UMAP/PCA is fitted on a seeded sample and every other item
is placed from its nearest sample items (core.projection). The fit sample is forced small here so that the
placement path runs quickly; the million-item numbers are in bench/million.py."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

import core
from core.projection import (
    cached_map,
    compute_map,
    map_to_json,
    neighbour_label_agreement,
    place_by_neighbours,
)

MODEL = "precomputed:emb"


def clusters(n: int, d: int, k: int, seed: int = 0, spread: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d))
    lab = rng.integers(0, k, n)
    X = C[lab] + spread * rng.normal(size=(n, d))
    return X.astype(np.float32), lab


def ids_for(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"{v:016x}" for v in rng.integers(0, 2**63, n)])


def workspace(path, X, ids):
    ws = core.Workspace(path)
    ws.add_rows(pd.DataFrame({"id": list(ids), "modality": "row", "source": "synthetic"}))
    with ws.writing():
        ws.store(MODEL).append(X, ids)
    return ws


def test_every_item_gets_finite_coordinates(tmp_path):
    n, m = 3000, 400
    X, _ = clusters(n, 16, 8)
    ws = workspace(tmp_path / "w", X, ids_for(n))
    res = compute_map(ws, MODEL, max_points=m)
    assert res.n == n and res.n_total == n and not res.sampled
    assert res.fitted is not None and res.n_fitted == m and res.fitted.sum() == m
    assert np.isfinite(res.coords).all() and res.coords.shape == (n, 2)
    assert np.isfinite(res.trust).all() and (res.trust >= 0).all() and (res.trust <= 1).all()
    out = map_to_json(res)
    assert out["n"] == n and out["n_fitted"] == m and out["n_placed"] == n - m
    assert {"n", "method", "seconds", "trustworthiness", "path"} <= set(out)
    # no two placed items stack exactly, even where their neighbours are the same
    placed = res.coords[~res.fitted]
    assert len(np.unique(placed, axis=0)) == len(placed)


@pytest.mark.parametrize("place_dim", [128, 12])
def test_placed_items_keep_their_groups_as_well_as_the_fitted_ones(tmp_path, monkeypatch, place_dim):
    # place_dim 12 < 32 dimensions: the sample is searched in its 12 leading singular directions
    monkeypatch.setattr("core.maps.PLACE_DIM", place_dim)
    n, m = 6000, 1000
    X, lab = clusters(n, 32, 30, seed=1)
    ids = ids_for(n, seed=1)
    ws = workspace(tmp_path / "w", X, ids)
    res = compute_map(ws, MODEL, max_points=m)
    labels = pd.Series(lab, index=ids).reindex(res.ids).to_numpy()
    fitted = neighbour_label_agreement(res.coords, labels, rows=res.fitted)
    placed = neighbour_label_agreement(res.coords, labels, rows=~res.fitted)
    assert fitted > 0.8  # the clusters are separable: the test measures something
    assert placed >= 0.95 * fitted, (placed, fitted)


def test_pca_projects_the_rest_with_the_fitted_components(tmp_path):
    n, m = 2000, 300
    X, _ = clusters(n, 12, 5, seed=2)
    ws = workspace(tmp_path / "w", X, ids_for(n, seed=2))
    res = compute_map(ws, MODEL, method="pca", max_points=m)
    assert res.n == n and res.n_fitted == m and np.isfinite(res.coords).all()
    assert np.isnan(res.trust[~res.fitted]).all() and np.isfinite(res.trust[res.fitted]).all()
    # a linear map: every row is where the sample's PCA puts it
    Xs, _ = ws.vectors(MODEL, ids=res.ids)
    U = Xs / np.linalg.norm(Xs, axis=1, keepdims=True)
    F = U[res.fitted]
    mean = F.mean(0)
    _, _, Vt = np.linalg.svd(F - mean, full_matrices=False)
    expect = (U - mean) @ Vt[:2].T
    np.testing.assert_allclose(np.abs(res.coords), np.abs(expect), atol=1e-3)


def test_new_items_are_placed_without_moving_the_map(tmp_path):
    n, m = 2500, 400
    X, _ = clusters(n + 150, 16, 6, seed=3)
    ids = ids_for(n + 150, seed=3)
    ws = workspace(tmp_path / "w", X[:n], ids[:n])
    first = compute_map(ws, MODEL, max_points=m)
    with ws.writing():
        ws.store(MODEL).append(X[n:], ids[n:])
    ws.add_rows(pd.DataFrame({"id": ids[n:], "modality": "row"}))
    again = compute_map(ws, MODEL, max_points=m)
    assert again.cache == "incremental" and again.n_new == 150 and again.n == n + 150
    pos = pd.Index(again.ids).get_indexer(first.ids)
    np.testing.assert_array_equal(again.coords[pos], first.coords)  # old items do not move
    np.testing.assert_array_equal(again.fitted[pos], first.fitted)  # the same fit sample
    new = np.setdiff1d(np.arange(again.n), pos)
    assert not again.fitted[new].any() and np.isfinite(again.coords[new]).all()
    assert again.n_fitted == m
    # a new item lands among map points of its own cluster
    Xa, _ = ws.vectors(MODEL, ids=again.ids)
    U = Xa / np.linalg.norm(Xa, axis=1, keepdims=True)
    for j in new[:20]:
        near = np.argsort(np.linalg.norm(again.coords[pos] - again.coords[j], axis=1))[:10]
        assert np.median(U[pos][near] @ U[j]) > 0.5
    # many new items: refit instead of placing (REFIT_SHARE)
    more_X, _ = clusters(2000, 16, 6, seed=4)
    more_ids = ids_for(2000, seed=4)
    with ws.writing():
        ws.store(MODEL).append(more_X, more_ids)
    ws.add_rows(pd.DataFrame({"id": more_ids, "modality": "row"}))
    refit = compute_map(ws, MODEL, max_points=m)
    assert refit.cache == "fit" and refit.n == n + 2150 and refit.n_fitted == m


def test_cache_follows_the_fit_size_and_method(tmp_path):
    n = 1200
    X, _ = clusters(n, 8, 4, seed=5)
    ws = workspace(tmp_path / "w", X, ids_for(n, seed=5))
    a = compute_map(ws, MODEL, method="pca", max_points=300)
    b = compute_map(ws, MODEL, method="pca", max_points=500)
    whole = compute_map(ws, MODEL, method="pca")  # the default fit size covers every item: fitted whole
    assert len({r.path.name.partition("-")[0] for r in (a, b, whole)}) == 3  # one map per parameter set
    assert sorted(p.name for p in a.path.parent.glob("*.npz")) == sorted(r.path.name for r in (a, b, whole))
    assert whole.fitted is None and whole.n_fitted == n
    hit = cached_map(core.Workspace(ws.path, create=False), MODEL, method="pca", max_points=300)
    assert hit is not None and hit.cache == "hit"
    np.testing.assert_array_equal(hit.coords, a.coords)
    np.testing.assert_array_equal(hit.fitted, a.fitted)
    assert cached_map(ws, MODEL, method="umap", max_points=300) is None  # another method: not this cache
    # a cache written before maps covered every item (params with max_points) is never read for them
    assert "max_points" not in a.params and a.params["fit_points"] == 300 and "placement" in a.params


def test_place_by_neighbours_is_a_weighted_mean():
    fit = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
    pos = np.array([[0, 1], [1, 2]])
    dist = np.array([[0.0, 0.0], [0.1, 0.3]])
    out = place_by_neighbours(pos, dist, fit)
    np.testing.assert_allclose(out[0], [5.0, 0.0], atol=1e-5)  # equal distances: the midpoint
    w = 1 / (np.array([0.1, 0.3]) + 1e-3)
    np.testing.assert_allclose(out[1], (w[0] * fit[1] + w[1] * fit[2]) / w.sum(), atol=1e-4)
    # jitter separates items with the same neighbours, by a small share of their neighbours' spread
    twins = place_by_neighbours(np.array([[0, 1], [0, 1]]), np.zeros((2, 2)), fit, rng=np.random.default_rng(0))
    assert not np.array_equal(twins[0], twins[1])
    assert np.abs(twins - [5.0, 0.0]).max() < 5.0 * 0.05 * 5


def test_max_points_is_validated(tmp_path):
    ws = workspace(tmp_path / "w", *[clusters(20, 8, 2)[0], ids_for(20)])
    with pytest.raises(ValueError, match="max_points must be an integer >= 4"):
        compute_map(ws, MODEL, method="pca", max_points=2)


def test_the_map_cache_keeps_one_artifact_per_parameter_set_and_places_new_items_into_the_newest(tmp_path):
    """Map files are derived artifacts (core.artifacts: a sidecar beside each); a parameter set keeps one map,
    new items are placed into the newest map, and two maps left by an interrupted save are cleaned up."""
    from core.artifacts import SIDECAR, stored_artifacts

    X, _ = clusters(260, 8, 4, seed=3)
    ids = ids_for(260, seed=3)
    ws = workspace(tmp_path / "w", X[:200], ids[:200])
    first = compute_map(ws, MODEL, method="pca")
    assert first.cache == "fit" and first.path.with_name(first.path.name + SIDECAR).is_file()
    assert [a.codec for a in stored_artifacts(ws) if a.path == first.path] == ["map"]
    with ws.writing():
        ws.store(MODEL).append(X[200:], ids[200:])
    ws.add_rows(pd.DataFrame({"id": list(ids[200:]), "modality": "row", "source": "synthetic"}))
    second = compute_map(ws, MODEL, method="pca")
    assert second.cache == "incremental" and second.n_new == 60 and second.path != first.path
    pos = pd.Index(second.ids).get_indexer(first.ids)
    np.testing.assert_array_equal(second.coords[pos], first.coords)  # the mapped items did not move
    assert not first.path.exists() and not first.path.with_name(first.path.name + SIDECAR).exists()
    assert [p.name for p in second.path.parent.glob("*.npz")] == [second.path.name]
    # a save killed before the older map was removed leaves two: the newest is read, a cache hit cleans up
    stale = second.path.with_name(second.path.name.partition("-")[0] + "-" + "0" * 20 + ".npz")
    shutil.copy(second.path, stale)
    shutil.copy(second.path.with_name(second.path.name + SIDECAR), stale.with_name(stale.name + SIDECAR))
    os.utime(stale, ns=(1, 1))  # older than the map of the current items
    hit = compute_map(ws, MODEL, method="pca")
    assert hit.cache == "hit" and hit.path == second.path and not stale.exists()
    with pytest.raises(ValueError, match=r"compute_map: dim must be one of 2, 3; got 4"):
        compute_map(ws, MODEL, method="pca", dim=4)
