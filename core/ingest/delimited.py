"""Chunked readers of CSV/TSV vector tables, for :func:`core.ingest.stream_table`.

:func:`read_delimited_arrow` reads the file with pyarrow's streaming CSV reader, every column as text;
:func:`read_delimited` with Python's csv reader over the open file (for the files pyarrow would number or
split differently). Both give what the row-by-row reader (:mod:`.tables`) gives for the same file: the
same header, delimiter, 1-based data-row numbers, missing values (:data:`.tables.NA_STRINGS`) and row
errors. Each returns ``(head, chunks, reader errors)``: the first ``role_rows`` rows as a frame (typed as
the row-by-row reader types them, indexed by data-row number) for role detection, an iterator of
:class:`Chunk` and the ``(source, reason)`` of rows the reader left out.

Also here: the :class:`Chunk` every chunked reader yields (the Parquet reader in :mod:`.stream` too), the
:class:`Fallback` and :class:`Irregular` exceptions, and the typing of CSV text columns (:func:`infer_strings`,
:func:`infer_csv_text`).
"""
from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .tables import NA_STRINGS, dedupe_header, infer_column, sniff_delimiter


class Fallback(Exception):
    """The table needs the row-by-row reader."""


class Irregular(Exception):
    """The CSV file needs Python's csv reader (pyarrow's reader does not number its rows the same way)."""


@dataclass
class Chunk:
    """Rows of a table read at a time, by column."""

    rows: np.ndarray  # (c,) int64 data-row numbers (rows whose every cell is missing are left out)
    cols: dict  # column -> pyarrow array (Parquet) or list of str/None (CSV, NA strings as None)
    raw: dict  # CSV: column -> list of the raw strings (for type inference over the whole column)


@dataclass
class CsvText:
    """A chunk of one CSV column as pyarrow text (the raw cells, typed over the whole column at the end)."""

    array: object


def _head_text(sp: str) -> str:
    """The first MiB of a UTF-8 text file, cut after its last complete line."""
    with open(sp, "rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise Fallback("UTF-16 text")
    try:
        with open(sp, encoding="utf-8-sig", newline="") as fh:
            text = fh.read(1 << 20)
    except UnicodeDecodeError:
        raise Fallback("not UTF-8 text") from None
    if len(text) == 1 << 20 and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


# ---- pyarrow's CSV reader ----------------------------------------------------------------------------
def read_delimited_arrow(sp: str, ext: str, chunk_rows: int, role_rows: int):
    """pyarrow's streaming CSV reader, every column as text; :class:`Irregular` (before or while the
    chunks are read) for anything it would number or split differently from Python's csv reader: a
    blank line that is not empty, a row with another number of fields, a BOM, a header on another line."""
    text = _head_text(sp)
    with open(sp, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise Irregular("a byte-order mark")
    delim = "\t" if ext == "tsv" else sniff_delimiter(text)
    columns = _arrow_header(text, delim)
    seen: list[str] = []
    reader = _open_arrow_csv(sp, delim, columns, seen)
    it = _arrow_chunks(_arrow_batches(reader, seen, chunk_rows), columns)
    head_chunks, n_head = [], 0
    for ch in it:
        head_chunks.append(ch)
        n_head += len(ch.rows)
        if n_head >= role_rows:
            break
    if not head_chunks:
        raise Irregular("no data rows")
    raw = {c: [v for ch in head_chunks for v in ch.raw[c].array.to_pylist()][:role_rows] for c in columns}
    head = pd.DataFrame({c: infer_strings(raw[c]) for c in columns})
    head.index = pd.Index(np.concatenate([ch.rows for ch in head_chunks])[:role_rows], dtype="int64")
    return head, itertools.chain(head_chunks, it), []


def _arrow_header(text: str, delim: str) -> list[str]:
    """The column names of the header on the file's first line; :class:`Irregular` when there is none."""
    first_line = text.splitlines()[0] if text else ""
    try:
        header = next(csv.reader([first_line], delimiter=delim))
    except (csv.Error, StopIteration):
        raise Irregular("no header on the first line") from None
    if not "".join(header).strip():
        raise Irregular("no header on the first line")
    return dedupe_header(header)


def _open_arrow_csv(sp: str, delim: str, columns: list[str], seen: list[str]):
    """pyarrow's streaming reader of the file below its header, every column as text; a row with another
    number of fields is skipped and noted in ``seen`` (the batches then raise :class:`Irregular`)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def irregular(row) -> str:  # noted and skipped here; the chunks raise Irregular (pyarrow swallows raises)
        seen.append(f"a row with {row.actual_columns} fields, expected {row.expected_columns}")
        return "skip"

    try:
        return pacsv.open_csv(
            sp, read_options=pacsv.ReadOptions(skip_rows=1, column_names=columns, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                             invalid_row_handler=irregular),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 strings_can_be_null=False))
    except Irregular:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and others for a file it cannot read
        raise Irregular(f"pyarrow cannot read it ({e})") from None


def _arrow_batches(reader, seen: list[str], chunk_rows: int) -> Iterator:
    """The reader's record batches regrouped into batches of ``chunk_rows`` rows (the last one shorter)."""
    import pyarrow as pa

    pending = None
    try:
        for b in reader:
            if seen:
                raise Irregular(seen[0])
            pending = b if pending is None else pa.Table.from_batches([pending, b]).combine_chunks().to_batches()[0]
            while pending is not None and pending.num_rows >= chunk_rows:
                yield pending.slice(0, chunk_rows)
                pending = pending.slice(chunk_rows) if pending.num_rows > chunk_rows else None
    except Irregular:
        raise
    except Exception as e:  # noqa: BLE001
        raise Irregular(f"pyarrow cannot read it ({e})") from None
    if seen:
        raise Irregular(seen[0])
    if pending is not None and pending.num_rows:
        yield pending


def _arrow_chunks(batches: Iterator, columns: list[str]) -> Iterator[Chunk]:
    """The batches as chunks numbered from data row 1: NA strings as None, rows with every cell
    missing left out; :class:`Irregular` for a blank line (Python's csv reader skips it, unnumbered)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    na_set = pa.array(sorted(NA_STRINGS), type=pa.string())
    null = pa.scalar(None, pa.string())
    start = 1
    for b in batches:
        arrays = {c: b.column(i) for i, c in enumerate(columns)}
        rows = np.arange(start, start + b.num_rows, dtype=np.int64)
        start += b.num_rows
        missing = {c: pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(a)), value_set=na_set)
                   for c, a in arrays.items()}
        blank = np.ones(b.num_rows, bool)  # every field whitespace: Python's csv reader skips the record
        na = np.ones(b.num_rows, bool)
        for c, a in arrays.items():
            blank &= pc.equal(pc.utf8_trim_whitespace(a), "").to_numpy(zero_copy_only=False)
            na &= missing[c].to_numpy(zero_copy_only=False)
        if blank.any():
            raise Irregular("a blank line")
        clean = {c: pc.if_else(missing[c], null, a) for c, a in arrays.items()}
        if na.any():
            keep = pa.array(~na)
            rows = rows[~na]
            arrays = {c: a.filter(keep) for c, a in arrays.items()}
            clean = {c: a.filter(keep) for c, a in clean.items()}
        yield Chunk(rows, clean, {c: CsvText(a) for c, a in arrays.items()})


# ---- Python's csv reader -----------------------------------------------------------------------------
def read_delimited(sp: str, ext: str, source: str, chunk_rows: int, role_rows: int):
    """Python's csv reader over the open file, as the row-by-row reader reads it: blank records skipped,
    a row with extra empty fields trimmed, a row with another number of fields a reader error;
    :class:`Fallback` for UTF-16 or undecodable text, a malformed line or a quote left open at the end."""
    with open(sp, "rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise Fallback("UTF-16 text")
    if csv.field_size_limit() < 2**26:
        csv.field_size_limit(2**26)
    fh = open(sp, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the generator _records
    try:
        head_text = fh.read(1 << 20)
        if len(head_text) == 1 << 20 and "\n" in head_text:
            head_text = head_text[: head_text.rindex("\n") + 1]
        fh.seek(0)
    except UnicodeDecodeError:
        fh.close()
        raise Fallback("not UTF-8 text") from None
    delim = "\t" if ext == "tsv" else sniff_delimiter(head_text)
    errors: list[tuple[str, str]] = []
    state = {"header": None}
    it = _records(fh, delim, source, errors, state)
    first = list(itertools.islice(it, role_rows))
    if state["header"] is None or not first:
        raise Fallback("no header or no data rows")
    columns = dedupe_header(state["header"])
    cols = list(zip(*[r for _, r in first]))
    head = pd.DataFrame({c: infer_strings(cols[i]) for i, c in enumerate(columns)})
    head.index = pd.Index([n for n, _ in first], dtype="int64")
    head = head.loc[~head.isna().all(axis=1)]
    return head, _csv_chunks(itertools.chain(first, it), columns, chunk_rows), errors


def _records(fh, delim: str, source: str, errors: list[tuple[str, str]],
             state: dict) -> Iterator[tuple[int, list[str]]]:
    """``(data-row number, fields)`` of every data record of the open file, which it closes at the end;
    the header goes to ``state["header"]``, rows with another number of fields to ``errors``."""
    n = 0
    reader = csv.reader(fh, delimiter=delim)
    last_span = 1
    try:
        before = 0
        for rec in reader:
            last_span, before = reader.line_num - before, reader.line_num
            if not "".join(rec).strip():
                continue  # a blank record
            if state["header"] is None:
                state["header"] = rec
                continue
            n += 1
            width = len(state["header"])
            if len(rec) != width:
                if len(rec) > width and not any(f.strip() for f in rec[width:]):
                    rec = rec[:width]
                else:
                    errors.append((f"{source} row {n}",
                                   f"has {len(rec)} fields, expected {width} (as in the header)"))
                    continue
            yield n, rec
    except (csv.Error, UnicodeDecodeError) as e:
        raise Fallback(f"CSV the row-by-row reader handles ({e})") from None
    finally:
        fh.close()
    if last_span > 1:  # the last record ran over several lines: maybe a quote left open
        raise Fallback("the last record spans several lines")


def _csv_chunks(records: Iterator[tuple[int, list[str]]], columns: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """The records as chunks of ``chunk_rows`` rows: NA strings as None, rows with every cell
    missing left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    na_set = pa.array(sorted(NA_STRINGS), type=pa.string())
    null = pa.scalar(None, pa.string())
    while True:
        part = list(itertools.islice(records, chunk_rows))
        if not part:
            return
        rows = np.fromiter((n for n, _ in part), np.int64, len(part))
        raw = {c: list(v) for c, v in zip(columns, zip(*[r for _, r in part]))}
        arrays = {c: pa.array(v, type=pa.string()) for c, v in raw.items()}
        # the NA strings ("", "na", "null", ...) are missing values, as the row-by-row reader has them
        missing = {c: pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(a)), value_set=na_set)
                   for c, a in arrays.items()}
        na = np.ones(len(part), bool)
        for m in missing.values():
            na &= m.to_numpy(zero_copy_only=False)
        clean = {c: pc.if_else(missing[c], null, a) for c, a in arrays.items()}
        if na.any():
            keep = np.flatnonzero(~na)
            rows = rows[keep]
            raw = {c: [v[i] for i in keep] for c, v in raw.items()}
            clean = {c: a.take(pa.array(keep)) for c, a in clean.items()}
        yield Chunk(rows, clean, raw)


# ---- typing CSV text columns -------------------------------------------------------------------------
def infer_csv_text(parts: list[CsvText]) -> pd.Series:
    """:func:`infer_strings` of a column read by pyarrow's CSV reader, without a Python string per cell when
    the column is text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.chunked_array([p.array for p in parts], type=pa.string())
    na = pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(arr)), value_set=pa.array(sorted(NA_STRINGS)))
    clean = pc.if_else(na, pa.scalar(None, pa.string()), arr)
    present = clean.drop_null()
    if len(present):
        try:
            float(present[0].as_py().strip())
        except ValueError:
            return pd.Series(clean.to_pandas().to_numpy(dtype=object), dtype=object)
    return infer_column(arr.to_pylist())


def infer_strings(values: list) -> pd.Series:
    """:func:`.tables.infer_column` (numbers when every present cell is one, else text), answered without
    ``pd.to_numeric`` over the column when its first present cell is not a number (then not all are)."""
    first = next((v for v in values if v.strip().lower() not in NA_STRINGS), None)
    if first is not None:
        try:
            float(first.strip())
        except ValueError:
            return pd.Series([None if v.strip().lower() in NA_STRINGS else v for v in values], dtype=object)
    return infer_column(values)
