"""Derived data: one protocol for every cache computed from a workspace's items and vectors.

An *artifact* is one cached result under ``derived/``: its commit file
``derived/<kind>/<model-slug>/<key><suffix>`` (:meth:`Workspace.derived_dir`), optional companion files
beside it, and a sidecar ``<key><suffix>.artifact`` (JSON: the codec's registered name and the artifact's
files, commit file first). A :class:`Codec` says how a value is written and read back, which item ids a
stored artifact depends on, and optionally how to drop some ids in place.

* :func:`artifact_key` turns the inputs of a computation into a stable hex digest (used in file names).
* :meth:`Workspace.artifact` (:func:`get_or_compute`) reads the artifact, or computes it (without the
  lock) and writes it: under ``ws.writing()`` leftovers of killed writes are removed, ``codec.save``
  writes the commit file into a temp file (and companions with core.storage's atomic writes), the sidecar
  is written, and the temp file is fsynced and renamed over the commit file, last: a crash leaves the old
  artifact or the new one, and an artifact never loads without its sidecar being there first.
* :func:`purge` (called by a deletion, lock held) walks ``derived/``: an artifact whose codec's ``ids``
  names a deleted item is pruned (``codec.prune``) or removed whole, commit file first; an artifact whose
  commit file is missing (a write or removal killed midway) is removed; a file no sidecar lists (derived
  data written before this protocol, temp files) is removed too: everything here is a cache.

Codecs are found by name: an owning module calls :func:`register_codec` at import, and
:data:`CODEC_HOMES` (name → ``"module:attribute"``) lets :func:`codec_named` import that module on demand,
so a deletion in a process that never imported the owner still reads the ids of its artifacts. A name
that cannot be resolved gets its artifacts removed whole on a purge.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import numpy as np

from .storage import atomic_write, atomic_write_json, read_json, remove_file, remove_temp_files

log = logging.getLogger(__name__)

T = TypeVar("T")
SIDECAR = ".artifact"  # <commit file name> + SIDECAR: JSON {"format", "codec", "files"}
SIDECAR_FORMAT = 1
CODEC_HOMES: dict[str, str] = {  # the project's codecs, importable by a process that never used them
    "neighbour-index": "core.index:INDEX_CODEC",
    "map": "core.maps:MAP_CODEC",
    "map-labels": "core.labels:LABELS_CODEC",
    "patches": "core.concepts.patches:PATCHES_CODEC",
    "concepts": "core.concepts.explain:CONCEPTS_CODEC",
    "world-masks": "core.demo.workspace:MASKS_CODEC",
}
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9_.-]{1,32}")
_FILE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}")
_ARRAY_TAG = "\x00ndarray"
_REGISTRY: dict[str, Codec] = {}


# ---- keys -------------------------------------------------------------------------------------------
def artifact_key(**inputs: Any) -> str:
    """A stable 32-hex-digit digest of ``inputs``: numbers, strings, bools, None, lists, tuples (as lists)
    and dicts with string keys (JSON, sorted keys), numpy arrays by dtype, shape and content (object
    arrays as strings), numpy scalars as numbers. The same inputs give the same key in every process; any
    change of a value, a key, an array's dtype, shape or any element gives another. TypeError names an
    input of another type."""
    canon = {str(k): _canonical(v, k) for k, v in inputs.items()}
    text = json.dumps(canon, sort_keys=True, ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _canonical(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item() if not isinstance(v, (np.str_, np.bytes_)) else str(v)
    if isinstance(v, (list, tuple)):
        return [_canonical(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise TypeError(f"artifact_key input {where!r}: dict keys must be strings; got {bad[0]!r}")
        return {k: _canonical(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, np.ndarray):
        a = v.astype(str) if v.dtype == object else v
        a = np.ascontiguousarray(a)
        digest = hashlib.sha256(a.reshape(-1).view(np.uint8) if a.size else b"").hexdigest()
        return {_ARRAY_TAG: [a.dtype.str, list(a.shape), digest, v.dtype == object]}
    raise TypeError(f"artifact_key input {where!r} has type {type(v).__name__}; use numbers, strings, bools, "
                    "None, lists, tuples, dicts or numpy arrays")


# ---- codecs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one kind of artifact is stored.

    ``suffix``: the commit file's suffix (``".npz"``, ``".json"``). ``save(f, value)``: writes ``value``
    into ``f``, an :class:`ArtifactFile` (a binary file: the commit file's temp file) whose
    :meth:`~ArtifactFile.companion` names (and may write) companion files. ``load(path)``: the value of the
    commit file ``path``, or None when it is missing, unreadable or not what is wanted (never raises for
    those). ``ids(path)``: the item ids the stored artifact depends on (None: it depends on no item).
    ``prune(path, gone)``: drop the ids ``gone`` from the stored artifact in place, atomically (None: an
    artifact holding a deleted id is removed whole)."""

    suffix: str
    save: Callable[[IO[bytes], T], None]
    load: Callable[[Path], T | None]
    ids: Callable[[Path], Iterable[str]] | None = None
    prune: Callable[[Path, set[str]], None] | None = None

    def __post_init__(self):
        if not isinstance(self.suffix, str) or not _SUFFIX_RE.fullmatch(self.suffix) or \
                self.suffix.endswith(SIDECAR):
            raise ValueError(f"codec suffix must be '.' and 1-32 letters, digits, '.', '_' or '-', not ending in "
                             f"{SIDECAR!r}; got {self.suffix!r}")


def register_codec(name: str, codec: Codec) -> Codec:
    """Register ``codec`` under ``name`` (letters, digits, ``_``, ``-``) and return it; the sidecar of every
    artifact it writes records the name. A name registered again gets the new codec (a module reloaded)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"codec name must be 1-128 letters, digits, '_' or '-'; got {name!r}")
    if not isinstance(codec, Codec):
        raise TypeError(f"register_codec({name!r}, ...) needs a Codec; got {type(codec).__name__}")
    _REGISTRY[name] = codec
    return codec


def codec_named(name: str) -> Codec | None:
    """The codec registered as ``name``; a name of :data:`CODEC_HOMES` not registered yet imports its
    module first. None when it cannot be found (or its module fails to import)."""
    if name not in _REGISTRY and name in CODEC_HOMES:
        module, _, attr = CODEC_HOMES[name].partition(":")
        try:
            found = getattr(importlib.import_module(module), attr, None)
        except Exception as e:  # noqa: BLE001 - an owner that cannot be imported: its artifacts are removed whole
            log.warning("codec %r: importing %s failed: %s", name, module, e)
            return None
        if isinstance(found, Codec) and name not in _REGISTRY:
            _REGISTRY[name] = found
    return _REGISTRY.get(name)


def _name_of(codec: Codec) -> str:
    for name, c in _REGISTRY.items():
        if c is codec:
            return name
    raise ValueError(f"the codec for {codec.suffix!r} files is not registered; call register_codec(name, codec) "
                     "when its module is imported (and add the name to core.artifacts.CODEC_HOMES)")


# ---- writing and reading ----------------------------------------------------------------------------
class ArtifactFile:
    """The binary file ``Codec.save`` writes an artifact's commit file into (every file method of the
    underlying temp file works: ``write``, ``seek``, ``tell``, ...), with the artifact's paths:
    ``path`` (the commit file's final path) and :meth:`companion`."""

    def __init__(self, f: IO[bytes], path: Path):
        self._f, self.path, self.companions = f, path, []

    def companion(self, name: str, write: Callable[[IO[bytes]], Any] | None = None) -> Path:
        """The path of a companion file ``name`` beside the commit file (name it ``<key>.<part>`` unless the
        artifact is alone in its folder), recorded in the sidecar; temp files of an earlier killed write
        of it are removed. With ``write``, ``write(f)`` writes it atomically (core.storage) here."""
        if not isinstance(name, str) or not _FILE_RE.fullmatch(name) or name.endswith(SIDECAR) or \
                name == self.path.name:
            raise ValueError(f"companion of {self.path.name!r} must be a plain file name beside it; got {name!r}")
        path = self.path.parent / name
        remove_temp_files(path.parent, name)
        if name not in self.companions:
            self.companions.append(name)
        if write is not None:
            atomic_write(path, write)
        return path

    def write(self, data) -> int:
        return self._f.write(data)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._f, attr)


def artifact_path(ws, kind: str, model: str | None, key: str, codec: Codec) -> Path:
    """The commit file of an artifact: ``ws.derived_dir(kind, model) / (key + codec.suffix)``; ``key``: 1-128
    letters, digits, ``_`` or ``-`` (e.g. an :func:`artifact_key`)."""
    if not isinstance(key, str) or not _NAME_RE.fullmatch(key):
        raise ValueError(f"artifact key must be 1-128 letters, digits, '_' or '-'; got {key!r}")
    return ws.derived_dir(kind, model) / (key + codec.suffix)


def get_or_compute(ws, kind: str, model: str | None, key: str, compute: Callable[[], T], *, codec: Codec[T],
                   reuse: bool = True) -> T:
    """See :meth:`Workspace.artifact`."""
    path = artifact_path(ws, kind, model, key, codec)
    name = _name_of(codec)
    if reuse and path.is_file():
        hit = codec.load(path)
        if hit is not None:
            return hit
    value = compute()
    write_artifact(ws, path, value, codec, name)
    return value


def write_artifact(ws, path: Path, value: T, codec: Codec[T], name: str | None = None) -> Path:
    """Write ``value`` as the artifact whose commit file is ``path`` (under ``ws.writing()``): leftovers of
    killed writes go, ``codec.save`` writes a temp file (and companions), the sidecar is written, and the
    temp file is renamed over ``path`` last."""
    name = name or _name_of(codec)
    path = Path(path)
    if ws.derived_root.resolve() not in path.resolve().parents:
        raise ValueError(f"an artifact lives under {str(ws.derived_root)!r}; got {str(path)!r}")
    sidecar = path.with_name(path.name + SIDECAR)
    with ws.writing():
        if path.parent.is_dir():
            remove_temp_files(path.parent, path.name)
            remove_temp_files(path.parent, sidecar.name)

        def save(f: IO[bytes]) -> None:
            out = ArtifactFile(f, path)
            codec.save(out, value)
            atomic_write_json(sidecar, {"format": SIDECAR_FORMAT, "codec": name,
                                        "files": [path.name, *out.companions]})

        return atomic_write(path, save)


# ---- listing and purging ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredArtifact:
    """An artifact on disk: ``path`` its commit file, ``codec`` its codec's name, ``files`` every file of it
    (commit file first), ``sidecar`` the sidecar file."""

    path: Path
    codec: str
    files: tuple[Path, ...]
    sidecar: Path

    @property
    def committed(self) -> bool:
        return self.path.is_file()


def stored_artifacts(ws) -> list[StoredArtifact]:
    """Every artifact under ``derived/`` with a readable sidecar, sorted by path (committed or not)."""
    out = []
    root = ws.derived_root
    for sidecar in sorted(root.rglob(f"*{SIDECAR}")) if root.is_dir() else []:
        meta = _read_sidecar(sidecar) if sidecar.is_file() else None
        if meta is None or meta["files"][0] != sidecar.name[: -len(SIDECAR)]:
            continue  # unreadable: a purge removes it with the files no sidecar lists
        paths = tuple(sidecar.parent / f for f in meta["files"])
        out.append(StoredArtifact(paths[0], meta["codec"], paths, sidecar))
    return out


def remove_artifact(path: Path) -> list[Path]:
    """Remove the artifact whose commit file is ``path``: the commit file first (a half-removed artifact never
    loads), then the companions its sidecar lists, then the sidecar. Call it with the workspace's write lock
    held. Returns the files removed."""
    sidecar = path.with_name(path.name + SIDECAR)
    meta = _read_sidecar(sidecar)
    companions = [path.parent / f for f in (meta["files"] if meta else []) if f != path.name]
    return [f for f in (path, *companions, sidecar) if remove_file(f)]


def _read_sidecar(sidecar: Path) -> dict | None:
    """A sidecar's ``{"codec", "files"}`` when it is readable and well formed, else None."""
    try:
        meta = read_json(sidecar)
    except (OSError, ValueError):
        return None
    files = meta.get("files") if isinstance(meta, dict) else None
    if not (isinstance(files, list) and files and all(isinstance(f, str) and _FILE_RE.fullmatch(f) for f in files)
            and isinstance(meta.get("codec"), str)):
        return None
    return meta


def purge(ws, gone: set[str]) -> dict[str, list[str]]:
    """Remove from ``derived/`` what holds any item id of ``gone`` (call it with ``ws.writing()`` held).

    For every artifact: its codec's ``ids`` are read; one holding a gone id is pruned in place (a codec with
    ``prune``) or removed whole, commit file first (a half-removed artifact never loads). An artifact whose
    commit file is missing, whose codec is unknown or whose ids cannot be read is removed whole. Files that
    no sidecar lists (written before this protocol, temp files of killed writes) are removed, JSON files
    (their commit points) first; empty folders go. Returns ``{"pruned", "removed"}``: paths relative to
    the workspace."""
    gone = set(gone)
    root = ws.derived_root
    report: dict[str, list[str]] = {"pruned": [], "removed": []}
    if not root.is_dir():
        return report
    listed: set[Path] = set()
    for art in stored_artifacts(ws):
        listed.update((*art.files, art.sidecar))
        action = _purge_action(art, gone)
        if action == "prune":
            try:
                codec_named(art.codec).prune(art.path, gone)
                report["pruned"].append(_rel(ws, art.path))
                continue
            except Exception as e:  # noqa: BLE001 - a cache that cannot be pruned is removed instead
                log.warning("removing %s: pruning it failed: %s", art.path, e)
                action = "remove"
        if action == "remove":
            report["removed"] += [_rel(ws, f) for f in remove_artifact(art.path)]
    legacy = [p for p in root.rglob("*") if p not in listed and (p.is_file() or p.is_symlink())]
    for p in sorted(legacy, key=lambda p: (str(p.parent), not p.name.endswith(".json"), p.name)):
        if remove_file(p):
            report["removed"].append(_rel(ws, p))
    for folder in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        with contextlib.suppress(OSError):  # not empty
            folder.rmdir()
    return report


def _purge_action(art: StoredArtifact, gone: set[str]) -> str:
    """"keep", "prune" or "remove" for one stored artifact and the deleted ids ``gone``."""
    if not art.committed:
        return "remove"  # a write or a removal killed midway
    codec = codec_named(art.codec)
    if codec is None:
        log.warning("removing %s: its codec %r is not registered", art.path, art.codec)
        return "remove"
    if codec.ids is None:
        return "keep"
    try:
        held = set(map(str, codec.ids(art.path)))
    except Exception as e:  # noqa: BLE001 - unreadable ids: the cache cannot show it holds none of them
        log.warning("removing %s: its ids cannot be read: %s", art.path, e)
        return "remove"
    if not held & gone:
        return "keep"
    return "prune" if codec.prune is not None else "remove"


def _rel(ws, path: Path) -> str:
    return path.relative_to(ws.path).as_posix()


# ---- helpers for codecs -----------------------------------------------------------------------------
def npz_array(path: Path, name: str = "ids") -> np.ndarray:
    """Array ``name`` of the ``.npz`` file ``path`` (no pickles), as str; OSError / KeyError / ValueError
    when it cannot be read."""
    with np.load(path, allow_pickle=False) as z:
        return z[name].astype(str)


def npz_keys(path: Path) -> list[str]:
    """The array names of the ``.npz`` file ``path`` (e.g. the item ids of arrays keyed by item)."""
    with np.load(path, allow_pickle=False) as z:
        return list(z.files)


def prune_npz_keys(path: Path, gone: set[str]) -> None:
    """Rewrite the ``.npz`` file ``path`` without its arrays named in ``gone`` (atomically, compressed)."""
    with np.load(path, allow_pickle=False) as z:
        kept = {k: z[k] for k in z.files if k not in gone}
    remove_temp_files(path.parent, path.name)
    atomic_write(path, lambda f: np.savez_compressed(f, **kept))
