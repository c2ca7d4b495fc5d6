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

Modules
-------
``sources`` (files, folders, ZIP archives and their safety limits), ``tables`` (table readers and
row errors), ``stream`` (large vector tables read in chunks; its CSV/TSV readers in ``delimited``),
``rowids`` (content ids of table rows), ``roles`` (column roles), ``images`` (image checks; resolving
the images tables refer to), ``candidates`` (candidate items from table rows and text) and ``common``
(limits, errors, helpers). The names in ``__all__`` are the package's API, importable from
``core.ingest``; the modules' other public names are the helpers they share with each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence

import pandas as pd

from .candidates import Candidate, ScanResult, TableResult, table_candidates, text_candidates
from .common import IMAGE_EXTS, TABLE_EXTS, IngestError, Limits, Problem, decode_text, split_lines
from .common import TEXT_EXTS as TEXT_EXTS
from .images import ImageCache, ImageResolver
from .roles import ROLES, check_roles, detect_roles, inspect_table
from .sources import Entry, Expander
from .stream import RowTable, stream_table
from .tables import load_table, read_table

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
    "stream_table",
    "RowTable",
]


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
    overrides = check_roles(roles)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(texts, str):
        texts = [texts]

    with contextlib.ExitStack() as stack:
        items = _expand(paths, limits, stack)
        entries = [it for it in items if isinstance(it, Entry)]
        # Tables are read first: they decide which images are paired and which stand alone.
        frames = _read_tables(entries, limits)
        _check_overrides(overrides, frames)
        resolver = ImageResolver([e for e in entries if e.kind == "image"], limits)
        cache = ImageCache(limits)
        table_results = _scan_tables(entries, frames, overrides, resolver, cache, limits)
        candidates, errors = _collect(items, frames, table_results, cache, limits)

    candidates.extend(text_candidates(_pasted_lines(texts), limits, errors))
    logger.info("scanned %d path(s): %d candidate(s), %d error(s)", len(paths), len(candidates), len(errors))
    return ScanResult(candidates, errors)


_Frame = tuple[pd.DataFrame, list[tuple[str, str]]] | tuple[str, str]  # (frame, row errors) or (source, reason)


def _expand(paths: Sequence[str | os.PathLike], limits: Limits,
            stack: contextlib.ExitStack) -> list[Entry | tuple[str, str]]:
    """Every path's entries and errors, in order."""
    expander = Expander(limits, stack)
    for p in paths:
        try:
            expander.add_path(p)
        except Exception as e:  # never let one bad path stop the scan
            logger.exception("unexpected error while expanding %s", p)
            expander.items.append((os.fspath(p), f"could not be read ({type(e).__name__}: {e})"))
    return expander.items


def _read_tables(entries: list[Entry], limits: Limits) -> dict[int, _Frame]:
    """Every table entry read: ``{id(entry): (frame, row errors) or (source, reason)}``."""
    frames: dict[int, _Frame] = {}
    for e in (e for e in entries if e.kind == "table"):
        try:
            frames[id(e)] = load_table(e.read(limits), e.ext, e.source, limits)
        except Problem as p:
            frames[id(e)] = (e.source, p.reason)
        except IngestError as err:
            frames[id(e)] = (err.source, err.reason)
        except Exception as ex:
            logger.exception("unexpected error while reading table %s", e.source)
            frames[id(e)] = (e.source, f"could not be read ({type(ex).__name__}: {ex})")
    return frames


def _check_overrides(overrides: dict[str, str], frames: dict[int, _Frame]) -> None:
    """Raise IngestError for a role override naming a column that no table read in the call has."""
    if not overrides:
        return
    read_ok = [f for f in frames.values() if isinstance(f[0], pd.DataFrame)]
    if not read_ok:
        logger.warning("column roles were given but no table was read; ignoring them")
        return
    known: list[str] = []
    for df, _ in read_ok:  # type: ignore[misc]
        known.extend(c for c in df.columns if c not in known)
    for col in overrides:
        if col not in known:
            raise IngestError("roles", f"unknown column {col!r}; valid columns: {', '.join(known)}")


def _scan_tables(entries: list[Entry], frames: dict[int, _Frame], overrides: dict[str, str],
                 resolver: ImageResolver, cache: ImageCache, limits: Limits) -> dict[int, TableResult]:
    """The candidates and errors of every table read: ``{id(entry): result}``."""
    results: dict[int, TableResult] = {}
    for e in (e for e in entries if e.kind == "table"):
        frame = frames[id(e)]
        if not isinstance(frame[0], pd.DataFrame):
            continue
        df, row_errors = frame  # type: ignore[misc]
        if len(df) == 0:  # no rows to read: say so, not "no usable columns" (nothing shows a role)
            results[id(e)] = TableResult([], list(row_errors) or [(e.source, "table has no data rows")], set())
            continue
        try:
            detected = detect_roles(df)
            detected.update({c: r for c, r in overrides.items() if c in detected})
            res = table_candidates(df, e, detected, resolver, cache, limits)
        except Exception as ex:
            logger.exception("unexpected error while scanning table %s", e.source)
            res = TableResult([], [(e.source, f"could not be read ({type(ex).__name__}: {ex})")], set())
        res.errors[:0] = row_errors
        results[id(e)] = res
    return results


def _collect(items: list[Entry | tuple[str, str]], frames: dict[int, _Frame],
             table_results: dict[int, TableResult], cache: ImageCache,
             limits: Limits) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Candidates and errors in input order: loose images (not used by a table row), tables' rows, texts."""
    used: set[int] = set()
    for res in table_results.values():
        used |= res.used_images
    candidates: list[Candidate] = []
    errors: list[tuple[str, str]] = []
    for it in items:
        if not isinstance(it, Entry):
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
                text = decode_text(it.read(limits))
                lines = ((f"{it.source} line {k}", ln) for k, ln in enumerate(split_lines(text), 1))
                found = text_candidates(lines, limits, errors)
                if not found:
                    errors.append((it.source, "no text lines"))
                candidates.extend(found)
        except Problem as p:
            errors.append((it.source, p.reason))
        except Exception as ex:
            logger.exception("unexpected error while reading %s", it.source)
            errors.append((it.source, f"could not be read ({type(ex).__name__}: {ex})"))
    return candidates, errors


def _pasted_lines(texts: Sequence[str]) -> list[tuple[str, str]]:
    """Pasted text as ``("pasted line N", line)``, numbered across all chunks."""
    pasted = []
    k = 0
    for chunk in texts:
        for line in split_lines(str(chunk)):
            k += 1
            pasted.append((f"pasted line {k}", line))
    return pasted
