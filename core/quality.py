"""Measures of a joint space. This module starts with the modality gap (used by the Map page).

All functions take plain arrays: ``X`` (n, d) float32 vectors (rows are L2-normalised here) and
``modalities`` (n,) strings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def pair_positions(items: pd.DataFrame, ids: Sequence[str]) -> np.ndarray:
    """(p, 2) int positions into ``ids`` of (image, text) pairs, from the workspace's ``pair`` column.

    An image's ``pair`` names its caption; both must be among ``ids``. Each (image, caption) pair once.
    """
    pos = {str(k): i for i, k in enumerate(ids)}
    df = items[items["modality"] == "image"][["id", "pair"]].dropna()
    out = [(pos[a], pos[b]) for a, b in zip(df["id"].astype(str), df["pair"].astype(str)) if a in pos and b in pos]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def modality_gap(X: np.ndarray, modalities: Sequence[str], pairs: np.ndarray | None = None, *,
                 a: str = "image", b: str = "text", n_random: int = 20_000, seed: int = 0) -> dict:
    """How far apart two modalities sit in the space.

    Returns ``{"centroid_distance": ||mean(a) - mean(b)|| of unit rows, "centroid_cosine": cosine of
    the two centroids, "pair_cosine": mean cosine of true (a, b) pairs (None without pairs),
    "random_pair_cosine": mean cosine of random (a, b) pairs, "n_a", "n_b", "n_pairs"}``.
    A CLIP-style space typically shows a clear centroid distance and pair cosines well above random
    ones; the gap-corrected map removes the centroid offset before projecting.
    """
    Xu = _unit(X)
    mods = np.asarray(list(modalities)).astype(str)
    ia, ib = np.flatnonzero(mods == a), np.flatnonzero(mods == b)
    out = {"n_a": int(len(ia)), "n_b": int(len(ib)), "n_pairs": 0, "centroid_distance": None,
           "centroid_cosine": None, "pair_cosine": None, "random_pair_cosine": None, "a": a, "b": b}
    if not len(ia) or not len(ib):
        return out
    ca, cb = Xu[ia].mean(0), Xu[ib].mean(0)
    out["centroid_distance"] = float(np.linalg.norm(ca - cb))
    out["centroid_cosine"] = float(ca @ cb / max(np.linalg.norm(ca) * np.linalg.norm(cb), 1e-12))
    rng = np.random.default_rng(seed)
    ra = rng.choice(ia, size=min(n_random, len(ia) * len(ib)))
    rb = rng.choice(ib, size=len(ra))
    out["random_pair_cosine"] = float(np.mean(np.sum(Xu[ra] * Xu[rb], axis=1)))
    if pairs is not None and len(pairs):
        pairs = np.asarray(pairs, dtype=np.int64)
        ok = (mods[pairs[:, 0]] == a) & (mods[pairs[:, 1]] == b)
        pairs = pairs[ok]
        if len(pairs):
            out["n_pairs"] = int(len(pairs))
            out["pair_cosine"] = float(np.mean(np.sum(Xu[pairs[:, 0]] * Xu[pairs[:, 1]], axis=1)))
    return out
