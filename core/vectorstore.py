"""Per-model vector storage inside a workspace.

Layout of ``<workspace>/vectors/<slug>/``::

    manifest.json          {"model", "dim", "dtype", "shards": [{"name", "n"}], "format": 1}
    <name>.npy             (n, dim) float32 vectors, unit rows
    <name>.ids.npy         (n,) unicode item ids, aligned with the vectors

Each embedding run appends shards; the manifest is the commit point (written last, atomically), so a
crash mid-run leaves only unreferenced shard files, which are ignored and removed on the next write.
Shards are memory-mapped when read.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path

import numpy as np

from .storage import atomic_save_npy, atomic_write_json, read_json, remove_temp_files

log = logging.getLogger(__name__)


def model_slug(model_id: str) -> str:
    """A folder name for a model id: readable part + short hash (ids may contain '/' or ':')."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:60] or "model"
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class VectorStore:
    """Vectors of one model for items of one workspace."""

    def __init__(self, root: Path, model_id: str):
        self.model_id = model_id
        self.path = Path(root) / model_slug(model_id)
        self._cache_key = None
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
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

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (vectors (n, dim) float32, ids (n,) str); the last write of an id wins."""
        try:
            st = self.manifest_path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return np.zeros((0, 0), np.float32), np.zeros((0,), dtype="U1")
        with self._mutex:
            if self._cache is not None and self._cache_key == key:
                return self._cache
            m = self.manifest()
            dim = int(m["dim"])
            xs, ids = [], []
            for sh in m["shards"]:
                xs.append(np.load(self.path / f"{sh['name']}.npy", mmap_mode="r"))
                ids.append(np.load(self.path / f"{sh['name']}.ids.npy", allow_pickle=False))
            if not xs:
                out = (np.zeros((0, dim), np.float32), np.zeros((0,), dtype="U1"))
            else:
                X = np.concatenate(xs, axis=0).astype(np.float32, copy=False)
                I = np.concatenate(ids, axis=0)
                # keep the last occurrence of each id
                _, last = np.unique(I[::-1], return_index=True)
                keep = np.sort(len(I) - 1 - last)
                out = (X[keep], I[keep]) if len(keep) != len(I) else (X, I)
            self._cache, self._cache_key = out, key
            return out

    def ids(self) -> set[str]:
        return set(self.load()[1].tolist())

    def append(self, X: np.ndarray, ids, *, extra: dict | None = None) -> None:
        """Add a shard. Caller holds the workspace write lock."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        ids = np.asarray(list(ids), dtype=str)
        if X.ndim != 2 or len(X) != len(ids):
            raise ValueError(f"vectors must be (n, d) aligned with ids; got {X.shape} and {len(ids)} ids")
        if len(ids) == 0:
            return
        if not np.isfinite(X).all():
            raise ValueError(f"refusing to store non-finite vectors for model {self.model_id!r}")
        m = self.manifest() or {"format": 1, "model": self.model_id, "dim": int(X.shape[1]),
                                "dtype": "float32", "shards": []}
        if int(m["dim"]) != X.shape[1]:
            raise ValueError(f"model {self.model_id!r} has {m['dim']}-d vectors in this workspace; "
                             f"got {X.shape[1]}-d")
        if extra:
            m.update(extra)
        self.path.mkdir(parents=True, exist_ok=True)
        self._remove_orphans(m)
        n = max([int(s["name"]) for s in m["shards"]] + [0]) + 1
        name = f"{n:06d}"
        atomic_save_npy(self.path / f"{name}.npy", X)
        atomic_save_npy(self.path / f"{name}.ids.npy", ids)
        m["shards"] = m["shards"] + [{"name": name, "n": int(len(ids))}]
        atomic_write_json(self.manifest_path, m)  # commit point

    def _remove_orphans(self, manifest: dict) -> None:
        remove_temp_files(self.path)  # temp files of writes that a crash interrupted (we hold the lock)
        known = {s["name"] for s in manifest["shards"]}
        for f in self.path.glob("*.npy"):
            stem = f.name.split(".")[0]
            if stem not in known:
                log.info("removing uncommitted shard file %s", f)
                f.unlink(missing_ok=True)
