"""Named clusters on a map: clusters of the mapped items found in the embedding space, named with the
model's own text tower (zero-shot) or, in spaces without one, with the words that set each cluster's
captions apart (c-TF-IDF).

* Clusters: seeded k-means in cosine geometry (rows scaled to unit length) on the vectors of the map's
  points, not on the 2-D coordinates. ``coarse``: k = clip(round(sqrt(n / 2)), 2, 12); ``fine``: each
  coarse cluster split again into up to 3 (clip(round(sqrt(n_c / 2)), 1, 3)), so fine clusters nest in
  coarse ones. Above :data:`FIT_SAMPLE` points k-means is fitted on a seeded sample and every point goes
  to its nearest centre. On a gap-corrected map every modality is mean-centred first, as the map is.
* Names: a model that encodes texts (:func:`core.encoders.modalities_of`) ranks its vocabulary against
  each cluster's mean vector, mean-centred over the clusters (:func:`core.vocabulary.label_clusters`,
  ``method="zero-shot"``). Otherwise the items' captions (a text's own text, an image's paired caption,
  else its text metadata) are counted per cluster with scikit-learn's ``CountVectorizer`` and weighted by
  class-based TF-IDF (``method="c-tf-idf"``). Clusters without any text are "cluster N" (``method="none"``).
* Cached beside the map: ``derived/labels/<model>/<map params>-<level>-<words>.json``, holding a key of
  the map's ids and coordinates, the items' and vectors' versions; any change recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .encoders import modalities_of, unit_rows
from .projection import map_vectors
from .vocabulary import default_vocabulary, label_clusters, naming_vocabulary, vocabulary_vectors, words_of

LEVELS = ("coarse", "fine")
FIT_SAMPLE = 20_000  # k-means is fitted on at most this many points; the rest go to their nearest centre
TOP_IDS = 5
FINE_SPLIT = 3
SECOND_WORD = 0.75  # c-TF-IDF: a second word joins the name when its weight is at least this share of the first's
_FORMAT = 1


def coarse_k(n: int) -> int:
    """Number of coarse clusters for ``n`` points: round(sqrt(n / 2)) clipped to [2, 12] (and to n)."""
    return max(1, min(n, min(12, max(2, round(math.sqrt(n / 2))))))


def kmeans(X: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means of the unit rows of ``X`` (n, d): ``(labels (n,) int, centres (k, d))``.

    Up to :data:`FIT_SAMPLE` rows scikit-learn's ``KMeans`` (``n_init=3``) on all of them; above, on a
    seeded sample of that size, and every row is assigned to its nearest centre."""
    from sklearn.cluster import KMeans

    X = unit_rows(np.asarray(X, dtype=np.float32))
    k = max(1, min(int(k), len(X)))
    fit = X if len(X) <= FIT_SAMPLE else X[np.sort(np.random.default_rng(seed).choice(len(X), FIT_SAMPLE,
                                                                                      replace=False))]
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(fit)
    C = km.cluster_centers_.astype(np.float32)
    if fit is X:
        return km.labels_.astype(np.int64), C
    return np.argmax(X @ C.T - 0.5 * (C * C).sum(1), axis=1).astype(np.int64), C


def clusters(X: np.ndarray, level: str = "coarse", *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels of the rows of ``X`` at ``level``: ``(cluster (n,) int, parent (n,) int)``; clusters
    are numbered by size (0 the largest); ``parent`` is the coarse cluster (equal to ``cluster`` when
    coarse)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    coarse = _by_size(kmeans(X, coarse_k(len(X)), seed=seed)[0])
    if level == "coarse":
        return coarse, coarse
    fine = np.zeros(len(X), np.int64)
    for c in range(coarse.max() + 1):
        rows = np.flatnonzero(coarse == c)
        k = max(1, min(FINE_SPLIT, round(math.sqrt(len(rows) / 2))))
        fine[rows] = c * FINE_SPLIT + (kmeans(X[rows], k, seed=seed)[0] if k > 1 else 0)
    fine = _by_size(fine, coarse)
    return fine, coarse


def _by_size(labels: np.ndarray, parent: np.ndarray | None = None) -> np.ndarray:
    """Renumber ``labels`` 0.. by (parent,) size descending, ties by first row: deterministic ids."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    par = np.zeros(len(uniq), np.int64) if parent is None else parent[first]
    order = np.lexsort((first, -counts, par))
    new = np.empty(len(uniq), np.int64)
    new[order] = np.arange(len(uniq))
    return new[np.searchsorted(uniq, labels)]


def _tokens(text: str) -> list[str]:
    return [w for w in words_of(text) if len(w) > 1]


def ctfidf(docs: Sequence[str], *, vocabulary: Sequence[str] | None = None,
           k: int = 3) -> list[list[tuple[str, float]]]:
    """Class-based TF-IDF: ``docs`` holds one document per class (all its texts joined); the ``k`` words
    with the largest weight in each, ``[(word, weight), ...]`` (empty when a class has no word).

    Counts come from scikit-learn's ``CountVectorizer`` (words of any script, English stop words out, or
    only ``vocabulary``); weight = (count / words of the class) × log(1 + A / count over all classes),
    A the mean number of words per class."""
    from sklearn.feature_extraction.text import CountVectorizer

    vocab = sorted({w.lower() for w in vocabulary}) if vocabulary is not None else None
    cv = CountVectorizer(tokenizer=_tokens, token_pattern=None, lowercase=False, vocabulary=vocab,
                         stop_words=None if vocab else "english")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*stop_words may be inconsistent.*")
            counts = cv.fit_transform(docs).astype(np.float64).toarray()
    except ValueError:  # no word at all (empty vocabulary)
        return [[] for _ in docs]
    words = cv.get_feature_names_out()
    per_class = counts.sum(1, keepdims=True)
    tf = np.divide(counts, per_class, out=np.zeros_like(counts), where=per_class > 0)
    total = counts.sum(0)
    idf = np.log1p(np.divide(counts.sum() / len(docs), total, out=np.zeros_like(total), where=total > 0))
    W = tf * idf
    out = []
    for w in W:
        top = [j for j in np.lexsort((words, -w))[:k] if w[j] > 0]
        out.append([(str(words[j]), float(w[j])) for j in top])
    return out


def _texts(ws, ids: np.ndarray) -> list[str]:
    """Text standing for each item: its caption (a text's own, an image's paired one), else the values
    of its text metadata columns; "" when it has none."""
    from .export import captions, item_rows, user_columns

    rows = item_rows(ws, ids)
    caps = captions(ws.items, rows)
    meta = [c for c in user_columns(rows) if pd.api.types.is_string_dtype(rows[c])]
    bare = caps.isna().to_numpy()
    if meta and bare.any():
        caps = caps.copy()
        caps[bare] = [" ".join(v for v in r if isinstance(v, str))
                      for r in rows.loc[bare, meta].itertuples(index=False)]
    return ["" if t is None else str(t) for t in caps.tolist()]


def _names_zero_shot(X, cluster, model, words, only_words) -> dict[int, tuple]:
    vocab = naming_vocabulary(model, words or (), only=only_words) or default_vocabulary(model)
    ranked = label_clusters(X, cluster, vocabulary_vectors(model, vocab), vocab, k=min(2, len(vocab)))
    return {int(c): ("zero-shot", r[0][0], r[0][1], *(r[1] if len(r) > 1 else (None, None)))
            for c, r in ranked.items()}


def _names_ctfidf(ws, ids, cluster, words, only_words) -> dict[int, tuple]:
    if only_words:
        naming_vocabulary(None, words or (), only=True)  # the same error as zero-shot without words
    texts = np.array(_texts(ws, ids), dtype=object)
    docs = [" \n".join(texts[cluster == c]) for c in range(int(cluster.max()) + 1)]
    ranked = ctfidf(docs, vocabulary=words if only_words else None)
    out = {}
    for c, r in enumerate(ranked):
        if not r:
            out[c] = ("none", f"cluster {c + 1}", None, None, None)
            continue
        name = [r[0][0]] + ([r[1][0]] if len(r) > 1 and r[1][1] >= SECOND_WORD * r[0][1] else [])
        rest = r[len(name)] if len(r) > len(name) else (None, None)
        out[c] = ("c-tf-idf", ", ".join(name), r[0][1], *rest)
    return out


def _round(v):
    return None if v is None else round(float(v), 4)


def _compute(ws, model: str, res, level: str, words, only_words) -> list[dict]:
    ids = np.asarray(res.ids).astype(str)
    X = unit_rows(map_vectors(ws, model, ids=ids))
    Z = X
    if res.gap_corrected:  # cluster what the map shows: every modality mean-centred
        mods = np.asarray(res.modality).astype(str)
        Z = X.copy()
        for m in np.unique(mods):
            Z[mods == m] -= X[mods == m].mean(0)
        Z = unit_rows(Z)
    cluster, parent = clusters(Z, level)
    if "text" in modalities_of(model):
        names = _names_zero_shot(X, cluster, model, words, only_words)
    else:
        names = _names_ctfidf(ws, ids, cluster, words, only_words)
    coords = np.asarray(res.coords, dtype=np.float32)
    out = []
    for c in range(int(cluster.max()) + 1):
        rows = np.flatnonzero(cluster == c)
        mean = unit_rows(X[rows].mean(0))
        top = rows[np.argsort(-(X[rows] @ mean), kind="stable")[:TOP_IDS]]
        centre = np.median(coords[rows], axis=0)
        method, name, score, runner, runner_score = names[c]
        d = {"cluster": c, "level": level, "name": name, "score": _round(score), "runner_up": runner,
             "runner_up_score": _round(runner_score), "method": method, "n": len(rows),
             "x": float(centre[0]), "y": float(centre[1])}
        if coords.shape[1] > 2:
            d["z"] = float(centre[2])
        d.update(parent=int(parent[rows[0]]), ids=ids[rows].tolist(), top_ids=ids[top].tolist())
        out.append(d)
    return out


def _cache_key(ws, model: str, res, level: str, words, only_words) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(res.ids).astype(str).astype("U").tobytes())
    h.update(np.ascontiguousarray(res.coords, dtype=np.float32).tobytes())
    h.update(json.dumps([_FORMAT, level, list(words or ()), bool(only_words), list(ws.items_version()),
                         list(ws.vectors_version(model) or ())], default=str).encode())
    return h.hexdigest()


def map_labels(ws, model: str, res, *, level: str = "coarse", words: Sequence[str] | None = None,
               only_words: bool = False, use_cache: bool = True) -> list[dict]:
    """Named clusters of map ``res`` (a :class:`core.projection.MapResult` of ``model`` in ``ws``).

    ``level``: "coarse" (2–12 clusters) or "fine" (each coarse cluster split into up to 3). ``words``: extra
    naming words (zero-shot: added to the model's vocabulary; ``only_words``: only them; c-TF-IDF: with
    ``only_words`` the only words counted, else ignored). Returns one dict per cluster, largest first:
    ``cluster`` (0..), ``level``, ``name``, ``score``, ``runner_up``, ``runner_up_score``, ``method``
    ("zero-shot", "c-tf-idf" or "none"), ``n``, ``x``, ``y`` (``z`` on 3-D maps; the median of the
    members' map coordinates), ``parent`` (the coarse cluster), ``ids`` (every member), ``top_ids`` (up to
    5 members closest to the cluster's mean vector). Cached with the map (see the module docstring);
    ``use_cache=False`` recomputes (and rewrites the cache)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if not len(res.ids):
        return []
    words = [str(w).strip() for w in (words or ()) if str(w).strip()]
    key = _cache_key(ws, model, res, level, words, only_words)
    spec = hashlib.sha1(json.dumps([words, bool(only_words)]).encode()).hexdigest()[:12] if words or only_words \
        else "default"
    name = f"{Path(res.path).parent.name if res.path else 'map'}-{level}-{spec}.json"

    def load(path: Path):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("labels") if isinstance(data, dict) and data.get("key") == key else None

    def save(f, value) -> None:
        f.write(json.dumps({"format": _FORMAT, "key": key, "labels": value}).encode("utf-8"))

    return ws.cached("labels", model, name, lambda: _compute(ws, model, res, level, words, only_words),
                     load=load, save=save, reuse=use_cache)
