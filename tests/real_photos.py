"""A small workspace of real photographs with honest captions, from scikit-image's sample images.

The bundled ``demo`` model was trained on a procedural world of coloured shapes; these photographs (an
astronaut, a cup of coffee, a cat, ...) are far from anything it saw, so its image–caption retrieval on
them should be at chance. Each sample image becomes ``VARIANTS`` images (the whole picture, a seeded crop,
a mirror image with jittered brightness and contrast, ...) that share the picture's caption (stored once,
as a caption shared by several images is), so 17 pictures give 68 image–caption pairs over 17 captions.
"""
from __future__ import annotations

import io
import os

import numpy as np

# scikit-image sample (function in skimage.data) -> an honest caption of what the picture shows
PHOTOS = {
    "astronaut": "a photo of an astronaut",
    "coffee": "a cup of coffee on a saucer",
    "chelsea": "a photo of a cat",
    "camera": "a black and white photo of a man with a camera on a tripod",
    "rocket": "a rocket on its launch pad",
    "coins": "a photo of old coins",
    "horse": "the black silhouette of a horse",
    "moon": "the cratered surface of the moon",
    "page": "a scanned page of printed text",
    "text": "a photo of painted letters and numbers",
    "clock": "a photo of a clock on a wall",
    "hubble_deep_field": "galaxies in deep space seen by a telescope",
    "immunohistochemistry": "stained tissue under a microscope",
    "brick": "a brick wall",
    "grass": "a close-up of grass",
    "gravel": "a close-up of gravel",
    "cell": "a cell under a microscope",
}
VARIANTS = 4


def _rgb(name: str) -> np.ndarray:
    """The sample image as (h, w, 3) uint8 (grey and boolean pictures are repeated over three channels)."""
    import skimage.data

    x = np.asarray(getattr(skimage.data, name)())
    if x.dtype == bool:
        x = np.where(x, 0, 255).astype(np.uint8)  # skimage's horse is True on the animal: draw it black
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    return np.ascontiguousarray(x[:, :, :3]).astype(np.uint8)


def variants(x: np.ndarray, rng: np.random.Generator, n: int = VARIANTS) -> list[np.ndarray]:
    """``n`` versions of one picture (h, w, 3) uint8: as it is, a random crop of 60–85 % of each side, a
    mirror image, and further crops, each mirrored or not, with brightness and contrast jittered by up to
    ±20 %. Seeded by ``rng``."""
    h, w = x.shape[:2]
    out = [x]
    for j in range(1, n):
        y = x
        if j != 2:
            s = rng.uniform(0.6, 0.85)
            ch, cw = int(h * s), int(w * s)
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            y = y[top : top + ch, left : left + cw]
        if j == 2 or rng.random() < 0.5:
            y = y[:, ::-1]
        contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2) * 255
        y = np.clip((y.astype(np.float32) - 128) * contrast + 128 + brightness, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(y))
    return out


def photo_candidates(*, n_variants: int = VARIANTS, seed: int = 0, names=None) -> list:
    """Image and caption candidates (image first, then its caption, per variant), paired by ``pair_key``."""
    from PIL import Image

    from core.ingest import Candidate

    rng = np.random.default_rng(seed)
    cands = []
    for name in names or PHOTOS:
        for j, y in enumerate(variants(_rgb(name), rng, n_variants)):
            buf = io.BytesIO()
            Image.fromarray(y).save(buf, format="PNG")
            key = f"{name}#{j}"
            cands.append(Candidate(modality="image", source=f"skimage {name} {j}.png", image_bytes=buf.getvalue(),
                                   image_ext="png", pair_key=key, meta={"picture": name}))
            cands.append(Candidate(modality="text", source=f"caption of {name}", text=PHOTOS[name], pair_key=key,
                                   meta={"picture": name}))
    return cands


def create_real_photos_workspace(path: str | os.PathLike, *, model: str | None = "demo", n_variants: int = VARIANTS,
                                 seed: int = 0):
    """A workspace at ``path`` of the scikit-image photographs (``len(PHOTOS) * n_variants`` images) paired
    with their captions (``len(PHOTOS)`` texts), embedded with ``model`` (None: not embedded)."""
    import core

    ws = core.Workspace(path)
    ws.add_candidates(photo_candidates(n_variants=n_variants, seed=seed))
    if model:
        ws.embed(model)
    return ws
