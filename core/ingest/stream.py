"""Streaming reads of large vector tables: Parquet, CSV and TSV files whose rows become bare "row" items
(vector, numeric and metadata columns; no image or text column).

:func:`stream_table` reads such a table in chunks (``pyarrow.parquet.ParquetFile.iter_batches``, or
Python's csv reader over the open file) into columns: vector cells are parsed a chunk at a time with
pyarrow (list columns are flattened, strings like ``"[0.1, 0.2]"`` are split and cast), never one
Python object per row, and the content ids are hashed in one pass (:mod:`.rowids`). The result is
what the row-by-row reader gives for the same file: the same rows, values, ids and row errors (with
their 1-based data-row numbers), in the same order. A cell the fast parse does not accept is parsed
on its own by the row-by-row rules, so its error names the row and the reason as before.

Column roles are detected on the first :data:`ROLE_ROWS` rows. Tables the streaming reader leaves to
the row-by-row reader (``stream_table`` returns None): image or text columns, no usable column, no data
rows, Parquet files with a named pandas index, UTF-16 text, CSV quirks (a quote left open at the end of
the file, a malformed or undecodable line), files over the size limit.
"""
from __future__ import annotations

import csv
import itertools
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .candidates import _jsonable
from .common import IngestError, Limits, _ext_of, _is_missing, _Problem
from .roles import _check_roles, _parse_vector, _vector_groups, detect_roles
from .rowids import row_content_ids
from .tables import _NA_STRINGS, _dedupe_header, _infer_column, _sniff_delimiter

logger = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # rows read and parsed at a time
ROLE_ROWS = 65_536  # rows column roles are detected on
STREAM_EXTS = ("parquet", "csv", "tsv")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VEC_RE = rf"^\s*\[?\s*{_NUM}(?:(?:\s*[,;]\s*|\s+){_NUM})*\s*\]?\s*$"
_INDEX_COL = re.compile(r"^__index_level_\d+__$")


class _Fallback(Exception):
    """The table needs the row-by-row reader."""


class _Irregular(Exception):
    """The CSV file needs Python's csv reader (pyarrow's reader does not number its rows the same way)."""


@dataclass
class RowTable:
    """The usable rows of one table, as columns.

    ``rows`` (n,) int64 1-based data-row numbers; ``ids`` (n,) str content ids (repeats possible: rows
    with the same content); ``meta`` (n rows) the metadata and numeric columns; ``vectors``
    ``{"precomputed:<name>": (n, d) float32}``; ``errors`` ``(source, reason)`` of the rows left out.
    """

    source: str
    rows: np.ndarray
    ids: np.ndarray
    meta: pd.DataFrame
    vectors: dict[str, np.ndarray]
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def sources(self) -> np.ndarray:
        """(n,) object: ``"<file> row <N>"`` of every row (what items list as their source)."""
        return (f"{self.source} row " + pd.Series(self.rows).astype(str)).to_numpy(dtype=object)


def stream_table(path: str | os.PathLike, *, roles: Mapping[str, str] | None = None, limits: Limits | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> RowTable | None:
    """Read a Parquet/CSV/TSV vector table in chunks of ``chunk_rows``; None when the table is one for the
    row-by-row reader (see the module docstring).

    Raises:
        IngestError: a role override names a column the table does not have (as :func:`core.ingest.scan`).
    """
    limits = limits or Limits()
    overrides = _check_roles(roles)
    sp = os.fspath(path)
    source = os.path.basename(sp) or sp
    ext = _ext_of(sp)
    if ext not in STREAM_EXTS or not os.path.isfile(sp) or os.path.getsize(sp) > limits.max_file_bytes:
        return None
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
    try:
        if ext == "parquet":
            return _Builder(source, overrides).run(*_parquet(sp, chunk_rows))
        try:
            return _Builder(source, overrides).run(*_delimited_arrow(sp, ext, chunk_rows))
        except _Irregular as e:  # a ragged or blank line, quotes...: Python's csv reader, row by row
            logger.info("%s: %s; reading it with the csv module", source, e)
        return _Builder(source, overrides).run(*_delimited(sp, ext, source, chunk_rows))
    except _Fallback as e:
        logger.info("%s: read row by row (%s)", source, e)
        return None


# ---- readers: (first rows as a frame for role detection, chunk iterator, reader errors) --------------
@dataclass
class _Chunk:
    rows: np.ndarray  # (c,) int64 data-row numbers (rows whose every cell is missing are left out)
    cols: dict  # column -> pyarrow array (Parquet) or list of str/None (CSV, NA strings as None)
    raw: dict  # CSV: column -> list of the raw strings (for type inference over the whole column)


def _parquet(sp: str, chunk_rows: int):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(sp)
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - let the row-by-row reader report a broken file
        raise _Fallback(f"not readable as Parquet ({e})") from None
    meta = (schema.metadata or {}).get(b"pandas")
    if meta:
        import json

        index_cols = json.loads(meta).get("index_columns", [])
        if any(isinstance(c, str) and not _INDEX_COL.match(c) for c in index_cols):
            raise _Fallback("a named pandas index")
    names = [n for n in schema.names if not _INDEX_COL.match(n)]
    if len(set(names)) != len(names):
        raise _Fallback("repeated column names")

    def batches(size: int):
        try:
            yield from pf.iter_batches(batch_size=size, columns=names)
        except Exception as e:  # noqa: BLE001
            raise _Fallback(f"not readable as Parquet ({e})") from None

    def missing_rows(batch) -> np.ndarray:
        m = np.ones(batch.num_rows, bool)
        for col in batch.columns:
            m &= pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
        return m

    first = next(batches(ROLE_ROWS), None)
    if first is None or first.num_rows == 0:
        raise _Fallback("no data rows")
    head = first.to_pandas()
    for c in head.columns:
        if isinstance(head[c].dtype, pd.CategoricalDtype):
            head[c] = head[c].astype(object)
    head.index = pd.RangeIndex(1, len(head) + 1)
    head = head.loc[~missing_rows(first)]

    def chunks() -> Iterator[_Chunk]:
        start = 1
        for b in batches(chunk_rows):
            keep = ~missing_rows(b)
            rows = np.arange(start, start + b.num_rows, dtype=np.int64)[keep]
            start += b.num_rows
            if not keep.all():
                b = b.filter(pa.array(keep))
            yield _Chunk(rows, {n: b.column(i) for i, n in enumerate(b.schema.names)}, {})

    return head, chunks(), []


def _head_text(sp: str) -> str:
    """The first MiB of a UTF-8 text file, cut after its last complete line."""
    with open(sp, "rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise _Fallback("UTF-16 text")
    try:
        with open(sp, encoding="utf-8-sig", newline="") as fh:
            text = fh.read(1 << 20)
    except UnicodeDecodeError:
        raise _Fallback("not UTF-8 text") from None
    if len(text) == 1 << 20 and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def _delimited_arrow(sp: str, ext: str, chunk_rows: int):
    """pyarrow's streaming CSV reader, every column as text; :class:`_Irregular` (before or while the
    chunks are read) for anything it would number or split differently from Python's csv reader: a
    blank line that is not empty, a row with another number of fields, a BOM, a header on another line."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    text = _head_text(sp)
    with open(sp, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise _Irregular("a byte-order mark")
    delim = "\t" if ext == "tsv" else _sniff_delimiter(text)
    first_line = text.splitlines()[0] if text else ""
    try:
        header = next(csv.reader([first_line], delimiter=delim))
    except (csv.Error, StopIteration):
        raise _Irregular("no header on the first line") from None
    if not "".join(header).strip():
        raise _Irregular("no header on the first line")
    columns = _dedupe_header(header)

    seen: list[str] = []

    def irregular(row) -> str:  # noted and skipped here; the chunks raise _Irregular (pyarrow swallows raises)
        seen.append(f"a row with {row.actual_columns} fields, expected {row.expected_columns}")
        return "skip"

    try:
        reader = pacsv.open_csv(
            sp, read_options=pacsv.ReadOptions(skip_rows=1, column_names=columns, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                             invalid_row_handler=irregular),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 strings_can_be_null=False))
    except _Irregular:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and others for a file it cannot read
        raise _Irregular(f"pyarrow cannot read it ({e})") from None
    na_set = pa.array(sorted(_NA_STRINGS), type=pa.string())
    null = pa.scalar(None, pa.string())

    def batches() -> Iterator:
        pending = None
        try:
            for b in reader:
                if seen:
                    raise _Irregular(seen[0])
                pending = b if pending is None else pa.Table.from_batches([pending, b]).combine_chunks().to_batches()[0]
                while pending is not None and pending.num_rows >= chunk_rows:
                    yield pending.slice(0, chunk_rows)
                    pending = pending.slice(chunk_rows) if pending.num_rows > chunk_rows else None
        except _Irregular:
            raise
        except Exception as e:  # noqa: BLE001
            raise _Irregular(f"pyarrow cannot read it ({e})") from None
        if seen:
            raise _Irregular(seen[0])
        if pending is not None and pending.num_rows:
            yield pending

    def chunks() -> Iterator[_Chunk]:
        start = 1
        for b in batches():
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
                raise _Irregular("a blank line")
            clean = {c: pc.if_else(missing[c], null, a) for c, a in arrays.items()}
            if na.any():
                keep = pa.array(~na)
                rows = rows[~na]
                arrays = {c: a.filter(keep) for c, a in arrays.items()}
                clean = {c: a.filter(keep) for c, a in clean.items()}
            yield _Chunk(rows, clean, {c: _CsvText(a) for c, a in arrays.items()})

    it = chunks()
    head_chunks, n_head = [], 0
    for ch in it:
        head_chunks.append(ch)
        n_head += len(ch.rows)
        if n_head >= ROLE_ROWS:
            break
    if not head_chunks:
        raise _Irregular("no data rows")
    raw = {c: [v for ch in head_chunks for v in ch.raw[c].array.to_pylist()][:ROLE_ROWS] for c in columns}
    head = pd.DataFrame({c: _infer(raw[c]) for c in columns})
    head.index = pd.Index(np.concatenate([ch.rows for ch in head_chunks])[:ROLE_ROWS], dtype="int64")
    return head, itertools.chain(head_chunks, it), []


def _delimited(sp: str, ext: str, source: str, chunk_rows: int):
    with open(sp, "rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise _Fallback("UTF-16 text")
    if csv.field_size_limit() < 2**26:
        csv.field_size_limit(2**26)
    fh = open(sp, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the generator below
    try:
        head_text = fh.read(1 << 20)
        if len(head_text) == 1 << 20 and "\n" in head_text:
            head_text = head_text[: head_text.rindex("\n") + 1]
        fh.seek(0)
    except UnicodeDecodeError:
        fh.close()
        raise _Fallback("not UTF-8 text") from None
    delim = "\t" if ext == "tsv" else _sniff_delimiter(head_text)
    errors: list[tuple[str, str]] = []
    state = {"header": None}

    def records() -> Iterator[tuple[int, list[str]]]:
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
            raise _Fallback(f"CSV the row-by-row reader handles ({e})") from None
        finally:
            fh.close()
        if last_span > 1:  # the last record ran over several lines: maybe a quote left open
            raise _Fallback("the last record spans several lines")

    it = records()
    first = list(itertools.islice(it, ROLE_ROWS))
    if state["header"] is None or not first:
        raise _Fallback("no header or no data rows")
    columns = _dedupe_header(state["header"])
    cols = list(zip(*[r for _, r in first]))
    head = pd.DataFrame({c: _infer(cols[i]) for i, c in enumerate(columns)})
    head.index = pd.Index([n for n, _ in first], dtype="int64")
    head = head.loc[~head.isna().all(axis=1)]

    import pyarrow as pa
    import pyarrow.compute as pc

    na_set = pa.array(sorted(_NA_STRINGS), type=pa.string())
    null = pa.scalar(None, pa.string())

    def chunks() -> Iterator[_Chunk]:
        rest = itertools.chain(first, it)
        while True:
            part = list(itertools.islice(rest, chunk_rows))
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
            yield _Chunk(rows, clean, raw)

    return head, chunks(), errors


# ---- building the rows -------------------------------------------------------------------------------
class _Problems:
    """Row problems as (global position, order within the row, reason); the row-by-row reader's order."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, str]] = []

    def add(self, positions, order: int, reason) -> None:
        if isinstance(reason, str):
            self.items.extend((int(p), order, reason) for p in np.atleast_1d(positions))
        else:
            self.items.extend((int(p), order, r) for p, r in zip(np.atleast_1d(positions), reason))


class _CellVectors:
    """One vector column of cells (lists or strings) parsed a chunk at a time: lengths and flat values."""

    def __init__(self, name: str, order: int, problems: _Problems):
        self.name, self.order, self.problems = name, order, problems
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first position, lengths, flat float32)
        self.first_seen: dict[int, int] = {}  # length -> count, in order of first occurrence

    def add(self, col, g0: int) -> None:
        lens, flat = self._parse(col, g0)
        good = lens > 0
        if good.any():
            u, first, counts = np.unique(lens[good], return_index=True, return_counts=True)
            for k in np.argsort(first, kind="stable"):
                self.first_seen[int(u[k])] = self.first_seen.get(int(u[k]), 0) + int(counts[k])
        self.parts.append((g0, lens, flat))

    def finish(self, n: int) -> np.ndarray:
        """(n, d) float32 of the rows whose vector is usable; problems recorded (and ``bad`` set) for the rest."""
        expected = max(self.first_seen.items(), key=lambda kv: kv[1])[0] if self.first_seen else 0
        out = np.zeros((n, expected), np.float32)
        for g0, lens, flat in self.parts:
            wrong = np.flatnonzero((lens > 0) & (lens != expected))
            if len(wrong):
                self.problems.add(g0 + wrong, self.order, [
                    f"vector '{self.name}' has {int(lens[i])} values, expected {expected}" for i in wrong])
            ok = np.flatnonzero(lens == expected) if expected else np.zeros(0, np.int64)
            if not len(ok):
                continue
            if len(ok) == len(lens):
                block = flat.reshape(len(lens), expected)
            else:
                starts = np.concatenate([[0], np.cumsum(np.maximum(lens, 0))[:-1]])
                block = flat[starts[ok][:, None] + np.arange(expected)]
            finite = np.isfinite(block).all(1)
            if not finite.all():
                self.problems.add(g0 + ok[~finite], self.order, f"vector '{self.name}' has NaN/inf values")
            out[g0 + ok] = block
        return out

    def _parse(self, col, g0: int) -> tuple[np.ndarray, np.ndarray]:
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(col, list):
            col = pa.array(col, type=pa.string())
        t = col.type
        if pa.types.is_fixed_size_list(t):
            col = col.cast(pa.list_(t.value_type))
            t = col.type
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
                pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
            missing = col.is_null().to_numpy(zero_copy_only=False)
            lens = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            flat = _to_f32(col.flatten().to_numpy(zero_copy_only=False))
            self._report(g0, missing, lens)
            return np.where(missing, -1, lens), flat
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return self._parse_strings(col, g0)
        return self._parse_cells(col.to_pylist(), g0)

    def _report(self, g0: int, missing: np.ndarray, lens: np.ndarray) -> None:
        if missing.any():
            self.problems.add(g0 + np.flatnonzero(missing), self.order, f"vector '{self.name}' is missing")
        empty = (~missing) & (lens == 0)
        if empty.any():
            self.problems.add(g0 + np.flatnonzero(empty), self.order, f"vector '{self.name}' is empty")

    def _parse_strings(self, col, g0: int) -> tuple[np.ndarray, np.ndarray]:
        import pyarrow as pa
        import pyarrow.compute as pc

        trimmed = pc.utf8_trim_whitespace(col)
        missing = pc.fill_null(pc.equal(trimmed, ""), True).to_numpy(zero_copy_only=False)
        lens = np.full(len(col), -1, np.int64)
        if missing.any():
            self.problems.add(g0 + np.flatnonzero(missing), self.order, f"vector '{self.name}' is missing")
        # the common case first: every cell "[x, y, ...]" (or "x,y,...", "x y ...") with one separator
        present = pa.array(~missing)
        core = pc.utf8_trim(trimmed.filter(present), characters=" \t\r\n[]")
        for sep in (", ", ",", " "):
            try:
                nums = pc.split_pattern(core, sep).cast(pa.list_(pa.float64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            lens[~missing] = pc.list_value_length(nums).to_numpy(zero_copy_only=False)
            return lens, _to_f32(nums.flatten().to_numpy(zero_copy_only=False))
        fast = pc.fill_null(pc.match_substring_regex(col, _VEC_RE), False).to_numpy(zero_copy_only=False) & ~missing
        flat = np.zeros(0, np.float32)
        if fast.any():
            body = pc.replace_substring_regex(trimmed.filter(pa.array(fast)), r"^\[|\]$", "")
            parts = pc.split_pattern_regex(pc.utf8_trim_whitespace(body), r"\s*[,;]\s*|\s+")
            try:
                nums = parts.cast(pa.list_(pa.float64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                fast[:] = False  # a token pyarrow does not read: every cell by the row-by-row rules
            else:
                lens[fast] = pc.list_value_length(nums).to_numpy(zero_copy_only=False)
                flat = _to_f32(nums.flatten().to_numpy(zero_copy_only=False))
        slow = np.flatnonzero(~fast & ~missing)
        if not len(slow):
            return lens, flat
        values = col.to_pylist()
        pieces: dict[int, np.ndarray] = {}
        for i in slow.tolist():
            try:
                a = _parse_vector(values[i])
            except _Problem as p:
                self.problems.add(g0 + i, self.order, f"vector '{self.name}' {p.reason}")
                continue
            pieces[i] = _to_f32(a)
            lens[i] = a.size
        if not pieces:
            return lens, flat
        # merge the row-by-row cells into the flat values, in row order
        fast_rows = np.flatnonzero(fast)
        starts = np.concatenate([[0], np.cumsum(lens[fast_rows])])
        seg = {int(r): flat[starts[j]:starts[j + 1]] for j, r in enumerate(fast_rows)}
        seg.update(pieces)
        flat = np.concatenate([seg[r] for r in sorted(seg)]) if seg else flat
        return lens, flat

    def _parse_cells(self, values: list, g0: int) -> tuple[np.ndarray, np.ndarray]:
        lens = np.full(len(values), -1, np.int64)
        pieces = []
        for i, v in enumerate(values):
            try:
                a = _parse_vector(v)
            except _Problem as p:
                self.problems.add(g0 + i, self.order, f"vector '{self.name}' {p.reason}")
                continue
            lens[i] = a.size
            pieces.append(_to_f32(a))
        return lens, (np.concatenate(pieces) if pieces else np.zeros(0, np.float32))


def _to_f32(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, reported as NaN/inf
        return np.asarray(a, dtype=np.float64).astype(np.float32)


class _Builder:
    """Columns of a table, by role, gathered chunk by chunk; :meth:`run` gives the :class:`RowTable`."""

    def __init__(self, source: str, overrides: dict[str, str]):
        self.source = source
        self.overrides = overrides

    def run(self, head: pd.DataFrame, chunks: Iterator[_Chunk], reader_errors: list) -> RowTable:
        cols = [str(c) for c in head.columns]
        for col in self.overrides:
            if col not in cols:
                raise IngestError("roles", f"unknown column {col!r}; valid columns: {', '.join(cols)}")
        if not len(head):
            raise _Fallback("no data rows in the first rows")
        roles = detect_roles(head)
        roles.update({c: r for c, r in self.overrides.items() if c in roles})
        by_role = {r: [c for c in cols if roles.get(c) == r]
                   for r in ("image", "text", "vector", "numeric", "metadata")}
        if by_role["image"] or by_role["text"]:
            raise _Fallback("image or text columns")
        if not (by_role["vector"] or by_role["numeric"]):
            raise _Fallback("no usable columns")
        scalar = [c for c in by_role["vector"]
                  if pd.api.types.is_numeric_dtype(head[c]) and not pd.api.types.is_bool_dtype(head[c])]
        groups = _vector_groups(scalar)
        problems = _Problems()
        cells = {c: _CellVectors(c, 1 + j, problems)
                 for j, c in enumerate(c for c in by_role["vector"] if c not in scalar)}
        group_parts: dict[str, list[np.ndarray]] = {g: [] for g in groups}
        keep_cols = by_role["metadata"] + by_role["numeric"]
        kept: dict[str, list] = {c: [] for c in keep_cols}
        row_parts: list[np.ndarray] = []
        g0 = 0
        for ch in chunks:
            n_c = len(ch.rows)
            if not n_c:
                continue
            row_parts.append(ch.rows)
            for g, members in groups.items():
                mat = np.column_stack([_numeric(ch.cols[m]) for m in members])
                group_parts[g].append(_to_f32(mat))
            for c, acc in cells.items():
                acc.add(ch.cols[c], g0)
            for c in keep_cols:
                kept[c].append(ch.raw[c] if ch.raw else ch.cols[c])
            g0 += n_c
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
        n = len(rows)
        if not n:
            raise _Fallback("no data rows")
        bad = np.zeros(n, bool)
        vectors: dict[str, np.ndarray] = {}
        for g, parts in group_parts.items():
            mat = np.concatenate(parts)
            fin = np.isfinite(mat).all(1)
            problems.add(np.flatnonzero(~fin), 0, f"vector '{g}' has NaN/inf values")
            vectors[g] = mat
        for c, acc in cells.items():
            vectors[c] = acc.finish(n)
        meta = pd.DataFrame(index=pd.RangeIndex(n))
        for c in keep_cols:
            meta[c] = _column(kept.pop(c))
        features = None
        if by_role["numeric"]:
            features = self._features(meta, by_role["numeric"], problems, n, len(cells) + 1)
        for p, _, _ in problems.items:
            bad[p] = True
        if features is not None:
            features = features(bad)
        has_numeric = (meta[by_role["numeric"]].notna().any(axis=1).to_numpy()
                       if by_role["numeric"] else np.zeros(n, bool))
        errors = list(reader_errors)
        empty = np.flatnonzero(~bad & ~has_numeric) if not vectors else np.zeros(0, np.int64)
        row_errors = [(p, o, f"{self.source} row {rows[p]}", r) for p, o, r in problems.items]
        row_errors += [(int(p), 99, f"{self.source} row {rows[p]}", "row has no image, text, vector or numeric value")
                       for p in empty]
        row_errors.sort(key=lambda e: (e[0], e[1]))
        errors += [(s, r) for _, _, s, r in row_errors]
        good = ~bad
        good[empty] = False
        idx = np.flatnonzero(good)
        out_vectors = {f"precomputed:{k}": np.ascontiguousarray(v[idx]) for k, v in vectors.items()}
        if features is not None:
            out_vectors["precomputed:numeric"] = features[idx]
        meta = _jsonable_frame(meta.iloc[idx].reset_index(drop=True))
        ids = row_content_ids(meta, out_vectors)
        return RowTable(self.source, rows[idx], ids, meta, out_vectors, errors)

    @staticmethod
    def _features(meta: pd.DataFrame, numeric_cols: list[str], problems: _Problems, n: int, order0: int):
        """Record the numeric columns' problems; return ``standardise(bad) -> (n, k) float32`` (the columns
        standardised over the usable rows, missing values at the mean), as the row-by-row reader does."""
        num = np.zeros((n, len(numeric_cols)), np.float64)
        for j, c in enumerate(numeric_cols):
            s = meta[c]
            coerced = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            if s.dtype == object:
                nan_rows = np.flatnonzero(np.isnan(coerced))
                vals = s.to_numpy()
                for i in nan_rows.tolist():
                    raw = vals[i]
                    if not _is_missing(raw) and not (isinstance(raw, str) and not raw.strip()):
                        problems.add(i, order0 + j, f"numeric column '{c}' has a non-numeric value {str(raw)[:40]!r}")
            inf = np.flatnonzero(np.isinf(coerced))
            if len(inf):
                problems.add(inf, order0 + j, f"numeric column '{c}' has an infinite value")
            num[:, j] = coerced

        def standardise(bad: np.ndarray) -> np.ndarray:
            import warnings

            valid = num[~bad]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(valid, axis=0) if len(valid) else np.zeros(num.shape[1])
                std = np.nanstd(valid, axis=0) if len(valid) else np.ones(num.shape[1])
            mean = np.where(np.isfinite(mean), mean, 0.0)
            std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
            z = (num - mean) / std
            return np.where(np.isfinite(z), z, 0.0).astype(np.float32)

        return standardise


def _numeric(col) -> np.ndarray:
    """A scalar vector member column of a chunk as float64 (non-numbers NaN)."""
    if isinstance(col, list):
        return pd.to_numeric(pd.Series(col, dtype=object), errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return pd.to_numeric(col.to_pandas(), errors="coerce").to_numpy(np.float64, na_value=np.nan)


@dataclass
class _CsvText:
    """A chunk of one CSV column as pyarrow text (the raw cells, typed over the whole column at the end)."""

    array: object


def _infer_arrow(parts: list[_CsvText]) -> pd.Series:
    """:func:`_infer` of a column read by pyarrow's CSV reader, without a Python string per cell when
    the column is text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.chunked_array([p.array for p in parts], type=pa.string())
    na = pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(arr)), value_set=pa.array(sorted(_NA_STRINGS)))
    clean = pc.if_else(na, pa.scalar(None, pa.string()), arr)
    present = clean.drop_null()
    if len(present):
        try:
            float(present[0].as_py().strip())
        except ValueError:
            return pd.Series(clean.to_pandas().to_numpy(dtype=object), dtype=object)
    return _infer_column(arr.to_pylist())


def _infer(values: list) -> pd.Series:
    """:func:`_infer_column` (numbers when every present cell is one, else text), answered without
    ``pd.to_numeric`` over the column when its first present cell is not a number (then not all are)."""
    first = next((v for v in values if v.strip().lower() not in _NA_STRINGS), None)
    if first is not None:
        try:
            float(first.strip())
        except ValueError:
            return pd.Series([None if v.strip().lower() in _NA_STRINGS else v for v in values], dtype=object)
    return _infer_column(values)


def _column(parts: list) -> pd.Series:
    """A metadata/numeric column from its chunks: CSV strings typed over the whole column (as the
    row-by-row reader does), Parquet chunks as pandas gives them."""
    if parts and isinstance(parts[0], _CsvText):
        s = _infer_arrow(parts)
    elif parts and isinstance(parts[0], list):
        s = _infer([v for p in parts for v in p])
    else:
        import pyarrow as pa

        s = pa.chunked_array(parts).to_pandas() if parts else pd.Series([], dtype=object)
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    return s.reset_index(drop=True)


def _jsonable_frame(meta: pd.DataFrame) -> pd.DataFrame:
    """The metadata values as the row-by-row reader keeps them (JSON-able scalars; numbers stay numbers)."""
    out = {}
    for c in meta.columns:
        s = meta[c]
        dt = s.dtype
        if pd.api.types.is_numeric_dtype(dt) and not isinstance(dt, pd.api.extensions.ExtensionDtype):
            out[c] = s
        elif pd.api.types.is_object_dtype(dt) and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
            out[c] = s.where(s.notna(), None)  # missing: None
        else:
            out[c] = pd.Series([_jsonable(v) for v in s.tolist()], dtype=object)
    return pd.DataFrame(out, index=meta.index)


__all__ = ["CHUNK_ROWS", "ROLE_ROWS", "STREAM_EXTS", "RowTable", "stream_table"]
