"""Named clusters on a map: clusters of the mapped items found in the embedding space, named by what
their items say about themselves: a metadata value most of them share, else the words and two-word
phrases that set their texts apart (class-based TF-IDF, re-ranked by the model when it encodes text),
else, for clusters without text, the model's own text tower ranking a vocabulary (zero-shot).

* Clusters: seeded k-means in cosine geometry (rows scaled to unit length) on the vectors of the map's
  points, not on the 2-D coordinates. ``coarse``: k = clip(round(sqrt(n / 2)), 2, 12); ``fine``: each
  coarse cluster split again into up to 3 (clip(round(sqrt(n_c / 2)), 1, 3)), so fine clusters nest in
  coarse ones. Above :data:`FIT_SAMPLE` points k-means is fitted on a seeded sample and every point goes
  to its nearest centre. On a gap-corrected map every modality is mean-centred first, as the map is.
* Memory: the vectors are read from the store :data:`core.mapvectors.CHUNK` rows at a time
  (:class:`core.mapvectors.MapVectors`), never
  all at once: k-means reads its sample, and the assignment to centres, the modality and cluster means and
  the items closest to each mean are computed chunk by chunk, so beyond a chunk and the sample only a few
  per-item scalars (cluster numbers) are held, however many items the map shows.
* Names, per cluster, the first that applies (``method``):

  1. ``metadata:<column>``: a categorical metadata column (strings or booleans, 2–50 values, not an id,
     not file names, not free text; :func:`_categorical_columns`) of which one value is held by at
     least :data:`META_SHARE` of the cluster and by at most 1/:data:`META_LIFT` as large a share of the
     other clusters: the name is the value, ``share`` its share. A value that separates clusters is what
     the user said the items are, so it beats words counted in texts.
  2. ``c-tf-idf+model`` / ``c-tf-idf``: the items' texts (a text's own, an image's paired caption, else
     its text metadata; at most :data:`TEXT_SAMPLE` per cluster) counted per text with scikit-learn's
     ``CountVectorizer`` (words and two-word phrases, English stop words out, tokens of ≥ 2 characters,
     numbers out; :func:`phrase_counts`) and weighted by class-based TF-IDF (:func:`ctfidf_weights`);
     candidates must be in ≥ :data:`MIN_TEXTS` of the cluster's texts and more common there than in the
     other clusters. A model that encodes text re-ranks the top :data:`CANDIDATES`: relevance = half the
     c-TF-IDF weight (scaled to the top one), half the phrase vector's cosine with the cluster's mean
     vector (scaled 0..1 over the candidates), and the words are then picked by KeyBERT's maximal marginal
     relevance, so the runner-up is not a variant of the name. With a text model a cluster is named so
     only when at least :data:`TEXT_SHARE` of it has text.
  3. ``zero-shot``: a model that encodes texts ranks its vocabulary against each cluster's mean vector,
     mean-centred over the clusters (:func:`core.vocabulary.label_clusters`): clusters without enough
     text (images without captions). ``only_words`` with such a model names every cluster this way.
  4. ``none``: "cluster N".

  Names are unique among siblings (:func:`_dedupe`): the runner-up, else a second word that sets the
  cluster apart ("cultivar A, high proline"). :func:`grounding` measures how well names fit the texts.
* Cached beside the map: a derived artifact (core.artifacts) ``derived/labels/<model>/<key>.json``, one per
  map parameters, level and naming words, holding a key of the map's ids and coordinates and the items'
  and vectors' versions; any change recomputes it, and deleting an item removes the names holding it.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import mapvectors
from .artifacts import Codec, artifact_key, register_codec
from .encoders import modalities_of, unit_rows
from .mapvectors import MapVectors, Rows, group_means, nearest_to_means, unit_rows_of
from .vocabulary import default_vocabulary, naming_vocabulary, vocabulary_vectors, words_of

LEVELS = ("coarse", "fine")
FIT_SAMPLE = 20_000  # k-means is fitted on at most this many points; the rest go to their nearest centre
FINE_SPLIT = 3
TEXT_SAMPLE = 2_000  # texts per cluster counted for names (a seeded sample above)
TEXT_SHARE = 0.5  # with a text model, a cluster is named from its texts when at least this share of it has text
MIN_TEXTS = 2  # a text name occurs in at least this many of the cluster's texts
CANDIDATES = 15  # c-TF-IDF candidates per cluster re-ranked by the model
MODEL_WEIGHT = 0.5  # the model's share of a candidate's relevance (the rest: its c-TF-IDF weight)
DIVERSITY = 0.5  # MMR: how much the runner-up and further words must differ from the name
META_SHARE = 0.7  # a metadata value names a cluster when at least this share of its members hold it
META_LIFT = 2.0  # ... and the other clusters' members hold it at most 1/META_LIFT as often
META_MAX_VALUES = 50  # a categorical metadata column has at most this many distinct values
_FORMAT = 2


def coarse_k(n: int) -> int:
    """Number of coarse clusters for ``n`` points: round(sqrt(n / 2)) clipped to [2, 12] (and to n)."""
    return max(1, min(n, min(12, max(2, round(math.sqrt(n / 2))))))


def kmeans(X: Rows, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means of the unit rows of ``X``: ``(labels (n,) int, centres (k, d))``.

    ``X``: an (n, d) array, or any row source with ``len(X)`` and ``X[rows]`` -> (len(rows), d) rows (a
    :class:`MapVectors`), which is then read a sample and a chunk at a time. Up to :data:`FIT_SAMPLE` rows
    scikit-learn's ``KMeans`` (``n_init=3``) on all of them; above, on a seeded sample of that size, and
    every row is assigned to its nearest centre, :data:`core.mapvectors.CHUNK` rows at a time."""
    from sklearn.cluster import KMeans

    n = len(X)
    k = max(1, min(int(k), n))
    whole = n <= FIT_SAMPLE
    fit_rows = np.arange(n) if whole else np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(unit_rows_of(X, fit_rows))
    C = km.cluster_centers_.astype(np.float32)
    if whole:
        return km.labels_.astype(np.int64), C
    labels = np.empty(n, np.int64)
    half = 0.5 * (C * C).sum(1)
    chunk = mapvectors.CHUNK
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        labels[rows] = np.argmax(unit_rows_of(X, rows) @ C.T - half, axis=1)
    return labels, C


class _Subset:
    """Rows ``rows`` of an array or row source ``X`` as a row source of their own (read only when indexed)."""

    def __init__(self, X: Rows, rows: np.ndarray):
        self.X, self.rows = X, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self.X[self.rows[rows]]


def clusters(X: Rows, level: str = "coarse", *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels of the rows of ``X`` (an (n, d) array or a row source, see :func:`kmeans`) at
    ``level``: ``(cluster (n,) int, parent (n,) int)``; clusters are numbered by size (0 the largest);
    ``parent`` is the coarse cluster (equal to ``cluster`` when coarse)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    n = len(X)
    coarse = _by_size(kmeans(X, coarse_k(n), seed=seed)[0])
    if level == "coarse":
        return coarse, coarse
    fine = np.zeros(n, np.int64)
    for c in range(coarse.max() + 1):
        rows = np.flatnonzero(coarse == c)
        k = max(1, min(FINE_SPLIT, round(math.sqrt(len(rows) / 2))))
        fine[rows] = c * FINE_SPLIT + (kmeans(_Subset(X, rows), k, seed=seed)[0] if k > 1 else 0)
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


_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_PATHLIKE = re.compile(r"[/\\]|\.[A-Za-z0-9]{2,4}$")


def tokens(text: str) -> list[str]:
    """The tokens names are made of: runs of letters and digits of any script (apostrophes inside kept),
    lower-cased, of at least 2 characters, numbers alone left out ("2019", "000")."""
    return [t for t in _TOKEN.findall(str(text).lower().replace("\u2019", "'")) if len(t) > 1 and not t.isdigit()]


def _tokens(text: str) -> list[str]:  # the words of the legacy ctfidf(): letters only
    return [w for w in words_of(text) if len(w) > 1]


def ctfidf(docs: Sequence[str], *, vocabulary: Sequence[str] | None = None,
           k: int = 3) -> list[list[tuple[str, float]]]:
    """Class-based TF-IDF: ``docs`` holds one document per class (all its texts joined); the ``k`` words
    with the largest weight in each, ``[(word, weight), ...]`` (empty when a class has no word).

    Counts come from scikit-learn's ``CountVectorizer`` (words of any script, English stop words out, or
    only ``vocabulary``); weight = (count / words of the class) × log(1 + A / count over all classes),
    A the mean number of words per class. (:func:`phrase_counts` + :func:`ctfidf_weights` are what
    :func:`map_labels` uses: per-text presence of words and two-word phrases.)"""
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
    W = ctfidf_weights(counts)
    out = []
    for w in W:
        top = [j for j in np.lexsort((words, -w))[:k] if w[j] > 0]
        out.append([(str(words[j]), float(w[j])) for j in top])
    return out


def ctfidf_weights(counts: np.ndarray) -> np.ndarray:
    """BERTopic's class-based TF-IDF of a (classes, terms) count matrix: (count / the class's total) ×
    log(1 + A / the term's count over all classes), A the mean total per class; (classes, terms) float64."""
    counts = np.asarray(counts, dtype=np.float64)
    per_class = counts.sum(1, keepdims=True)
    tf = np.divide(counts, per_class, out=np.zeros_like(counts), where=per_class > 0)
    total = counts.sum(0)
    idf = np.log1p(np.divide(counts.sum() / max(len(counts), 1), total, out=np.zeros_like(total), where=total > 0))
    return tf * idf


def phrase_counts(texts: Sequence[str], groups: np.ndarray, k: int, *, vocabulary: Sequence[str] | None = None,
                  sample: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In how many texts of each group every word and two-word phrase occurs.

    ``texts`` (n,) ("" or None = no text), ``groups`` (n,) ints in 0..k-1. Tokens: :func:`tokens`; English
    stop words out (before phrases are formed, as scikit-learn's ``CountVectorizer`` does), or only the
    phrases of ``vocabulary``. Each text counts a phrase once. Without ``vocabulary`` a phrase must occur in
    at least 2 texts. Up to ``sample`` (default :data:`TEXT_SAMPLE`) texts per group are read, a seeded
    sample. Returns ``(phrases (V,) str, present (k, V) float64: texts of the group holding the phrase,
    texts (k,) int: texts read per group)``."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    sample = TEXT_SAMPLE if sample is None else int(sample)
    groups = np.asarray(groups, dtype=np.int64)
    has = np.array([bool(t) and bool(str(t).strip()) for t in texts], dtype=bool)
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(k):
        r = np.flatnonzero(has & (groups == g))
        rows.append(np.sort(rng.choice(r, sample, replace=False)) if len(r) > sample else r)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    n_texts = np.bincount(groups[rows], minlength=k)[:k] if len(rows) else np.zeros(k, np.int64)
    vocab = None
    if vocabulary is not None:
        vocab = sorted({" ".join(tokens(w)) for w in vocabulary if 0 < len(tokens(w)) <= 2})
        if not vocab:
            return np.array([], dtype=str), np.zeros((k, 0)), n_texts
    cv = CountVectorizer(tokenizer=tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2), binary=True,
                         stop_words=None if vocab else "english", vocabulary=vocab,
                         min_df=1 if vocab else 2, dtype=np.float32)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*stop_words may be inconsistent.*")
            M = cv.fit_transform([str(texts[i]) for i in rows])
    except ValueError:  # no phrase at all
        return np.array([], dtype=str), np.zeros((k, 0)), n_texts
    G = sparse.csr_matrix((np.ones(len(rows), np.float32), (groups[rows], np.arange(len(rows)))), shape=(k, len(rows)))
    return cv.get_feature_names_out().astype(str), np.asarray((G @ M).todense(), dtype=np.float64), n_texts


def _mmr(relevance: np.ndarray, sim: np.ndarray, n: int, diversity: float) -> list[int]:
    """KeyBERT's maximal marginal relevance: the most relevant first, then each next maximising
    (1 - diversity) × relevance - diversity × its largest similarity to those chosen; indices, best first."""
    chosen = [int(np.argmax(relevance))]
    rest = [j for j in range(len(relevance)) if j != chosen[0]]
    while rest and len(chosen) < n:
        s = (1 - diversity) * relevance[rest] - diversity * sim[np.ix_(rest, chosen)].max(1)
        chosen.append(rest.pop(int(np.argmax(s))))
    return chosen


def _text_names(texts: Sequence[str], cluster: np.ndarray, k: int, mean: np.ndarray | None, model: str | None,
                vocabulary: Sequence[str] | None = None) -> dict[int, dict]:
    """Names from the clusters' texts: c-TF-IDF candidates, re-ranked by ``model`` when it encodes text.

    Candidates of a cluster: phrases in at least :data:`MIN_TEXTS` of its texts and in a larger share of
    them than of the other clusters' texts, the :data:`CANDIDATES` of largest c-TF-IDF weight (weights
    computed on per-text presence). With a text model each candidate's relevance = (1 - MODEL_WEIGHT) ×
    weight / the cluster's top weight + MODEL_WEIGHT × its cosine with the cluster's mean vector, scaled
    0..1 over the candidates; the words are then chosen by MMR (diversity :data:`DIVERSITY`) over the
    candidates' own vectors. ``mean`` (k, d): the clusters' mean vectors (:func:`group_means`).
    ``{cluster: {method, words [(phrase, relevance, share)], ...}}`` for clusters with a candidate."""
    phrases, present, n_texts = phrase_counts(texts, cluster, k, vocabulary=vocabulary)
    if not len(phrases):
        return {}
    W = ctfidf_weights(present)
    share = np.divide(present, n_texts[:, None], out=np.zeros_like(present), where=n_texts[:, None] > 0)
    other_n = n_texts.sum() - n_texts
    other = np.divide(present.sum(0)[None, :] - present, other_n[:, None], out=np.zeros_like(present),
                      where=other_n[:, None] > 0)
    picks = {}
    for c in range(k):
        ok = (present[c] >= min(MIN_TEXTS, n_texts[c])) & (W[c] > 0) & ((share[c] > other[c]) | (other_n[c] == 0))
        cand = np.flatnonzero(ok)
        if len(cand):
            picks[c] = cand[np.lexsort((phrases[cand], -W[c, cand]))[:CANDIDATES]]
    encode = model is not None and mean is not None and picks
    if encode:
        uniq = sorted({str(phrases[j]) for p in picks.values() for j in p})
        V = vocabulary_vectors(model, uniq)
        row = {p: i for i, p in enumerate(uniq)}
    out = {}
    for c, cand in picks.items():
        w = W[c, cand] / W[c, cand].max()
        if encode:
            P = V[[row[str(phrases[j])] for j in cand]]
            cos = P @ unit_rows(mean[c])
            span = cos.max() - cos.min()
            scaled = (cos - cos.min()) / span if span > 1e-9 else np.ones_like(cos)
            rel = (1 - MODEL_WEIGHT) * w + MODEL_WEIGHT * scaled
            order = _mmr(rel, P @ P.T, min(len(cand), 5), DIVERSITY)
            method = "c-tf-idf+model"
        else:
            rel = W[c, cand]
            order = list(range(min(len(cand), 5)))  # already by weight
            method = "c-tf-idf"
        words = [(str(phrases[cand[j]]), float(rel[j]), float(share[c, cand[j]])) for j in order]
        out[c] = {"method": method, "words": words, "weight": float(W[c, cand[order[0]]]),
                  "traits": {str(phrases[j]): float(share[c, j]) for j in cand}}
    return out


def _categorical_columns(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The metadata columns that can name a cluster by value: ``{column: (n,) object array of names, None
    where missing}``. Strings (or booleans, named "<column>" / "not <column>") with 2 to
    :data:`META_MAX_VALUES` distinct values, each value on average on at least 2 rows (not an id), not
    file names or paths, not free text (values of over 6 words or 60 characters on most rows). Numbers are
    not names: "2" says nothing without its column, and numeric columns are what maps are made of."""
    from .export import user_columns

    out = {}
    for col in user_columns(rows):
        s = rows[col]
        v = s.dropna()
        if len(v) < 2:
            continue
        if pd.api.types.is_bool_dtype(s):
            named = pd.Series([col if x else f"not {col}" for x in v], index=v.index)
        elif pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
            named = v.astype(str).str.strip()
            named = named[named != ""]
            if not len(named) or named.str.contains(_PATHLIKE).mean() >= 0.5 or (
                    named.str.len().median() > 60 or named.str.count(r"\S+").median() > 6):  # words, no lists
                continue
        else:
            continue
        uniq = named.nunique()
        if uniq < 2 or uniq > META_MAX_VALUES or uniq > 0.5 * len(named):
            continue
        arr = np.full(len(rows), None, dtype=object)
        arr[rows.index.get_indexer(named.index)] = named.to_numpy(dtype=object)
        out[col] = arr
    return out


def _metadata_names(columns: dict[str, np.ndarray], cluster: np.ndarray,
                    k: int) -> tuple[dict[int, dict], list[dict[str, float]]]:
    """Clusters named by a metadata value: a cluster whose members hold one value of a column at least
    :data:`META_SHARE` of the time, while the other clusters' members hold it at most 1/:data:`META_LIFT` as
    often. Among several such columns the one that separates best (share minus share elsewhere) wins.
    Returns ``({cluster: {column, value, share, elsewhere}}, traits)``, traits: per cluster ``{value: share}``
    of every value at least 1/5 of its members hold (what :func:`_dedupe` tells siblings apart by)."""
    n = len(cluster)
    sizes = np.bincount(cluster, minlength=k).astype(np.float64)
    found: dict[int, list] = {}
    traits: list[dict[str, float]] = [{} for _ in range(k)]
    for col, arr in columns.items():
        codes, uniq = pd.factorize(pd.Series(arr, dtype=object), use_na_sentinel=True)
        keep = codes >= 0
        counts = np.zeros((k, len(uniq)))
        np.add.at(counts, (cluster[keep], codes[keep]), 1)
        p = counts / np.maximum(sizes[:, None], 1)
        rest = n - sizes
        q = np.divide(counts.sum(0)[None, :] - counts, rest[:, None], out=np.zeros_like(counts),
                      where=rest[:, None] > 0)
        for c, j in zip(*np.nonzero(p >= 0.2)):
            traits[c][str(uniq[j])] = max(traits[c].get(str(uniq[j]), 0.0), float(p[c, j]))
        for c in range(k):
            j = int(np.argmax(p[c]))
            found.setdefault(c, []).append((float(p[c, j] - q[c, j]), float(p[c, j]), float(q[c, j]), col,
                                            str(uniq[j])))
    out = {}
    for c, rows in found.items():
        rows.sort(key=lambda r: (-r[0], -r[1], r[3]))
        good = [r for r in rows if r[1] >= META_SHARE and r[2] * META_LIFT <= r[1]]
        if good:
            _, share, q, col, value = good[0]
            out[c] = {"column": col, "value": value, "share": share, "elsewhere": q}
    return out, traits


def _numeric_traits(rows: pd.DataFrame, cluster: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """Numeric metadata columns as z-scores averaged per cluster: ``(columns, (k, m))``."""
    from .export import user_columns

    cols, Z = [], []
    for col in user_columns(rows):
        s = rows[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            continue
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        sd = np.nanstd(v)
        if not np.isfinite(sd) or sd == 0:
            continue
        z = (v - np.nanmean(v)) / sd
        m = np.array([np.nanmean(z[cluster == c]) if np.isfinite(z[cluster == c]).any() else 0.0 for c in range(k)])
        cols.append(col)
        Z.append(np.nan_to_num(m))
    return cols, (np.array(Z).T if Z else np.zeros((k, 0)))


def _dedupe(entries: list[dict], parent: np.ndarray, level: str, traits: list[dict[str, float]],
            numeric: tuple[list[str], np.ndarray]) -> None:
    """Make names unique among siblings (the whole coarse level; the same parent at the fine level), and
    across the fine level where a second word can tell them apart. ``entries`` (one per cluster, in
    cluster order) are changed in place: the larger cluster keeps the name; a later sibling takes its next
    word that no cluster of the level uses (text and zero-shot names); otherwise the name gets a second
    word that sets it apart from the cluster holding the name: of its ``traits`` (metadata values, text
    words: ``{word: share of the cluster}``) held by at least half the cluster, the one whose share
    exceeds the holder's most (by at least 1/4), else the numeric metadata column where the two clusters'
    means differ most (by at least half a standard deviation, a tenth for siblings: "high alcohol");
    siblings with neither are numbered ("name (2)")."""
    cols, Z = numeric
    holder: dict[str, int] = {}  # name -> the first cluster of the level holding it
    family: dict[tuple[int, str], int] = {}  # (parent, name) -> the first sibling holding it
    used = {e["name"] for e in entries}
    for c, e in enumerate(entries):
        name = e["name"]
        group = 0 if level == "coarse" else int(parent[c])
        first = family.get((group, name), holder.get(name))
        if first is None:
            holder[name] = family[(group, name)] = c
            continue
        sibling = (group, name) in family
        alts = [] if e["method"].startswith("metadata") else [a for a in e.get("alts", []) if a[0] not in used]
        lift = sorted(((s - traits[first].get(q, 0.0), q) for q, s in traits[c].items()
                       if q not in name and name not in q), key=lambda t: (-t[0], t[1]))
        quals = [q for gain, q in lift if gain >= 0.25 and traits[c][q] >= 0.5]
        if len(cols):
            d = Z[c] - Z[first]
            quals += [f"{'high' if d[j] > 0 else 'low'} {cols[j]}" for j in np.argsort(-np.abs(d), kind="stable")
                      if abs(d[j]) >= (0.1 if sibling else 0.5)]
        new = None
        if sibling and alts:
            new, score = alts[0][:2]
            e["runner_up"], e["runner_up_score"], e["score"] = name, e["score"], score
            if "shares" in e:
                e["share"] = e["shares"].get(new)
        else:
            new = next((f"{name}, {q}" for q in quals if f"{name}, {q}" not in used), None)
        if new is None and sibling:
            i = 2
            while f"{name} ({i})" in used:
                i += 1
            new = f"{name} ({i})"
        if new is not None:
            e["name"] = new
            used.add(new)
        holder.setdefault(e["name"], c)
        family.setdefault((group, e["name"]), c)


def _texts(ws, ids: np.ndarray, rows: pd.DataFrame | None = None) -> list[str]:
    """Text standing for each item: its caption (:func:`core.items.captions`), else the values
    of its text metadata columns; "" when it has none."""
    from .export import item_rows, user_columns
    from .items import captions

    rows = item_rows(ws, ids) if rows is None else rows
    caps = captions(ws.items, rows)
    meta = [c for c in user_columns(rows) if pd.api.types.is_string_dtype(rows[c])]
    bare = caps.isna().to_numpy()
    if meta and bare.any():
        caps = caps.copy()
        caps[bare] = [" ".join(v for v in r if isinstance(v, str))
                      for r in rows.loc[bare, meta].itertuples(index=False)]
    return ["" if t is None else str(t) for t in caps.tolist()]


def _zero_shot(unit_mean: np.ndarray, cluster: np.ndarray, model: str, words, only_words) -> dict[int, list]:
    """Up to 5 words per cluster ``{cluster: [(word, score), ...]}`` from the model's vocabulary (or only
    ``words``), ranked as :func:`core.vocabulary.label_clusters` ranks them, from the clusters' means
    ``unit_mean`` (k, d) (:func:`group_means`) instead of every point's vector: cosine with the unit mean,
    minus the word's mean cosine over the clusters (in the order they first occur in ``cluster``)."""
    vocab = naming_vocabulary(model, words or (), only=only_words) or default_vocabulary(model)
    T = np.asarray(vocabulary_vectors(model, vocab), dtype=np.float32)
    order = pd.unique(cluster)
    S = unit_rows(unit_mean[order]) @ T.T
    if len(order) > 1:
        S = S - S.mean(0, keepdims=True)
    out = {}
    for c, s in zip(order.tolist(), S):
        k = min(5, len(vocab), int(np.isfinite(s).sum()))
        part = np.argpartition(-s, k - 1)[:k] if k else np.zeros(0, np.int64)
        out[c] = [(vocab[j], float(s[j])) for j in part[np.argsort(-s[part], kind="stable")]]
    return out


def _entry(method: str, ranked: list[tuple], *, share=None, **extra) -> dict:
    """A cluster's name from ranked ``[(word, score), ...]``: the first, the second as runner-up, the rest
    kept as alternatives for :func:`_dedupe`."""
    runner = ranked[1] if len(ranked) > 1 else (None, None)
    return {"method": method, "name": ranked[0][0], "score": ranked[0][1], "runner_up": runner[0],
            "runner_up_score": runner[1], "share": share, "words": [r[0] for r in ranked],
            "alts": list(ranked[1:]), **extra}


def _name_clusters(ws, ids: np.ndarray, means: tuple[np.ndarray, np.ndarray], cluster: np.ndarray,
                   parent: np.ndarray, level: str, model: str, words: Sequence[str], only_words: bool) -> list[dict]:
    """One naming dict per cluster (see the module docstring for which method names which cluster).
    ``means``: the clusters' ``(mean, unit_mean)`` vectors, (k, d) each (:func:`group_means`)."""
    from .export import item_rows

    mean, unit_mean = means
    k = int(cluster.max()) + 1
    text_model = "text" in modalities_of(model)
    if only_words and text_model:  # the user's words, ranked by the model
        ranked = _zero_shot(unit_mean, cluster, model, words, True)
        return [_entry("zero-shot", ranked[c]) for c in range(k)]
    if only_words:
        naming_vocabulary(None, words or (), only=True)  # the same error as zero-shot without words
    rows = item_rows(ws, ids)
    texts = _texts(ws, ids, rows)
    has_text = np.array([bool(t.strip()) for t in texts])
    text_share = np.bincount(cluster, weights=has_text, minlength=k) / np.maximum(np.bincount(cluster, minlength=k), 1)
    by_text = _text_names(texts, cluster, k, mean if text_model else None, model if text_model else None,
                          vocabulary=words if only_words else None) if has_text.any() else {}
    meta, traits = ({}, [{} for _ in range(k)]) if only_words else _metadata_names(_categorical_columns(rows),
                                                                                   cluster, k)
    for c, t in by_text.items():
        for w, share in t["traits"].items():
            traits[c][w] = max(traits[c].get(w, 0.0), share)
    zero = None
    entries = []
    for c in range(k):
        t = by_text.get(c)
        tw = [(w, r) for w, r, _ in t["words"]] if t else []
        if c in meta:
            m = meta[c]
            runner = [x for x in tw if x[0] != m["value"]][:1]
            e = _entry(f"metadata:{m['column']}", [(m["value"], m["share"]), *runner], share=m["share"])
            e["words"] = list(dict.fromkeys([m["value"], *(w for w, _ in tw)]))
        elif t and (text_share[c] >= TEXT_SHARE or not text_model):
            e = _entry(t["method"], tw, share=t["words"][0][2], shares={w: s for w, _, s in t["words"]})
        elif text_model:
            if zero is None:
                zero = _zero_shot(unit_mean, cluster, model, words, False)
            e = _entry("zero-shot", zero[c])
        else:
            e = {"method": "none", "name": f"cluster {c + 1}", "score": None, "runner_up": None,
                 "runner_up_score": None, "share": None, "words": []}
        entries.append(e)
    _dedupe(entries, parent_of(cluster, parent, k), level, traits, _numeric_traits(rows, cluster, k))
    return entries


def parent_of(cluster: np.ndarray, parent: np.ndarray, k: int) -> np.ndarray:
    """The parent of each of ``k`` clusters, (k,) int, from the per-point ``cluster`` and ``parent``."""
    out = np.zeros(k, np.int64)
    out[cluster] = parent
    return out


def _round(v):
    return None if v is None else round(float(v), 4)


def _compute(ws, model: str, res, level: str, words, only_words) -> list[dict]:
    ids = np.asarray(res.ids).astype(str)
    # cluster what the map shows (a gap-corrected map: every modality mean-centred); vectors read in chunks
    vectors = MapVectors(ws, model, ids, modality=res.modality if res.gap_corrected else None)
    cluster, parent = clusters(vectors, level)
    k = int(cluster.max()) + 1
    means = group_means(vectors, cluster, k)
    names = _name_clusters(ws, ids, means, cluster, parent, level, model, words, only_words)
    tops = nearest_to_means(vectors, cluster, means[0])
    coords = np.asarray(res.coords, dtype=np.float32)
    out = []
    for c in range(k):
        rows = np.flatnonzero(cluster == c)
        top = tops[c]
        centre = np.median(coords[rows], axis=0)
        e = names[c]
        d = {"cluster": c, "level": level, "name": e["name"], "score": _round(e["score"]),
             "runner_up": e["runner_up"], "runner_up_score": _round(e["runner_up_score"]), "method": e["method"],
             "n": len(rows), "x": float(centre[0]), "y": float(centre[1])}
        if coords.shape[1] > 2:
            d["z"] = float(centre[2])
        d.update(parent=int(parent[rows[0]]), ids=ids[rows].tolist(), top_ids=ids[top].tolist(),
                 share=_round(e["share"]), words=list(e["words"]))
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
    naming words (zero-shot: added to the model's vocabulary; ``only_words``: they alone name every
    cluster, ranked zero-shot by a text model, else the only words counted; metadata is not used then).
    Returns one dict per cluster, largest first: ``cluster`` (0..), ``level``, ``name``, ``score``,
    ``runner_up``, ``runner_up_score``, ``method`` ("metadata:<column>", "c-tf-idf+model", "c-tf-idf",
    "zero-shot" or "none"; see the module docstring), ``n``, ``x``, ``y`` (``z`` on 3-D maps; the median
    of the members' map coordinates), ``parent`` (the coarse cluster), ``ids`` (every member), ``top_ids``
    (up to 5 members closest to the cluster's mean vector), ``share`` (the share of the cluster the name
    is true of: members holding the metadata value, texts holding the phrase; None for zero-shot/none)
    and ``words`` (the name and the next candidates, best first). Cached with the map (see the module docstring);
    ``use_cache=False`` recomputes (and rewrites the cache)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if not len(res.ids):
        return []
    words = [str(w).strip() for w in (words or ()) if str(w).strip()]
    key = _cache_key(ws, model, res, level, words, only_words)
    # one file per map parameters, level and naming words; it holds the names of the latest map of them
    slot = artifact_key(params=dict(res.params), modalities=np.unique(np.asarray(res.modality).astype(str)).tolist(),
                        level=level, words=words, only_words=bool(only_words))

    def compute() -> dict:
        return {"format": _FORMAT, "key": key, "labels": _compute(ws, model, res, level, words, only_words)}

    data = ws.artifact("labels", model, slot, compute, codec=LABELS_CODEC, reuse=use_cache)
    if data["key"] != key:  # the names of an earlier map of these parameters, or of other items or vectors
        data = ws.artifact("labels", model, slot, compute, codec=LABELS_CODEC, reuse=False)
    return data["labels"]


def _save_labels(f, data: dict) -> None:
    f.write(json.dumps(data).encode("utf-8"))


def _load_labels(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("labels"), list)
    return data if ok else None


def _labels_ids(path: Path) -> list[str]:
    """The item ids stored named clusters hold (every cluster's members)."""
    return [i for d in json.loads(path.read_text(encoding="utf-8"))["labels"] for i in d["ids"]]


LABELS_CODEC = register_codec("map-labels", Codec(".json", _save_labels, _load_labels, ids=_labels_ids))


def grounding(labels: Sequence[dict], texts_by_id: dict[str, str], *, min_share: float = 0.25,
              lift: float = 2.0) -> dict:
    """How well names of :func:`map_labels` are grounded in the clusters' own texts.

    A text holds a name when it has every token of it (:func:`tokens`, English stop words aside, as names
    are counted). A name is grounded when at least ``min_share`` of its cluster's texts hold it and that
    share is at least ``lift`` times the share among the other clusters' texts (of the same level).
    ``texts_by_id``: item id → text (ids without text are left out). Returns ``{"share": grounded clusters
    / clusters with text, "grounded", "clusters", "sibling_duplicates": names shared by two siblings,
    "rows": [{cluster, name, method, n_texts, share, elsewhere, grounded}]}``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    sets = {i: set(tokens(t)) for i, t in texts_by_id.items() if t and str(t).strip()}
    rows = []
    for d in labels:
        words = set(tokens(d["name"])) - ENGLISH_STOP_WORDS
        mine = [sets[i] for i in d["ids"] if i in sets]
        others = [sets[i] for e in labels if e is not d for i in e["ids"] if i in sets]
        if not mine:
            continue
        inside = float(np.mean([words <= s for s in mine])) if words else 0.0
        outside = float(np.mean([words <= s for s in others])) if others and words else 0.0
        rows.append({"cluster": d["cluster"], "name": d["name"], "method": d["method"], "n_texts": len(mine),
                     "share": round(inside, 3), "elsewhere": round(outside, 3),
                     "grounded": bool(words) and inside >= min_share and inside >= lift * outside})
    seen, dup = set(), 0
    for d in labels:
        key = (d["parent"] if d["level"] == "fine" else None, d["name"])
        dup += key in seen
        seen.add(key)
    good = sum(r["grounded"] for r in rows)
    return {"share": good / len(rows) if rows else 0.0, "grounded": good, "clusters": len(rows),
            "sibling_duplicates": dup, "rows": rows}
