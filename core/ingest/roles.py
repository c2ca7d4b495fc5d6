"""Column roles: which column of a table holds the image, the text, vectors, numeric features or
metadata (:func:`detect_roles`), checking user overrides, and :func:`inspect_table` (a preview
with the detected roles)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .common import IMAGE_EXTS, IngestError, Problem, ext_of, is_missing
from .images import inline_image_bytes
from .tables import read_table

ROLES = ("text", "image", "vector", "numeric", "metadata", "ignore")


_TEXT_COLUMN_NAMES = ("caption", "title", "text", "description", "sentence", "prompt")
_IMAGE_COLUMN_NAMES = {
    "filepath", "image", "image_path", "file", "path", "filename",
    "file_path", "file_name", "img", "img_path", "image_file", "image_filename", "image_name",
}
_ID_NAMES = {"id", "idx", "index", "uid", "uuid", "key", "pk"}
RUNNING_MIN = 20  # a numeric column of at least this many consecutive distinct integers numbers the rows


def _norm_name(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", str(name).strip().lower())


def inspect_table(
    path: str | os.PathLike, *, n_preview: int = 20
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Return the first ``n_preview`` rows and the detected role of every column.

    Raises:
        IngestError: as :func:`read_table`.
    """
    df = read_table(path)
    return df.head(n_preview), detect_roles(df)


def parse_vector(v: Any) -> np.ndarray:
    """Parse one vector cell (list/array, JSON list string, or separated numbers) to float64 (d,)."""
    if is_missing(v):
        raise Problem("is missing")
    if isinstance(v, str):
        s = v.strip()
        if not s:
            raise Problem("is missing")
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
                raise Problem("is not a list of numbers") from None
        v = obj
    if isinstance(v, (list, tuple, np.ndarray)):
        seq = v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v
        if isinstance(seq, (list, tuple)):
            seq = [np.nan if x is None else x for x in seq]
            if any(isinstance(x, (str, bytes, bool)) for x in seq):
                raise Problem("is not a list of numbers")
        try:
            arr = np.asarray(seq, dtype=np.float64)
        except (TypeError, ValueError):
            raise Problem("is not a flat list of numbers") from None
    elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        arr = np.array([float(v)])
    else:
        raise Problem("is not a list of numbers")
    if arr.ndim != 1:
        raise Problem("is not a flat list of numbers")
    if arr.size == 0:
        raise Problem("is empty")
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
        return parse_vector(v).size >= 2
    except Problem:
        return False


def _is_image_ref(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    s = v.strip().split("?", 1)[0].split("#", 1)[0]
    return ext_of(s) in IMAGE_EXTS


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _column_kind(s: pd.Series) -> str:
    """One of: empty, bool, datetime, numeric, vector, image_data, string, other."""
    nonnull = s.dropna()  # (object columns: None, NaN, NaT and NA, as is_missing judges one cell)
    if nonnull.empty:
        return "empty"
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s):
        return "numeric"
    sample = nonnull.iloc[:200].tolist()
    if all(inline_image_bytes(v) is not None for v in sample):
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


def vector_groups(columns: Iterable[str]) -> dict[str, list[str]]:
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
    vals = [str(v).strip() for v in s.iloc[:5000].tolist() if not is_missing(v)]
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
    - ``numeric``: other numeric columns (ids, running numbers and low-cardinality integers are ``metadata``);
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
            role = ("metadata" if _is_id_name(c) or _low_cardinality(series[c]) or _running_number(series[c])
                    else "numeric")
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


def _running_number(s: pd.Series) -> bool:
    """Whether a numeric column numbers the rows (an index such as ``image_no``: at least
    :data:`RUNNING_MIN` values, none missing, distinct consecutive integers in any order): a feature that
    would make a one-number "embedding" of the row order."""
    if len(s) < RUNNING_MIN or s.isna().any() or pd.api.types.is_bool_dtype(s):
        return False
    vals = pd.to_numeric(s, errors="coerce")
    if vals.isna().any() or not np.all(np.isfinite(vals)) or not np.all(np.equal(np.mod(vals, 1), 0)):
        return False
    return bool(vals.is_unique and vals.max() - vals.min() + 1 == len(vals))


def check_roles(roles: Mapping[str, str] | None) -> dict[str, str]:
    """``{column: role}`` overrides checked: raises IngestError for a non-mapping or an unknown role."""
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
