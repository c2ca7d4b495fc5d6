"""Content ids of table rows that become bare "row" items (vectors and numeric features, no image or text).

A row's id is a 64-bit hash (16 hex digits) of its metadata (every metadata and numeric column, by name,
each value typed) and its vectors (by name and length; float32 rounded to 6 decimals). It is computed
with numpy over whole columns: 64-bit words (integers and floats by value, each distinct text by the
first 8 bytes of its SHA-256) chained through the splitmix64 mixer, so a million rows take a fraction of
a second. The same row gives the same id read one at a time (:func:`row_content_id`, scanned candidates)
or a million at a time (:func:`row_content_ids`, streamed tables): the first is the second on a one-row
frame. The number 3 and the float 3.0 are the same value (a column of integers turns into floats when
one value is missing); the text "3" is not.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_INT_SAFE = 2.0**53


def _sha_word(data: bytes) -> np.uint64:
    return np.frombuffer(hashlib.sha256(data).digest()[:8], dtype="<u8")[0]


_TAG = {k: _sha_word(f"jointscope row value {k}".encode()) for k in ("none", "int", "float", "true", "false")}
_SEED = _sha_word(b"jointscope row id 1")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _int_words(v: np.ndarray) -> np.ndarray:
    return _mix(np.asarray(v, np.int64).view(np.uint64) ^ _TAG["int"])


def _float_words(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        integral = finite & (np.floor(x) == x) & (np.abs(x) < _INT_SAFE)
    out = _mix(x.view(np.uint64) ^ _TAG["float"])
    out[integral] = _int_words(x[integral].astype(np.int64))
    out[~finite] = _TAG["none"]  # NaN (a missing value) and inf: None, as the metadata keeps them
    return out


def _value_word(v: Any) -> np.uint64:
    """The word of one JSON-able metadata value (None, bool, int, float, str)."""
    if v is None:
        return _TAG["none"]
    if isinstance(v, (bool, np.bool_)):
        return _TAG["true"] if v else _TAG["false"]
    if isinstance(v, (int, np.integer)):
        if -(2**63) <= int(v) < 2**63:
            return _int_words(np.array([int(v)]))[0]
        return _sha_word(f"i{int(v)}".encode())
    if isinstance(v, (float, np.floating)):
        return _float_words(np.array([float(v)]))[0]
    return _sha_word(b"s" + str(v).encode("utf-8"))


def _na(v: Any) -> bool:
    if v is None or isinstance(v, str):
        return v is None
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _column_words(s: pd.Series) -> np.ndarray:
    """(n,) uint64: the word of every value of one metadata column."""
    dt = s.dtype
    plain = not isinstance(dt, pd.api.extensions.ExtensionDtype)
    if pd.api.types.is_bool_dtype(dt) and plain:
        return np.where(s.to_numpy(dtype=bool), _TAG["true"], _TAG["false"]).astype(np.uint64)
    if pd.api.types.is_integer_dtype(dt) and plain:
        if pd.api.types.is_unsigned_integer_dtype(dt) and len(s) and int(s.max()) >= 2**63:
            return np.array([_value_word(int(v)) for v in s.tolist()], dtype=np.uint64)
        return _int_words(s.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(dt) and plain:
        return _float_words(s.to_numpy(dtype=np.float64))
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):  # texts and missing values
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        words = np.array([_value_word(str(u)) for u in uniques] + [_TAG["none"]], dtype=np.uint64)
        return words[codes]  # code -1 (missing): the last word
    return np.array([_value_word(None if _na(v) else v) for v in s.tolist()], dtype=np.uint64)


def _chain(h: np.ndarray, words) -> np.ndarray:
    return _mix(h * _GOLDEN + words)


def row_content_keys(meta: pd.DataFrame, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 64-bit hashes (n,) uint64 behind :func:`row_content_ids` (for deduplicating rows without strings)."""
    n = len(meta)
    h = np.full(n, _SEED, dtype=np.uint64)
    if n == 0:
        return h
    for c in sorted(meta.columns, key=str):
        h = _chain(h, _sha_word(b"c" + str(c).encode("utf-8")))
        h = _chain(h, _column_words(meta[c]))
    for name in sorted(vectors):
        X = np.asarray(vectors[name], dtype=np.float32).reshape(n, -1)
        h = _chain(h, _sha_word(b"v" + name.encode("utf-8")))
        h = _chain(h, np.uint64(X.shape[1]))
        R = X.round(6)  # a new float32 array: changed in place below (no further copies of n x d floats)
        np.add(R, np.float32(0.0), out=R)  # -0.0 and 0.0 are the same value
        R = R.astype("<f4", copy=False)
        if R.shape[1] % 2:
            R = np.hstack([R, np.zeros((n, 1), "<f4")])
        W = np.ascontiguousarray(R).view("<u8")  # (n, ceil(d / 2)) words of two floats
        for j in range(W.shape[1]):
            h = _chain(h, W[:, j])
    return h


def ids_of_keys(keys: np.ndarray) -> np.ndarray:
    """Content ids (n,) str (16 hex digits) of the hashes of :func:`row_content_keys`."""
    keys = np.asarray(keys, dtype=np.uint64)
    if not len(keys):
        return np.zeros(0, dtype="U16")
    return np.frombuffer(keys.astype(">u8").tobytes().hex().encode("ascii"), dtype="S16").astype("U16")


def row_content_ids(meta: pd.DataFrame, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Content ids (n,) str of n rows: ``meta`` (n rows, one column per metadata/numeric column, JSON-able
    values) and ``vectors`` ``{name: (n, d) array}``."""
    return ids_of_keys(row_content_keys(meta, vectors))


def row_content_id(meta: Mapping[str, Any], vectors: Mapping[str, np.ndarray]) -> str:
    """The content id of one row: ``meta`` ``{column: JSON-able value}``, ``vectors`` ``{name: (d,) array}``."""
    frame = pd.DataFrame({k: pd.Series([v], dtype=object if v is None else None) for k, v in meta.items()},
                         index=[0])
    vecs = {k: np.asarray(v, dtype=np.float32).reshape(1, -1) for k, v in vectors.items()}
    return str(row_content_ids(frame, vecs)[0])
