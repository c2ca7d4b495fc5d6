"""Concept explanations (PACE): the estimator, metrics, patch extraction, ground truth, explain() and the CLI."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from core.concepts import (
    PACE,
    NotFittedError,
    NotViTError,
    default_estimator,
    extract_patches,
    faithfulness,
    project_tokens,
    recovery,
    sparsity,
    stability,
)
from core.concepts.groundtruth import color_dataset, patch_majority, world_pixel_colours

# ---- a tiny Gaussian mixture with known parameters ----------------------------------------------
TRUE_MEANS = np.array([[6.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0]])


def mixture(M=120, J=20, seed=0, scale=0.7):
    """Images whose patches come from 1–2 of 3 Gaussian concepts: (X (M, J, 4), z (M, J), theta (M, 3))."""
    rng = np.random.default_rng(seed)
    K = len(TRUE_MEANS)
    theta = np.zeros((M, K))
    for m in range(M):
        used = rng.choice(K, size=1 + m % 2, replace=False)
        theta[m, used] = rng.dirichlet(np.ones(len(used)) * 2)
    z = np.stack([rng.choice(K, size=J, p=t) for t in theta])
    X = TRUE_MEANS[z] + rng.normal(0, scale, (M, J, 4))
    return X.astype(np.float32), z, theta


def matched(fitted_means: np.ndarray) -> np.ndarray:
    """Permutation p with fitted_means[p[k]] ≈ TRUE_MEANS[k] (Hungarian matching)."""
    from scipy.optimize import linear_sum_assignment

    cost = ((TRUE_MEANS[:, None, :] - fitted_means[None, :, :]) ** 2).sum(-1)
    _, cols = linear_sum_assignment(cost)
    return cols


@pytest.mark.parametrize("covariance", ["diag", "full", "tied", "isotropic"])
def test_em_recovers_a_known_mixture(covariance):
    X, z, theta = mixture()
    pace = PACE(3, alpha=0.1, n_components=4, covariance=covariance, random_state=0).fit(X)
    p = matched(pace.prototypes_)
    assert np.abs(pace.prototypes_[p] - TRUE_MEANS).max() < 0.3
    inv = np.argsort(p)  # fitted concept -> true concept
    acc = (inv[pace.phi_.argmax(2)] == z).mean()
    assert acc > 0.99
    # the variances (in PCA space, a rotation here) add up to the true total variance 4 * 0.7²
    diagonal = covariance in ("diag", "isotropic")
    tr = pace.covariances_.sum(1) if diagonal else np.trace(pace.covariances_, axis1=1, axis2=2)
    assert np.allclose(tr, 4 * 0.49, rtol=0.25)
    if covariance in ("tied", "isotropic"):
        assert np.allclose(pace.covariances_, pace.covariances_[0]), "one covariance shared by every concept"
    if covariance == "isotropic":
        assert np.allclose(pace.covariances_, pace.covariances_[0, 0]), "one variance for every direction"
    # θ: rows sum to 1 and follow the true proportions
    assert np.allclose(pace.theta_.sum(1), 1.0, atol=1e-5)
    assert np.abs(pace.theta_[:, p] - theta).mean() < 0.08
    assert pace.shares_.sum() == pytest.approx(1.0, abs=1e-5)


def test_isotropic_is_tied_with_full_shrinkage():
    """"isotropic" is the shrinkage-1 limit of "tied" (σ² = the pooled variance per dimension), fitted with
    the cheap diagonal arithmetic."""
    X, _z, _ = mixture(seed=2)
    iso = PACE(3, n_components=4, covariance="isotropic", random_state=0).fit(X)
    tied = PACE(3, n_components=4, covariance="tied", shrinkage=1.0, random_state=0).fit(X)
    assert np.allclose(iso.covariances_[:, 0], np.diagonal(tied.covariances_, axis1=1, axis2=2)[:, 0], rtol=1e-3)
    assert np.allclose(iso.prototypes_, tied.prototypes_, atol=1e-3)
    assert np.allclose(iso.theta_, tied.theta_, atol=1e-3)
    assert iso.score_ == pytest.approx(tied.score_, rel=1e-4)


def test_several_starts_keep_the_best_scoring_fit():
    X, _z, _ = mixture(seed=4)
    one = PACE(3, n_components=4, covariance="tied", random_state=1, n_init=1).fit(X)
    many = PACE(3, n_components=4, covariance="tied", random_state=1, n_init=4).fit(X)
    assert len(many.init_scores_) == 4 and many.score_ == pytest.approx(many.init_scores_.max())
    assert many.init_scores_[0] == pytest.approx(one.score_), "the first start is the single-start fit"
    assert many.score_ >= one.score_ and np.isfinite(many.score_)
    # the score is the fitted model's: a fit on shuffled patches (no structure) scores lower
    noise = np.random.default_rng(0).permutation(X.reshape(-1, 4).ravel()).reshape(X.shape)
    assert PACE(3, n_components=4, covariance="tied", random_state=1).fit(noise).score_ < one.score_


def test_fit_progress_ends_at_its_total_when_starts_converge_early():
    X, _, _ = mixture(seed=4)
    calls = []
    pace = PACE(3, n_components=4, covariance="tied", random_state=1, n_init=3, max_iter=50, tol=1e-2)
    pace.fit(X, progress=lambda d, t: calls.append((d, t)))
    assert pace.n_iter_ < 50, "the mixture converges well before max_iter"
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {150} and done == sorted(done) and done[-1] == 150


def test_transform_of_new_images_is_the_e_step():
    X, _, _ = mixture(seed=0)
    pace = PACE(3, n_components=4).fit(X)
    X2, z2, theta2 = mixture(M=40, seed=1)
    th, phi = pace.transform(X2)
    assert th.shape == (40, 3) and phi.shape == (40, 20, 3)
    assert np.allclose(th.sum(1), 1.0, atol=1e-5) and np.allclose(phi.sum(2), 1.0, atol=1e-5)
    inv = np.argsort(matched(pace.prototypes_))
    assert (inv[phi.argmax(2)] == z2).mean() > 0.99
    # sparse prior: a concept an image does not use gets almost nothing
    assert (th[:, matched(pace.prototypes_)][theta2 == 0] < 0.01).all()


def test_zero_attention_patches_do_not_move_the_concepts():
    X, _, _ = mixture()
    A = np.ones(X.shape[:2])
    Xo = X.copy()
    rng = np.random.default_rng(1)
    # the first three patches of every image sit between concepts 0 and 1, and get no attention
    Xo[:, :3] = np.array([3.0, 3.0, 0.0, 0.0]) + rng.normal(0, 0.3, (len(X), 3, 4))
    A[:, :3] = 0.0
    for seed in (0, 1):
        pace = PACE(3, n_components=4, random_state=seed).fit(Xo, A)
        assert np.abs(pace.prototypes_[matched(pace.prototypes_)] - TRUE_MEANS).max() < 0.3
    unweighted = PACE(3, n_components=4, random_state=0, use_attention=False).fit(Xo, A)
    assert np.abs(unweighted.prototypes_[matched(unweighted.prototypes_)] - TRUE_MEANS).max() > 0.8


def test_empty_concept_is_relocated():
    """k-means puts a concept on patches without attention; it gets no mass and splits the merged one."""
    X, _, _ = mixture()
    A = np.ones(X.shape[:2])
    Xo = X.copy()
    Xo[:, :3] = 40.0  # a tight cluster that k-means (unweighted) gives its own concept ...
    A[:, :3] = 0.0    # ... but that the model does not attend to
    for covariance in ("diag", "full", "tied", "isotropic"):
        pace = PACE(3, n_components=4, random_state=0, covariance=covariance).fit(Xo, A)
        assert (pace.shares_ > 0.2).all()
        assert np.abs(pace.prototypes_[matched(pace.prototypes_)] - TRUE_MEANS).max() < 0.3


def test_prediction_term_learns_weights_and_accepts_labels():
    X, _z, theta = mixture()
    labels = theta.argmax(1)  # the "model" predicts the dominant concept
    pace = PACE(3, n_components=4, random_state=0).fit(X, None, labels)
    assert pace.coef_.shape == (3, 3)
    p = matched(pace.prototypes_)
    # H maps each concept to the class it predicts: the learned weights favour the right class
    assert (pace.coef_[p].argmax(1) == np.arange(3)).all()
    probs = np.eye(3)[labels] * 0.9 + 0.1 / 3
    assert PACE(3, n_components=4).fit(X, None, probs).coef_.shape == (3, 3)
    with pytest.raises(ValueError, match="one entry per image"):
        PACE(3, n_components=4).fit(X, None, labels[:5])


def test_parameter_errors_and_not_fitted():
    X, _, _ = mixture(M=10)
    with pytest.raises(NotFittedError, match="not fitted"):
        PACE(3).transform(X)
    with pytest.raises(ValueError, match=r"PACE: n_concepts must be an integer in \[1, 200\]; got 500"):
        PACE(500).fit(X)
    with pytest.raises(ValueError, match=r"n_concepts must be an integer in \[1, n_patches=40\]; got 50"):
        PACE(50).fit(X[:2])
    with pytest.raises(ValueError, match="covariance must be one of 'isotropic', 'tied', 'full', 'diag'"):
        PACE(3, covariance="spherical").fit(X)
    with pytest.raises(ValueError, match="n_init must be an integer >= 1"):
        PACE(3, n_init=0).fit(X)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        PACE(3, temperature=0).fit(X)
    with pytest.raises(ValueError, match="PACE: alpha must be a finite number > 0 or an array; got 0"):
        PACE(3, alpha=0).fit(X)
    with pytest.raises(ValueError, match=r"alpha must be > 0, a scalar or one value per concept \(3\)"):
        PACE(3, alpha=[0.1, 0.2]).fit(X)
    with pytest.raises(ValueError, match="patches must be"):
        PACE(3).fit(X[0])
    with pytest.raises(ValueError, match="attention must be"):
        PACE(3).fit(X, np.ones((10, 3)))


def test_prototype_patches_are_nearest_and_one_per_image():
    X, z, _ = mixture()
    pace = PACE(3, n_components=4, random_state=0).fit(X)
    pp = pace.prototype_patches(X, n=5)
    assert pp.shape == (3, 5, 2)
    inv = np.argsort(matched(pace.prototypes_))
    for k in range(3):
        rows = pp[k][pp[k, :, 0] >= 0]
        assert len(set(rows[:, 0])) == len(rows) == 5
        assert (z[rows[:, 0], rows[:, 1]] == inv[k]).all()


# ---- metrics, by hand -----------------------------------------------------------------------------
def test_sparsity_by_hand():
    theta = np.array([[0.97, 0.01, 0.01, 0.01], [0.5, 0.5, 0.0, 0.0]])
    assert sparsity(theta) == pytest.approx((3 / 4 + 2 / 4) / 2)  # threshold 0.1 / 4 = 0.025


def test_stability_by_hand():
    theta = np.array([[1.0, 0.0], [0.6, 0.8]])
    aug = np.array([[0.6, 0.8], [0.6, 0.8]])
    assert stability(theta, aug) == pytest.approx((np.hypot(0.4, 0.8) / 1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match=r"same|both"):
        stability(theta, aug[:1])


def test_faithfulness_separable_random_and_single_class():
    rng = np.random.default_rng(0)
    theta = rng.dirichlet(np.ones(4) * 0.3, size=200)
    assert faithfulness(theta, theta.argmax(1)) > 0.9
    noise = faithfulness(theta, rng.integers(0, 2, 200))
    assert 0.3 < noise < 0.7
    assert faithfulness(theta, np.zeros(200, int)) is None


def test_recovery_by_hand():
    truth = np.array(["red"] * 4 + ["blue"] * 4)
    assert recovery(np.array([7] * 4 + [3] * 4), truth) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    r = recovery(np.array([0, 1] * 4), truth)
    assert r["nmi"] == pytest.approx(0.0, abs=1e-9)


# ---- patch extraction -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_encoder():
    from core.encoders import load_encoder

    return load_encoder("demo", device="cpu")


def test_demo_patches_shapes_and_attention_matches_torch(demo_encoder):
    from core.concepts.patches import model_input, vit_tower
    from core.demo.world import generate

    images = [it.image for it in generate(5, seed=3, combos="all")]
    d = extract_patches(demo_encoder, images, batch_size=2)
    assert d.tokens.shape == (5, 64, 128) and d.joint.shape == (5, 64, 128) and d.attention.shape == (5, 64)
    assert d.grid == (8, 8) and d.block == d.attn_block == 3
    assert np.allclose(d.attention.sum(1), 1.0, atol=1e-5)
    # the recomputed CLS attention equals what nn.MultiheadAttention returns with need_weights=True
    blk = vit_tower(demo_encoder).transformer.resblocks[-1]
    seen = {}
    h = blk.ln_1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.inference_mode():
        vit_tower(demo_encoder)(model_input(demo_encoder, images))
        h.remove()
        x = seen["x"]
        _, w = blk.attn(x, x, x, need_weights=True, average_attn_weights=True)
    ref = (w[:, 0, 1:] / w[:, 0, 1:].sum(1, keepdim=True)).numpy()
    assert np.abs(ref - d.attention).max() < 1e-5
    # joint vectors are ln_post + proj of the last block's tokens
    assert np.allclose(project_tokens(demo_encoder, d.tokens), d.joint, atol=1e-4)
    early = extract_patches(demo_encoder, images[:2], block=0, attn_block=-2)
    assert early.block == 0 and early.attn_block == 2
    assert np.allclose(early.joint, d.joint[:2], atol=1e-4)  # joint always comes from the last block
    assert not np.allclose(early.tokens, d.tokens[:2])
    with pytest.raises(ValueError, match="block must be in"):
        extract_patches(demo_encoder, images[:1], block=4)


def test_tiny_random_vit_patches(tiny_clip_id):
    from PIL import Image

    from core.encoders import load_encoder

    enc = load_encoder(tiny_clip_id, device="cpu")
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (32, 32), (10, 200, 10))]
    d = extract_patches(enc, images)
    assert d.tokens.shape == (2, 16, 32) and d.grid == (4, 4)
    assert d.joint.shape == (2, 16, enc.dim)
    assert np.allclose(d.attention.sum(1), 1.0, atol=1e-5) and (d.attention >= 0).all()


def test_non_vit_tower_is_refused():
    import open_clip

    from core.concepts.patches import vit_tower

    class Fake:
        id = "openclip-local:tiny-resnet"

        def __init__(self, model):
            self.model = model

    rn = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
                        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    with pytest.raises(NotViTError,
                       match="concepts need a ViT image tower; openclip-local:tiny-resnet has ModifiedResNet"):
        vit_tower(Fake(rn))

    class TextOnly:
        id = "minilm"
    with pytest.raises(NotViTError, match="image tower"):
        vit_tower(TextOnly())


# ---- ground truth -----------------------------------------------------------------------------------
def test_color_set_and_patch_truth():
    cs = color_dataset(6, seed=0)
    assert [im.size for im in cs.images] == [(64, 64)] * 6 and list(cs.labels) == [0, 1] * 3
    for grid, lab in zip(cs.cells, cs.labels):
        colours = set(grid.ravel()) - {"black"}
        assert colours == ({"red", "yellow"} if lab == 0 else {"blue", "green"})
    t = patch_majority(cs.pixel_labels(0, 64), (8, 8)).reshape(8, 8)
    assert t[0, 0] == cs.cells[0][0, 0] and t[7, 7] == cs.cells[0][1, 1] and t[0, 7] == cs.cells[0][0, 1]
    # the image shows the cell colours (noise and blended edges aside)
    px = np.asarray(cs.images[0]).astype(float)
    rgb = {"red": (255, 0, 0), "yellow": (255, 255, 0), "blue": (0, 0, 255), "green": (0, 255, 0), "black": (0, 0, 0)}
    assert np.abs(px[12, 12] - rgb[cs.cells[0][0, 0]]).max() < 90


def test_world_patch_truth():
    mask = np.zeros((64, 64), np.uint8)
    mask[0:16, 0:16] = 1
    mask[40:64, 40:64] = 2
    mask[8:12, 20:23] = 1  # less than half of a patch: stays background
    t = patch_majority(world_pixel_colours(mask, ["red", "blue"]), (8, 8)).reshape(8, 8)
    assert (t[:2, :2] == "red").all() and (t[5:, 5:] == "blue").all()
    assert t[1, 2] == "background" and (t == "background").sum() == 64 - 4 - 9


def test_zero_shot_prompt_ensembles_name_the_colours_of_two_object_images(demo_encoder):
    """A class may be a list of prompts (averaged unit vectors): colour-set classes with an ensemble over
    shapes tell two-object images apart; a one-prompt list is the plain prompt."""
    import itertools

    from core.concepts import zero_shot
    from core.demo.world import COLOURS, SHAPES, generate

    items = [it for it in generate(40, seed=3, combos="all") if len(it.objects) == 2][:12]
    X = demo_encoder.encode_images([it.image for it in items])
    pairs = list(itertools.combinations(COLOURS, 2))
    ens = [[f"a {a} {s} and a {b} {t}" for a, b in ((x, y), (y, x)) for s in SHAPES for t in SHAPES]
           for x, y in pairs]
    P = zero_shot(demo_encoder, X, ens)
    assert P.shape == (len(items), len(pairs)) and np.allclose(P.sum(1), 1.0)
    hits = [set(pairs[j]) == {o.colour for o in it.objects} for j, it in zip(P.argmax(1), items)]
    assert np.mean(hits) >= 0.9, hits
    plain = ["a red object", "a blue object"]
    np.testing.assert_allclose(zero_shot(demo_encoder, X, [[p] for p in plain]), zero_shot(demo_encoder, X, plain))
    # an ensemble's class vector is the normalised mean of its prompts' unit vectors
    from core.concepts.explain import _logit_scale
    from core.encoders import unit_rows
    from core.vocabulary import vocabulary_vectors

    V = unit_rows(vocabulary_vectors(demo_encoder, ["a red object", "a red circle", "a blue object"]), np.float64)
    T = unit_rows(np.stack([V[:2].mean(0), V[2]]), np.float64)
    s = _logit_scale(demo_encoder) * unit_rows(X, np.float64) @ T.T
    want = np.exp(s - s.max(1, keepdims=True))
    np.testing.assert_allclose(zero_shot(demo_encoder, X, [["a red object", "a red circle"], ["a blue object"]]),
                               want / want.sum(1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one prompt"):
        zero_shot(demo_encoder, X, ["a red object", []])


@pytest.mark.parametrize("block", [None, 0])
def test_small_color_set_meets_looser_floors(demo_encoder, block):
    """The bench's ground truth on 150 Color images (bench: 1000 images, NMI ≥ 0.8, faithfulness ≥ 0.95,
    stability ≤ 0.2): PACE recovers the colours at least as well as k-means, explains the class and is
    stable under small augmentations."""
    from sklearn.cluster import KMeans

    from core.concepts import augmentation

    cs = color_dataset(150, seed=5)
    d = extract_patches(demo_encoder, cs.images, block=block)
    truth = np.stack([patch_majority(cs.pixel_labels(i, 64), d.grid) for i in range(150)])
    pace = PACE(5, covariance="full", random_state=0).fit(d.tokens, d.attention, cs.labels)
    nmi = recovery(pace.phi_.argmax(2), truth)["nmi"]
    km = KMeans(5, n_init=2, random_state=0).fit_predict(pace.reduce(d.tokens).reshape(-1, 32))
    assert nmi >= 0.7
    assert nmi >= recovery(km, truth)["nmi"] - 0.02
    assert faithfulness(pace.theta_, cs.labels) >= 0.9
    torch.manual_seed(0)
    aug = extract_patches(demo_encoder, cs.images[:60], block=block, transform=augmentation())
    t0, _ = pace.transform(d.tokens[:60], d.attention[:60])
    t1, _ = pace.transform(aug.tokens, aug.attention)
    assert stability(t0, t1) <= 0.3


# ---- workspace level and CLI ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def explained(demo_ws_template, tmp_path_factory):
    import shutil

    import core
    from core.concepts import explain

    dst = tmp_path_factory.mktemp("concepts") / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    ws = core.Workspace(dst, create=False)
    stages = []
    res = explain(ws, "demo", estimator=default_estimator(n_concepts=4), label="colour", stability_sample=40,
                  progress=lambda s, d, t: stages.append(s))
    return ws, res, stages


def test_explain_workspace(explained):
    ws, res, stages = explained
    images = ws.items[ws.items["modality"] == "image"]
    assert res.n_images == len(images) == 400 and res.k == 4
    assert res.theta.shape == (400, 4) and np.allclose(res.theta.sum(1), 1.0, atol=1e-4)
    assert res.phi.shape == (400, 64, 4) and np.allclose(res.phi.sum(2), 1.0, atol=1e-2)
    assert set(stages) == {"patches", "fit", "stability"}
    assert set(res.metrics) == {"faithfulness", "stability", "sparsity", "parsimony"}
    assert 0 <= res.metrics["faithfulness"] <= 1 and res.metrics["parsimony"] == 4
    assert res.prediction_source == "label:colour"
    ids = set(images["id"])
    for con in res.concepts:
        assert len(con.names) == 5 and all(isinstance(w, str) and w for w in con.names)
        assert con.prototypes and all(i in ids and 0 <= j < 64 for i, j in con.prototypes)
    assert sum(con.share for con in res.concepts) == pytest.approx(1.0, abs=1e-3)
    df = res.assignments_frame()
    assert len(df) == 400 and list(df.columns[-4:]) == ["theta_1", "theta_2", "theta_3", "theta_4"]
    assert res.path is not None and res.path.is_file() and "derived/concepts" in str(res.path)


def test_explain_reads_its_cache_and_checks_input(explained):
    from core.concepts import explain

    ws, res, _ = explained
    again = explain(ws, "demo", estimator=default_estimator(n_concepts=4), label="colour", stability_sample=40)
    assert again.cached and np.allclose(again.theta, res.theta)
    assert [c.names for c in again.concepts] == [c.names for c in res.concepts]
    with pytest.raises(ValueError, match="label column 'nope' is not in workspace"):
        explain(ws, "demo", estimator=default_estimator(n_concepts=4), label="nope")
    with pytest.raises(ValueError, match="either label"):
        explain(ws, "demo", label="colour", prompts=["a", "b"])
    with pytest.raises(ValueError, match=r"PACE: n_concepts must be an integer in \[1, 200\]; got 0"):
        explain(ws, "demo", estimator=PACE(0))
    with pytest.raises(ValueError, match=r"explain: stability_sample must be an integer >= 0; got -1"):
        explain(ws, "demo", stability_sample=-1)
    with pytest.raises(ValueError, match=r"estimator must be a core\.concepts\.PACE model; got dict"):
        explain(ws, "demo", estimator={"n_concepts": 3})
    with pytest.raises(ValueError, match=r"cannot encode images|image tower"):
        explain(ws, "minilm", estimator=PACE(3))


def test_cli_concepts_json(explained, tmp_path, capsys):
    from core.cli import main

    ws, _res, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:30]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    rc = main(["concepts", str(ws.path), "--model", "demo", "--k", "3", "--ids-from", str(f),
               "--prompts", "a red object", "a blue object", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["k"] == 3 and doc["n_images"] == 30 and doc["metrics"]["parsimony"] == 3
    assert isinstance(doc["metrics"]["parsimony"], int)
    assert {"faithfulness", "stability", "sparsity"} <= set(doc["metrics"])
    assert len(doc["concepts"]) == 3 and {"id", "names", "share", "prototypes"} <= set(doc["concepts"][0])
    assert doc["prediction"]["source"] == "prompts" and doc["unknown_words"] == []
    rc = main(["concepts", str(ws.path), "--model", "demo", "--label", "nope", "--json"])
    err = capsys.readouterr().err
    assert rc == 1 and "label column 'nope'" in err and len(err.strip().splitlines()) == 1
    assert main(["concepts", str(ws.path), "--model", "demo", "--k", "0", "--json"]) == 2


def test_prompt_templates_make_an_ensemble_per_prompt(explained, tmp_path, capsys):
    """``templates``: each prompt goes into every template; the predicted label stays the prompt. One
    template "a {} object" with the prompt "red" predicts exactly what the prompt "a red object" does."""
    from core.cli import main
    from core.concepts import explain
    from core.concepts.explain import check_templates
    from core.demo.world import COLOURS

    ws, _, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:40]
    kw = {"estimator": default_estimator(n_concepts=3), "ids": ids, "stability_sample": 0, "use_cache": False}
    words = list(COLOURS)
    templated = explain(ws, "demo", prompts=words, templates=["a {} object"], **kw)
    plain = explain(ws, "demo", prompts=[f"a {w} object" for w in words], **kw)
    assert set(templated.predicted) <= set(words)
    assert [f"a {w} object" for w in templated.predicted] == list(plain.predicted)
    truth = ws.items.drop_duplicates("id").set_index("id").loc[ids, "colour"].astype(str).tolist()
    assert np.mean(np.asarray(templated.predicted) == np.asarray(truth)) >= 0.7
    assert templated.params["templates"] == ["a {} object"] and plain.params["templates"] is None
    # an ensemble of two templates is another classifier (its own cache entry), still over the prompts
    ens = explain(ws, "demo", prompts=words, templates=["a {} object", "a {} shape"], **kw)
    assert set(ens.predicted) <= set(words) and ens.params["templates"] == ["a {} object", "a {} shape"]
    # bad templates
    assert check_templates(None, words) is None and check_templates([" ", ""], words) is None
    assert check_templates(["a {}", "a {}"], words) == ["a {}"]
    for bad, msg in ((["a photo"], "exactly one"), (["{} and {}"], "exactly one"), (["a {x} {}"], "exactly one")):
        with pytest.raises(ValueError, match=msg):
            check_templates(bad, words)
    with pytest.raises(ValueError, match="give prompts too"):
        check_templates(["a {}"], None)
    # the CLI: --template (repeatable) goes with --prompts
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids[:20]) + "\n")
    rc = main(["concepts", str(ws.path), "--model", "demo", "--k", "2", "--ids-from", str(f), "--prompts", "red",
               "blue", "--template", "a {} object", "--template", "something {}", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["params"]["templates"] == ["a {} object", "something {}"]
    assert set(doc["prediction"]["classes"]) <= {"red", "blue"}
    rc = main(["concepts", str(ws.path), "--model", "demo", "--template", "a {} object", "--json"])
    err = capsys.readouterr().err
    assert rc == 1 and "give prompts too" in err and len(err.strip().splitlines()) == 1


def test_cli_concepts_names_with_the_given_words_only(explained, tmp_path, capsys):
    from core.cli import main

    ws, _, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:30]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    args = ["concepts", str(ws.path), "--model", "demo", "--k", "3", "--ids-from", str(f), "--json"]
    assert main([*args, "--vocab", "red", "crimson", "circle", "--vocab-only"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert all(set(c["names"]) <= {"red", "crimson", "circle"} for c in doc["concepts"])
    assert doc["unknown_words"] == ["crimson"] and "never saw these words in training: crimson." in out.err
    assert main([*args, "--vocab-only"]) == 1
    assert "--vocab-only needs the words" in capsys.readouterr().err


def test_demo_concepts_are_named_after_what_they_cover(explained):
    """On the demo workspace with the default (world) vocabulary, PACE finds the objects' colours and the
    background in the patches, and each concept's first name is what its patches show."""
    from core.concepts import explain
    from core.concepts.groundtruth import patch_majority, world_pixel_colours
    from core.demo import COLOURS, load_world_masks

    ws, _, _ = explained
    res = explain(ws, "demo", estimator=default_estimator(n_concepts=9), stability_sample=0)
    # the default prediction: zero-shot over the vocabulary, centred, so a colour word rather than a
    # generic one ("object", "background") is what the model predicts for an image; θ explains it
    assert res.prediction_source == "vocabulary"
    assert np.isin(res.predicted, list(COLOURS)).mean() >= 0.8, collections.Counter(res.predicted.tolist())
    assert res.metrics["faithfulness"] >= 0.7
    masks = load_world_masks(ws)
    meta = ws.items.drop_duplicates("id").set_index("id")
    truth = []
    for i in res.ids:
        colours = [c for c in (meta.at[i, "colour"], meta.at[i, "colour2"]) if isinstance(c, str) and c]
        truth.append(patch_majority(world_pixel_colours(masks[i], colours), res.grid))
    truth = np.stack(truth)
    arg = res.phi.argmax(2)
    assert recovery(arg, truth)["nmi"] >= 0.6
    named = 0
    for con in res.concepts:
        covered = truth[arg == con.id]
        if not len(covered):
            continue
        values, counts = np.unique(covered, return_counts=True)
        top = values[counts.argmax()]
        if counts.max() / counts.sum() >= 0.7:  # a concept that is mostly one colour (or the background)
            assert con.names[0] == top, (con.names, top, counts.max() / counts.sum())
            named += 1
    assert named >= 6
    most = np.bincount(arg.ravel(), minlength=res.k).argmax()  # the concept most patches belong to
    assert res.concepts[most].names[0] == "background"


def test_without_attention_every_patch_counts_once(explained, tmp_path, capsys):
    """--no-attention: θ is the image's share of patches per concept (γ = α + Σ_j φ_j), not the
    attention-weighted share PACE uses by default."""
    from core.cli import main
    from core.concepts import explain

    ws, _, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:40]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    args = ["concepts", str(ws.path), "--model", "demo", "--k", "3", "--ids-from", str(f), "--json"]
    assert main([*args, "--no-attention"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"]["use_attention"] is False
    plain = explain(ws, "demo", estimator=default_estimator(n_concepts=3, use_attention=False), ids=ids,
                    stability_sample=0)
    weighted = explain(ws, "demo", estimator=default_estimator(n_concepts=3), ids=ids, stability_sample=0)
    J = plain.phi.shape[1]

    def counted(res, w):
        g = 0.1 + (res.phi * w[:, :, None]).sum(1)
        return g / g.sum(1, keepdims=True)

    assert np.allclose(plain.theta, counted(plain, np.ones(plain.phi.shape[:2])), atol=2e-3)
    assert np.allclose(weighted.theta, counted(weighted, weighted.attention * J), atol=2e-3)
    assert not np.allclose(weighted.theta, counted(weighted, np.ones(weighted.phi.shape[:2])), atol=2e-3)


def test_temperature_gives_sparser_explanations(explained, tmp_path, capsys):
    """--temperature > 1 tempers the patch likelihood: with many concepts each image gathers in fewer of
    them (PACE's sparsity goes up); the value is kept in the result's params and a bad one is refused."""
    from core.cli import main
    from core.concepts import explain

    ws, _, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:80]
    plain = explain(ws, "demo", estimator=default_estimator(n_concepts=24, n_init=1), ids=ids, stability_sample=0)
    tempered = explain(ws, "demo", estimator=default_estimator(n_concepts=24, n_init=1, temperature=10.0), ids=ids,
                       stability_sample=0)
    assert tempered.params["temperature"] == 10.0 and plain.params["temperature"] == 1.0
    used = lambda res: (res.theta >= 0.1 / res.k).sum(1).mean()  # noqa: E731 - concepts per image
    assert used(tempered) < used(plain) - 0.5
    assert tempered.metrics["sparsity"] > plain.metrics["sparsity"]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids[:30]) + "\n")
    args = ["concepts", str(ws.path), "--model", "demo", "--k", "3", "--ids-from", str(f), "--json"]
    assert main([*args, "--temperature", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["temperature"] == 4.0
    assert main([*args, "--temperature", "0"]) == 2
    assert "--temperature must be a finite number > 0" in capsys.readouterr().err


def test_attention_smoothing_spreads_weight_to_neighbours():
    from core.concepts.patches import smooth_attention

    A = np.zeros((2, 16), np.float32)
    A[0, 5] = 1.0                 # patch (1, 1) of a 4×4 grid
    A[1, 6] = 1.0                 # the same peak one patch to the right: what a small crop does
    S = smooth_attention(A, (4, 4), 1.0)
    assert S.shape == A.shape and np.allclose(S.sum(1), 1.0, atol=1e-6)
    grid = S[0].reshape(4, 4)
    assert grid.argmax() == 5 and grid[1, 0] == pytest.approx(grid[1, 2]) and grid[0, 1] == pytest.approx(grid[2, 1])
    assert 0 < grid[1, 1] < 1 and grid[3, 3] < grid[1, 2]
    # the shifted peak moves the smoothed weights less than the raw ones
    assert np.abs(S[0] - S[1]).sum() < 0.8 * np.abs(A[0] - A[1]).sum()
    assert np.array_equal(smooth_attention(A, (4, 4), 0), A), "0 keeps the raw attention (the paper's)"
    with pytest.raises(ValueError, match="does not match a 3x3 patch grid"):
        smooth_attention(A, (3, 3), 1.0)
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(ValueError, match="attention_smoothing must be a finite number >= 0"):
            smooth_attention(A, (4, 4), bad)


def test_explain_weights_patches_by_the_smoothed_attention(explained, tmp_path, capsys):
    from core.cli import main
    from core.concepts import explain
    from core.concepts.patches import smooth_attention, workspace_patches

    ws, _, _ = explained
    ids = ws.items.loc[ws.items["modality"] == "image", "id"].tolist()[:30]
    raw = workspace_patches(ws, "demo", ids)
    for sigma in (0.0, 1.5):
        res = explain(ws, "demo", estimator=default_estimator(n_concepts=3, n_init=1), ids=ids, stability_sample=0,
                      attention_smoothing=sigma)
        assert res.params["attention_smoothing"] == sigma
        np.testing.assert_allclose(res.attention, smooth_attention(raw.attention, raw.grid, sigma), atol=1e-6)
    assert not np.allclose(smooth_attention(raw.attention, raw.grid, 1.5), raw.attention, atol=1e-3)
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(ids) + "\n")
    args = ["concepts", str(ws.path), "--model", "demo", "--k", "3", "--ids-from", str(f), "--json"]
    assert main([*args, "--attention-smoothing", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["attention_smoothing"] == 0.0
    assert main([*args, "--attention-smoothing", "-1"]) == 2
    assert "--attention-smoothing must be a finite number >= 0" in capsys.readouterr().err


def test_top_images_and_used_concepts_rank_by_share():
    from core.concepts.explain import ConceptsResult

    theta = np.array([[0.70, 0.29, 0.01],
                      [0.10, 0.10, 0.80],
                      [0.70, 0.20, 0.10],
                      [0.34, 0.33, 0.33]], np.float32)
    res = ConceptsResult(model="m", k=3, ids=np.array(["a", "b", "c", "d"]), concepts=[], theta=theta,
                         phi=np.zeros((4, 4, 3), np.float32), attention=np.zeros((4, 4), np.float32),
                         predicted=np.array(["x"] * 4), grid=(2, 2), image_size=(8, 8), metrics={}, params={},
                         prediction_source="model")
    assert res.top_images(0, n=3).tolist() == [0, 2, 3]  # ties keep row order
    assert res.top_images(2, n=10).tolist() == [1, 3, 2, 0]
    # concept 2 of image 0 has θ 0.01 < 0.1 / 3: not used
    assert res.used_concepts(0, n=6) == [0, 1]
    assert res.used_concepts(3, n=2) == [0, 1]  # at most n
    assert res.used_concepts(1, n=6, min_share=0.5) == [2]
