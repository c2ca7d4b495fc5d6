"""Patch-level features of open_clip ViT image towers: tokens, CLS attention, joint-space projections.

For every image a ViT gives ``J = gh * gw`` patch tokens. Concept explanations (PACE) need, per image:

- the patch tokens of one block (the residual stream after ``resblocks[block]``), ``(J, width)``;
- the CLS→patch attention of a late block, ``(J,)`` summing to 1. open_clip calls
  ``nn.MultiheadAttention`` with ``need_weights=False``, so the weights are recomputed from the block's
  ``ln_1`` output and ``attn.in_proj_weight`` / ``in_proj_bias``: softmax(q_cls kᵀ / √d_head) per head,
  mean over heads, patches only, renormalised;
- the last block's patch tokens projected into the joint space like the pooled output (``ln_post`` then
  ``proj``), ``(J, embed_dim)``, used to name concepts with texts.

Both are read with forward hooks (``torch.inference_mode``, batched). open_clip runs its transformer
batch-first by default but older configs run it sequence-first (``transformer.batch_first = False``);
the hooks put everything in (N, L, D) order. Token 0 is the class token.

Results for workspace items are cached in ``derived/patches/<model-slug>/`` keyed by block and
attention block, one file per set of item ids (incremental: only missing items are encoded).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..artifacts import Codec, artifact_key, npz_array, register_codec
from ..progress import Progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class NotViTError(ValueError):
    """The image tower of a model is not an open_clip VisionTransformer."""


@dataclass
class PatchData:
    """Patch features of ``M`` images (item ids or positions in a list of images).

    ``tokens`` (M, J, width) float32: residual stream after ``resblocks[block]``;
    ``attention`` (M, J) float32, rows sum to 1: CLS→patch attention of ``resblocks[attn_block]``;
    ``joint`` (M, J, embed_dim) float32: ``ln_post(last-block tokens) @ proj`` (not normalised), the patch
    tokens in the joint space whatever ``block`` is;
    ``grid`` (gh, gw): patch rows and columns (patch j sits at row j // gw, column j % gw);
    ``image_size`` (H, W) of the model input; ``block`` / ``attn_block`` non-negative block indices.
    """

    ids: np.ndarray
    tokens: np.ndarray
    attention: np.ndarray
    joint: np.ndarray
    grid: tuple[int, int]
    image_size: tuple[int, int]
    block: int
    attn_block: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_patches(self) -> int:
        return int(self.tokens.shape[1])

    def subset(self, rows) -> PatchData:
        rows = np.asarray(rows)
        return PatchData(self.ids[rows], self.tokens[rows], self.attention[rows], self.joint[rows], self.grid,
                         self.image_size, self.block, self.attn_block)

    def patch_box(self, j: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of patch ``j`` as fractions of the model input."""
        gh, gw = self.grid
        r, c = divmod(int(j), gw)
        return c / gw, r / gh, (c + 1) / gw, (r + 1) / gh


def _model_of(encoder):
    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "visual"):
        raise NotViTError(f"concepts need an open_clip image tower; {getattr(encoder, 'id', encoder)!r} "
                          f"is a {type(encoder).__name__} without one")
    return model


def vit_tower(encoder):
    """The ``visual`` module of an open_clip encoder, checked to be a ViT with the parts we hook.

    Raises NotViTError naming the model and what its image tower is.
    """
    model = _model_of(encoder)
    visual = model.visual
    name = getattr(encoder, "id", type(model).__name__)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(visual, "conv1") or not hasattr(visual, "grid_size"):
        raise NotViTError(f"concepts need a ViT image tower; {name} has {type(visual).__name__}")
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if not hasattr(blk, "ln_1") or getattr(attn, "in_proj_weight", None) is None:
            raise NotViTError(f"concepts need ViT blocks with ln_1 and a fused in_proj attention; block {i} of "
                              f"{name} is a {type(blk).__name__}")
    return visual


def n_blocks(encoder) -> int:
    return len(vit_tower(encoder).transformer.resblocks)


def _block_index(i: int | None, n: int, what: str) -> int:
    if i is None:
        return n - 1
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise ValueError(f"{what} must be in [-{n}, {n - 1}] (the tower has {n} blocks); got {i}")
    return j


def _heads(attn) -> int:
    h = getattr(attn, "num_heads", None)
    if not h:
        raise NotViTError(f"cannot tell the number of heads of {type(attn).__name__}")
    return int(h)


def cls_attention(x, attn) -> torch.Tensor:
    """CLS→patch attention from a block's ``ln_1`` output ``x`` (N, L, D), mean over heads.

    Returns (N, L - 1) with rows summing to 1 (the CLS→CLS weight is dropped and the rest renormalised).
    """
    import torch

    n, L, d = x.shape
    heads = _heads(attn)
    dh = d // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    wq, wk = w[:d], w[d : 2 * d]
    bq = b[:d] if b is not None else None
    bk = b[d : 2 * d] if b is not None else None
    q = torch.nn.functional.linear(x[:, :1], wq, bq).reshape(n, 1, heads, dh)       # (N, 1, H, dh)
    k = torch.nn.functional.linear(x, wk, bk).reshape(n, L, heads, dh)               # (N, L, H, dh)
    scores = torch.einsum("nqhd,nlhd->nhl", q, k) / math.sqrt(dh)                     # (N, H, L)
    probs = scores.float().softmax(dim=-1).mean(dim=1)                               # (N, L)
    patches = probs[:, 1:]
    return patches / patches.sum(dim=1, keepdim=True).clamp_min(1e-12)


def check_smoothing(sigma) -> float:
    """``sigma`` of :func:`smooth_attention` as a float; ValueError unless a finite number >= 0."""
    ok = isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool)
    if not ok or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"attention_smoothing must be a finite number >= 0 (patches); got {sigma!r}")
    return float(sigma)


def smooth_attention(attention: np.ndarray, grid: tuple[int, int], sigma: float) -> np.ndarray:
    """The CLS→patch attention (M, J) blurred over the patch grid by a Gaussian of ``sigma`` patches
    (``scipy.ndimage.gaussian_filter``, edges repeated), rows renormalised to sum to 1; ``sigma`` 0 returns it
    unchanged. One block's attention is tied to the patch grid: a crop that shifts the grid by part of a
    patch moves it between neighbours, and weights smoothed over neighbours move less."""
    A = np.asarray(attention, dtype=np.float32)
    sigma = check_smoothing(sigma)
    if sigma == 0 or A.size == 0:
        return A
    gh, gw = (int(v) for v in grid)
    if A.ndim != 2 or A.shape[1] != gh * gw:
        raise ValueError(f"attention of shape {A.shape} does not match a {gh}x{gw} patch grid")
    from scipy.ndimage import gaussian_filter

    S = gaussian_filter(A.reshape(-1, gh, gw), sigma=(0, sigma, sigma), mode="nearest").reshape(A.shape)
    total = S.sum(1, keepdims=True)
    return np.where(total > 0, S / np.where(total > 0, total, 1.0), A).astype(np.float32)


def project_tokens(encoder, tokens: np.ndarray) -> np.ndarray:
    """Tokens (..., width) of the image tower -> joint space (..., embed_dim): ``ln_post`` then ``proj``."""
    import torch

    visual = vit_tower(encoder)
    x = torch.as_tensor(np.asarray(tokens, dtype=np.float32))
    p = next(visual.parameters())
    with torch.inference_mode():
        x = visual.ln_post(x.to(device=p.device, dtype=p.dtype))
        if visual.proj is not None:
            x = x @ visual.proj
        return x.float().cpu().numpy()


def model_input(encoder, images: Sequence) -> torch.Tensor:
    """PIL images or paths -> the model's preprocessed batch (N, 3, H, W)."""
    import torch

    from ..encoders import load_image

    return torch.stack([encoder.preprocess(load_image(im)) for im in images])


def extract_batch(encoder, x, *, block: int | None = None, attn_block: int | None = None):
    """Run the image tower on a preprocessed batch ``x`` (N, 3, H, W).

    Returns ``(tokens (N, J, width), attention (N, J), joint (N, J, embed_dim))`` float32 numpy arrays;
    ``joint`` always projects the last block's tokens (the path of the pooled output), whatever ``block``.
    """
    import torch

    visual = vit_tower(encoder)
    blocks = visual.transformer.resblocks
    bi = _block_index(block, len(blocks), "block")
    ai = _block_index(attn_block, len(blocks), "attn_block")
    batch_first = getattr(visual.transformer, "batch_first", True)
    got: dict[str, torch.Tensor] = {}

    def nld(t: torch.Tensor) -> torch.Tensor:
        return t if batch_first else t.transpose(0, 1)

    def keeper(name):
        def hook(_m, _inp, out):
            got[name] = nld(out[0] if isinstance(out, tuple) else out)
        return hook

    last = len(blocks) - 1
    hooks = [blocks[bi].register_forward_hook(keeper("tokens")), blocks[ai].ln_1.register_forward_hook(keeper("ln1"))]
    if bi != last:
        hooks.append(blocks[last].register_forward_hook(keeper("final")))
    p = next(visual.parameters())
    try:
        with torch.inference_mode():
            visual(x.to(device=p.device, dtype=p.dtype))
            tokens = got["tokens"][:, 1:]
            att = cls_attention(got["ln1"], blocks[ai].attn)
            joint = visual.ln_post(got.get("final", got["tokens"])[:, 1:])
            if visual.proj is not None:
                joint = joint @ visual.proj
    finally:
        for h in hooks:
            h.remove()
    return (tokens.float().cpu().numpy(), att.float().cpu().numpy(), joint.float().cpu().numpy())


def extract_patches(encoder, images: Sequence, *, block: int | None = None, attn_block: int | None = None,
                    ids: Sequence | None = None, batch_size: int = 64, progress: Progress | None = None,
                    transform: Callable | None = None) -> PatchData:
    """Patch features of PIL images / paths (see :class:`PatchData`).

    ``block`` / ``attn_block``: block indices (negative counts from the end; default the last block).
    ``transform``: optional callable applied to each RGB PIL image before the model's preprocessing
    (augmentations for the stability metric). ``progress(done, total)`` after each batch. Images stream
    through core.images like every encode (reduced decoding, bounded prefetch; prepared in this thread when
    ``transform`` is given, so a seeded augmentation draws in the same order every run); an unreadable
    image raises :class:`core.images.ImageReadError` naming it.
    """
    import torch

    from ..images import ImageReadError, default_workers, iter_prepared, open_image

    visual = vit_tower(encoder)
    nb = len(visual.transformer.resblocks)
    bi, ai = _block_index(block, nb, "block"), _block_index(attn_block, nb, "attn_block")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    images = list(images)
    ids = np.asarray([str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids], dtype=object)
    if len(ids) != len(images):
        raise ValueError(f"ids must have one entry per image ({len(images)}); got {len(ids)}")
    gh, gw = (int(v) for v in visual.grid_size)
    size = tuple(int(v) for v in getattr(visual, "image_size", (gh, gw)))
    width = int(visual.conv1.out_channels)
    edim = int(visual.output_dim) if visual.proj is not None else width
    out_t = np.zeros((len(images), gh * gw, width), np.float32)
    out_a = np.zeros((len(images), gh * gw), np.float32)
    out_j = np.zeros((len(images), gh * gw, edim), np.float32)
    if progress is not None:
        progress(0, len(images))
    min_side = getattr(encoder, "image_input_size", None)

    def prepare(source):
        im = open_image(source, min_side=min_side)
        return encoder.preprocess(transform(im) if transform is not None else im), None

    workers = 0 if transform is not None else default_workers(getattr(encoder, "device", "cpu"))
    for positions, data, _, errors, done in iter_prepared(images, prepare, batch_size=batch_size, workers=workers):
        if errors:
            i, why = errors[0]
            raise ImageReadError(i, images[i], why)
        t, a, j = extract_batch(encoder, torch.stack(data), block=bi, attn_block=ai)
        out_t[positions], out_a[positions], out_j[positions] = t, a, j
        if progress is not None:
            progress(done, len(images))
    return PatchData(ids, out_t, out_a, out_j, (gh, gw), size, bi, ai)


# ---- workspace cache ----------------------------------------------------------------------------
def patches_dir(ws, model_id: str) -> Path:
    return ws.derived_dir("patches", model_id)


def _cache_key(bi: int, ai: int, ids: Sequence[str]) -> str:
    return f"b{bi}-a{ai}-{artifact_key(ids=sorted(ids))}"


def _load(path: Path) -> PatchData | None:
    """The patch cache ``path`` (a derived artifact), or None when it is missing, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT:
                return None
            return _from_arrays({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError):
        return None


def _save(f, data: PatchData) -> None:
    """Write ``data`` into the (binary) file ``f``; Workspace.artifact publishes it atomically."""
    arrays = {"format": np.int64(CACHE_FORMAT), "ids": data.ids.astype(str), "tokens": data.tokens.astype(np.float16),
              "attention": data.attention, "joint": data.joint.astype(np.float16),
              "grid": np.asarray(data.grid, np.int64), "image_size": np.asarray(data.image_size, np.int64),
              "blocks": np.asarray([data.block, data.attn_block], np.int64)}
    np.savez(f, **arrays)


def _from_arrays(z: dict) -> PatchData:
    return PatchData(z["ids"].astype(object), z["tokens"].astype(np.float32), z["attention"].astype(np.float32),
                     z["joint"].astype(np.float32), tuple(int(v) for v in z["grid"]),
                     tuple(int(v) for v in z["image_size"]), int(z["blocks"][0]), int(z["blocks"][1]))


PATCHES_CODEC = register_codec("patches", Codec(".npz", _save, _load, ids=npz_array))


def workspace_patches(ws, model_id: str, ids: Sequence[str] | None = None, *, block: int | None = None,
                      attn_block: int | None = None, encoder=None, batch_size: int = 64,
                      progress: Progress | None = None, use_cache: bool = True) -> PatchData:
    """Patch features of a workspace's images (``ids``; default every image item), cached.

    The cache is a derived artifact (core.artifacts),
    ``derived/patches/<model-slug>/b<block>-a<attn_block>-<artifact_key of the ids>.npz``
    (tokens and joint vectors stored as float16). Images that cannot be read raise ValueError naming
    the item.
    """
    from ..encoders import load_encoder

    enc = encoder if encoder is not None else load_encoder(model_id)
    nb = n_blocks(enc)
    bi, ai = _block_index(block, nb, "block"), _block_index(attn_block, nb, "attn_block")
    items = ws.items
    images = items[items["modality"] == "image"]
    if ids is None:
        ids = images["id"].astype(str).tolist()
    else:
        ids = list(dict.fromkeys(str(i) for i in ids))
        known = set(images["id"].astype(str))
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(f"{len(missing)} id(s) are not image items of workspace {ws.name!r}, e.g. "
                             f"{missing[0]!r}")
    if not ids:
        raise ValueError(f"workspace {ws.name!r} has no images to explain")

    def compute() -> PatchData:
        rel = images.set_index("id")["image"].astype(str)
        files = []
        for i in ids:
            p = ws.abspath(rel.get(i))
            if p is None or not Path(p).is_file():
                raise ValueError(f"image of item {i!r} is missing from workspace {ws.name!r} ({p})")
            files.append(p)
        log.info("extracting patches of %d images with %s (block %d, attention block %d)", len(ids), model_id, bi,
                 ai)
        return extract_patches(enc, files, block=bi, attn_block=ai, ids=ids, batch_size=batch_size, progress=progress)

    if not use_cache:
        return compute()
    computed: list[bool] = []

    def compute_once() -> PatchData:
        computed.append(True)
        return compute()

    key = _cache_key(bi, ai, ids)
    data = ws.artifact("patches", model_id, key, compute_once, codec=PATCHES_CODEC)
    if data.ids.tolist() != ids:
        pos = {k: n for n, k in enumerate(data.ids.tolist())}
        if all(i in pos for i in ids):
            data = data.subset([pos[i] for i in ids])
        else:  # other ids under the same key: computed again
            data = ws.artifact("patches", model_id, key, compute_once, codec=PATCHES_CODEC, reuse=False)
    if not computed and progress is not None:
        progress(len(ids), len(ids))
    return data

