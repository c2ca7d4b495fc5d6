"""UI-free scanning of uploaded files into validated candidate items.

``scan()`` turns files, folders and ZIP archives (plus pasted lines of text) into
:class:`Candidate` items and a list of per-item errors. It never writes to disk and never
raises for a bad file, member or row: each problem becomes one ``(source, reason)`` entry in
``ScanResult.errors`` and everything good in the same call is kept. The Workspace assigns
content ids, deduplicates, stores image bytes and persists rows; this module only reads.

Row numbers
-----------
Every table row is named by its **1-based data-row number**: the first row below the header
is row 1. For CSV/TSV, blank records do not count; for XLSX, row N is spreadsheet row N + 1;
for JSON it is the position in the array; for JSONL it is the line number in the file.

Safety
------
Images are decoded with Pillow (restricted to PNG, JPEG, WebP, GIF, BMP and TIFF) after their
declared size is checked against ``Limits.max_image_pixels``. ZIP members are read into memory
with the declared sizes, compression ratios, nesting depth and member count bounded; members
that escape the archive, symbolic links and encrypted members are refused. Folders are walked
without following symbolic links that leave the folder. A table never reads a file outside its
own folder.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import posixpath
import re
import stat
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTS",
    "TABLE_EXTS",
    "ROLES",
    "Limits",
    "Candidate",
    "ScanResult",
    "IngestError",
    "scan",
    "read_table",
    "detect_roles",
    "inspect_table",
]

IMAGE_EXTS = {e.lstrip(".") for e in IMAGE_EXTENSIONS}
TABLE_EXTS = {"csv", "tsv", "parquet", "json", "jsonl", "xlsx"}
TEXT_EXTS = {"txt"}
ROLES = ("text", "image", "vector", "numeric", "metadata", "ignore")

# Pillow format name -> canonical extension. Only these decoders are ever used, so an upload
# can never reach e.g. the EPS plugin (which shells out to Ghostscript).
_PIL_FORMATS = {
    "PNG": "png",
    "JPEG": "jpg",
    "MPO": "jpg",  # multi-picture JPEG from phones; the first picture is a plain JPEG
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "DIB": "bmp",
    "TIFF": "tiff",
}
# Decoders Pillow may use; MPO is not an opener of its own (the JPEG opener returns it).
_PIL_OPENERS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF")

# ZIP-based document formats that are not archives of uploads.
_ZIP_DOCUMENT_EXTS = {"docx", "pptx", "xlsm", "odt", "ods", "odp", "epub", "jar", "apk", "whl", "npz"}
# Model checkpoints and pickles are never data: refused by name, never opened (a PyTorch .pt is a ZIP
# holding a pickle; a .bin that turns out to be one is refused when its members are listed).
_CHECKPOINT_EXTS = {"pt", "pth", "ckpt", "pkl", "pickle", "safetensors", "joblib"}
_CHECKPOINT_HINT = "model checkpoints and pickles are never opened as data; load models from the model list"
# Operating-system clutter that is skipped silently (hidden names starting with "." are too).
_JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}

_TEXT_COLUMN_NAMES = ("caption", "title", "text", "description", "sentence", "prompt")
_IMAGE_COLUMN_NAMES = {
    "filepath", "image", "image_path", "file", "path", "filename",
    "file_path", "file_name", "img", "img_path", "image_file", "image_filename", "image_name",
}
_ID_NAMES = {"id", "idx", "index", "uid", "uuid", "key", "pk"}
_NA_STRINGS = {"", "na", "n/a", "nan", "null", "#n/a"}
_CSV_DELIMITERS = (",", "\t", ";", "|")
_SUPPORTED_HINT = (
    "supported: images " + ", ".join("." + e for e in sorted(IMAGE_EXTS))
    + "; tables " + ", ".join("." + e for e in sorted(TABLE_EXTS)) + "; .txt; .zip"
)


# --------------------------------------------------------------------------------------------
# Public data types


@dataclass
class Limits:
    """Safety limits applied while scanning. Sizes are in bytes.

    - ``max_image_pixels``: width x height above which an image is refused before decoding.
    - ``max_file_bytes``: any single file or archive member (also its declared size in a ZIP).
    - ``max_archive_total_bytes``: sum of the declared uncompressed sizes of one archive's members.
    - ``max_archive_ratio``: uncompressed/compressed, checked per member and for the archive.
    - ``max_archive_members``: entries in one archive.
    - ``max_archive_depth``: levels of archives opened; an uploaded ZIP is level 1, a ZIP inside
      it level 2 (allowed by default), a ZIP inside that is "nested too deep".
    - ``max_text_chars``: characters per text item; longer texts are errors, never truncated.
    """

    max_image_pixels: int = 64_000_000
    max_file_bytes: int = 512 * 2**20
    max_archive_total_bytes: int = 4 * 2**30
    max_archive_ratio: float = 200.0
    max_archive_members: int = 200_000
    max_archive_depth: int = 2
    max_text_chars: int = 20_000


@dataclass
class Candidate:
    """One item found in the upload, not yet stored.

    ``vectors`` maps ``"precomputed:<name>"`` to a ``(d,)`` float32 array with finite values.
    ``meta`` holds JSON-able scalars only (str, int, float, bool, None).
    """

    modality: str
    source: str
    text: str | None = None
    image_bytes: bytes | None = None
    image_ext: str | None = None
    pair_key: str | None = None
    meta: dict = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    # a file on disk is read again when it is stored instead of being held: a folder of thousands of
    # phone photos must not sit in memory between the scan and the commit
    image_reader: Callable[[], bytes] | None = None

    def read_image(self) -> bytes:
        """The image's bytes (held, or read from its file now)."""
        if self.image_bytes is not None:
            return self.image_bytes
        if self.image_reader is None:
            raise ValueError(f"{self.source}: no image bytes")
        return self.image_reader()


@dataclass
class ScanResult:
    """Candidates in deterministic order plus ``(source, reason)`` errors."""

    candidates: list[Candidate]
    errors: list[tuple[str, str]]


class IngestError(ValueError):
    """A file (or argument) that cannot be used; ``str()`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = str(reason)
        super().__init__(f"{self.source}: {self.reason}")


class _Problem(Exception):
    """Internal: a reason why one item is unusable; the caller attaches the source."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------------------------
# Small helpers


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} GB"  # pragma: no cover


def _fmt_mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f} MP" if mp >= 10 else f"{mp:.1f} MP"


def _ext_of(name: str) -> str:
    return posixpath.splitext(name)[1].lower().lstrip(".")


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def _norm_name(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", str(name).strip().lower())


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    if isinstance(v, (str, bytes, list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _jsonable(v: Any) -> Any:
    """Convert a cell value to a JSON-able scalar (str/int/float/bool/None)."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple, dict)):
        try:
            return json.dumps(v, default=str, allow_nan=False)
        except ValueError:
            return json.dumps(v, default=str)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    if _is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, str):
        return v
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    return str(v)


def _cell_text(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _decode_text(data: bytes) -> str:
    """Decode UTF-8 (BOM tolerated) or BOM-marked UTF-16; raise _Problem with the byte offset."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise _Problem(f"not valid UTF-16 text at byte {e.start}") from None
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Problem(f"not valid UTF-8 text at byte {e.start + offset}") from None


def _split_lines(text: str) -> list[str]:
    # str.splitlines() also splits on \f, \x1c, \u2028 ..., which would shift line numbers
    # away from what an editor shows.
    return re.split(r"\r\n|\r|\n", text)


# --------------------------------------------------------------------------------------------
# Images


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _bomb_reason(w: int, h: int, limits: Limits) -> str:
    return (
        f"image is {w}x{h} = {_fmt_mp(w * h)}, over the {_fmt_mp(limits.max_image_pixels)} limit "
        "(decompression bomb?)"
    )


def _check_image(data: bytes, limits: Limits) -> str:
    """Decode ``data`` fully (first frame) and return the canonical extension of its format.

    Raises _Problem with a plain-words reason; never lets Pillow's exceptions or
    DecompressionBombWarning escape.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _Problem("empty file")
    if len(data) > limits.max_file_bytes:
        raise _Problem(f"file is {_fmt_bytes(len(data))}, over the {_fmt_bytes(limits.max_file_bytes)} limit")
    fmt = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data), formats=_PIL_OPENERS) as im:
                w, h = im.size
                if w * h > limits.max_image_pixels:
                    raise _Problem(_bomb_reason(w, h, limits))
                if w <= 0 or h <= 0:
                    raise _Problem("unreadable or truncated image (zero width or height)")
                fmt = im.format
                if fmt == "JPEG" and min(w, h) >= 16:  # every coefficient is still read and checked, at 1/8 the work
                    im.draft(None, (max(1, w // 8), max(1, h // 8)))
                im.load()  # for GIF/TIFF this decodes the first frame, which is what counts
        except _Problem:
            raise
        except Image.DecompressionBombError as e:
            size = _png_size(data)
            if size is not None:
                raise _Problem(_bomb_reason(size[0], size[1], limits)) from None
            raise _Problem(f"image is too large to decode safely (decompression bomb?): {e}") from None
        except UnidentifiedImageError:
            raise _Problem(
                "unreadable or truncated image (not a PNG, JPEG, WebP, GIF, BMP or TIFF file)"
            ) from None
        except Exception as e:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, struct.error ...
            raise _Problem(f"unreadable or truncated image ({e or type(e).__name__})") from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            raise _Problem(f"image is too large to decode safely (decompression bomb?): {w.message}")
        logger.debug("pillow warning: %s", w.message)
    return _PIL_FORMATS.get(fmt or "", (fmt or "").lower())


def _inline_image_bytes(v: Any) -> bytes | None:
    """Image bytes stored in a table cell (bytes, or a Hugging Face style {"bytes": ...} dict)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray, memoryview)):
        return bytes(v["bytes"])
    return None


# --------------------------------------------------------------------------------------------
# Entries: one file on disk or in an archive, not read yet


@dataclass(eq=False)
class _Entry:
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
            raise _Problem(
                f"file is {_fmt_bytes(self.size)}, over the {_fmt_bytes(limits.max_file_bytes)} limit"
            )
        return self.reader()

    @property
    def kind(self) -> str:
        if self.ext in IMAGE_EXTS:
            return "image"
        if self.ext in TABLE_EXTS:
            return "table"
        return "text"


def _disk_reader(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as e:
            raise _Problem(f"could not read the file ({e.strerror or e})") from None

    return read


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
                        raise _Problem("zip bomb: member decompresses to more than its declared size")
        except _Problem:
            raise
        except NotImplementedError as e:
            raise _Problem(f"archive member uses an unsupported compression method ({e})") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as e:
            raise _Problem(f"corrupt archive member ({e})") from None
        except Exception as e:  # noqa: BLE001 - zlib.error, lzma.LZMAError ...
            raise _Problem(f"corrupt archive member ({e})") from None
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


class _Expander:
    """Turns the ``paths`` argument into an ordered list of entries and errors."""

    def __init__(self, limits: Limits, stack: contextlib.ExitStack) -> None:
        self.limits = limits
        self.stack = stack
        self.items: list[_Entry | tuple[str, str]] = []
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
            ap = os.path.abspath(sp)
            entry = _Entry(
                source=display,
                ext=_ext_of(sp),
                container="",
                key=PurePath(ap).parts,
                match_parts=(os.path.basename(ap),),
                size=os.path.getsize(sp),
                reader=_disk_reader(sp),
                disk_path=ap,
            )
            self._classify(entry)
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
                    if not _inside(os.path.realpath(full), root_real):
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
            if os.path.islink(full) and not _inside(os.path.realpath(full), root_real):
                self.items.append((src, "symbolic link to a file outside the uploaded folder, not followed"))
                continue
            if not os.path.isfile(full):
                self.items.append((src, "not a regular file"))
                continue
            ap = os.path.abspath(full)
            entry = _Entry(
                source=src,
                ext=_ext_of(full),
                container="",
                key=PurePath(ap).parts,
                match_parts=(display, *rel),
                size=os.path.getsize(full),
                reader=_disk_reader(full),
                disk_path=ap,
            )
            self._classify(entry)

    def _classify(self, entry: _Entry) -> None:
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
        except _Problem as p:
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

    def _open_archive(self, entry: _Entry, data: bytes | None) -> None:
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
        for member in _safe_members(zf, entry.source, self.limits, self.items):
            parts, info = member
            child = _Entry(
                source=f"{entry.source}:{'/'.join(parts)}",
                ext=_ext_of(parts[-1]),
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


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _safe_members(
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
            f"zip bomb: archive expands to {_fmt_bytes(total_u)}, over the "
            f"{_fmt_bytes(limits.max_archive_total_bytes)} limit",
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
                f"zip bomb: member expands to {_fmt_bytes(info.file_size)}, over the "
                f"{_fmt_bytes(limits.max_file_bytes)} per-file limit",
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


# --------------------------------------------------------------------------------------------
# Tables


def _sniff_delimiter(text: str) -> str:
    """Pick the delimiter whose header has > 1 field and whose first rows agree with it most."""
    best: tuple[float, int, str] | None = None
    for pref, delim in enumerate(_CSV_DELIMITERS):
        try:
            records = [r for r in _islice_records(text, delim, 41) if any(f.strip() for f in r)]
        except csv.Error:
            continue
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        data = records[1:]
        score = sum(len(r) == width for r in data) / len(data) if data else 1.0
        cand = (score, -pref, delim)
        if best is None or cand > best:
            best = cand
    return best[2] if best else ","


def _islice_records(text: str, delim: str, n: int) -> list[list[str]]:
    out = []
    for rec in csv.reader(io.StringIO(text, newline=""), delimiter=delim):
        out.append(rec)
        if len(out) >= n:
            break
    return out


def _dedupe_header(header: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for i, h in enumerate(header):
        name = h.strip() or f"column_{i + 1}"
        if seen[name]:
            new = f"{name}.{seen[name]}"
            while new in seen:
                seen[name] += 1
                new = f"{name}.{seen[name]}"
            seen[new] += 1
            name_out = new
        else:
            name_out = name
        seen[name] += 1
        out.append(name_out)
    return out


def _infer_column(values: Sequence[str]) -> pd.Series:
    """Strings from a CSV cell -> numeric Series when every present value is a number."""
    cleaned = [None if v.strip().lower() in _NA_STRINGS else v for v in values]
    s = pd.Series(cleaned, dtype=object)
    present = s.notna()
    if present.any():
        num = pd.to_numeric(s.where(~present, s.str.strip()), errors="coerce")
        if int(num.notna().sum()) == int(present.sum()):
            return num
    return s


def _read_delimited(data: bytes, ext: str, source: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    try:
        text = _decode_text(data)
    except _Problem as p:
        raise IngestError(source, f"{p.reason} (save the table as UTF-8)") from None
    delim = "\t" if ext == "tsv" else _sniff_delimiter(text)
    if csv.field_size_limit() < 2**26:
        # Long captions / vector strings exceed the default 128 KiB field limit.
        csv.field_size_limit(2**26)
    header: list[str] | None = None
    rows: list[list[str]] = []
    numbers: list[int] = []
    errors: list[tuple[str, str]] = []
    n = 0
    # The lines csv.reader consumes; kept so that a quote opened and never closed (csv then reads the
    # rest of the file into one field, silently) costs one row instead of every row after it.
    lines = io.StringIO(text, newline="").readlines()
    start: int | None = 0
    try:
        while start is not None:
            reader = csv.reader(lines[start:], delimiter=delim)
            resume, consumed = None, 0
            for rec in reader:
                first, consumed = consumed, reader.line_num
                if start + consumed == len(lines) and _unterminated(lines[start + first:start + consumed]):
                    line_no = start + first + 1
                    if header is None:
                        raise IngestError(source, f"the header row (line {line_no}) opens a quote that is never closed")
                    n += 1
                    errors.append((
                        f"{source} row {n}",
                        f"unterminated quoted field: a '\"' on line {line_no} is never closed "
                        "(the row was skipped; the lines after it were read on their own)",
                    ))
                    resume = start + first + 1
                    break
                if not any(f.strip() for f in rec):
                    continue  # blank record
                if header is None:
                    header = rec
                    continue
                n += 1
                if len(rec) != len(header):
                    if len(rec) > len(header) and not any(f.strip() for f in rec[len(header):]):
                        rec = rec[: len(header)]  # trailing empty fields, e.g. "a,b,,"
                    else:
                        errors.append((
                            f"{source} row {n}",
                            f"has {len(rec)} fields, expected {len(header)} (as in the header)",
                        ))
                        continue
                rows.append(rec)
                numbers.append(n)
            start = resume
    except csv.Error as e:
        errors.append((f"{source} row {n + 1}", f"malformed CSV ({e}); the rest of the file was skipped"))
    if header is None:
        raise IngestError(source, "empty table (no header row)")
    columns = _dedupe_header(header)
    if rows:
        cols = list(zip(*rows))
        df = pd.DataFrame({c: _infer_column(cols[i]) for i, c in enumerate(columns)})
    else:
        df = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    df.index = pd.Index(numbers, dtype="int64")
    return df, errors


def _unterminated(record_lines: list[str]) -> bool:
    """Whether a record that ran to the end of the file did so inside a quoted field.

    A closed quoted field holds an even number of '"' (opening, closing, doubled ones); a record
    spanning several lines with an odd count was still inside a quote at the end of the file.
    """
    return len(record_lines) > 1 and "".join(record_lines).count('"') % 2 == 1


_TOO_DEEP_JSON = "not valid JSON for a table: arrays/objects nested too deeply to read"


def _json_kind(obj: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(obj), "number"
    )


def _read_json(data: bytes, source: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    try:
        text = _decode_text(data)
    except _Problem as p:
        raise IngestError(source, p.reason) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise IngestError(source, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise IngestError(source, _TOO_DEEP_JSON) from None
    if not isinstance(obj, list):
        raise IngestError(
            source, f"expected a JSON array of objects (one object per row), got a JSON {_json_kind(obj)}"
        )
    records, numbers, errors = [], [], []
    for i, item in enumerate(obj, 1):
        if isinstance(item, dict):
            records.append(item)
            numbers.append(i)
        else:
            errors.append((f"{source} row {i}", f"expected a JSON object, got a JSON {_json_kind(item)}"))
    return _records_frame(records, numbers), errors


def _read_jsonl(data: bytes, source: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    try:
        text = _decode_text(data)
    except _Problem as p:
        raise IngestError(source, p.reason) from None
    records, numbers, errors = [], [], []
    for i, line in enumerate(_split_lines(text), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append((f"{source} line {i}", f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        except RecursionError:
            errors.append((f"{source} line {i}", _TOO_DEEP_JSON))
            continue
        if not isinstance(item, dict):
            errors.append((f"{source} line {i}", f"expected a JSON object, got a JSON {_json_kind(item)}"))
            continue
        records.append(item)
        numbers.append(i)
    return _records_frame(records, numbers), errors


def _records_frame(records: list[dict], numbers: list[int]) -> pd.DataFrame:
    columns: dict[str, None] = {}
    for r in records:
        for k in r:
            columns.setdefault(k, None)
    df = pd.DataFrame({c: [r.get(c) for r in records] for c in columns}) if records else pd.DataFrame()
    df.index = pd.Index(numbers, dtype="int64")
    return df


def _zip_container_check(data: bytes, source: str, limits: Limits) -> None:
    """Apply the archive limits to a ZIP-based file format (XLSX) before a parser opens it."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise IngestError(source, "not a valid XLSX workbook (the file is not a ZIP container; save it as .xlsx)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            errors: list[tuple[str, str]] = []
            _safe_members(zf, source, limits, errors)
    except zipfile.BadZipFile as e:
        raise IngestError(source, f"not a valid XLSX workbook ({e})") from None
    if errors:
        raise IngestError(source, f"not a safe XLSX workbook ({errors[0][1]})")


def _load_table(
    data: bytes, ext: str, source: str, limits: Limits
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Parse table bytes. Returns the frame (index = 1-based row numbers) and row errors.

    Raises IngestError for problems with the whole file.
    """
    if not data:
        raise IngestError(source, "empty file")
    errors: list[tuple[str, str]] = []
    if ext in ("csv", "tsv"):
        df, errors = _read_delimited(data, ext, source)
    elif ext == "json":
        df, errors = _read_json(data, source)
    elif ext == "jsonl":
        df, errors = _read_jsonl(data, source)
    elif ext == "parquet":
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except ImportError as e:
            raise IngestError(source, f"reading Parquet needs pyarrow (pip install pyarrow): {e}") from None
        except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a broken file
            raise IngestError(source, f"not a valid Parquet file ({e})") from None
        if isinstance(df.index, pd.MultiIndex) or df.index.name is not None:
            df = df.reset_index()
        df.index = pd.RangeIndex(1, len(df) + 1)
    elif ext == "xlsx":
        _zip_container_check(data, source, limits)
        try:
            df = pd.read_excel(io.BytesIO(data), engine="openpyxl", sheet_name=0)
        except ImportError as e:
            raise IngestError(source, f"reading XLSX needs openpyxl (pip install openpyxl): {e}") from None
        except Exception as e:  # noqa: BLE001 - openpyxl raises many kinds for a broken workbook
            raise IngestError(source, f"not a valid XLSX workbook ({e})") from None
        df.index = pd.RangeIndex(1, len(df) + 1)
    else:  # pragma: no cover - callers only pass TABLE_EXTS
        raise IngestError(source, f"unsupported table type '.{ext}'")
    df.columns = [str(c) for c in df.columns]
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype(object)
    df = df.loc[~df.isna().all(axis=1)] if len(df.columns) else df
    return df, errors


def read_table(path: str | os.PathLike, *, limits: Limits | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet/JSON/JSONL/XLSX file into a DataFrame.

    The index holds 1-based data-row numbers (the first row under the header is row 1; for JSONL
    the line number). Bad rows (ragged CSV rows, bad JSONL lines, non-object JSON items) are
    dropped and listed as ``(source, reason)`` pairs in ``df.attrs["ingest_errors"]``.

    Raises:
        IngestError: the file is missing, too large, or not a readable table of its type.
    """
    limits = limits or Limits()
    sp = os.fspath(path)
    source = os.path.basename(sp) or sp
    ext = _ext_of(sp)
    if ext not in TABLE_EXTS:
        raise IngestError(source, f"unsupported table type '.{ext}' (supported: {', '.join(sorted(TABLE_EXTS))})")
    if not os.path.isfile(sp):
        raise IngestError(source, "file not found")
    size = os.path.getsize(sp)
    if size > limits.max_file_bytes:
        raise IngestError(source, f"file is {_fmt_bytes(size)}, over the {_fmt_bytes(limits.max_file_bytes)} limit")
    try:
        data = _disk_reader(sp)()
    except _Problem as p:
        raise IngestError(source, p.reason) from None
    df, errors = _load_table(data, ext, source, limits)
    for src, reason in errors:
        logger.warning("%s: %s", src, reason)
    df.attrs["ingest_errors"] = errors
    return df


def inspect_table(
    path: str | os.PathLike, *, n_preview: int = 20
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Return the first ``n_preview`` rows and the detected role of every column.

    Raises:
        IngestError: as :func:`read_table`.
    """
    df = read_table(path)
    return df.head(n_preview), detect_roles(df)


# --------------------------------------------------------------------------------------------
# Column roles


def _parse_vector(v: Any) -> np.ndarray:
    """Parse one vector cell (list/array, JSON list string, or separated numbers) to float64 (d,)."""
    if _is_missing(v):
        raise _Problem("is missing")
    if isinstance(v, str):
        s = v.strip()
        if not s:
            raise _Problem("is missing")
        obj: Any = None
        if s.startswith("["):
            try:
                obj = json.loads(s)
            except json.JSONDecodeError:
                obj = None
        if obj is None:
            tokens = [t for t in re.split(r"[\s,;]+", s.strip("[]() \t")) if t]
            try:
                obj = [float(t) for t in tokens]
            except ValueError:
                raise _Problem("is not a list of numbers") from None
        v = obj
    if isinstance(v, (list, tuple, np.ndarray)):
        seq = v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v
        if isinstance(seq, (list, tuple)):
            seq = [np.nan if x is None else x for x in seq]
            if any(isinstance(x, (str, bytes, bool)) for x in seq):
                raise _Problem("is not a list of numbers")
        try:
            arr = np.asarray(seq, dtype=np.float64)
        except (TypeError, ValueError):
            raise _Problem("is not a flat list of numbers") from None
    elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        arr = np.array([float(v)])
    else:
        raise _Problem("is not a list of numbers")
    if arr.ndim != 1:
        raise _Problem("is not a flat list of numbers")
    if arr.size == 0:
        raise _Problem("is empty")
    return arr


def _looks_like_vector(v: Any) -> bool:
    if isinstance(v, str):
        s = v.strip()
        bracketed = s.startswith("[") and s.endswith("]")
        if not bracketed and len(re.split(r"[\s,]+", s)) < 8:
            return False
    elif not isinstance(v, (list, tuple, np.ndarray)):
        return False
    try:
        return _parse_vector(v).size >= 2
    except _Problem:
        return False


def _is_image_ref(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    s = v.strip().split("?", 1)[0].split("#", 1)[0]
    return _ext_of(s) in IMAGE_EXTS


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _column_kind(s: pd.Series) -> str:
    """One of: empty, bool, datetime, numeric, vector, image_data, string, other."""
    nonnull = s[~s.map(_is_missing)] if s.dtype == object else s.dropna()
    if nonnull.empty:
        return "empty"
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s):
        return "numeric"
    sample = nonnull.iloc[:200].tolist()
    if all(_inline_image_bytes(v) is not None for v in sample):
        return "image_data"
    head = sample[:50]
    if all(isinstance(v, str) for v in sample):
        hits = sum(_looks_like_vector(v) for v in head)
        # A column of bracketed lists is a vector column even with a few bad cells: those
        # become row errors instead of turning the column into text.
        bracketed = all(v.strip().startswith("[") and v.strip().endswith("]") for v in head)
        if hits >= 0.9 * len(head) or (bracketed and hits >= 0.5 * len(head)):
            return "vector"
        return "string"
    if all(isinstance(v, (list, tuple, np.ndarray)) for v in sample):
        return "vector" if sum(_looks_like_vector(v) for v in head) >= 0.5 * len(head) else "other"
    if all(isinstance(v, (bool, np.bool_)) for v in sample):
        return "bool"
    if all(_is_number(v) for v in sample):
        return "numeric"
    if all(isinstance(v, (pd.Timestamp, _dt.date, _dt.time)) for v in sample):
        return "datetime"
    if all(isinstance(v, (str, int, float, np.integer, np.floating)) for v in sample):
        return "string"
    return "other"


def _is_id_name(name: str) -> bool:
    n = _norm_name(name)
    return n in _ID_NAMES or n.endswith("_id") or bool(re.search(r"[a-z](Id|ID)$", str(name)))


_GROUP_RE = re.compile(r"(.*?[A-Za-z].*?)[_\-.]?(\d+)")


def _group_name(col: str) -> tuple[str, int] | None:
    m = _GROUP_RE.fullmatch(col)
    if not m:
        return None
    return m.group(1), int(m.group(2))


def _vector_groups(columns: Iterable[str]) -> dict[str, list[str]]:
    """Group scalar vector columns by their ``<prefix>_<i>`` name, ordered by index."""
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for c in columns:
        g = _group_name(c)
        if g is None:
            groups[c].append((0, c))
        else:
            groups[g[0]].append((g[1], c))
    return {name: [c for _, c in sorted(members)] for name, members in groups.items()}


def _string_stats(s: pd.Series) -> tuple[float, float, float, float]:
    """(fraction that look like image paths, fraction multi-word, mean length, unique ratio)."""
    vals = [str(v).strip() for v in s.iloc[:5000].tolist() if not _is_missing(v)]
    if not vals:
        return 0.0, 0.0, 0.0, 0.0
    n = len(vals)
    img = sum(_is_image_ref(v) for v in vals) / n
    multi = sum(len(v.split()) >= 2 for v in vals) / n
    mean_len = sum(len(v) for v in vals) / n
    uniq = len(set(vals)) / n
    return img, multi, mean_len, uniq


def detect_roles(df: pd.DataFrame) -> dict[str, str]:
    """Guess the role of every column of ``df``; returns ``{column: role}`` with roles in ROLES.

    - ``image``: one string column of image paths (named like filepath/image/... with >= 50 % of
      values ending in an image extension, else the one with >= 80 %), or a column of image bytes;
    - ``text``: one caption-like string column (named caption/title/text/description/sentence/
      prompt, else the mostly multi-word column with the longest mean length);
    - ``vector``: columns of numeric lists (or JSON-list strings), and numeric columns named
      ``<prefix>_0..<prefix>_N`` / ``<prefix>0..`` (>= 2 columns, indices from 0 or 1);
    - ``numeric``: other numeric columns (ids and low-cardinality integers are ``metadata``);
    - ``metadata``: everything else; ``ignore``: empty columns.
    """
    roles: dict[str, str] = {}
    kinds = {str(c): _column_kind(df[c]) for c in df.columns}
    cols = [str(c) for c in df.columns]
    series = {str(c): df[c] for c in df.columns}

    numeric_cols = [c for c in cols if kinds[c] == "numeric" and not _is_id_name(c)]
    grouped: set[str] = set()
    by_prefix: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for c in numeric_cols:
        g = _group_name(c)
        if g is not None:
            by_prefix[g[0]].append((g[1], c))
    for members in by_prefix.values():
        idx = sorted(i for i, _ in members)
        if len(idx) >= 2 and idx[0] in (0, 1) and idx == list(range(idx[0], idx[0] + len(idx))):
            grouped.update(c for _, c in members)

    image_col: str | None = None
    best_img = 0.0
    stats: dict[str, tuple[float, float, float, float]] = {}
    for c in cols:
        if kinds[c] == "string":
            stats[c] = _string_stats(series[c])
    for c in cols:
        if kinds[c] == "image_data" and image_col is None:
            image_col, best_img = c, 2.0
    for c in cols:
        if kinds[c] != "string":
            continue
        frac = stats[c][0]
        named = _norm_name(c) in _IMAGE_COLUMN_NAMES
        score = frac + (1.0 if named else 0.0)
        if (frac >= 0.8 or (named and frac >= 0.5)) and score > best_img:
            image_col, best_img = c, score

    text_col: str | None = None
    strings = [c for c in cols if kinds[c] == "string" and c != image_col]
    for name in _TEXT_COLUMN_NAMES:
        exact = [c for c in strings if _norm_name(c) in (name, name + "s")]
        loose = [c for c in strings if name in _norm_name(c).split("_")]
        if exact or loose:
            text_col = (exact or loose)[0]
            break
    if text_col is None:
        eligible = [c for c in strings if stats[c][1] >= 0.5 and stats[c][3] >= 0.3]
        if eligible:
            text_col = max(eligible, key=lambda c: stats[c][2])

    for c in cols:
        kind = kinds[c]
        if c == image_col:
            role = "image"
        elif c == text_col:
            role = "text"
        elif kind == "empty" or kind == "image_data":
            role = "ignore"
        elif kind == "vector" or c in grouped:
            role = "vector"
        elif kind == "numeric":
            role = "metadata" if _is_id_name(c) or _low_cardinality(series[c]) else "numeric"
        else:
            role = "metadata"
        roles[c] = role
    return roles


def _low_cardinality(s: pd.Series) -> bool:
    vals = pd.to_numeric(s, errors="coerce").dropna()
    if vals.empty:
        return True
    if not np.all(np.isfinite(vals)) or not np.all(np.equal(np.mod(vals, 1), 0)):
        return False
    nunique = int(vals.nunique())
    return nunique <= 10 and len(vals) >= 3 * nunique


# --------------------------------------------------------------------------------------------
# Resolving image references from table rows


class _ImageResolver:
    """Finds the image a table cell refers to among the images of the same ``scan`` call."""

    def __init__(self, images: list[_Entry], limits: Limits) -> None:
        self.limits = limits
        self.by_key = {(e.container, e.key): e for e in images}
        self.by_name: dict[str, list[_Entry]] = defaultdict(list)
        for e in images:
            self.by_name[e.match_parts[-1]].append(e)
        self._disk_extra: dict[str, _Entry] = {}

    def resolve(self, ref: str, table: _Entry) -> _Entry:
        """Return the image entry for ``ref`` or raise _Problem (not found / ambiguous)."""
        ref_clean = ref.strip().replace("\\", "/")
        if ref_clean.startswith("file://"):
            ref_clean = ref_clean[len("file://"):]
        if table.container:  # table inside an archive: resolve against its member folder
            joined = posixpath.normpath(posixpath.join("/".join(table.key[:-1]), ref_clean.lstrip("/")))
            if not joined.startswith(".."):
                parts = tuple(p for p in joined.split("/") if p not in ("", "."))
                hit = self.by_key.get((table.container, parts))
                if hit is not None:
                    return hit
        elif table.disk_path is not None:
            table_dir = os.path.dirname(table.disk_path)
            full = os.path.normpath(os.path.join(table_dir, ref_clean))
            hit = self.by_key.get(("", PurePath(full).parts))
            if hit is not None:
                return hit
            extra = self._from_disk(full, table_dir, table)
            if extra is not None:
                return extra
        return self._by_suffix(ref_clean)

    def _from_disk(self, full: str, table_dir: str, table: _Entry) -> _Entry | None:
        if full in self._disk_extra:
            return self._disk_extra[full]
        if not os.path.isfile(full) or not _inside(os.path.realpath(full), os.path.realpath(table_dir)):
            return None
        rel = os.path.relpath(full, table_dir).replace(os.sep, "/")
        base = posixpath.dirname(table.source)
        entry = _Entry(
            source=posixpath.join(base, rel) if base else rel,
            ext=_ext_of(full),
            container="",
            key=PurePath(full).parts,
            match_parts=tuple(rel.split("/")),
            size=os.path.getsize(full),
            reader=_disk_reader(full),
            disk_path=full,
        )
        self._disk_extra[full] = entry
        return entry

    def _by_suffix(self, ref: str) -> _Entry:
        parts = tuple(p for p in ref.split("/") if p not in ("", ".", ".."))
        if not parts:
            raise _Problem(f"image '{ref}' not found in the upload")
        cands = self.by_name.get(parts[-1], [])
        if not cands:
            raise _Problem(f"image '{ref}' not found in the upload")
        scored = []
        for e in cands:
            k = 0
            while k < min(len(parts), len(e.match_parts)) and parts[-1 - k] == e.match_parts[-1 - k]:
                k += 1
            scored.append((k, e))
        best = max(k for k, _ in scored)
        top = [e for k, e in scored if k == best]
        if len(top) > 1:
            names = ", ".join(e.source for e in top[:5]) + (", ..." if len(top) > 5 else "")
            raise _Problem(
                f"image '{ref}' matches {len(top)} files in the upload ({names}); use a longer relative path"
            )
        return top[0]


# --------------------------------------------------------------------------------------------
# Turning table rows into candidates


class _ImageCache:
    """Decodes each image entry once per scan; remembers the result or the reason it failed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._done: dict[int, tuple[bytes, str] | str] = {}

    def get(self, entry: _Entry) -> tuple[bytes | None, str]:
        """(bytes, canonical extension) of a readable image; bytes None for a file on disk (read it again
        with ``entry.reader``)."""
        key = id(entry)
        if key not in self._done:
            try:
                data = entry.read(self.limits)
                ext = _check_image(data, self.limits)
                # files on disk are read again when stored (Candidate.image_reader): not held meanwhile
                self._done[key] = (None if entry.container == "" and entry.disk_path else data, ext)
            except _Problem as p:
                self._done[key] = p.reason
        result = self._done[key]
        if isinstance(result, str):
            raise _Problem(result)
        return result


@dataclass
class _TableResult:
    candidates: list[Candidate]
    errors: list[tuple[str, str]]
    used_images: set[int]


def _table_candidates(
    df: pd.DataFrame,
    table: _Entry,
    roles: dict[str, str],
    resolver: _ImageResolver,
    images: _ImageCache,
    limits: Limits,
) -> _TableResult:
    src = table.source
    errors: list[tuple[str, str]] = []
    used: set[int] = set()
    cols = [str(c) for c in df.columns]
    image_cols = [c for c in cols if roles.get(c) == "image"]
    text_cols = [c for c in cols if roles.get(c) == "text"]
    vector_cols = [c for c in cols if roles.get(c) == "vector"]
    numeric_cols = [c for c in cols if roles.get(c) == "numeric"]
    meta_cols = [c for c in cols if roles.get(c) == "metadata"]
    if not (image_cols or text_cols or vector_cols or numeric_cols):
        errors.append((
            src,
            "no usable columns: no column has the role text, image, vector or numeric "
            f"(columns: {', '.join(cols) or 'none'}); set a column's role",
        ))
        return _TableResult([], errors, used)

    row_numbers = [int(i) for i in df.index]
    n = len(row_numbers)
    bad = np.zeros(n, dtype=bool)
    row_errors: dict[int, list[tuple[str, str]]] = defaultdict(list)

    def fail(i: int, reason: str) -> None:
        row_errors[i].append((f"{src} row {row_numbers[i]}", reason))

    # Vectors: scalar numeric columns are grouped by <prefix>_<i>; others are parsed per cell.
    scalar = [c for c in vector_cols if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    vectors: dict[str, list[np.ndarray | None]] = {}
    for name, members in _vector_groups(scalar).items():
        mat = (
            df[members].apply(pd.to_numeric, errors="coerce")
            .to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
        )
        finite = np.isfinite(mat).all(axis=1)
        for i in np.flatnonzero(~finite):
            fail(int(i), f"vector '{name}' has NaN/inf values")
            bad[i] = True
        vectors[name] = [mat[i] if finite[i] else None for i in range(n)]
    for c in (c for c in vector_cols if c not in scalar):
        parsed: list[np.ndarray | None] = []
        for i, v in enumerate(df[c].tolist()):
            try:
                parsed.append(_parse_vector(v))
            except _Problem as p:
                parsed.append(None)
                fail(i, f"vector '{c}' {p.reason}")
                bad[i] = True
        lengths = Counter(a.size for a in parsed if a is not None)
        expected = lengths.most_common(1)[0][0] if lengths else 0
        out: list[np.ndarray | None] = []
        for i, a in enumerate(parsed):
            if a is None:
                out.append(None)
                continue
            if a.size != expected:
                fail(i, f"vector '{c}' has {a.size} values, expected {expected}")
                bad[i] = True
                out.append(None)
                continue
            with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
                a32 = a.astype(np.float32)
            if not np.isfinite(a32).all():
                fail(i, f"vector '{c}' has NaN/inf values")
                bad[i] = True
                out.append(None)
                continue
            out.append(a32)
        vectors[c] = out

    # Numeric features: missing values are imputed with the column mean; non-numbers and
    # infinities make the row unusable.
    numeric_raw: dict[str, list[Any]] = {c: df[c].tolist() for c in numeric_cols}
    num_mat = np.zeros((n, len(numeric_cols)), dtype=np.float64)
    for j, c in enumerate(numeric_cols):
        coerced = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        for i, (raw, x) in enumerate(zip(numeric_raw[c], coerced)):
            if np.isnan(x) and not _is_missing(raw) and not (isinstance(raw, str) and not raw.strip()):
                fail(i, f"numeric column '{c}' has a non-numeric value {str(raw)[:40]!r}")
                bad[i] = True
            elif np.isinf(x):
                fail(i, f"numeric column '{c}' has an infinite value")
                bad[i] = True
        num_mat[:, j] = coerced
    features: np.ndarray | None = None
    if numeric_cols:
        valid = num_mat[~bad]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(valid, axis=0) if len(valid) else np.zeros(len(numeric_cols))
            std = np.nanstd(valid, axis=0) if len(valid) else np.ones(len(numeric_cols))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        z = (num_mat - mean) / std
        features = np.where(np.isfinite(z), z, 0.0).astype(np.float32)

    image_vals = {c: df[c].tolist() for c in image_cols}
    text_vals = {c: df[c].tolist() for c in text_cols}
    meta_vals = {c: df[c].tolist() for c in meta_cols}

    candidates: list[Candidate] = []
    for i in range(n):
        rowno = row_numbers[i]
        rsrc = f"{src} row {rowno}"
        if bad[i]:
            # The whole row is skipped, its image too (it must not reappear as a loose image).
            for c in image_cols:
                v = image_vals[c][i]
                if isinstance(v, str) and v.strip():
                    with contextlib.suppress(_Problem):
                        used.add(id(resolver.resolve(v, table)))
            errors.extend(row_errors[i])
            continue
        meta = {c: _jsonable(meta_vals[c][i]) for c in meta_cols}
        meta.update({c: _jsonable(numeric_raw[c][i]) for c in numeric_cols})
        row_cands: list[Candidate] = []
        referenced = False
        for c in image_cols:
            v = image_vals[c][i]
            inline = _inline_image_bytes(v)
            if inline is not None:
                referenced = True
                try:
                    ext = _check_image(inline, limits)
                except _Problem as p:
                    errors.append((rsrc, f"image in column '{c}' is unusable: {p.reason}"))
                    continue
                row_cands.append(Candidate("image", rsrc, image_bytes=inline, image_ext=ext, meta=dict(meta)))
                continue
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                v = v["path"]
            if _is_missing(v) or not str(v).strip():
                continue
            ref = _cell_text(v).strip()
            referenced = True
            try:
                entry = resolver.resolve(ref, table)
            except _Problem as p:
                errors.append((rsrc, p.reason))
                continue
            used.add(id(entry))
            try:
                data, ext = images.get(entry)
            except _Problem as p:
                errors.append((rsrc, f"image '{ref}' ({entry.source}) is unusable: {p.reason}"))
                continue
            row_cands.append(Candidate("image", entry.source, image_bytes=data, image_ext=ext, meta=dict(meta),
                                       image_reader=entry.reader if data is None else None))
        for c in text_cols:
            v = text_vals[c][i]
            if _is_missing(v) or isinstance(v, (bytes, bytearray)):
                continue
            text = _cell_text(v).strip()
            if not text:
                continue
            referenced = True
            if len(text) > limits.max_text_chars:
                errors.append((
                    rsrc,
                    f"text in column '{c}' is {len(text):,} characters, over the {limits.max_text_chars:,} limit",
                ))
                continue
            row_cands.append(Candidate("text", rsrc, text=text, meta=dict(meta)))
        row_vectors = {f"precomputed:{name}": vals[i] for name, vals in vectors.items() if vals[i] is not None}
        has_numeric = features is not None and any(not _is_missing(numeric_raw[c][i]) for c in numeric_cols)
        if features is not None and (has_numeric or row_cands or row_vectors):
            row_vectors["precomputed:numeric"] = features[i]
        if not row_cands and row_vectors and not referenced:
            # A row whose text or image failed is reported and skipped whole; it does not come
            # back as a bare "row" item carrying the failed item's vectors.
            row_cands.append(Candidate("row", rsrc, meta=dict(meta)))
        if not row_cands:
            if not referenced:
                errors.append((rsrc, "row has no image, text, vector or numeric value"))
            continue
        row_cands[0].vectors.update(row_vectors)
        if len(row_cands) > 1:
            for cand in row_cands:
                cand.pair_key = f"{src}#{rowno}"
        candidates.extend(row_cands)
    return _TableResult(candidates, errors, used)


# --------------------------------------------------------------------------------------------
# scan


def _check_roles(roles: Mapping[str, str] | None) -> dict[str, str]:
    if roles is None:
        return {}
    if not isinstance(roles, Mapping):
        raise IngestError("roles", f"roles must be a mapping of column -> role; got {type(roles).__name__}")
    out: dict[str, str] = {}
    for col, role in roles.items():
        if role not in ROLES:
            raise IngestError(
                "roles", f"unknown role {role!r} for column {col!r}; valid roles: {', '.join(ROLES)}"
            )
        out[str(col)] = role
    return out


def _text_candidates(
    lines: Iterable[tuple[str, str]], limits: Limits, errors: list[tuple[str, str]]
) -> list[Candidate]:
    out = []
    for src, line in lines:
        text = line.strip()
        if not text:
            continue
        if len(text) > limits.max_text_chars:
            errors.append((src, f"text is {len(text):,} characters, over the {limits.max_text_chars:,} limit"))
            continue
        out.append(Candidate("text", src, text=text))
    return out


def scan(
    paths: Sequence[str | os.PathLike],
    *,
    texts: Sequence[str] = (),
    roles: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> ScanResult:
    """Scan files, folders and ZIP archives (by content) plus pasted text into candidates.

    Args:
        paths: files, folders (walked recursively, sorted, hidden entries skipped) and archives.
        texts: pasted text; every non-empty stripped line is one text item ("pasted line N").
        roles: ``{column: role}`` overrides applied to every table in the call.
        limits: safety limits; defaults to ``Limits()``.

    Returns:
        ScanResult with candidates in input order (sorted within folders and archives; pasted
        texts last) and ``(source, reason)`` errors. Table rows are named by 1-based data-row
        number (see the module docstring).

    Raises:
        IngestError: only for a bad ``roles`` argument (unknown role, or a column that no table
            in the call has). Problems with files, members and rows are reported, not raised.
    """
    limits = limits or Limits()
    overrides = _check_roles(roles)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(texts, str):
        texts = [texts]

    with contextlib.ExitStack() as stack:
        expander = _Expander(limits, stack)
        for p in paths:
            try:
                expander.add_path(p)
            except Exception as e:  # never let one bad path stop the scan
                logger.exception("unexpected error while expanding %s", p)
                expander.items.append((os.fspath(p), f"could not be read ({type(e).__name__}: {e})"))
        items = expander.items
        entries = [it for it in items if isinstance(it, _Entry)]
        image_entries = [e for e in entries if e.kind == "image"]

        # Tables are read first: they decide which images are paired and which stand alone.
        frames: dict[int, tuple[pd.DataFrame, list[tuple[str, str]]] | tuple[str, str]] = {}
        for e in (e for e in entries if e.kind == "table"):
            try:
                frames[id(e)] = _load_table(e.read(limits), e.ext, e.source, limits)
            except _Problem as p:
                frames[id(e)] = (e.source, p.reason)
            except IngestError as err:
                frames[id(e)] = (err.source, err.reason)
            except Exception as ex:
                logger.exception("unexpected error while reading table %s", e.source)
                frames[id(e)] = (e.source, f"could not be read ({type(ex).__name__}: {ex})")

        read_ok = [f for f in frames.values() if isinstance(f[0], pd.DataFrame)]
        if overrides:
            known: list[str] = []
            for df, _ in read_ok:  # type: ignore[misc]
                known.extend(c for c in df.columns if c not in known)
            if read_ok:
                for col in overrides:
                    if col not in known:
                        raise IngestError(
                            "roles", f"unknown column {col!r}; valid columns: {', '.join(known)}"
                        )
            else:
                logger.warning("column roles were given but no table was read; ignoring them")

        resolver = _ImageResolver(image_entries, limits)
        cache = _ImageCache(limits)
        table_results: dict[int, _TableResult] = {}
        used: set[int] = set()
        for e in (e for e in entries if e.kind == "table"):
            frame = frames[id(e)]
            if not isinstance(frame[0], pd.DataFrame):
                continue
            df, row_errors = frame  # type: ignore[misc]
            if len(df) == 0:  # no rows to read: say so, not "no usable columns" (nothing shows a role)
                res = _TableResult([], list(row_errors) or [(e.source, "table has no data rows")], set())
                table_results[id(e)] = res
                continue
            try:
                detected = detect_roles(df)
                detected.update({c: r for c, r in overrides.items() if c in detected})
                res = _table_candidates(df, e, detected, resolver, cache, limits)
            except Exception as ex:
                logger.exception("unexpected error while scanning table %s", e.source)
                res = _TableResult([], [(e.source, f"could not be read ({type(ex).__name__}: {ex})")], set())
            res.errors[:0] = row_errors
            table_results[id(e)] = res
            used |= res.used_images

        candidates: list[Candidate] = []
        errors: list[tuple[str, str]] = []
        for it in items:
            if not isinstance(it, _Entry):
                errors.append(it)
                continue
            try:
                if it.kind == "image":
                    if id(it) in used:
                        continue
                    data, ext = cache.get(it)
                    candidates.append(Candidate("image", it.source, image_bytes=data, image_ext=ext,
                                                image_reader=it.reader if data is None else None))
                elif it.kind == "table":
                    frame = frames[id(it)]
                    if not isinstance(frame[0], pd.DataFrame):
                        errors.append(frame)  # type: ignore[arg-type]
                        continue
                    res = table_results[id(it)]
                    candidates.extend(res.candidates)
                    errors.extend(res.errors)
                else:
                    text = _decode_text(it.read(limits))
                    lines = ((f"{it.source} line {k}", ln) for k, ln in enumerate(_split_lines(text), 1))
                    found = _text_candidates(lines, limits, errors)
                    if not found:
                        errors.append((it.source, "no text lines"))
                    candidates.extend(found)
            except _Problem as p:
                errors.append((it.source, p.reason))
            except Exception as ex:
                logger.exception("unexpected error while reading %s", it.source)
                errors.append((it.source, f"could not be read ({type(ex).__name__}: {ex})"))

    pasted = []
    k = 0
    for chunk in texts:
        for line in _split_lines(str(chunk)):
            k += 1
            pasted.append((f"pasted line {k}", line))
    candidates.extend(_text_candidates(pasted, limits, errors))

    logger.info("scanned %d path(s): %d candidate(s), %d error(s)", len(paths), len(candidates), len(errors))
    return ScanResult(candidates, errors)
