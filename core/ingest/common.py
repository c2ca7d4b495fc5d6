"""The types and small helpers every part of ingestion shares: the extension sets, :class:`Limits`,
:class:`IngestError`, :class:`Problem` (one item's reason, raised inside ingestion) and byte/text/value helpers."""

from __future__ import annotations

import codecs
import math
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..images import IMAGE_EXTENSIONS

IMAGE_EXTS = {e.lstrip(".") for e in IMAGE_EXTENSIONS}
TABLE_EXTS = {"csv", "tsv", "parquet", "json", "jsonl", "xlsx"}
TEXT_EXTS = {"txt"}


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


class IngestError(ValueError):
    """A file (or argument) that cannot be used; ``str()`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = str(reason)
        super().__init__(f"{self.source}: {self.reason}")


class Problem(Exception):
    """A reason why one item is unusable, raised inside ingestion; the caller attaches the source."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def fmt_bytes(n: float) -> str:
    """A byte count for people: ``"512 bytes"``, ``"1.5 KB"``, ``"20 MB"``."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} GB"  # pragma: no cover


def ext_of(name: str) -> str:
    """The lower-case extension of a file or member name, without the dot (``""`` when none)."""
    return posixpath.splitext(name)[1].lower().lstrip(".")


def is_missing(v: Any) -> bool:
    """Whether a cell value is missing (None, NaN, pandas NA); strings, bytes and containers never are."""
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


def decode_text(data: bytes) -> str:
    """Decode UTF-8 (BOM tolerated) or BOM-marked UTF-16; raise Problem with the byte offset."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise Problem(f"not valid UTF-16 text at byte {e.start}") from None
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise Problem(f"not valid UTF-8 text at byte {e.start + offset}") from None


def split_lines(text: str) -> list[str]:
    """The lines of a text split on ``\\r\\n``, ``\\r`` and ``\\n`` only, so line numbers match an editor's."""
    # str.splitlines() also splits on \f, \x1c, \u2028 ..., which would shift line numbers
    # away from what an editor shows.
    return re.split(r"\r\n|\r|\n", text)
