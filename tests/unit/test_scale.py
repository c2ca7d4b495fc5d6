"""Large workspaces: float16/int8 vector storage, lazy (memory-mapped) stores, incremental index builds,
maps of every item. Speed and memory are measured in bench/scale.py, not here."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import core
from core import vectorstore
from core.cli import main
from core.index import NeighborIndex, workspace_index
from core.projection import cached_map, compute_map, place_in_map
from core.vectorstore import VectorStore, dtype_recall

MODEL = "precomputed:emb"


def unit_rows(n: int, d: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(clusters, d))
    X = C[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def hex_ids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"{v:016x}" for v in rng.integers(0, 2**63, n)])


def vector_workspace(path, X: np.ndarray, ids, *, dtype: str = "float32", modality: str = "row"):
    """A workspace whose items are rows with precomputed vectors, written directly (fast, any size)."""
    ws = core.Workspace(path)
    ws.add_rows(pd.DataFrame({"id": list(ids), "modality": modality, "source": "synthetic"}))
    with ws.writing():
        ws.store(MODEL).append(X, ids, dtype=dtype)
    return ws


class ReadCounter:
    """Counts the vector rows read from stores (every read goes through _StoreView.take)."""

    def __init__(self, monkeypatch):
        self.calls: list[int] = []
        orig = vectorstore._StoreView.take

        def take(view, rows):
            self.calls.append(len(rows))
            return orig(view, rows)

        monkeypatch.setattr(vectorstore._StoreView, "take", take)

    @property
    def rows(self) -> int:
        return sum(self.calls)


# ---- storage dtypes -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol, min_recall", [("float32", 0.0, 1.0), ("float16", 1e-3, 0.98),
                                                     ("int8", 1.5e-2, 0.9)])
def test_dtype_round_trip(tmp_path, dtype, atol, min_recall):
    X = unit_rows(3000, 64)
    ids = hex_ids(3000)
    store = VectorStore(tmp_path, MODEL)
    store.append(X[:2000], ids[:2000], dtype=dtype)
    store.append(X[2000:], ids[2000:])  # an existing store keeps its dtype
    m = store.manifest()
    assert m["dtype"] == dtype and store.dtype == dtype
    on_disk = np.load(store.path / f"{m['shards'][0]['name']}.npy", mmap_mode="r")
    assert on_disk.dtype == np.dtype(dtype)
    Y, got = VectorStore(tmp_path, MODEL).load()  # a fresh reader
    assert Y.dtype == np.float32 and list(got) == list(ids)
    assert np.abs(Y - X).max() <= atol
    cos = np.sum(Y * X, axis=1) / np.linalg.norm(Y, axis=1)
    assert cos.min() > (0.9999 if dtype != "int8" else 0.999)
    assert dtype_recall(X, dtype, k=10, n_queries=100) >= min_recall


def test_float16_halves_the_bytes_and_int8_quarters_them(tmp_path):
    X, ids = unit_rows(4000, 128), hex_ids(4000)
    sizes = {}
    for dt in ("float32", "float16", "int8"):
        s = VectorStore(tmp_path / dt, MODEL)
        s.append(X, ids, dtype=dt)
        sizes[dt] = sum(f.stat().st_size for f in s.path.glob("*.npy") if ".ids." not in f.name)
    assert sizes["float16"] < 0.51 * sizes["float32"]
    assert sizes["int8"] < 0.27 * sizes["float32"]


def test_dtype_mismatch_and_overflow_are_refused(tmp_path):
    store = VectorStore(tmp_path, MODEL)
    store.append(unit_rows(10, 8), hex_ids(10), dtype="float16")
    with pytest.raises(ValueError, match="stores float16 vectors"):
        store.append(unit_rows(5, 8, seed=1), hex_ids(5, seed=1), dtype="float32")
    with pytest.raises(ValueError, match="dtype must be one of"):
        VectorStore(tmp_path / "b", MODEL).append(unit_rows(5, 8), hex_ids(5), dtype="float64")
    big = np.full((2, 4), 1e6, np.float32)  # unnormalised precomputed values beyond float16's range
    with pytest.raises(ValueError, match="does not fit float16"):
        VectorStore(tmp_path / "c", MODEL).append(big, ["a", "b"], dtype="float16")
    assert VectorStore(tmp_path / "c", MODEL).manifest() is None  # nothing half-written


def test_dtype_recall_measures_real_loss():
    X = unit_rows(5000, 256, clusters=5)
    assert dtype_recall(X, "float32") == 1.0
    r16, r8 = dtype_recall(X, "float16"), dtype_recall(X, "int8")
    assert 0.95 <= r16 <= 1.0 and r8 < r16  # int8 loses more than float16 on tight clusters


def test_compact_converts_drops_duplicates_and_reports_recall(tmp_path, capsys):
    X, ids = unit_rows(600, 32), hex_ids(600)
    ws = vector_workspace(tmp_path / "w", X[:400], ids[:400])
    with ws.writing():
        for s in range(400, 600, 50):
            ws.store(MODEL).append(X[s:s + 50], ids[s:s + 50])
        ws.store(MODEL).append(X[:10] * 0 + X[10], ids[:10])  # a second write of ten ids: the last wins
    ws.add_rows(pd.DataFrame({"id": ids[400:], "modality": "row"}))
    assert len(ws.store(MODEL).manifest()["shards"]) == 6
    assert main(["compact", str(ws.path), "--model", MODEL, "--dtype", "float16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["from_dtype"] == "float32" and out["dtype"] == "float16" and out["n"] == 600 and out["shards"] == 1
    assert 0.9 <= out["recall_at_10_vs_float32"] <= 1.0
    store = core.Workspace(ws.path).store(MODEL)
    assert sorted(p.name for p in store.path.glob("*.npy")) == ["000007.ids.npy", "000007.npy"]
    Y, got = core.Workspace(ws.path).vectors(MODEL, ids=ids)
    assert list(got) == list(ids)
    np.testing.assert_allclose(Y[10:], X[10:], atol=1e-3)
    np.testing.assert_allclose(Y[:10], np.repeat(X[10:11], 10, 0), atol=1e-3)


# ---- lazy, memory-mapped stores --------------------------------------------------------------------
def test_store_opens_without_reading_vectors(tmp_path, monkeypatch):
    n = 200_000
    X = unit_rows(n, 16)
    ids = hex_ids(n)
    ws = vector_workspace(tmp_path / "w", X[:150_000], ids[:150_000])
    with ws.writing():
        ws.store(MODEL).append(X[150_000:], ids[150_000:])
    ws.add_rows(pd.DataFrame({"id": ids[150_000:], "modality": "row"}))
    reads = ReadCounter(monkeypatch)
    fresh = core.Workspace(ws.path, create=False)
    assert fresh.models() == {MODEL: {"dim": 16, "n": n}}
    assert len(fresh.vector_ids(MODEL)) == n
    view = fresh.store(MODEL)._view()
    assert all(isinstance(mm, np.memmap) for mm, _ in view._shards)  # shards are mapped, not loaded
    assert reads.rows == 0
    want = ids[[5, 199_999, 150_000, 7]]
    Y, got = fresh.vectors(MODEL, ids=want)
    assert list(got) == list(want) and reads.rows == 4
    np.testing.assert_array_equal(Y, X[[5, 199_999, 150_000, 7]])
    Xall, _ = fresh.vectors(MODEL)  # asking for everything still works (and reads everything)
    np.testing.assert_array_equal(Xall, X)
    assert reads.rows == 4 + n


def test_a_second_write_of_an_id_wins_across_shards(tmp_path):
    store = VectorStore(tmp_path, MODEL)
    store.append(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    store.append(np.full((1, 3), 0.5, np.float32), ["b"])
    X, ids = store.load()
    assert list(ids) == ["a", "c", "b"] and store.count() == 3
    np.testing.assert_array_equal(X[2], [0.5, 0.5, 0.5])
    assert list(store.positions(["b", "zz", "a"])) == [2, -1, 0]


# ---- incremental index builds ------------------------------------------------------------------------
def test_workspace_index_adds_only_new_items(tmp_path, monkeypatch):
    X, ids = unit_rows(3000, 32), hex_ids(3000)
    ws = vector_workspace(tmp_path / "w", X[:2500], ids[:2500])
    idx = workspace_index(ws, MODEL)
    assert len(idx.ids_) == 2500
    with ws.writing():
        ws.store(MODEL).append(X[2500:], ids[2500:])
    ws.add_rows(pd.DataFrame({"id": ids[2500:], "modality": "row"}))
    reads = ReadCounter(monkeypatch)
    fits = []
    orig_fit = NeighborIndex.fit
    monkeypatch.setattr(NeighborIndex, "fit", lambda self, *a, **k: fits.append(1) or orig_fit(self, *a, **k))
    idx2 = workspace_index(core.Workspace(ws.path, create=False), MODEL)
    assert not fits, "the saved index was refitted instead of extended"
    assert reads.rows == 500  # only the new items' vectors were read
    assert len(idx2.ids_) == 3000 and list(idx2.ids_[:2500]) == list(ids[:2500])
    full = NeighborIndex("cosine").fit(X, ids)
    q = X[[3, 2600, 2999]]
    np.testing.assert_array_equal(idx2.query(q, k=5)[0], full.query(q, k=5)[0])
    # nothing new: loaded as it is, nothing read, not saved again
    mtime = next((ws.path / "derived" / "index").rglob("meta.json")).stat().st_mtime_ns
    reads.calls.clear()
    fits.clear()  # the reference fit above
    workspace_index(core.Workspace(ws.path, create=False), MODEL)
    assert reads.rows == 0 and not fits
    assert next((ws.path / "derived" / "index").rglob("meta.json")).stat().st_mtime_ns == mtime


def test_index_cli_reports_added_items(tmp_path, capsys):
    X, ids = unit_rows(300, 16), hex_ids(300)
    ws = vector_workspace(tmp_path / "w", X[:200], ids[:200])
    assert main(["index", str(ws.path), "--model", MODEL, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n"] == 200 and first["added"] == 200 and first["backend"] == "exact"
    with ws.writing():
        ws.store(MODEL).append(X[200:], ids[200:])
    ws.add_rows(pd.DataFrame({"id": ids[200:], "modality": "row"}))
    assert main(["index", str(ws.path), "--model", MODEL, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["n"] == 300 and second["added"] == 100


# ---- sampled maps ----------------------------------------------------------------------------------------
def test_large_map_covers_every_item_and_reopens_without_vectors(tmp_path, monkeypatch):
    n, m = 6000, 800
    X, ids = unit_rows(n, 24, clusters=6), hex_ids(n)
    ws = vector_workspace(tmp_path / "w", X, ids)
    reads = ReadCounter(monkeypatch)
    res = compute_map(ws, MODEL, method="pca", max_points=m)
    assert res.n == n and res.n_total == n and not res.sampled and res.cache == "fit"
    assert res.n_fitted == m and list(res.ids) == sorted(ids)
    assert max(reads.calls) <= max(m, 65_536) and reads.rows <= n + m + 2000  # in chunks, each row about once
    # reopening reads ids and the cache file only
    reads.calls.clear()
    hit = cached_map(core.Workspace(ws.path, create=False), MODEL, method="pca", max_points=m)
    assert hit is not None and hit.cache == "hit" and hit.n_total == n and reads.rows == 0
    np.testing.assert_array_equal(hit.coords, res.coords)
    # with room for all, the same workspace is fitted whole, under another key
    whole = compute_map(ws, MODEL, method="pca", max_points=n)
    assert whole.n == n and whole.fitted is None and whole.path != res.path


def test_place_in_map_adds_items_next_to_their_neighbours(tmp_path):
    n = 4000
    X, ids = unit_rows(n, 24, clusters=4, seed=3), hex_ids(n, seed=3)
    ws = core.Workspace(tmp_path / "w")
    mods = np.where(np.arange(n) < 3800, "image", "text")
    ws.add_rows(pd.DataFrame({"id": list(ids), "modality": mods, "source": "synthetic"}))
    with ws.writing():
        ws.store(MODEL).append(X, ids)
    res = compute_map(ws, MODEL, method="pca", modalities=["image"])
    assert res.n == 3800
    outside = list(ids[3800:3820])
    more = place_in_map(ws, MODEL, res, [*outside, res.ids[0], "not-an-item"])
    assert more.n == res.n + len(outside) and more.extra["placed"] == len(outside)
    assert list(more.ids[res.n:]) == outside and np.isnan(more.trust[res.n:]).all()
    np.testing.assert_array_equal(more.coords[:res.n], res.coords)  # the map itself does not move
    # each placed item lands among map points of its own cluster
    pos = {k: i for i, k in enumerate(ids)}
    Xs, _ = ws.vectors(MODEL, ids=res.ids)
    for j, item in enumerate(outside):
        d = np.linalg.norm(res.coords - more.coords[res.n + j], axis=1)
        near = np.argsort(d)[:10]
        cos_near = Xs[near] @ X[pos[item]]
        assert np.median(cos_near) > 0.5
    assert place_in_map(ws, MODEL, res, [res.ids[1]]) is res  # nothing to add


def test_max_points_is_validated(tmp_path):
    ws = vector_workspace(tmp_path / "w", unit_rows(20, 8), hex_ids(20))
    with pytest.raises(ValueError, match="max_points must be an integer >= 4"):
        compute_map(ws, MODEL, method="pca", max_points=2)
