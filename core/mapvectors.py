"""A map's vectors read in chunks: :class:`MapVectors` (the vectors of a map's points as a row source, read
from the workspace's store :data:`CHUNK` rows at a time, mean-centred per modality on a gap-corrected map),
and what is computed over them a chunk at a time: :func:`group_means` and :func:`nearest_to_means`. Used
by the named clusters of core.labels and by the map view's density (core.mapview).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .encoders import unit_rows
from .projection import map_vectors

CHUNK = 65_536  # mapped items whose vectors are read (and assigned, summed, scored) at a time
TOP_IDS = 5  # items closest to a cluster's mean (nearest_to_means)


class Rows(Protocol):
    """Rows read on demand: ``len(rows)`` and ``rows[positions]`` -> (len(positions), d) float32 (an (n, d)
    array is one; :class:`MapVectors` reads a map's vectors from the store)."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: np.ndarray) -> np.ndarray: ...


def unit_rows_of(X: Rows, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (an int array) of an array or row source ``X``, scaled to unit length: (len(rows), d)
    float32. ``X[rows]`` is a copy of our own (fancy indexing, or a fresh read), so it is scaled in place."""
    return unit_in_place(np.asarray(X[rows], dtype=np.float32))


def unit_in_place(A: np.ndarray) -> np.ndarray:
    """:func:`core.encoders.unit_rows` of a float32 array computed in the array itself (no second copy of a
    chunk); the same values."""
    A /= np.maximum(np.linalg.norm(A, axis=-1, keepdims=True), 1e-12)
    return A


class MapVectors:
    """The vectors of a map's points as a row source, read from the workspace's store in chunks.

    ``ws``, ``model``: where the vectors are; ``ids`` (n,) the map's item ids; ``modality`` (n,) the
    points' modalities, given for a gap-corrected map. ``vectors[rows]`` -> (len(rows), d) float32 are
    the rows that are clustered: the unit vectors, on a gap-corrected map with every modality's mean
    (over the map's points of that modality) subtracted and scaled to unit length again, as the map is.
    :meth:`unit` gives the unit vectors themselves and :meth:`chunks` walks them all. Every read asks the
    store for at most :data:`CHUNK` rows; ValueError (:func:`core.projection.map_vectors`) when an item
    has lost its vector."""

    def __init__(self, ws, model: str, ids: np.ndarray, *, modality: np.ndarray | None = None):
        self.ws, self.model, self.ids = ws, model, np.asarray(ids)
        self._codes = None
        if modality is not None:
            uniq, codes = np.unique(np.asarray(modality).astype(str), return_inverse=True)
            self._codes, self._n_modalities = codes.reshape(-1).astype(np.int64), len(uniq)
        self._shift = None  # (modalities, d) float32 mean of each modality's unit vectors, read on first use

    def __len__(self) -> int:
        return len(self.ids)

    def unit(self, rows: np.ndarray) -> np.ndarray:
        """The unit vectors of the points at ``rows`` (m,): (m, d) float32, read :data:`CHUNK` at a time."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        parts = [unit_in_place(map_vectors(self.ws, self.model, ids=self.ids[rows[s:s + CHUNK]]))
                 for s in range(0, max(len(rows), 1), CHUNK)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def chunks(self):
        """Every point's unit vector, :data:`CHUNK` points at a time: yields ``(rows (m,) int, (m, d))``."""
        for start in range(0, len(self.ids), CHUNK):
            rows = np.arange(start, min(len(self.ids), start + CHUNK))
            yield rows, self.unit(rows)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        X = self.unit(rows)
        if self._codes is None:
            return X
        if self._shift is None:
            self._shift = group_means(self, self._codes, self._n_modalities)[0]
        codes = self._codes[rows]
        for m in range(self._n_modalities):
            X[codes == m] -= self._shift[m]
        return unit_in_place(X)


def group_means(vectors: MapVectors, group: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean vectors of ``k`` groups of the points of ``vectors``, read chunk by chunk: ``(mean (k, d),
    unit_mean (k, d))`` float32. ``group`` (n,) ints in 0..k-1. ``mean`` averages the unit vectors;
    ``unit_mean`` the same rows scaled to unit length once more (what :func:`core.vocabulary.label_clusters`
    averages; equal up to rounding). A group without points has zero means."""
    sums = sums2 = None
    for rows, X in vectors.chunks():
        if sums is None:
            sums, sums2 = np.zeros((k, X.shape[1]), np.float32), np.zeros((k, X.shape[1]), np.float32)
        g = group[rows]
        present = np.unique(g)
        for c in present:
            sums[c] += X[g == c].sum(0)
        unit_in_place(X)  # unit_rows(X) once more, as label_clusters scales its rows
        for c in present:
            sums2[c] += X[g == c].sum(0)
    if sums is None:
        return np.zeros((k, 0), np.float32), np.zeros((k, 0), np.float32)
    counts = np.maximum(np.bincount(group, minlength=k)[:k], 1)[:, None]
    return (sums / counts).astype(np.float32), (sums2 / counts).astype(np.float32)


def nearest_to_means(vectors: MapVectors, cluster: np.ndarray, mean: np.ndarray,
                     n_top: int = TOP_IDS) -> list[np.ndarray]:
    """The points of each cluster closest (cosine) to the cluster's ``mean`` (k, d), read chunk by chunk:
    one (≤ n_top,) int array of rows per cluster, closest first, ties by row."""
    centre = unit_rows(mean)
    best_s = [np.zeros(0, np.float32) for _ in range(len(mean))]
    best_r = [np.zeros(0, np.int64) for _ in range(len(mean))]
    for rows, X in vectors.chunks():
        g = cluster[rows]
        for c in np.unique(g):
            at = np.flatnonzero(g == c)
            s = np.concatenate([best_s[c], X[at] @ centre[c]])  # as one product over the cluster's rows would
            r = np.concatenate([best_r[c], rows[at]])
            keep = np.argsort(-s, kind="stable")[:n_top]  # earlier rows first among ties, as one sort would
            best_s[c], best_r[c] = s[keep], r[keep]
    return best_r
