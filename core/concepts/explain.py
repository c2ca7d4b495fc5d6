"""Workspace-level concept explanations: patches -> PACE -> named concepts, θ, φ and metrics (cached).

``explain(ws, model, estimator=PACE(8, ...), ...)`` explains the image items of a workspace with one model:

1. patch tokens, CLS attention and joint-space patch vectors (``core.concepts.patches``, cached);
2. the model's predictions ỹ: a metadata column (``label``: one-hot), a zero-shot softmax over the user's
   ``prompts``, or by default a zero-shot softmax over the naming vocabulary (both modalities
   mean-centred, as for naming);
3. PACE fitted on all of it; per concept: names, share, prototype patches;
4. metrics: faithfulness (θ -> predicted label), stability (θ of augmented views), sparsity, parsimony.

Results are saved as derived artifacts (core.artifacts) ``derived/concepts/<model-slug>/<key>.{json,npz}``
where the key (:func:`core.artifacts.artifact_key`) hashes the model, the item ids, the vocabulary and
every parameter; the same call again reads them back, and deleting an explained item removes them.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import Codec, artifact_key, npz_array, register_codec
from ..encoders import unit_rows
from ..params import Interval, Options, validate
from ..progress import StageProgress
from .pace import PACE

log = logging.getLogger(__name__)

RESULT_FORMAT = 3
SPACES = ("joint", "tokens")
MISSING_LABEL = "(missing)"


@dataclass
class Concept:
    """One concept: ``id`` (0-based), name candidates with their scores, dataset ``share`` (attention-
    weighted share of all patches), ``images`` (how many images use it: θ ≥ 0.1/K) and ``prototypes``
    (item id, patch index) of the patches nearest its mean, one per image."""

    id: int
    names: list[str]
    name_scores: list[float]
    share: float
    images: int
    prototypes: list[tuple[str, int]]

    @property
    def label(self) -> str:
        return f"{self.id + 1}: " + ", ".join(self.names[:3]) if self.names else f"concept {self.id + 1}"

    def to_dict(self) -> dict:
        return {"id": self.id, "names": list(self.names), "name_scores": [round(float(s), 4) for s in self.name_scores],
                "share": round(float(self.share), 4), "images": int(self.images),
                "prototypes": [{"item": i, "patch": int(j)} for i, j in self.prototypes]}

    @classmethod
    def from_dict(cls, d: dict) -> Concept:
        return cls(int(d["id"]), list(d["names"]), [float(s) for s in d["name_scores"]], float(d["share"]),
                   int(d["images"]), [(str(p["item"]), int(p["patch"])) for p in d["prototypes"]])


@dataclass
class ConceptsResult:
    """Concept explanations of ``ids`` (M images).

    ``theta`` (M, K) float32 rows sum to 1; ``phi`` (M, J, K) float32 per-patch concept probabilities;
    ``attention`` (M, J) float32, the patch weights used (CLS attention, smoothed as asked);
    ``predicted`` (M,) the model's predicted label per image;
    ``metrics``: faithfulness, stability, sparsity, parsimony (None where undefined).
    """

    model: str
    k: int
    ids: np.ndarray
    concepts: list[Concept]
    theta: np.ndarray
    phi: np.ndarray
    attention: np.ndarray
    predicted: np.ndarray
    grid: tuple[int, int]
    image_size: tuple[int, int]
    metrics: dict
    params: dict
    prediction_source: str
    seconds: float = 0.0
    path: Path | None = None
    cached: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.ids)

    def row_of(self, item_id: str) -> int:
        hit = np.flatnonzero(self.ids.astype(str) == str(item_id))
        if not len(hit):
            raise KeyError(f"item {item_id!r} is not among the explained images")
        return int(hit[0])

    def patch_map(self, item_id: str, concept: int) -> np.ndarray:
        """φ of one concept over the patch grid of one image: (gh, gw) float32 in [0, 1]."""
        return self.phi[self.row_of(item_id), :, int(concept)].reshape(self.grid)

    def patch_concepts(self) -> np.ndarray:
        """Most likely concept of every patch: (M, J) int."""
        return self.phi.argmax(2)

    def top_images(self, concept: int, *, n: int, min_share: float = 0.0) -> np.ndarray:
        """Rows of the ``n`` images with the largest share θ of ``concept``: (≤ n,) int, largest first
        (ties in row order). Only images that have some of it: θ > 0 and θ ≥ ``min_share / k`` (0.1: the
        images that use it, as :attr:`Concept.images` counts them); none may qualify (an empty array)."""
        share = self.theta[:, int(concept)]
        order = np.argsort(-share, kind="stable")
        keep = (share[order] > 0) & (share[order] >= min_share / self.k)
        return order[keep][: int(n)]

    def used_concepts(self, row: int, *, n: int, min_share: float = 0.1) -> list[int]:
        """Concepts that image ``row`` uses: those with θ at least ``min_share / k`` (a tenth of an even
        share by default), largest share first (ties by concept), at most ``n``."""
        order = np.argsort(-self.theta[int(row)], kind="stable")
        return [int(k) for k in order if self.theta[int(row), k] >= min_share / self.k][: int(n)]

    def assignments_frame(self) -> pd.DataFrame:
        """One row per image: id, top concept (1-based) and its names, predicted label, θ per concept."""
        top = self.theta.argmax(1)
        names = {c.id: ", ".join(c.names[:3]) for c in self.concepts}
        df = pd.DataFrame({"id": self.ids.astype(str), "top_concept": top + 1,
                           "top_concept_names": [names.get(int(t), "") for t in top],
                           "top_share": self.theta[np.arange(len(top)), top].round(4),
                           "predicted": self.predicted.astype(str)})
        for k in range(self.k):
            df[f"theta_{k + 1}"] = self.theta[:, k].round(5)
        return df

    def to_dict(self) -> dict:
        return {"model": self.model, "k": self.k, "n_images": self.n_images,
                "block": self.params.get("block"), "attn_block": self.params.get("attn_block"),
                "prediction": {"source": self.prediction_source,
                               "classes": sorted(map(str, pd.unique(self.predicted)))[:50]},
                "concepts": [c.to_dict() for c in self.concepts],
                "metrics": {k: (None if v is None else int(v) if k == "parsimony" else round(float(v), 4))
                            for k, v in self.metrics.items()},
                "params": {k: v for k, v in self.params.items() if k != "ids"},
                "seconds": round(float(self.seconds), 3), "cached": self.cached,
                "path": None if self.path is None else str(self.path), **self.extra}


# ---- predictions --------------------------------------------------------------------------------
def _logit_scale(encoder) -> float:
    ls = getattr(getattr(encoder, "model", None), "logit_scale", None)
    try:
        return float(min(np.exp(float(ls.detach().cpu().reshape(-1)[0])), 100.0))
    except (AttributeError, TypeError, ValueError):
        return 100.0


def check_templates(templates: Sequence[str] | None, prompts: Sequence[str] | None) -> list[str] | None:
    """Prompt templates for zero-shot predictions: None, or a list of distinct texts with one "{}" each.

    Raises ValueError when templates come without prompts, or a template has no (or several) "{}".
    """
    if templates is None:
        return None
    out = list(dict.fromkeys(str(t).strip() for t in templates if str(t).strip()))
    if not out:
        return None
    if prompts is None:
        raise ValueError("templates apply to prompts; give prompts too")
    bad = [t for t in out if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", "")]
    if bad:
        raise ValueError(f"a template needs exactly one '{{}}' where the prompt goes (and no other braces); "
                         f"got {bad[0]!r}")
    return out


def zero_shot(encoder, image_vectors: np.ndarray, prompts: Sequence[str | Sequence[str]], *,
              centred: bool = False) -> np.ndarray:
    """Softmax over classes of ``logit_scale · cos(image, class)``: (n, len(prompts)) float64.

    Each entry of ``prompts`` is one class: a prompt, or a list of prompts whose unit vectors are averaged
    (a prompt ensemble, as open_clip builds its zero-shot classifiers from templates).
    ``centred``: take the cosine after subtracting each modality's mean (the images' mean, the prompts'
    mean), as concept naming does. Over a long word list this keeps generic words that sit near every
    image ("object", "photo") from winning every image; the prediction is then relative to these images.
    """
    from ..vocabulary import vocabulary_vectors

    groups = [[p] if isinstance(p, str) else [str(q) for q in p] for p in prompts]
    if not groups or any(not g for g in groups):
        raise ValueError("zero_shot needs at least one class, each with at least one prompt")
    flat = unit_rows(vocabulary_vectors(encoder, [q for g in groups for q in g]), np.float64)
    ends = np.cumsum([len(g) for g in groups])
    T = unit_rows(np.stack([flat[e - len(g):e].mean(0) for g, e in zip(groups, ends)]), np.float64)
    X = unit_rows(image_vectors, np.float64)
    if centred:
        X, T = unit_rows(X - X.mean(0), np.float64), unit_rows(T - T.mean(0), np.float64)
    s = _logit_scale(encoder) * (X @ T.T)
    s -= s.max(1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(1, keepdims=True)


def _image_vectors(ws, model: str, encoder, ids: list[str], files: list[Path]) -> np.ndarray:
    X, got = ws.vectors(model, ids=ids)
    if len(got) == len(ids):
        return X
    have = dict(zip(got.astype(str).tolist(), X))
    todo = [n for n, i in enumerate(ids) if i not in have]
    Y = encoder.encode_images([files[n] for n in todo])
    out = np.zeros((len(ids), Y.shape[1] if len(Y) else X.shape[1]), np.float32)
    for n, i in enumerate(ids):
        if i in have:
            out[n] = have[i]
    out[todo] = Y
    return out


def label_predictions(values: Sequence) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A label column as predictions: (one-hot (n, C), labels (n,) str, classes). Missing -> '(missing)'."""
    s = pd.Series(list(values), dtype=object)
    s = s.where(s.notna(), MISSING_LABEL).astype(str)
    codes, classes = pd.factorize(s, sort=True)
    P = np.zeros((len(s), len(classes)))
    P[np.arange(len(s)), codes] = 1.0
    return P, s.to_numpy(dtype=object), [str(c) for c in classes]


# ---- naming -------------------------------------------------------------------------------------

def name_concepts(concept_vectors: np.ndarray, patch_vectors: np.ndarray, vocab_vectors: np.ndarray,
                  vocabulary: Sequence[str], *, n: int = 5, patch_weights: np.ndarray | None = None,
                  distinct: bool = True) -> list[list[tuple[str, float]]]:
    """Rank a vocabulary for every concept in the joint space.

    ``concept_vectors`` (K, E) joint-space prototypes, ``patch_vectors`` (N, E) joint-space patch vectors
    (their weighted mean is the image-side centre), ``vocab_vectors`` (V, E). Each modality is mean-centred
    (patches by their centre, words by the vocabulary mean) so the modality gap does not decide; score =
    cosine of the centred vectors. Returns per concept the top ``n`` (word, score), best first.

    ``distinct``: every concept leads with a word no other concept leads with, so two concepts never
    share a name. Concepts choose in order of their best score; one whose best word is taken leads with
    its best free word (its runner-up, or further down), then its other top words by score. Only when
    the vocabulary has fewer words than there are concepts can a lead word repeat.
    """
    C = unit_rows(concept_vectors, np.float64)
    Pn = unit_rows(patch_vectors, np.float64)
    w = np.ones(len(Pn)) if patch_weights is None else np.asarray(patch_weights, np.float64).ravel()
    centre = (Pn * w[:, None]).sum(0) / max(w.sum(), 1e-12)
    T = unit_rows(vocab_vectors, np.float64)
    S = unit_rows(C - centre, np.float64) @ unit_rows(T - T.mean(0), np.float64).T
    ranked = [np.argsort(-s, kind="stable")[: min(n + len(S), len(s))] for s in S]  # room for a free lead
    out = [[(str(vocabulary[j]), float(s[j])) for j in top[:n]] for s, top in zip(S, ranked)]
    if not distinct or n <= 0:
        return out
    taken: set[str] = set()
    for c in np.argsort(-S.max(1) if S.size else np.zeros(len(S)), kind="stable"):
        words = [(str(vocabulary[j]), float(S[c, j])) for j in ranked[c]]
        lead = next((w for w in words if w[0] not in taken), words[0] if words else None)
        if lead is None:
            continue
        taken.add(lead[0])
        out[c] = [lead, *[w for w in words if w[0] != lead[0]][: max(n - 1, 0)]]
    return out


# ---- crops --------------------------------------------------------------------------------------
def input_box(image_wh: tuple[int, int], box: tuple[float, float, float, float], input_size: tuple[int, int]
              ) -> tuple[float, float, float, float]:
    """A box given as fractions of the model input -> pixels of the original image.

    Assumes open_clip's default preprocessing: resize the shortest side to the input size, centre crop.
    """
    w, h = image_wh
    ih, iw = input_size
    scale = max(iw / w, ih / h)
    ox, oy = (w * scale - iw) / 2, (h * scale - ih) / 2
    x0, y0, x1, y1 = box
    return ((x0 * iw + ox) / scale, (y0 * ih + oy) / scale, (x1 * iw + ox) / scale, (y1 * ih + oy) / scale)


def patch_crop(image, patch: int, grid: tuple[int, int], input_size: tuple[int, int], *, context: float = 0.5,
               size: int = 64):
    """The crop of patch ``patch`` (plus ``context`` patch widths around it) of a PIL image or path,
    resized to ``size`` px (nearest neighbour, so small patches stay sharp)."""
    from PIL import Image

    from ..encoders import load_image

    im = load_image(image)
    gh, gw = grid
    r, c = divmod(int(patch), gw)
    box = ((c - context) / gw, (r - context) / gh, (c + 1 + context) / gw, (r + 1 + context) / gh)
    x0, y0, x1, y1 = input_box(im.size, box, input_size)
    crop = im.crop((round(x0), round(y0), round(x1), round(y1)))
    return crop.resize((size, size), Image.Resampling.NEAREST)


def input_frame(image, input_size: tuple[int, int], *, size: int | None = None) -> np.ndarray:
    """A PIL image or path as the model sees it (shortest side resized, centre crop to ``input_size``),
    optionally enlarged to ``size`` px: (H, W, 3) uint8, aligned with the patch grid."""
    from PIL import Image

    from ..encoders import load_image

    im = load_image(image)
    ih, iw = input_size
    box = input_box(im.size, (0.0, 0.0, 1.0, 1.0), input_size)
    im = im.resize((iw, ih), Image.Resampling.BICUBIC, box=box)
    if size is not None:
        im = im.resize((size, size * ih // iw), Image.Resampling.NEAREST)
    return np.asarray(im, dtype=np.uint8)


# ---- the workspace function -------------------------------------------------------------------------
def concepts_dir(ws, model: str) -> Path:
    return ws.derived_dir("concepts", model)


def _image_ids(ws, ids: Sequence[str] | None) -> list[str]:
    items = ws.items
    images = items[items["modality"] == "image"]
    if ids is None:
        out = images["id"].astype(str).tolist()
    else:
        want = list(dict.fromkeys(str(i) for i in ids))
        known = set(images["id"].astype(str))
        out = [i for i in want if i in known]
        if not out:
            raise ValueError(f"none of the {len(want)} given ids is an image item of workspace {ws.name!r}")
    if len(out) < 2:
        raise ValueError(f"concepts need at least 2 images; workspace {ws.name!r} has {len(out)} to explain")
    return list(dict.fromkeys(out))


def _save(f, res: ConceptsResult) -> None:
    """The concepts codec's save: the arrays into the companion ``<key>.npz``, then the JSON (the commit file,
    renamed last) into ``f``."""
    arrays = {"format": np.int64(RESULT_FORMAT), "ids": res.ids.astype(str), "theta": res.theta,
              "phi": res.phi.astype(np.float16), "attention": res.attention, "predicted": res.predicted.astype(str)}
    meta = {"format": RESULT_FORMAT, "model": res.model, "k": res.k, "grid": list(res.grid),
            "image_size": list(res.image_size), "metrics": res.metrics, "params": res.params,
            "prediction_source": res.prediction_source, "seconds": res.seconds,
            "concepts": [c.to_dict() for c in res.concepts], "extra": res.extra}
    f.companion(f.path.with_suffix(".npz").name, lambda g: np.savez(g, **arrays))
    f.write(json.dumps(meta, indent=1, sort_keys=True, default=str).encode("utf-8"))


def _load(path: Path) -> ConceptsResult | None:
    """A saved result: the JSON commit file ``path`` and its ``.npz`` (None when missing, unreadable or older)."""
    from ..storage import read_json

    base = path.with_suffix("")
    try:
        meta = read_json(base.with_suffix(".json"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != RESULT_FORMAT:
        return None
    try:
        with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    return ConceptsResult(meta["model"], int(meta["k"]), arr["ids"].astype(object),
                          [Concept.from_dict(c) for c in meta["concepts"]], arr["theta"].astype(np.float32),
                          arr["phi"].astype(np.float32), arr["attention"].astype(np.float32),
                          arr["predicted"].astype(object), tuple(meta["grid"]), tuple(meta["image_size"]),
                          meta["metrics"], meta["params"], meta["prediction_source"], float(meta["seconds"]),
                          base.with_suffix(".json"), True, meta.get("extra") or {})


def _result_ids(path: Path) -> np.ndarray:
    """The image ids a saved result explains (its ``.npz``'s ``ids``)."""
    return npz_array(path.with_suffix(".npz"), "ids")


CONCEPTS_CODEC = register_codec("concepts", Codec(".json", _save, _load, ids=_result_ids))


# ---- the workspace function: parameters --------------------------------------------------------
EXPLAIN_DEFAULTS = {"n_concepts": 8, "covariance": "isotropic", "n_init": 4}  # where explain's PACE differs
# explain's own parameters; those of the concept model are PACE.parameter_constraints
EXPLAIN_CONSTRAINTS: dict[str, list] = {
    "block": [Interval(Integral, None, None), None],
    "attn_block": [Interval(Integral, None, None), None],
    "space": [Options(SPACES), None],
    "attention_smoothing": [Interval(Real, 0, None)],
    "stability_sample": [Interval(Integral, 0, None)],
    "n_names": [Interval(Integral, 1, None)],
    "n_prototypes": [Interval(Integral, 1, None)],
}


def default_estimator(**params) -> PACE:
    """The PACE model :func:`explain` fits unless given one: PACE's defaults except
    :data:`EXPLAIN_DEFAULTS` (8 concepts, isotropic covariance, the best of 4 EM starts), with ``params``
    (PACE's keywords) on top."""
    return PACE(**{**EXPLAIN_DEFAULTS, **params})


def _check_estimator(estimator) -> PACE:
    """A fresh, unfitted copy of ``estimator`` (None: :func:`default_estimator`), its parameters checked
    against ``PACE.parameter_constraints`` before any patch is read."""
    from sklearn.base import clone

    if estimator is None:
        estimator = default_estimator()
    if not isinstance(estimator, PACE):
        raise ValueError(f"estimator must be a core.concepts.PACE model; got {type(estimator).__name__}")
    validate(estimator.get_params(deep=False), PACE.parameter_constraints, "PACE")
    return clone(estimator)


def _check_texts(items: pd.DataFrame, ws_name: str, label, prompts, templates) -> tuple[list | None, list | None]:
    """``(prompts, templates)`` cleaned; ValueError for a label with prompts, fewer than 2 prompts, a bad
    template or a label column the workspace lacks."""
    if label is not None and prompts is not None:
        raise ValueError("give either label (a metadata column) or prompts, not both")
    prompts = None if prompts is None else [str(p).strip() for p in prompts if str(p).strip()]
    if prompts is not None and len(set(prompts)) < 2:
        raise ValueError(f"prompts need at least 2 different texts; got {prompts!r}")
    templates = check_templates(templates, prompts)
    if label is not None and label not in items.columns:
        from ..workspace import ITEM_COLUMNS

        meta = [c for c in items.columns if c not in ITEM_COLUMNS]
        raise ValueError(f"label column {label!r} is not in workspace {ws_name!r}; metadata columns: "
                         f"{', '.join(meta) or 'none'}")
    return prompts, templates


def _blocks(enc, block: int | None, attn_block: int | None, space: str | None) -> tuple[int, int, str, int]:
    """``(token block, attention block, space, number of blocks)`` of the model's ViT (NotViTError for others);
    negative blocks count from the end. ValueError for space "joint" with an earlier block."""
    from .patches import n_blocks

    nb = n_blocks(enc)  # raises NotViTError for other image towers
    bi = (nb - 1) if block is None else (block + nb if block < 0 else block)
    ai = (nb - 1) if attn_block is None else (attn_block + nb if attn_block < 0 else attn_block)
    if space is None:
        space = "joint" if bi == nb - 1 else "tokens"
    if space == "joint" and bi != nb - 1:
        raise ValueError(f"space 'joint' projects the last block ({nb - 1}); use space='tokens' for block {bi}")
    return bi, ai, space, nb


def _vocabulary(model: str, vocabulary: Sequence[str] | None) -> list[str]:
    from ..vocabulary import default_vocabulary

    vocab = [str(w) for w in (default_vocabulary(model) if vocabulary is None else vocabulary) if str(w).strip()]
    vocab = list(dict.fromkeys(vocab))
    if not vocab:
        raise ValueError("the vocabulary is empty")
    return vocab


def _predictions(ws, model: str, enc, ids: list[str], files: list[Path], *, label, prompts, templates,
                 vocab: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """The model's predictions ỹ to explain: ``(P (M, C) probabilities, predicted (M,) labels, source)``."""
    items = ws.items
    if label is not None:
        values = items.set_index("id")[label].reindex(ids)
        P, predicted, _ = label_predictions(values.tolist())
        return P, predicted, f"label:{label}"
    texts = prompts if prompts is not None else vocab
    classes = texts if templates is None else [[t.format(p) for t in templates] for p in texts]
    # the default word list holds generic words; centred, the words that tell the images apart win
    P = zero_shot(enc, _image_vectors(ws, model, enc, ids, files), classes, centred=prompts is None)
    predicted = np.asarray([texts[j] for j in P.argmax(1)], dtype=object)
    return P, predicted, "prompts" if prompts is not None else "vocabulary"


def _named_concepts(pace: PACE, enc, data, X: np.ndarray, A: np.ndarray, ids: list[str], *, space: str, block: int,
                    n_blocks: int, vocab: list[str], n_names: int, n_prototypes: int) -> list[Concept]:
    """The fitted concepts with names from ``vocab`` (in the joint space), shares, use counts and prototypes."""
    from ..vocabulary import vocabulary_vectors
    from .patches import project_tokens

    theta, phi = pace.theta_, pace.phi_
    W = A * data.n_patches
    if space == "joint":  # the prototypes are joint-space vectors already
        joint_protos = pace.prototypes_
    elif block == n_blocks - 1:  # the fitted tokens are the last block's: project them like the pooled output
        joint_protos = project_tokens(enc, pace.prototypes_)
    else:  # an earlier block: the φ·w-weighted mean of the same patches' last-block joint vectors
        R = phi * W[:, :, None]
        joint_protos = np.einsum("mjk,mje->ke", R, data.joint) / np.maximum(R.sum((0, 1)), 1e-12)[:, None]
    names = name_concepts(joint_protos, data.joint.reshape(-1, data.joint.shape[2]), vocabulary_vectors(enc, vocab),
                          vocab, n=n_names, patch_weights=W.ravel())
    protos = pace.prototype_patches(X, phi, n=n_prototypes)
    K = theta.shape[1]
    used = (theta >= 0.1 / K).sum(0)
    return [Concept(c, [w for w, _ in names[c]], [s for _, s in names[c]], float(pace.shares_[c]), int(used[c]),
                    [(str(ids[m]), int(j)) for m, j in protos[c] if m >= 0]) for c in range(K)]


def _stability(pace: PACE, enc, files: list[Path], X: np.ndarray, A: np.ndarray, *, sample: int, space: str,
               blocks: tuple[int, int], smoothing: float, progress) -> float | None:
    """Stability of θ under augmentation on a seeded sample of at most ``sample`` images (None for 0)."""
    if sample <= 0:
        return None
    import torch

    from . import metrics as mt
    from .patches import extract_patches, smooth_attention

    seed = pace.random_state
    rows = np.sort(np.random.default_rng(seed).choice(len(files), size=min(len(files), int(sample)), replace=False))
    with torch.random.fork_rng():
        torch.manual_seed(0 if seed is None else int(seed))
        aug = extract_patches(enc, [files[r] for r in rows], block=blocks[0], attn_block=blocks[1],
                              transform=mt.augmentation(), progress=progress)
    theta0, _ = pace.transform(X[rows], A[rows])
    theta1, _ = pace.transform(aug.joint if space == "joint" else aug.tokens,
                               smooth_attention(aug.attention, aug.grid, smoothing))
    return mt.stability(theta0, theta1)


def _result_params(pace: PACE, block: int, attn_block: int, space: str, *, attention_smoothing: float,
                   stability_sample: int, label, prompts, templates, n_names: int, n_prototypes: int) -> dict:
    """The ``params`` of a result (its JSON): the concept model's main parameters and explain's own."""
    alpha = pace.alpha
    return {"k": int(pace.n_concepts), "block": int(block), "attn_block": int(attn_block), "space": space,
            "alpha": float(alpha) if np.ndim(alpha) == 0 else [float(a) for a in np.ravel(alpha)],
            "n_components": int(pace.n_components), "covariance": pace.covariance, "n_init": int(pace.n_init),
            "max_iter": int(pace.max_iter), "use_attention": bool(pace.use_attention),
            "attention_smoothing": float(attention_smoothing), "temperature": float(pace.temperature),
            "random_state": pace.random_state, "stability_sample": int(stability_sample), "label": label,
            "prompts": prompts, "templates": templates, "n_names": int(n_names), "n_prototypes": int(n_prototypes)}


def explain(ws, model: str, *, estimator: PACE | None = None, ids: Sequence[str] | None = None,
            label: str | None = None, prompts: Sequence[str] | None = None, templates: Sequence[str] | None = None,
            vocabulary: Sequence[str] | None = None, block: int | None = None, attn_block: int | None = None,
            space: str | None = None, attention_smoothing: float = 1.0, stability_sample: int = 200,
            n_names: int = 5, n_prototypes: int = 8, encoder=None, progress: StageProgress | None = None,
            use_cache: bool = True) -> ConceptsResult:
    """Concept explanations of a workspace's images with an open_clip ViT model, by the concept model
    ``estimator`` (a :class:`PACE`, unfitted; default :func:`default_estimator`: ``PACE(8,
    covariance="isotropic", n_init=4)``). A clone is fitted; ``estimator.random_state`` also seeds the
    stability sample and the faithfulness split.

    ``ids``: image item ids (default: every image). Predictions ỹ: ``label`` (a metadata column; one-hot,
    missing values form their own class), ``prompts`` (zero-shot softmax over them; ``templates`` put each
    prompt into every template and average the texts), or else the zero-shot softmax over ``vocabulary``
    with both modalities mean-centred. ``vocabulary`` names the concepts (default: the model's
    :func:`core.vocabulary.default_vocabulary`). ``block`` / ``attn_block``: ViT blocks of the tokens and
    the attention (default: the last). ``space``: the patch features PACE is fitted on, ``"joint"`` (the
    last block's patch tokens projected into the joint space, where concepts are named) or ``"tokens"``
    (the residual stream after ``block``); default "joint", or "tokens" for an earlier block.
    ``attention_smoothing``: σ in patches of a Gaussian blur of the attention before it weights the
    patches (0: the raw attention, as in the paper). ``stability_sample`` images (at most) get an augmented
    view for the stability metric (0 skips it). ``progress(stage, done, total)``: stages ``patches``,
    ``fit``, ``stability``. ValueError for a value outside :data:`EXPLAIN_CONSTRAINTS` or
    ``PACE.parameter_constraints``, an unknown label column, a non-ViT model (NotViTError)."""
    from ..encoders import load_encoder
    from .patches import smooth_attention, workspace_patches

    t0 = time.perf_counter()
    validate({"block": block, "attn_block": attn_block, "space": space, "attention_smoothing": attention_smoothing,
              "stability_sample": stability_sample, "n_names": n_names, "n_prototypes": n_prototypes},
             EXPLAIN_CONSTRAINTS, "explain")
    pace = _check_estimator(estimator)
    items = ws.items
    prompts, templates = _check_texts(items, ws.name, label, prompts, templates)
    enc = encoder if encoder is not None else load_encoder(model)
    bi, ai, space, nb = _blocks(enc, block, attn_block, space)
    ids = _image_ids(ws, ids)
    vocab = _vocabulary(model, vocabulary)
    params = _result_params(pace, bi, ai, space, attention_smoothing=attention_smoothing,
                            stability_sample=stability_sample, label=label, prompts=prompts, templates=templates,
                            n_names=n_names, n_prototypes=n_prototypes)
    key = artifact_key(model=model, ids=sorted(ids), vocab=vocab, params=params, format=RESULT_FORMAT,
                       estimator=pace.get_params(deep=False))
    path = ws.artifact_path("concepts", model, key, CONCEPTS_CODEC)
    if use_cache:
        hit = _load(path)
        if hit is not None:
            return hit

    def stage(name):
        return (lambda d, t: progress(name, d, t)) if progress is not None else None

    data = workspace_patches(ws, model, ids, block=bi, attn_block=ai, encoder=enc, progress=stage("patches"),
                             use_cache=use_cache)
    rel = items[items["modality"] == "image"].set_index("id")["image"].astype(str)
    files = [ws.abspath(rel[i]) for i in ids]
    P, predicted, source = _predictions(ws, model, enc, ids, files, label=label, prompts=prompts,
                                        templates=templates, vocab=vocab)
    X = data.joint if space == "joint" else data.tokens
    A = smooth_attention(data.attention, data.grid, attention_smoothing)  # the patch weights (÷ J)
    pace.fit(X, A, P, progress=stage("fit"))
    concepts = _named_concepts(pace, enc, data, X, A, ids, space=space, block=bi, n_blocks=nb, vocab=vocab,
                               n_names=n_names, n_prototypes=n_prototypes)
    from . import metrics as mt

    K = int(pace.n_concepts)
    metrics = {"faithfulness": mt.faithfulness(pace.theta_, predicted.astype(str),
                                               random_state=pace.random_state or 0),
               "stability": _stability(pace, enc, files, X, A, sample=stability_sample, space=space, blocks=(bi, ai),
                                       smoothing=attention_smoothing, progress=stage("stability")),
               "sparsity": mt.sparsity(pace.theta_), "parsimony": K}
    res = ConceptsResult(model, K, np.asarray(ids, dtype=object), concepts, pace.theta_, pace.phi_, A, predicted,
                         data.grid, data.image_size, metrics, params, source, time.perf_counter() - t0, None, False,
                         {"fit_seconds": round(pace.fit_seconds_, 3), "n_iter": int(pace.n_iter_),
                          "converged": bool(pace.converged_)})
    if use_cache:
        ws.artifact("concepts", model, key, lambda: res, codec=CONCEPTS_CODEC, reuse=False)
        res.path = path
    log.info("concepts of %d images with %s: K=%d in %.1fs", len(ids), model, K, res.seconds)
    return res
