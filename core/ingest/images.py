"""Image checks (decode with the allowed Pillow decoders only, after the pixel-count limit) and
resolving the images that table cells refer to among the images of the same scan."""

from __future__ import annotations

import io
import logging
import os
import posixpath
import warnings
from collections import defaultdict
from pathlib import PurePath
from typing import Any

from .common import Limits, Problem, fmt_bytes
from .sources import Entry, disk_entry, is_inside

logger = logging.getLogger(__name__)


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


def _fmt_mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f} MP" if mp >= 10 else f"{mp:.1f} MP"


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _bomb_reason(w: int, h: int, limits: Limits) -> str:
    return (
        f"image is {w}x{h} = {_fmt_mp(w * h)}, over the {_fmt_mp(limits.max_image_pixels)} limit "
        "(decompression bomb?)"
    )


def check_image(data: bytes, limits: Limits) -> str:
    """Decode ``data`` fully (first frame) and return the canonical extension of its format.

    Raises Problem with a plain-words reason; never lets Pillow's exceptions or
    DecompressionBombWarning escape.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise Problem("empty file")
    if len(data) > limits.max_file_bytes:
        raise Problem(f"file is {fmt_bytes(len(data))}, over the {fmt_bytes(limits.max_file_bytes)} limit")
    fmt = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data), formats=_PIL_OPENERS) as im:
                w, h = im.size
                if w * h > limits.max_image_pixels:
                    raise Problem(_bomb_reason(w, h, limits))
                if w <= 0 or h <= 0:
                    raise Problem("unreadable or truncated image (zero width or height)")
                fmt = im.format
                if fmt == "JPEG" and min(w, h) >= 16:  # every coefficient is still read and checked, at 1/8 the work
                    im.draft(None, (max(1, w // 8), max(1, h // 8)))
                im.load()  # for GIF/TIFF this decodes the first frame, which is what counts
        except Problem:
            raise
        except Image.DecompressionBombError as e:
            size = _png_size(data)
            if size is not None:
                raise Problem(_bomb_reason(size[0], size[1], limits)) from None
            raise Problem(f"image is too large to decode safely (decompression bomb?): {e}") from None
        except UnidentifiedImageError:
            raise Problem(
                "unreadable or truncated image (not a PNG, JPEG, WebP, GIF, BMP or TIFF file)"
            ) from None
        except Exception as e:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, struct.error ...
            raise Problem(f"unreadable or truncated image ({e or type(e).__name__})") from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            raise Problem(f"image is too large to decode safely (decompression bomb?): {w.message}")
        logger.debug("pillow warning: %s", w.message)
    return _PIL_FORMATS.get(fmt or "", (fmt or "").lower())


def inline_image_bytes(v: Any) -> bytes | None:
    """Image bytes stored in a table cell (bytes, or a Hugging Face style {"bytes": ...} dict)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray, memoryview)):
        return bytes(v["bytes"])
    return None


class ImageResolver:
    """Finds the image a table cell refers to among the images of the same ``scan`` call."""

    def __init__(self, images: list[Entry], limits: Limits) -> None:
        self.limits = limits
        self.by_key = {(e.container, e.key): e for e in images}
        self.by_name: dict[str, list[Entry]] = defaultdict(list)
        for e in images:
            self.by_name[e.match_parts[-1]].append(e)
        self._disk_extra: dict[str, Entry] = {}

    def resolve(self, ref: str, table: Entry) -> Entry:
        """Return the image entry for ``ref`` or raise Problem (not found / ambiguous)."""
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

    def _from_disk(self, full: str, table_dir: str, table: Entry) -> Entry | None:
        if full in self._disk_extra:
            return self._disk_extra[full]
        if not os.path.isfile(full) or not is_inside(os.path.realpath(full), os.path.realpath(table_dir)):
            return None
        rel = os.path.relpath(full, table_dir).replace(os.sep, "/")
        base = posixpath.dirname(table.source)
        entry = disk_entry(full, posixpath.join(base, rel) if base else rel, tuple(rel.split("/")))
        self._disk_extra[full] = entry
        return entry

    def _by_suffix(self, ref: str) -> Entry:
        parts = tuple(p for p in ref.split("/") if p not in ("", ".", ".."))
        if not parts:
            raise Problem(f"image '{ref}' not found in the upload")
        cands = self.by_name.get(parts[-1], [])
        if not cands:
            raise Problem(f"image '{ref}' not found in the upload")
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
            raise Problem(
                f"image '{ref}' matches {len(top)} files in the upload ({names}); use a longer relative path"
            )
        return top[0]


class ImageCache:
    """Decodes each image entry once per scan; remembers the result or the reason it failed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._done: dict[int, tuple[bytes, str] | str] = {}

    def get(self, entry: Entry) -> tuple[bytes | None, str]:
        """(bytes, canonical extension) of a readable image; bytes None for a file on disk (read it again
        with ``entry.reader``)."""
        key = id(entry)
        if key not in self._done:
            try:
                data = entry.read(self.limits)
                ext = check_image(data, self.limits)
                # files on disk are read again when stored (Candidate.image_reader): not held meanwhile
                self._done[key] = (None if entry.container == "" and entry.disk_path else data, ext)
            except Problem as p:
                self._done[key] = p.reason
        result = self._done[key]
        if isinstance(result, str):
            raise Problem(result)
        return result
