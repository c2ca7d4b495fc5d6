"""Decoding images for encoders: upright RGB, reduced decoding, and a bounded prefetch pipeline.

Every path that encodes stored or uploaded images (``Workspace.embed``, the Ray engine's batch function,
the stale-vector check, search by image, the concepts' patch extraction) goes through
:func:`prefetch_map` via ``Encoder.iter_encode_images``: images are opened, rotated and run through the
model's own transform in a small thread pool while the model encodes the previous batch, and at most
``batch_size × prefetch`` prepared images are alive at any time, whatever the number of items. On a CPU
whose cores torch's threads already fill, a decoding thread would only compete with the model (measured 9 %
slower on 2 cores), so there images are prepared in the calling thread, one batch at a time, with the same
bound (see :func:`default_workers`).

Reduced decoding: a 12-megapixel JPEG needs 36 MB as RGB and ~0.2 s to decode in full, while a 224-px
model needs an image whose shorter side is 224 px. :func:`open_image` asks libjpeg for the smallest DCT
scale (1/2, 1/4, 1/8) whose shorter side is still at least ``min_side`` (Pillow's ``Image.draft``); other
formats are decoded in full and then shrunk by the largest integer factor that keeps that side
(``Image.reduce``). The model's transform then resizes as it always does. How close the vectors stay to
full decodes is measured in ``bench/embed.py``.
"""
from __future__ import annotations

import io
import os
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .errors import one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def read_image_bytes(ref: str, base_dir: str | None = None, *, timeout: float = 60.0) -> bytes:
    """The bytes of an image reference: a path (relative to ``base_dir``), ``file://``, ``http(s)://``
    or a URI pyarrow's filesystems open (``s3://``, ``gs://``, ``hdfs://`` ...)."""
    if ref.startswith("file://"):
        return Path(ref[len("file://"):]).read_bytes()
    if ref.startswith(("http://", "https://")):
        with urllib.request.urlopen(ref, timeout=timeout) as r:  # a URL of the user's own manifest
            return r.read()
    if "://" in ref:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(ref)
        with fs.open_input_stream(path) as f:
            return f.read()
    p = Path(ref).expanduser()
    if not p.is_absolute() and base_dir:
        p = Path(base_dir) / p
    return p.read_bytes()


def _open(source):
    from PIL import Image

    if isinstance(source, Image.Image):
        return source, False
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source))), True
    if isinstance(source, str) and "://" in source:
        return Image.open(io.BytesIO(read_image_bytes(source))), True
    return Image.open(source), True


def open_image(source, *, min_side: int | None = None, with_size: bool = False):
    """Open a path, bytes or PIL image as an upright RGB image (EXIF orientation applied, first frame,
    transparency on white).

    ``min_side``: decode at a reduced scale whose shorter side is still at least ``min_side`` px (JPEG:
    libjpeg's DCT scaling; other formats: decoded, then ``reduce``d by an integer factor). None decodes in
    full. ``with_size=True`` returns ``(image, (width, height))`` with the upright size of the full image.
    """
    from PIL import ImageOps

    im, owned = _open(source)
    try:
        if owned:
            im.seek(0)
        full = im.size
        if min_side:
            short = min(im.size)
            if owned and im.format == "JPEG" and short >= 2 * min_side:
                im.draft(None, (int(min_side), int(min_side)))
            im.load()
            factor = min(im.size) // int(min_side)
            if factor >= 2:
                if im.mode.startswith("I;"):  # 16-bit: reduce() takes 32-bit integers; _to_rgb scales them
                    im = im.convert("I")
                elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr"):  # 1, P, PA ...
                    im = im.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
                im = im.reduce(factor)
        before = im.size
        out = _to_rgb(ImageOps.exif_transpose(im))  # a new image: independent of the file closed below
        if out.size != before:  # rotated by its EXIF orientation: the full size turns with it
            full = (full[1], full[0])
    finally:
        if owned:
            im.close()
    return (out, full) if with_size else out


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integers, floats: scaled to 0..255
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr / hi * 255).clip(0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


# ---- the prefetch pipeline -----------------------------------------------------------------------------
def default_workers(device: str = "cpu") -> int:
    """Decoding threads beside a model on ``device``: on a GPU (or MPS) half the CPUs, 1 to 8; on the CPU only
    the cores torch's own threads leave free (often none: torch takes every core, and a decoding thread
    then only competes with it; measured 9 % slower on 2 cores), 0 meaning decode in the calling thread."""
    cpus = os.cpu_count() or 1
    if device != "cpu":
        return max(1, min(8, cpus // 2))
    import torch

    return max(0, min(8, cpus - torch.get_num_threads()))


def prefetch_map(fn: Callable[[Any], Any], items: Iterable, *, ahead: int, workers: int | None = None) -> Iterator:
    """``fn`` over ``items`` in a thread pool, results in input order, with at most ``ahead`` results
    computed or under way that the caller has not taken yet (the bound on memory). ``fn`` must not raise
    for a bad item (return the error instead); an exception still reaches the caller, in order.

    Closing the iterator early (break, an exception in the caller) cancels what has not started and waits
    only for the items being worked on.
    """
    if ahead < 1:
        raise ValueError(f"ahead must be >= 1; got {ahead}")
    workers = workers or max(1, default_workers("cuda"))
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jointscope-decode")
    pending: deque = deque()
    try:
        for x in islice(it, ahead):
            pending.append(pool.submit(fn, x))
        while pending:
            result = pending.popleft().result()
            for x in islice(it, 1):
                pending.append(pool.submit(fn, x))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class ImageBatch:
    """One encoded batch of :meth:`Encoder.iter_encode_images`.

    ``positions``: indices (into the input) of the images encoded here; ``vectors`` (len(positions), d)
    float32 unit rows; ``sizes``: upright (width, height) of each full image; ``errors``: (index, reason)
    of the inputs of this batch that could not be read; ``done``: inputs consumed so far.
    """

    positions: list[int]
    vectors: np.ndarray
    sizes: list[tuple[int, int]]
    errors: list[tuple[int, str]]
    done: int


class ImageReadError(ValueError):
    """An image given to an encoder could not be read; ``index`` is its position in the input."""

    def __init__(self, index: int, source, reason: str):
        self.index, self.source, self.reason = index, source, reason
        super().__init__(f"image {describe_source(source, index)}: {reason}")


def describe_source(source, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return f"#{index}"


def read_reason(e: BaseException) -> str:
    """One line for why an image could not be read."""
    from PIL import Image

    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels ({e})"
    return f"{type(e).__name__}: {one_line(e)}"


def iter_prepared(sources: Sequence, prepare: Callable[[Any], Any], *, batch_size: int, prefetch: int = 2,
                  workers: int | None = None) -> Iterator[tuple[list[int], list, list[tuple[int, int]],
                                                                 list[tuple[int, str]], int]]:
    """Group ``prepare(source) -> (data, size)`` results into batches of up to ``batch_size`` readable
    images: yields ``(positions, data, sizes, errors, done)``. ``prepare`` runs in :func:`prefetch_map`
    (``workers`` threads, None: its default) with ``(prefetch - 1) × batch_size`` items ahead, so with the
    batch the caller holds at most ``prefetch × batch_size`` prepared images are alive; ``workers=0`` or
    ``prefetch=1`` prepare in the calling thread, one batch at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1; got {prefetch}")

    def safe(pair):
        i, src = pair
        try:
            data, size = prepare(src)
            return i, data, size, None
        except Exception as e:  # noqa: BLE001 - reported per image, the rest goes on
            return i, None, None, read_reason(e)

    positions, data, sizes, errors = [], [], [], []
    ahead = max(1, (prefetch - 1) * batch_size)
    threaded = prefetch > 1 and (workers is None or workers > 0)
    stream = prefetch_map(safe, enumerate(sources), ahead=ahead, workers=workers) if threaded else \
        map(safe, enumerate(sources))
    done = 0
    for i, d, size, err in stream:
        done += 1
        if err is not None:
            errors.append((i, err))
        else:
            positions.append(i)
            data.append(d)
            sizes.append(size)
        if len(positions) == batch_size:
            yield positions, data, sizes, errors, done
            positions, data, sizes, errors = [], [], [], []
    if positions or errors:
        yield positions, data, sizes, errors, done
