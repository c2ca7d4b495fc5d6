"""Embedding at scale: the same encoders run by Ray Data (``engine="ray"``) or in this process (``"local"``).

Two inputs, one output (a normal workspace: ``items.parquet`` + sharded vectors, see core.vectorstore):

* a **workspace** — its items without a vector for the model (incremental, like ``Workspace.embed``);
* a **manifest** — Parquet or CSV (a file, a folder of files or a glob) with an image column (paths
  relative to the manifest, absolute paths, ``file://``, ``http(s)://`` or any URI pyarrow opens:
  ``s3://``, ``gs://``, ``hdfs://``) and/or a text column; other columns become metadata. Each row
  gives an image item and/or a text item (paired when both), with the ids ingestion gives them (sha256
  of the image bytes / the text), so re-running or re-ingesting never duplicates. Images are
  referenced where they are, not copied (no thumbnails).

With Ray, the pipeline is Ray Data's: ``read_parquet``/``read_csv`` (or ``from_pandas`` of the
workspace's items) -> ``map_batches`` with :class:`EmbedBatches`, a callable class, so each worker of
the actor pool loads the encoder (``core.load_encoder``) once; one GPU per worker when the cluster has
GPUs -> the driver streams the results (``iter_batches``) into the workspace, committing a vector
shard every ``chunk_size`` items (the manifest is the commit point, so an interrupted run keeps its
finished chunks; a rerun skips items that already have a vector). The local engine runs the same
:class:`EmbedBatches` over the same batches in this process, so both give the same vectors.

Ray is optional (``pip install '.[ray]'``) and imported only here, only when the Ray engine runs.
"""
from __future__ import annotations

import glob
import logging
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .embedding import EmbedReport, VectorCommit
from .errors import one_line
from .images import read_image_bytes
from .progress import Progress
from .workspace import Workspace, content_id

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
IMAGE_COLUMNS = ("image", "filepath", "image_path", "path", "url", "image_url", "uri")
TEXT_COLUMNS = ("text", "caption", "title", "description")
ROWS_PER_CALL = 256          # rows handed to one EmbedBatches call (Ray Data batch_size)
CHUNK_SIZE = 16_384          # items per committed vector shard
MAX_TEXT_CHARS = 100_000
_OUT_COLUMNS = ("id", "modality", "text", "image", "source", "pair", "width", "height", "status", "error",
                "row_first")


class RayNotInstalled(ImportError):
    pass


@dataclass
class EngineReport(EmbedReport):
    """``EmbedReport`` plus how the run went: engine, items added (manifest), workers, GPUs, rate."""

    engine: str = "local"
    added: int = 0
    workers: int = 1
    gpus: int = 0
    address: str | None = None
    first_result_s: float | None = None  # until the first encoded batch came back (start-up, model loads)
    steady_items_per_s: float | None = None  # encoded items per second after that

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(engine=self.engine, added=self.added, workers=self.workers, gpus=self.gpus,
                   items_per_s=round(self.embedded / self.seconds, 2) if self.seconds > 0 else None,
                   first_result_s=None if self.first_result_s is None else round(self.first_result_s, 3),
                   steady_items_per_s=None if self.steady_items_per_s is None else round(self.steady_items_per_s, 2))
        if self.address:
            out["address"] = self.address
        return out


# ---- reading images ----------------------------------------------------------------------------
def _resolve_ref(ref: str, base_dir: str | None) -> str:
    """What the workspace stores as ``image``: an absolute path for local files, the URI otherwise."""
    if ref.startswith("file://"):
        return str(Path(ref[len("file://"):]).resolve())
    if "://" in ref:
        return ref
    p = Path(ref).expanduser()
    if not p.is_absolute() and base_dir:
        p = Path(base_dir) / p
    return str(p.resolve())


# ---- the batch function (one per worker) -------------------------------------------------------
class EmbedBatches:
    """Callable class for ``Dataset.map_batches``: the encoder is loaded once per worker (in ``__init__``).

    ``mode="items"``: batches of workspace items (``id, modality, text, image`` = absolute path,
    ``source``). ``mode="manifest"``: batches of manifest rows (``image_column`` and/or
    ``text_column`` + ``meta_columns``); one output row per item, image before text.
    Output columns: ``id, modality, text, image, source, pair, width, height, status`` ("ok",
    "cached": had a vector, not encoded again; "error"), ``error``, ``row_first`` (the first item of
    its input row, for progress), ``vector`` (n, dim) float32 (zeros unless status is "ok"), and the
    metadata columns.
    """

    def __init__(self, model: str, *, mode: str = "items", device: str = "auto", batch_size: int | None = None,
                 threads: int | None = None, image_column: str | None = None, text_column: str | None = None,
                 meta_columns: Sequence[str] = (), base_dir: str | None = None, source: str = "manifest",
                 skip_ids: Iterable[str] | None = None, reduced: bool = True):
        from .encoders import load_encoder

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.encoder = load_encoder(model, device=device)
        self.mode = mode
        self.batch_size = batch_size
        self.image_column, self.text_column = image_column, text_column
        self.meta_columns = list(meta_columns)
        self.base_dir = base_dir
        self.source = source
        self.skip = frozenset(skip_ids or ())
        self.reduced = reduced

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = self._items(batch) if self.mode == "items" else self._manifest_items(batch)
        return self._encode(rows, batch)

    # -- rows -> items --
    def _items(self, batch) -> list[dict]:
        out = []
        for i, (cid, mod) in enumerate(zip(batch["id"], batch["modality"])):
            r = {"id": str(cid), "modality": str(mod), "text": _str(batch["text"][i]),
                 "image": _str(batch["image"][i]), "source": _str(batch["source"][i]) or str(cid), "pair": None,
                 "src_row": i, "row_first": True}
            if cid in self.skip:
                r["status"] = "cached"
            out.append(r)
        return out

    def _manifest_items(self, batch) -> list[dict]:
        n = len(next(iter(batch.values()))) if batch else 0
        out = []
        for i in range(n):
            row_items = []
            ref = _str(batch[self.image_column][i]) if self.image_column else None
            if ref and ref.strip():
                ref = ref.strip()
                r = {"modality": "image", "text": None, "image": _resolve_ref(ref, self.base_dir), "source": ref,
                     "src_row": i}
                try:
                    data = read_image_bytes(ref, self.base_dir)
                    r["id"] = content_id("image", data)
                    if "://" in ref and not ref.startswith("file://"):
                        r["_bytes"] = data  # remote: read once; local files are read again when decoded
                except Exception as e:  # noqa: BLE001 - one bad reference must not stop the run
                    r.update(id=None, status="error", error=f"cannot read image ({one_line(e)})")
                row_items.append(r)
            text = _str(batch[self.text_column][i]) if self.text_column else None
            if text is not None and text.strip():
                text = text.strip()
                r = {"modality": "text", "text": text, "image": None, "source": self.source, "src_row": i,
                     "id": content_id("text", text.encode("utf-8"))}
                if len(text) > MAX_TEXT_CHARS:
                    r.update(status="error", error=f"text is {len(text):,} characters, over the "
                                                    f"{MAX_TEXT_CHARS:,} limit")
                row_items.append(r)
            ok = [r for r in row_items if r.get("status") != "error"]
            if len(ok) == 2:  # an image and its caption
                ok[0]["pair"], ok[1]["pair"] = ok[1]["id"], ok[0]["id"]
            for j, r in enumerate(row_items):
                r.setdefault("pair", None)
                r["row_first"] = j == 0
                if r.get("status") is None and r["id"] in self.skip:
                    r["status"] = "cached"
                    r.pop("_bytes", None)
            out += row_items
        return out

    # -- items -> vectors --
    def _encode(self, rows: list[dict], batch) -> dict[str, np.ndarray]:
        enc = self.encoder
        dim = int(enc.dim)
        X = np.zeros((len(rows), dim), np.float32)
        texts, text_pos, images, image_pos = [], [], [], []
        for k, r in enumerate(rows):
            r.setdefault("width", -1)
            r.setdefault("height", -1)
            r.setdefault("error", "")
            if r.get("status") is not None:
                continue
            if r["modality"] not in enc.modalities or (r["modality"] == "text" and not r["text"]):
                r["status"], r["error"] = "unsupported", f"{enc.id} does not encode {r['modality']}s"
                continue
            if r["modality"] == "text":
                texts.append(r["text"])
                text_pos.append(k)
            else:  # decoded in the encoder's bounded prefetch, not all rows of the call at once
                data = r.pop("_bytes", None)
                images.append(data if data is not None else r["image"])
                image_pos.append(k)
        if texts:
            X[text_pos] = enc.encode_texts(texts, batch_size=self.batch_size)
            for k in text_pos:
                rows[k]["status"] = "ok"
        if images:
            for b in enc.iter_encode_images(images, batch_size=self.batch_size, reduced=self.reduced):
                for i, why in b.errors:
                    rows[image_pos[i]].update(status="error", error=f"cannot read image ({why})")
                for i, x, (w, h) in zip(b.positions, b.vectors, b.sizes):
                    k = image_pos[i]
                    X[k] = x
                    rows[k].update(status="ok", width=w, height=h)
        out: dict[str, np.ndarray] = {}
        for col in _OUT_COLUMNS:
            vals = [r.get(col) for r in rows]
            if col in ("width", "height"):
                out[col] = np.asarray(vals, dtype=np.int64)
            elif col == "row_first":
                out[col] = np.asarray(vals, dtype=bool)
            else:
                out[col] = np.asarray(["" if v is None else str(v) for v in vals], dtype=object)
        out["vector"] = X
        src = np.asarray([r["src_row"] for r in rows], dtype=np.int64)
        for col in self.meta_columns:
            out[f"meta:{col}"] = np.asarray(batch[col])[src] if len(src) else np.asarray(batch[col])[:0]
        return out


def _str(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


# ---- the driver side: results -> workspace ------------------------------------------------------
class _Sink:
    """Collects EmbedBatches output on the driver; commits a vector shard every ``chunk_size`` items through
    ``commit`` (the :class:`~core.embedding.VectorCommit` made before the run read which items need vectors)."""

    def __init__(self, ws: Workspace, model: str, report: EngineReport, *, commit: VectorCommit, chunk_size: int,
                 collect_items: bool, progress: Progress | None, total: int):
        self.ws, self.model, self.report = ws, model, report
        self.commit = commit
        self.chunk_size = chunk_size
        self.collect_items = collect_items
        self.progress, self.total, self.done = progress, total, 0
        self._ids: list[np.ndarray] = []
        self._X: list[np.ndarray] = []
        self._pending = 0
        self._stored: set[str] = set()
        self._counted: set[str] = set()
        self._items: list[pd.DataFrame] = []
        self._t0 = time.perf_counter()
        self._first: tuple[float, int] | None = None  # (time, items encoded) at the first result
        self._last: tuple[float, int] = (self._t0, 0)
        self._encoded = 0

    def add(self, b: dict[str, np.ndarray]) -> None:
        status = np.asarray(b["status"]).astype(str)
        now = time.perf_counter()
        self._encoded += int((status == "ok").sum())
        if self._first is None and self._encoded:
            self._first = (now, self._encoded)
        self._last = (now, self._encoded)
        ids = np.asarray(b["id"]).astype(str)
        for src, err in zip(np.asarray(b["source"])[status == "error"], np.asarray(b["error"])[status == "error"]):
            self.report.errors.append((str(src), str(err)))
        # count each item once even when the input repeats it (the same image or caption on two rows)
        first = np.fromiter((i not in self._counted for i in ids.tolist()), dtype=bool, count=len(ids))
        first &= ~pd.Index(ids).duplicated(keep="first")
        self._counted.update(ids[first & (status != "error")].tolist())
        self.report.unsupported += int(((status == "unsupported") & first).sum())
        self.report.cached += int(((status == "cached") & first).sum())
        ok = status == "ok"
        if ok.any():
            # the same content twice in one run (e.g. a caption shared by many images): store it once
            seen = np.fromiter((i in self._stored for i in ids.tolist()), dtype=bool, count=len(ids))
            keep = np.flatnonzero(ok & ~seen)
            _, first = np.unique(ids[keep], return_index=True)
            keep = keep[np.sort(first)]
            self._ids.append(ids[keep])
            self._X.append(np.asarray(b["vector"], dtype=np.float32)[keep])
            self._pending += len(keep)
            self._stored.update(ids[keep].tolist())
        if self.collect_items:
            good = np.flatnonzero((status == "ok") | (status == "cached") | (status == "unsupported"))
            if len(good):
                df = pd.DataFrame({c: np.asarray(b[c])[good] for c in ("id", "modality", "text", "image", "source",
                                                                       "pair", "width", "height")})
                for c in ("text", "image", "pair"):
                    df[c] = df[c].where(df[c] != "", None)
                for c in ("width", "height"):
                    df[c] = df[c].where(df[c] >= 0, None)
                for key in b:
                    if key.startswith("meta:"):
                        df[key[len("meta:"):]] = np.asarray(b[key])[good]
                self._items.append(df)
        if self._pending >= self.chunk_size:
            self.flush()
        self.done += int(np.asarray(b["row_first"]).sum())
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def flush(self) -> None:
        if not self._pending:
            return
        X, ids = np.concatenate(self._X), np.concatenate(self._ids)
        self._X, self._ids, self._pending = [], [], 0
        self.report.embedded += self.commit(X, ids)  # ids another writer stored meanwhile are left out

    def finish(self) -> None:
        """Commit the last vectors, then the items (vectors first: items without vectors would be embedded
        again by a later run, vectors without items are simply not shown)."""
        if self._first is not None:
            self.report.first_result_s = self._first[0] - self._t0
            span, done = self._last[0] - self._first[0], self._last[1] - self._first[1]
            if span > 0 and done > 0:
                self.report.steady_items_per_s = done / span
        self.flush()
        if self.collect_items and self._items:
            rows = pd.concat(self._items, ignore_index=True)
            self._items = []
            self.report.added += self.ws.add_rows(rows)


# ---- inputs --------------------------------------------------------------------------------------
def manifest_files(manifest: str | os.PathLike) -> tuple[list[str], str]:
    """The files of a manifest (a file, a folder of .parquet/.csv files, or a glob) and their format."""
    m = str(manifest)
    if any(ch in m for ch in "*?["):
        files = sorted(glob.glob(m))
    elif Path(m).is_dir():
        files = sorted(str(p) for p in Path(m).iterdir() if p.suffix.lower() in (".parquet", ".csv", ".tsv"))
    else:
        files = [m] if Path(m).is_file() else []
    if not files:
        raise FileNotFoundError(f"manifest {m!r}: no .parquet or .csv file found")
    kinds = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    fmts = {kinds.get(Path(f).suffix.lower()) for f in files}
    if None in fmts or len(fmts) != 1:
        raise ValueError(f"manifest {m!r}: give Parquet or CSV files, all of one kind; got "
                         f"{sorted({Path(f).suffix or '(no suffix)' for f in files})}")
    return files, fmts.pop()


def _manifest_schema(files: list[str], fmt: str) -> list[str]:
    import pyarrow.dataset as pads

    return list(pads.dataset(files[0], format=fmt).schema.names)


def manifest_columns(columns: Sequence[str], image_column: str | None = None,
                     text_column: str | None = None) -> tuple[str | None, str | None, list[str]]:
    """(image column, text column, metadata columns) of a manifest: given names, else the first of
    IMAGE_COLUMNS / TEXT_COLUMNS present (case-insensitive)."""
    lower = {c.lower(): c for c in columns}

    def pick(given, candidates, what):
        if given is not None:
            if given not in columns:
                raise ValueError(f"manifest has no {what} column {given!r}; columns: {list(columns)}")
            return given
        return next((lower[c] for c in candidates if c in lower), None)

    img = pick(image_column, IMAGE_COLUMNS, "image")
    txt = pick(text_column, TEXT_COLUMNS, "text")
    if img is None and txt is None:
        raise ValueError(f"manifest has neither an image column ({', '.join(IMAGE_COLUMNS)}) nor a text column "
                         f"({', '.join(TEXT_COLUMNS)}); name them with --image-column / --text-column. "
                         f"Columns: {list(columns)}")
    meta = [c for c in columns if c not in (img, txt) and not c.startswith("__")]
    return img, txt, meta


def _count_rows(files: list[str], fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(sum(pq.ParquetFile(f).metadata.num_rows for f in files))
    return 0  # CSV: unknown without reading it all


def _local_manifest_batches(files: list[str], fmt: str, rows: int) -> Iterable[dict[str, np.ndarray]]:
    import pyarrow.dataset as pads

    fmt_obj = fmt
    if fmt == "csv" and any(f.lower().endswith(".tsv") for f in files):
        import pyarrow.csv as pacsv

        fmt_obj = pads.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter="\t"))
    for rb in pads.dataset(files, format=fmt_obj).to_batches(batch_size=rows):
        if rb.num_rows:
            yield {name: rb.column(i).to_numpy(zero_copy_only=False) for i, name in enumerate(rb.schema.names)}


# ---- Ray -----------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise RayNotInstalled("the Ray engine needs Ray Data: pip install '.[ray]' "
                              "(or pip install 'ray[data]'); or use --engine local") from e
    return ray


def init_ray(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int | None = None):
    """Connect to the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local instance.

    Returns ``(ray module, started_here)``; a caller that started it should ``ray.shutdown()``. An
    already initialised Ray (e.g. by the caller) is reused as it is.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, "ignore_reinit_error": True}
    if address:
        ray.init(address=address, **kw)
    else:
        if object_store_mb is None:
            object_store_mb = 1024
        ray.init(num_cpus=num_cpus, object_store_memory=int(object_store_mb) * 1024 * 1024, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if not log.isEnabledFor(logging.INFO):  # Ray Data logs every execution plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray, True


def _ray_plan(ray, workers: int | None, cpus_per_worker: float, gpus: int | None,
              reads_files: bool) -> tuple[int, float, int]:
    """(workers, CPUs per worker, GPUs per worker) for the cluster Ray is connected to.

    Without GPUs, one worker per ``cpus_per_worker`` CPUs; when Ray Data reads files, one CPU is left
    for its read tasks (a pool holding every CPU starves them and the run never finishes — measured
    with Ray 2.60, even with read tasks asking for 0.01 CPU).
    """
    res = ray.cluster_resources()
    n_gpu = int(res.get("GPU", 0)) if gpus is None else int(gpus)
    n_cpu = float(res.get("CPU", 1))
    if n_gpu > 0:
        return (workers or n_gpu), min(cpus_per_worker, max(n_cpu - 1, 0.5) / n_gpu), 1
    free = n_cpu - (1 if reads_files else 0)
    fits = max(1, int(free // cpus_per_worker))
    if workers is not None and workers > fits:
        log.warning("%d workers of %g CPUs do not fit the cluster's %g CPUs%s; using %d", workers, cpus_per_worker,
                    n_cpu, " (one is kept for reading)" if reads_files else "", fits)
    return min(workers or fits, fits), cpus_per_worker, 0


def _run_ray(ds_factory, fn_kwargs: dict, sink: _Sink, *, address, workers, cpus_per_worker, gpus,
             rows_per_call, report: EngineReport, reads_files: bool, num_cpus=None, object_store_mb=None) -> None:
    ray, started = init_ray(address, num_cpus=num_cpus, object_store_mb=object_store_mb)
    warnings.filterwarnings("ignore", message=r".*minimum number of concurrent actors.*")
    try:
        n_workers, cpw, gpw = _ray_plan(ray, workers, cpus_per_worker, gpus, reads_files)
        report.workers, report.gpus = n_workers, n_workers * gpw
        report.address = address or os.environ.get("RAY_ADDRESS") or ("local" if started else "connected")
        # a GPU worker sees only its own GPU (Ray sets CUDA_VISIBLE_DEVICES), so "auto" picks it
        fn_kwargs = dict(fn_kwargs, threads=max(1, int(cpw)),
                         device="auto" if gpw else fn_kwargs.get("device") or "auto")
        ds = ds_factory(ray, n_workers)
        ds = ds.map_batches(EmbedBatches, fn_constructor_kwargs=fn_kwargs, batch_size=rows_per_call,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_workers),
                            num_cpus=cpw, num_gpus=gpw)
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            sink.add(b)
    finally:
        try:
            sink.finish()
        finally:
            if started:
                ray.shutdown()


# ---- public entry points -----------------------------------------------------------------------------
def embed_workspace(ws: Workspace, model: str, *, engine: str = "ray", address: str | None = None,
                    workers: int | None = None, cpus_per_worker: float = 1, gpus: int | None = None,
                    device: str = "auto", batch_size: int | None = None, chunk_size: int = CHUNK_SIZE,
                    dtype: str | None = None, progress: Progress | None = None, num_cpus: int | None = None,
                    object_store_mb: int | None = None, reduced_decode: bool = True) -> EngineReport:
    """Encode every item of ``ws`` without a vector for ``model`` (incremental), on Ray or locally.

    ``engine="local"`` is ``Workspace.embed``. ``engine="ray"``: Ray Data over the items, one encoder
    per worker (``workers`` defaults to one per GPU, else one per ``cpus_per_worker`` CPUs of the
    cluster). For a remote cluster the workspace folder must be on storage every node sees at the same
    path (the workers read its images). ``num_cpus`` / ``object_store_mb`` size a local Ray instance.
    """
    _check_engine(engine)
    t0 = time.perf_counter()
    if engine == "local":
        seen: list[tuple[float, int]] = []

        def timed(done: int, total: int) -> None:
            if done:
                seen.append((time.perf_counter(), done))
            if progress is not None:
                progress(done, total)

        r = ws.embed(model, progress=timed, device=device, batch_size=batch_size, dtype=dtype,
                     reduced_decode=reduced_decode)
        out = EngineReport(**{k: getattr(r, k) for k in EmbedReport.__dataclass_fields__}, engine="local")
        if seen:
            out.first_result_s = seen[0][0] - t0
            span, done = seen[-1][0] - seen[0][0], seen[-1][1] - seen[0][1]
            out.steady_items_per_s = done / span if span > 0 and done > 0 else None
        return out
    _check_model(model)
    _import_ray()  # fail early and the same way whether or not there is work
    commit = VectorCommit(ws, model, dtype=dtype)  # before the plan reads ids: a commit in between is caught
    plan = ws.plan_embed(model, dtype=dtype)  # the local engine's plan: same items, same checks
    todo = plan.todo
    report = EngineReport(model=model, cached=plan.cached, unsupported=plan.unsupported, engine="ray")
    sink = _Sink(ws, model, report, commit=commit, chunk_size=chunk_size, collect_items=False, progress=progress,
                 total=len(todo))
    if progress is not None:
        progress(0, len(todo))
    if len(todo):
        def factory(ray, n_workers):
            # several blocks, so every worker of the pool gets some
            n_blocks = max(1, min(-(-len(todo) // 32), 4 * n_workers))
            size = -(-len(todo) // n_blocks)
            return ray.data.from_pandas([todo.iloc[i:i + size] for i in range(0, len(todo), size)])

        _run_ray(factory, {"model": model, "mode": "items", "device": device, "batch_size": batch_size,
                           "reduced": reduced_decode}, sink,
                 address=address, workers=workers, cpus_per_worker=cpus_per_worker, gpus=gpus,
                 rows_per_call=ROWS_PER_CALL, report=report, reads_files=False, num_cpus=num_cpus,
                 object_store_mb=object_store_mb)
    report.seconds = time.perf_counter() - t0
    log.info("ray embed %s with %s: %d new, %d cached in %.1fs on %d workers", ws.name, model, report.embedded,
             report.cached, report.seconds, report.workers)
    return report


def embed_manifest(ws: Workspace, manifest: str | os.PathLike, model: str, *, engine: str = "ray",
                   image_column: str | None = None, text_column: str | None = None, address: str | None = None,
                   workers: int | None = None, cpus_per_worker: float = 1, gpus: int | None = None,
                   device: str = "auto", batch_size: int | None = None, chunk_size: int = CHUNK_SIZE,
                   dtype: str | None = None, progress: Progress | None = None, num_cpus: int | None = None,
                   object_store_mb: int | None = None, reduced_decode: bool = True) -> EngineReport:
    """Add the items of a manifest (Parquet/CSV of image references and/or texts) to ``ws`` with their
    ``model`` vectors, on Ray or locally (same batches, same vectors).

    Items already in the workspace with a vector are not encoded again (``cached``); unreadable images
    and over-long texts are reported in ``errors`` as (reference, reason) and skipped. Relative image
    paths are relative to the manifest's folder. With a remote cluster, references must be readable by
    every node (shared storage or URIs).
    """
    _check_engine(engine)
    _check_model(model)
    if engine == "ray":
        _import_ray()
    t0 = time.perf_counter()
    files, fmt = manifest_files(manifest)
    img_col, txt_col, meta = manifest_columns(_manifest_schema(files, fmt), image_column, text_column)
    base_dir = str(Path(files[0]).resolve().parent)
    commit = VectorCommit(ws, model, dtype=dtype)  # before the skip list is read: a commit in between is caught
    skip = ws.store(model).ids_array()
    ws.check_embed(model, dtype=dtype)
    fn_kwargs = {"model": model, "mode": "manifest", "device": device, "batch_size": batch_size,
                 "image_column": img_col, "text_column": txt_col, "meta_columns": meta, "base_dir": base_dir,
                 "source": Path(str(manifest)).name, "skip_ids": skip.tolist(), "reduced": reduced_decode}
    total = _count_rows(files, fmt)
    report = EngineReport(model=model, engine=engine)
    sink = _Sink(ws, model, report, commit=commit, chunk_size=chunk_size, collect_items=True, progress=progress,
                 total=total)
    if progress is not None:
        progress(0, total)
    if engine == "local":
        fn = EmbedBatches(**fn_kwargs)
        try:
            for batch in _local_manifest_batches(files, fmt, ROWS_PER_CALL):
                sink.add(fn(batch))
        finally:
            sink.finish()
    else:
        def factory(ray, n_workers):
            kw = {}
            if fmt == "parquet":
                ds = ray.data.read_parquet(files)
            else:
                if any(f.lower().endswith(".tsv") for f in files):
                    import pyarrow.csv as pacsv

                    kw["parse_options"] = pacsv.ParseOptions(delimiter="\t")
                ds = ray.data.read_csv(files, **kw)
            # blocks of at most ~1,000 rows (a streaming split, nothing is materialised): a manifest file
            # is one block per row group, which would give one worker all of it and return its results
            # only at the end
            rows = min(1024, -(-total // (4 * n_workers))) if total else 1024
            return ds.repartition(target_num_rows_per_block=max(32, rows))

        _run_ray(factory, fn_kwargs, sink, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                 gpus=gpus, rows_per_call=ROWS_PER_CALL, report=report, reads_files=True, num_cpus=num_cpus,
                 object_store_mb=object_store_mb)
    report.seconds = time.perf_counter() - t0
    log.info("%s embed of manifest %s with %s: %d new vectors, %d items added in %.1fs", engine, manifest, model,
             report.embedded, report.added, report.seconds)
    return report


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")


def _check_model(model: str) -> None:
    from .encoders import modalities_of

    if not modalities_of(model):
        raise ValueError(f"model {model!r} has no encoder (precomputed vectors come with their table)")
