"""Crash harness: run a Jointscope job in a child process and SIGKILL it at a chosen point.

Used by ``tests/hardening/test_crash.py``; run as ``python crash_harness.py`` (a server). It imports
the heavy modules (torch, open_clip, umap, sklearn, hnswlib, pandas) and loads the ``demo`` encoder
once, then answers one JSON request per stdin line with one JSON line on stdout. Each request runs
one job in a **forked** child, so every run is a real process that really dies by SIGKILL, while
the imports are paid once.

Kill points are real boundaries inside real writes. In the child, ``core.storage`` sees proxies of
``os`` and ``tempfile`` that number every step of every atomic write:

* ``open``     before the temp file is created
* ``write``    in the middle of the data: half of the first chunk is in the temp file
* ``fsync``    all data written and flushed, before fsync
* ``replace``  before the rename over the target
* ``renamed``  after the rename, before the folder is fsynced

* ``unlink``   before a file is removed (``core.storage.remove_file``: what a deletion removes)

plus ``progress`` (every progress callback of an embedding run: between encoder batches). A request
with ``kill_at=N`` kills the child at event N; ``timer=S`` kills it S seconds into the job (mid-
compute). Every event is appended to the ``events`` file as it happens (unbuffered, so it survives
the kill): a run without a kill point enumerates the points. Steps that a job knows are committed
are appended to the ``journal`` file after they return.

Request: ``{"job", "ws", "data", "events", "journal", "kill_at": int|null, "timer": float|null,
"timeout": float}``. Answer: ``{"status": "killed"|"exited"|"failed"|"hung", "code", "seconds"}``.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "demo"
INDEX_EXACT_THRESHOLD = 16  # so that the 60-item test index is an hnswlib graph (hnsw.bin is written too)
EMBED_CHUNK = 12  # vectors are committed every 12 items: several commits per run
EMBED_BATCH = 6
UMAP_PARAMS = {"method": "umap", "n_neighbors": 10, "random_state": 0}
PCA_PARAMS = {"method": "pca", "random_state": 0}
STALE_INDEX_ITEMS = 40  # the index job starts from a saved index over the first 40 items


# ---- kill points ----------------------------------------------------------------------------------
class Killer:
    """Numbers events; appends each to the events file; SIGKILLs this process at event ``target``."""

    def __init__(self, events_path: str | None, target: int | None, ws_root: Path):
        self.n = 0
        self.target = target
        self.root = ws_root
        self.fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if events_path else None

    def rel(self, path) -> str:
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def hit(self, kind: str, what: str) -> None:
        i = self.n
        self.n += 1
        if self.fd is not None:
            os.write(self.fd, f"{i}\t{kind}\t{what}\n".encode())
        if i == self.target:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(5)  # never reached: SIGKILL cannot be caught


KILLER: Killer | None = None


class _KillingFile:
    """The temp file of an atomic write: the first write stops half-way at the ``write`` event."""

    def __init__(self, f, target: Path):
        self._f, self._target, self._first = f, target, True

    def write(self, data) -> int:
        if self._first:
            self._first = False
            mv = memoryview(data).cast("B")
            half = len(mv) // 2 if len(mv) > 1 else len(mv)
            self._f.write(mv[:half])
            self._f.flush()
            KILLER.hit("write", KILLER.rel(self._target))
            self._f.write(mv[half:])
            return len(mv)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __getattr__(self, name):
        return getattr(self._f, name)


class _OsProxy:
    """What ``core.storage`` sees as ``os``: counts fdopen / fsync / replace of atomic writes."""

    def __init__(self, real):
        self._real = real
        self.target: Path | None = None
        self.file_fd: int | None = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def fdopen(self, fd, *args, **kwargs):
        f = self._real.fdopen(fd, *args, **kwargs)
        self.file_fd = fd
        return _KillingFile(f, self.target)

    def fsync(self, fd):
        if fd == self.file_fd:  # the temp file (the folder fsync after the rename is not a point)
            KILLER.hit("fsync", KILLER.rel(self.target))
            self.file_fd = None
        return self._real.fsync(fd)

    def replace(self, src, dst):
        KILLER.hit("replace", KILLER.rel(dst))
        self._real.replace(src, dst)
        KILLER.hit("renamed", KILLER.rel(dst))

    def unlink(self, path, *args, **kwargs):  # core.storage.remove_file: every removal of a deletion
        KILLER.hit("unlink", KILLER.rel(path))
        return self._real.unlink(path, *args, **kwargs)


class _TempfileProxy:
    def __init__(self, real, os_proxy: _OsProxy):
        self._real, self._os = real, os_proxy

    def __getattr__(self, name):
        return getattr(self._real, name)

    def mkstemp(self, *args, prefix=None, dir=None, **kwargs):
        # core.storage names temp files ".<target name>.<random>.tmp" beside the target
        target = Path(dir) / (prefix[1:-1] if prefix else "?")
        self._os.target = target
        KILLER.hit("open", KILLER.rel(target))
        return self._real.mkstemp(*args, prefix=prefix, dir=dir, **kwargs)


def install(events_path: str | None, target: int | None, ws_root: Path) -> None:
    import tempfile

    import core.storage as storage
    import core.workspace

    global KILLER
    KILLER = Killer(events_path, target, ws_root)
    os_proxy = _OsProxy(os)
    storage.os = os_proxy
    storage.tempfile = _TempfileProxy(tempfile, os_proxy)
    # kill points are numbered in the order of the writes: an import stores one image at a time here, so
    # that order is the same in every run (stored at once, each file is still written the same atomic way)
    core.workspace.STORE_THREADS = 1


# ---- jobs -------------------------------------------------------------------------------------------
def _journal(path: str | None, record: dict) -> None:
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _journal_vector_commits(journal: str | None) -> None:
    """Journal the ids of every vector shard once its manifest commit has returned."""
    from core.vectorstore import VectorStore

    real_append = VectorStore.append

    def append(self, X, ids, **kw):
        ids = [str(i) for i in ids]
        real_append(self, X, ids, **kw)
        _journal(journal, {"step": "vectors", "model": self.model_id, "ids": ids})

    VectorStore.append = append


def job_ingest(ws_path: Path, data: Path, journal: str | None) -> None:
    from core.workspace import Workspace

    spec = json.loads((data / "ingest.json").read_text())
    ws = Workspace(ws_path)
    for k, batch in enumerate(spec["batches"]):
        ws.ingest([data / p for p in batch["paths"]], texts=batch["texts"])
        _journal(journal, {"step": "ingest", "batch": k})


def job_embed(ws_path: Path, data: Path, journal: str | None) -> None:
    from core.workspace import Workspace

    def progress(done: int, total: int) -> None:
        KILLER.hit("progress", f"{done}/{total}")

    Workspace(ws_path, create=False).embed(MODEL, progress=progress, chunk_size=EMBED_CHUNK,
                                           batch_size=EMBED_BATCH)
    _journal(journal, {"step": "embed"})


def job_embed_manifest_first(ws_path: Path, data: Path, journal: str | None) -> None:
    """``embed`` with a deliberately wrong commit order (manifest before the shards it names): the
    test runs it once to show that its checks catch a torn commit."""
    from core import vectorstore

    real_npy, real_json, pending = vectorstore.atomic_save_npy, vectorstore.atomic_write_json, []

    def save_npy(path, array):
        pending.append((path, array))

    def write_json(path, obj):
        real_json(path, obj)
        for p, a in pending:
            real_npy(p, a)
        pending.clear()

    vectorstore.atomic_save_npy, vectorstore.atomic_write_json = save_npy, write_json
    job_embed(ws_path, data, journal)


def job_prep_index(ws_path: Path, data: Path, journal: str | None) -> None:
    """A saved index over the first items only, as an earlier ``workspace_index`` call leaves it."""
    from core.index import NeighborIndex, index_dir
    from core.workspace import Workspace

    ws = Workspace(ws_path, create=False)
    X, ids = ws.vectors(MODEL)
    NeighborIndex("cosine").fit(X[:STALE_INDEX_ITEMS], ids[:STALE_INDEX_ITEMS]).save(
        index_dir(ws, MODEL), extra={"model": MODEL})


def job_index(ws_path: Path, data: Path, journal: str | None) -> None:
    from core.index import workspace_index
    from core.workspace import Workspace

    idx = workspace_index(Workspace(ws_path, create=False), MODEL)
    _journal(journal, {"step": "index", "n": len(idx.ids_)})


def _job_map(params: dict):
    def job(ws_path: Path, data: Path, journal: str | None) -> None:
        from core.projection import compute_map
        from core.workspace import Workspace

        res = compute_map(Workspace(ws_path, create=False), MODEL, **params)
        _journal(journal, {"step": "map", "method": params["method"], "n": int(res.n)})

    return job


def delete_ids(data: Path) -> list[str]:
    """The items the delete job removes (content ids, so a rerun names the same ones): a captioned image,
    another image's caption, a text with a precomputed vector and a loose text."""
    from core.workspace import content_id

    texts = ["caption 1-1 of a shape", "a loose text number 2-0", "a loose text number 0-1"]
    return [content_id("image", (data / "imgs0" / "0_0.png").read_bytes())] + \
        [content_id("text", t.encode()) for t in texts]


def job_delete(ws_path: Path, data: Path, journal: str | None) -> None:
    from core.workspace import Workspace

    ws = Workspace(ws_path, create=False)
    with contextlib.suppress(ValueError):  # rerun after the commit point: none is an item now (the rest is finished)
        ws.delete_items(delete_ids(data))
    _journal(journal, {"step": "delete"})


JOBS = {"ingest": job_ingest, "embed": job_embed, "embed-manifest-first": job_embed_manifest_first,
        "prep-index": job_prep_index, "index": job_index,
        "map-pca": _job_map(PCA_PARAMS), "map-umap": _job_map(UMAP_PARAMS), "delete": job_delete}


# ---- server -------------------------------------------------------------------------------------------
def preload() -> None:
    """Import what the jobs use and load the encoder once; children inherit it all by fork.

    Nothing here runs a parallel kernel (torch / numba thread pools do not survive a fork).
    """
    import hnswlib  # noqa: F401
    import open_clip  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.decomposition
    import sklearn.manifold
    import sklearn.neighbors  # noqa: F401
    import torch  # noqa: F401
    import umap  # noqa: F401

    import core
    import core.index
    import core.ingest
    import core.projection
    import core.workspace

    core.index.NeighborIndex.__init__.__kwdefaults__["exact_threshold"] = INDEX_EXACT_THRESHOLD
    core.load_encoder(MODEL)


def _child(req: dict) -> None:
    import torch

    torch.set_num_threads(1)  # the machine is shared; 60 tiny items need no more
    ws = Path(req["ws"]).resolve()
    install(req.get("events"), req.get("kill_at"), ws)
    _journal_vector_commits(req.get("journal"))
    if req.get("timer"):
        def fire():
            KILLER.hit("timer", f"{req['timer']:.3f}s")
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Timer(float(req["timer"]), fire).start()
    JOBS[req["job"]](ws, Path(req["data"]), req.get("journal"))


def run(req: dict) -> dict:
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run the job, never return into the server loop
        code = 0
        try:
            _child(req)
        except BaseException:  # noqa: BLE001 - reported as exit code 3 with the traceback on stderr
            traceback.print_exc()
            code = 3
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + float(req.get("timeout", 60))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"status": "hung", "code": None, "seconds": time.perf_counter() - t0}
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"status": "killed" if sig == signal.SIGKILL else "failed", "code": -sig, "seconds": seconds}
    code = os.WEXITSTATUS(status)
    return {"status": "exited" if code == 0 else "failed", "code": code, "seconds": seconds}


def serve() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by the jobs goes to stderr; stdout carries only the protocol
    preload()
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = run(json.loads(line))
        except Exception as e:  # noqa: BLE001 - a broken request must not kill the server
            answer = {"status": "error", "code": None, "seconds": 0.0, "error": repr(e)}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    serve()
