"""core.quality.fit_verdict: does a model fit a workspace's data? The floors are real cases: `demo` on its own
world and `minilm` on news sentences fit; `demo` on real photographs (scikit-image's samples with honest
captions) is near chance; a tiny workspace gives "unknown". The statistics behind the verdict are checked
against known answers."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from real_photos import PHOTOS, VARIANTS, create_real_photos_workspace

import core
from core import quality as q
from core.cli import main
from core.ingest import Candidate


def json_safe(v: dict) -> dict:
    """The verdict round-trips through strict JSON (no NaN, no numpy scalars)."""
    return json.loads(json.dumps(v, allow_nan=False))


@pytest.fixture(scope="module")
def photos_ws(tmp_path_factory):
    """scikit-image's photographs with their captions, embedded with `demo` (a shapes-world model)."""
    return create_real_photos_workspace(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def news_ws(tmp_path_factory):
    """200 sentences of gensim's Lee news corpus, embedded with `minilm` and with `demo`."""
    from gensim.test.utils import datapath

    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        docs = f.read().splitlines()
    sents = [s.strip() for d in docs for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 6]
    sents = list(dict.fromkeys(sents))[:200]
    ws = core.Workspace(tmp_path_factory.mktemp("news") / "news")
    ws.add_candidates([Candidate(modality="text", source=f"lee sentence {i}", text=s) for i, s in enumerate(sents)])
    ws.embed("minilm")
    ws.embed("demo")
    return ws


# ---- the floors --------------------------------------------------------------------------------
def test_demo_fits_its_own_world(demo_ws_template):
    v = json_safe(q.fit_verdict(demo_ws_template, "demo"))
    ev = v["evidence"]
    assert v["verdict"] == "fits", v["reason"]
    assert ev["method"] == "pairs" and ev["n_pairs"] == 400 and not ev["sampled"]
    for side in ("image_to_text", "text_to_image"):
        d = ev[side]
        assert d["lower"] > 10 * d["chance"]  # recall@1 far above chance even at its lower bound
        assert d["odds_ratio_lower"] > q.FIT_SMALL_ODDS and d["log_rank_score"] > q.FIT_LOG_RANK
    assert ev["pair_cosine_significant"] and ev["pair_cosine_effect_lower"] > 1
    assert v["reason"].startswith("demo ")


def test_demo_is_near_chance_on_real_photographs(photos_ws):
    v = json_safe(q.fit_verdict(photos_ws, "demo"))
    ev = v["evidence"]
    assert ev["n_pairs"] == len(PHOTOS) * VARIANTS >= 30 and ev["image_to_text"]["candidates"] == len(PHOTOS)
    assert v["verdict"] == "near chance", ev
    assert ev["image_to_text"]["chance"] == pytest.approx(1 / len(PHOTOS))
    # each caption has VARIANTS images: a random ranking finds one of them first among the other images
    assert ev["text_to_image"]["chance"] == pytest.approx(1 / (len(PHOTOS) * VARIANTS - VARIANTS + 1))
    assert not ev["pair_cosine_significant"]  # the Map shows no green arrow for it
    assert all(ev[s]["lower"] < ev[s]["chance"] * q.FIT_SMALL_ODDS for s in ("image_to_text", "text_to_image"))
    assert "demo" in v["reason"] and "trained on the procedural shapes world" in v["reason"]
    assert "chance" in v["reason"] and "open_clip" in v["reason"]


def test_minilm_fits_news_sentences_and_demo_does_not(news_ws):
    v = json_safe(q.fit_verdict(news_ws, "minilm"))
    assert v["verdict"] == "fits", v["reason"]
    ev = v["evidence"]
    assert ev["method"] == "items" and ev["n_items"] == 200
    assert ev["known_word_share"] is None  # a hub tokenizer reads any word: no evidence either way
    assert ev["structure"]["text"]["effect_lower"] > 1
    d = json_safe(q.fit_verdict(news_ws, "demo"))
    assert d["verdict"] == "near chance" and d["evidence"]["known_word_share"] < q.FIT_KNOWN_MOST
    assert "never saw" in d["reason"] and set(d["evidence"]["unknown_words"]) >= {"people"}


def test_zero_shot_margin_tells_shapes_from_photographs(demo_ws_template, photos_ws):
    """Without the pairs, demo's best word stands out on its world's images, and no more than on noise on
    the photographs (whose captions it mostly never saw either)."""
    own = q.fit_verdict(demo_ws_template, "demo", pairs=False)
    assert own["verdict"] == "fits", own["reason"]
    assert own["evidence"]["zero_shot"]["effect_lower"] > q.FIT_SMALL_D
    assert own["evidence"]["known_word_share"] == 1.0
    far = json_safe(q.fit_verdict(photos_ws, "demo", pairs=False))
    assert far["verdict"] in ("weak", "near chance")
    assert far["evidence"]["zero_shot"]["effect_lower"] < q.FIT_SMALL_D
    assert far["evidence"]["known_word_share"] < q.FIT_KNOWN_NEARLY_ALL


def test_too_little_data_is_unknown(tmp_path):
    ws = core.Workspace(tmp_path / "tiny")
    sizes = ["small", "big", "little", "large", "tiny", "huge", "medium", "short", "tall", "wide"]
    ws.add_candidates([Candidate(modality="text", source=f"t{i}", text=f"a {w} circle") for i, w in enumerate(sizes)])
    v = q.fit_verdict(ws, "demo")
    assert v["verdict"] == "unknown" and "no vectors for demo" in v["reason"]
    ws.embed("demo")
    v = json_safe(q.fit_verdict(ws, "demo"))
    assert v["verdict"] == "unknown" and v["evidence"]["n_items"] == 10
    assert "Too few items (10)" in v["reason"] and str(q.FIT_MIN_ITEMS) in v["reason"]


def test_a_sample_of_pairs_gives_the_same_verdict(demo_ws_template):
    v = q.fit_verdict(demo_ws_template, "demo", max_items=120, seed=3)
    assert v["verdict"] == "fits" and v["evidence"]["n_pairs"] == 120 and v["evidence"]["sampled"]
    assert v["evidence"]["n_pairs_total"] == 400


def test_precomputed_vectors_are_judged_by_structure_only(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(120, 32)).astype(np.float32)
    centres = rng.normal(size=(4, 32))
    clustered = (centres[np.arange(120) % 4] + 0.2 * rng.normal(size=(120, 32))).astype(np.float32)
    ws = core.Workspace(tmp_path / "rows")
    ws.add_candidates([Candidate(modality="row", source=f"row {i}", meta={"i": i},
                                 vectors={"precomputed:noise": noise[i], "precomputed:clusters": clustered[i]})
                       for i in range(120)])
    v = json_safe(q.fit_verdict(ws, "precomputed:noise"))
    assert v["verdict"] == "near chance" and v["evidence"]["structure"]["row"]["effect_lower"] < q.FIT_SMALL_D
    assert "no neighbour structure beyond noise" in v["reason"]
    v = json_safe(q.fit_verdict(ws, "precomputed:clusters"))
    assert v["verdict"] == "unknown" and v["evidence"]["structure"]["row"]["effect_lower"] > 1
    assert "your own vectors" in v["reason"]


# ---- the statistics ----------------------------------------------------------------------------
def test_wilson_interval_known_values():
    lo, hi = q.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # z = 1.96
    lo, hi = q.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert q.wilson_interval(0, 0) == (0.0, 1.0)


def test_odds_ratio_and_small_effect():
    assert q.odds_ratio(0.5, 0.5) == pytest.approx(1.0)
    assert q.odds_ratio(0.2, 0.1) == pytest.approx((0.25) / (1 / 9))
    assert q.odds_ratio(1.0, 0.1) == float("inf")
    assert pytest.approx(1.437, abs=1e-3) == q.FIT_SMALL_ODDS  # Cohen's d = 0.2 as an odds ratio


def test_log_rank_score_is_zero_at_chance_and_one_when_perfect():
    rng = np.random.default_rng(0)
    m = np.full(20_000, 50)
    chance = q.log_rank_score(rng.integers(1, 51, size=len(m)), m)
    assert abs(chance["value"]) < 0.02 and chance["lower"] < 0 < chance["upper"]
    assert q.log_rank_score(np.ones(100), np.full(100, 50))["value"] == pytest.approx(1.0)
    # a geometric-mean rank of sqrt(chance's) scores 0.5
    e0 = np.mean([np.log(r) for r in range(1, 51)])
    assert q.log_rank_score(np.full(10, np.exp(e0 / 2)), np.full(10, 50))["value"] == pytest.approx(0.5)


def test_neighbour_structure_of_noise_and_of_clusters():
    rng = np.random.default_rng(1)
    noise = q.neighbour_structure(rng.normal(size=(500, 64)))
    assert noise["effect_lower"] < q.FIT_SMALL_D < noise["effect_lower"] + 1
    centres = rng.normal(size=(5, 64))
    X = centres[rng.integers(0, 5, 500)] + 0.5 * rng.normal(size=(500, 64))
    assert q.neighbour_structure(X)["effect_lower"] > 2
    shuffled = q.shuffle_dimensions(X, seed=0)
    assert np.array_equal(np.sort(shuffled, axis=0), np.sort(X, axis=0))  # every column keeps its values
    with pytest.raises(ValueError, match="at least 3"):
        q.neighbour_structure(X[:2])


# ---- the CLI -----------------------------------------------------------------------------------
def test_cli_quality_json_has_the_fit(capsys, photos_ws, tmp_path):
    ws_path = tmp_path / "photos"
    shutil.copytree(photos_ws.path, ws_path)
    code = main(["quality", str(ws_path), "--model", "demo", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    fit = json.loads(out)["fit"]
    assert fit["verdict"] == "near chance" and fit["evidence"]["n_pairs"] == len(PHOTOS) * VARIANTS
    assert fit["reason"] == q.fit_verdict(photos_ws, "demo")["reason"]
