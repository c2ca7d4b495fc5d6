"""The bundled `demo` model, its held-out quality floors, the demo workspace, and the training command."""
from __future__ import annotations

import json

import numpy as np
import pytest

import core
from core.cli import main
from core.demo import evaluate
from core.encoders import parse_model_id

from helpers import TINY_CFG, make_png


@pytest.fixture(scope="module")
def demo():
    return core.load_encoder("demo")


def test_demo_is_bundled_and_loads_through_the_local_openclip_path(demo):
    family, target = parse_model_id("demo")
    assert family == "openclip-local"
    info = next(m for m in core.list_models(include_hub=False) if m.id == "demo")
    assert info.available
    assert demo.dim == 128 and set(demo.modalities) == {"image", "text"}
    from pathlib import Path

    ckpt = Path(target) / "open_clip_model.safetensors"
    assert ckpt.stat().st_size <= 25 * 2**20


def test_demo_held_out_quality_floors(demo):
    """Looser floors of the issue's targets on small fresh held-out sets, so a regression fails CI."""
    m = evaluate.evaluate_all(demo.encode_images, demo.encode_texts, scale=0.2, seed=77)
    assert m["zero_shot_colour"] >= 0.95, m
    assert m["zero_shot_shape"] >= 0.92, m
    assert m["t2i_recall@10"] >= 0.85, m
    assert m["analogy_top5"] >= 0.85, m
    assert m["analogy_top5"] > m["analogy_baseline_top5"] + 0.3, "the arithmetic, not the image alone, does it"


def test_demo_workspace_is_paired_embedded_and_idempotent(tmp_path):
    from core.demo import create_demo_workspace, load_world_masks

    stages = []
    ws = create_demo_workspace(tmp_path / "demo", n=30, progress=lambda s, d, t: stages.append(s))
    items = ws.items
    imgs = items[items.modality == "image"]
    txts = items[items.modality == "text"]
    # 30 images; captions are content-addressed, so two images may share one caption item
    assert len(imgs) == 30 and 20 <= len(txts) <= 30
    assert imgs["pair"].isin(txts["id"]).all() and txts["pair"].isin(imgs["id"]).all()
    assert {"shape", "colour", "size", "position", "background"} <= set(items.columns)
    assert ws.models()["demo"]["n"] == len(items) and {"generate", "store", "embed"} <= set(stages)
    masks = load_world_masks(ws)
    assert set(masks) == set(imgs["id"]) and next(iter(masks.values())).shape == (64, 64)
    # captions are retrievable from their own images in the shared space
    X, ids = ws.vectors("demo")
    pos = {i: k for k, i in enumerate(ids)}
    V = X[[pos[i] for i in imgs["id"]]]
    T = X[[pos[i] for i in imgs["pair"]]]  # each image's own caption
    top5 = np.argsort(-(V @ T.T), axis=1)[:, :5]
    assert np.mean([i in top5[i] for i in range(len(V))]) >= 0.5
    again = create_demo_workspace(tmp_path / "demo", n=30)
    assert len(again.items) == len(items)


def test_demo_vectors_encoded_during_the_store_equal_what_embed_gives(tmp_path, monkeypatch):
    """The build encodes the generated images and captions in a background thread while it stores them;
    its vectors are the ones Workspace.embed computes from the stored items, and embed has nothing left."""
    from core.demo import create_demo_workspace
    from core.workspace import Workspace

    reports = []
    embed = Workspace.embed
    monkeypatch.setattr(Workspace, "embed", lambda self, *a, **k: reports.append(embed(self, *a, **k)) or reports[-1])
    stages = []
    fast = create_demo_workspace(tmp_path / "fast", n=24, progress=lambda s, d, t: stages.append((s, d, t)))
    assert [r.embedded for r in reports] == [0] and reports[0].cached == len(fast.items)
    assert ("embed", len(fast.items), len(fast.items)) in stages
    slow = create_demo_workspace(tmp_path / "slow", n=24, model=None)
    slow.embed("demo")
    X, ids = fast.vectors("demo")
    Y, ids_slow = slow.vectors("demo", ids=list(ids))
    assert list(ids_slow) == list(ids) and sorted(ids) == sorted(fast.items["id"])
    np.testing.assert_allclose(X, Y, atol=1e-5)


def test_demo_cli(capsys, tmp_path):
    assert main(["demo", str(tmp_path / "d"), "--n", "10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["by_modality"]["image"] == 10 and doc["path"].endswith("d")
    assert doc["models"]["demo"]["n"] == doc["items"]


def test_train_checkpoints_resumes_and_ships_a_loadable_model(capsys, tmp_path):
    cfg = tmp_path / "tiny.json"
    tiny = json.loads(json.dumps(TINY_CFG))
    tiny["model_cfg"]["vision_cfg"]["image_size"] = 64
    tiny["preprocess_cfg"]["size"] = 64
    cfg.write_text(json.dumps(tiny))
    out = tmp_path / "run"
    common = ["--out", str(out), "--model-config", str(cfg), "--n-train", "64", "--batch-size", "16",
              "--eval-every", "1000", "--ckpt-every", "2", "--workers", "1", "--warmup", "1", "--json"]
    common += ["--dense-steps", "0"]
    assert main(["train", "--steps", "3", "--pattern-steps", "0", *common]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 3 and first["resumed_from"] == 0
    assert main(["train", "--steps", "5", "--pattern-steps", "0", *common]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["steps"] == 5 and second["resumed_from"] == 3, "resumes from the checkpoint"
    assert {"checkpoint", "steps", "seconds", "metrics"} <= set(second)
    enc = core.load_encoder(f"openclip-local:{out}")
    assert enc.encode_texts(["a red circle"]).shape == (1, 32)
    # a different recipe in the same folder is refused rather than silently mixed
    assert main(["train", "--steps", "5", "--pattern-steps", "0", "--lr", "0.5", *common]) == 1
    # the pattern phase continues a finished first phase (its settings do not change that phase) ...
    assert main(["train", "--steps", "5", "--pattern-steps", "3", *common]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["steps"] == 8 and third["resumed_from"] == 5
    # ... but once a run is inside the pattern phase, other pattern settings are refused
    assert main(["train", "--steps", "5", "--pattern-steps", "3", "--pattern-lr", "0.5", *common]) == 1
    # the dense phase continues a finished pattern phase in the same way
    dense = [a for a in common if a not in ("--dense-steps", "0")] + ["--steps", "5", "--pattern-steps", "3"]
    assert main(["train", "--dense-steps", "2", *dense]) == 0
    fourth = json.loads(capsys.readouterr().out)
    assert fourth["steps"] == 10 and fourth["resumed_from"] == 8
    assert main(["train", "--dense-steps", "2", "--dense-lr", "0.5", *dense]) == 1
    words = (out / "vocabulary.txt").read_text().split()
    assert {"red", "triangle", "background"} <= set(words), "a world model ships the words it was trained on"
    from core.demo import world_words
    from core.vocabulary import known_words, unknown_words

    assert known_words(f"openclip-local:{out}") == world_words(), "... and every word of its captions"
    assert unknown_words(f"openclip-local:{out}", "a crimson circle") == ["crimson"]


def test_pattern_phase_paints_single_objects_and_hides_their_colour():
    from core.demo import COLOURS, SHAPES
    from core.train import WorldPairs

    data = WorldPairs(200, seed=3, image_size=64, p_two=0.35, workers=1)
    idx = np.arange(200)
    imgs, _caps = data.batch(idx)
    assert not data._painted and imgs is not None
    data.pattern_p = 0.5
    imgs2, caps2 = data.batch(idx)
    painted = sorted(data._painted)
    assert 50 < len(painted) < 120 and all(len(data.objects[i]) == 1 for i in painted)
    assert np.array_equal(data.images[idx], imgs), "the stored images are never modified"
    for i in painted:
        assert not (set(caps2[i].split()) & set(COLOURS)), caps2[i]
        assert not np.array_equal(imgs2[i], imgs[i])
    colour = data.attributes(idx, "colour", list(COLOURS))
    shape = data.attributes(idx, "shape", list(SHAPES))
    assert (colour[painted] == -1).all() and (shape[painted] >= 0).all()


def test_dense_phase_patch_labels_follow_the_masks():
    from core.demo import COLOURS
    from core.train import WorldPairs

    names = list(COLOURS)
    data = WorldPairs(60, seed=4, image_size=64, p_two=0.35, workers=1)
    idx = np.arange(60)
    data.pattern_p = 0.5
    data.batch(idx)
    lab = data.patch_labels(idx, (8, 8), names)
    assert lab.shape == (60, 64)
    for j in range(60):
        cells = data.masks[j].reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64)
        full_bg = (cells == 0).all(1)
        assert (lab[j][full_bg] == len(names)).all(), "patches with no object are background"
        for k, obj in enumerate(data.objects[j], start=1):
            inside = (cells == k).all(1)
            want = -1 if j in data._painted else names.index(obj.colour)
            assert (lab[j][inside] == want).all(), "patches inside an object carry its colour (none if painted)"
    assert (lab == -1).any() and (lab == len(names)).mean() > 0.5


def test_train_from_workspace_pairs(capsys, tmp_path):
    from core import Workspace

    imgs = [make_png(tmp_path / "p" / f"{i}.png", (i * 40, 100, 50)) for i in range(4)]
    (tmp_path / "p" / "caps.csv").write_text("filepath,title\n" + "".join(f"{p.name},colour {i}\n"
                                                                         for i, p in enumerate(imgs)))
    Workspace(tmp_path / "ws").ingest([tmp_path / "p"])
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_CFG))
    assert main(["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "ws"), "--model-config", str(cfg),
                 "--steps", "2", "--batch-size", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    from core.vocabulary import known_words

    assert known_words(f"openclip-local:{tmp_path / 'r'}") == {"colour"}, "the words of the captions it saw"
