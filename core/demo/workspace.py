"""The bundled demo workspace: world images with their captions and attributes, embedded with ``demo``."""
from __future__ import annotations

import io
import logging
import os

import numpy as np

from ..progress import StageProgress

log = logging.getLogger(__name__)

DEMO_WORKSPACE = "demo"
DEMO_MODEL = "demo"
DEMO_SEED = 2026  # not the training seed: the demo images are not training images


def create_demo_workspace(path: str | os.PathLike, *, n: int = 2000, seed: int = DEMO_SEED,
                          model: str | None = DEMO_MODEL,
                          progress: StageProgress | None = None):
    """Create (or complete) a workspace of ``n`` world images + captions, embedded with ``model``.

    Every image is paired with its caption; attributes (shape, colour, size, position, background, ...)
    become metadata columns; per-pixel object masks are saved to ``derived/world_masks.npz`` keyed by
    item id. Idempotent: running it again adds nothing. ``progress(stage, done, total)``.
    Returns the Workspace.
    """
    from ..ingest import Candidate
    from ..workspace import Workspace
    from .world import iter_generate

    ws = Workspace(path)
    cands, masks = [], {}
    for i, it in enumerate(iter_generate(n, seed=seed, combos="all")):
        buf = io.BytesIO()
        it.image.save(buf, format="PNG", optimize=False)
        key = f"world#{i}"
        meta = it.attrs()
        cands.append(Candidate(modality="image", source=f"world image {i}", image_bytes=buf.getvalue(),
                               image_ext="png", pair_key=key, meta=meta))
        cands.append(Candidate(modality="text", source=f"world caption {i}", text=it.caption, pair_key=key,
                               meta=meta))
        masks[i] = it.mask
        if progress is not None and ((i + 1) % 100 == 0 or i + 1 == n):
            progress("generate", i + 1, n)
    report = ws.add_candidates(cands, progress=(lambda d, t: progress("store", d, t)) if progress else None)
    # masks by item id (image ids are content hashes, so recompute them the same way)
    ids = [ws.candidate_id(c) for c in cands[0::2]]
    mask_path = ws.derived_root / "world_masks.npz"
    if report.added or not mask_path.exists():
        arrays = {cid: masks[i] for i, cid in enumerate(ids)}
        ws.publish(mask_path, lambda f: np.savez_compressed(f, **arrays))
    log.info("demo workspace %s: %d added, %d already there", ws.path, report.added, report.skipped)
    if model:
        cb = (lambda d, t: progress("embed", d, t)) if progress is not None else None
        ws.embed(model, progress=cb)
    return ws


def load_world_masks(ws) -> dict[str, np.ndarray]:
    """Per-pixel object masks of a demo workspace, by image item id ({} if none)."""
    p = ws.derived_root / "world_masks.npz"
    if not p.exists():
        return {}
    with np.load(p) as z:
        return {k: z[k] for k in z.files}
