"""Committing vectors: one vector per item whatever writers race, and vector writes only under the write lock."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

import core
from core.distributed import embed_manifest
from core.embedding import VectorCommit
from core.workspace import Workspace, content_id

from helpers import make_png

MODEL = "precomputed:test"
DEMO = "demo"  # the bundled joint image-text model


def stored_rows(ws: Workspace, model: str) -> np.ndarray:
    """Every id row in the store's committed shards, duplicates included (readers hide them: last write wins)."""
    store = ws.store(model)
    m = store.manifest()
    if m is None:
        return np.zeros((0,), dtype=str)
    return np.concatenate([np.load(store.path / f"{sh['name']}.ids.npy") for sh in m["shards"]])


def ids_of(a: int, b: int) -> list[str]:
    return [f"{i:016x}" for i in range(a, b)]


def rows_of(value: float, n: int, d: int = 8) -> np.ndarray:
    return np.full((n, d), value, np.float32)


def test_two_writers_racing_on_overlapping_ids_store_one_vector_per_item(tmp_path):
    Workspace(tmp_path / "w")
    a, b = Workspace(tmp_path / "w"), Workspace(tmp_path / "w")  # two writers of one folder
    # both read the store before either commits (as two embedding runs planned at the same time)
    commit_a, commit_b = VectorCommit(a, MODEL), VectorCommit(b, MODEL)
    jobs = {"a": (commit_a, ids_of(0, 60), rows_of(1.0, 60)), "b": (commit_b, ids_of(30, 90), rows_of(2.0, 60))}
    stored: dict[str, int] = {}
    start = threading.Barrier(2)

    def run(name: str) -> None:
        commit, ids, X = jobs[name]
        start.wait()
        stored[name] = commit(X, ids)

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = stored_rows(a, MODEL)
    assert len(set(rows.tolist())) == len(rows) == 90  # the 30 shared ids once
    assert sorted(stored.values()) == [30, 60]  # whoever committed second left the shared ids out
    first = 1.0 if stored["a"] == 60 else 2.0
    vecs, got = a.vectors(MODEL, ids=ids_of(30, 60))
    assert len(got) == 30
    assert np.all(vecs == first)  # the first writer's vectors stay


def test_a_run_keeps_checking_once_another_writer_has_committed(tmp_path):
    """The other writer commits before this run's first commit: the first commit adopts the store's new
    version, and a later commit of this run must still leave out the other writer's ids."""
    ws, other = Workspace(tmp_path / "w"), Workspace(tmp_path / "w")
    commit = VectorCommit(ws, MODEL)
    assert VectorCommit(other, MODEL)(rows_of(2.0, 10), ids_of(10, 20)) == 10
    assert commit(rows_of(1.0, 10), ids_of(0, 10)) == 10
    assert commit(rows_of(1.0, 20), ids_of(10, 30)) == 10  # 10..19 are the other writer's
    rows = stored_rows(ws, MODEL)
    assert len(rows) == len(set(rows.tolist())) == 30


def test_workspace_embed_leaves_out_what_another_writer_stored_meanwhile(tmp_path):
    ws = Workspace(tmp_path / "w")
    texts = [f"a small red shape number {i}" for i in range(6)]
    ws.ingest(texts=texts)
    other = Workspace(tmp_path / "w")
    taken = [content_id("text", t.encode("utf-8")) for t in texts[:2]]
    dim = core.load_encoder(DEMO).dim

    def progress(done: int, total: int) -> None:
        if done == 0:  # after the plan, before the first commit: another writer stores two of the items
            with other.writing():
                other.store(DEMO).append(rows_of(0.5, 2, dim), taken)

    report = ws.embed(DEMO, progress=progress)
    assert report.embedded == 4
    rows = stored_rows(ws, DEMO)
    assert len(rows) == len(set(rows.tolist())) == 6
    X, _ = ws.vectors(DEMO, ids=taken)
    assert np.all(X == 0.5)


def test_the_engine_sink_leaves_out_what_another_writer_stored_meanwhile(tmp_path):
    for i in range(3):
        make_png(tmp_path / "imgs" / f"{i}.png", (40 * i, 90, 200 - 40 * i), size=(40, 32))
    captions = [f"a picture number {i}" for i in range(3)]
    pd.DataFrame({"image": [f"imgs/{i}.png" for i in range(3)], "caption": captions}).to_parquet(
        tmp_path / "m.parquet")
    ws, other = Workspace(tmp_path / "w"), Workspace(tmp_path / "w")
    taken = [content_id("text", c.encode("utf-8")) for c in captions[:2]]

    def progress(done: int, total: int) -> None:
        if done == 0:  # after the run read which items have vectors, before it commits any
            with other.writing():
                other.store(DEMO).append(rows_of(0.5, 2, 128), taken)

    report = embed_manifest(ws, tmp_path / "m.parquet", DEMO, engine="local", progress=progress)
    assert not report.errors and report.embedded == 4 and report.added == 6
    rows = stored_rows(ws, DEMO)
    assert len(rows) == len(set(rows.tolist())) == 6
    assert np.all(ws.vectors(DEMO, ids=taken)[0] == 0.5)


def test_vector_and_item_writes_need_the_write_lock(tmp_path):
    ws = Workspace(tmp_path / "w")
    store = ws.store(MODEL)
    with pytest.raises(RuntimeError, match=r"writing vectors of 'precomputed:test'.*needs its write lock"):
        store.append(rows_of(1.0, 3), ids_of(0, 3))
    assert store.manifest() is None  # nothing was written
    with pytest.raises(RuntimeError, match=r"writing the items.*needs its write lock"):
        ws.write_items(ws.items)
    with Workspace(tmp_path / "w").writing():  # any Workspace object of the folder, in this thread
        store.append(rows_of(1.0, 3), ids_of(0, 3))
    assert store.count() == 3
    with ws.writing():
        for call in (lambda: store.rewrite(), lambda: store.remove(ids_of(0, 1))):
            errors: list[BaseException] = []
            t = threading.Thread(target=_record, args=(call, errors))
            t.start()
            t.join()
            assert len(errors) == 1 and "needs its write lock" in str(errors[0])  # another thread holds none
    with pytest.raises(RuntimeError, match="needs its write lock"):
        store.remove(ids_of(0, 1))
    assert store.count() == 3


def _record(call, errors: list[BaseException]) -> None:
    try:
        call()
    except RuntimeError as e:
        errors.append(e)


def test_a_nested_writing_in_one_thread_fails_at_once_instead_of_waiting_for_itself(tmp_path):
    ws = Workspace(tmp_path / "w")
    with ws.writing(timeout=5):
        with pytest.raises(RuntimeError, match="not re-entrant"), Workspace(tmp_path / "w").writing(timeout=5):
            pass
        assert ws.holds_write_lock()
    assert not ws.holds_write_lock()
    with ws.writing(timeout=5):  # released: taken again at once
        assert ws.holds_write_lock()
