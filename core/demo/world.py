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
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

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
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

#: Canonical RGB of every object colour name.  Chosen bright/saturated so they
#: stand out on the muted backgrounds and are far apart from each other.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 35, 35),
    "orange": (255, 140, 20),
    "yellow": (250, 228, 40),
    "green": (40, 200, 60),
    "cyan": (30, 220, 230),
    "blue": (40, 90, 250),
    "purple": (165, 60, 230),
    "white": (245, 245, 245),
}

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checkers", "noise", "blotches")

#: (colour, shape) pairs that never occur with ``combos="train"``.  Every
#: colour is held out with exactly one shape; triangle and square are held out
#: twice, the other shapes once, so each shape keeps >= 6 training colours.
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("orange", "circle"),
        ("yellow", "square"),
        ("green", "star"),
        ("cyan", "cross"),
        ("blue", "ring"),
        ("purple", "square"),
        ("white", "triangle"),
    }
)

_ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
#: (colour, shape) pairs used for training, in a fixed order.
TRAIN_COMBOS: tuple[tuple[str, str], ...] = tuple(p for p in _ALL_COMBOS if p not in HELDOUT_COMBOS)
_HELDOUT_SORTED: tuple[tuple[str, str], ...] = tuple(p for p in _ALL_COMBOS if p in HELDOUT_COMBOS)

Combos = Literal["train", "heldout", "all"]
_COMBO_CHOICES = ("train", "heldout", "all")

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
# Data classes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldObject:
    """One object of a scene: a named shape, colour, size and position."""

    shape: str
    colour: str
    size: str
    position: str


@dataclass
class WorldItem:
    """A generated image with its caption, objects, background kind and mask.

    ``mask`` is ``(H, W)`` uint8: 0 = background, ``i`` = pixel belongs to the
    ``i``-th object of ``objects`` (1-based).  Where objects overlap, the
    object drawn later wins (larger objects are drawn first).
    """

    image: Image.Image
    mask: np.ndarray
    caption: str
    objects: tuple[WorldObject, ...]
    background: str

    def attrs(self) -> dict[str, Any]:
        """Flat, JSON-able metadata of the item (second-object keys are None if absent)."""
        o1 = self.objects[0]
        o2 = self.objects[1] if len(self.objects) > 1 else None
        return {
            "n_objects": len(self.objects),
            "shape": o1.shape,
            "colour": o1.colour,
            "size": o1.size,
            "position": o1.position,
            "shape2": o2.shape if o2 else None,
            "colour2": o2.colour if o2 else None,
            "size2": o2.size if o2 else None,
            "position2": o2.position if o2 else None,
            "background": self.background,
        }


# --------------------------------------------------------------------------
# Small fast random helpers (Generator.choice/integers are slow for scalars)
# --------------------------------------------------------------------------


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """Uniformly pick one element of a non-empty sequence."""
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform float in [lo, hi)."""
    return lo + (hi - lo) * rng.random()


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
# Sampling objects
# --------------------------------------------------------------------------


def sample_objects(
    rng: np.random.Generator, *, p_two: float = 0.35, combos: Combos | str = "train"
) -> tuple[WorldObject, ...]:
    """Sample the objects of one scene.

    One object, or two with probability ``p_two``.  Two objects never share a
    position, never have the same (colour, shape), and at most one of them is
    large (two large objects cannot both fit on the canvas).

    ``combos``: ``"train"`` -- every object is a training (colour, shape)
    combo; ``"heldout"`` -- the first object is a held-out combo and the second
    (if any) a training combo; ``"all"`` -- any combo.
    """
    if combos not in _COMBO_CHOICES:
        raise ValueError(f"combos must be one of {_COMBO_CHOICES}, got {combos!r}")
    if not 0.0 <= p_two <= 1.0:
        raise ValueError(f"p_two must be in [0, 1], got {p_two}")
    first_pool = {"train": TRAIN_COMBOS, "heldout": _HELDOUT_SORTED, "all": _ALL_COMBOS}[combos]
    second_pool = _ALL_COMBOS if combos == "all" else TRAIN_COMBOS

    two = rng.random() < p_two
    colour, shape = _pick(rng, first_pool)
    size = _pick(rng, SIZES)
    pos = _pick(rng, POSITIONS)
    first = WorldObject(shape=shape, colour=colour, size=size, position=pos)
    if not two:
        return (first,)
    while True:
        c2, s2 = _pick(rng, second_pool)
        if (c2, s2) != (colour, shape):
            break
    size2 = _pick(rng, SIZES)
    pos2 = _pick(rng, [p for p in POSITIONS if p != pos])
    if size == "large" and size2 == "large":
        if rng.random() < 0.5:
            first = WorldObject(shape=shape, colour=colour, size="small", position=pos)
        else:
            size2 = "small"
    return (first, WorldObject(shape=s2, colour=c2, size=size2, position=pos2))


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
        a = _pick(rng, (0.0, 0.25, 0.5, 0.75)) * math.pi + _uniform(rng, -0.2, 0.2)
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
    kind = background if background is not None else _pick(rng, BACKGROUNDS)
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
    folder as ``vocabulary.txt`` (see core.search.default_vocabulary); pass more words with ``--vocab``."""
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
    if combos not in _COMBO_CHOICES:
        raise ValueError(f"combos must be one of {_COMBO_CHOICES}, got {combos!r}")
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
