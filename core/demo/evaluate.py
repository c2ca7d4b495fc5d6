"""Held-out evaluation of a joint model on the procedural world.

Every function takes two callables, ``encode_images(list[PIL.Image]) -> (n, d)`` and
``encode_texts(list[str]) -> (n, d)`` (unit rows), so it works with any Encoder and with a model being
trained. Sets are freshly generated with their own seed; ``combos="heldout"`` means the (colour, shape)
pairs never seen in training.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..encoders import unit_rows
from .world import COLOURS, SHAPES, caption_for, generate, prompts_for

EncodeFn = Callable[[Sequence], np.ndarray]


def zero_shot(encode_images: EncodeFn, encode_texts: EncodeFn, *, n: int = 1000, seed: int = 1001,
              combos: str = "heldout") -> dict:
    """Zero-shot colour and shape accuracy on single-object images (prompts "a red object", "a circle")."""
    items = generate(n, seed=seed, p_two=0.0, combos=combos)
    X = unit_rows(encode_images([it.image for it in items]))
    out = {}
    for attr, names in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        prompts = prompts_for(attr)
        T = unit_rows(encode_texts([prompts[k] for k in names]))
        pred = (X @ T.T).argmax(1)
        truth = np.array([names.index(getattr(it.objects[0], attr)) for it in items])
        out[f"zero_shot_{attr}"] = float((pred == truth).mean())
    return out


def _signature(objects) -> frozenset:
    return frozenset((o.colour, o.shape, o.size, o.position) for o in objects)


_SIZE_WORDS = ("small", "little", "large", "big")
_POS_WORDS = ("left", "right", "top", "bottom", "center", "middle")


def _full_caption(objects, rng: np.random.Generator) -> str:
    """A caption that states colour, shape, size and position of every object (resampled until it does)."""
    c = ""
    for _ in range(500):
        c = caption_for(objects, rng)
        words = c.replace(",", " ").split()
        if (all(o.colour in words and o.shape in words for o in objects)
                and sum(w in _SIZE_WORDS for w in words) >= len(objects)
                and sum(w in _POS_WORDS for w in words) >= len(objects)):
            return c
    return c


def text_to_image_recall(encode_images: EncodeFn, encode_texts: EncodeFn, *, n: int = 1000, seed: int = 1002,
                         k: int = 10, combos: str = "heldout") -> dict:
    """Recall@k of full captions of held-out combinations against a gallery of ``n`` held-out images.

    Each caption states colour, shape, size and position of every object. A retrieved image counts as
    relevant when it is the caption's own image or an image with exactly the same objects (colour, shape,
    size, position): the caption cannot tell such images apart.
    """
    items = generate(n, seed=seed, combos=combos)
    rng = np.random.default_rng(seed)
    captions = [_full_caption(it.objects, rng) for it in items]
    X = unit_rows(encode_images([it.image for it in items]))
    T = unit_rows(encode_texts(captions))
    top = np.argsort(-(T @ X.T), axis=1)[:, :k]
    sigs = [_signature(it.objects) for it in items]
    hits = [any(j == i or sigs[j] == sigs[i] for j in top[i]) for i in range(n)]
    exact = [i in top[i] for i in range(n)]
    return {f"t2i_recall@{k}": float(np.mean(hits)), f"t2i_exact_recall@{k}": float(np.mean(exact))}


def analogy(encode_images: EncodeFn, encode_texts: EncodeFn, *, n_gallery: int = 1500, n_queries: int = 300,
            seed: int = 1003, k: int = 5) -> dict:
    """Cross-modal analogy: image of (c, s) - text(c) + text(c') should retrieve an image of (c', s).

    Queries are single-object images of held-out combinations; the gallery is single-object images of
    every combination; the query image is excluded. Texts are the colour prompts ("a red object").
    """
    gallery = generate(n_gallery, seed=seed, p_two=0.0, combos="all")
    queries = generate(n_queries, seed=seed + 1, p_two=0.0, combos="heldout")
    G = unit_rows(encode_images([it.image for it in gallery]))
    Q = unit_rows(encode_images([it.image for it in queries]))
    colours = list(COLOURS)
    prompts = prompts_for("colour")
    C = unit_rows(encode_texts([prompts[c] for c in colours]))
    g_col = np.array([it.objects[0].colour for it in gallery])
    g_shape = np.array([it.objects[0].shape for it in gallery])
    rng = np.random.default_rng(seed)
    hits, base_hits = [], []
    for q, it in zip(Q, queries):
        c, s = it.objects[0].colour, it.objects[0].shape
        c2 = colours[int(rng.integers(len(colours)))]
        while c2 == c:
            c2 = colours[int(rng.integers(len(colours)))]
        v = unit_rows(q - C[colours.index(c)] + C[colours.index(c2)])
        top = np.argsort(-(G @ v))[:k]
        hits.append(bool(np.any((g_col[top] == c2) & (g_shape[top] == s))))
        top0 = np.argsort(-(G @ q))[:k]  # baseline: plain nearest neighbours of the image
        base_hits.append(bool(np.any((g_col[top0] == c2) & (g_shape[top0] == s))))
    return {f"analogy_top{k}": float(np.mean(hits)), f"analogy_baseline_top{k}": float(np.mean(base_hits))}


def evaluate_all(encode_images: EncodeFn, encode_texts: EncodeFn, *, scale: float = 1.0, seed: int = 1000) -> dict:
    """All held-out metrics; ``scale`` shrinks the set sizes (tests use small sets)."""
    s = lambda v: max(20, int(v * scale))  # noqa: E731
    out = {}
    out.update(zero_shot(encode_images, encode_texts, n=s(1000), seed=seed + 1))
    out.update(text_to_image_recall(encode_images, encode_texts, n=s(1000), seed=seed + 2))
    out.update(analogy(encode_images, encode_texts, n_gallery=s(1500), n_queries=s(300), seed=seed + 3))
    return out


def cluster_names(ws, labels: Sequence[dict]) -> dict:
    """How well named clusters (:func:`core.labels.map_labels`) of demo-world items fit them: a name is right
    when every word of its head (the part before a comma: "red circle" in "red circle, small"; what
    follows only tells siblings with the same head apart and is not judged) is a colour word and the colour
    most of the cluster's items show (either object of a two-object image counts: metadata ``colour`` /
    ``colour2``), or a shape word and the shape most of them show (``shape`` / ``shape2``); ``named_by``
    counts the kind of the first word. Returns ``{"share": size-weighted share right, "named_by": {"colour", "shape",
    "other": clusters}, "wrong": [{name, n, majority_colour, majority_shape}]}``."""
    from collections import Counter

    items = ws.items.set_index("id")

    def majority(rows, first: str, second: str) -> str:
        counts = Counter()
        for a, b in zip(rows[first], rows[second]):
            counts.update({v for v in (a, b) if isinstance(v, str)})
        return counts.most_common(1)[0][0]

    right, wrong, named_by = 0, [], Counter()
    for d in labels:
        rows = items.loc[d["ids"]]
        colour, shape = majority(rows, "colour", "colour2"), majority(rows, "shape", "shape2")
        words = str(d["name"]).split(",")[0].split()
        kinds = ["colour" if w in COLOURS else "shape" if w in SHAPES else "other" for w in words]
        named_by[kinds[0] if kinds else "other"] += 1
        if words and all(w == {"colour": colour, "shape": shape}.get(kind) for w, kind in zip(words, kinds)):
            right += d["n"]
        else:
            wrong.append({"name": d["name"], "n": d["n"], "majority_colour": colour, "majority_shape": shape})
    total = sum(d["n"] for d in labels)
    return {"share": right / total if total else 0.0, "named_by": dict(named_by), "wrong": wrong}
