"""Deleting items and workspaces: rows, vectors of every model, stored files, pairs, derived caches,
crash recovery, tombstones."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import core
import core.cli
from core.index import NeighborIndex, index_dir, workspace_index
from core.projection import compute_map
from core.vectorstore import VectorStore
from core.workspace import DELETE_JOURNAL, Workspace, delete_workspace, list_workspaces

from helpers import make_png

PRE = "precomputed:embedding"


@pytest.fixture
def ws(tmp_path, tiny_clip_id):
    """6 images (4 captioned in a table with a `batch` column, 2 bare), 4 captions, 3 loose texts, and 3
    texts with precomputed vectors: 16 items, vectors of the tiny CLIP and of `precomputed:embedding`."""
    rng = np.random.default_rng(1)
    imgs = [make_png(tmp_path / "imgs" / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)), size=(20 + i, 20))
            for i in range(6)]
    (tmp_path / "captions.csv").write_text(
        "filepath,title,batch\n" + "".join(f"imgs/{p.name},caption of picture {i},b{i}\n"
                                           for i, p in enumerate(imgs[:4])))
    pd.DataFrame({"text": ["vec one", "vec two", "vec three"], "junk": ["x", "y", "z"],
                  "embedding": list(rng.normal(size=(3, 4)).astype(np.float32))}).to_parquet(tmp_path / "v.parquet")
    w = Workspace(tmp_path / "w")
    rep = w.ingest([tmp_path / "imgs", tmp_path / "captions.csv", tmp_path / "v.parquet"],
                   texts=["a red thing", "a blue thing", "a green thing"])
    assert rep.added == 16 and not rep.errors, rep.errors
    w.embed(tiny_clip_id, chunk_size=5)  # several shards
    return w


def _id(ws, **where) -> str:
    items = ws.items
    for col, value in where.items():
        items = items[items[col] == value]
    assert len(items) == 1, where
    return str(items["id"].iloc[0])


def _stored_ids(ws, model) -> set[str]:
    """Every id in the model's shard files on disk (superseded copies included)."""
    store = ws.store(model)
    m = store.manifest()
    return set() if m is None else {str(i) for sh in m["shards"]
                                    for i in np.load(store.path / f"{sh['name']}.ids.npy")}


def test_delete_items_removes_rows_vectors_files_and_unpairs(ws, tiny_clip_id):
    items = ws.items
    img0 = str(items[items.source.str.endswith("0.png") & (items.modality == "image")]["id"].iloc[0])
    cap0 = str(items.set_index("id").loc[img0, "pair"])
    img1 = str(items[items.source.str.endswith("1.png") & (items.modality == "image")]["id"].iloc[0])
    cap1 = str(items.set_index("id").loc[img1, "pair"])
    vec1 = _id(ws, text="vec one")
    files = [ws.path / items.set_index("id").loc[img0, c] for c in ("image", "thumb")]
    assert all(f.is_file() for f in files)
    n_tiny = ws.models()[tiny_clip_id]["n"]

    rep = ws.delete_items([img0, cap1, vec1, "0123456789abcdef", img0])
    assert (rep.deleted, rep.missing, rep.items) == (3, ["0123456789abcdef"], 13)
    assert rep.ids == [img0, cap1, vec1] and rep.by_modality == {"image": 1, "text": 2}
    assert rep.unpaired == 2
    assert json.loads(json.dumps(rep.to_dict()))["deleted"] == 3

    left = ws.items.set_index("id")
    assert not {img0, cap1, vec1} & set(left.index)
    assert left.loc[cap0, "pair"] is None and left.loc[img1, "pair"] is None  # the partners stay, unpaired
    assert not any(f.exists() for f in files)
    for model in (tiny_clip_id, PRE):
        assert not {img0, cap1, vec1} & _stored_ids(ws, model)
        _X, vid = ws.vectors(model)
        assert not {img0, cap1, vec1} & set(vid)
        assert len(ws.vectors(model, ids=[img0, cap1, vec1])[1]) == 0
    assert ws.models()[tiny_clip_id]["n"] == n_tiny - 3
    assert ws.models()[PRE]["n"] == 2
    assert not (ws.path / DELETE_JOURNAL).exists()
    # the rest is untouched: still embedded, and embedding again finds nothing to do
    assert ws.embed(tiny_clip_id).embedded == 0


def test_an_image_with_two_captions_keeps_the_other_one(tmp_path, image_files):
    (tmp_path / "c.csv").write_text(f"filepath,title\nimgs/{image_files[0].name},first words\n"
                                    f"imgs/{image_files[0].name},second words\n")
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "imgs", tmp_path / "c.csv"])
    first, second = _id(ws, text="first words"), _id(ws, text="second words")
    img = ws.item(first)["pair"]
    assert ws.item(img)["pair"] == first
    rep = ws.delete_items([first])
    assert ws.item(img)["pair"] == second and rep.unpaired == 0


def test_unknown_ids_only_is_an_error_and_changes_nothing(ws):
    before = ws.items_version()
    with pytest.raises(ValueError, match="none of the 2 id"):
        ws.delete_items(["nope", "0000000000000000"])
    with pytest.raises(ValueError, match="at least one"):
        ws.delete_items([])
    assert ws.items_version() == before


def test_metadata_columns_of_only_deleted_items_go_and_an_emptied_store_is_removed(ws):
    vec = [_id(ws, text=t) for t in ("vec one", "vec two", "vec three")]
    assert "junk" in ws.items.columns
    store_path = ws.store(PRE).path
    ws.delete_items(vec)
    assert "junk" not in ws.items.columns and "batch" in ws.items.columns
    assert PRE not in ws.models() and not store_path.exists()


def test_search_index_and_maps_never_return_deleted_items(ws, tiny_clip_id, monkeypatch):
    monkeypatch.setitem(NeighborIndex.__init__.__kwdefaults__, "exact_threshold", 4)  # an hnswlib graph
    idx = workspace_index(ws, tiny_clip_id)
    assert idx.backend_ == "hnsw"
    before = compute_map(ws, tiny_clip_id, method="pca")
    texts = ws.items[ws.items.modality == "text"]
    gone = texts["id"].tolist()[:3] + ws.items[ws.items.modality == "image"]["id"].tolist()[:2]
    ws.delete_items(gone)
    assert not index_dir(ws, tiny_clip_id).exists(), "a saved index holding deleted items is removed"
    assert not before.path.exists() and not list(before.path.parent.glob("*.npz*")), "the map holding them is removed"
    hits = core.search_items(ws, tiny_clip_id, "a query no item holds", k=50)
    assert len(hits) == len(ws.items) and not {h.id for h in hits} & set(gone)
    idx = workspace_index(ws, tiny_clip_id)
    got, _ = idx.query(ws.vectors(tiny_clip_id)[0], k=len(idx.ids_))
    assert not set(got.ravel()) & set(gone)
    after = compute_map(ws, tiny_clip_id, method="pca")
    assert len(after.ids) == len(ws.items) and not set(after.ids) & set(gone)
    assert after.cache == "fit"


def test_patch_caches_holding_deleted_items_are_removed_and_masks_pruned(ws, tiny_clip_id):
    from core.concepts.patches import workspace_patches
    from core.demo.workspace import MASKS_CODEC, MASKS_KEY, load_world_masks

    images = sorted(ws.items[ws.items.modality == "image"]["id"])
    gone = images[0]
    workspace_patches(ws, tiny_clip_id, images[2:4])
    workspace_patches(ws, tiny_clip_id, images[:2])
    ws.artifact("masks", None, MASKS_KEY, lambda: {gone: np.ones(2), "other": np.zeros(2)}, codec=MASKS_CODEC)
    before = sorted(ws.derived_dir("patches", tiny_clip_id).glob("*.npz"))
    assert len(before) == 2
    ws.delete_items([gone])
    after = sorted(ws.derived_dir("patches", tiny_clip_id).glob("*.npz"))
    assert len(after) == 1 and set(np.load(after[0])["ids"]) == set(images[2:4])
    assert list(load_world_masks(ws)) == ["other"]


def test_a_deletion_killed_after_its_commit_point_is_invisible_and_finished_later(ws, tiny_clip_id, monkeypatch):
    gone = [_id(ws, text="a red thing"), _id(ws, text="vec two")]
    real = VectorStore.remove

    def crash(self, ids):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(VectorStore, "remove", crash)
    with pytest.raises(KeyboardInterrupt):
        ws.delete_items(gone)
    monkeypatch.setattr(VectorStore, "remove", real)
    assert (ws.path / DELETE_JOURNAL).exists() and set(gone) <= _stored_ids(ws, tiny_clip_id)
    # readers already see the new state
    other = Workspace(ws.path, create=False)
    assert not set(gone) & set(other.items["id"])
    assert len(other.vectors(tiny_clip_id, ids=gone)[1]) == 0
    assert other.models()[tiny_clip_id]["n"] == len(other.items) and other.models()[PRE]["n"] == 2
    assert not set(gone) & set(core.compute_map(other, tiny_clip_id, method="pca").ids)
    # the next writer of items finishes it (an item added again keeps its vector)
    other.ingest(texts=["a red thing", "something new"])
    assert not (ws.path / DELETE_JOURNAL).exists()
    assert gone[0] in _stored_ids(ws, tiny_clip_id) and gone[1] not in _stored_ids(ws, tiny_clip_id)
    assert gone[1] not in _stored_ids(ws, PRE)


def test_a_deletion_killed_before_its_commit_point_leaves_the_old_state(ws, tiny_clip_id, monkeypatch):
    gone = _id(ws, text="a blue thing")
    n = len(ws.items)

    def crash(self, df):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Workspace, "write_items", crash)
    with pytest.raises(KeyboardInterrupt):
        ws.delete_items([gone])
    monkeypatch.undo()
    assert (ws.path / DELETE_JOURNAL).exists()
    assert len(ws.items) == n and len(ws.vectors(tiny_clip_id, ids=[gone])[1]) == 1
    ws.delete_items([_id(ws, text="a green thing")])  # the next deletion drops the stale journal
    assert gone in _stored_ids(ws, tiny_clip_id) and gone in set(ws.items["id"])


def test_delete_workspace_by_path_and_name_refuses_other_folders(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("JOINTSCOPE_HOME", str(home))
    a = Workspace(core.workspace_path("alpha"))
    a.ingest(texts=["one", "two"])
    Workspace(core.workspace_path("beta"))
    (home / "notes").mkdir()
    (home / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileNotFoundError, match=r"workspace\.json missing"):
        delete_workspace(home / "notes")
    with pytest.raises(FileNotFoundError):
        delete_workspace("gamma")
    with pytest.raises(ValueError):
        delete_workspace("..")
    assert (home / "notes" / "keep.txt").read_text() == "mine"
    assert core.delete_workspace("alpha") == {"path": str(home / "alpha"), "deleted": 2}
    assert list_workspaces() == ["beta"] and not (home / "alpha").exists()
    assert Workspace(home / "beta", create=False).delete()["deleted"] == 0
    assert list_workspaces() == [] and sorted(p.name for p in home.iterdir()) == ["notes"]


def test_an_interrupted_workspace_deletion_leaves_a_tombstone_that_is_never_listed(tmp_path, monkeypatch):
    import shutil

    Workspace(tmp_path / "alpha").ingest(texts=["one"])
    Workspace(tmp_path / "beta")
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # killed right after the rename
    delete_workspace(tmp_path / "alpha")
    [tomb] = [p for p in tmp_path.iterdir() if p.name.startswith(".alpha")]
    assert (tomb / "workspace.json").is_file() and not (tmp_path / "alpha").exists()
    assert list_workspaces(tmp_path) == ["beta"]  # even while it cannot be removed
    monkeypatch.undo()
    assert list_workspaces(tmp_path) == ["beta"]
    assert not tomb.exists(), "listing removes a leftover tombstone"


# ---- CLI -------------------------------------------------------------------------------------------------
def test_cli_delete_items_and_workspace(capsys, tmp_path):
    from test_cli import run_json

    ws = tmp_path / "ws"
    run_json(capsys, "ingest", str(ws), "--text", "keep me", "--text", "junk one", "--text", "junk two", "--json")
    items = Workspace(ws, create=False).items.set_index("text")["id"]
    code, doc, err = run_json(capsys, "delete", str(ws), "--item", items["junk one"], "nope", "--item",
                              items["junk two"], "--json")
    assert code == 0, err
    assert (doc["deleted"], doc["items"], doc["missing"]) == (2, 1, ["nope"])
    assert doc["ids"] == [items["junk one"], items["junk two"]] and doc["by_modality"] == {"text": 2}
    assert list(Workspace(ws, create=False).items["text"]) == ["keep me"]
    code, doc, err = run_json(capsys, "delete", str(ws), "--item", "nope", "--json")
    assert code == 1 and doc is None and len(err.strip().splitlines()) == 1 and "nothing was deleted" in err

    code, doc, err = run_json(capsys, "delete", str(ws), "--workspace", "--json")
    assert code == 0, err
    assert doc["deleted"] == 1 and doc["items"] == 0 and doc["path"] == str(ws) and not ws.exists()
    code, doc, err = run_json(capsys, "delete", str(ws), "--workspace", "--json")
    assert code == 1 and doc is None and len(err.strip().splitlines()) == 1 and "no workspace" in err
    (tmp_path / "mine").mkdir()
    code, _doc, err = run_json(capsys, "delete", str(tmp_path / "mine"), "--workspace", "--json")
    assert code == 1 and "workspace.json missing" in err and (tmp_path / "mine").is_dir()
    code, _doc, err = run_json(capsys, "delete", str(tmp_path / "mine"), "--item", "x", "--json")
    assert code == 1 and "no workspace" in err


def test_cli_delete_usage_errors_exit_2(capsys, tmp_path):
    Workspace(tmp_path / "ws")
    for argv in (["delete", str(tmp_path / "ws"), "--json"],  # neither
                 ["delete", str(tmp_path / "ws"), "--item", "a", "--workspace", "--json"],  # both
                 ["delete", str(tmp_path / "ws"), "--item", "--json"]):  # --item without an id
        assert core.cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "not allowed with" in err and (tmp_path / "ws" / "workspace.json").is_file()


def test_a_writer_of_a_deleted_workspace_writes_nothing(tmp_path):
    ws = Workspace(tmp_path / "alpha")
    ws.ingest(texts=["one"])
    delete_workspace(tmp_path / "alpha")
    with pytest.raises(FileNotFoundError, match="was deleted"):
        ws.ingest(texts=["two"])  # e.g. a page or process that opened it before
    assert not (tmp_path / "alpha" / "items.parquet").exists() and list_workspaces(tmp_path) == []
    assert len(Workspace(tmp_path / "alpha").items) == 0  # the name can be used again
