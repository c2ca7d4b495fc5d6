"""Where uploads come from: files, folders (walked without leaving them) and ZIP archives (read with
the archive safety limits), turned into ordered, not-yet-read entries (``Entry``) and errors."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from .common import IMAGE_EXTS, TABLE_EXTS, TEXT_EXTS, Limits, Problem, ext_of, fmt_bytes

# ZIP-based document formats that are not archives of uploads.
_ZIP_DOCUMENT_EXTS = {"docx", "pptx", "xlsm", "odt", "ods", "odp", "epub", "jar", "apk", "whl", "npz"}
# Model checkpoints and pickles are never data: refused by name, never opened (a PyTorch .pt is a ZIP
# holding a pickle; a .bin that turns out to be one is refused when its members are listed).
_CHECKPOINT_EXTS = {"pt", "pth", "ckpt", "pkl", "pickle", "safetensors", "joblib"}
_CHECKPOINT_HINT = "model checkpoints and pickles are never opened as data; load models from the model list"
# Operating-system clutter that is skipped silently (hidden names starting with "." are too).
_JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}


_SUPPORTED_HINT = (
    "supported: images " + ", ".join("." + e for e in sorted(IMAGE_EXTS))
    + "; tables " + ", ".join("." + e for e in sorted(TABLE_EXTS)) + "; .txt; .zip"
)


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


@dataclass(eq=False)
class Entry:
    """One file on disk or archive member found in the upload: where it came from, its extension and how to read it."""

    source: str
    ext: str
    container: str  # "" for files on disk, else the source of the archive holding it
    key: tuple[str, ...]  # absolute path parts on disk, member path parts in an archive
    match_parts: tuple[str, ...]  # path parts used to match table references by suffix
    size: int | None
    reader: Callable[[], bytes]
    depth: int = 0  # number of archives this entry is inside
    disk_path: str | None = None

    def read(self, limits: Limits) -> bytes:
        if self.size is not None and self.size > limits.max_file_bytes:
            raise Problem(
                f"file is {fmt_bytes(self.size)}, over the {fmt_bytes(limits.max_file_bytes)} limit"
            )
        return self.reader()

    @property
    def kind(self) -> str:
        if self.ext in IMAGE_EXTS:
            return "image"
        if self.ext in TABLE_EXTS:
            return "table"
        return "text"


def disk_reader(path: str) -> Callable[[], bytes]:
    """A reader of the file's bytes that raises :class:`Problem` (with the OS reason) when it cannot be read."""

    def read() -> bytes:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as e:
            raise Problem(f"could not read the file ({e.strerror or e})") from None

    return read


def disk_entry(path: str, source: str, match_parts: tuple[str, ...]) -> Entry:
    """The entry of a file on disk, shown as ``source``, keyed and read by its absolute path;
    ``match_parts`` are the path parts a table's image reference may end with."""
    ap = os.path.abspath(path)
    return Entry(source=source, ext=ext_of(path), container="", key=PurePath(ap).parts, match_parts=match_parts,
                  size=os.path.getsize(path), reader=disk_reader(ap), disk_path=ap)


def _member_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        buf = bytearray()
        try:
            with zf.open(info) as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    buf += chunk
                    # zipfile already stops at the declared size; this guards against a
                    # reader that does not.
                    if len(buf) > info.file_size:
                        raise Problem("zip bomb: member decompresses to more than its declared size")
        except Problem:
            raise
        except NotImplementedError as e:
            raise Problem(f"archive member uses an unsupported compression method ({e})") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as e:
            raise Problem(f"corrupt archive member ({e})") from None
        except Exception as e:  # noqa: BLE001 - zlib.error, lzma.LZMAError ...
            raise Problem(f"corrupt archive member ({e})") from None
        return bytes(buf)

    return read


def _member_parts(raw: str) -> tuple[tuple[str, ...] | None, str | None]:
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None, "archive member escapes the archive (absolute path)"
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None, "archive member escapes the archive ('..' in its path)"
    return parts, None


class Expander:
    """Turns the ``paths`` argument into an ordered list of entries and errors."""

    def __init__(self, limits: Limits, stack: contextlib.ExitStack) -> None:
        self.limits = limits
        self.stack = stack
        self.items: list[Entry | tuple[str, str]] = []
        self._display_names: set[str] = set()

    def _display(self, p: str) -> str:
        name = os.path.basename(os.path.abspath(p)) or p
        if name in self._display_names:
            name = p
        self._display_names.add(name)
        return name

    def add_path(self, p: str | os.PathLike) -> None:
        sp = os.fspath(p)
        if not os.path.lexists(sp):
            self.items.append((sp, "file or folder not found"))
            return
        display = self._display(sp)
        if os.path.isdir(sp):
            self._walk(sp, display)
        elif os.path.isfile(sp):
            self._classify(disk_entry(sp, display, (os.path.basename(os.path.abspath(sp)),)))
        else:
            self.items.append((display, "not a regular file or folder"))

    def _walk(self, root: str, display: str) -> None:
        root_real = os.path.realpath(root)
        found: list[tuple[tuple[str, ...], str]] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if _is_junk(d):
                    continue
                if os.path.islink(full):
                    if not is_inside(os.path.realpath(full), root_real):
                        rel = os.path.relpath(full, root).replace(os.sep, "/")
                        self.items.append(
                            (f"{display}/{rel}", "symbolic link to a folder outside the uploaded folder, not followed")
                        )
                    continue
                keep.append(d)
            dirnames[:] = keep
            for f in filenames:
                if _is_junk(f):
                    continue
                full = os.path.join(dirpath, f)
                rel = tuple(PurePath(os.path.relpath(full, root)).parts)
                found.append((rel, full))
        for rel, full in sorted(found):
            src = display + "/" + "/".join(rel)
            if os.path.islink(full) and not is_inside(os.path.realpath(full), root_real):
                self.items.append((src, "symbolic link to a file outside the uploaded folder, not followed"))
                continue
            if not os.path.isfile(full):
                self.items.append((src, "not a regular file"))
                continue
            self._classify(disk_entry(full, src, (display, *rel)))

    def _classify(self, entry: Entry) -> None:
        ext = entry.ext
        if ext in IMAGE_EXTS or ext in TABLE_EXTS or ext in TEXT_EXTS:
            if entry.size == 0:
                self.items.append((entry.source, "empty file"))
            else:
                self.items.append(entry)
            return
        if ext in _ZIP_DOCUMENT_EXTS:
            self.items.append((entry.source, f"unsupported file type '.{ext}' ({_SUPPORTED_HINT})"))
            return
        if ext in _CHECKPOINT_EXTS:
            self.items.append((entry.source, f"unsupported file type '.{ext}': {_CHECKPOINT_HINT}"))
            return
        is_zip = False
        data: bytes | None = None
        try:
            if entry.disk_path is not None:
                is_zip = zipfile.is_zipfile(entry.disk_path)
            elif ext == "zip" or entry.size:
                if ext == "zip" and entry.depth + 1 > self.limits.max_archive_depth:
                    self.items.append((entry.source, self._too_deep(entry.depth + 1)))
                    return
                data = entry.read(self.limits)
                is_zip = zipfile.is_zipfile(io.BytesIO(data))
        except Problem as p:
            self.items.append((entry.source, p.reason))
            return
        if is_zip:
            self._open_archive(entry, data)
        elif ext == "zip":
            self.items.append((entry.source, "empty file" if entry.size == 0 else "not a valid ZIP archive"))
        else:
            label = f"'.{ext}'" if ext else "(no extension)"
            self.items.append((entry.source, f"unsupported file type {label} ({_SUPPORTED_HINT})"))

    def _too_deep(self, depth: int) -> str:
        return (
            f"nested too deep: archive at nesting level {depth}, at most "
            f"{self.limits.max_archive_depth} levels of archives are opened"
        )

    def _open_archive(self, entry: Entry, data: bytes | None) -> None:
        depth = entry.depth + 1
        if depth > self.limits.max_archive_depth:
            self.items.append((entry.source, self._too_deep(depth)))
            return
        try:
            zf = zipfile.ZipFile(entry.disk_path if data is None else io.BytesIO(data))  # type: ignore[arg-type]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            self.items.append((entry.source, f"not a valid ZIP archive ({e})"))
            return
        self.stack.callback(zf.close)
        if _is_torch_checkpoint(zf.namelist()):
            self.items.append(
                (entry.source, f"a PyTorch checkpoint (pickle), not an archive of data: {_CHECKPOINT_HINT}"))
            return
        for member in safe_members(zf, entry.source, self.limits, self.items):
            parts, info = member
            child = Entry(
                source=f"{entry.source}:{'/'.join(parts)}",
                ext=ext_of(parts[-1]),
                container=entry.source,
                key=parts,
                match_parts=parts,
                size=info.file_size,
                reader=_member_reader(zf, info),
                depth=depth,
            )
            self._classify(child)


def _is_torch_checkpoint(names: list[str]) -> bool:
    """torch.save's ZIP layout: everything under one folder holding ``data.pkl`` and ``version``."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or len(names) > 100_000:
        return False
    top = tops.pop()
    return f"{top}/data.pkl" in names and (f"{top}/version" in names or f"{top}/.format_version" in names)


def is_inside(real: str, root_real: str) -> bool:
    """Whether the resolved path ``real`` is the folder ``root_real`` or lies under it."""
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def safe_members(
    zf: zipfile.ZipFile, source: str, limits: Limits, errors: list
) -> list[tuple[tuple[str, ...], zipfile.ZipInfo]]:
    """Return the members that are safe to read, sorted by path; append errors for the rest.

    Checks whole-archive limits (member count, total size, overall ratio) first; any of these
    rejects the whole archive.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_archive_members:
        errors.append((source, f"archive has {len(infos):,} members, over the limit of {limits.max_archive_members:,}"))
        return []
    total_u = sum(i.file_size for i in infos)
    total_c = sum(i.compress_size for i in infos)
    if total_u > limits.max_archive_total_bytes:
        errors.append((
            source,
            f"zip bomb: archive expands to {fmt_bytes(total_u)}, over the "
            f"{fmt_bytes(limits.max_archive_total_bytes)} limit",
        ))
        return []
    if total_u and (total_c == 0 or total_u / total_c > limits.max_archive_ratio):
        ratio = total_u / max(total_c, 1)
        errors.append((
            source,
            f"zip bomb: archive expands {ratio:,.0f}x, over the {limits.max_archive_ratio:,.0f}x limit",
        ))
        return []
    ok: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    for info in infos:
        if info.is_dir():
            continue
        msrc = f"{source}:{info.filename}"
        parts, problem = _member_parts(info.filename)
        if problem:
            errors.append((msrc, problem))
            continue
        if not parts or any(_is_junk(p) for p in parts):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            errors.append((msrc, "symbolic link in the archive, not supported"))
            continue
        if info.flag_bits & 0x1:
            errors.append((msrc, "encrypted archive member, not supported"))
            continue
        if info.file_size > limits.max_file_bytes:
            errors.append((
                msrc,
                f"zip bomb: member expands to {fmt_bytes(info.file_size)}, over the "
                f"{fmt_bytes(limits.max_file_bytes)} per-file limit",
            ))
            continue
        if info.file_size and (
            info.compress_size == 0 or info.file_size / info.compress_size > limits.max_archive_ratio
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            errors.append((
                msrc,
                f"zip bomb: member expands {ratio:,.0f}x, over the {limits.max_archive_ratio:,.0f}x limit",
            ))
            continue
        ok.append((parts, info))
    ok.sort(key=lambda m: m[0])
    return ok
