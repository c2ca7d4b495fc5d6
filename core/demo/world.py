"""Procedural "world" of captioned images for training and probing a small CLIP.

Every image holds one or two flat-coloured geometric objects (shape, colour,
size, position) on a muted background (plain, gradient, stripes, checkers,
noise or smooth blotches).  Each item keeps its attributes as metadata and a
per-pixel object mask, which gives patch-level ground truth for concept
explanations.

Design notes
------------
* Objects are rasterised at 4x resolution (one small crop per object) with
  :mod:`PIL.ImageDraw` and box-downsampled, which gives an antialiased coverage
  map ("alpha").  The image is ``background * (1 - alpha) + colour * alpha``
  per object; the mask is the majority vote of the hi-res pixels
  (``alpha >= 0.5``).
* Backgrounds are generated directly at the output resolution with vectorised
  numpy and are always low-saturation, mid-dark colours, so that every object
  colour (white and yellow included) stays visible and no background reads as
  an object colour.
* Generation is deterministic: item ``i`` of ``generate(n, seed=s)`` only
  depends on ``(s, i)`` (its own :class:`numpy.random.Generator`), so sets can
  be generated in shards (``iter_generate(..., start=k)``) and prefixes agree.
* ``HELDOUT_COMBOS`` are (colour, shape) pairs never produced with
  ``combos="train"``; each colour is held out with exactly one shape, so every
  colour and every shape still occurs in training with other partners.

This module renders scenes and generates items; what a scene is made of (vocabulary, combos, the data
classes, :func:`sample_objects`) is :mod:`core.demo.objects`, and its language (captions, prompts, the
words a model trained on the world knows) :mod:`core.demo.captions`.  Every name of both stays importable
from here.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .captions import BACKGROUND_PROMPT, caption_for, prompts_for, world_vocabulary, world_words
from .objects import (
    BACKGROUNDS,
    COLOURS,
    COMBO_CHOICES,
    HELDOUT_COMBOS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_COMBOS,
    Combos,
    WorldItem,
    WorldObject,
    pick,
    sample_objects,
)

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "BACKGROUNDS",
    "HELDOUT_COMBOS",
    "TRAIN_COMBOS",
    "WorldObject",
    "WorldItem",
    "sample_objects",
    "render",
    "caption_for",
    "paint_patterns",
    "generate",
    "iter_generate",
    "prompts_for",
    "BACKGROUND_PROMPT",
    "world_vocabulary",
    "world_words",
]

logger = logging.getLogger(__name__)


# Size ranges as fractions of the image side (extent of the unrotated shape).
_SIZE_RANGE: dict[str, tuple[float, float]] = {"small": (0.26, 0.34), "large": (0.42, 0.55)}
# Nominal centres (x, y) as fractions of the image side.
_POS_CENTRE: dict[str, tuple[float, float]] = {
    "left": (0.26, 0.5),
    "right": (0.74, 0.5),
    "top": (0.5, 0.26),
    "bottom": (0.5, 0.74),
    "center": (0.5, 0.5),
}
_POS_JITTER_MAIN = 0.04  # along the axis that defines the position
_POS_JITTER_FREE = 0.07  # along the other axis
_MARGIN = 0.025  # minimum distance of an object's bbox from the border
_MAX_PUSH = 0.07  # how far two overlapping objects may be pushed apart (each)
_SUPERSAMPLE = 4

# Rotation range (degrees) per shape; circle/ring are rotation invariant.
_ROTATION: dict[str, float] = {
    "circle": 0.0,
    "ring": 0.0,
    "square": 15.0,
    "triangle": 12.0,
    "star": 18.0,
    "cross": 12.0,
}
_RING_INNER = 0.52  # inner radius / outer radius
_STAR_INNER = 0.46
_SQUARE_SIDE = 0.86  # relative to the size (so squares don't look bigger than circles)
_CROSS_HALF_THICK = 0.18


def _unit_polygons() -> dict[str, tuple[tuple[float, float], ...]]:
    """Return the polygon of each polygonal shape in units of its size.

    Coordinates are centred on the shape's bounding-box centre and lie within
    [-0.5, 0.5]; y grows downwards (image coordinates).
    """
    h = _SQUARE_SIDE / 2
    square = ((-h, -h), (h, -h), (h, h), (-h, h))
    th = math.sqrt(3) / 4  # half height of an equilateral triangle of width 1
    triangle = ((0.0, -th), (0.5, th), (-0.5, th))
    star = []
    for k in range(10):
        r = 0.5 if k % 2 == 0 else 0.5 * _STAR_INNER
        a = -math.pi / 2 + k * math.pi / 5
        star.append((r * math.cos(a), r * math.sin(a)))
    # centre the star's bbox vertically (its top point is higher than the bottom ones)
    ys = [p[1] for p in star]
    dy = (max(ys) + min(ys)) / 2
    star = [(x, y - dy) for x, y in star]
    t = _CROSS_HALF_THICK
    cross = (
        (-t, -0.5), (t, -0.5), (t, -t), (0.5, -t), (0.5, t), (t, t),
        (t, 0.5), (-t, 0.5), (-t, t), (-0.5, t), (-0.5, -t), (-t, -t),
    )
    return {"square": square, "triangle": triangle, "star": tuple(star), "cross": cross}


_UNIT_POLY = _unit_polygons()


def _hue_jitter_limits() -> dict[str, tuple[float, float, float, float]]:
    """Per colour: (h, s, v) of the canonical RGB and the max hue jitter.

    The hue jitter is at most 0.04 (4 % of the hue circle) and at most 25 % of
    the hue gap to the nearest other chromatic colour, so a jittered colour
    never drifts into a neighbouring colour name.
    """
    hsv = {n: colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb)) for n, rgb in COLOURS.items()}
    chroma = [n for n, (_, s, _) in hsv.items() if s > 0.2]
    out: dict[str, tuple[float, float, float, float]] = {}
    for n, (h, s, v) in hsv.items():
        if n in chroma:
            gap = min(
                min(abs(h - hsv[m][0]), 1 - abs(h - hsv[m][0])) for m in chroma if m != n
            )
            out[n] = (h, s, v, min(0.04, 0.25 * gap))
        else:
            out[n] = (h, s, v, 0.0)
    return out


_COLOUR_HSV = _hue_jitter_limits()
_VALUE_JITTER = 0.08


# --------------------------------------------------------------------------
# Small fast random helper (Generator.uniform is slow for scalars)
# --------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform float in [lo, hi)."""
    return lo + (hi - lo) * rng.random()


# --------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1) as float32 ``(yy, xx)`` of shape (size, size)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[:, None].repeat(size, axis=1), c[None, :].repeat(size, axis=0)


def _muted(rng: np.random.Generator, v_lo: float = 0.16, v_hi: float = 0.46) -> np.ndarray:
    """A random low-saturation, mid-dark RGB colour (float32, 0..255)."""
    h = rng.random()
    s = _uniform(rng, 0.0, 0.22)
    v = _uniform(rng, v_lo, v_hi)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def _muted_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two muted tones of similar hue with a visible but moderate value contrast."""
    h = rng.random()
    h2 = (h + _uniform(rng, -0.15, 0.15)) % 1.0
    s1, s2 = _uniform(rng, 0.0, 0.22), _uniform(rng, 0.0, 0.22)
    v1 = _uniform(rng, 0.16, 0.36)
    v2 = min(v1 + _uniform(rng, 0.07, 0.16), 0.5)
    if rng.random() < 0.5:
        v1, v2 = v2, v1
    c1 = np.array(colorsys.hsv_to_rgb(h, s1, v1), dtype=np.float32) * 255.0
    c2 = np.array(colorsys.hsv_to_rgb(h2, s2, v2), dtype=np.float32) * 255.0
    return c1, c2


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Render a muted background of the given kind as float32 (size, size, 3) in 0..255."""
    yy, xx = _grid(size)
    if kind == "plain":
        out = np.empty((size, size, 3), dtype=np.float32)
        out[:] = _muted(rng)
        return out
    if kind == "noise":
        base = _muted(rng, 0.2, 0.42)
        sigma = _uniform(rng, 6.0, 16.0)
        n = rng.standard_normal((size, size, 1), dtype=np.float32) * sigma
        chan = rng.standard_normal((size, size, 3), dtype=np.float32) * (sigma * 0.25)
        return base + n + chan
    c1, c2 = _muted_pair(rng)
    if kind == "gradient":
        a = rng.random() * 2 * math.pi
        t = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a)
        t = t * (1.0 / math.sqrt(2)) + 0.5
    elif kind == "stripes":
        a = pick(rng, (0.0, 0.25, 0.5, 0.75)) * math.pi + _uniform(rng, -0.2, 0.2)
        period = _uniform(rng, 5.0, 14.0) / size
        u = (xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period) + rng.random() * 2 * math.pi
        # soft-edged square wave (no staircase aliasing at 64 px); offset varies the duty cycle
        sharp = _uniform(rng, 1.5, 3.0)
        t = np.clip(0.5 + sharp * (np.cos(u) - _uniform(rng, -0.3, 0.3)), 0.0, 1.0)
    elif kind == "checkers":
        cell = int(_uniform(rng, 4.0, 11.0))
        ox, oy = int(rng.random() * cell), int(rng.random() * cell)
        i = (np.arange(size) + oy) // cell
        j = (np.arange(size) + ox) // cell
        t = ((i[:, None] + j[None, :]) % 2).astype(np.float32)
    elif kind == "blotches":
        k = int(_uniform(rng, 3.0, 7.0))
        small = (rng.random((k, k)) * 255).astype(np.uint8)
        t = np.asarray(
            Image.fromarray(small).resize((size, size), Image.BICUBIC), dtype=np.float32
        ) * (1.0 / 255.0)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUNDS}")
    return c1 + t[..., None] * (c2 - c1)


# --------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------


def _jitter_colour(rng: np.random.Generator, name: str) -> np.ndarray:
    """Canonical colour with slight hue/value jitter that keeps its colour name."""
    h, s, v, hj = _COLOUR_HSV[name]
    if hj > 0:
        h = (h + _uniform(rng, -hj, hj)) % 1.0
        s = min(1.0, s * _uniform(rng, 0.9, 1.05))
    v = min(1.0, v * (1.0 + _uniform(rng, -_VALUE_JITTER, _VALUE_JITTER)))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


@dataclass
class _Placed:
    """Geometry of one object in hi-res pixel coordinates."""

    index: int  # 1-based index in the objects tuple
    obj: WorldObject
    d: float  # size (extent) in hi-res px
    cx: float
    cy: float
    angle: float  # radians
    rel: tuple[tuple[float, float], ...] | None  # polygon relative to (cx, cy); None for circle/ring
    half_w: float
    half_h: float


def _place(rng: np.random.Generator, obj: WorldObject, index: int, hi: int) -> _Placed:
    """Sample size, rotation and jittered centre of one object (hi-res px)."""
    lo_f, hi_f = _SIZE_RANGE[obj.size]
    d = _uniform(rng, lo_f, hi_f) * hi
    rot = _ROTATION[obj.shape]
    angle = math.radians(_uniform(rng, -rot, rot)) if rot > 0 else 0.0
    if obj.shape in _UNIT_POLY:
        ca, sa = math.cos(angle), math.sin(angle)
        rel = tuple((d * (x * ca - y * sa), d * (x * sa + y * ca)) for x, y in _UNIT_POLY[obj.shape])
        xs = [p[0] for p in rel]
        ys = [p[1] for p in rel]
        # re-centre on the rotated bbox so that clamping is symmetric
        mx, my = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
        rel = tuple((x - mx, y - my) for x, y in rel)
        half_w, half_h = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    else:
        rel = None
        half_w = half_h = d / 2
    px, py = _POS_CENTRE[obj.position]
    if obj.position in ("left", "right"):
        jx, jy = _POS_JITTER_MAIN, _POS_JITTER_FREE
    elif obj.position in ("top", "bottom"):
        jx, jy = _POS_JITTER_FREE, _POS_JITTER_MAIN
    else:
        jx = jy = _POS_JITTER_MAIN
    cx = (px + _uniform(rng, -jx, jx)) * hi
    cy = (py + _uniform(rng, -jy, jy)) * hi
    p = _Placed(index, obj, d, cx, cy, angle, rel, half_w, half_h)
    _clamp(p, hi)
    return p


def _clamp(p: _Placed, hi: int) -> None:
    """Move an object so its bbox stays ``_MARGIN`` inside the canvas."""
    m = _MARGIN * hi
    p.cx = min(max(p.cx, m + p.half_w), hi - m - p.half_w)
    p.cy = min(max(p.cy, m + p.half_h), hi - m - p.half_h)


def _separate(a: _Placed, b: _Placed, hi: int) -> None:
    """Push two objects apart (a little) when their extents overlap."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    dist = math.hypot(dx, dy)
    need = 0.9 * (max(a.half_w, a.half_h) + max(b.half_w, b.half_h)) + 0.02 * hi
    if dist >= need or dist < 1e-6:
        return
    push = min((need - dist) / 2, _MAX_PUSH * hi)
    ux, uy = dx / dist, dy / dist
    a.cx -= ux * push
    a.cy -= uy * push
    b.cx += ux * push
    b.cy += uy * push
    _clamp(a, hi)
    _clamp(b, hi)


def _coverage(p: _Placed, hi: int, size: int) -> tuple[int, int, np.ndarray]:
    """Rasterise one object at hi-res in a crop, box-downsample it.

    Returns ``(y0, x0, alpha)`` where ``alpha`` is float32 coverage in [0, 1]
    of the output-resolution block starting at ``(y0, x0)``.
    """
    ss = _SUPERSAMPLE
    pad = 2.0
    x0 = max(0, math.floor((p.cx - p.half_w - pad) / ss))
    y0 = max(0, math.floor((p.cy - p.half_h - pad) / ss))
    x1 = min(size, math.ceil((p.cx + p.half_w + pad) / ss))
    y1 = min(size, math.ceil((p.cy + p.half_h + pad) / ss))
    w, h = (x1 - x0) * ss, (y1 - y0) * ss
    ox, oy = p.cx - x0 * ss, p.cy - y0 * ss
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if p.rel is not None:
        draw.polygon([(ox + x, oy + y) for x, y in p.rel], fill=255)
    else:
        r = p.d / 2
        draw.ellipse((ox - r, oy - r, ox + r, oy + r), fill=255)
        if p.obj.shape == "ring":
            ri = r * _RING_INNER
            draw.ellipse((ox - ri, oy - ri, ox + ri, oy + ri), fill=0)
    small = canvas.resize((x1 - x0, y1 - y0), Image.BOX)
    alpha = np.asarray(small, dtype=np.float32) * (1.0 / 255.0)
    return y0, x0, alpha


def render(
    objects: Sequence[WorldObject],
    rng: np.random.Generator,
    *,
    image_size: int = 64,
    background: str | None = None,
) -> tuple[Image.Image, np.ndarray, str]:
    """Render objects on a random muted background.

    Returns ``(image, mask, background_kind)``: an RGB image of
    ``image_size``², a uint8 mask (0 = background, i = i-th object, 1-based)
    and the background kind used (``background`` or a random one of
    :data:`BACKGROUNDS`).  Larger objects are drawn first so a small object is
    never hidden behind a large one; the later-drawn object wins in the mask.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not objects:
        raise ValueError("need at least one object")
    kind = background if background is not None else pick(rng, BACKGROUNDS)
    if kind not in BACKGROUNDS:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUNDS}")
    hi = image_size * _SUPERSAMPLE
    img = _background(rng, image_size, kind)
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    placed = [_place(rng, o, i + 1, hi) for i, o in enumerate(objects)]
    for i in range(len(placed)):
        for j in range(i + 1, len(placed)):
            _separate(placed[i], placed[j], hi)
    for p in sorted(placed, key=lambda q: -q.d):
        col = _jitter_colour(rng, p.obj.colour)
        y0, x0, alpha = _coverage(p, hi, image_size)
        h, w = alpha.shape
        region = img[y0 : y0 + h, x0 : x0 + w]
        a = alpha[..., None]
        region *= 1.0 - a
        region += a * col
        mask[y0 : y0 + h, x0 : x0 + w][alpha >= 0.5] = p.index
    np.clip(img, 0.0, 255.0, out=img)
    image = Image.fromarray((img + 0.5).astype(np.uint8))
    return image, mask, kind


# --------------------------------------------------------------------------
# Multicolour patterns (training augmentation)
# --------------------------------------------------------------------------


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A fill of 2-3 random saturated colours: stripes, checkers, blocky noise or a hue gradient.

    Float32 ``(size, size, 3)`` in 0..255.  No fill is a single colour, so a shape painted with it is
    not an instance of any (colour, shape) pair.
    """
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 3:  # hue gradient along a random direction
        a = rng.random() * 2 * math.pi
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / (float(np.ptp(t)) + 1e-6)
        h = (rng.random() + _uniform(rng, 0.3, 1.0) * t) % 1.0
        hsv = np.stack([h, np.full_like(t, _uniform(rng, 0.6, 1.0)), np.full_like(t, _uniform(rng, 0.6, 1.0))], -1)
        return np.asarray(Image.fromarray((hsv * 255).astype(np.uint8), "HSV").convert("RGB"), np.float32)
    k = int(rng.integers(2, 4))
    cols = np.array([colorsys.hsv_to_rgb(rng.random(), _uniform(rng, 0.5, 1.0), _uniform(rng, 0.5, 1.0))
                     for _ in range(k)], np.float32) * 255.0
    if kind == 0:  # stripes at a random angle
        a, w = rng.random() * math.pi, _uniform(rng, 2.0, 6.0)
        lab = np.floor((math.cos(a) * xx + math.sin(a) * yy) / w).astype(np.int64) % k
    elif kind == 1:  # checkers
        w = int(rng.integers(2, 6))
        lab = ((yy // w + xx // w).astype(np.int64)) % k
    else:  # blocky noise
        b = int(rng.integers(1, 5))
        lab = np.kron(rng.integers(0, k, size=(size // b + 1, size // b + 1)), np.ones((b, b), np.int64))[:size, :size]
    return cols[lab]


def paint_patterns(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Repaint every object of a rendered image with a multicolour pattern (uint8 copy).

    The object mask is grown by one pixel so the antialiased rim of the original colour is covered
    too.  Used in training (``core.train``) to show shapes without a colour, captioned with
    ``caption_for(..., colour=False)``; no (colour, shape) pair is shown by such an image.
    """
    from scipy.ndimage import maximum_filter

    out = np.array(image, dtype=np.uint8, copy=True)
    m = maximum_filter(np.asarray(mask) > 0, size=3)
    out[m] = _pattern(rng, out.shape[0])[m].astype(np.uint8)
    return out


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def _item(seed: int, index: int, image_size: int, p_two: float, combos: str) -> WorldItem:
    """Generate item ``index`` of the set with ``seed`` (depends only on both)."""
    rng = np.random.default_rng((int(seed), int(index)))
    objects = sample_objects(rng, p_two=p_two, combos=combos)
    image, mask, kind = render(objects, rng, image_size=image_size)
    caption = caption_for(objects, rng)
    return WorldItem(image=image, mask=mask, caption=caption, objects=objects, background=kind)


def iter_generate(
    n: int,
    *,
    seed: int,
    image_size: int = 64,
    p_two: float = 0.35,
    combos: Combos | str = "train",
    start: int = 0,
) -> Iterator[WorldItem]:
    """Yield ``n`` items lazily (items ``start .. start+n-1`` of the seed's sequence).

    Item ``i`` only depends on ``(seed, i)``, so ``iter_generate(n, seed=s,
    start=k)`` yields exactly ``generate(k + n, seed=s)[k:]`` -- handy for
    sharding a large set across processes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if combos not in COMBO_CHOICES:
        raise ValueError(f"combos must be one of {COMBO_CHOICES}, got {combos!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    logger.debug("generating %d world items (seed=%s, start=%d, size=%d, combos=%s)",
                 n, seed, start, image_size, combos)
    for i in range(start, start + n):
        yield _item(seed, i, image_size, p_two, combos)


def generate(
    n: int,
    *,
    seed: int,
    image_size: int = 64,
    p_two: float = 0.35,
    combos: Combos | str = "train",
) -> list[WorldItem]:
    """Generate ``n`` items; deterministic for the same arguments (byte-identical images)."""
    return list(iter_generate(n, seed=seed, image_size=image_size, p_two=p_two, combos=combos))
