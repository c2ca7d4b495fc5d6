"""Adding items to a workspace: content ids, deduplication, pairs across modalities, stored image files and
uploaded vectors, committed under the workspace's write lock.

Every function takes the :class:`~core.workspace.Workspace` first and uses only its public methods;
``Workspace.ingest``, ``add_candidates``, ``add_row_table`` and ``add_rows`` call these.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from .progress import Progress
from .workspace import ITEM_COLUMNS, STORE_THREADS, IngestReport, Workspace

log = logging.getLogger(__name__)
T = TypeVar("T")


def add_candidates(ws: Workspace, candidates: Iterable, *, errors: Sequence[tuple[str, str]] = (),
                   progress: Progress | None = None) -> IngestReport:
    """Commit scanned candidates (see core.ingest.Candidate): ids, dedup, files, rows, vectors.

    ``progress(done, total)`` every 500 candidates and at the end (storing images and thumbnails is
    the slow part of a large upload)."""
    report = IngestReport(errors=list(errors))
    candidates, ids = _identify(ws, candidates, report)
    # pairs link across modalities: an image points at its (first) caption, a caption at its image
    first_of: dict[tuple[str, str], str] = {}
    for c, cid in zip(candidates, ids):
        if c.pair_key is not None:
            first_of.setdefault((c.pair_key, c.modality), cid)

    def partner(c) -> str | None:
        if c.pair_key is None or c.modality not in ("image", "text"):
            return None
        return first_of.get((c.pair_key, "text" if c.modality == "image" else "image"))
    with ws.writing():
        items = ws.items
        existing = dict(zip(items["id"], items["pair"]))
        pair_updates: dict[str, str] = {}
        new_rows: list[dict] = []
        added_rows: dict[str, dict] = {}
        vecs: dict[str, list[tuple[str, str, np.ndarray]]] = {}
        now = pd.Timestamp.now(tz="UTC")
        images: list[tuple[dict, Any]] = []  # (row, candidate) of new images, stored after this loop
        for c, cid in zip(candidates, ids):
            pair = partner(c)
            for model, v in (c.vectors or {}).items():
                vecs.setdefault(model, []).append((cid, c.source, v))
            if cid in existing:
                report.skipped += 1
                report.repeated += cid in added_rows
                if pair is not None and existing[cid] is None and pair != cid:
                    existing[cid] = pair
                    if cid in added_rows:  # added earlier in this same call
                        added_rows[cid]["pair"] = pair
                    else:
                        pair_updates[cid] = pair
                continue
            row = {"id": cid, "modality": c.modality, "text": c.text, "image": None, "thumb": None,
                   "source": c.source, "pair": pair, "width": None, "height": None, "added": now}
            if c.modality == "image":
                images.append((row, c))
            for k, v in (c.meta or {}).items():
                key = f"meta_{k}" if k in ITEM_COLUMNS else str(k)
                row[key] = v
            existing[cid] = pair
            new_rows.append(row)
            added_rows[cid] = row
            report.ids.append(cid)
        failed = _store_images(ws, images, report, progress, len(candidates))
        if failed:  # one bad image must not stop the upload
            new_rows = [r for r in new_rows if r["id"] not in failed]
            report.ids = [i for i in report.ids if i not in failed]
            for cid in failed:
                existing.pop(cid, None)
        report.added = len(new_rows)
        if progress is not None:
            progress(len(candidates), len(candidates))
        stored_ids = set(existing)
        for model, entries in vecs.items():
            _store_vectors(ws, model, entries, stored_ids, report)
        if new_rows or pair_updates:
            df = items.copy()
            if pair_updates:
                m = df["id"].isin(list(pair_updates))
                df.loc[m, "pair"] = df.loc[m, "id"].map(pair_updates)
            if new_rows:
                df = _append_rows(df, new_rows)
            ws.write_items(df)
    log.info("ingest into %s: %d added, %d skipped, %d errors", ws.name, report.added,
             report.skipped, len(report.errors))
    return report


def add_row_table(ws: Workspace, table) -> IngestReport:
    """Commit a streamed table's rows (core.ingest.RowTable) in bulk, as :meth:`add_candidates` commits
    the same rows one by one: first row of an id wins, ids already here are skipped, vectors stored
    for items that have none of that model, the table's row errors first in the report.

    The new items file is put together in a worker thread (rows, columns, Parquet bytes) while the vectors
    are written (writing and syncing the vector files waits for the disk); the vectors commit first, then
    the items."""
    from concurrent.futures import ThreadPoolExecutor

    report = IngestReport(errors=list(table.errors))
    ids = np.asarray(table.ids, dtype=str)
    keys = pd.Index(table.keys if table.keys is not None else ids)  # equal keys, equal ids (no strings hashed)
    with ws.writing(), ThreadPoolExecutor(1, thread_name_prefix="jointscope-rows") as pool:
        items = ws.items
        first = ~keys.duplicated(keep="first")
        in_ws = pd.Index(ids).isin(items["id"]) if len(items) else np.zeros(len(ids), bool)
        new = first & ~in_ws
        report.added = int(new.sum())
        report.skipped = len(ids) - report.added
        report.repeated = int((~first & ~in_ws).sum())
        prepared = pool.submit(lambda: ws.prepare_items(_row_items(items, table, ids, new))) if report.added else None
        for model, X in table.vectors.items():
            store = ws.store(model)
            todo = np.flatnonzero(store.positions(ids) < 0)
            dim = store.dim
            if dim is not None and X.shape[1] != dim:
                sources = table.sources()
                report.errors += [(sources[i], f"vector for {model!r} has {X.shape[1]} values, expected {dim} "
                                               "(the dimension already in this workspace)") for i in todo]
                continue
            todo = todo[~keys[todo].duplicated(keep="first")]
            if len(todo):
                store.append(X[todo] if len(todo) < len(X) else X, ids[todo])
        report.ids = ids[new].tolist()
        if prepared is not None:
            ws.write_items(prepared.result())
    log.info("ingest into %s: %d added, %d skipped, %d errors", ws.name, report.added,
             report.skipped, len(report.errors))
    return report


def _row_items(items: pd.DataFrame, table, ids: np.ndarray, new: np.ndarray) -> pd.DataFrame:
    """The items frame with the table's ``new`` rows appended (bare "row" items, metadata as columns)."""
    n = int(new.sum())
    none = pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="Int64")
    rows = {"id": ids[new].astype(object), "modality": "row", "text": None, "image": None, "thumb": None,
            "source": table.sources()[new], "pair": None, "width": none, "height": none,
            "added": pd.Timestamp.now(tz="UTC")}
    meta = table.meta.loc[new].reset_index(drop=True)
    df_new = pd.DataFrame(rows, index=pd.RangeIndex(n))
    for k in meta.columns:
        df_new[f"meta_{k}" if k in ITEM_COLUMNS else str(k)] = meta[k].to_numpy()
    if not len(items):
        return df_new
    with warnings.catch_warnings():  # all-NA columns in one part are expected
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat([items, df_new], ignore_index=True)


def add_rows(ws: Workspace, rows: pd.DataFrame) -> int:
    """Append item rows whose ids are not in the workspace yet (the first row of an id wins).

    For items whose content stays where it is (core.distributed manifests reference their images
    instead of copying them): ``rows`` has at least ``id`` and ``modality``; missing item columns
    are filled with None, ``added`` with now. Returns the number of rows added.
    """
    if not len(rows):
        return 0
    if "id" not in rows or "modality" not in rows:
        raise ValueError("item rows need at least the columns 'id' and 'modality'")
    rows = rows.drop_duplicates("id", keep="first")  # the caller's rows may repeat an id
    with ws.writing():
        items = ws.items
        new = rows[~rows["id"].isin(items["id"])].copy()
        if not len(new):
            return 0
        for col in ITEM_COLUMNS:
            if col not in new:
                new[col] = pd.Timestamp.now(tz="UTC") if col == "added" else None
        new = new[ITEM_COLUMNS + [col for col in new.columns if col not in ITEM_COLUMNS]]
        with warnings.catch_warnings():  # all-NA columns in one part are expected
            warnings.simplefilter("ignore", FutureWarning)
            df = pd.concat([items, new], ignore_index=True) if len(items) else new.reset_index(drop=True)
        ws.write_items(df)
    log.info("added %d item rows to %s", len(new), ws.name)
    return len(new)


def _identify(ws: Workspace, candidates: Iterable, report: IngestReport) -> tuple[list, list[str]]:
    """(candidates, their ids); a candidate whose file can no longer be read is reported and left out."""
    kept, ids = [], []
    for c in candidates:
        try:
            ids.append(ws.candidate_id(c))
        except Exception as e:  # noqa: BLE001 - e.g. a file deleted since the scan: one error, not the upload
            report.errors.append((c.source, f"could not read the file ({e})"))
            continue
        kept.append(c)
    return kept, ids


def _store_images(ws: Workspace, images: list[tuple[dict, Any]], report: IngestReport, progress: Progress | None,
                  total: int) -> set[str]:
    """Store the files of new image rows (``(row, candidate)``; each row gets its paths and size) and
    return the ids that could not be stored (reported in ``report.errors``). Several images are stored
    at once: every file is fsynced before it is renamed into place, and threads overlap those waits for
    the disk (and Pillow's thumbnails); at most ``STORE_THREADS`` images are read into memory at a time.
    ``progress(done, total)`` counts the candidates before them as done."""
    from concurrent.futures import ThreadPoolExecutor

    failed: set[str] = set()
    if not images:
        return failed
    base = total - len(images)

    def store(job: tuple[dict, Any]) -> dict:
        row, c = job
        return ws.store_image(row["id"], c.read_image(), c.image_ext)

    with ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="jointscope-store") as pool:
        results = pool.map(lambda job: _outcome(store, job), images)
        for k, ((row, c), (stored, error)) in enumerate(zip(images, results), start=1):
            if error is None:
                row.update(stored)
            else:
                report.errors.append((c.source, f"could not store image ({error})"))
                failed.add(row["id"])
            if progress is not None and (k % 100 == 0 or k == len(images)):
                progress(base + k, total)
    return failed


def _store_vectors(ws: Workspace, model: str, entries, stored_ids: set[str], report: IngestReport) -> None:
    store = ws.store(model)
    have = store.ids()
    dim = store.dim
    keep_ids, keep_x, seen = [], [], set()
    for cid, source, v in entries:
        v = np.asarray(v, dtype=np.float32).ravel()
        if cid not in stored_ids or cid in have or cid in seen:
            continue
        if dim is None:
            dim = v.size
        if v.size != dim:
            report.errors.append((source, f"vector for {model!r} has {v.size} values, "
                                          f"expected {dim} (the dimension already in this workspace)"))
            continue
        if not np.isfinite(v).all():
            report.errors.append((source, f"vector for {model!r} has NaN/inf values"))
            continue
        keep_ids.append(cid)
        keep_x.append(v)  # stored as uploaded: scale may carry meaning (numeric features)
        seen.add(cid)
    if keep_ids:
        store.append(np.stack(keep_x), keep_ids)


def _outcome(fn: Callable[[Any], T], arg: Any) -> tuple[T | None, Exception | None]:
    """``(fn(arg), None)``, or ``(None, the exception)`` when it raised."""
    try:
        return fn(arg), None
    except Exception as e:  # noqa: BLE001 - the caller reports it per item
        return None, e


def _append_rows(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    new = pd.DataFrame(rows)
    if not len(df):
        return new
    with warnings.catch_warnings():  # all-NA columns in one part are expected (e.g. text of images)
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat([df, new], ignore_index=True)
