"""The language side of the procedural world: captions of a scene (:func:`caption_for`), the zero-shot prompts
(:func:`prompts_for`, :data:`BACKGROUND_PROMPT`) and the words a model trained on the world knows
(:func:`world_vocabulary`, :func:`world_words`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .objects import COLOURS, POSITIONS, SHAPES, SIZES, WorldObject


def _weighted(rng: np.random.Generator, options: Sequence[tuple[float, Any]]) -> Any:
    """Pick the value of one ``(weight, value)`` option proportionally to its weight."""
    total = sum(w for w, _ in options)
    u = rng.random() * total
    for w, v in options:
        u -= w
        if u < 0:
            return v
    return options[-1][1]


# --------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------

_SIZE_WORDS: dict[str, tuple[tuple[float, str], ...]] = {
    "small": ((0.8, "small"), (0.2, "little")),
    "large": ((0.8, "large"), (0.2, "big")),
}
_POS_PHRASES: dict[str, tuple[tuple[float, str], ...]] = {
    "left": ((0.85, "on the left"), (0.15, "on the left side")),
    "right": ((0.85, "on the right"), (0.15, "on the right side")),
    "top": ((0.85, "at the top"), (0.15, "at the top of the image")),
    "bottom": ((0.85, "at the bottom"), (0.15, "at the bottom of the image")),
    "center": ((0.8, "in the center"), (0.2, "in the middle")),
}
_P_PARTIAL = 0.2

# Single-object full captions.  Fields: {sz} size word, {c} colour, {s} shape, {p} position phrase.
_FULL_ONE: tuple[tuple[float, str], ...] = (
    (5.0, "a {sz} {c} {s} {p}"),
    (2.5, "a {c} {s} {p}"),
    (2.0, "a {sz} {c} {s}"),
    (2.0, "a {c} {s}"),
    (1.5, "{c} {s}"),
    (1.0, "there is a {c} {s} {p}"),
    (1.0, "there is a {sz} {c} {s} {p}"),
    (1.0, "a picture of a {sz} {c} {s} {p}"),
    (0.7, "a photo of a {c} {s}"),
    (0.7, "{p}, a {sz} {c} {s}"),
    (0.6, "a {s} that is {c}"),
    (0.5, "a {c} {s} on a dark background"),
)
# Two-object full captions.  {n1}/{n2} noun phrases ("a [size] colour shape"), {p1}/{p2} positions.
_FULL_TWO: tuple[tuple[float, str], ...] = (
    (3.0, "{n1} {p1} next to {n2}"),
    (3.0, "{n1} {p1} and {n2} {p2}"),
    (2.0, "{n1} and {n2}"),
    (1.0, "there is {n1} {p1} and {n2} {p2}"),
    (1.0, "a picture of {n1} {p1} next to {n2}"),
    (1.0, "{c1} {s1} and {c2} {s2}"),
    (0.7, "two shapes: {n1} and {n2}"),
)
# Partial captions (about one object): only colour, only shape, or neither.
_PARTIAL: tuple[tuple[float, str], ...] = (
    (3.0, "a {c} object"),
    (1.0, "something {c}"),
    (0.7, "a {c} shape"),
    (0.7, "a {c} object {p}"),
    (3.0, "a {s}"),
    (1.0, "a {sz} {s}"),
    (0.7, "a {s} {p}"),
    (1.0, "a {sz} shape {p}"),
    (1.0, "a {sz} object"),
    (1.0, "an object {p}"),
)

_VOWEL_START = ("a", "e", "i", "o", "u")


def _fix_articles(text: str) -> str:
    """Turn "a" into "an" before a vowel ("an orange ring", "an object")."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "A") and words[i + 1][:1].lower() in _VOWEL_START:
            words[i] = words[i] + "n"
    return " ".join(words)


# Captions of objects painted with a multicolour pattern (see :func:`paint_patterns`): the templates
# above without the colour word ("a large triangle on the left", "a triangle").
_NO_COLOUR_ONE: tuple[tuple[float, str], ...] = tuple(
    (w, t.replace("{c} ", "")) for w, t in _FULL_ONE if "that is" not in t
) + tuple((w, t) for w, t in _PARTIAL if "{s}" in t)
_NO_COLOUR_TWO: tuple[tuple[float, str], ...] = tuple(
    (w, t.replace("{c1} ", "").replace("{c2} ", "")) for w, t in _FULL_TWO
)


# The noun phrase of two-object captions: {sz} and {c} are a size / colour word and a space, or empty.
_NOUN_PHRASE = "a {sz}{c}{s}"


def _noun_phrase(rng: np.random.Generator, o: WorldObject, p_size: float = 0.6, colour: bool = True) -> str:
    """'a [size] colour shape' (size word included with probability ``p_size``)."""
    sz = f"{_weighted(rng, _SIZE_WORDS[o.size])} " if rng.random() < p_size else ""
    return _NOUN_PHRASE.format(sz=sz, c=f"{o.colour} " if colour else "", s=o.shape)


def _one_object_caption(rng: np.random.Generator, templates, o: WorldObject) -> str:
    tpl = _weighted(rng, templates)
    text = tpl.format(
        c=o.colour,
        s=o.shape,
        sz=_weighted(rng, _SIZE_WORDS[o.size]),
        p=_weighted(rng, _POS_PHRASES[o.position]),
    )
    return _fix_articles(text)


def world_vocabulary() -> list[str]:
    """The words of the world's captions worth naming concepts with: colours, shapes, "object", "shape"
    and "background" (the bundled ``demo`` model learns it for background patches).  Size and position
    words are left out on purpose: they describe where an object sits in a whole image, so a patch of
    plain background lands near "middle" as easily as near "background".  Written to a trained model's
    folder as ``vocabulary.txt`` (see core.vocabulary.default_vocabulary); pass more words with ``--vocab``."""
    return list(dict.fromkeys([*COLOURS, *SHAPES, "object", "shape", "background"]))


def world_words() -> frozenset[str]:
    """Every word the world's text reaches a model with: the words of all caption templates (with and
    without colour), the values their fields take (colours, shapes, size words, position phrases, the
    noun phrase of two-object captions), "an" where :func:`_fix_articles` makes one, the zero-shot
    prompts of :func:`prompts_for` and :data:`BACKGROUND_PROMPT` (training's attribute and patch terms).

    Derived from those data structures, so a new template or colour is a known word at once. Written to
    a trained model's folder as ``known_words.txt`` (see core.vocabulary.known_words): a query word
    outside it is one the bundled ``demo`` model never saw."""
    import string

    from ..vocabulary import words_of

    templates = [t for group in (_FULL_ONE, _FULL_TWO, _PARTIAL, _NO_COLOUR_ONE, _NO_COLOUR_TWO) for _, t in group]
    values = [w for table in (_SIZE_WORDS, _POS_PHRASES) for options in table.values() for _, w in options]
    prompts = [v for attribute in ("colour", "shape", "size", "position") for v in prompts_for(attribute).values()]
    texts = [*templates, _NOUN_PHRASE, *values, *COLOURS, *SHAPES, *prompts, BACKGROUND_PROMPT]
    words = set(words_of(" ".join(lit for t in texts for lit, *_ in string.Formatter().parse(t))))
    return frozenset(words | {_fix_articles(f"a {w}").split(" ")[0] for w in words})


def caption_for(objects: Sequence[WorldObject], rng: np.random.Generator, *, colour: bool = True) -> str:
    """Sample a caption for a scene.

    About 80 % are *full* captions that name the colour and shape of every
    object (with size/position words in many templates); about 20 % are
    *partial* captions about one object that mention only its colour, only its
    shape, or only size/position ("a red object", "a triangle", "a small shape
    on the right").  Synonyms (big/little/middle) are used sparingly.

    ``colour=False`` gives captions without colour words, for objects painted
    with :func:`paint_patterns` ("a large triangle on the left", "a triangle").
    """
    if not objects:
        raise ValueError("need at least one object")
    if not colour:
        if len(objects) == 1:
            return _one_object_caption(rng, _NO_COLOUR_ONE, objects[0])
        o1, o2 = (objects[1], objects[0]) if rng.random() < 0.5 else (objects[0], objects[1])
        return _fix_articles(_weighted(rng, _NO_COLOUR_TWO).format(
            n1=_noun_phrase(rng, o1, colour=False), n2=_noun_phrase(rng, o2, colour=False),
            p1=_weighted(rng, _POS_PHRASES[o1.position]), p2=_weighted(rng, _POS_PHRASES[o2.position]),
            s1=o1.shape, s2=o2.shape))
    if rng.random() < _P_PARTIAL:
        o = objects[0] if len(objects) == 1 or rng.random() < 0.6 else objects[1]
        return _one_object_caption(rng, _PARTIAL, o)
    if len(objects) == 1:
        return _one_object_caption(rng, _FULL_ONE, objects[0])
    o1, o2 = objects[0], objects[1]
    if rng.random() < 0.5:  # mention either object first
        o1, o2 = o2, o1
    tpl = _weighted(rng, _FULL_TWO)
    text = tpl.format(
        n1=_noun_phrase(rng, o1),
        n2=_noun_phrase(rng, o2),
        p1=_weighted(rng, _POS_PHRASES[o1.position]),
        p2=_weighted(rng, _POS_PHRASES[o2.position]),
        c1=o1.colour,
        s1=o1.shape,
        c2=o2.colour,
        s2=o2.shape,
    )
    return _fix_articles(text)


# --------------------------------------------------------------------------
# Zero-shot prompts
# --------------------------------------------------------------------------


#: The prompt training ranks background patches against (core.train's dense term).
BACKGROUND_PROMPT = "the background"


def prompts_for(attribute: str) -> dict[str, str]:
    """Zero-shot prompts for one attribute, phrased as in the partial captions.

    ``"colour"`` (or ``"color"``) -> ``{"red": "a red object", ...}``;
    ``"shape"`` -> ``{"circle": "a circle", ...}``; ``"size"`` ->
    ``{"small": "a small object", ...}``; ``"position"`` ->
    ``{"left": "an object on the left", ...}``.
    """
    attr = attribute.lower()
    if attr in ("colour", "color"):
        return {c: _fix_articles(f"a {c} object") for c in COLOURS}
    if attr == "shape":
        return {s: _fix_articles(f"a {s}") for s in SHAPES}
    if attr == "size":
        return {s: f"a {s} object" for s in SIZES}
    if attr == "position":
        return {p: f"an object {_POS_PHRASES[p][0][1]}" for p in POSITIONS}
    raise ValueError(f"unknown attribute {attribute!r}; expected colour, shape, size or position")
