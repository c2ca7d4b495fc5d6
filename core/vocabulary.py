"""Vocabularies and zero-shot labels: the default word lists (bundled, or a local model's own
``vocabulary.txt``), their prompt vectors, ranking words against items or vectors (:func:`zero_shot_labels`)
naming clusters (:func:`label_clusters`) and the words a local model knows (:func:`known_words`,
:func:`unknown_words`).
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .terms import ModalitySpec, can_encode, check_k, model_id, nonzero, term_vectors, top_indices

if TYPE_CHECKING:  # pragma: no cover
    from .encoders import Encoder
    from .workspace import Workspace


VOCABULARY_FILE = "vocabulary.txt"
KNOWN_WORDS_FILE = "known_words.txt"
# a word: letters (any script), with apostrophes inside ("don't"); digits and other signs separate words
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def _read_words(path) -> list[str]:
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(w for w in words if w and not w.startswith("#")))


def _model_file(model: str | None, name: str) -> Path | None:
    from .encoders import local_model_folder

    folder = local_model_folder(model)
    path = None if folder is None else folder / name
    return path if path is not None and path.is_file() else None


def model_vocabulary_file(model: str | None) -> Path | None:
    """The ``vocabulary.txt`` a local model folder ships (the words its text tower was trained on), if any.

    Only local folders are looked at (``openclip-local:<dir>``, ``st:<dir>`` and aliases of such folders,
    e.g. ``demo``; :func:`core.encoders.local_model_folder`); hub models have none and use the bundled
    general vocabulary.
    """
    return _model_file(model, VOCABULARY_FILE)


def words_of(text: str) -> list[str]:
    """The words of a text, lower-cased, in order: runs of letters of any script, apostrophes inside a word
    kept ("don't", "l'été"; the typographic apostrophe U+2019 reads as '); numbers, punctuation and ``{}``
    are not words."""
    return _WORD.findall(str(text).lower().replace("\u2019", "'"))


@functools.lru_cache(maxsize=32)
def _known_words_cached(path: str, stamp: tuple[int, int]) -> frozenset[str]:
    return frozenset(w for line in _read_words(path) for w in words_of(line))


def known_words(model: str | Encoder | None) -> frozenset[str] | None:
    """The words a model's text tower was trained on, if its local folder says: its ``known_words.txt``
    (one word per line, ``#`` comments; the bundled ``demo`` model ships every word of its world), else
    its ``vocabulary.txt`` (a folder that ships only a naming vocabulary). None when the model has no such
    list (hub models, whose BPE tokenizers read any word): nothing can be checked. Cached per file (and
    read again when it changes)."""
    mid = None if model is None else model_id(model)
    path = _model_file(mid, KNOWN_WORDS_FILE) or _model_file(mid, VOCABULARY_FILE)
    if path is None:
        return None
    st = path.stat()
    return _known_words_cached(str(path), (st.st_mtime_ns, st.st_size))


def unknown_words(model: str | Encoder | None, texts: str | Sequence[str], *, terms: bool = False) -> list[str]:
    """The words of ``texts`` (one text or several; see :func:`words_of`) that ``model`` never saw in
    training, unique, in order of appearance; ``[]`` when the model has no list of known words
    (:func:`known_words`). Words are compared exactly, without stemming: "circles" is unknown to a model
    that only saw "circle". ``terms=True`` reads the texts as terms and skips ``item:`` and ``image:`` ones
    (their words are ids and file names, not text the model reads)."""
    known = known_words(model)
    if known is None:
        return []
    texts = [str(t) for t in ([texts] if isinstance(texts, str) else texts) if t]  # None / "" are no text
    if terms:
        texts = [t for t in texts if not t.startswith(("item:", "image:"))]
    return list(dict.fromkeys(w for t in texts for w in words_of(t) if w not in known))


def default_vocabulary(model: str | None = None) -> list[str]:
    """The default zero-shot vocabulary of ``model``.

    A local model folder that ships a ``vocabulary.txt`` (the bundled ``demo`` model does: the words of
    its world, which are all its text tower knows) names with those words; otherwise the bundled
    general list (assets/vocabulary.txt: general words + the demo world's words).
    """
    from .encoders import ASSETS_DIR

    own = model_vocabulary_file(model)
    return _read_words(own if own is not None else ASSETS_DIR / VOCABULARY_FILE)


def naming_vocabulary(model: str | None, words: Sequence[str] = (), *, only: bool = False) -> list[str] | None:
    """The word list a user asked for: ``words`` alone (``only``), or the model's default vocabulary plus
    ``words``; None (the default list) when no words are given. ``only`` without words is a ValueError."""
    extra = [str(w).strip() for w in words if str(w).strip()]
    if only and not extra:
        raise ValueError("naming with your words only needs at least one word")
    if only:
        return extra
    return default_vocabulary(model) + extra if extra else None


@functools.lru_cache(maxsize=32)
def _vocab_vectors_cached(model: str, words: tuple[str, ...], template: str, digest: str) -> np.ndarray:
    return term_vectors(None, model, [template.format(w) for w in words])


def vocabulary_vectors(model: str | Encoder, vocabulary: Sequence[str], template: str = "{}") -> np.ndarray:
    """Prompt vectors of a vocabulary, ``(len(vocabulary), d)`` float32 unit rows (cached per model id)."""
    words = tuple(str(w) for w in vocabulary)
    if not words:
        raise ValueError("the vocabulary is empty")
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' where the word goes; got {template!r}")
    if not can_encode(model, "text"):
        raise ValueError(f"model {model_id(model)!r} cannot encode texts, so it cannot rank a vocabulary")
    if not isinstance(model, str):
        return term_vectors(None, model, [template.format(w) for w in words])
    digest = hashlib.sha1("\0".join(words).encode()).hexdigest()
    return _vocab_vectors_cached(model, words, template, digest)


def zero_shot_labels(source: Workspace | np.ndarray, model: str | Encoder, vocabulary: Sequence[str] | None = None,
                     *, ids: str | Sequence[str] | None = None, k: int | None = 5, template: str = "{}",
                     modality: ModalitySpec = None, contrast: bool = False) -> pd.DataFrame:
    """Rank a vocabulary against an item, a selection or any vectors.

    ``source``: a Workspace (then ``ids`` is one item id or a list; None = every item, optionally of
    ``modality``) or vectors ``(d,)`` / ``(m, d)``. A selection is summarised by the mean of its unit
    vectors. Each word becomes ``template.format(word)`` (e.g. ``"a photo of a {}"``) and is encoded
    with ``model``; ``vocabulary`` defaults to :func:`default_vocabulary`. Returns the top ``k``
    (None = all) as a frame ``label, prompt, score`` (cosine), best first.

    ``contrast=True`` (a Workspace selection only) ranks by cosine with the selection minus cosine with
    the mean of every item of the workspace, so words that fit the whole collection ("object" on the
    demo world) do not win: the labels say what sets the selection apart. ``cosine`` is then a column.
    """
    from .workspace import Workspace

    vocab = list(vocabulary) if vocabulary is not None else default_vocabulary(model_id(model))
    if isinstance(source, Workspace):
        want = [ids] if isinstance(ids, str) else ids
        X, got = source.vectors(model_id(model), modality=modality, ids=want)
        if want is not None and len(got) < len(set(want)):
            missing = sorted(set(want) - set(got.tolist()))
            raise ValueError(f"item(s) {', '.join(map(repr, missing[:3]))}{' ...' if len(missing) > 3 else ''} "
                             f"not in workspace {source.name!r} or without a vector for {model_id(model)!r}")
        if not len(got):
            raise ValueError(f"workspace {source.name!r} has no vectors for model {model_id(model)!r}")
    else:
        X = np.atleast_2d(np.asarray(source, dtype=np.float32))
        if X.ndim != 2 or not len(X):
            raise ValueError(f"vectors must be (d,) or (m, d); got shape {np.shape(source)}")
    centre = nonzero(unit_rows(unit_rows(X).mean(0)), "selection")
    T = vocabulary_vectors(model, vocab, template)
    if T.shape[1] != centre.shape[0]:
        raise ValueError(f"vectors have dim {centre.shape[0]} but model {model_id(model)!r} gives {T.shape[1]}")
    cos = T @ centre
    s = cos
    if contrast and isinstance(source, Workspace):
        A, _ = source.vectors(model_id(model), modality=modality)
        s = cos - T @ nonzero(unit_rows(unit_rows(A).mean(0)), "workspace")
    top = top_indices(s, len(vocab) if k is None else check_k(k))
    out = pd.DataFrame({"label": [vocab[j] for j in top], "prompt": [template.format(vocab[j]) for j in top],
                        "score": s[top].astype(np.float32)})
    if contrast:
        out["cosine"] = cos[top].astype(np.float32)
    return out


def label_clusters(X: np.ndarray, labels: Sequence, vocab_vectors: np.ndarray, vocab: Sequence[str], *,
                   k: int = 3, contrast: bool = True) -> dict[Any, list[tuple[str, float]]]:
    """Name clusters with a vocabulary.

    ``X`` (n, d) vectors, ``labels`` (n,) cluster labels, ``vocab_vectors`` (V, d) unit rows of
    ``vocab`` (see :func:`vocabulary_vectors`). Each cluster is summarised by the mean of its unit
    vectors; words are ranked by cosine with it, minus (``contrast=True``) the word's mean cosine
    over all clusters, so words every cluster shares (the modality, the dataset's theme) do not win
    everywhere. Returns ``{label: [(word, score), ...]}`` with ``k`` words per cluster.
    """
    X = unit_rows(np.asarray(X, dtype=np.float32))
    labels = np.asarray(labels)
    T = np.asarray(vocab_vectors, dtype=np.float32)
    if labels.shape != (len(X),):
        raise ValueError(f"labels must have one entry per row of X ({len(X)}); got shape {labels.shape}")
    if T.shape != (len(vocab), X.shape[1]):
        raise ValueError(f"vocab_vectors must be (len(vocab)={len(vocab)}, d={X.shape[1]}); got {T.shape}")
    k = check_k(k)
    names = list(pd.unique(labels))
    C = unit_rows(np.stack([X[labels == c].mean(0) for c in names]))
    S = C @ T.T
    if contrast and len(names) > 1:
        S = S - S.mean(0, keepdims=True)
    out = {}
    for c, s in zip(names, S):
        top = top_indices(s, k)
        out[c.item() if hasattr(c, "item") else c] = [(vocab[j], float(s[j])) for j in top]
    return out
