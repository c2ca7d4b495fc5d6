"""core.projection: the Projector estimator, workspace maps (cache, incremental placement), gap
correction and trust; the `map` CLI. UMAP work shares the session's warmed-up numba kernels."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import core
from core.cli import main
from core.index import NeighborIndex, index_dir
from core.projection import (
    NotFittedError,
    Projector,
    cached_map,
    compute_map,
    knn_graph,
    neighbour_overlap,
    sampled_trustworthiness,
)
from core.quality import modality_gap, pair_positions


def blobs(n_per=60, centres=4, d=16, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centres, d)) * 4
    X = np.concatenate([C[i] + rng.normal(size=(n_per, d)) for i in range(centres)]).astype(np.float32)
    return X, np.repeat(np.arange(centres), n_per)


def test_warm_up_waits_for_its_gate(monkeypatch):
    """The app's first start builds the demo before the UMAP compile starts (two cores are not shared)."""
    import threading
    import time

    from core import projection

    calls = []
    monkeypatch.setattr(projection, "warm_up", lambda: calls.append(time.perf_counter()))
    gate = threading.Event()
    t = projection.start_warm_up(after=gate)
    time.sleep(0.3)  # the behaviour under test: a while passes and the closed gate still holds the compile
    assert not calls and t.is_alive()
    opened = time.perf_counter()
    gate.set()
    t.join(5)
    assert len(calls) == 1 and calls[0] >= opened
    projection.start_warm_up(after=threading.Event(), wait=0.1).join(5)  # a gate never opened only delays it
    assert len(calls) == 2


# ---- estimator ---------------------------------------------------------------------------------
def test_umap_is_deterministic_with_a_seed_and_keeps_clusters(umap_warm):
    X, y = blobs()
    a = Projector("umap", random_state=3).fit(X).embedding_
    b = Projector("umap", random_state=3).fit(X).embedding_
    assert a.shape == (len(X), 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # clusters stay apart on the map: each point's nearest map neighbour is from its own blob
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.97
    assert sampled_trustworthiness(X, a) > 0.9


def test_umap_3d_and_pca(umap_warm):
    X, _ = blobs(n_per=30)
    assert Projector("umap", n_components=3).fit(X).embedding_.shape == (120, 3)
    p = Projector("pca", n_components=3).fit(X)
    assert p.embedding_.shape == (120, 3)
    np.testing.assert_allclose(p.transform(X[:5]), p.embedding_[:5], atol=1e-4)


def test_transform_places_new_points_beside_their_neighbours(umap_warm):
    X, y = blobs(n_per=80)
    rng = np.random.default_rng(1)
    fit_idx = rng.permutation(len(X))[:280]
    new_idx = np.setdiff1d(np.arange(len(X)), fit_idx)
    p = Projector("umap").fit(X[fit_idx])
    before = p.embedding_.copy()
    Y_new = p.transform(X[new_idx])
    np.testing.assert_array_equal(p.embedding_, before)  # fitted points do not move
    d = ((Y_new[:, None] - p.embedding_[None]) ** 2).sum(-1)
    assert (y[fit_idx][d.argmin(1)] == y[new_idx]).mean() > 0.95


def test_precomputed_knn_is_used(umap_warm):
    X, y = blobs(n_per=40)
    knn = knn_graph(X / np.linalg.norm(X, axis=1, keepdims=True), 15)
    assert (knn[0][:, 0] == np.arange(len(X))).all()
    a = Projector("umap").fit(X, knn=knn).embedding_
    np.testing.assert_array_equal(a, Projector("umap").fit(X).embedding_)  # the graph fit builds itself
    # a graph that links random points gives a map without the blobs: the given graph is what counts
    rng = np.random.default_rng(0)
    wrong = np.concatenate([np.arange(len(X))[:, None], rng.integers(0, len(X), (len(X), 14))], 1)
    b = Projector("umap").fit(X, knn=(wrong, np.sort(rng.random((len(X), 15)), 1))).embedding_
    d = ((b[:, None] - b[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() < 0.6
    with pytest.raises(ValueError, match="knn must be"):
        Projector("umap").fit(X, knn=(knn[0][:, :3], knn[1][:, :3]))


def test_kneighbors_puts_self_first_even_with_duplicates():
    X = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # every vector three times
    pos, sim = NeighborIndex().fit(X, [str(i) for i in range(len(X))]).kneighbors(4)
    assert (pos[:, 0] == np.arange(len(X))).all()
    assert np.allclose(sim[:, :3], 1.0)
    assert len({tuple(sorted(r)) for r in pos[:, :3].tolist()}) == 4


def test_gap_correction_removes_the_centroid_offset(umap_warm):
    rng = np.random.default_rng(0)
    base = 0.3 * rng.normal(size=(150, 16)).astype(np.float32)  # shared content, norm about 1.2
    g = np.zeros(16, np.float32)
    g[0] = 2.0  # a constant offset between the modalities, as in CLIP spaces
    X = np.concatenate([base + g + 0.02 * rng.normal(size=base.shape), base - g]).astype(np.float32)
    mods = np.array(["image"] * 150 + ["text"] * 150)
    p = Projector("umap", gap_corrected=True).fit(X, modalities=mods)
    Z = p.prepare(X, mods)
    assert np.linalg.norm(Z[:150].mean(0) - Z[150:].mean(0)) < 0.05
    raw = Projector("umap").fit(X).embedding_
    from sklearn.neighbors import NearestNeighbors

    def mixed(E):  # share of points with a point of the other modality among their 10 map neighbours
        nb = NearestNeighbors(n_neighbors=11).fit(E).kneighbors(E, return_distance=False)[:, 1:]
        return float(((mods[nb] != mods[:, None]).any(1)).mean())

    assert mixed(raw) < 0.1  # two islands, one per modality...
    assert mixed(p.embedding_) > 0.8  # ...overlaid once each modality is centred
    with pytest.raises(ValueError, match="modalities"):
        Projector(gap_corrected=True).fit(X)
    with pytest.raises(ValueError, match="were not in the fitted data"):
        p.transform(X[:2], modalities=["row", "row"])


@pytest.mark.parametrize("kw,match", [
    ({"method": "tsne"}, "method must be one of"),
    ({"n_components": 4}, r"Projector: n_components must be one of 2, 3; got 4"),
    ({"n_neighbors": 1}, "n_neighbors must be"),
    ({"min_dist": 2.0}, r"min_dist must be a finite number in \[0, 0.99\]; got 2.0"),
])
def test_bad_parameters_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        Projector(**kw).fit(np.ones((10, 4), np.float32))


def test_bad_input_is_refused_clearly():
    X = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        Projector("pca").fit(X)
    with pytest.raises(ValueError, match="at least 4 items"):
        Projector("umap").fit(np.ones((3, 4), np.float32))
    with pytest.raises(NotFittedError, match="call fit"):
        Projector().transform(np.ones((2, 4), np.float32))


def test_neighbour_overlap_is_one_for_a_perfect_map_and_low_for_noise():
    X, _ = blobs(n_per=50, d=2)
    # the map "X itself" (2-D blobs) keeps every euclidean neighbour; a random map keeps almost none
    from sklearn.neighbors import NearestNeighbors

    truth = NearestNeighbors(n_neighbors=11).fit(X).kneighbors(X, return_distance=False)
    assert neighbour_overlap(truth, X).mean() > 0.99
    noise = np.random.default_rng(0).normal(size=X.shape)
    assert neighbour_overlap(truth, noise).mean() < 0.2


# ---- workspace maps ----------------------------------------------------------------------------
def test_demo_map_is_trustworthy_cached_and_reopened(demo_ws, umap_warm):
    assert cached_map(demo_ws, "demo") is None
    res = compute_map(demo_ws, "demo")
    assert res.cache == "fit" and res.n == len(demo_ws.items)
    assert res.trustworthiness >= 0.9
    assert res.trust.shape == (res.n,) and res.trust.min() >= 0 and res.trust.max() <= 1
    assert (index_dir(demo_ws, "demo") / "meta.json").is_file()  # the neighbour index was built and kept
    again = compute_map(core.Workspace(demo_ws.path, create=False), "demo")  # reopen: a new object
    assert again.cache == "hit"
    np.testing.assert_array_equal(again.coords, res.coords)
    np.testing.assert_array_equal(again.ids, res.ids)
    assert again.seconds < res.seconds
    other = compute_map(demo_ws, "demo", method="pca")  # other parameters: another cache entry
    assert other.cache == "fit" and not np.allclose(other.coords, res.coords)
    assert compute_map(demo_ws, "demo").cache == "hit"


def test_new_items_are_placed_without_refitting(demo_ws, umap_warm):
    first = compute_map(demo_ws, "demo")
    from core.demo.workspace import create_demo_workspace

    create_demo_workspace(demo_ws.path, n=460)  # 60 more world images + captions, embedded
    items = core.Workspace(demo_ws.path, create=False)
    res = compute_map(items, "demo")
    assert res.cache == "incremental" and res.n_new == res.n - first.n > 0
    pos = {k: i for i, k in enumerate(res.ids.tolist())}
    old = np.array([pos[k] for k in first.ids.tolist()])
    np.testing.assert_array_equal(res.coords[old], first.coords)  # mapped points stay where they were
    assert res.trustworthiness >= 0.85
    assert compute_map(items, "demo").cache == "hit"


def test_gap_corrected_workspace_map_and_gap_report(demo_ws, umap_warm):
    X, ids = demo_ws.vectors("demo")
    mods = demo_ws.items.set_index("id").loc[ids, "modality"].to_numpy()
    gap = modality_gap(X, mods, pair_positions(demo_ws.items, ids))
    assert gap["n_pairs"] == (mods == "image").sum()
    assert gap["pair_cosine"] > gap["random_pair_cosine"] + 0.2  # true pairs are much closer
    assert gap["centroid_distance"] > 0.1  # the demo model has a modality gap, as CLIP does
    raw = compute_map(demo_ws, "demo")
    fixed = compute_map(demo_ws, "demo", gap_corrected=True)
    assert fixed.gap_corrected and fixed.cache == "fit"

    def centroid_gap(r):
        E = r.coords
        return np.linalg.norm(E[r.modality == "image"].mean(0) - E[r.modality == "text"].mean(0)) / E.std()

    assert centroid_gap(fixed) < centroid_gap(raw)


def test_map_of_one_modality(demo_ws, umap_warm):
    res = compute_map(demo_ws, "demo", modalities=["image"], method="pca", dim=3)
    assert set(res.modality) == {"image"} and res.coords.shape[1] == 3


def test_map_cli_json(demo_ws, umap_warm, capsys):
    assert main(["map", str(demo_ws.path), "--model", "demo", "--method", "pca", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("n", "method", "seconds", "trustworthiness", "path", "modality_gap"):
        assert key in out
    assert out["method"] == "pca" and os.path.isfile(out["path"])
    assert out["modality_gap"]["sampled"] is None and out["modality_gap"]["n_pairs"] > 0  # every item measured
    assert main(["map", str(demo_ws.path), "--model", "minilm", "--json"]) == 1
    assert "no vectors" in capsys.readouterr().err
    assert main(["map", str(demo_ws.path), "--model", "demo", "--dim", "4"]) == 2


# ---- colouring a map (the Map page's "colour by": clusters, similarity to a text) ---------------
def test_cluster_labels_find_the_blobs_in_cosine_geometry_and_repeat_with_a_seed():
    from core.projection import cluster_labels

    X, y = blobs(n_per=40, centres=4, d=16, seed=1)
    labels = cluster_labels(X, k=4)
    assert len(labels) == len(X) and set(labels) == {f"cluster {i}" for i in range(1, 5)}
    # each blob is one cluster (the blobs are far apart in direction too)
    by_blob = {b: {labels[i] for i in np.flatnonzero(y == b)} for b in range(4)}
    assert all(len(v) == 1 for v in by_blob.values()) and len(set().union(*by_blob.values())) == 4
    assert cluster_labels(X, k=4, seed=0) == labels  # same seed, same clusters
    # cosine geometry: scaling a row does not move it to another cluster
    scaled = X * np.random.default_rng(2).uniform(0.1, 10, size=(len(X), 1)).astype(np.float32)
    assert cluster_labels(scaled, k=4) == labels
    # k is clipped to [1, n]
    assert sorted(cluster_labels(X[:3], k=10)) == ["cluster 1", "cluster 2", "cluster 3"]
    assert set(cluster_labels(X, k=0)) == {"cluster 1"}


def test_cluster_labels_switch_to_minibatch_above_the_full_kmeans_limit(monkeypatch):
    import core.projection as proj

    X, y = blobs(n_per=30, centres=3, d=8, seed=4)
    monkeypatch.setattr(proj, "KMEANS_FULL_MAX", 10)
    labels = proj.cluster_labels(X, k=3)
    assert len(set(labels)) == 3
    assert all(len({labels[i] for i in np.flatnonzero(y == b)}) == 1 for b in range(3))


class _FixedEncoder:
    """encode_texts returns a fixed unit vector (the text is recorded)."""

    def __init__(self, q):
        self.q, self.seen = np.asarray(q, np.float32), []

    def encode_texts(self, texts):
        self.seen.extend(texts)
        return self.q[None, :]


def test_similarity_to_text_is_the_cosine_with_the_encoded_text():
    from core.projection import similarity_to_text

    X = np.array([[2, 0, 0], [0, 3, 0], [1, 1, 0], [-5, 0, 0], [0, 0, 0]], np.float32)
    enc = _FixedEncoder([1, 0, 0])
    sim = similarity_to_text(X, text="a red circle", encoder=enc)
    assert enc.seen == ["a red circle"] and sim.dtype == np.float32 and sim.shape == (5,)
    np.testing.assert_allclose(sim, [1, 0, np.sqrt(0.5), -1, 0], atol=1e-6)  # lengths do not matter


def test_cluster_and_similarity_colours_of_a_large_map_read_its_vectors_chunk_by_chunk(tmp_path, monkeypatch):
    """Colouring a map by cluster or by similarity reads the workspace's vectors a chunk at a time (a
    million-item map must not hold every vector at once) and gives what the same rows in memory give."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    import core.mapvectors as mv
    import core.projection as proj
    from core import vectorstore

    X, y = blobs(n_per=600, centres=4, d=16, seed=7)
    ids = np.array([f"r{i:05d}" for i in range(len(X))])
    ws = core.Workspace(tmp_path / "ws")
    ws.add_rows(pd.DataFrame({"id": ids, "modality": "row", "source": "blobs.parquet"}))
    with ws.writing():
        ws.store("precomputed:emb").append(X, ids, dtype="float32")
    monkeypatch.setattr(proj, "KMEANS_FULL_MAX", 300)
    monkeypatch.setattr(proj, "CLUSTER_FIT_MAX", 1000)  # MiniBatchKMeans fitted on a sample of 1000 of 2400
    monkeypatch.setattr(mv, "CHUNK", 256)
    reads: list[int] = []
    take = vectorstore._StoreView.take
    monkeypatch.setattr(vectorstore._StoreView, "take", lambda view, rows: reads.append(len(rows)) or take(view, rows))

    rows = mv.MapVectors(ws, "precomputed:emb", ids)
    labels = proj.cluster_labels(rows, k=4, seed=0)
    assert reads and max(reads) <= 256 and sum(reads) == 1000 + len(X)  # the sample, then every row once
    assert adjusted_rand_score(y, labels) == pytest.approx(1.0)
    assert adjusted_rand_score(proj.cluster_labels(X, k=4, seed=0), labels) == pytest.approx(1.0)

    reads.clear()
    enc = _FixedEncoder(np.eye(16, dtype=np.float32)[3])
    sim = proj.similarity_to_text(rows, text="anything", encoder=enc)
    assert max(reads) <= 256 and sum(reads) == len(X)
    np.testing.assert_allclose(sim, proj.similarity_to_text(X, text="anything", encoder=enc), atol=1e-6)


def test_similarity_to_text_with_the_demo_model_ranks_matching_captions_first(demo_ws_template):
    from core.projection import map_vectors, similarity_to_text

    items = demo_ws_template.items
    texts = items[items["modality"] == "text"]
    ids = texts["id"].astype(str).tolist()
    X = map_vectors(demo_ws_template, "demo", ids=ids)
    assert X.shape[0] == len(ids)
    caption = str(texts["text"].iloc[0])
    sim = similarity_to_text(X, text=caption, encoder=core.load_encoder("demo"))
    assert sim[0] == pytest.approx(float(sim.max()), abs=1e-5)  # the caption itself is the best match
    with pytest.raises(ValueError, match="no vector"):
        map_vectors(demo_ws_template, "demo", ids=[*ids[:2], "no-such-id"])


def test_vector_modalities_counts_items_with_vectors_images_first(demo_ws):
    from core.projection import vector_modalities

    counts = vector_modalities(demo_ws, "demo")
    assert list(counts) == ["image", "text"]
    by_mod = demo_ws.items["modality"].value_counts()
    assert counts == {"image": int(by_mod["image"]), "text": int(by_mod["text"])}
    assert core.vector_modalities is vector_modalities  # reachable from the Python API


def test_true_neighbours_are_exact_and_ranked_on_the_map():
    from core.projection import true_neighbours

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    coords = rng.normal(size=(300, 2)).astype(np.float32)
    coords[[7, 9]] = coords[4] + 1e-3  # the map puts 7 and 9 right next to point 4
    df = true_neighbours(X, coords, 4, k=8)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = U @ U[4]
    cos[4] = -2
    assert df["row"].tolist() == np.argsort(-cos)[:8].tolist()  # brute force agrees, nearest first
    assert np.allclose(df["cosine"], np.sort(cos)[::-1][:8], atol=1e-6)
    d = np.linalg.norm(coords - coords[4], axis=1)
    for r, rank in zip(df["row"], df["map_rank"]):
        assert rank == int((d < d[r]).sum())  # points strictly closer on the map, the point itself included
    far = true_neighbours(X, coords, 7, k=299)
    assert 4 in set(far["row"]) and int(far.loc[far["row"] == 4, "map_rank"].iloc[0]) <= 2
    with pytest.raises(ValueError, match="row must be"):
        true_neighbours(X, coords, 300)
