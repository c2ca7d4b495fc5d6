"""Table readers: CSV/TSV (delimiter sniffing, ragged and unterminated rows), JSON, JSONL, Parquet and
XLSX into a frame indexed by 1-based data-row numbers, plus the row errors (see the package docstring)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .common import TABLE_EXTS, IngestError, Limits, Problem, decode_text, ext_of, fmt_bytes, split_lines
from .sources import disk_reader, safe_members

logger = logging.getLogger(__name__)


NA_STRINGS = {"", "na", "n/a", "nan", "null", "#n/a"}
_CSV_DELIMITERS = (",", "\t", ";", "|")


def sniff_delimiter(text: str) -> str:
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


def dedupe_header(header: list[str]) -> list[str]:
    """Column names made unique (``name``, ``name.1``, ...); a blank name becomes ``column_<n>``."""
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


def infer_column(values: Sequence[str]) -> pd.Series:
    """Strings from a CSV cell -> numeric Series when every present value is a number."""
    cleaned = [None if v.strip().lower() in NA_STRINGS else v for v in values]
    s = pd.Series(cleaned, dtype=object)
    present = s.notna()
    if present.any():
        num = pd.to_numeric(s.where(~present, s.str.strip()), errors="coerce")
        if int(num.notna().sum()) == int(present.sum()):
            return num
    return s


def _read_delimited(data: bytes, ext: str, source: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    try:
        text = decode_text(data)
    except Problem as p:
        raise IngestError(source, f"{p.reason} (save the table as UTF-8)") from None
    delim = "\t" if ext == "tsv" else sniff_delimiter(text)
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
    columns = dedupe_header(header)
    if rows:
        cols = list(zip(*rows))
        df = pd.DataFrame({c: infer_column(cols[i]) for i, c in enumerate(columns)})
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
        text = decode_text(data)
    except Problem as p:
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
        text = decode_text(data)
    except Problem as p:
        raise IngestError(source, p.reason) from None
    records, numbers, errors = [], [], []
    for i, line in enumerate(split_lines(text), 1):
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
            safe_members(zf, source, limits, errors)
    except zipfile.BadZipFile as e:
        raise IngestError(source, f"not a valid XLSX workbook ({e})") from None
    if errors:
        raise IngestError(source, f"not a safe XLSX workbook ({errors[0][1]})")


def load_table(
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
    ext = ext_of(sp)
    if ext not in TABLE_EXTS:
        raise IngestError(source, f"unsupported table type '.{ext}' (supported: {', '.join(sorted(TABLE_EXTS))})")
    if not os.path.isfile(sp):
        raise IngestError(source, "file not found")
    size = os.path.getsize(sp)
    if size > limits.max_file_bytes:
        raise IngestError(source, f"file is {fmt_bytes(size)}, over the {fmt_bytes(limits.max_file_bytes)} limit")
    try:
        data = disk_reader(sp)()
    except Problem as p:
        raise IngestError(source, p.reason) from None
    df, errors = load_table(data, ext, source, limits)
    for src, reason in errors:
        logger.warning("%s: %s", src, reason)
    df.attrs["ingest_errors"] = errors
    return df
