"""Ground truth for concept recovery: PACE's synthetic "Color" set and demo-world patch colours.

Color (after PACE's ``generate_data.py``): a 2×2 grid of cells; class 0 paints its coloured cells red and
yellow (alternately), class 1 blue and green; 0–2 random cells stay black; Gaussian noise; resized up
with bilinear interpolation so cell edges blend. Unlike PACE (which upsamples a 2×2 image, blending the
whole picture into one gradient), the grid is first drawn at ``base`` pixels (each cell ``base/2`` wide,
noise per base pixel), so the blend stays a band about one base pixel wide along the cell edges and every
patch has a dominant colour: the colour of the cell under it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOR_RGB = {"red": (1.0, 0.0, 0.0), "yellow": (1.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
             "green": (0.0, 1.0, 0.0), "black": (0.0, 0.0, 0.0)}
COLOR_CLASSES = (("red", "yellow"), ("blue", "green"))
BACKGROUND = "background"


@dataclass
class ColorSet:
    """``images`` (PIL RGB), ``labels`` (n,) int class, ``cells`` (n, 2, 2) colour names per cell."""

    images: list
    labels: np.ndarray
    cells: np.ndarray

    def pixel_labels(self, i: int, size: int) -> np.ndarray:
        """(size, size) colour name of the cell under every pixel of image ``i`` at ``size`` px."""
        half = (np.arange(size) * 2) // size
        return self.cells[i][half[:, None], half[None, :]]


def color_dataset(n: int, *, seed: int = 0, image_size: int = 64, base: int = 8, noise: float = 0.1) -> ColorSet:
    """``n`` Color images (half of each class, interleaved), deterministic for a seed."""
    from PIL import Image

    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if base < 2 or base % 2:
        raise ValueError(f"base must be an even number >= 2; got {base}")
    rng = np.random.default_rng(seed)
    images, labels, cells = [], [], []
    half = base // 2
    for i in range(n):
        cls = i % 2
        n_black = int(rng.integers(0, 3))
        grid = np.full((2, 2), "black", dtype=object)
        locs = rng.permutation(4)[: 4 - n_black]
        for idx, loc in enumerate(locs):
            grid[loc // 2, loc % 2] = COLOR_CLASSES[cls][idx % 2]
        small = np.zeros((base, base, 3))
        for r in range(2):
            for c in range(2):
                small[r * half:(r + 1) * half, c * half:(c + 1) * half] = COLOR_RGB[grid[r, c]]
        small = np.clip(small + rng.normal(0.0, noise, small.shape), 0.0, 1.0)
        im = Image.fromarray((small * 255 + 0.5).astype(np.uint8)).resize((image_size, image_size),
                                                                           Image.Resampling.BILINEAR)
        images.append(im)
        labels.append(cls)
        cells.append(grid)
    return ColorSet(images, np.asarray(labels), np.asarray(cells, dtype=object))


def patch_majority_codes(codes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Most frequent integer code (>= 0) of the pixels under each patch, for a batch of label maps:
    ``codes`` (B, H, W) -> (B, gh * gw) int64 (row-major patches). Ties go to the smallest code.
    H and W must be multiples of the grid."""
    c = np.asarray(codes)
    gh, gw = grid
    B, H, W = c.shape
    if H % gh or W % gw:
        raise ValueError(f"label map {(H, W)} does not split into a {gh}x{gw} patch grid")
    cells = c.reshape(B, gh, H // gh, gw, W // gw).transpose(0, 1, 3, 2, 4).reshape(B, gh * gw, -1)
    counts = np.stack([(cells == v).sum(2) for v in range(int(c.max(initial=0)) + 1)], axis=2)
    return counts.argmax(2)


def patch_majority(pixel_labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Most frequent label of the pixels under each patch: (gh * gw,) object array (row-major).

    ``pixel_labels`` (H, W) is in the model's input frame; H and W must be multiples of the grid.
    Ties go to the label that sorts first.
    """
    lab = np.asarray(pixel_labels, dtype=object)
    names, codes = np.unique(lab.astype(str), return_inverse=True)  # sorted: the smallest code sorts first
    return names[patch_majority_codes(codes.reshape(1, *lab.shape), grid)[0]].astype(object)


def world_pixel_colours(mask: np.ndarray, colours) -> np.ndarray:
    """Object mask (0 = background, i = i-th object) -> colour name per pixel ('background' for 0)."""
    names = np.asarray([BACKGROUND] + [str(c) for c in colours], dtype=object)
    m = np.asarray(mask)
    if m.max(initial=0) >= len(names):
        raise ValueError(f"mask has object index {int(m.max())} but only {len(colours)} colours were given")
    return names[m]


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to (H, W) (the model's input frame of a square image)."""
    lab = np.asarray(labels, dtype=object)
    H, W = size
    rows = (np.arange(H) * lab.shape[0]) // H
    cols = (np.arange(W) * lab.shape[1]) // W
    return lab[rows[:, None], cols[None, :]]
