"""Candidate items (:class:`Candidate`, :class:`ScanResult`) and building them: a table's rows (their
images, texts, vectors and numeric features; bad rows reported and skipped whole) and lines of text."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .common import Limits, Problem, is_missing
from .images import ImageCache, ImageResolver, check_image, inline_image_bytes
from .roles import ROLES, parse_vector, vector_groups
from .sources import Entry


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


def jsonable(v: Any) -> Any:
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
    if is_missing(v):
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


@dataclass
class TableResult:
    """The candidates and errors of one table, and the ``id()`` of the image entries its rows used."""

    candidates: list[Candidate]
    errors: list[tuple[str, str]]
    used_images: set[int]


class _RowProblems:
    """Row errors found while reading a table's vector and numeric columns; such a row is skipped whole."""

    def __init__(self, source: str, row_numbers: list[int]) -> None:
        self.source = source
        self.row_numbers = row_numbers
        self.bad = np.zeros(len(row_numbers), dtype=bool)
        self.errors: dict[int, list[tuple[str, str]]] = defaultdict(list)

    def fail(self, i: int, reason: str) -> None:
        self.errors[i].append((f"{self.source} row {self.row_numbers[i]}", reason))
        self.bad[i] = True


def table_candidates(
    df: pd.DataFrame,
    table: Entry,
    roles: dict[str, str],
    resolver: ImageResolver,
    images: ImageCache,
    limits: Limits,
) -> TableResult:
    """The candidates of a table's rows (images, texts, a bare "row" for vectors only) and the row errors."""
    src = table.source
    cols = [str(c) for c in df.columns]
    by_role = {role: [c for c in cols if roles.get(c) == role] for role in ROLES}
    if not (by_role["image"] or by_role["text"] or by_role["vector"] or by_role["numeric"]):
        return TableResult([], [(
            src,
            "no usable columns: no column has the role text, image, vector or numeric "
            f"(columns: {', '.join(cols) or 'none'}); set a column's role",
        )], set())

    row_numbers = [int(i) for i in df.index]
    problems = _RowProblems(src, row_numbers)
    vectors = _table_vectors(df, by_role["vector"], problems)
    features = _numeric_features(df, by_role["numeric"], problems)
    rows = _Rows(
        table, resolver, images, limits,
        image={c: df[c].tolist() for c in by_role["image"]},
        text={c: df[c].tolist() for c in by_role["text"]},
        meta={c: df[c].tolist() for c in by_role["metadata"]},
        numeric={c: df[c].tolist() for c in by_role["numeric"]},
        vectors=vectors,
        features=features,
    )
    candidates: list[Candidate] = []
    for i, rowno in enumerate(row_numbers):
        if problems.bad[i]:
            rows.skip(i)
            rows.errors.extend(problems.errors[i])
            continue
        candidates.extend(rows.candidates(i, f"{src} row {rowno}", f"{src}#{rowno}"))
    return TableResult(candidates, rows.errors, rows.used)


def _table_vectors(
    df: pd.DataFrame, vector_cols: list[str], problems: _RowProblems
) -> dict[str, list[np.ndarray | None]]:
    """Each row's vector per vector: scalar numeric columns grouped by ``<prefix>_<i>``, others parsed per cell."""
    scalar = [c for c in vector_cols if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    vectors: dict[str, list[np.ndarray | None]] = {}
    for name, members in vector_groups(scalar).items():
        mat = (
            df[members].apply(pd.to_numeric, errors="coerce")
            .to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
        )
        finite = np.isfinite(mat).all(axis=1)
        for i in np.flatnonzero(~finite):
            problems.fail(int(i), f"vector '{name}' has NaN/inf values")
        vectors[name] = [mat[i] if finite[i] else None for i in range(len(mat))]
    for c in (c for c in vector_cols if c not in scalar):
        vectors[c] = _cell_vectors(df[c].tolist(), c, problems)
    return vectors


def _cell_vectors(values: list[Any], c: str, problems: _RowProblems) -> list[np.ndarray | None]:
    """One column of vector cells as float32 vectors; the most common length is the expected one."""
    parsed: list[np.ndarray | None] = []
    for i, v in enumerate(values):
        try:
            parsed.append(parse_vector(v))
        except Problem as p:
            parsed.append(None)
            problems.fail(i, f"vector '{c}' {p.reason}")
    lengths = Counter(a.size for a in parsed if a is not None)
    expected = lengths.most_common(1)[0][0] if lengths else 0
    out: list[np.ndarray | None] = []
    for i, a in enumerate(parsed):
        if a is None:
            out.append(None)
            continue
        if a.size != expected:
            problems.fail(i, f"vector '{c}' has {a.size} values, expected {expected}")
            out.append(None)
            continue
        with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
            a32 = a.astype(np.float32)
        if not np.isfinite(a32).all():
            problems.fail(i, f"vector '{c}' has NaN/inf values")
            out.append(None)
            continue
        out.append(a32)
    return out


def _numeric_features(df: pd.DataFrame, numeric_cols: list[str], problems: _RowProblems) -> np.ndarray | None:
    """The numeric columns standardised over the usable rows, (n, len(numeric_cols)) float32, or None.

    Missing values are imputed with the column mean; non-numbers and infinities make the row unusable.
    """
    n = len(problems.row_numbers)
    num_mat = np.zeros((n, len(numeric_cols)), dtype=np.float64)
    for j, c in enumerate(numeric_cols):
        coerced = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        for i, (raw, x) in enumerate(zip(df[c].tolist(), coerced)):
            if np.isnan(x) and not is_missing(raw) and not (isinstance(raw, str) and not raw.strip()):
                problems.fail(i, f"numeric column '{c}' has a non-numeric value {str(raw)[:40]!r}")
            elif np.isinf(x):
                problems.fail(i, f"numeric column '{c}' has an infinite value")
        num_mat[:, j] = coerced
    if not numeric_cols:
        return None
    valid = num_mat[~problems.bad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(valid, axis=0) if len(valid) else np.zeros(len(numeric_cols))
        std = np.nanstd(valid, axis=0) if len(valid) else np.ones(len(numeric_cols))
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    z = (num_mat - mean) / std
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)


@dataclass
class _Rows:
    """A table's columns by role (``{column: values}``) and what turns one of its rows into candidates."""

    table: Entry
    resolver: ImageResolver
    images: ImageCache
    limits: Limits
    image: dict[str, list[Any]]
    text: dict[str, list[Any]]
    meta: dict[str, list[Any]]
    numeric: dict[str, list[Any]]
    vectors: dict[str, list[np.ndarray | None]]
    features: np.ndarray | None
    errors: list[tuple[str, str]] = field(default_factory=list)
    used: set[int] = field(default_factory=set)

    def skip(self, i: int) -> None:
        """A row skipped whole: its images are used up too (they must not reappear as loose images)."""
        for values in self.image.values():
            v = values[i]
            if isinstance(v, str) and v.strip():
                with contextlib.suppress(Problem):
                    self.used.add(id(self.resolver.resolve(v, self.table)))

    def candidates(self, i: int, rsrc: str, pair_key: str) -> list[Candidate]:
        """Row ``i``'s image and text candidates (paired), or a bare "row" carrying only vectors."""
        meta = {c: jsonable(values[i]) for c, values in self.meta.items()}
        meta.update({c: jsonable(values[i]) for c, values in self.numeric.items()})
        row_cands, referenced = self._images(i, rsrc, meta)
        texts, referenced_text = self._texts(i, rsrc, meta)
        row_cands += texts
        referenced = referenced or referenced_text
        row_vectors = {f"precomputed:{name}": vals[i] for name, vals in self.vectors.items() if vals[i] is not None}
        has_numeric = self.features is not None and any(not is_missing(v[i]) for v in self.numeric.values())
        if self.features is not None and (has_numeric or row_cands or row_vectors):
            row_vectors["precomputed:numeric"] = self.features[i]
        if not row_cands and row_vectors and not referenced:
            # A row whose text or image failed is reported and skipped whole; it does not come
            # back as a bare "row" item carrying the failed item's vectors.
            row_cands.append(Candidate("row", rsrc, meta=dict(meta)))
        if not row_cands:
            if not referenced:
                self.errors.append((rsrc, "row has no image, text, vector or numeric value"))
            return []
        row_cands[0].vectors.update(row_vectors)
        if len(row_cands) > 1:
            for cand in row_cands:
                cand.pair_key = pair_key
        return row_cands

    def _images(self, i: int, rsrc: str, meta: dict) -> tuple[list[Candidate], bool]:
        """The row's image candidates (inline bytes or references) and whether any cell named an image."""
        out: list[Candidate] = []
        referenced = False
        for c, values in self.image.items():
            v = values[i]
            inline = inline_image_bytes(v)
            if inline is not None:
                referenced = True
                try:
                    ext = check_image(inline, self.limits)
                except Problem as p:
                    self.errors.append((rsrc, f"image in column '{c}' is unusable: {p.reason}"))
                    continue
                out.append(Candidate("image", rsrc, image_bytes=inline, image_ext=ext, meta=dict(meta)))
                continue
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                v = v["path"]
            if is_missing(v) or not str(v).strip():
                continue
            ref = _cell_text(v).strip()
            referenced = True
            try:
                entry = self.resolver.resolve(ref, self.table)
            except Problem as p:
                self.errors.append((rsrc, p.reason))
                continue
            self.used.add(id(entry))
            try:
                data, ext = self.images.get(entry)
            except Problem as p:
                self.errors.append((rsrc, f"image '{ref}' ({entry.source}) is unusable: {p.reason}"))
                continue
            out.append(Candidate("image", entry.source, image_bytes=data, image_ext=ext, meta=dict(meta),
                                 image_reader=entry.reader if data is None else None))
        return out, referenced

    def _texts(self, i: int, rsrc: str, meta: dict) -> tuple[list[Candidate], bool]:
        """The row's text candidates and whether any cell held a text."""
        out: list[Candidate] = []
        referenced = False
        for c, values in self.text.items():
            v = values[i]
            if is_missing(v) or isinstance(v, (bytes, bytearray)):
                continue
            text = _cell_text(v).strip()
            if not text:
                continue
            referenced = True
            if len(text) > self.limits.max_text_chars:
                self.errors.append((
                    rsrc,
                    f"text in column '{c}' is {len(text):,} characters, over the {self.limits.max_text_chars:,} limit",
                ))
                continue
            out.append(Candidate("text", rsrc, text=text, meta=dict(meta)))
        return out, referenced


def text_candidates(
    lines: Iterable[tuple[str, str]], limits: Limits, errors: list[tuple[str, str]]
) -> list[Candidate]:
    """Text candidates of ``(source, line)`` pairs: blank lines skipped, over-long ones appended to ``errors``."""
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
