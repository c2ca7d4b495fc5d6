"""Tests for the procedural demo world (core.demo.world)."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest

from core.demo import world
from core.demo.world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT_COMBOS,
    POSITIONS,
    SHAPES,
    SIZES,
    WorldItem,
    WorldObject,
    caption_for,
    generate,
    iter_generate,
    paint_patterns,
    prompts_for,
    render,
    sample_objects,
    world_words,
)

_COLOUR_NAMES = list(COLOURS)
_REF = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float64)


@pytest.fixture(scope="module")
def items() -> list[WorldItem]:
    """A shared sample of 2,000 training items."""
    return generate(2000, seed=1234)


def _words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+", caption.lower()))


def _nearest_colour(rgb: np.ndarray) -> str:
    return _COLOUR_NAMES[int(np.linalg.norm(_REF - rgb, axis=1).argmin())]


def _is_full(item: WorldItem) -> bool:
    w = _words(item.caption)
    return all(o.colour in w and o.shape in w for o in item.objects)


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_covers_requirements() -> None:
    assert {"circle", "square", "triangle", "star", "cross", "ring"} <= set(SHAPES)
    assert {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"} <= set(COLOURS)
    assert SIZES == ("small", "large")
    assert POSITIONS == ("left", "right", "top", "bottom", "center")


def test_heldout_combos_leave_every_colour_and_shape_in_training() -> None:
    assert len(HELDOUT_COMBOS) == 8
    for c, s in HELDOUT_COMBOS:
        assert c in COLOURS and s in SHAPES
    per_colour = collections.Counter(c for c, _ in HELDOUT_COMBOS)
    assert set(per_colour) == set(COLOURS) and set(per_colour.values()) == {1}
    for s in SHAPES:
        train_colours = [c for c in COLOURS if (c, s) not in HELDOUT_COMBOS]
        assert len(train_colours) >= 5
    assert set(world.TRAIN_COMBOS).isdisjoint(HELDOUT_COMBOS)
    assert len(world.TRAIN_COMBOS) == len(COLOURS) * len(SHAPES) - 8


# ---------------------------------------------------------------- determinism


def test_generate_is_deterministic() -> None:
    a = generate(40, seed=7)
    b = generate(40, seed=7)
    for x, y in zip(a, b):
        assert x.image.tobytes() == y.image.tobytes()
        assert np.array_equal(x.mask, y.mask)
        assert x.caption == y.caption
        assert x.objects == y.objects and x.background == y.background
    c = generate(40, seed=8)
    assert sum(x.image.tobytes() != z.image.tobytes() for x, z in zip(a, c)) >= 38
    assert [x.caption for x in a] != [z.caption for z in c]


def test_iter_generate_matches_generate_and_shards() -> None:
    full = generate(12, seed=3, p_two=0.5)
    streamed = list(iter_generate(12, seed=3, p_two=0.5))
    shard = list(iter_generate(5, seed=3, p_two=0.5, start=7))
    assert [i.image.tobytes() for i in streamed] == [i.image.tobytes() for i in full]
    assert [i.caption for i in shard] == [i.caption for i in full[7:]]
    assert [i.image.tobytes() for i in shard] == [i.image.tobytes() for i in full[7:]]


# ---------------------------------------------------------------- items and metadata


def test_item_structure_and_attrs(items: list[WorldItem]) -> None:
    for it in items[:200]:
        assert it.image.mode == "RGB" and it.image.size == (64, 64)
        assert it.mask.shape == (64, 64) and it.mask.dtype == np.uint8
        assert set(np.unique(it.mask)) <= set(range(len(it.objects) + 1))
        assert it.background in BACKGROUNDS
        attrs = it.attrs()
        json.dumps(attrs)
        assert attrs["n_objects"] == len(it.objects)
        o1 = it.objects[0]
        assert (attrs["shape"], attrs["colour"], attrs["size"], attrs["position"]) == (
            o1.shape, o1.colour, o1.size, o1.position,
        )
        if len(it.objects) == 1:
            assert attrs["shape2"] is None and attrs["colour2"] is None
            assert attrs["size2"] is None and attrs["position2"] is None
        else:
            assert attrs["colour2"] == it.objects[1].colour
            assert attrs["position2"] == it.objects[1].position


def test_every_attribute_value_occurs(items: list[WorldItem]) -> None:
    seen: dict[str, collections.Counter] = {k: collections.Counter() for k in ("s", "c", "z", "p", "b")}
    n_two = 0
    for it in items:
        n_two += len(it.objects) == 2
        seen["b"][it.background] += 1
        for o in it.objects:
            seen["s"][o.shape] += 1
            seen["c"][o.colour] += 1
            seen["z"][o.size] += 1
            seen["p"][o.position] += 1
    assert set(seen["s"]) == set(SHAPES)
    assert set(seen["c"]) == set(COLOURS)
    assert set(seen["z"]) == set(SIZES)
    assert set(seen["p"]) == set(POSITIONS)
    assert set(seen["b"]) == set(BACKGROUNDS)
    for counter in seen.values():  # roughly balanced
        assert min(counter.values()) > 0.3 * max(counter.values())
    assert 0.28 < n_two / len(items) < 0.42


def test_two_objects_never_share_a_position() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        objs = sample_objects(rng, p_two=1.0)
        assert len(objs) == 2
        assert objs[0].position != objs[1].position
        assert (objs[0].colour, objs[0].shape) != (objs[1].colour, objs[1].shape)
        assert not (objs[0].size == "large" and objs[1].size == "large")


def test_heldout_combos_respected(items: list[WorldItem]) -> None:
    for it in items:
        for o in it.objects:
            assert (o.colour, o.shape) not in HELDOUT_COMBOS
    rng = np.random.default_rng(1)
    firsts = set()
    for _ in range(1000):
        objs = sample_objects(rng, p_two=0.5, combos="heldout")
        assert (objs[0].colour, objs[0].shape) in HELDOUT_COMBOS
        firsts.add((objs[0].colour, objs[0].shape))
        for o in objs[1:]:
            assert (o.colour, o.shape) not in HELDOUT_COMBOS
    assert firsts == set(HELDOUT_COMBOS)
    held = generate(30, seed=5, combos="heldout")
    assert all((i.objects[0].colour, i.objects[0].shape) in HELDOUT_COMBOS for i in held)
    rng = np.random.default_rng(2)
    all_pairs = {(o.colour, o.shape) for _ in range(3000) for o in sample_objects(rng, combos="all")}
    assert all_pairs >= HELDOUT_COMBOS
    with pytest.raises(ValueError):
        sample_objects(rng, combos="nope")


# ---------------------------------------------------------------- captions


def test_captions_mention_objects(items: list[WorldItem]) -> None:
    colour_words, shape_words = set(COLOURS), set(SHAPES)
    n_partial = 0
    for it in items:
        w = _words(it.caption)
        assert it.caption == it.caption.strip() and it.caption
        own_colours = {o.colour for o in it.objects}
        own_shapes = {o.shape for o in it.objects}
        # never mention a colour/shape that is not in the image
        assert (w & colour_words) <= own_colours, it.caption
        assert (w & shape_words) <= own_shapes, it.caption
        if not _is_full(it):
            n_partial += 1
            # partial captions still say something true about an object
            assert w & (own_colours | own_shapes | {"small", "little", "large", "big", "left", "right",
                                                    "top", "bottom", "center", "middle"}), it.caption
        assert " a a" not in it.caption and not re.search(r"\ba [aeiou]", it.caption), it.caption
    frac = n_partial / len(items)
    assert 0.15 <= frac <= 0.25, frac


def test_caption_variety_and_canonical_words(items: list[WorldItem]) -> None:
    caps = [it.caption for it in items]
    assert len(set(caps)) > 0.6 * len(caps)
    text = " ".join(caps)
    count = lambda word: len(re.findall(rf"\b{word}\b", text))  # noqa: E731
    assert count("large") > 2 * count("big") > 0
    assert count("small") > 2 * count("little") > 0
    assert count("center") > 2 * count("middle") > 0
    # the zero-shot prompts occur verbatim as captions (in-distribution)
    for attr in ("colour", "shape"):
        for prompt in prompts_for(attr).values():
            assert prompt in caps, prompt


def test_caption_for_two_objects_mentions_both() -> None:
    rng = np.random.default_rng(9)
    objs = (WorldObject("star", "blue", "small", "top"), WorldObject("square", "green", "large", "left"))
    full = 0
    for _ in range(300):
        w = _words(caption_for(objs, rng))
        if {"blue", "star", "green", "square"} <= w:
            full += 1
        else:
            assert not ({"blue", "green"} <= w and {"star", "square"} <= w)
    assert 0.7 < full / 300 < 0.9


def test_colourless_captions_name_shapes_but_no_colour() -> None:
    rng = np.random.default_rng(3)
    one = (WorldObject("triangle", "red", "large", "left"),)
    two = (WorldObject("star", "blue", "small", "top"), WorldObject("square", "green", "large", "left"))
    for objs in (one, two):
        caps = [caption_for(objs, rng, colour=False) for _ in range(300)]
        for c in caps:
            w = _words(c)
            assert not w & set(COLOURS), c
            assert w & {o.shape for o in objs}, c
            assert "  " not in c and not re.search(r"\ba [aeiou]", c), c
        assert len(set(caps)) > 15
    assert any(_words(c) >= {"star", "square"} for c in caps)


def test_paint_patterns_repaints_only_objects_with_several_colours(items: list[WorldItem]) -> None:
    rng = np.random.default_rng(5)
    singles = [it for it in items if len(it.objects) == 1][:200]
    n_multi = 0
    for it in singles:
        img = np.asarray(it.image)
        out = paint_patterns(img, it.mask, rng)
        assert out.dtype == np.uint8 and out.shape == img.shape
        changed = np.any(out != img, axis=-1)
        grown = np.zeros_like(changed)
        ys, xs = np.nonzero(it.mask)
        for dy in (-1, 0, 1):  # the mask grown by one pixel (the antialiased rim)
            for dx in (-1, 0, 1):
                grown[np.clip(ys + dy, 0, 63), np.clip(xs + dx, 0, 63)] = True
        assert not (changed & ~grown).any(), "background untouched"
        px = out[it.mask > 0].astype(np.float64)
        # the fill is not one named colour: its pixels fall to several nearest colour names
        names = collections.Counter(_nearest_colour(p) for p in px[:: max(1, len(px) // 60)])
        n_multi += sum(v >= 3 for v in names.values()) >= 2
    assert n_multi / len(singles) > 0.8


def test_prompts_for() -> None:
    col = prompts_for("colour")
    assert col["red"] == "a red object" and col["orange"] == "an orange object"
    assert set(col) == set(COLOURS) and prompts_for("color") == col
    shp = prompts_for("shape")
    assert shp["circle"] == "a circle" and set(shp) == set(SHAPES)
    assert prompts_for("size") == {"small": "a small object", "large": "a large object"}
    pos = prompts_for("position")
    assert pos["left"] == "an object on the left" and set(pos) == set(POSITIONS)
    with pytest.raises(ValueError):
        prompts_for("texture")


# ---------------------------------------------------------------- pixels and masks


def test_object_pixels_have_the_named_colour(items: list[WorldItem]) -> None:
    singles = [it for it in items if len(it.objects) == 1]
    assert len(singles) > 1000
    right = 0
    for it in singles:
        px = np.asarray(it.image, dtype=np.float64)[it.mask == 1]
        assert len(px) > 30
        right += _nearest_colour(px.mean(axis=0)) == it.objects[0].colour
    assert right / len(singles) >= 0.95


def test_colour_jitter_keeps_colour_name() -> None:
    rng = np.random.default_rng(4)
    for name in COLOURS:
        for _ in range(300):
            assert _nearest_colour(world._jitter_colour(rng, name)) == name


def test_background_is_muted_and_unlike_object_colours(items: list[WorldItem]) -> None:
    means = []
    for it in items[:500]:
        arr = np.asarray(it.image, dtype=np.float64)
        bg = arr[it.mask == 0]
        # mean of per-pixel distance to the nearest object colour
        d = np.linalg.norm(bg[:, None, :] - _REF[None], axis=2).min(axis=1)
        means.append(d.mean())
        mean_rgb = bg.mean(axis=0)
        assert mean_rgb.max() - mean_rgb.min() < 45  # low saturation
        assert mean_rgb.max() < 150  # not bright
    assert min(means) > 80
    assert np.mean(means) > 110


def test_every_background_kind_renders() -> None:
    rng = np.random.default_rng(11)
    obj = (WorldObject("circle", "white", "small", "center"),)
    for kind in BACKGROUNDS:
        img, mask, got = render(obj, rng, background=kind)
        assert got == kind and img.size == (64, 64)
        bg = np.asarray(img, dtype=np.float64)[mask == 0]
        assert bg.max() <= 200, kind
    with pytest.raises(ValueError):
        render(obj, rng, background="sparkles")


def test_mask_area_large_greater_than_small(items: list[WorldItem]) -> None:
    area: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for it in items:
        if len(it.objects) == 1:
            o = it.objects[0]
            area[(o.shape, o.size)].append(int((it.mask == 1).sum()))
    for shape in SHAPES:
        assert np.mean(area[(shape, "large")]) > 2 * np.mean(area[(shape, "small")]), shape
        # small objects stay visible at 64 px, large ones well within the canvas
        assert min(area[(shape, "small")]) >= 40
        assert max(area[(shape, "large")]) < 0.45 * 64 * 64


def test_objects_inside_canvas_and_position_regions(items: list[WorldItem]) -> None:
    for it in items:
        if len(it.objects) != 1:
            continue
        ys, xs = np.nonzero(it.mask == 1)
        assert xs.min() >= 0 and xs.max() <= 63 and ys.min() >= 0 and ys.max() <= 63
        cx, cy = xs.mean() / 63, ys.mean() / 63
        pos = it.objects[0].position
        if pos == "left":
            assert cx < 0.4
        elif pos == "right":
            assert cx > 0.6
        elif pos == "top":
            assert cy < 0.42  # star/triangle centroids sit a bit below the bbox centre
        elif pos == "bottom":
            assert cy > 0.6
        else:
            assert 0.38 < cx < 0.62 and 0.38 < cy < 0.64


def test_two_object_masks_keep_both_objects_visible() -> None:
    for it in generate(300, seed=21, p_two=1.0):
        for i in (1, 2):
            assert (it.mask == i).sum() >= 30


def test_other_image_sizes() -> None:
    it = generate(2, seed=0, image_size=32)[0]
    assert it.image.size == (32, 32) and it.mask.shape == (32, 32)
    with pytest.raises(ValueError):
        generate(1, seed=0, image_size=8)


def test_world_words_are_exactly_the_words_of_captions_and_prompts() -> None:
    """world_words() (derived from the grammar) holds every word of thousands of sampled captions, with
    and without colour words, of the zero-shot prompts and of the background prompt, and nothing else."""
    from core.vocabulary import words_of

    known, seen = world_words(), set()
    rng = np.random.default_rng(11)
    for _ in range(3000):
        objs = sample_objects(rng, p_two=0.4, combos="all")
        for colour in (True, False):
            caption = caption_for(objs, rng, colour=colour)
            words = words_of(caption)
            assert set(words) <= known, (caption, set(words) - known)
            seen.update(words)
    prompts = [v for a in ("colour", "shape", "size", "position") for v in prompts_for(a).values()]
    seen.update(w for text in [*prompts, world.BACKGROUND_PROMPT] for w in words_of(text))
    assert seen == known, f"never produced: {sorted(known - seen)}"
    assert {"an", "crimson", "disc", "cat"} & known == {"an"}
