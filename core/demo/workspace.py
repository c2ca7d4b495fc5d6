"""The bundled demo workspace: world images with their captions and attributes, embedded with ``demo``."""
from __future__ import annotations

import io
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..artifacts import Codec, npz_keys, prune_npz_keys, register_codec
from ..encoders import load_encoder
from ..progress import StageProgress

log = logging.getLogger(__name__)

DEMO_WORKSPACE = "demo"
DEMO_MODEL = "demo"
DEMO_SEED = 2026  # not the training seed: the demo images are not training images
MASKS_KEY = "world"  # the masks' artifact: derived/masks/world.npz
LEGACY_MASKS = "world_masks.npz"  # where workspaces made before derived artifacts hold them, under derived/


def create_demo_workspace(path: str | os.PathLike, *, n: int = 2000, seed: int = DEMO_SEED,
                          model: str | None = DEMO_MODEL,
                          progress: StageProgress | None = None):
    """Create (or complete) a workspace of ``n`` world images + captions, embedded with ``model``.

    Every image is paired with its caption; attributes (shape, colour, size, position, background, ...)
    become metadata columns; per-pixel object masks are saved to ``derived/masks/world.npz`` (a derived
    artifact, see core.artifacts) keyed by item id: deleting an item drops its mask. Idempotent: running it
    again adds nothing. ``progress(stage, done, total)``. Returns the Workspace.

    On a new workspace the model loads while the images are drawn and encodes them while they are stored
    (storing is mostly waiting for the disk), in a background thread; its vectors are committed after the
    items, and :meth:`~core.workspace.Workspace.embed` then completes whatever is still missing.
    """
    from ..workspace import Workspace

    ws = Workspace(path)
    fresh = bool(model) and ws.store(model).count() == 0
    with ThreadPoolExecutor(1, thread_name_prefix="jointscope-demo") as pool:
        if fresh:  # imports torch and open_clip (seconds) while the world is drawn
            pool.submit(load_encoder, model)
        cands, masks = _generate(n, seed, progress)
        state: dict = {}
        encoded = pool.submit(_encode, model, cands, state) if fresh else None
        report = ws.add_candidates(cands, progress=(lambda d, t: progress("store", d, t)) if progress else None)
        # masks by item id (image ids are content hashes, so recompute them the same way)
        ids = [ws.candidate_id(c) for c in cands[0::2]]
        if report.added or not ws.artifact_path("masks", None, MASKS_KEY, MASKS_CODEC).exists():
            arrays = {cid: masks[i] for i, cid in enumerate(ids)}
            ws.artifact("masks", None, MASKS_KEY, lambda: arrays, codec=MASKS_CODEC, reuse=False)
        log.info("demo workspace %s: %d added, %d already there", ws.path, report.added, report.skipped)
        if encoded is not None:
            _commit_vectors(ws, model, encoded, state, progress)
    if model:
        cb = (lambda d, t: t and progress("embed", d, t)) if progress is not None else None  # t = 0: nothing left
        ws.embed(model, progress=cb)
    return ws


def _generate(n: int, seed: int, progress: StageProgress | None) -> tuple[list, dict[int, np.ndarray]]:
    """``n`` world items as paired image and caption candidates (image first), and their masks by index."""
    from ..ingest import Candidate
    from .world import iter_generate

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
    return cands, masks


def _encode(model: str, cands: list, state: dict) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of the distinct candidates (captions repeat) that ``model`` encodes, encoded as
    :meth:`~core.workspace.Workspace.embed` would: the same encoder on the same PNG bytes and texts.
    ``state`` gets ``total`` and a running ``done`` (read by the thread that reports progress)."""
    from ..workspace import Workspace

    first: dict[str, object] = {}
    for c in cands:
        first.setdefault(Workspace.candidate_id(c), c)
    enc = load_encoder(model)
    texts = [(cid, c) for cid, c in first.items() if c.modality == "text" and "text" in enc.modalities]
    images = [(cid, c) for cid, c in first.items() if c.modality == "image" and "image" in enc.modalities]
    state["total"] = len(texts) + len(images)

    def count(base: int):
        return lambda done, _total: state.__setitem__("done", base + done)

    X = [np.zeros((0, enc.dim), np.float32)]
    if texts:
        X.append(enc.encode_texts([c.text for _, c in texts], progress=count(0)))
    if images:
        X.append(enc.encode_images([c.image_bytes for _, c in images], progress=count(len(texts))))
    return [cid for cid, _ in texts + images], np.concatenate(X)


def _commit_vectors(ws, model: str, encoded: Future, state: dict, progress: StageProgress | None) -> None:
    """Wait for the background encoding (reporting its progress from this thread) and commit its vectors
    of the stored items, unless vectors of ``model`` were committed meanwhile; a failure is left to
    ``Workspace.embed``, which encodes again and reports it."""
    while True:
        try:
            ids, X = encoded.result(timeout=0.2)
            break
        except TimeoutError:
            if progress is not None and state.get("total"):
                progress("embed", state.get("done", 0), state["total"])
        except Exception as e:  # noqa: BLE001 - embed() below tries again and says what is wrong
            log.warning("demo vectors not encoded in the background: %s", e)
            return
    if progress is not None:
        progress("embed", len(ids), len(ids))
    keep = np.isin(np.asarray(ids), ws.items["id"].to_numpy(dtype=str))
    with ws.writing():
        store = ws.store(model)
        if store.count() == 0 and keep.any():
            store.append(X[keep], np.asarray(ids)[keep])


def load_world_masks(ws) -> dict[str, np.ndarray]:
    """Per-pixel object masks of a demo workspace, by image item id ({} if none). A workspace made before
    derived artifacts has them in ``derived/world_masks.npz``, read as it is."""
    masks = _load_masks(ws.artifact_path("masks", None, MASKS_KEY, MASKS_CODEC))
    if masks is None:
        masks = _load_masks(ws.derived_root / LEGACY_MASKS)
    return masks or {}


def _save_masks(f, masks: dict[str, np.ndarray]) -> None:
    np.savez_compressed(f, **masks)


def _load_masks(path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


# the masks are keyed by item id: a deletion prunes the deleted items' masks in place
MASKS_CODEC = register_codec("world-masks", Codec(".npz", _save_masks, _load_masks, ids=npz_keys,
                                                  prune=prune_npz_keys))
