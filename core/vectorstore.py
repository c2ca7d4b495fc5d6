"""Per-model vector storage inside a workspace.

Layout of ``<workspace>/vectors/<slug>/``::

    manifest.json          {"model", "dim", "dtype", "shards": [{"name", "n"}], "format": 1}
    <name>.npy             (n, dim) vectors in the store's dtype (float32, float16 or int8)
    <name>.scale.npy       (n,) float32 per-row scales, int8 stores only (vector = int8 row * scale)
    <name>.ids.npy         (n,) unicode item ids, aligned with the vectors

Each embedding run appends shards; the manifest is the commit point (written last, atomically), so a
crash mid-run leaves only unreferenced shard files, which are ignored and removed on the next write.

Reading is lazy: the ids are read first (small: 16 characters per item), vector shards are
memory-mapped and only the rows asked for (:meth:`VectorStore.take`) are read and converted to
float32, so a million-item store opens without reading its vectors. The storage dtype is chosen when
the store is created (``float16`` halves the disk and page-cache footprint; ``int8`` quarters it, with
a per-row scale); readers always get float32.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .storage import atomic_save_npy, atomic_write_json, read_json, remove_file, remove_temp_files

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "int8")
_FP16_MAX = float(np.finfo(np.float16).max)


def model_slug(model_id: str) -> str:
    """A folder name for a model id: readable part + short hash (ids may contain '/' or ':')."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:60] or "model"
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class VectorStore:
    """Vectors of one model for items of one workspace.

    ``guard``: called before every write (:meth:`append`, :meth:`rewrite`, :meth:`remove`); a workspace's
    stores raise there unless the writer holds the workspace's write lock (``Workspace.store``)."""

    def __init__(self, root: Path, model_id: str, *, guard: Callable[[], None] | None = None):
        self.model_id = model_id
        self._guard = guard
        self.path = Path(root) / model_slug(model_id)
        self._cache_key = None
        self._cache: _StoreView | None = None
        self._mutex = threading.Lock()

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict | None:
        m = read_json(self.manifest_path)
        if m is not None and m.get("model") != self.model_id:
            raise RuntimeError(f"{self.manifest_path} belongs to model {m.get('model')!r}, not {self.model_id!r}")
        return m

    @property
    def dim(self) -> int | None:
        m = self.manifest()
        return None if m is None else int(m["dim"])

    @property
    def dtype(self) -> str | None:
        """Storage dtype of the vectors ("float32", "float16" or "int8"); None when nothing is stored."""
        m = self.manifest()
        return None if m is None else str(m.get("dtype", "float32"))

    def _view(self) -> _StoreView:
        """The ids of the committed shards and their memory-mapped vectors (re-read when the manifest changes)."""
        try:
            st = self.manifest_path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return _StoreView.empty(0, "float32")
        with self._mutex:
            if self._cache is not None and self._cache_key == key:
                return self._cache
            m = self.manifest()
            if m is None:  # removed between stat and read
                return _StoreView.empty(0, "float32")
            view = _StoreView.open(self.path, m)
            self._cache, self._cache_key = view, key
            return view

    def ids_array(self) -> np.ndarray:
        """(n,) str ids of the stored vectors, in stored order; the last write of an id wins. Reads no vectors."""
        return self._view().ids

    def count(self) -> int:
        """Number of items with a vector (reads ids only)."""
        return len(self._view().ids)

    def positions(self, ids) -> np.ndarray:
        """(m,) int64 positions in :meth:`ids_array` of ``ids``; -1 where an id has no vector."""
        return self._view().positions(ids)

    def take(self, rows) -> np.ndarray:
        """Vectors (m, dim) float32 of the items at positions ``rows`` of :meth:`ids_array`.

        Reads only those rows from the memory-mapped shards (converted from the storage dtype).
        """
        return self._view().take(np.asarray(rows, dtype=np.int64).reshape(-1))

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (vectors (n, dim) float32, ids (n,) str); the last write of an id wins.

        Reads every vector: prefer :meth:`ids_array` + :meth:`take` for large stores.
        """
        view = self._view()
        return view.take(np.arange(len(view.ids))), view.ids

    def ids(self) -> set[str]:
        return set(self.ids_array().tolist())

    def append(self, X: np.ndarray, ids, *, extra: dict | None = None, dtype: str | None = None) -> None:
        """Add a shard. Needs the workspace write lock (checked by ``guard``).

        ``dtype``: storage dtype of a new store (``float32`` default, ``float16``, ``int8``); an existing
        store keeps its own, and a different explicit ``dtype`` is an error.
        """
        self._check_writer()
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=str)
        if X.ndim != 2 or len(X) != len(ids):
            raise ValueError(f"vectors must be (n, d) aligned with ids; got {X.shape} and {len(ids)} ids")
        if len(ids) == 0:
            return
        if not np.isfinite(X).all():
            raise ValueError(f"refusing to store non-finite vectors for model {self.model_id!r}")
        m = self.manifest() or {"format": 1, "model": self.model_id, "dim": int(X.shape[1]),
                                "dtype": dtype or "float32", "shards": []}
        if int(m["dim"]) != X.shape[1]:
            raise ValueError(f"model {self.model_id!r} has {m['dim']}-d vectors in this workspace; "
                             f"got {X.shape[1]}-d")
        store_dtype = str(m.get("dtype", "float32"))
        if dtype is not None and dtype != store_dtype:
            raise ValueError(f"model {self.model_id!r} stores {store_dtype} vectors in this workspace; "
                             f"got dtype={dtype!r} (convert the store with `jointscope compact`)")
        data, scale = encode_vectors(X, store_dtype)
        if extra:
            m.update(extra)
        self.path.mkdir(parents=True, exist_ok=True)
        self._remove_orphans(m)
        m["shards"] = m["shards"] + [self._write_shard(_next_shard(m), data, scale, ids)]
        atomic_write_json(self.manifest_path, m)  # commit point

    def rewrite(self, *, dtype: str | None = None, shard_size: int = 262_144) -> dict:
        """Rewrite the store as few shards of ``shard_size`` rows, superseded duplicates dropped, in
        ``dtype`` (default: keep the store's). Needs the workspace write lock (checked by ``guard``).

        The new shards are written beside the old ones and the manifest switches to them in one atomic
        write; the old files are removed afterwards. Returns ``{"n", "shards", "dtype", "bytes"}``.
        """
        self._check_writer()
        m = self.manifest()
        if m is None:
            raise ValueError(f"no vectors for model {self.model_id!r} to rewrite")
        dtype = dtype or str(m.get("dtype", "float32"))
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1; got {shard_size}")
        view = self._view()
        self._remove_orphans(m)
        first = _next_shard(m)
        shards, nbytes = [], 0
        for j, start in enumerate(range(0, len(view.ids), shard_size)):
            rows = np.arange(start, min(start + shard_size, len(view.ids)))
            data, scale = encode_vectors(view.take(rows), dtype)
            shards.append(self._write_shard(first + j, data, scale, view.ids[rows]))
            nbytes += data.nbytes + (0 if scale is None else scale.nbytes)
        new = {**m, "dtype": dtype, "shards": shards}
        atomic_write_json(self.manifest_path, new)  # commit point
        self._remove_orphans(new)
        return {"n": len(view.ids), "shards": len(shards), "dtype": dtype, "bytes": int(nbytes)}

    def remove(self, ids) -> int:
        """Drop every stored vector of ``ids``. Needs the workspace write lock (checked by ``guard``).

        Only the shards holding one of them are rewritten (without those rows, in the stored dtype, as new
        shards beside the old ones); the manifest switches to them in one atomic write (the commit point)
        and the old files are removed afterwards, as :meth:`rewrite` does. A store left without vectors is
        removed (its manifest first). Returns how many of ``ids`` had a vector.
        """
        self._check_writer()
        m = self.manifest()
        if m is None:
            return 0
        self._remove_orphans(m)  # also the old shards of an earlier removal killed after its commit
        drop = np.asarray(sorted({str(i) for i in ids}), dtype=str)
        n = int((self.positions(drop) >= 0).sum()) if len(drop) else 0
        if not n:
            return 0
        shards, nxt = [], _next_shard(m)
        for sh in m["shards"]:
            ids_sh = np.load(self.path / f"{sh['name']}.ids.npy", allow_pickle=False)
            keep = np.flatnonzero(~np.isin(ids_sh, drop))
            if len(keep) == len(ids_sh):
                shards.append(sh)
            elif len(keep):
                data = np.load(self.path / f"{sh['name']}.npy", mmap_mode="r")[keep]
                scale = (np.load(self.path / f"{sh['name']}.scale.npy", allow_pickle=False)[keep]
                         if m.get("dtype") == "int8" else None)
                shards.append(self._write_shard(nxt, data, scale, ids_sh[keep]))
                nxt += 1
        new = {**m, "shards": shards}
        if shards:
            atomic_write_json(self.manifest_path, new)  # commit point
            self._remove_orphans(new)
        else:
            remove_file(self.manifest_path)  # commit point: no store
            remove_uncommitted(self.path)
        return n

    def _check_writer(self) -> None:
        if self._guard is not None:
            self._guard()

    def _write_shard(self, number: int, data: np.ndarray, scale: np.ndarray | None, ids: np.ndarray) -> dict:
        """Write one shard's files (vectors, int8 scales, ids), not yet named by the manifest."""
        name = f"{number:06d}"
        atomic_save_npy(self.path / f"{name}.npy", data)
        if scale is not None:
            atomic_save_npy(self.path / f"{name}.scale.npy", scale)
        atomic_save_npy(self.path / f"{name}.ids.npy", ids)
        return {"name": name, "n": len(ids)}

    def _remove_orphans(self, manifest: dict) -> None:
        remove_temp_files(self.path)  # temp files of writes that a crash interrupted (we hold the lock)
        known = {s["name"] for s in manifest["shards"]}
        for f in self.path.glob("*.npy"):
            stem = f.name.split(".")[0]
            if stem not in known:
                log.info("removing uncommitted shard file %s", f)
                remove_file(f)


def remove_uncommitted(folder: Path) -> None:
    """Remove a store folder that has no manifest (nothing in it is committed), e.g. what is left of a
    store whose every vector was deleted when that deletion was interrupted. Caller holds the lock."""
    remove_temp_files(folder)
    for f in sorted(folder.glob("*.npy")):
        remove_file(f)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _next_shard(manifest: dict) -> int:
    """The number of a new shard: above every shard the manifest names."""
    return max([int(sh["name"]) for sh in manifest["shards"]] + [0]) + 1


def encode_vectors(X: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 rows -> (stored array, per-row scales or None) for a storage dtype.

    int8 keeps each row's largest absolute value at 127 (scale = max|x| / 127), so unit rows and
    unscaled ``precomputed`` rows both use the full 8-bit range.
    """
    if dtype == "float32":
        return np.ascontiguousarray(X, dtype=np.float32), None
    if dtype == "float16":
        big = float(np.abs(X).max(initial=0.0))
        if big > _FP16_MAX:
            raise ValueError(f"a value of {big:.3g} does not fit float16 (max {_FP16_MAX:.0f}); store float32")
        return X.astype(np.float16), None
    if dtype == "int8":
        scale = (np.abs(X).max(axis=1) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(X / scale[:, None]), -127, 127).astype(np.int8)
        return q, scale
    raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")


def decode_vectors(data: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """Stored rows (and int8 scales) -> float32 rows."""
    out = np.asarray(data, dtype=np.float32)
    if scale is not None:
        out = out * np.asarray(scale, dtype=np.float32)[:, None]
    return out


def dtype_recall(X: np.ndarray, dtype: str, *, k: int = 10, n_queries: int = 200, seed: int = 0,
                 block: int = 65_536) -> float:
    """recall@k of exact cosine search over ``X`` (n, d) stored as ``dtype``, against the same search
    over ``X`` itself: what storing the vectors in ``dtype`` costs search.

    Queries are a seeded sample of the rows, kept in float32 (as an encoded query is); each query's own
    row is left out on both sides. Blocked over the rows, so memory stays at ``n_queries x block``.
    """
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    k = min(k, n - 1)
    if k < 1:
        raise ValueError(f"dtype_recall needs at least 2 rows; got {n}")
    sel = np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False)
    Q = X[sel] / np.maximum(np.linalg.norm(X[sel], axis=1, keepdims=True), 1e-12)

    def topk(convert) -> np.ndarray:
        best_s = np.full((len(Q), k), -np.inf, np.float32)
        best_i = np.zeros((len(Q), k), np.int64)
        for start in range(0, n, block):
            B = convert(X[start : start + block])
            B = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
            S = Q @ B.T
            own = (sel >= start) & (sel < start + len(B))
            S[np.flatnonzero(own), sel[own] - start] = -np.inf
            s_all = np.concatenate([best_s, S], axis=1)
            i_all = np.concatenate([best_i, np.arange(start, start + len(B))[None, :].repeat(len(Q), 0)], axis=1)
            part = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(s_all, part, 1), np.take_along_axis(i_all, part, 1)
        return best_i

    truth = topk(lambda B: B)
    got = topk(lambda B: decode_vectors(*encode_vectors(B, dtype)))
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth.tolist(), got.tolist())]))


class _StoreView:
    """One committed version of a store: ids (deduplicated, last write wins) + memory-mapped shards."""

    def __init__(self, ids: np.ndarray, rows: np.ndarray, offsets: np.ndarray, shards: list, dim: int):
        self.ids = ids            # (n,) str
        self._rows = rows         # (n,) int64 global row (over all shards) of each id
        self._offsets = offsets   # (n_shards + 1,) int64 first global row of each shard
        self._shards = shards     # [(memmap (n_i, dim), scale (n_i,) or None)]
        self.dim = dim
        self._index = None        # pandas Index over ids, built on first lookup

    def positions(self, ids) -> np.ndarray:
        import pandas as pd

        if not len(self.ids):  # an empty store: no look-up (and no object copy of the ids)
            return np.full(len(ids), -1, dtype=np.int64)
        if self._index is None:
            self._index = pd.Index(self.ids)
        return self._index.get_indexer(np.asarray(ids, dtype=object)).astype(np.int64)

    @classmethod
    def empty(cls, dim: int, dtype: str) -> _StoreView:
        return cls(np.zeros((0,), dtype="U1"), np.zeros((0,), np.int64), np.zeros((1,), np.int64), [], dim)

    @classmethod
    def open(cls, folder: Path, manifest: dict) -> _StoreView:
        dim = int(manifest["dim"])
        shards, id_parts, sizes = [], [], []
        for sh in manifest["shards"]:
            X = np.load(folder / f"{sh['name']}.npy", mmap_mode="r")
            ids = np.load(folder / f"{sh['name']}.ids.npy", allow_pickle=False)
            scale = None
            if manifest.get("dtype") == "int8":
                scale = np.load(folder / f"{sh['name']}.scale.npy", allow_pickle=False)
            if len(X) != len(ids) or ((X.ndim != 2 or X.shape[1] != dim) and len(X)):
                raise ValueError(f"vector shard {sh['name']} in {str(folder)!r} is inconsistent: "
                                 f"{X.shape} vectors, {len(ids)} ids, dim {dim}")
            shards.append((X, scale))
            id_parts.append(ids)
            sizes.append(len(ids))
        if not id_parts:
            return cls.empty(dim, manifest.get("dtype", "float32"))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        ids = np.concatenate(id_parts)
        # keep the last occurrence of each id (two writers may have stored the same item); hashing,
        # not sorting: 0.2 s for a million ids
        import pandas as pd

        dup = pd.Index(ids).duplicated(keep="last")
        if not dup.any():
            return cls(ids, np.arange(len(ids), dtype=np.int64), offsets, shards, dim)
        keep = np.flatnonzero(~dup).astype(np.int64)
        return cls(ids[keep], keep, offsets, shards, dim)

    def take(self, rows: np.ndarray) -> np.ndarray:
        n = len(self.ids)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"vector rows must be in [0, {n}); got {int(rows.min())}..{int(rows.max())}")
        out = np.empty((len(rows), self.dim), np.float32)
        if not len(rows):
            return out
        g = self._rows[rows]
        shard_of = np.searchsorted(self._offsets, g, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            local = g[where] - self._offsets[s]
            order = np.argsort(local, kind="stable")  # ascending reads from the memory map
            X, scale = self._shards[s]
            lo = local[order]
            whole = len(lo) == len(X) and np.array_equal(lo, np.arange(len(X)))
            block = X[:] if whole else X[lo]
            out[where[order]] = decode_vectors(block, None if scale is None else scale[lo])
        return out
