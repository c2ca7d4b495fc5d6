"""Derived artifacts (core.artifacts): keys, get-or-compute, atomic writes, and purging what deleted items
left in every kind of derived data, in a process that never imported the modules owning them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import artifacts, storage
from core.artifacts import Codec, artifact_key, codec_named, purge, register_codec, stored_artifacts
from core.workspace import Workspace

from helpers import make_png

ROOT = Path(__file__).resolve().parents[2]


# ---- keys -------------------------------------------------------------------------------------------
def key_inputs() -> dict:
    return {"n": 3, "x": 0.5, "flag": True, "none": None, "name": "umap", "ids": ["b", "a"],
            "nested": {"k": [1, 2], "j": "v"}, "arr": np.arange(6, dtype=np.float32).reshape(2, 3), "t": (1, "a"),
            "obj": np.array(["i1", "i2"], dtype=object)}


def test_key_is_stable_across_processes_and_orders():
    here = artifact_key(**key_inputs())
    code = ("import sys; sys.path[:0] = ['tests', 'tests/unit']; from test_artifacts import key_inputs; "
            "from core.artifacts import artifact_key; print(artifact_key(**key_inputs()))")
    there = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here and len(here) == 32 and int(here, 16) >= 0
    assert artifact_key(a=1, b={"x": 1, "y": 2}) == artifact_key(b={"y": 2, "x": 1}, a=1), "key order is not content"
    assert artifact_key(t=(1, "a")) == artifact_key(t=[1, "a"]), "a tuple is its list"
    assert artifact_key(v=np.int64(3), f=np.float32(0.5)) == artifact_key(v=3, f=0.5), "numpy scalars are numbers"


def test_key_changes_with_every_input():
    base = {"n": 3, "x": 0.5, "flag": True, "none": None, "name": "umap", "ids": ["a", "b"], "nested": {"k": [1, 2]},
            "arr": np.arange(6, dtype=np.float32).reshape(2, 3)}
    key = artifact_key(**base)
    arr = base["arr"]
    changed = {"n": 4, "x": 0.25, "flag": False, "none": 0, "name": "pca", "ids": ["b", "a"], "nested": {"k": [1, 3]}}
    variants = [{**base, k: v} for k, v in changed.items()]
    one = arr.copy()
    one[1, 2] += 1e-3  # one element of the array
    variants += [{**base, "arr": one}, {**base, "arr": arr.astype(np.float64)}, {**base, "arr": arr.reshape(3, 2)},
                 {**base, "arr": arr.T}]
    variants += [{**base, "n": 3.0}, {**base, "flag": 1}, {**base, "name": "umap "},
                 {k if k != "x" else "y": v for k, v in base.items()},  # an input's name
                 {**base, "extra": None}]
    keys = [artifact_key(**v) for v in variants]
    assert key not in keys and len(set(keys)) == len(keys)
    ids = np.array(["a", "b"], dtype=object)
    assert artifact_key(ids=ids) == artifact_key(ids=ids.copy()) != artifact_key(ids=np.array(["a", "c"], dtype=object))
    with pytest.raises(TypeError, match=r"'s'.*set"):
        artifact_key(s={1, 2})


# ---- get-or-compute and atomic writes -------------------------------------------------------------------
def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save_json(f, value) -> None:
    f.write(json.dumps(value).encode())


JSON = register_codec("test-json", Codec(".json", _save_json, _load_json, ids=lambda p: _load_json(p)["ids"]))


def _pair_save(f, value) -> None:  # a commit file with a companion, as the concept results are stored
    f.companion(f.path.stem + ".npz", lambda g: np.savez(g, ids=np.asarray(value["ids"])))
    f.write(json.dumps(value).encode())


PAIR = register_codec("test-pair", Codec(".json", _pair_save, _load_json,
                                         ids=lambda p: artifacts.npz_array(p.with_suffix(".npz"))))
KEYED = register_codec("test-keyed", Codec(".npz", lambda f, v: np.savez(f, **v), lambda p: artifacts.npz_keys(p),
                                           ids=artifacts.npz_keys, prune=artifacts.prune_npz_keys))
NO_IDS = register_codec("test-no-ids", Codec(".json", _save_json, _load_json))


def test_artifact_is_computed_once_then_reused(tmp_path):
    ws = Workspace(tmp_path / "w")
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls), "ids": ["a"]}

    key = artifact_key(what="test")
    path = ws.artifact_path("results", "demo", key, JSON)
    assert path == ws.derived_dir("results", "demo") / f"{key}.json" and not path.exists()
    assert ws.artifact("results", "demo", key, compute, codec=JSON) == {"n": 1, "ids": ["a"]}
    assert Workspace(tmp_path / "w").artifact("results", "demo", key, compute, codec=JSON)["n"] == 1
    assert len(calls) == 1, "computed once, then read back (by another Workspace object too)"
    assert ws.artifact("results", "demo", key, compute, codec=JSON, reuse=False)["n"] == 2
    assert _load_json(path)["n"] == 2
    path.write_bytes(b"{half a fi")  # unreadable: load says None, computed again
    assert ws.artifact("results", "demo", key, compute, codec=JSON)["n"] == 3
    side = _load_json(path.with_name(path.name + artifacts.SIDECAR))
    assert side == {"format": 1, "codec": "test-json", "files": [path.name]}
    [art] = stored_artifacts(ws)
    assert (art.path, art.codec, art.files) == (path, "test-json", (path,))
    unregistered = Codec(".json", _save_json, _load_json)
    with pytest.raises(ValueError, match="not registered"):
        ws.artifact("results", "demo", key, compute, codec=unregistered)
    for bad in ["", "../x", "a.b", "a/b"]:
        with pytest.raises(ValueError, match="artifact key"):
            ws.artifact("results", "demo", bad, compute, codec=JSON)


def test_a_write_killed_before_its_commit_leaves_the_old_artifact_and_no_leftovers(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "w")
    key = artifact_key(what="pair")
    path = ws.artifact_path("results", None, key, PAIR)
    ws.artifact("results", None, key, lambda: {"v": "old", "ids": ["a"]}, codec=PAIR)
    fresh = ws.artifact_path("results", None, artifact_key(what="fresh"), PAIR)
    real = os.replace

    def crash(src, dst):  # every file written, the process "dies" before the commit file's rename
        if Path(dst) in (path, fresh):
            raise KeyboardInterrupt("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ws.artifact("results", None, key, lambda: {"v": "new", "ids": ["a"]}, codec=PAIR, reuse=False)
    with pytest.raises(KeyboardInterrupt):
        ws.artifact("results", None, artifact_key(what="fresh"), lambda: {"v": "x", "ids": ["b"]}, codec=PAIR)
    monkeypatch.undo()
    assert PAIR.load(path) == {"v": "old", "ids": ["a"]}, "the old artifact, whole"
    assert not fresh.exists(), "a first write killed before its commit leaves no artifact"
    (path.parent / f".{path.name}.123.tmp").write_bytes(b"left by a killed write")
    ws.artifact("results", None, key, lambda: {"v": "new", "ids": ["a"]}, codec=PAIR, reuse=False)
    assert PAIR.load(path)["v"] == "new"
    assert not list(path.parent.glob(f".{key}*.tmp")), "temp files of killed writes are removed under the lock"
    with ws.writing():
        report = purge(ws, set())  # nothing deleted: only the uncommitted artifact's files go
    assert {Path(p).name for p in report["removed"]} == {f"{fresh.stem}.npz", f"{fresh.name}{artifacts.SIDECAR}"}
    assert PAIR.load(path)["v"] == "new" and not report["pruned"]


def test_purge_removes_or_prunes_exactly_the_artifacts_holding_gone_ids(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "w")
    put = ws.artifact
    held = put("k1", "m", "held", lambda: {"ids": ["x", "y"]}, codec=PAIR)
    put("k1", "m", "other", lambda: {"ids": ["z"]}, codec=PAIR)
    put("k2", None, "keyed", lambda: {"x": np.ones(2), "w": np.zeros(2)}, codec=KEYED)
    put("k2", None, "free", lambda: {"any": 1}, codec=NO_IDS)
    put("k3", "m", "alone", lambda: {"ids": ["x"]}, codec=JSON)
    legacy = ws.derived_dir("k1", "m") / "legacy.npz"
    np.savez(legacy, ids=np.array(["q"]))
    broken = ws.derived_dir("k1", "m") / f"broken.json{artifacts.SIDECAR}"
    broken.write_text("{half a side")
    removed: list[str] = []
    real = artifacts.remove_file
    monkeypatch.setattr(artifacts, "remove_file", lambda p: removed.append(Path(p).name) or real(p))
    with ws.writing():
        report = purge(ws, {"x"})
    folder = ws.derived_dir("k1", "m")
    assert removed[:3] == ["held.json", "held.npz", "held.json.artifact"], "the commit file goes first"
    assert held == {"ids": ["x", "y"]} and not (folder / "held.json").exists() and not (folder / "held.npz").exists()
    assert _load_json(folder / "other.json") == {"ids": ["z"]}, "an artifact without a gone id stays"
    assert artifacts.npz_keys(ws.derived_dir("k2") / "keyed.npz") == ["w"], "a keyed artifact is pruned in place"
    assert report["pruned"] == ["derived/k2/keyed.npz"]
    assert (ws.derived_dir("k2") / "free.json").exists(), "an artifact that depends on no item stays"
    assert not legacy.exists(), "a file written before artifacts is removed"
    assert not broken.exists(), "so is an unreadable sidecar"
    assert not ws.derived_dir("k3").exists(), "folders left empty go"
    assert sorted(a.path.name for a in stored_artifacts(ws)) == ["free.json", "keyed.npz", "other.json"]


def test_an_artifact_of_a_codec_no_process_knows_is_removed_whole(tmp_path):
    ws = Workspace(tmp_path / "w")
    ws.artifact("k", None, "a", lambda: {"ids": []}, codec=NO_IDS)
    path = ws.artifact_path("k", None, "a", NO_IDS)
    sidecar = path.with_name(path.name + artifacts.SIDECAR)
    sidecar.write_text(json.dumps({**_load_json(sidecar), "codec": "nobody-registered-this"}))
    assert codec_named("nobody-registered-this") is None
    with ws.writing():
        purge(ws, {"nothing"})
    assert not path.exists() and not sidecar.exists()


# ---- every kind of derived data, deleted from a fresh process ---------------------------------------------
OWNERS = ["core.index", "core.labels", "core.mapvectors", "core.maps", "core.projection", "core.concepts.patches",
          "core.concepts.explain", "core.demo.workspace"]
DELETE = """
import json, sys
from core.workspace import Workspace
before = [m for m in {owners!r} if m in sys.modules]
Workspace({path!r}, create=False).delete_items([{gone!r}])
print(json.dumps({{"imported_before": before}}))
"""


def _holders(ws: Workspace, gone: str) -> list[str]:
    """Files under derived/ that name ``gone``: an npz array or key, a JSON text, an npy of ids."""
    out = []
    for p in sorted(ws.derived_root.rglob("*")):
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                hit = gone in z.files or any(z[k].dtype.kind == "U" and gone in z[k] for k in z.files)
        elif p.suffix == ".npy":
            hit = gone in np.load(p, allow_pickle=False).astype(str)
        else:
            hit = p.is_file() and gone in p.read_text(errors="replace")
        if hit:
            out.append(p.relative_to(ws.path).as_posix())
    return out


@pytest.fixture
def small_ws(tmp_path, tiny_clip_id):
    rng = np.random.default_rng(3)
    for i in range(4):
        make_png(tmp_path / "imgs" / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)), size=(24 + i, 20))
    (tmp_path / "captions.csv").write_text("filepath,title\n" + "".join(
        f"imgs/{i}.png,a {c} thing\n" for i, c in enumerate(["red", "blue", "green", "brown"])))
    ws = Workspace(tmp_path / "w")
    rep = ws.ingest([tmp_path / "imgs", tmp_path / "captions.csv"], texts=["a loose note", "another note"])
    assert not rep.errors, rep.errors
    ws.embed(tiny_clip_id)
    return ws


def test_deleting_an_item_in_a_fresh_process_purges_every_kind_of_derived_data(small_ws, tiny_clip_id):
    from core.concepts import default_estimator, explain, workspace_patches
    from core.demo.workspace import MASKS_CODEC, MASKS_KEY, load_world_masks
    from core.index import index_dir, workspace_index
    from core.labels import map_labels
    from core.projection import compute_map

    ws, model = small_ws, tiny_clip_id
    items = ws.items
    images = sorted(items[items.modality == "image"]["id"])
    texts = sorted(items[items.modality == "text"]["id"])
    gone = images[0]
    workspace_index(ws, model)
    words = {"words": ["red", "blue", "thing", "note"], "only_words": True}
    map_labels(ws, model, compute_map(ws, model, method="pca"), level="coarse", **words)  # holds every item
    text_map = compute_map(ws, model, method="pca", modalities=["text"])
    kept_labels = map_labels(ws, model, text_map, level="coarse", **words)  # texts only
    kw = {"estimator": default_estimator(n_concepts=2), "prompts": ["a red thing", "a blue thing"],
          "vocabulary": ["red", "blue", "thing"], "stability_sample": 0}
    hit, kept = explain(ws, model, ids=images[:2], **kw), explain(ws, model, ids=images[2:], **kw)
    assert hit.path.is_file() and kept.path.is_file()
    workspace_patches(ws, model, images[:2])  # explain cached these two sets already; asked again, read back
    ws.artifact("masks", None, MASKS_KEY, lambda: {i: np.full((2, 2), n) for n, i in enumerate(images)},
                codec=MASKS_CODEC)
    legacy = ws.derived_root / "concepts" / "old-result.json"  # written before artifacts: removed on a purge
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text("{}")
    kinds = {a.codec for a in stored_artifacts(ws)}
    assert {"neighbour-index", "map-labels", "patches", "concepts", "world-masks"} <= kinds
    assert _holders(ws, gone)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", DELETE.format(owners=OWNERS, path=str(ws.path), gone=gone)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"imported_before": []}

    ws = Workspace(ws.path, create=False)
    assert _holders(ws, gone) == [], "no derived file names the deleted item"
    assert not index_dir(ws, model).exists(), "the index held it"
    assert not hit.path.exists() and not hit.path.with_suffix(".npz").exists()
    assert kept.path.is_file() and explain(ws, model, ids=images[2:], **kw).cached, "a result without it stays"
    patches = [sorted(np.load(p)["ids"]) for p in ws.derived_dir("patches", model).glob("*.npz")]
    assert patches == [images[2:]], "only the patches of the other images stay"
    masks = load_world_masks(ws)
    assert sorted(masks) == images[1:] and masks[images[1]][0, 0] == 1, "the masks are pruned in place"
    labels = [a for a in stored_artifacts(ws) if a.codec == "map-labels"]
    assert len(labels) == 1 and set(codec_named("map-labels").ids(labels[0].path)) == set(texts)
    assert map_labels(ws, model, text_map, level="coarse", **words) == kept_labels
    assert not legacy.exists()
    assert pd.Index(workspace_index(ws, model).ids_).isin(ws.items["id"]).all()
