"""Train a small open_clip ``CLIP`` on image-caption pairs with open_clip's contrastive loss.

Pairs come from the procedural world (``core.demo``) or from any workspace with paired items. The run is
seeded, checkpoints every ``ckpt_every`` steps into ``<out>/train_state/`` and resumes from there; the
result is an ``openclip-local`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``).

The bundled ``demo`` model is exactly::

    jointscope train --out assets/demo
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .demo.world import BACKGROUND_PROMPT
from .encoders import ASSETS_DIR
from .progress import StepProgress
from .storage import atomic_write, atomic_write_json, read_json

log = logging.getLogger(__name__)

DEFAULT_MODEL_CONFIG = ASSETS_DIR / "demo_model_config.json"


@dataclass
class TrainConfig:
    """Recipe of a training run; the defaults reproduce the bundled ``demo`` model."""

    model_config: str = str(DEFAULT_MODEL_CONFIG)
    data: str = "world"              # "world" or a workspace folder with image-caption pairs
    n_train: int = 60_000            # world images generated for training (combos never held out)
    p_two: float = 0.35              # share of world images with two objects
    seed: int = 0
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 250
    ckpt_every: int = 250
    eval_every: int = 500
    threads: int = 0                 # 0 = torch default
    workers: int = 2                 # processes generating the world
    attr_loss: float = 0.5           # weight of the attribute loss (world data only, see _attribute_loss)
    orth_loss: float = 5.0           # weight of the colour/shape decorrelation term (see _attribute_loss)
    # second phase (world data only): `pattern_steps` more steps in which a share `pattern_p` of the
    # single-object images is repainted with multicolour patterns and captioned without colour words,
    # at its own learning-rate schedule (warm-up to `pattern_lr`, cosine to `min_lr`)
    pattern_steps: int = 800
    pattern_p: float = 0.3
    pattern_lr: float = 2e-4
    pattern_warmup: int = 50
    # third phase (world data only): `dense_steps` more steps adding a patch-level term (weight
    # `dense_loss`): every patch token of the last block, projected into the joint space like the pooled
    # output, is classified against the colour prompts plus a background prompt (labels from the object
    # masks), so the patch tokens that concept explanations read keep each object's colour
    dense_steps: int = 600
    dense_loss: float = 3.0
    dense_lr: float = 2e-4
    dense_warmup: int = 25
    extra: dict = field(default_factory=dict)



# settings that do not change what is learned up to a step: a run may resume with other values
_NOT_RECIPE = ("steps", "ckpt_every", "eval_every", "threads", "workers")


_PHASE2 = ("pattern_steps", "pattern_p", "pattern_lr", "pattern_warmup")
_PHASE3 = ("dense_steps", "dense_loss", "dense_lr", "dense_warmup")


def _recipe(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_RECIPE}


def _compatible(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a saved run can resume under ``cfg``: same recipe, or the same recipe of every phase the
    saved run has entered (settings of a later phase do not change an earlier one)."""
    old, new = _recipe(saved.get("config", {})), _recipe(asdict(cfg))
    if old == new:
        return True
    step = int(saved.get("step", 0))
    later = set(_PHASE3) if step > cfg.steps else set(_PHASE2) | set(_PHASE3)
    if step > cfg.steps + cfg.pattern_steps:
        later = set()
    return {k: v for k, v in old.items() if k not in later} == {k: v for k, v in new.items() if k not in later}


def _cosine(s: int, warmup: int, n: int, top: float, bottom: float) -> float:
    if s < warmup:
        return top * (s + 1) / warmup
    t = (s - warmup) / max(1, n - warmup)
    return bottom + 0.5 * (top - bottom) * (1 + math.cos(math.pi * min(1.0, t)))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    second, third = cfg.steps, cfg.steps + cfg.pattern_steps
    if step >= third:
        return _cosine(step - third, cfg.dense_warmup, cfg.dense_steps, cfg.dense_lr, cfg.min_lr)
    if step >= second:
        return _cosine(step - second, cfg.pattern_warmup, cfg.pattern_steps, cfg.pattern_lr, cfg.min_lr)
    return _cosine(step, cfg.warmup, cfg.steps, cfg.lr, cfg.min_lr)


def _gen_shard(args) -> tuple[np.ndarray, list]:
    from .demo import iter_generate

    seed, start, n, size, p_two = args
    imgs = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    objs = []
    for i, it in enumerate(iter_generate(n, seed=seed, start=start, image_size=size, p_two=p_two, combos="train")):
        imgs[i] = np.asarray(it.image, np.uint8)
        masks[i] = it.mask
        objs.append(it.objects)
    return imgs, masks, objs


class WorldPairs:
    """World images held in memory as uint8; a fresh caption is sampled each time an image is drawn.

    ``pattern_p`` > 0: that share of the single-object images drawn is repainted with a multicolour
    pattern (``core.demo.paint_patterns``) and captioned without colour words; their colour counts as
    unknown in ``attributes``.
    """

    def __init__(self, n: int, *, seed: int, image_size: int, p_two: float, workers: int = 2):
        t0 = time.perf_counter()
        shard = max(1, math.ceil(n / max(1, workers * 4)))
        jobs = [(seed, s, min(shard, n - s), image_size, p_two) for s in range(0, n, shard)]
        if workers > 1:
            with ProcessPoolExecutor(workers) as ex:
                parts = list(ex.map(_gen_shard, jobs))
        else:
            parts = [_gen_shard(j) for j in jobs]
        self.images = np.concatenate([p[0] for p in parts])
        self.masks = np.concatenate([p[1] for p in parts])
        self.objects = [o for p in parts for o in p[2]]
        self.rng = np.random.default_rng(seed + 1)
        self.pattern_p = 0.0
        self._painted: set[int] = set()
        log.info("generated %d world images in %.1fs", n, time.perf_counter() - t0)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
        from .demo import caption_for, paint_patterns

        images, captions = self.images[idx], []  # fancy indexing: a copy, the stored images stay as they are
        self._painted = set()
        for j, i in enumerate(idx.tolist()):
            if self.pattern_p and len(self.objects[i]) == 1 and self.rng.random() < self.pattern_p:
                images[j] = paint_patterns(images[j], self.masks[i], self.rng)
                self._painted.add(i)
                captions.append(caption_for(self.objects[i], self.rng, colour=False))
            else:
                captions.append(caption_for(self.objects[i], self.rng))
        return images, captions

    def patch_labels(self, idx: np.ndarray, grid: tuple[int, int], names: list[str]) -> np.ndarray:
        """(B, gh*gw) colour index (in ``names``) of the object covering most of each patch;
        ``len(names)`` for background; -1 for patches of an object repainted with a pattern in the last
        batch (they show no colour)."""
        from .concepts.groundtruth import patch_majority_codes

        major = patch_majority_codes(self.masks[idx], grid)                 # 0 = background, i = i-th object
        out = np.full(major.shape, len(names), np.int64)
        for j, i in enumerate(idx.tolist()):
            for k, obj in enumerate(self.objects[i], start=1):
                out[j][major[j] == k] = -1 if i in self._painted else names.index(obj.colour)
        return out

    def attributes(self, idx: np.ndarray, attr: str, names: list[str]) -> np.ndarray:
        """Index of the attribute value of single-object images; -1 for two-object images (and for
        the colour of an image repainted with a pattern in the last batch)."""
        return np.array([-1 if len(self.objects[i]) != 1 or (attr == "colour" and i in self._painted)
                         else names.index(getattr(self.objects[i][0], attr)) for i in idx.tolist()])


def image_caption_pairs(items) -> list[tuple[str, str]]:
    """(image id, caption id) for every link in a workspace: images point at a caption, captions at an
    image (an image may have several captions, a caption may be shared by several images)."""
    kind = dict(zip(items["id"], items["modality"]))
    out = set()
    for i, m, p in zip(items["id"], items["modality"], items["pair"]):
        if p is None or kind.get(p) is None:
            continue
        if m == "image" and kind[p] == "text":
            out.add((i, p))
        elif m == "text" and kind[p] == "image":
            out.add((p, i))
    return sorted(out)


class WorkspacePairs:
    """Image-caption pairs of a workspace (image items whose ``pair`` links caption items)."""

    def __init__(self, path: str, *, image_size: int):
        from .encoders import load_image
        from .workspace import Workspace

        ws = Workspace(path, create=False)
        pairs = image_caption_pairs(ws.items)
        if not pairs:
            raise ValueError(f"workspace {path!r} has no image-caption pairs to train on")
        imgs = ws.items.set_index("id")
        self.captions = [imgs.loc[t, "text"] for _, t in pairs]
        ids = [i for i, _ in pairs]
        uniq = sorted(set(ids))
        pos = {u: i for i, u in enumerate(uniq)}
        self.images = np.stack([
            np.asarray(load_image(ws.abspath(imgs.loc[u, "image"])).resize((image_size, image_size)), np.uint8)
            for u in uniq])
        self.index = np.array([pos[u] for u in ids])

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.images[self.index[idx]], [self.captions[i] for i in idx]


def _build_model(model_cfg: dict):
    import open_clip

    return open_clip.CLIP(**model_cfg)


def _save_weights(model, path: Path, *, half: bool) -> None:
    from safetensors.torch import save

    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
          for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(save(sd)))


def _load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def _model_config(cfg: TrainConfig) -> tuple[dict, dict, int, int, dict]:
    """The model's open_clip config file as ``(full config, model_cfg, image size, context length,
    preprocess_cfg)``; raises ``FileNotFoundError`` naming the file when it is missing."""
    full_cfg = read_json(cfg.model_config)
    if full_cfg is None:
        raise FileNotFoundError(f"model config {cfg.model_config!r} not found")
    model_cfg = full_cfg.get("model_cfg", full_cfg)
    size = int(model_cfg["vision_cfg"]["image_size"])
    ctx = int(model_cfg["text_cfg"].get("context_length", 77))
    return full_cfg, model_cfg, size, ctx, full_cfg.get("preprocess_cfg", {})


def _new_model(cfg: TrainConfig, model_cfg: dict, ctx: int):
    """A freshly initialised model (seeded by ``cfg.seed``), its AdamW optimiser (no weight decay on biases,
    norms and embeddings), open_clip's contrastive loss and the default CLIP BPE tokenizer."""
    import open_clip
    import torch

    torch.manual_seed(cfg.seed)
    model = _build_model(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=ctx)  # the default CLIP BPE tokenizer
    return model, opt, loss_fn, tokenizer


def _resume_state(cfg: TrainConfig, state_dir: Path, model, opt, resume: bool) -> int:
    """Load the weights and optimiser state of a saved run in ``state_dir`` (when ``resume`` and there is one)
    and return its step (0 otherwise); raises ``ValueError`` when the saved run has another recipe."""
    import torch

    step = 0
    saved = read_json(state_dir / "state.json")
    if resume and saved is not None:
        if not _compatible(saved, cfg):
            raise ValueError(f"{state_dir} holds a run with a different recipe; use another --out or --no-resume")
        _load_weights(model, state_dir / "model.safetensors")
        opt.load_state_dict(torch.load(state_dir / "optim.pt", weights_only=True))
        step = int(saved["step"])
        log.info("resuming at step %d", step)
    return step


def _save_state(state_dir: Path, model, opt, step: int, cfg: TrainConfig) -> None:
    """Checkpoint a run: full-precision weights, the optimiser state and ``state.json`` (step, config) last."""
    import torch

    _save_weights(model, state_dir / "model.safetensors", half=False)
    atomic_write(state_dir / "optim.pt", lambda f: torch.save(opt.state_dict(), f))
    atomic_write_json(state_dir / "state.json", {"step": step, "config": asdict(cfg)})


def _batch_indices(s: int, *, seed: int, n: int, per_epoch: int, batch_size: int) -> np.ndarray:
    """The rows of step ``s``'s batch: depends only on the seed and the step, so a resumed run sees the same
    data (one seeded permutation of the ``n`` pairs per epoch of ``per_epoch`` steps)."""
    perm = np.random.default_rng((seed, s // per_epoch)).permutation(n)
    j = s % per_epoch
    return perm[j * batch_size:(j + 1) * batch_size]


def _keep_last_tokens(model):
    """Hook the last block of the vision transformer: returns ``(hook, tokens)``, ``tokens["last"]`` the
    block's (B, tokens, width) output of the latest forward pass (for the dense loss)."""
    tokens_out: dict = {}
    blocks = model.visual.transformer.resblocks
    batch_first = getattr(model.visual.transformer, "batch_first", True)

    def keep_tokens(_m, _inp, out):
        t = out[0] if isinstance(out, tuple) else out
        tokens_out["last"] = t if batch_first else t.transpose(0, 1)

    return blocks[len(blocks) - 1].register_forward_hook(keep_tokens), tokens_out


def _train_step(model, opt, loss_fn, tokenizer, data, idx: np.ndarray, *, cfg: TrainConfig, step: int,
                mean, std, tokens_out: dict) -> float:
    """One optimiser step on the batch ``idx`` at ``step``'s learning rate: the contrastive loss, plus the
    attribute terms and, in the third phase, the dense term on world data; gradients clipped to norm 1 and the
    logit scale kept at most 100. Returns the batch's loss."""
    import torch

    for g in opt.param_groups:
        g["lr"] = _lr_at(step, cfg)
    if hasattr(data, "pattern_p"):
        data.pattern_p = cfg.pattern_p if step >= cfg.steps else 0.0
    imgs, caps = data.batch(idx)
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div_(255)
    x = (x - mean) / std
    tok = tokenizer(caps)
    img_f, txt_f, scale = model(x, tok)
    loss = loss_fn(img_f, txt_f, scale)
    if (cfg.attr_loss or cfg.orth_loss) and hasattr(data, "attributes"):
        loss = loss + _attribute_loss(model, tokenizer, data, idx, img_f, scale, cfg.attr_loss, cfg.orth_loss)
    if cfg.dense_loss and step >= cfg.steps + cfg.pattern_steps and hasattr(data, "patch_labels"):
        loss = loss + cfg.dense_loss * _dense_loss(model, tokenizer, data, idx, tokens_out["last"], scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def _write_model_folder(out: Path, model, full_cfg: dict, cfg: TrainConfig, data) -> None:
    """The shipped checkpoint: fp16 safetensors + config, loadable as openclip-local:<out>, the run's config and
    the words its text tower was trained on (names, and the check of query words)."""
    _save_weights(model, out / "open_clip_model.safetensors", half=True)
    atomic_write_json(out / "open_clip_config.json", full_cfg)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    if cfg.data == "world":
        write_world_words(out)
    else:
        from .vocabulary import KNOWN_WORDS_FILE, words_of

        _write_words(out / KNOWN_WORDS_FILE, "every word of the captions this model was trained on",
                     sorted({w for c in data.captions for w in words_of(c)}))


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = True,
          progress: StepProgress | None = None, evaluate: bool = True) -> dict:
    """Run (or resume) training; writes an openclip-local folder to ``out_dir``.

    Returns ``{checkpoint, steps, seconds, metrics}``.
    """
    import open_clip
    import torch

    out = Path(out_dir)
    state_dir = out / "train_state"
    state_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    full_cfg, model_cfg, size, ctx, pre = _model_config(cfg)
    mean = torch.tensor(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
    model, opt, loss_fn, tokenizer = _new_model(cfg, model_cfg, ctx)
    step = resumed_from = _resume_state(cfg, state_dir, model, opt, resume)

    if cfg.data == "world":
        data = WorldPairs(cfg.n_train, seed=cfg.seed, image_size=size, p_two=cfg.p_two, workers=cfg.workers)
    else:
        data = WorkspacePairs(cfg.data, image_size=size)
    n = len(data)
    per_epoch = max(1, n // cfg.batch_size)
    if hasattr(data, "rng"):
        data.rng = np.random.default_rng((cfg.seed, 7, step))

    t0 = time.perf_counter()
    start_step = step
    losses: list[float] = []
    metrics: dict = {}
    model.train()
    total = cfg.steps + (cfg.pattern_steps + cfg.dense_steps if cfg.data == "world" else 0)
    hook, tokens_out = _keep_last_tokens(model)
    while step < total:
        idx = _batch_indices(step, seed=cfg.seed, n=n, per_epoch=per_epoch, batch_size=cfg.batch_size)
        losses.append(_train_step(model, opt, loss_fn, tokenizer, data, idx, cfg=cfg, step=step, mean=mean, std=std,
                                  tokens_out=tokens_out))
        step += 1
        el = time.perf_counter() - t0
        rate = (step - start_step) / el
        info = {"step": step, "steps": total, "loss": float(np.mean(losses[-50:])),
                "lr": _lr_at(step, cfg), "steps_per_s": rate, "eta_s": (total - step) / max(rate, 1e-9)}
        if progress is not None and (step % 10 == 0 or step == total):
            progress(info)
        if step % cfg.ckpt_every == 0 or step in (cfg.steps, total):
            _save_state(state_dir, model, opt, step, cfg)
        if evaluate and cfg.data == "world" and (step % cfg.eval_every == 0 or step in (cfg.steps, total)):
            metrics = _quick_eval(model, full_cfg, tokenizer, mean, std)
            log.info("step %d eval %s", step, metrics)
            if progress is not None:
                progress({**info, "eval": metrics})
            model.train()
    hook.remove()
    model.eval()
    _write_model_folder(out, model, full_cfg, cfg, data)
    result = {"checkpoint": str(out / "open_clip_model.safetensors"), "steps": step, "resumed_from": resumed_from,
              "seconds": round(time.perf_counter() - t0, 1),
              "metrics": {"final_loss": float(np.mean(losses[-50:])) if losses else None, **metrics}}
    atomic_write_json(out / "train_metrics.json", result)
    return result


def _write_words(path: Path, what: str, words) -> None:
    atomic_write(path, lambda f: f.write((f"# {what}\n" + "\n".join(words) + "\n").encode()))


def write_world_words(out: Path) -> None:
    """The word lists of a model trained on the world: ``vocabulary.txt`` (the words that name concepts and
    zero-shot labels) and ``known_words.txt`` (every word of its captions and prompts; a query word outside
    it is flagged as unseen, see core.vocabulary.known_words)."""
    from .demo import world_vocabulary, world_words
    from .vocabulary import KNOWN_WORDS_FILE, VOCABULARY_FILE

    _write_words(Path(out) / VOCABULARY_FILE, "words of the procedural world this model was trained on",
                 world_vocabulary())
    _write_words(Path(out) / KNOWN_WORDS_FILE, "every word of the captions and prompts this model was trained on",
                 sorted(world_words()))


def _attribute_loss(model, tokenizer, data, idx, img_f, scale, attr_w: float, orth_w: float):
    """Attribute terms added to the contrastive loss on world data.

    1. Cross-entropy of single-object images against every colour prompt and every shape prompt
       ("a red object" vs the 7 other colours, "a circle" vs the 5 other shapes): the contrastive loss
       alone only contrasts an image with the captions that happen to share its batch.
    2. Decorrelation: squared dot products between the centred per-colour means of the batch's image
       embeddings and the centred shape-prompt embeddings (and shape means vs colour prompts). Without
       it "a circle" learns "not orange" merely because training never shows an orange circle, and
       zero-shot shape accuracy on held-out (colour, shape) pairs stays far below that on seen pairs
       (measured: 0.57 vs 0.98 after 2,000 steps of the attribute loss alone).

    Only training combinations are used; held-out (colour, shape) pairs never appear.
    """
    import torch
    import torch.nn.functional as F

    from .demo import COLOURS, SHAPES, prompts_for

    total = img_f.new_zeros(())
    targets, prompt_emb = {}, {}
    for attr, names in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        target = torch.from_numpy(data.attributes(idx, attr, names))
        keep = target >= 0
        prompts = prompts_for(attr)
        t = F.normalize(model.encode_text(tokenizer([prompts[k] for k in names])), dim=-1)
        targets[attr], prompt_emb[attr] = target, t
        if bool(keep.any()):
            logits = scale * img_f[keep] @ t.T
            total = total + attr_w * F.cross_entropy(logits, target[keep])
    if orth_w:
        # Decorrelation: the directions along which images of different colours differ (centred class
        # means in the batch) should not separate the shape prompts, and vice versa. Otherwise "a circle"
        # learns "not orange" merely because training never shows orange circles.
        for a, b in (("colour", "shape"), ("shape", "colour")):
            target = targets[a]
            means = [img_f[target == v].mean(0) for v in target.unique().tolist() if v >= 0
                     and int((target == v).sum()) >= 2]
            if len(means) < 2:
                continue
            M = torch.stack(means)
            M = M - M.mean(0, keepdim=True)
            T = prompt_emb[b] - prompt_emb[b].mean(0, keepdim=True)
            total = total + orth_w * (M @ T.T).pow(2).mean()
    return total


def _dense_loss(model, tokenizer, data, idx, tokens, scale):
    """Patch-level term of the third phase: the last block's patch tokens, projected into the joint space
    like the pooled output (``ln_post`` then ``proj``), are classified against the colour prompts plus
    ``BACKGROUND_PROMPT`` (targets: the colour of the object covering most of the patch, from the world's
    masks), plus one minus the cosine between each patch and its target prompt. Object and background
    patches count half each (background covers ~89 % of the patches)."""
    import torch
    import torch.nn.functional as F

    from .demo import COLOURS, prompts_for

    visual = model.visual
    names = list(COLOURS)
    prompts = prompts_for("colour")
    target = torch.from_numpy(data.patch_labels(idx, tuple(int(v) for v in visual.grid_size), names))
    x = visual.ln_post(tokens[:, 1:])
    if visual.proj is not None:
        x = x @ visual.proj
    x = F.normalize(x, dim=-1)
    t = F.normalize(model.encode_text(tokenizer([prompts[k] for k in names] + [BACKGROUND_PROMPT])), dim=-1)
    logits = scale * x @ t.T                                                   # (B, J, colours + 1)
    total = x.new_zeros(())
    for part in (target == len(names), (target >= 0) & (target < len(names))):
        if bool(part.any()):
            # cross-entropy separates the classes; the cosine term pulls each patch onto its prompt (the
            # prompt side detached), so patches of one colour gather instead of merely sorting correctly
            align = 1 - (x[part] * t.detach()[target[part]]).sum(-1)
            total = total + 0.5 * (F.cross_entropy(logits[part], target[part]) + align.mean())
    return total


def _quick_eval(model, full_cfg: dict, tokenizer, mean, std) -> dict:
    """Held-out zero-shot colour/shape accuracy on a small fresh set (fast; the bench does the full one)."""
    import torch

    from .demo import evaluate as ev

    model.eval()

    def enc_img(images):
        x = torch.from_numpy(np.stack([np.asarray(im, np.uint8) for im in images])).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            f = model.encode_image((x - mean) / std)
        return torch.nn.functional.normalize(f, dim=-1).numpy()

    def enc_txt(texts):
        with torch.inference_mode():
            f = model.encode_text(tokenizer(list(texts)))
        return torch.nn.functional.normalize(f, dim=-1).numpy()

    return ev.zero_shot(enc_img, enc_txt, n=400, seed=999)


def copy_model_folder(src: Path, dst: Path) -> None:
    """Copy the shippable files of a trained folder (not its train_state/)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "train_config.json", "train_metrics.json"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
