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
never need one, and writes of vectors and items check that the writing thread holds it.

This module holds the storage, the items, the lock and the derived data; adding items (core.adding),
embedding (core.embedding) and deleting (core.deletion) are thin methods here that call those modules.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
from filelock import FileLock

# deletion and embedding live in core.deletion / core.embedding; their names stay importable from here
from .deletion import DELETE_JOURNAL, TOMBSTONE, DeleteReport, delete_workspace, remove_tombstones  # noqa: F401
from .embedding import EmbedPlan, EmbedProgress, EmbedReport, StaleVectorsError, stale_reason  # noqa: F401
from .progress import Progress
from .storage import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    remove_temp_files,
)
from .vectorstore import VectorStore

if TYPE_CHECKING:
    from .artifacts import Codec

log = logging.getLogger(__name__)

ITEM_COLUMNS = ["id", "modality", "text", "image", "thumb", "source", "pair", "width", "height", "added"]
MODALITIES = ("image", "text", "row")
THUMB_SIZE = 192
STORE_THREADS = 8  # images stored at once by an import (their files wait for the disk, see core.adding)
FORMAT_VERSION = 1
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
    remove_tombstones(root)
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "workspace.json").is_file())


def content_id(kind: str, payload: bytes) -> str:
    """Stable 16-hex-digit id of a piece of content."""
    return hashlib.sha256(kind.encode() + b"\0" + payload).hexdigest()[:16]


@dataclass(frozen=True)
class ItemsFile:
    """An items frame ready to be written (:meth:`Workspace.prepare_items`): normalised, and as Parquet bytes."""

    frame: pd.DataFrame
    data: bytes


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
        from .messages import skipped_words

        return skipped_words(self.skipped - self.repeated, self.repeated)


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
        second ``writing()`` inside the first one, in the same thread, raises RuntimeError (it would wait for
        itself).
        """
        return self._lock(timeout)

    def holds_write_lock(self) -> bool:
        """Whether the calling thread holds this workspace's write lock (:meth:`writing`), through any
        Workspace object of this folder."""
        return _HOLDERS.get(os.path.realpath(self.path / ".lock")) == threading.get_ident()

    def require_writing(self, what: str) -> None:
        """Raise RuntimeError naming ``what`` unless the calling thread holds the write lock: the check of
        every write that must happen under it (vectors, items.parquet)."""
        if not self.holds_write_lock():
            raise RuntimeError(f"{what} in workspace {str(self.path)!r} needs its write lock: hold "
                               "`with ws.writing():` around the write (readers need none)")

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

    def artifact(self, kind: str, model: str | None, key: str, compute: Callable[[], T], *, codec: Codec[T],
                 reuse: bool = True) -> T:
        """Get-or-compute one derived artifact: ``derived_dir(kind, model) / (key + codec.suffix)`` (see
        core.artifacts). ``codec.load`` reads it (None: missing, unreadable or not wanted); otherwise
        ``compute()`` runs without the lock (other writers go on) and its value is written under
        :meth:`writing`: leftovers of killed writes removed, ``codec.save`` into a temp file (companions
        first), the sidecar that lets a deletion purge it, then the fsynced rename (a crash leaves the old
        artifact or the new one). ``reuse=False`` only writes. Returns ``load``'s or ``compute``'s value.
        ``codec`` must be registered (:func:`core.artifacts.register_codec`)."""
        from .artifacts import get_or_compute

        return get_or_compute(self, kind, model, key, compute, codec=codec, reuse=reuse)

    def artifact_path(self, kind: str, model: str | None, key: str, codec: Codec) -> Path:
        """The commit file of an artifact, ``derived_dir(kind, model) / (key + codec.suffix)`` (may not exist)."""
        from .artifacts import artifact_path

        return artifact_path(self, kind, model, key, codec)

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
        """Commit scanned candidates (see core.ingest.Candidate): ids, dedup, files, rows, vectors
        (:func:`core.adding.add_candidates`). ``progress(done, total)`` every 500 candidates and at the end."""
        from .adding import add_candidates

        return add_candidates(self, candidates, errors=errors, progress=progress)

    def add_row_table(self, table) -> IngestReport:
        """Commit a streamed table's rows (core.ingest.RowTable) in bulk (:func:`core.adding.add_row_table`)."""
        from .adding import add_row_table

        return add_row_table(self, table)

    def add_rows(self, rows: pd.DataFrame) -> int:
        """Append item rows whose ids are not in the workspace yet (the first row of an id wins).

        For items whose content stays where it is (core.distributed manifests reference their images
        instead of copying them): ``rows`` has at least ``id`` and ``modality``; missing item columns
        are filled with None, ``added`` with now. Returns the number of rows added.
        """
        from .adding import add_rows

        return add_rows(self, rows)

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
        writer of items (ingest, another deletion) finishes the removal (see core.deletion).
        """
        from .deletion import delete_items

        return delete_items(self, ids)

    def delete(self) -> dict:
        """Delete this whole workspace folder (see :func:`delete_workspace`)."""
        return delete_workspace(self.path)

    def purge_derived(self, gone: set[str]) -> dict[str, list[str]]:
        """Prune or remove every derived artifact that holds any of the item ids ``gone``, and derived files
        written before the artifact protocol (a deletion's last step; caller holds the lock). See
        :func:`core.artifacts.purge`."""
        from .artifacts import purge

        return purge(self, gone)

    def _pending_deleted(self) -> set[str]:
        """Ids of a deletion that committed but has not removed their vectors yet (normally none)."""
        from .deletion import pending_deleted

        return pending_deleted(self)

    # ---- storing items (for writers: core.adding, core.deletion) ----------------------------
    @staticmethod
    def candidate_id(c) -> str:
        """The content id a scanned candidate (core.ingest.Candidate) gets in every workspace."""
        if c.modality == "image":
            return content_id("image", c.read_image())
        if c.modality == "text":
            return content_id("text", (c.text or "").encode("utf-8"))
        from .ingest.rowids import row_content_id

        return row_content_id(c.meta or {}, c.vectors or {})

    def store_image(self, cid: str, data: bytes, ext: str | None) -> dict:
        """Store one image's bytes under its content id ``cid`` and its thumbnail; returns the item row's
        ``{"image", "thumb", "width", "height"}``. For writers of items (caller holds the lock; several
        images may be stored at once from threads)."""
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

    @staticmethod
    def prepare_items(df: pd.DataFrame) -> ItemsFile:
        """``df`` made ready for :meth:`write_items`: its columns normalised and its Parquet bytes encoded.
        Needs no lock, so a writer can prepare the items (the slow part of writing a million rows) while
        it writes other files, then commit them quickly."""
        df = _normalise_columns(df)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return ItemsFile(df, buf.getvalue())

    def write_items(self, df: pd.DataFrame | ItemsFile) -> None:
        """Replace ``items.parquet`` with ``df`` (a frame, or one made ready by :meth:`prepare_items`;
        atomically) and finish a deletion interrupted after its commit point. For writers of items: raises
        RuntimeError unless this thread holds :meth:`writing`."""
        from .deletion import finish_delete

        self.require_writing("writing the items")
        prepared = df if isinstance(df, ItemsFile) else self.prepare_items(df)
        remove_temp_files(self.path, self.items_path.name)  # we hold the lock: temp files here are a crash's
        atomic_write_bytes(self.items_path, prepared.data)
        with self._mutex:
            self._items, self._items_key = None, None
        finish_delete(self, prepared.frame)  # a deletion interrupted after its commit point

    # ---- vectors ---------------------------------------------------------------------------
    def store(self, model: str) -> VectorStore:
        """The vector store of ``model``; its writes (append, rewrite, remove) need :meth:`writing`."""
        if model not in self._stores:
            self._stores[model] = VectorStore(self.path / "vectors", model,
                                              guard=lambda: self.require_writing(f"writing vectors of {model!r}"))
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
        """Whether the stored vectors of ``model`` still match the model: up to ``n`` stored items are encoded
        again and compared; None when they match, else ``{"items": [ids], "min_cosine": c}``
        (:func:`core.embedding.stale_vectors`)."""
        from .embedding import stale_vectors

        return stale_vectors(self, model, encoder, n=n)

    def check_vectors_current(self, model: str, encoder=None) -> None:
        """Raise :class:`StaleVectorsError` when :meth:`stale_vectors` finds that ``model`` no longer gives
        the stored vectors: adding vectors then would mix two spaces."""
        from .embedding import check_vectors_current

        check_vectors_current(self, model, encoder)

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
        """What an embedding run of ``model`` has to do, the same for every engine (this process, Ray): the
        items without a vector that the model can encode, after the checks of :meth:`check_embed`
        (:func:`core.embedding.plan_embed`)."""
        from .embedding import plan_embed

        return plan_embed(self, model, encoder=encoder, dtype=dtype)

    def check_embed(self, model: str, *, encoder=None, dtype: str | None = None, stale: bool = True) -> None:
        """The checks before vectors of ``model`` are added: storage ``dtype``, the ``encoder``'s dimension
        and, with ``stale``, current weights (:func:`core.embedding.check_embed`)."""
        from .embedding import check_embed

        check_embed(self, model, encoder=encoder, dtype=dtype, stale=stale)

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
        from .embedding import embed

        return embed(self, model, progress=progress, device=device, batch_size=batch_size, chunk_size=chunk_size,
                     dtype=dtype, refresh=refresh, reduced_decode=reduced_decode)

    def models_with_vectors(self) -> dict[str, int]:
        """``{model_id: number of vectors}`` of the models with at least one vector here, most first."""
        counts = {m: int(v["n"]) for m, v in self.models().items() if v["n"]}
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

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


_HOLDERS: dict[str, int] = {}  # lock file (real path) -> the thread of this process that holds it
os.register_at_fork(after_in_child=_HOLDERS.clear)  # a forked child holds no lock of its parent


class _WriteLock(FileLock):
    """The write lock of a workspace that must exist: a writer that waited while the workspace was deleted
    gets FileNotFoundError once it holds the lock, instead of writing into a folder that is gone. Records
    which thread holds it (:meth:`Workspace.holds_write_lock`), and refuses a second acquisition by that
    thread through another lock object, which would wait for itself."""

    def __init__(self, lock_file: str, timeout: float, *, meta: Path | None):
        super().__init__(lock_file, timeout=timeout)
        self._meta = meta
        self._key = os.path.realpath(lock_file)
        self._registered = False  # this object recorded its thread in _HOLDERS

    def acquire(self, *args, **kwargs):
        if not self.is_locked and _HOLDERS.get(self._key) == threading.get_ident():
            raise RuntimeError(f"this thread already holds the write lock of workspace "
                               f"{str(Path(self._key).parent)!r}: writing() is not re-entrant")
        proxy = super().acquire(*args, **kwargs)
        _HOLDERS[self._key], self._registered = threading.get_ident(), True
        if self._meta is not None and not self._meta.is_file():
            self.release()
            raise FileNotFoundError(f"workspace {str(self._meta.parent)!r} was deleted; nothing was written")
        return proxy

    def release(self, force: bool = False) -> None:
        super().release(force=force)
        if self._registered and not self.is_locked:
            _HOLDERS.pop(self._key, None)
            self._registered = False


def _manifest_key(store: VectorStore) -> tuple | None:
    """Changes whenever the store's manifest (its commit point) is rewritten."""
    try:
        st = store.manifest_path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _creation_leftover(name: str) -> bool:
    """Files that creating a workspace makes before workspace.json exists (the lock, its temp file):
    a folder holding only these is a workspace whose creation was interrupted or is under way."""
    return name == ".lock" or (name.startswith(".workspace.json.") and name.endswith(".tmp"))


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
    df = df.copy(deep=False)  # columns are replaced below, never changed in place: the caller's frame stays
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
