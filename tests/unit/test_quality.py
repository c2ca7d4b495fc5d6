"""core.quality: every metric against its reference formula on matrices with known answers, the noisy-pair
finder on shuffled captions planted in the demo world, model comparison (demo vs minilm) and the CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import core
from core import quality as q
from core.cli import main

DESIGN_KEYS = ["rankme", "alignment", "uniformity", "modality_gap", "hubness"]


def orthonormal(n: int, r: int, seed: int) -> np.ndarray:
    """(n, r) with orthonormal columns."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, r)))
    return Q


def rotation(d: int, seed: int) -> np.ndarray:
    return orthonormal(d, d, seed)


# ---- RankMe --------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 3, 7, 20])
def test_rankme_of_rank_r_with_equal_singular_values_is_r(r):
    n, d = 60, 20
    X = orthonormal(n, r, 1) @ np.diag(np.full(r, 2.5)) @ orthonormal(d, r, 2).T
    out = q.rankme(X)
    assert out["value"] == pytest.approx(r, abs=1e-3)
    assert out["max"] == min(n, d) and out["n"] == n
    s = out["singular_values"]
    assert len(s) == min(n, d) and np.all(np.diff(s) <= 1e-9)


def test_rankme_of_unequal_spectrum():
    # singular values (2, 1, 1): p = (1/2, 1/4, 1/4), entropy = 1.5 ln 2, RankMe = 2 ** 1.5
    X = orthonormal(30, 3, 3) @ np.diag([2.0, 1.0, 1.0]) @ orthonormal(10, 3, 4).T
    assert q.rankme(X)["value"] == pytest.approx(2**1.5, abs=1e-4)
    sub = q.rankme(np.random.default_rng(0).normal(size=(500, 8)), max_rows=100)
    assert sub["n"] == 100 and 7 < sub["value"] <= 8


# ---- alignment / uniformity ----------------------------------------------------------------------
def test_alignment_known_values():
    X = np.random.default_rng(0).normal(size=(40, 6))
    assert q.alignment(X, X) == pytest.approx(0.0, abs=1e-6)
    assert q.alignment(X, 3 * X) == pytest.approx(0.0, abs=1e-6)  # unit rows: scale does not matter
    assert q.alignment(X, -X) == pytest.approx(4.0, abs=1e-5)  # ||x - (-x)||^2 = 4 on the sphere
    assert q.alignment(X, -X, alpha=1) == pytest.approx(2.0, abs=1e-5)
    E = np.eye(4)
    assert q.alignment(E, np.roll(E, 1, axis=1)) == pytest.approx(2.0, abs=1e-6)  # orthogonal pairs
    with pytest.raises(ValueError):
        q.alignment(np.zeros((0, 3)), np.zeros((0, 3)))


def test_uniformity_of_antipodal_points():
    # convention: mean over distinct unordered pairs (i < j); one pair at squared distance 4
    X = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    assert q.uniformity(X, t=2) == pytest.approx(-8.0, abs=1e-9)
    assert q.uniformity(X, t=1) == pytest.approx(-4.0, abs=1e-9)
    # +-e1, +-e2: 2 antipodal pairs (d^2 = 4) and 4 orthogonal ones (d^2 = 2)
    Y = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    assert q.uniformity(Y) == pytest.approx(np.log((2 * np.exp(-8) + 4 * np.exp(-4)) / 6), abs=1e-9)
    assert q.uniformity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-9)  # all at one point


def test_uniformity_sampled_matches_exact():
    X = np.random.default_rng(1).normal(size=(600, 4))
    exact = q.uniformity(X, max_pairs=10**6)
    sampled = q.uniformity(X, max_pairs=20_000, seed=3)
    assert sampled == pytest.approx(exact, abs=0.05)
    assert q.uniformity(X, max_pairs=20_000, seed=3) == sampled  # seeded


# ---- modality gap / separability -----------------------------------------------------------------
def test_separability_and_gap_keys():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(120, 8)) + np.r_[4.0, np.zeros(7)]
    txt = rng.normal(size=(100, 8)) - np.r_[4.0, np.zeros(7)]
    X = np.vstack([img, txt])
    mods = ["image"] * 120 + ["text"] * 100
    sep = q.modality_separability(X, mods)
    assert sep["accuracy"] == pytest.approx(1.0) and sep["chance"] == pytest.approx(120 / 220)
    mixed = rng.normal(size=(220, 8))
    assert q.modality_separability(mixed, mods)["accuracy"] < 0.7  # no signal: near chance
    gap = q.modality_gap(X, mods)
    assert gap["separability"] is None and gap["centroid_distance"] > 1.0  # default: unchanged, no classifier
    gap = q.modality_gap(X, mods, separability=True)
    assert gap["separability"]["accuracy"] == pytest.approx(1.0)
    assert q.modality_separability(X[:123], mods[:123]) is None  # 3 texts < 5 folds


# ---- hubness ---------------------------------------------------------------------------------------
def test_k_occurrence_matches_sklearn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(2).normal(size=(150, 12))
    k = 7
    h = q.hubness(X, k=k)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    nb = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(U).kneighbors(U)[1][:, 1:]
    assert np.array_equal(h["n_k"], np.bincount(nb.ravel(), minlength=150))
    assert h["n_k"].sum() == 150 * k and h["k"] == k


def test_no_hubness_on_a_ring():
    angles = np.arange(36) * (2 * np.pi / 36)
    X = np.c_[np.cos(angles), np.sin(angles)]
    h = q.hubness(X, k=2)  # every point's 2 nearest are its two neighbours on the ring
    assert np.all(h["n_k"] == 2) and h["skewness"] == 0.0 and not len(h["hubs"])


def test_planted_hub():
    rng = np.random.default_rng(3)
    mu = np.r_[1.0, np.zeros(29)]
    X = np.vstack([mu + 0.6 * rng.normal(size=(300, 30)), mu])  # the last point sits at the centre
    h = q.hubness(X, k=10)
    assert h["skewness"] > 0
    assert h["n_k"][300] == h["max_n_k"] > 3 * 10 and h["hubs"][0] == 300
    queries = mu + 0.15 * rng.normal(size=(300, 30))  # captions all near one image
    cross = q.cross_modal_hubness(np.vstack([rng.normal(size=(50, 30)), mu]), queries, k=5)
    assert cross["hubs"][0] == 50 and cross["n_k"][50] == 300  # in every query's list
    assert cross["skewness"] > 0


# ---- outliers --------------------------------------------------------------------------------------
def test_lof_from_the_index_graph_equals_sklearn():
    from sklearn.neighbors import LocalOutlierFactor

    from core.index import NeighborIndex

    rng = np.random.default_rng(4)
    X = np.vstack([0.3 * rng.normal(size=(200, 5)) + np.r_[3.0, 0, 0, 0, 0], np.r_[-3.0, 1, 0, 0, 0]])
    knn, sim = NeighborIndex().fit(X, np.arange(len(X))).kneighbors(11)
    ours = q.local_outlier_factor(knn, sim, k=10)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    ref = -LocalOutlierFactor(n_neighbors=10, metric="cosine", algorithm="brute").fit(U).negative_outlier_factor_
    assert np.allclose(ours, ref, atol=1e-4)
    assert ours[-1] == ours.max() and ours[-1] > q.OUTLIER_LOF


def test_robust_z():
    z = q.robust_z(np.array([1.0, 2, 3, 4, 100, np.nan]))
    assert z[4] == pytest.approx(97 / 1.4826) and z[2] == 0.0 and np.isnan(z[5])
    assert np.all(q.robust_z(np.full(5, 2.0)) == 0.0)


# ---- paired retrieval ------------------------------------------------------------------------------
def test_recall_on_a_perfect_pairing_is_one():
    A = np.random.default_rng(5).normal(size=(50, 16))
    X = np.vstack([A, A + 0.01])
    mods = ["image"] * 50 + ["text"] * 50
    pairs = np.c_[np.arange(50), np.arange(50, 100)]
    summary, frame = q.paired_retrieval(X, mods, pairs)
    for side in ("image_to_text", "text_to_image"):
        assert summary[side] == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0}
    assert (frame["rank_i2t"] == 1).all() and (frame["rank_t2i"] == 1).all()


def test_ranks_of_swapped_and_shared_captions():
    E = np.eye(10)
    T = E.copy()
    T[[0, 1]] = T[[1, 0]]  # captions 0 and 1 swapped
    X = np.vstack([E, T])
    mods = ["image"] * 10 + ["text"] * 10
    summary, frame = q.paired_retrieval(X, mods, np.c_[np.arange(10), np.arange(10, 20)])
    frame = frame.set_index("image")
    # image 0's caption has cosine 0; only caption 1 (= e0) scores higher
    assert frame.loc[0, "rank_i2t"] == 2 and frame.loc[0, "rank_t2i"] == 2 and frame.loc[0, "cosine"] == 0
    assert (frame.loc[2:, "rank_i2t"] == 1).all()
    assert summary["image_to_text"]["recall@1"] == pytest.approx(0.8)
    assert summary["image_to_text"]["recall@5"] == 1.0
    # one caption shared by two identical images counts for each: both rank 1 (the other partner is not
    # a competitor)
    X2 = np.vstack([E[:3], E[[0]], E[:3]])  # images 0..2 and a copy of image 0; captions 0..2
    mods2 = ["image"] * 4 + ["text"] * 3
    s2, f2 = q.paired_retrieval(X2, mods2, np.array([[0, 4], [1, 5], [2, 6], [3, 4]]))
    assert s2["n_pairs"] == 4 and (f2["rank_t2i"] == 1).all() and (f2["rank_i2t"] == 1).all()


def test_flag_noisy_pairs_on_planted_scores():
    frame = pd.DataFrame({"csls": np.r_[np.random.default_rng(6).normal(0.5, 0.02, 50), [0.1, 0.05]]})
    out = q.flag_noisy_pairs(frame)
    assert out["noisy"].tolist() == [False] * 50 + [True, True]
    assert not q.flag_noisy_pairs(frame.tail(5))["noisy"].any()  # too few pairs to judge


# ---- comparing representations ---------------------------------------------------------------------
def test_linear_cka():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 12))
    assert q.linear_cka(X, X @ rotation(12, 8)) == pytest.approx(1.0, abs=1e-9)
    assert q.linear_cka(X, 5 * X + 2) == pytest.approx(1.0, abs=1e-9)
    assert q.linear_cka(rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))) < 0.05
    # the feature-space formula equals the HSIC form on centred Gram matrices
    A, B = rng.normal(size=(30, 5)), rng.normal(size=(30, 7))
    B[:, :3] += A[:, :3]
    H = np.eye(30) - 1 / 30
    K, L = H @ A @ A.T @ H, H @ B @ B.T @ H
    ref = np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L))
    assert q.linear_cka(A, B) == pytest.approx(ref, abs=1e-9)


def test_align_maps_and_knn_jaccard():
    rng = np.random.default_rng(9)
    A = rng.normal(size=(80, 2))
    th = np.pi / 6
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    for B in (3 * A @ R + [5, -2], A * [1, -1]):  # rotated, scaled, shifted; reflected
        _A1, _B1, disp, disparity = q.align_maps(A, B)
        assert disparity == pytest.approx(0.0, abs=1e-9) and disp.max() < 1e-6
    _, _, disp, disparity = q.align_maps(A, rng.normal(size=(80, 2)))
    assert disparity > 0.5 and disp.shape == (80,)
    assert q.knn_jaccard(np.array([[1, 2], [4, 5]]), np.array([[2, 3], [5, 4]])).tolist() == [1 / 3, 1.0]


# ---- on the demo world ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quality_ws(demo_ws_template, tmp_path_factory):
    """A copy of the demo workspace with the captions also embedded with `minilm` (text-only, offline)."""
    dst = tmp_path_factory.mktemp("quality") / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    ws = core.Workspace(dst, create=False)
    rep = ws.embed("minilm")
    assert rep.embedded == int((ws.items["modality"] == "text").sum()) and not rep.errors
    return ws


def test_quality_report_on_demo(quality_ws):
    rep = q.quality_report(quality_ws, "demo")
    assert list(rep)[:5] == DESIGN_KEYS
    json.dumps(rep)  # JSON-able as it is
    n_img = int((quality_ws.items["modality"] == "image").sum())
    assert rep["n"] == len(quality_ws.items) and rep["dim"] == 128
    assert 1 <= rep["rankme"]["value"] <= rep["rankme"]["max"] == min(rep["n"], 128)
    assert 0 <= rep["alignment"] < 2  # true pairs closer than orthogonal
    assert -4 * 2 <= rep["uniformity"] < 0
    gap = rep["modality_gap"]
    assert gap["n_pairs"] == n_img and gap["pair_cosine"] > gap["random_pair_cosine"] + 0.2
    assert 0.5 <= gap["separability"]["accuracy"] <= 1
    ret = rep["retrieval"]
    for side in ("image_to_text", "text_to_image"):
        r = ret[side]
        assert r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 1
        assert r["recall@10"] > 10 / ret["n_texts"] * 5  # far above chance
    hub = rep["hubness"]
    assert hub["k"] == 10 and hub["n_hubs"] == rep["flags"]["hub"] and len(hub["top"]) <= q.TOP
    assert all(t["n_k"] > hub["threshold"] for t in hub["top"])
    assert hub["cross_modal"]["mean"] == pytest.approx(10 * ret["n_texts"] / ret["n_images"])
    assert rep["flags"]["noisy_pair"] <= 0.05 * rep["n"]  # the clean demo has few suspicious pairs


def test_item_flags_frame(quality_ws):
    qa = q.quality_analysis(quality_ws, "demo", k=5)
    f = qa.items
    assert list(f["id"]) == list(quality_ws.vectors("demo")[1])
    assert {"id", "modality", "n_k", "knn_similarity", "lof", "pair_cosine", "partner_rank", "noisy_score",
            "noisy_pair", "hub", "outlier"} <= set(f.columns)
    assert f[["noisy_pair", "hub", "outlier"]].dtypes.eq(bool).all()
    assert f["n_k"].sum() == len(f) * 5 and f["pair_cosine"].notna().all()  # every demo item is paired
    assert len(qa.pairs) == qa.report["retrieval"]["n_pairs"]
    assert len(qa.singular_values) == min(len(f), 128)
    assert f.equals(q.item_flags(quality_ws, "demo", k=5))  # deterministic


def plant_shuffled_captions(src: core.Workspace, folder, n_swap: int = 20, seed: int = 0):
    """A new workspace with the demo images and captions, as a user would upload them (a table of image
    files and captions), where ``n_swap`` images get another image's caption. Returns (ws, swapped ids)."""
    items = src.items
    img = items[items["modality"] == "image"].reset_index(drop=True)
    caption = img["pair"].map(items.set_index("id")["text"])
    single = np.flatnonzero(caption.map(caption.value_counts()).to_numpy() == 1)  # captions of one image only
    chosen = np.random.default_rng(seed).choice(single, size=n_swap, replace=False)
    caption.iloc[chosen] = caption.iloc[np.roll(chosen, 1)].to_numpy()  # a cycle: every chosen one is wrong
    up = folder / "upload"
    shutil.copytree(src.path / "images", up / "images")
    pd.DataFrame({"file": img["image"], "caption": caption}).to_csv(up / "pairs.csv", index=False)
    ws = core.Workspace(folder / "ws")
    rep = ws.ingest([up / "pairs.csv"], roles={"file": "image", "caption": "text"})
    assert not rep.errors and rep.added == len(img) + caption.nunique()
    ws.embed("demo")
    return ws, set(img["id"].iloc[chosen])


def test_noisy_pair_finder_catches_planted_shuffled_captions(demo_ws, tmp_path):
    ws, planted = plant_shuffled_captions(demo_ws, tmp_path)
    qa = q.quality_analysis(ws, "demo")
    images = qa.items[qa.items["modality"] == "image"]
    truth = images["id"].isin(planted)
    flagged = images["noisy_pair"]
    recall = (flagged & truth).sum() / truth.sum()
    fpr = (flagged & ~truth).sum() / (~truth).sum()
    assert recall >= 0.8 and fpr <= 0.05, (recall, fpr)
    top = qa.report["noisy_pairs"]
    assert top and sum(p["image_id"] in planted for p in top) / len(top) >= 0.8
    assert all(p["text"] and p["image_source"] for p in top)


def test_compare_demo_with_minilm_on_captions(quality_ws):
    cmp = q.compare_models(quality_ws, "demo", "minilm", modality="text", method="pca")
    n_txt = int((quality_ws.items["modality"] == "text").sum())
    assert cmp.n == n_txt and cmp.modalities == ["text"]
    assert 0 <= cmp.knn_overlap <= 1 and 0 <= cmp.cka <= 1
    assert cmp.knn_overlap > 0.1  # the two models agree on caption neighbourhoods far more than chance (~0.03)
    f = cmp.items
    assert f["knn_overlap"].between(0, 1).all() and np.isfinite(f[["displacement", "ax", "ay", "bx", "by"]]).all().all()
    assert cmp.disparity == pytest.approx(float(np.mean(f["displacement"] ** 2)))
    d = cmp.to_dict(top=3)
    json.dumps(d)
    assert len(d["most_moved"]) == 3 and d["most_moved"][0]["displacement"] == pytest.approx(f["displacement"].max())
    # without a modality: only the items both have (minilm has no images)
    assert q.compare_models(quality_ws, "demo", "minilm", method="pca").n == n_txt
    with pytest.raises(ValueError, match="two different models"):
        q.compare_models(quality_ws, "demo", "demo")
    with pytest.raises(ValueError, match="share 0 items"):
        q.compare_models(quality_ws, "demo", "minilm", modality="image")


# ---- plots -------------------------------------------------------------------------------------------
def test_quality_plots_are_deterministic_and_escaped():
    from core.plots import histogram_figure, recall_figure, spectrum_figure

    s = np.array([4.0, 2.0, 1.0, 0.5])
    a, b = spectrum_figure(s, rankme=3.1, max_rank=4), spectrum_figure(s, rankme=3.1, max_rank=4)
    assert a.to_json() == b.to_json()
    assert np.allclose(a.data[0].y, s / s.sum())
    h = histogram_figure([1, 2, 2, 3, np.nan], x_title="<b>N_k</b>", bin_size=1, threshold=2.5,
                         split=[False, True, False, True, False])
    assert h.to_json() == histogram_figure([1, 2, 2, 3, np.nan], x_title="<b>N_k</b>", bin_size=1, threshold=2.5,
                                           split=[False, True, False, True, False]).to_json()
    assert "<b>" not in h.layout.xaxis.title.text and [len(t.x) for t in h.data] == [2, 2]
    r = recall_figure({"image_to_text": {"recall@1": 0.5, "recall@5": 0.9}, "text_to_image": None})
    assert len(r.data) == 1 and list(r.data[0].y) == [0.5, 0.9]


# ---- CLI -----------------------------------------------------------------------------------------------
def run_json(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_cli_quality_json(capsys, quality_ws):
    code, doc, err = run_json(capsys, "quality", quality_ws.path, "--model", "demo", "--json")
    assert code == 0, err
    assert list(doc)[:5] == DESIGN_KEYS
    assert {"retrieval", "flags", "noisy_pairs", "outliers", "n", "dim", "seconds"} <= set(doc)
    assert {"noisy_pair", "hub", "outlier"} <= set(doc["flags"])
    assert all({"id", "text", "source", "n_k"} <= set(t) for t in doc["hubness"]["top"])
    code, doc, err = run_json(capsys, "quality", quality_ws.path, "--model", "demo", "--k", "5", "--compare", "minilm",
                              "--compare-method", "pca", "--json")
    assert code == 0, err
    assert doc["hubness"]["k"] == 5 and doc["compare"]["model_b"] == "minilm"
    assert 0 <= doc["compare"]["cka"] <= 1 and 0 <= doc["compare"]["knn_overlap"] <= 1


def test_cli_quality_errors(capsys, quality_ws, tmp_path):
    code, doc, err = run_json(capsys, "quality", quality_ws.path, "--model", "nope", "--json")
    assert code == 1 and doc is None and "no vectors for model 'nope'" in err and err.count("\n") == 1
    code, _, err = run_json(capsys, "quality", tmp_path / "missing", "--model", "demo", "--json")
    assert code == 1 and "no workspace" in err
    code, _, err = run_json(capsys, "quality", quality_ws.path, "--model", "demo", "--k", "0", "--json")
    assert code == 2 and "--k" in err
    code, _, err = run_json(capsys, "quality", quality_ws.path, "--json")
    assert code == 2  # --model is required
    code, _, err = run_json(capsys, "quality", quality_ws.path, "--model", "demo", "--compare", "demo", "--json")
    assert code == 1 and "two different models" in err


# ---- the modality gap of a workspace (the Map page's gap numbers) --------------------------------
def test_gap_sample_ids_keeps_small_sets_and_samples_large_ones_with_their_partners():
    ids = np.array([f"{i:03d}" for i in range(20)])
    items = pd.DataFrame({"id": ids, "pair": [f"{19 - i:03d}" for i in range(20)]})  # 000<->019, 001<->018 ...
    assert q.gap_sample_ids(ids, items, max_items=20).tolist() == ids.tolist()
    got = q.gap_sample_ids(ids[::-1], items, max_items=8)  # the 4 smallest ids plus their partners
    assert got.tolist() == ["000", "001", "002", "003", "016", "017", "018", "019"]
    # a partner without a vector is not added
    got = q.gap_sample_ids(ids[:18], items, max_items=8)
    assert got.tolist() == ["000", "001", "002", "003", "016", "017"]


def test_workspace_modality_gap_matches_modality_gap_and_samples_whole_pairs(demo_ws_template):
    ws = demo_ws_template
    X, ids = ws.vectors("demo")
    mods = ws.items.set_index("id").loc[ids, "modality"].to_numpy()
    full = q.modality_gap(X, mods, q.pair_positions(ws.items, ids))
    got = q.workspace_modality_gap(ws, "demo")
    assert got["sampled"] is None
    for key in ("centroid_distance", "pair_cosine", "random_pair_cosine", "n_a", "n_b", "n_pairs"):
        assert got[key] == pytest.approx(full[key], abs=1e-6)
    small = q.workspace_modality_gap(ws, "demo", max_items=100)
    assert small["sampled"] is not None and 50 <= small["sampled"] <= 100
    # every sampled item came with its partner: no image or text of the sample is left without a pair
    assert small["n_pairs"] >= max(small["n_a"], small["n_b"]) and small["n_a"] + small["n_b"] == small["sampled"]
    assert small["pair_cosine"] > small["random_pair_cosine"] + 0.2
    # of some items only (a map's): the images alone have no gap to measure; 300 items, on a sample of <= 100
    images = ws.items.loc[ws.items["modality"] == "image", "id"].astype(str).tolist()
    only = q.workspace_modality_gap(ws, "demo", ids=images)
    assert (only["n_a"], only["n_b"], only["centroid_distance"], only["sampled"]) == (len(images), 0, None, None)
    part = q.workspace_modality_gap(ws, "demo", ids=ids[:300], max_items=100)
    assert part["sampled"] is not None and part["n_a"] + part["n_b"] == part["sampled"] <= 100
    assert core.workspace_modality_gap is q.workspace_modality_gap
