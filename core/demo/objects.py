"""What a scene of the procedural world is made of: the vocabulary (shapes, colours, sizes, positions,
backgrounds), the held-out and training (colour, shape) combos, :class:`WorldObject` / :class:`WorldItem` and
:func:`sample_objects` (see :mod:`core.demo.world` for the design)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

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
#: The values ``combos`` takes.
COMBO_CHOICES = ("train", "heldout", "all")



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


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """Uniformly pick one element of a non-empty sequence."""
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


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
    if combos not in COMBO_CHOICES:
        raise ValueError(f"combos must be one of {COMBO_CHOICES}, got {combos!r}")
    if not 0.0 <= p_two <= 1.0:
        raise ValueError(f"p_two must be in [0, 1], got {p_two}")
    first_pool = {"train": TRAIN_COMBOS, "heldout": _HELDOUT_SORTED, "all": _ALL_COMBOS}[combos]
    second_pool = _ALL_COMBOS if combos == "all" else TRAIN_COMBOS

    two = rng.random() < p_two
    colour, shape = pick(rng, first_pool)
    size = pick(rng, SIZES)
    pos = pick(rng, POSITIONS)
    first = WorldObject(shape=shape, colour=colour, size=size, position=pos)
    if not two:
        return (first,)
    while True:
        c2, s2 = pick(rng, second_pool)
        if (c2, s2) != (colour, shape):
            break
    size2 = pick(rng, SIZES)
    pos2 = pick(rng, [p for p in POSITIONS if p != pos])
    if size == "large" and size2 == "large":
        if rng.random() < 0.5:
            first = WorldObject(shape=shape, colour=colour, size="small", position=pos)
        else:
            size2 = "small"
    return (first, WorldObject(shape=s2, colour=c2, size=size2, position=pos2))
