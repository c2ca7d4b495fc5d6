"""Workspaces: a folder holding items, stored images, thumbnails and per-model vectors.

Layout::

    workspace.json          format version, creation time
    items.parquet           one row per item (see ITEM_COLUMNS), then the user's metadata columns
    images/ab/<id>.<ext>    image files, copied in, content-addressed
    thumbs/ab/<id>.webp     thumbnails (longest side THUMB_SIZE px)
    vectors/<model-slug>/   per model, see core.vectorstore
    derived/<kind>/<model-slug>/  per-model caches (index, maps, patches, concepts), see derived_dir
    .lock                   inter-process write lock

Item ids are derived from content (sha256 of the image bytes, of the text, or of a row's values), so
re-adding the same file or text adds nothing. Every write is atomic; writers take a file lock, readers
never need one.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd
from filelock import FileLock

from .progress import Progress
from .storage import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
    remove_file,
    remove_temp_files,
)
from .vectorstore import VectorStore

log = logging.getLogger(__name__)

ITEM_COLUMNS = ["id", "modality", "text", "image", "thumb", "source", "pair", "width", "height", "added"]
MODALITIES = ("image", "text", "row")
THUMB_SIZE = 192
STORE_THREADS = 8  # images stored at once by an import (their files wait for the disk, see _store_images)
FORMAT_VERSION = 1
DELETE_JOURNAL = ".delete.json"  # the items a deletion removes, until it has removed what they left behind
TOMBSTONE = ".deleted-"  # a deleted workspace folder is renamed to ".<name>.deleted-<random>" before removal
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KIND_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
T = TypeVar("T")


def default_home() -> Path:
    """Root folder of named workspaces: ``$JOINTSCOPE_HOME`` or ``./workspaces``."""
    return Path(os.environ.get("JOINTSCOPE_HOME", "workspaces")).expanduser()


def workspace_path(name: str, home: str | os.PathLike | None = None) -> Path:
    """Path of a named workspace under the root; names cannot escape the root."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:  # fullmatch: "$" allows "\n"
        raise ValueError(f"workspace name must be 1-64 letters, digits, '.', '_' or '-' "
                         f"(not starting with '.' and without '..'); got {name!r}")
    return Path(home or default_home()) / name


def list_workspaces(home: str | os.PathLike | None = None) -> list[str]:
    """Names of the workspaces under the root (never a deleted one's tombstone, which is removed here
    when a deletion was interrupted before it finished)."""
    root = Path(home or default_home())
    if not root.is_dir():
        return []
    _remove_tombstones(root)
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "workspace.json").is_file())


def delete_workspace(target: str | os.PathLike, *, home: str | os.PathLike | None = None) -> dict:
    """Delete a whole workspace: a folder (a path) or a named workspace under the root (a plain name).

    Refuses a folder that is not a workspace (no workspace.json). Waits for the workspace's writers, then
    renames the folder to a hidden tombstone beside it (one atomic step: from then on the workspace is
    gone for every reader) and removes the tombstone; a tombstone left by an interrupted deletion is
    removed by the next :func:`list_workspaces` or deletion there. Returns ``{"path", "deleted"}``
    (``deleted``: the number of items it held).
    """
    import shutil
    import uuid

    is_name = isinstance(target, str) and "/" not in target and os.sep not in target
    path = workspace_path(target, home) if is_name else Path(target).expanduser()
    if not (path / "workspace.json").is_file():
        raise FileNotFoundError(f"no workspace at {str(path)!r} (workspace.json missing); nothing was deleted")
    ws = Workspace(path, create=False)
    with ws.writing():
        n = len(ws.items)
        tomb = path.parent / f".{path.name}{TOMBSTONE}{uuid.uuid4().hex[:12]}"
        os.replace(path, tomb)  # the commit point
    from .storage import _fsync_dir

    _fsync_dir(path.parent)
    shutil.rmtree(tomb, ignore_errors=True)
    _remove_tombstones(path.parent)
    return {"path": str(path), "deleted": n}


def _remove_tombstones(root: Path) -> None:
    import shutil

    for tomb in root.glob(f".*{TOMBSTONE}*"):
        if tomb.is_dir():
            shutil.rmtree(tomb, ignore_errors=True)


def content_id(kind: str, payload: bytes) -> str:
    """Stable 16-hex-digit id of a piece of content."""
    return hashlib.sha256(kind.encode() + b"\0" + payload).hexdigest()[:16]


@dataclass
class IngestReport:
    added: int = 0
    skipped: int = 0  # items whose content was already there: in the workspace, or earlier in this upload
    errors: list[tuple[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # ids of added items, in order
    repeated: int = 0  # of ``skipped``: repeated within this upload (a caption on many rows, a file twice)

    def to_dict(self) -> dict:
        return {"added": self.added, "skipped": self.skipped, "already_in_workspace": self.skipped - self.repeated,
                "repeated_in_upload": self.repeated, "errors": [{"source": s, "reason": r} for s, r in self.errors]}

    def skipped_words(self) -> str:
        """'12 skipped (10 already in the workspace, 2 repeated in this upload)', or '' when none was."""
        return skipped_words(self.skipped - self.repeated, self.repeated)


def skipped_words(existing: int, repeated: int) -> str:
    """How many items an import skipped and why, in words ('' when none)."""
    parts = [f"{existing} already in the workspace"] if existing else []
    parts += [f"{repeated} repeated in this upload"] if repeated else []
    return f"{existing + repeated} skipped ({', '.join(parts)})" if parts else ""


@dataclass
class DeleteReport:
    deleted: int = 0
    ids: list[str] = field(default_factory=list)  # ids of the deleted items, in the order asked
    missing: list[str] = field(default_factory=list)  # ids asked for that are not items here
    by_modality: dict[str, int] = field(default_factory=dict)  # deleted items per modality
    unpaired: int = 0  # items left that lost their pair
    items: int = 0  # items left in the workspace

    def to_dict(self) -> dict:
        return {"deleted": self.deleted, "items": self.items, "ids": self.ids, "missing": self.missing,
                "by_modality": self.by_modality, "unpaired": self.unpaired}


class StaleVectorsError(ValueError):
    """The stored vectors of a model are not what the model gives now (its weights changed)."""


STALE_COSINE = 0.99  # stored vs re-encoded: float16/int8 storage and other devices stay above 0.999


@dataclass
class EmbedReport:
    model: str
    embedded: int = 0
    cached: int = 0
    unsupported: int = 0  # items of a modality this model does not encode
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "embedded": self.embedded, "cached": self.cached,
                "unsupported": self.unsupported, "seconds": round(self.seconds, 3),
                "errors": [{"source": s, "reason": r} for s, r in self.errors]}


EmbedProgress = Progress  # the earlier name of the embedding progress callback


@dataclass
class EmbedPlan:
    """What an embedding run does (see :meth:`Workspace.plan_embed`)."""

    model: str
    todo: pd.DataFrame  # id, modality, text, image (absolute path or URI), source
    cached: int
    unsupported: int
    dtype: str | None = None


def image_source(ws: Workspace, ref) -> str | None:
    """Where to read a stored item's image: an absolute path (workspace-relative ``images/...``, or the
    absolute path a manifest item references) or a URI (``s3://...``); None when there is none."""
    if not isinstance(ref, str) or not ref:
        return None
    return ref if "://" in ref else str(ws.path / ref)


def stale_reason(model: str, stale: dict) -> str:
    """The common words of every stale-vector message (the embed error, the CLI warning, the pages'
    warning), from a :meth:`Workspace.stale_vectors` finding."""
    return (f"the stored vectors of {model!r} were made with other weights than the model has now (cosine "
            f"{stale['min_cosine']:.2f} for an item encoded again)")


class Workspace:
    """Open (or create) the workspace folder at ``path``."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path).expanduser()
        meta = self.path / "workspace.json"
        if not meta.is_file():
            if not create:
                raise FileNotFoundError(f"no workspace at {str(self.path)!r} (workspace.json missing)")
            # list first, then look for workspace.json again: another process may have created the
            # workspace since the check above, and everything it writes comes after workspace.json
            if self.path.exists() and not self.path.is_dir():
                raise ValueError(f"{str(self.path)!r} is a file, not a folder; choose another path")
            entries = list(self.path.iterdir()) if self.path.is_dir() else []
            if (self.path.exists() and not meta.is_file() and not (self.path / "items.parquet").exists()
                    and any(not _creation_leftover(p.name) for p in entries)):
                raise ValueError(f"{str(self.path)!r} exists, is not empty and is not a workspace; "
                                 "choose another folder")
            self.path.mkdir(parents=True, exist_ok=True)
            with self._lock(exists=False):
                if not meta.is_file():
                    remove_temp_files(self.path, meta.name)  # a creation killed before its rename
                    atomic_write_json(meta, {"format": FORMAT_VERSION, "created": time.time()})
        fmt = (read_json(meta) or {}).get("format", FORMAT_VERSION)
        if fmt > FORMAT_VERSION:
            raise ValueError(f"{str(self.path)!r} was written by a newer Jointscope (format {fmt}); upgrade")
        self._items_key = None
        self._items: pd.DataFrame | None = None
        self._stores: dict[str, VectorStore] = {}
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ---- locking ---------------------------------------------------------------------------
    def _lock(self, timeout: float = 600, *, exists: bool = True) -> FileLock:
        return _WriteLock(str(self.path / ".lock"), timeout=timeout,
                          meta=self.path / "workspace.json" if exists else None)

    def writing(self, timeout: float = 600) -> FileLock:
        """The inter-process write lock of the workspace, as a context manager: ``with ws.writing(): ...``.

        Every writer (ingest, embed, compact, derived caches) holds it while it commits; readers never
        need it. Waits up to ``timeout`` seconds (``filelock.Timeout`` after that). Not re-entrant: a
        second ``writing()`` inside the first one waits for itself.
        """
        return self._lock(timeout)

    # ---- derived caches --------------------------------------------------------------------
    @property
    def derived_root(self) -> Path:
        """The ``derived/`` folder (per-model caches live in :meth:`derived_dir` folders below it)."""
        return self.path / "derived"

    def derived_dir(self, kind: str, model: str | None = None) -> Path:
        """Folder of derived results of one ``kind`` (``index``, ``maps``, ``patches``, ``concepts``):
        ``derived/<kind>/<model-slug>`` for ``model``, else ``derived/<kind>``. Not created here.

        Every per-model cache lives in such a folder, so :meth:`forget_model` removes it with the vectors.
        ``kind`` must be a plain name (letters, digits, ``_``, ``-``)."""
        from .vectorstore import model_slug

        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise ValueError(f"derived kind must be 1-64 letters, digits, '_' or '-'; got {kind!r}")
        folder = self.derived_root / kind
        return folder if model is None else folder / model_slug(model)

    def publish(self, path: str | os.PathLike, save: Callable[[IO[bytes]], Any]) -> Path:
        """Write one derived file atomically under :meth:`writing`: temp files of earlier writes of
        ``path`` killed before their rename are removed, then ``save(f)`` writes into a temp file beside
        ``path``, which is fsynced and renamed over ``path``. A crash leaves the old file or the new one.

        ``save`` may first write companion files (with core.storage's atomic writes); ``path`` comes last
        and is the commit point. ``path`` must lie under ``derived/``."""
        from .storage import atomic_write

        path = Path(path)
        root = self.derived_root.resolve()
        if root not in path.resolve().parents:
            raise ValueError(f"{str(path)!r} is not inside {str(root)!r}")
        with self.writing():
            if path.parent.is_dir():
                remove_temp_files(path.parent, path.name)
            return atomic_write(path, save)

    def cached(self, kind: str, model: str | None, name: str, compute: Callable[[], T], *,
               load: Callable[[Path], T | None], save: Callable[[IO[bytes], T], Any], reuse: bool = True) -> T:
        """Get-or-compute one derived file ``derived_dir(kind, model) / name``.

        ``load(path)`` returns the cached value, or None when the file is missing, unreadable or not what
        is wanted (it must not raise for those); then ``compute()`` runs (without the lock: other writers
        go on) and its value is published with :meth:`publish` (``save(f, value)`` writes it). With
        ``reuse=False`` the cache is not read, only written. Returns ``load``'s or ``compute``'s value.
        """
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"cache file name must be relative and inside the folder; got {name!r}")
        path = self.derived_dir(kind, model) / name
        if reuse and path.is_file():
            hit = load(path)
            if hit is not None:
                return hit
        value = compute()
        self.publish(path, lambda f: save(f, value))
        return value

    # ---- items -----------------------------------------------------------------------------
    @property
    def items_path(self) -> Path:
        return self.path / "items.parquet"

    @property
    def items(self) -> pd.DataFrame:
        """All items (read-only view; re-read when another process changed the file)."""
        key = self.items_version()
        if not key:
            return _empty_items()
        with self._mutex:
            if self._items is None or self._items_key != key:
                self._items = pd.read_parquet(self.items_path)
                self._items_key = key
            return self._items

    def items_version(self) -> tuple:
        """A token that changes whenever items.parquet is rewritten (every write is a rename of a new file,
        so the inode changes even when size and clock tick repeat); ``()`` while there are no items.
        For cache keys (e.g. the app's ``st.cache_data``)."""
        try:
            st = self.items_path.stat()
        except FileNotFoundError:
            return ()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __len__(self) -> int:
        return len(self.items)

    def abspath(self, rel: str | None) -> Path | None:
        """Absolute path of a stored file (``image`` / ``thumb`` column)."""
        if rel is None or (isinstance(rel, float) and np.isnan(rel)):
            return None
        return self.path / rel

    def item(self, item_id: str) -> dict:
        df = self.items
        hit = df[df["id"] == item_id]
        if hit.empty:
            raise KeyError(f"no item with id {item_id!r} in workspace {self.name!r}")
        return hit.iloc[0].to_dict()

    # ---- ingest ----------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | os.PathLike] | str | os.PathLike = (), *,
               texts: Sequence[str] = (), roles: Mapping[str, str] | None = None,
               limits=None) -> IngestReport:
        """Add files, folders, ZIPs, tables and pasted texts. Bad items are reported, good ones kept.

        One Parquet/CSV/TSV table of vectors (no image or text column) is read in chunks and committed in
        bulk (:func:`core.ingest.stream_table`, :meth:`add_row_table`): the same items, faster."""
        from .ingest import scan, stream_table

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if len(paths) == 1 and not texts:
            table = stream_table(paths[0], roles=roles, limits=limits)
            if table is not None:
                return self.add_row_table(table)
        res = scan(list(paths), texts=list(texts), roles=roles, limits=limits)
        return self.add_candidates(res.candidates, errors=res.errors)

    def add_candidates(self, candidates: Iterable, *, errors: Sequence[tuple[str, str]] = (),
                       progress: Progress | None = None) -> IngestReport:
        """Commit scanned candidates (see core.ingest.Candidate): ids, dedup, files, rows, vectors.

        ``progress(done, total)`` every 500 candidates and at the end (storing images and thumbnails is
        the slow part of a large upload)."""
        report = IngestReport(errors=list(errors))
        candidates, ids = self._identify(candidates, report)
        # pairs link across modalities: an image points at its (first) caption, a caption at its image
        first_of: dict[tuple[str, str], str] = {}
        for c, cid in zip(candidates, ids):
            if c.pair_key is not None:
                first_of.setdefault((c.pair_key, c.modality), cid)

        def partner(c) -> str | None:
            if c.pair_key is None or c.modality not in ("image", "text"):
                return None
            return first_of.get((c.pair_key, "text" if c.modality == "image" else "image"))
        with self._lock():
            items = self.items
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
            failed = self._store_images(images, report, progress, len(candidates))
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
                self._store_vectors(model, entries, stored_ids, report)
            if new_rows or pair_updates:
                df = items.copy()
                if pair_updates:
                    m = df["id"].isin(list(pair_updates))
                    df.loc[m, "pair"] = df.loc[m, "id"].map(pair_updates)
                if new_rows:
                    df = _append_rows(df, new_rows)
                self._write_items(df)
        log.info("ingest into %s: %d added, %d skipped, %d errors", self.name, report.added,
                 report.skipped, len(report.errors))
        return report

    def add_row_table(self, table) -> IngestReport:
        """Commit a streamed table's rows (core.ingest.RowTable) in bulk, as :meth:`add_candidates` commits
        the same rows one by one: first row of an id wins, ids already here are skipped, vectors stored
        for items that have none of that model, the table's row errors first in the report."""
        report = IngestReport(errors=list(table.errors))
        ids = np.asarray(table.ids, dtype=str)
        sources = table.sources()
        index = pd.Index(ids)
        with self._lock():
            items = self.items
            first = ~index.duplicated(keep="first")
            in_ws = index.isin(items["id"]) if len(items) else np.zeros(len(ids), bool)
            new = first & ~in_ws
            report.added = int(new.sum())
            report.skipped = len(ids) - report.added
            report.repeated = int((~first & ~in_ws).sum())
            report.ids = ids[new].tolist()
            for model, X in table.vectors.items():
                store = self.store(model)
                todo = np.flatnonzero(store.positions(ids) < 0)
                dim = store.dim
                if dim is not None and X.shape[1] != dim:
                    report.errors += [(sources[i], f"vector for {model!r} has {X.shape[1]} values, expected {dim} "
                                                   "(the dimension already in this workspace)") for i in todo]
                    continue
                todo = todo[~pd.Index(ids[todo]).duplicated(keep="first")]
                if len(todo):
                    store.append(X[todo], ids[todo])
            if report.added:
                none = pd.Series(pd.NA, index=pd.RangeIndex(report.added), dtype="Int64")
                rows = {"id": ids[new], "modality": "row", "text": None, "image": None, "thumb": None,
                        "source": sources[new], "pair": None, "width": none, "height": none,
                        "added": pd.Timestamp.now(tz="UTC")}
                meta = table.meta.loc[new].reset_index(drop=True)
                df_new = pd.DataFrame(rows, index=pd.RangeIndex(report.added))
                for k in meta.columns:
                    df_new[f"meta_{k}" if k in ITEM_COLUMNS else str(k)] = meta[k].to_numpy()
                with warnings.catch_warnings():  # all-NA columns in one part are expected
                    warnings.simplefilter("ignore", FutureWarning)
                    df = pd.concat([items, df_new], ignore_index=True) if len(items) else df_new
                self._write_items(df)
        log.info("ingest into %s: %d added, %d skipped, %d errors", self.name, report.added,
                 report.skipped, len(report.errors))
        return report

    def add_rows(self, rows: pd.DataFrame) -> int:
        """Append item rows whose ids are not in the workspace yet (the first row of an id wins).

        For items whose content stays where it is (core.distributed manifests reference their images
        instead of copying them): ``rows`` has at least ``id`` and ``modality``; missing item columns
        are filled with None, ``added`` with now. Returns the number of rows added.
        """
        if not len(rows):
            return 0
        if "id" not in rows or "modality" not in rows:
            raise ValueError("item rows need at least the columns 'id' and 'modality'")
        rows = rows.drop_duplicates("id", keep="first")
        with self._lock():
            items = self.items
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
            self._write_items(df)
        log.info("added %d item rows to %s", len(new), self.name)
        return len(new)

    # ---- deleting ----------------------------------------------------------------------------
    def delete_items(self, ids: Iterable[str] | str) -> DeleteReport:
        """Delete items by id: their rows, their vectors of every model, their stored image and thumbnail
        files (when no other item refers to them) and every derived file that holds them (neighbour
        indexes, maps, patch and concept caches, demo masks). A text whose image is deleted stays, unpaired,
        and the other way round (an image whose caption goes is paired with another of its captions, if it
        has one). Metadata columns that only the deleted items had are dropped.

        Ids that are not items are reported in ``missing``; ValueError when none is an item.

        Crash-safe: under the write lock, the ids and their files are first written to a journal
        (``.delete.json``), then ``items.parquet`` is replaced (the commit point: a reader sees the items
        before or after, never a mix), then vectors, files and derived data are removed and the journal
        last. Until then readers ignore vectors of journaled ids that are no longer items, and the next
        writer of items (ingest, another deletion) finishes the removal.
        """
        want = list(dict.fromkeys(str(i) for i in ([ids] if isinstance(ids, str) else ids)))
        if not want:
            raise ValueError("give at least one item id to delete")
        with self._lock():
            self._finish_delete(self.items)
            items = self.items
            gone_mask = items["id"].isin(want).to_numpy()
            if not gone_mask.any():
                raise ValueError(f"none of the {len(want)} id(s) is an item of workspace {self.name!r}, "
                                 f"e.g. {want[0]!r}; nothing was deleted")
            gone, left = items[gone_mask], items[~gone_mask]
            gone_ids = set(gone["id"])
            files = sorted({f for col in ("image", "thumb") for f in gone[col].dropna()
                            if isinstance(f, str) and f.split("/", 1)[0] in ("images", "thumbs")})
            report = DeleteReport(ids=[i for i in want if i in gone_ids],
                                  missing=[i for i in want if i not in gone_ids],
                                  by_modality={k: int(v) for k, v in gone["modality"].value_counts().items()})
            report.deleted = len(report.ids)
            left, report.unpaired = _unlink_pairs(left, gone_ids)
            atomic_write_json(self.path / DELETE_JOURNAL, {"ids": sorted(gone_ids), "files": files})
            self._write_items(left)  # the commit point; it also finishes the journal
            report.items = len(left)
        log.info("deleted %d items from %s", report.deleted, self.name)
        return report

    def delete(self) -> dict:
        """Delete this whole workspace folder (see :func:`delete_workspace`)."""
        return delete_workspace(self.path)

    def _finish_delete(self, items: pd.DataFrame) -> None:
        """Remove what a journaled deletion left behind (caller holds the lock; ``items``: the items now).

        Only ids that are not items remove anything (an id added again since keeps its vectors and files),
        so this is safe to repeat after a crash at any point; the journal goes last."""
        from .vectorstore import remove_uncommitted

        journal = self.path / DELETE_JOURNAL
        remove_temp_files(self.path, DELETE_JOURNAL)
        job = read_json(journal)
        if job is None:
            return
        gone = set(job["ids"]) - set(items["id"])
        if gone:
            root = self.path / "vectors"
            for folder in sorted(root.iterdir()) if root.is_dir() else []:
                m = read_json(folder / "manifest.json")
                if m is not None:
                    self.store(m["model"]).remove(gone)
                elif folder.is_dir():
                    remove_uncommitted(folder)
            self._purge_derived(gone)
            used = set(items["image"].dropna()) | set(items["thumb"].dropna())
            for rel in job["files"]:
                if rel not in used:
                    remove_file(self.path / rel)
        remove_file(journal)

    def _purge_derived(self, gone: set[str]) -> None:
        """Remove the derived files that hold any of ``gone``: saved neighbour indexes (meta.json first, so
        a half-removed index never loads), maps, patch and concept caches (``.npz`` with an ``ids`` array;
        a concept result's ``.json`` first) and the demo's masks of those items."""
        root = self.derived_root
        for ids_file in sorted(root.glob("index/*/ids.npy")):
            if gone.intersection(np.load(ids_file, allow_pickle=False).astype(str).tolist()):
                remove_file(ids_file.parent / "meta.json")
                for f in sorted(ids_file.parent.iterdir()):
                    remove_file(f)
                with contextlib.suppress(OSError):
                    ids_file.parent.rmdir()
        for npz in sorted(root.rglob("*.npz")):
            masks = npz.name == "world_masks.npz"  # the demo's masks, keyed by item id
            try:
                with np.load(npz, allow_pickle=False) as z:
                    keys = z.files if masks else z["ids"].astype(str).tolist() if "ids" in z.files else []
                    if not gone.intersection(keys):
                        continue
                    kept = {k: z[k] for k in z.files if k not in gone} if masks else None
            except (OSError, ValueError):
                continue
            if kept is not None:
                remove_temp_files(npz.parent, npz.name)
                atomic_write(npz, lambda f, kept=kept: np.savez_compressed(f, **kept))
                continue
            if (read_json(npz.parent / "latest.json") or {}).get("file") == npz.name:
                remove_file(npz.parent / "latest.json")  # a map: its pointer first
            remove_file(npz.with_suffix(".json"))  # a concept result: its commit point first
            remove_file(npz)

    def _pending_deleted(self) -> set[str]:
        """Ids of a deletion that committed but has not removed their vectors yet (normally none)."""
        job = read_json(self.path / DELETE_JOURNAL)
        return set(job["ids"]) - set(self.items["id"]) if job else set()

    def _identify(self, candidates: Iterable, report: IngestReport) -> tuple[list, list[str]]:
        """(candidates, their ids); a candidate whose file can no longer be read is reported and left out."""
        kept, ids = [], []
        for c in candidates:
            try:
                ids.append(self.candidate_id(c))
            except Exception as e:  # noqa: BLE001 - e.g. a file deleted since the scan: one error, not the upload
                report.errors.append((c.source, f"could not read the file ({e})"))
                continue
            kept.append(c)
        return kept, ids

    @staticmethod
    def candidate_id(c) -> str:
        """The content id a scanned candidate (core.ingest.Candidate) gets in every workspace."""
        if c.modality == "image":
            return content_id("image", c.read_image())
        if c.modality == "text":
            return content_id("text", (c.text or "").encode("utf-8"))
        from .ingest.rowids import row_content_id

        return row_content_id(c.meta or {}, c.vectors or {})

    def _store_images(self, images: list[tuple[dict, Any]], report: IngestReport, progress: Progress | None,
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
            return self._store_image(row["id"], c.read_image(), c.image_ext)

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

    def _store_image(self, cid: str, data: bytes, ext: str | None) -> dict:
        from .images import open_image

        ext = (ext or "bin").lower().lstrip(".")
        rel = f"images/{cid[:2]}/{cid}.{ext}"
        target = self.path / rel
        trel = f"thumbs/{cid[:2]}/{cid}.webp"
        for done in (target, self.path / trel):  # caller holds the lock: temp files here are a crash's
            remove_temp_files(done.parent, done.name)
        if not target.exists():
            atomic_write_bytes(target, data)
        im, (w, h) = open_image(data, min_side=THUMB_SIZE, with_size=True)  # reduced decode: a 12 MP JPEG at 1/8
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        im.save(buf, format="WEBP", quality=82)
        atomic_write_bytes(self.path / trel, buf.getvalue())
        return {"image": rel, "thumb": trel, "width": int(w), "height": int(h)}

    def _store_vectors(self, model: str, entries, stored_ids: set[str], report: IngestReport) -> None:
        store = self.store(model)
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

    def _write_items(self, df: pd.DataFrame) -> None:
        df = _normalise_columns(df)
        remove_temp_files(self.path, self.items_path.name)  # caller holds the lock
        atomic_write_parquet(self.items_path, df)
        with self._mutex:
            self._items, self._items_key = None, None
        self._finish_delete(df)  # a deletion interrupted after its commit point

    # ---- vectors ---------------------------------------------------------------------------
    def store(self, model: str) -> VectorStore:
        if model not in self._stores:
            self._stores[model] = VectorStore(self.path / "vectors", model)
        return self._stores[model]

    def vectors_version(self, model: str) -> tuple | None:
        """A token that changes whenever the vectors of ``model`` commit (their manifest is rewritten);
        None while there are none. For cache keys of everything computed from them."""
        return _manifest_key(self.store(model))

    def models(self) -> dict[str, dict]:
        """Models with vectors here: ``{model_id: {"dim": d, "n": count}}``."""
        out = {}
        root = self.path / "vectors"
        if not root.is_dir():
            return out
        gone = self._pending_deleted()
        for d in sorted(root.iterdir()):
            m = read_json(d / "manifest.json")
            if m:
                store = self.store(m["model"])
                n = store.count()
                if gone:
                    n -= int((store.positions(sorted(gone)) >= 0).sum())
                out[m["model"]] = {"dim": int(m["dim"]), "n": n}
        return out

    def vectors(self, model: str, *, modality: str | Sequence[str] | None = None,
                ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of one model: ``(X (n, d) float32, ids (n,) str)``.

        Encoder models give unit rows; ``precomputed:*`` vectors are returned as uploaded.

        Rows follow the order of ``ws.items`` (or of ``ids`` when given); items without a vector for
        this model are left out. ``modality`` keeps only items of that modality (or modalities).
        """
        store = self.store(model)
        rows, found = self._vector_rows(store, modality, ids)
        if store.count() == 0:
            return np.zeros((0, store.dim or 0), np.float32), found
        return store.take(rows), found

    def vector_ids(self, model: str, *, modality: str | Sequence[str] | None = None,
                   ids: Sequence[str] | None = None) -> np.ndarray:
        """The ids (n,) object that :meth:`vectors` would return, in the same order; reads no vectors."""
        return self._vector_rows(self.store(model), modality, ids)[1]

    def _vector_rows(self, store: VectorStore, modality, ids) -> tuple[np.ndarray, np.ndarray]:
        """(rows in the store (n,) int64, ids (n,) object) of the items with a vector, in items / ``ids`` order."""
        if store.count() == 0:
            return np.zeros((0,), np.int64), np.zeros((0,), dtype=object)
        if ids is None:
            items = self.items
            if modality is not None:
                mods = [modality] if isinstance(modality, str) else list(modality)
                items = items[items["modality"].isin(mods)]
            order = items["id"].to_numpy()
        else:
            order = np.asarray(list(ids), dtype=object)
            gone = self._pending_deleted()
            if gone:
                order = order[~np.isin(order.astype(str), sorted(gone))]
        rows = store.positions(order)
        mask = rows >= 0
        return rows[mask], order[mask].astype(object)

    def stale_vectors(self, model: str, encoder=None, *, n: int = 4) -> dict | None:
        """Whether the stored vectors of ``model`` still match the model: up to ``n`` stored items (images
        and texts alike) are encoded again and compared. Returns None when they match (or there is nothing
        to compare), else ``{"items": [ids], "min_cosine": c}``. Catches a checkpoint replaced under the
        same model id (an updated bundled ``demo``, a retrained local folder)."""
        from .encoders import load_encoder, unit_rows

        store = self.store(model)
        if store.count() == 0 or model.startswith("precomputed:"):
            return None
        enc = encoder if encoder is not None else load_encoder(model)
        items = self.items
        items = items[items["id"].isin(store.ids()) & items["modality"].isin(enc.modalities)]
        if items.empty:
            return None
        picked = pd.concat([part.head(max(1, n // 2)) for _, part in items.groupby("modality", sort=True)]).head(n)
        cos, ids = [], []
        for mod, part in picked.groupby("modality", sort=False):
            try:
                Y = (enc.encode_texts(part["text"].tolist()) if mod == "text"
                     else enc.encode_images([image_source(self, r) for r in part["image"]]))
            except Exception:  # noqa: BLE001 - an unreadable stored image says nothing about the weights
                continue
            X, _ = self.vectors(model, ids=part["id"].tolist())
            cos += (unit_rows(X) * unit_rows(Y)).sum(1).tolist()
            ids += part["id"].tolist()
        if not cos or min(cos) >= STALE_COSINE:
            return None
        return {"items": ids, "min_cosine": round(float(min(cos)), 4)}

    def check_vectors_current(self, model: str, encoder=None) -> None:
        """Raise :class:`StaleVectorsError` when :meth:`stale_vectors` finds that ``model`` no longer gives
        the stored vectors: adding vectors then would mix two spaces."""
        stale = self.stale_vectors(model, encoder)
        if stale is not None:
            raise StaleVectorsError(
                f"workspace {self.name!r}: {stale_reason(model, stale)}; the model no longer gives them (e.g. an "
                f"updated bundled checkpoint), and embedding new items would mix two spaces. Embed everything "
                f"again: `jointscope embed {self.path} --model {model} --refresh`, or tick “Embed everything "
                f"again” on the Data page")

    def forget_model(self, model: str) -> list[str]:
        """Delete the vectors of ``model`` and everything derived from them: every per-model cache lives in
        ``derived/<kind>/<model-slug>/`` (index, maps, patches, concepts). Returns the folders removed
        (relative to the workspace)."""
        import shutil

        from .vectorstore import model_slug

        slug = model_slug(model)
        gone = []
        with self._lock():
            for folder in [self.path / "vectors" / slug, *sorted(self.derived_root.glob(f"*/{slug}"))]:
                if folder.is_dir():
                    shutil.rmtree(folder)
                    gone.append(folder.relative_to(self.path).as_posix())
                    if folder.parent.parent.name == "derived" and not any(folder.parent.iterdir()):
                        folder.parent.rmdir()  # derived/<kind>/ held only this model's cache
        self._stores.pop(model, None)
        return gone

    def plan_embed(self, model: str, *, encoder=None, dtype: str | None = None) -> EmbedPlan:
        """What an embedding run of ``model`` has to do, the same for every engine (this process, Ray).

        ``todo``: the items without a vector that the model can encode (columns ``id, modality, text,
        image`` = where to read the image: an absolute path or a URI, ``source``), in items order; counts
        of items that already have a vector and of those the model cannot encode. Checks first: ``dtype``
        is valid and matches the store; with ``encoder``, its dimension matches the store; when vectors
        would be added to a store that has some, the model must still give them (:meth:`check_vectors_current`;
        without ``encoder`` only models whose weights are a local folder are checked; see :meth:`check_embed`).
        """
        from .encoders import modalities_of

        self.check_embed(model, encoder=encoder, dtype=dtype, stale=False)
        mods = encoder.modalities if encoder is not None else modalities_of(model)
        items = self.items
        have = self.store(model).ids_array()
        done = items["id"].isin(have)
        todo = items[~done]
        can = todo["modality"].isin(mods) & ~((todo["modality"] == "text") & todo["text"].isna())
        todo = todo[can]
        plan = EmbedPlan(model=model, todo=pd.DataFrame({
            "id": todo["id"].astype(str).to_numpy(), "modality": todo["modality"].astype(str).to_numpy(),
            "text": todo["text"].to_numpy(dtype=object),
            "image": np.asarray([image_source(self, r) for r in todo["image"]], dtype=object),
            "source": todo["source"].to_numpy(dtype=object)}),
            cached=int(done.sum()), unsupported=int((~can).sum()), dtype=dtype)
        if len(plan.todo):
            self.check_embed(model, encoder=encoder, stale=True)
        return plan

    def check_embed(self, model: str, *, encoder=None, dtype: str | None = None, stale: bool = True) -> None:
        """The checks before vectors of ``model`` are added (every engine, workspace or manifest input):
        ``dtype`` is a storage dtype and matches the store's; the ``encoder``'s dimension matches the store's;
        with ``stale``, a store that has vectors must still get them from the model
        (:meth:`check_vectors_current`; without ``encoder``, only models whose weights are a local folder are
        checked, so a Ray driver never loads a hub model just for this)."""
        from .encoders import local_model_folder
        from .vectorstore import DTYPES

        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
        store = self.store(model)
        if encoder is not None and store.dim is not None and encoder.dim and store.dim != encoder.dim:
            raise ValueError(f"workspace {self.name!r} holds {store.dim}-d vectors for {model!r} but the model "
                             f"now gives {encoder.dim}-d; delete {store.path} to re-embed")
        if dtype is not None and store.dtype not in (None, dtype):
            raise ValueError(f"workspace {self.name!r} stores {store.dtype} vectors for {model!r}; got "
                             f"dtype={dtype!r} (convert them with `jointscope compact --dtype {dtype}`)")
        if stale and store.count() and (encoder is not None or local_model_folder(model) is not None):
            self.check_vectors_current(model, encoder)

    def embed(self, model: str, *, progress: Progress | None = None, device: str = "auto",
              batch_size: int | None = None, chunk_size: int = 1024, dtype: str | None = None,
              refresh: bool = False, reduced_decode: bool = True) -> EmbedReport:
        """Encode every item that has no vector for ``model`` yet (incremental).

        Images stream through the encoder's bounded prefetch (core.images): decoding runs ahead of the model
        (in threads where cores are free, e.g. beside a GPU), at most ``batch_size × prefetch`` prepared
        images are alive whatever ``chunk_size`` or the number of items, and JPEGs are decoded at the
        smallest scale the model's input allows (``reduced_decode``).
        Vectors are committed every ``chunk_size`` items, and what was encoded is also committed when the run
        is interrupted (Ctrl-C, a stop from the app, an exception from ``progress``), so the next run
        continues from there. ``progress(done, total)`` after each batch. ``dtype``: storage dtype when this
        run creates the model's store (``float32`` default, ``float16``, ``int8``; see core.vectorstore).
        The plan (:meth:`plan_embed`) refuses to add vectors a changed model would give (StaleVectorsError)
        instead of mixing two spaces. ``refresh=True`` first deletes the model's vectors and what was derived
        from them (:meth:`forget_model`) and embeds everything again.
        """
        from .encoders import load_encoder

        t0 = time.perf_counter()
        enc = load_encoder(model, device=device)
        report = EmbedReport(model=model)
        if refresh:
            self.forget_model(model)
        store = self.store(model)
        seen = _manifest_key(store)  # before reading ids: a commit in between is caught as a change
        plan = self.plan_embed(model, encoder=enc, dtype=dtype)
        report.cached, report.unsupported = plan.cached, plan.unsupported
        todo = plan.todo
        total, done = len(todo), 0
        pending_ids: list[str] = []
        pending_x: list[np.ndarray] = []
        raced = False  # another writer committed vectors of this model since the plan was made

        def commit() -> None:
            nonlocal pending_ids, pending_x, seen, raced
            if not pending_ids:
                return
            out_x, out_ids = pending_x, pending_ids
            pending_ids, pending_x = [], []
            with self._lock():
                raced = raced or _manifest_key(store) != seen
                if raced:  # skip what the other writer stored meanwhile: one vector per item
                    out_x, out_ids = _drop_stored(store, out_x, out_ids)
                store.append(np.concatenate(out_x, axis=0), out_ids, dtype=dtype if store.dtype is None else None)
                seen = _manifest_key(store)
            report.embedded += len(out_ids)

        if progress is not None:
            progress(0, total)
        try:
            texts = todo[todo["modality"] == "text"]
            for start in range(0, len(texts), chunk_size):
                part = texts.iloc[start:start + chunk_size]
                base = done

                def cb(d, _t, base=base):
                    if progress is not None:
                        progress(base + d, total)

                pending_x.append(enc.encode_texts(part["text"].tolist(), batch_size=batch_size, progress=cb))
                pending_ids += part["id"].tolist()
                done += len(part)
                commit()
            images = todo[todo["modality"] == "image"]
            if len(images):
                ids, sources = images["id"].tolist(), images["source"].astype(str).tolist()
                base = done
                for b in enc.iter_encode_images(images["image"].tolist(), batch_size=batch_size,
                                                reduced=reduced_decode):
                    report.errors += [(sources[i], f"cannot read stored image ({why})") for i, why in b.errors]
                    if b.positions:
                        pending_ids += [ids[i] for i in b.positions]
                        pending_x.append(b.vectors)
                    if len(pending_ids) >= chunk_size:
                        commit()
                    if progress is not None:
                        progress(base + b.done, total)
                done += len(images)
            commit()
        except BaseException:
            # interrupted (Ctrl-C, a stop from the app, a failing progress callback): keep what was encoded
            try:
                commit()
            except Exception:  # the interruption is what the caller must see
                log.warning("could not commit the encoded vectors after an interruption", exc_info=True)
            raise
        report.seconds = time.perf_counter() - t0
        log.info("embed %s with %s: %d new, %d cached in %.1fs", self.name, model, report.embedded,
                 report.cached, report.seconds)
        return report

    def models_with_vectors(self) -> dict[str, int]:
        """``{model_id: number of vectors}`` of the models with at least one vector here, most first."""
        counts = {m: int(v["n"]) for m, v in self.models().items() if v["n"]}
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def unsupported_hint(self, report: EmbedReport) -> str | None:
        """After an embedding run that found nothing its model can encode (every item left is of another
        modality): one sentence naming the models that do have vectors here, or what kind of model would fit.
        None when the run encoded, found or failed on anything."""
        if report.embedded or report.cached or report.errors or not report.unsupported:
            return None
        counts = self.items["modality"].value_counts()
        what = ", ".join(f"{n} {mod} item{'' if n == 1 else 's'}" for mod, n in counts.items())
        have = {m: n for m, n in self.models_with_vectors().items() if m != report.model}
        head = f"{report.model} encodes none of the items of workspace {self.name!r} ({what})"
        if have:
            return (f"{head}; models with vectors here: {', '.join(f'{m} ({n} items)' for m, n in have.items())}. "
                    "Choose one of them to map and search this workspace.")
        return (f"{head}; texts embed with minilm, images and texts with demo or an open_clip model, and table rows "
                "use the vectors that came with their table (precomputed:<column>).")

    # ---- summary ---------------------------------------------------------------------------
    def info(self) -> dict:
        items = self.items
        return {
            "path": str(self.path),
            "items": len(items),
            "by_modality": {k: int(v) for k, v in items["modality"].value_counts().items()},
            "pairs": int(items["pair"].notna().sum()),
            "models": self.models(),
            "metadata_columns": [c for c in items.columns if c not in ITEM_COLUMNS],
        }


class _WriteLock(FileLock):
    """The write lock of a workspace that must exist: a writer that waited while the workspace was deleted
    gets FileNotFoundError once it holds the lock, instead of writing into a folder that is gone."""

    def __init__(self, lock_file: str, timeout: float, *, meta: Path | None):
        super().__init__(lock_file, timeout=timeout)
        self._meta = meta

    def acquire(self, *args, **kwargs):
        proxy = super().acquire(*args, **kwargs)
        if self._meta is not None and not self._meta.is_file():
            self.release()
            raise FileNotFoundError(f"workspace {str(self._meta.parent)!r} was deleted; nothing was written")
        return proxy


def _manifest_key(store: VectorStore) -> tuple | None:
    """Changes whenever the store's manifest (its commit point) is rewritten."""
    try:
        st = store.manifest_path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _drop_stored(store: VectorStore, xs: list[np.ndarray], ids: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The encoded rows (``xs`` concatenated, aligned with ``ids``) of items that have no vector yet."""
    stored = store.ids()
    keep = np.array([i not in stored for i in ids], dtype=bool)
    X = np.concatenate(xs, axis=0)[keep] if len(ids) else np.zeros((0, 0), np.float32)
    return [X], [i for i, k in zip(ids, keep) if k]


def _unlink_pairs(items: pd.DataFrame, gone: set[str]) -> tuple[pd.DataFrame, int]:
    """``items`` without pairs that point at a deleted id: such an item is paired with another item that
    points at it (an image with several captions keeps one of them), else left unpaired.
    Also drops metadata columns that are empty once the deleted rows are gone. Returns (items, unpaired)."""
    items = items.copy()
    lost = items["pair"].isin(gone).to_numpy()
    if lost.any():
        back = items[items["pair"].notna() & ~lost].drop_duplicates("pair").set_index("pair")["id"]
        items.loc[lost, "pair"] = items.loc[lost, "id"].map(back)
        items["pair"] = items["pair"].astype(object).where(items["pair"].notna(), None)
    empty = [c for c in items.columns if c not in ITEM_COLUMNS and items[c].isna().all()]
    unpaired = int((lost & items["pair"].isna().to_numpy()).sum())
    return items.drop(columns=empty).reset_index(drop=True), unpaired


def _creation_leftover(name: str) -> bool:
    """Files that creating a workspace makes before workspace.json exists (the lock, its temp file):
    a folder holding only these is a workspace whose creation was interrupted or is under way."""
    return name == ".lock" or (name.startswith(".workspace.json.") and name.endswith(".tmp"))


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


def _empty_items() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="object") for c in ITEM_COLUMNS})
    df["width"] = df["width"].astype("Int64")
    df["height"] = df["height"].astype("Int64")
    df["added"] = pd.Series(dtype="datetime64[ns, UTC]")
    return df


def _all_none(values: np.ndarray) -> bool:
    """Whether every element of an object array is None (not NaN, pd.NA, NaT)."""
    try:
        return bool((values == None).all())  # noqa: E711 - elementwise
    except (TypeError, ValueError):  # pd.NA compared: ambiguous
        return False


def _normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Make the frame writable as Parquet: fixed types for core columns, mixed metadata as text."""
    df = df.copy()
    for c in ("id", "modality", "text", "image", "thumb", "source", "pair"):
        if df[c].dtype != object:
            df[c] = df[c].astype("object")
        missing = df[c].isna().to_numpy()
        if missing.any() and not _all_none(df[c].to_numpy()[missing]):
            df[c] = df[c].where(~missing, None)  # NaN and the like -> None (no copy when they are None)
    for c in ("width", "height"):
        if not isinstance(df[c].dtype, pd.Int64Dtype):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in df.columns:
        if c in ITEM_COLUMNS or df[c].dtype != object or pd.api.types.infer_dtype(df[c], skipna=True) == "string":
            continue  # (only strings: nothing to convert; infer_dtype answers without a Python loop)
        kinds = {type(v) for v in df[c] if v is not None and not (isinstance(v, float) and np.isnan(v))}
        if len(kinds) > 1 or (kinds and not kinds <= {str, int, float, bool}):
            df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return df
