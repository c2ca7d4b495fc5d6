"""Streaming reads of large vector tables: Parquet, CSV and TSV files whose rows become bare "row" items
(vector, numeric and metadata columns; no image or text column).

:func:`stream_table` reads such a table in chunks (``pyarrow.parquet.ParquetFile.iter_batches``, or the
CSV/TSV readers of :mod:`.delimited`: pyarrow's streaming CSV reader, else Python's csv reader over the open
file) into columns: vector cells are parsed a chunk at a time with pyarrow (list columns are flattened,
strings like ``"[0.1, 0.2]"`` are split and cast), never one Python object per row, and the content ids
are hashed in one pass (:mod:`.rowids`). The result is
what the row-by-row reader gives for the same file: the same rows, values, ids and row errors (with
their 1-based data-row numbers), in the same order. A cell the fast parse does not accept is parsed
on its own by the row-by-row rules, so its error names the row and the reason as before.

Column roles are detected on the first :data:`ROLE_ROWS` rows. Tables the streaming reader leaves to
the row-by-row reader (``stream_table`` returns None): image or text columns, no usable column, no data
rows, Parquet files with a named pandas index, UTF-16 text, CSV quirks (a quote left open at the end of
the file, a malformed or undecodable line), files over the size limit.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .candidates import jsonable
from .common import IngestError, Limits, Problem, ext_of, is_missing
from .delimited import (
    Chunk,
    CsvText,
    Fallback,
    Irregular,
    infer_csv_text,
    infer_strings,
    read_delimited,
    read_delimited_arrow,
)
from .roles import check_roles, detect_roles, parse_vector, vector_groups
from .rowids import ids_of_keys, row_content_keys

logger = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # rows read and parsed at a time
ROLE_ROWS = 65_536  # rows column roles are detected on
STREAM_EXTS = ("parquet", "csv", "tsv")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VEC_RE = rf"^\s*\[?\s*{_NUM}(?:(?:\s*[,;]\s*|\s+){_NUM})*\s*\]?\s*$"
_INDEX_COL = re.compile(r"^__index_level_\d+__$")


@dataclass
class RowTable:
    """The usable rows of one table, as columns.

    ``rows`` (n,) int64 1-based data-row numbers; ``ids`` (n,) str content ids (repeats possible: rows
    with the same content); ``meta`` (n rows) the metadata and numeric columns; ``vectors``
    ``{"precomputed:<name>": (n, d) float32}``; ``errors`` ``(source, reason)`` of the rows left out;
    ``keys`` (n,) uint64 the hashes the ids are written from (equal keys, equal ids), or None.
    """

    source: str
    rows: np.ndarray
    ids: np.ndarray
    meta: pd.DataFrame
    vectors: dict[str, np.ndarray]
    errors: list[tuple[str, str]] = field(default_factory=list)
    keys: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def sources(self) -> np.ndarray:
        """(n,) object: ``"<file> row <N>"`` of every row (what items list as their source)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not len(self.rows):
            return np.zeros(0, dtype=object)
        numbers = pc.cast(pa.array(np.asarray(self.rows, dtype=np.int64)), pa.string())
        return pc.binary_join_element_wise(f"{self.source} row ", numbers, "").to_numpy(zero_copy_only=False)


def stream_table(path: str | os.PathLike, *, roles: Mapping[str, str] | None = None, limits: Limits | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> RowTable | None:
    """Read a Parquet/CSV/TSV vector table in chunks of ``chunk_rows``; None when the table is one for the
    row-by-row reader (see the module docstring).

    Raises:
        IngestError: a role override names a column the table does not have (as :func:`core.ingest.scan`).
    """
    limits = limits or Limits()
    overrides = check_roles(roles)
    sp = os.fspath(path)
    source = os.path.basename(sp) or sp
    ext = ext_of(sp)
    if ext not in STREAM_EXTS or not os.path.isfile(sp) or os.path.getsize(sp) > limits.max_file_bytes:
        return None
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
    try:
        if ext == "parquet":
            return _Builder(source, overrides).run(*_parquet(sp, chunk_rows))
        try:
            return _Builder(source, overrides).run(*read_delimited_arrow(sp, ext, chunk_rows, ROLE_ROWS))
        except Irregular as e:  # a ragged or blank line, quotes...: Python's csv reader, row by row
            logger.info("%s: %s; reading it with the csv module", source, e)
        return _Builder(source, overrides).run(*read_delimited(sp, ext, source, chunk_rows, ROLE_ROWS))
    except Fallback as e:
        logger.info("%s: read row by row (%s)", source, e)
        return None


# ---- the Parquet reader: (first rows as a frame for role detection, chunk iterator, reader errors) ----
# (the CSV/TSV readers, which return the same, are in .delimited)
def _parquet(sp: str, chunk_rows: int):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(sp)
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - let the row-by-row reader report a broken file
        raise Fallback(f"not readable as Parquet ({e})") from None
    meta = (schema.metadata or {}).get(b"pandas")
    if meta:
        import json

        index_cols = json.loads(meta).get("index_columns", [])
        if any(isinstance(c, str) and not _INDEX_COL.match(c) for c in index_cols):
            raise Fallback("a named pandas index")
    names = [n for n in schema.names if not _INDEX_COL.match(n)]
    if len(set(names)) != len(names):
        raise Fallback("repeated column names")

    def batches(size: int):
        try:
            yield from pf.iter_batches(batch_size=size, columns=names)
        except Exception as e:  # noqa: BLE001
            raise Fallback(f"not readable as Parquet ({e})") from None

    def missing_rows(batch) -> np.ndarray:
        m = np.ones(batch.num_rows, bool)
        for col in batch.columns:
            m &= pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
        return m

    first = next(batches(ROLE_ROWS), None)
    if first is None or first.num_rows == 0:
        raise Fallback("no data rows")
    head = first.to_pandas()
    for c in head.columns:
        if isinstance(head[c].dtype, pd.CategoricalDtype):
            head[c] = head[c].astype(object)
    head.index = pd.RangeIndex(1, len(head) + 1)
    head = head.loc[~missing_rows(first)]

    def chunks() -> Iterator[Chunk]:
        start = 1
        for b in batches(chunk_rows):
            keep = ~missing_rows(b)
            rows = np.arange(start, start + b.num_rows, dtype=np.int64)[keep]
            start += b.num_rows
            if not keep.all():
                b = b.filter(pa.array(keep))
            yield Chunk(rows, {n: b.column(i) for i, n in enumerate(b.schema.names)}, {})

    return head, chunks(), []


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
                block = out[g0:g0 + len(lens)]
                block[:] = flat.reshape(len(lens), expected)
            else:
                starts = np.concatenate([[0], np.cumsum(np.maximum(lens, 0))[:-1]])
                block = flat[starts[ok][:, None] + np.arange(expected)]
                out[g0 + ok] = block
            finite = np.isfinite(block).all(1)
            if not finite.all():
                self.problems.add(g0 + ok[~finite], self.order, f"vector '{self.name}' has NaN/inf values")
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
                a = parse_vector(values[i])
            except Problem as p:
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
                a = parse_vector(v)
            except Problem as p:
                self.problems.add(g0 + i, self.order, f"vector '{self.name}' {p.reason}")
                continue
            lens[i] = a.size
            pieces.append(_to_f32(a))
        return lens, (np.concatenate(pieces) if pieces else np.zeros(0, np.float32))


def _to_f32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.float32:
        return a
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, reported as NaN/inf
        return (a if a.dtype.kind == "f" else a.astype(np.float64)).astype(np.float32)


class _Builder:
    """Columns of a table, by role, gathered chunk by chunk; :meth:`run` gives the :class:`RowTable`."""

    def __init__(self, source: str, overrides: dict[str, str]):
        self.source = source
        self.overrides = overrides

    def run(self, head: pd.DataFrame, chunks: Iterator[Chunk], reader_errors: list) -> RowTable:
        cols = [str(c) for c in head.columns]
        for col in self.overrides:
            if col not in cols:
                raise IngestError("roles", f"unknown column {col!r}; valid columns: {', '.join(cols)}")
        if not len(head):
            raise Fallback("no data rows in the first rows")
        roles = detect_roles(head)
        roles.update({c: r for c, r in self.overrides.items() if c in roles})
        by_role = {r: [c for c in cols if roles.get(c) == r]
                   for r in ("image", "text", "vector", "numeric", "metadata")}
        if by_role["image"] or by_role["text"]:
            raise Fallback("image or text columns")
        if not (by_role["vector"] or by_role["numeric"]):
            raise Fallback("no usable columns")
        scalar = [c for c in by_role["vector"]
                  if pd.api.types.is_numeric_dtype(head[c]) and not pd.api.types.is_bool_dtype(head[c])]
        groups = vector_groups(scalar)
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
            raise Fallback("no data rows")
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
        return self._table(np.flatnonzero(good), rows, meta, vectors, features, errors)

    def _table(self, idx: np.ndarray, rows: np.ndarray, meta: pd.DataFrame, vectors: dict[str, np.ndarray],
               features: np.ndarray | None, errors: list) -> RowTable:
        """The :class:`RowTable` of the usable rows ``idx`` (positions in ``rows``), hashed into content ids."""
        every = len(idx) == len(rows)  # the common case: no copies
        out_vectors = {f"precomputed:{k}": v if every else np.ascontiguousarray(v[idx]) for k, v in vectors.items()}
        if features is not None:
            out_vectors["precomputed:numeric"] = features[idx]
        meta = _jsonable_frame(meta if every else meta.iloc[idx].reset_index(drop=True))
        keys = row_content_keys(meta, out_vectors)
        return RowTable(self.source, rows[idx], ids_of_keys(keys), meta, out_vectors, errors, keys)

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
                    if not is_missing(raw) and not (isinstance(raw, str) and not raw.strip()):
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


def _column(parts: list) -> pd.Series:
    """A metadata/numeric column from its chunks: CSV strings typed over the whole column (as the
    row-by-row reader does), Parquet chunks as pandas gives them."""
    if parts and isinstance(parts[0], CsvText):
        s = infer_csv_text(parts)
    elif parts and isinstance(parts[0], list):
        s = infer_strings([v for p in parts for v in p])
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
            out[c] = pd.Series([jsonable(v) for v in s.tolist()], dtype=object)
    return pd.DataFrame(out, index=meta.index)


__all__ = ["CHUNK_ROWS", "ROLE_ROWS", "STREAM_EXTS", "RowTable", "stream_table"]
