"""Workspaces: content ids, dedup, stored files, vectors, incremental embedding, atomic writes, locking."""
from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pandas as pd
import pytest

import core
from core import storage
from core.workspace import Workspace, workspace_path

from helpers import make_png


def test_new_workspace_is_empty_and_reopens(tmp_path):
    ws = Workspace(tmp_path / "w")
    assert len(ws) == 0 and ws.models() == {}
    assert Workspace(tmp_path / "w", create=False).info()["items"] == 0
    with pytest.raises(FileNotFoundError, match="no workspace"):
        Workspace(tmp_path / "nope", create=False)


def test_refuses_to_take_over_a_non_empty_folder(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "thesis.docx").write_text("important")
    with pytest.raises(ValueError, match="not a workspace"):
        Workspace(tmp_path / "stuff")


def test_opens_a_workspace_another_process_created_meanwhile(tmp_path, monkeypatch):
    """The race of four processes creating one workspace: workspace.json is missing at the first look and
    there (with the folders written after it) by the time the folder is listed."""
    Workspace(tmp_path / "w").ingest(texts=["a red circle"])
    meta = tmp_path / "w" / "workspace.json"
    real = type(meta).is_file
    first = {"done": False}

    def is_file(self):
        if self == meta and not first["done"]:
            first["done"] = True
            return False
        return real(self)

    monkeypatch.setattr(type(meta), "is_file", is_file)
    assert len(Workspace(tmp_path / "w")) == 1 and first["done"]
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        Workspace(tmp_path / "plain.txt")


def test_workspace_names_cannot_escape_root(tmp_path):
    assert workspace_path("cats_2024", home=tmp_path) == tmp_path / "cats_2024"
    for bad in ["../x", "/etc", "a/b", ".hidden", "", "a" * 65, "x\x00"]:
        with pytest.raises(ValueError, match="workspace name"):
            workspace_path(bad, home=tmp_path)


def test_content_ids_dedup_images_and_texts(tmp_path, image_files):
    ws = Workspace(tmp_path / "w")
    r1 = ws.ingest(image_files, texts=["a cat", "a dog"])
    assert (r1.added, r1.skipped, r1.errors) == (5, 0, [])
    # same bytes under another name, same texts again: nothing new
    copy = tmp_path / "copy.png"
    copy.write_bytes(image_files[0].read_bytes())
    r2 = ws.ingest([copy, *image_files], texts=["a cat", "a dog", "a bird"])
    assert (r2.added, r2.skipped) == (1, 6)
    assert len(ws.items) == 6
    assert ws.items["id"].is_unique


def test_stored_images_and_thumbnails_exist(tmp_path):
    src = make_png(tmp_path / "big.png", size=(640, 320))
    ws = Workspace(tmp_path / "w")
    ws.ingest([src])
    row = ws.items.iloc[0]
    assert row["modality"] == "image" and (row["width"], row["height"]) == (640, 320)
    assert ws.abspath(row["image"]).read_bytes() == src.read_bytes()
    from PIL import Image

    with Image.open(ws.abspath(row["thumb"])) as th:
        assert max(th.size) <= 192 and th.format == "WEBP"


def test_pairs_from_a_caption_table(tmp_path, image_files):
    csv = tmp_path / "captions.csv"
    csv.write_text("filepath,title,split\n" + "\n".join(f"imgs/{p.name},caption {i},train"
                                                          for i, p in enumerate(image_files)) + "\n")
    ws = Workspace(tmp_path / "w")
    r = ws.ingest([tmp_path / "imgs", csv])
    assert r.added == 6 and not r.errors
    items = ws.items
    imgs, txts = items[items.modality == "image"], items[items.modality == "text"]
    # an image points at its caption, the caption at its image
    assert set(txts["pair"]) == set(imgs["id"]) and set(imgs["pair"]) == set(txts["id"])
    for _, t in txts.iterrows():
        assert imgs.set_index("id").loc[t["pair"], "pair"] == t["id"]
    assert (items["split"] == "train").all()


def test_a_caption_shared_by_two_images_links_both(tmp_path, image_files):
    csv = tmp_path / "captions.csv"
    csv.write_text("filepath,title\n" + "".join(f"imgs/{p.name},the same words\n" for p in image_files[:2]))
    ws = Workspace(tmp_path / "w")
    assert ws.ingest([tmp_path / "imgs", csv]).added == 4  # 3 images + 1 deduplicated text
    items = ws.items
    [text_id] = items[items.modality == "text"]["id"]
    paired = items[(items.modality == "image") & (items["pair"] == text_id)]
    assert len(paired) == 2


def test_unpaired_text_gets_linked_when_it_reappears_paired(tmp_path, image_files):
    csv = tmp_path / "captions.csv"
    csv.write_text(f"filepath,title\nimgs/{image_files[0].name},hello there\n")
    (tmp_path / "notes.txt").write_text("hello there\n")
    ws = Workspace(tmp_path / "w")
    ws.ingest([tmp_path / "notes.txt", csv, tmp_path / "imgs"])  # unpaired copy first, same call
    ws2 = Workspace(tmp_path / "w2")
    ws2.ingest(texts=["hello there"])
    ws2.ingest([tmp_path / "imgs", csv])  # an earlier unpaired copy
    for w in (ws, ws2):
        items = w.items
        text = items[items.modality == "text"].iloc[0]
        img = items[items.source.str.endswith(image_files[0].name)].iloc[0]
        assert text["pair"] == img["id"] and img["pair"] == text["id"]


def test_precomputed_vectors_are_stored_per_model(tmp_path):
    df = pd.DataFrame({"text": ["one thing", "two things", "three things"],
                       "embedding": [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]})
    df.to_parquet(tmp_path / "t.parquet")
    ws = Workspace(tmp_path / "w")
    r = ws.ingest([tmp_path / "t.parquet"])
    assert r.added == 3, r.errors
    X, ids = ws.vectors("precomputed:embedding")
    assert X.shape == (3, 3) and list(ids) == list(ws.items["id"])
    assert ws.models()["precomputed:embedding"] == {"dim": 3, "n": 3}
    # a later upload with another dimension for the same name is refused per row, the text kept
    pd.DataFrame({"text": ["four things"], "embedding": [[1.0, 2.0]]}).to_parquet(tmp_path / "u.parquet")
    r2 = ws.ingest([tmp_path / "u.parquet"])
    assert r2.added == 1
    assert any("expected 3" in reason for _, reason in r2.errors)
    assert ws.models()["precomputed:embedding"]["n"] == 3


def test_embed_is_incremental_and_aligned(tmp_path, image_files, tiny_clip_id):
    ws = Workspace(tmp_path / "w")
    ws.ingest(image_files[:2], texts=["red", "green"])
    r1 = ws.embed(tiny_clip_id)
    assert (r1.embedded, r1.cached) == (4, 0)
    r2 = ws.embed(tiny_clip_id)
    assert (r2.embedded, r2.cached) == (0, 4), "second run computes nothing"
    ws.ingest(image_files[2:], texts=["blue"])
    calls = []
    r3 = ws.embed(tiny_clip_id, progress=lambda d, t: calls.append((d, t)))
    assert (r3.embedded, r3.cached) == (2, 4)
    assert calls[-1] == (2, 2)
    X, ids = ws.vectors(tiny_clip_id)
    assert X.shape == (6, 32) and list(ids) == list(ws.items["id"])
    enc = core.load_encoder(tiny_clip_id)
    i = list(ids).index(ws.items[ws.items.text == "blue"]["id"].iloc[0])
    np.testing.assert_allclose(X[i], enc.encode_texts(["blue"])[0], atol=1e-5)
    _Xi, ids_i = ws.vectors(tiny_clip_id, modality="image")
    assert len(ids_i) == 3


def test_changed_weights_are_caught_before_two_spaces_mix(tmp_path, image_files, capsys):
    """A checkpoint replaced under the same model id (an updated bundled model, a retrained folder): adding
    items refuses to mix old and new vectors; --refresh embeds everything again and drops derived caches."""
    from core.cli import main
    from core.encoders import clear_encoder_cache

    from helpers import write_tiny_clip

    folder = write_tiny_clip(tmp_path / "ckpt", seed=0)
    model = f"openclip-local:{folder}"
    ws = Workspace(tmp_path / "w")
    ws.ingest(image_files[:2], texts=["red", "green"])
    assert ws.embed(model).embedded == 4
    assert ws.stale_vectors(model) is None, "the same weights give the stored vectors back"
    derived = ws.path / "derived" / "index" / core.vectorstore.model_slug(model)
    derived.mkdir(parents=True)
    (derived / "old.bin").write_bytes(b"x")
    other = ws.path / "derived" / "index" / "another-model"      # another model's cache of the same kind
    other.mkdir()
    only = ws.path / "derived" / "maps" / derived.name            # a kind that only this model has
    only.mkdir(parents=True)
    write_tiny_clip(folder, seed=1)  # new weights, same id
    clear_encoder_cache()
    try:
        stale = ws.stale_vectors(model)
        assert stale is not None and stale["min_cosine"] < 0.99 and len(stale["items"]) == 4
        ws.ingest(image_files[2:], texts=["blue"])
        with pytest.raises(core.StaleVectorsError, match=r"no longer gives.*--refresh"):
            ws.embed(model)
        assert ws.models()[model]["n"] == 4, "nothing was added"
        assert main(["embed", str(ws.path), "--model", model, "--json"]) == 1
        assert "--refresh" in capsys.readouterr().err
        # read-only commands answer, with a warning that the results mix two spaces
        assert main(["search", str(ws.path), "--model", model, "--text", "red", "--json"]) == 0
        err = capsys.readouterr().err
        assert "warning" in err and "other weights" in err and "--refresh" in err
        assert main(["embed", str(ws.path), "--model", model, "--refresh", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert (doc["embedded"], doc["cached"]) == (6, 0)
        assert not derived.exists(), "what was derived from the old vectors is gone"
        assert other.is_dir(), "other models' caches stay"
        assert not only.parent.exists(), "no empty derived/<kind>/ folder is left behind"
        X, ids = ws.vectors(model)
        enc = core.load_encoder(model)
        np.testing.assert_allclose(X[list(ids).index(ws.items[ws.items.text == "red"]["id"].iloc[0])],
                                   enc.encode_texts(["red"])[0], atol=1e-5)
        assert ws.embed(model).embedded == 0
        assert main(["search", str(ws.path), "--model", model, "--text", "red", "--json"]) == 0
        assert "warning" not in capsys.readouterr().err
    finally:
        clear_encoder_cache()


def test_text_model_skips_images_and_models_never_mix(tmp_path, image_files, tiny_clip_id):
    ws = Workspace(tmp_path / "w")
    ws.ingest(image_files[:1], texts=["hello world"])
    r = ws.embed("minilm")
    assert (r.embedded, r.unsupported) == (1, 1)
    ws.embed(tiny_clip_id)
    assert ws.models()["minilm"]["dim"] == 384 and ws.models()[tiny_clip_id]["dim"] == 32


def test_interrupted_write_leaves_previous_state_readable(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "w")
    ws.ingest(texts=["first"])
    before = ws.items.copy()

    real_replace = os.replace

    def crash(src, dst):  # the temp file is fully written, then the process "dies" before rename
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ws.ingest(texts=["second"])
    monkeypatch.setattr(storage.os, "replace", real_replace)
    again = Workspace(tmp_path / "w")
    pd.testing.assert_frame_equal(again.items, before)
    assert not list((tmp_path / "w").glob(".*.tmp")), "no temp files left behind"
    assert again.ingest(texts=["second"]).added == 1


def test_half_written_shard_is_ignored(tmp_path, tiny_clip_id):
    ws = Workspace(tmp_path / "w")
    ws.ingest(texts=["a", "b"])
    ws.embed(tiny_clip_id)
    store = ws.store(tiny_clip_id)
    (store.path / "000099.npy").write_bytes(b"\x93NUMPY garbage")  # a crash before the manifest commit
    X, _ids = Workspace(tmp_path / "w").vectors(tiny_clip_id)
    assert X.shape == (2, 32)
    ws.ingest(texts=["c"])
    ws.embed(tiny_clip_id)
    assert not (store.path / "000099.npy").exists()
    assert ws.vectors(tiny_clip_id)[0].shape == (3, 32)


def _ingest_worker(path, start):
    ws = Workspace(path)
    for i in range(start, start + 8):
        ws.ingest(texts=[f"text {i}"])


def test_two_processes_writing_lose_nothing(tmp_path):
    Workspace(tmp_path / "w")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ingest_worker, args=(str(tmp_path / "w"), s)) for s in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(Workspace(tmp_path / "w").items) == 16


def test_reader_sees_other_process_changes(tmp_path):
    a = Workspace(tmp_path / "w")
    b = Workspace(tmp_path / "w")
    assert len(b.items) == 0
    a.ingest(texts=["x"])
    assert len(b.items) == 1


# ---- the write protocol: writing(), derived_dir(), version tokens (artifacts: test_artifacts.py) ----
def _try_writing(path, timeout):
    from filelock import Timeout

    try:
        with Workspace(path).writing(timeout=timeout):
            raise SystemExit(0)
    except Timeout:
        raise SystemExit(3) from None


def test_writing_blocks_other_processes_and_threads(tmp_path):
    import threading

    ws = Workspace(tmp_path / "w")
    other = Workspace(tmp_path / "w")
    ctx = mp.get_context("spawn")
    with ws.writing():
        p = ctx.Process(target=_try_writing, args=(str(tmp_path / "w"), 0.5))
        p.start()
        p.join(120)
        assert p.exitcode == 3, "another process cannot take the lock while it is held"
        t = threading.Thread(target=other.ingest, kwargs={"texts": ["waits for the lock"]})
        t.start()
        t.join(0.5)
        assert t.is_alive() and len(other.items) == 0, "a writer in another thread waits"
    t.join(60)
    assert not t.is_alive() and len(other.items) == 1
    p = ctx.Process(target=_try_writing, args=(str(tmp_path / "w"), 5))
    p.start()
    p.join(120)
    assert p.exitcode == 0, "released: another process takes it"


def test_derived_dir_layout_and_bad_kinds(tmp_path):
    from core.concepts.explain import concepts_dir
    from core.concepts.patches import patches_dir
    from core.index import index_dir
    from core.vectorstore import model_slug

    ws = Workspace(tmp_path / "w")
    model = "hf:org/Some-Model@v1"
    assert ws.derived_dir("maps", model) == tmp_path / "w" / "derived" / "maps" / model_slug(model)
    assert ws.derived_dir("index") == tmp_path / "w" / "derived" / "index"
    assert ws.derived_root == tmp_path / "w" / "derived"
    assert not ws.derived_root.exists(), "nothing is created"
    assert index_dir(ws, model) == ws.derived_dir("index", model)
    assert patches_dir(ws, model) == ws.derived_dir("patches", model)
    assert concepts_dir(ws, model) == ws.derived_dir("concepts", model)
    for bad in ["", ".", "..", "../x", "a/b", "a b", "maps\n", "x" * 65, None]:
        with pytest.raises(ValueError, match="derived kind"):
            ws.derived_dir(bad, model)
    # forget_model removes every derived/<kind>/<slug> with the vectors
    for kind in ("maps", "index", "my_kind-2"):
        (ws.derived_dir(kind, model) / "f").parent.mkdir(parents=True)
    (ws.derived_dir("maps", "other") / "keep").mkdir(parents=True)
    gone = ws.forget_model(model)
    assert sorted(gone) == sorted(f"derived/{k}/{model_slug(model)}" for k in ("maps", "index", "my_kind-2"))
    assert ws.derived_dir("maps", "other").is_dir() and not ws.derived_dir("index").exists()


def test_version_tokens_change_on_ingest_and_embed_only(tmp_path, tiny_clip_id):
    ws = Workspace(tmp_path / "w")
    assert ws.items_version() == () and ws.vectors_version(tiny_clip_id) is None
    ws.ingest(texts=["a red circle", "a blue square"])
    v1 = ws.items_version()
    assert v1 and v1 == ws.items_version() == Workspace(tmp_path / "w").items_version()
    assert ws.ingest(texts=["a red circle"]).added == 0
    assert ws.items_version() == v1, "nothing added: the items file is not rewritten"
    ws.embed(tiny_clip_id)
    e1 = ws.vectors_version(tiny_clip_id)
    assert e1 is not None and ws.items_version() == v1
    assert Workspace(tmp_path / "w").vectors_version(tiny_clip_id) == e1
    ws.embed(tiny_clip_id)  # nothing to do
    assert ws.vectors_version(tiny_clip_id) == e1
    ws.ingest(texts=["a green triangle"])
    v2 = ws.items_version()
    assert v2 != v1 and ws.vectors_version(tiny_clip_id) == e1
    ws.embed(tiny_clip_id)
    assert ws.vectors_version(tiny_clip_id) not in (None, e1) and ws.items_version() == v2
    assert ws.vectors_version("minilm") is None


def test_skipped_items_say_whether_they_were_already_there_or_repeated_in_the_upload(tmp_path):
    ws = core.Workspace(tmp_path / "ws")
    rep = ws.ingest(texts=["a cat", "a dog", "a cat", "a cat"])
    assert (rep.added, rep.skipped, rep.repeated) == (2, 2, 2)
    assert rep.to_dict()["repeated_in_upload"] == 2 and rep.to_dict()["already_in_workspace"] == 0
    assert rep.skipped_words() == "2 skipped (2 repeated in this upload)"
    again = ws.ingest(texts=["a dog", "a bird", "a bird"])
    assert (again.added, again.skipped, again.repeated) == (1, 2, 1)
    assert again.skipped_words() == "2 skipped (1 already in the workspace, 1 repeated in this upload)"


def test_images_of_an_import_are_stored_at_once_and_a_bad_one_is_reported_alone(tmp_path, monkeypatch):
    """An import stores several images at a time (their writes wait for the disk); an image that cannot be
    stored is one error, and every other image, its thumbnail and the texts are committed."""
    import io
    import threading
    import time

    from PIL import Image

    from core.ingest import Candidate

    def png(colour) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
        return buf.getvalue()

    ws = Workspace(tmp_path / "ws")
    threads, real = set(), Workspace.store_image

    def slow_store(self, *args):
        threads.add(threading.get_ident())
        time.sleep(0.05)  # a slow disk: the writes overlap only if the import runs several at a time
        return real(self, *args)

    monkeypatch.setattr(Workspace, "store_image", slow_store)
    cands = [Candidate(modality="image", source=f"img{i}.png", image_bytes=png((i * 20, 0, 0)), image_ext="png")
             for i in range(12)]
    cands.insert(5, Candidate(modality="image", source="broken.png", image_bytes=b"not an image", image_ext="png"))
    cands.append(Candidate(modality="text", source="caption", text="a red square"))
    seen = []
    rep = ws.add_candidates(cands, progress=lambda d, t: seen.append((d, t)))
    assert rep.added == 13 and len(threads) > 1
    assert [(s, r.split(" (")[0]) for s, r in rep.errors] == [("broken.png", "could not store image")]
    items = ws.items
    assert len(items) == 13 and set(rep.ids) == set(items["id"])
    imgs = items[items["modality"] == "image"]
    assert sorted(imgs["source"]) == sorted(f"img{i}.png" for i in range(12))
    for rel in list(imgs["image"]) + list(imgs["thumb"]):
        with Image.open(ws.abspath(rel)) as im:
            im.load()
    assert (imgs["width"] == 40).all() and seen[-1] == (len(cands), len(cands))


def test_items_prepared_without_the_lock_are_written_as_they_were_given(tmp_path):
    """A writer may prepare the items file outside the lock (while it writes vectors) and commit it later."""
    ws = Workspace(tmp_path / "w")
    rows = pd.DataFrame({"id": ["a", "b"], "modality": ["row", "row"], "colour": ["red", 3]})
    ws.add_rows(rows)
    prepared = Workspace.prepare_items(ws.items)  # no lock held
    assert prepared.frame["colour"].tolist() == ["red", "3"]  # mixed metadata as text, as write_items keeps it
    with pytest.raises(RuntimeError, match="needs its write lock"):
        ws.write_items(prepared)
    before = ws.items_version()
    with ws.writing():
        ws.write_items(prepared)
    assert ws.items_version() != before
    pd.testing.assert_frame_equal(ws.items, prepared.frame)
