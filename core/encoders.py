"""Model registry and encoders.

A model id names a family and a target (see docs/models.md):

- ``openclip:<arch>/<pretrained>`` any pair of ``open_clip.list_pretrained()`` (hub download, or cache)
- ``openclip-local:<dir>``          a folder with ``open_clip_config.json`` + weights (safetensors preferred)
- ``st:<name or dir>``              a sentence-transformers text model
- ``minilm`` / ``demo``             named aliases, listed in ``core/models.json``
- ``precomputed:<name>``            vectors that came with an uploaded table (no encoder)

Every encoder returns ``(n, d)`` float32 arrays with L2-normalised rows. Encoders are loaded once per
process (per id and device) and are always in ``eval()`` + inference mode.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import one_line
from .progress import Progress

if TYPE_CHECKING:
    import PIL.Image

    from .images import ImageBatch

log = logging.getLogger(__name__)

ProgressFn = Progress  # the earlier name; progress(done, total) after each batch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# an installed wheel ships assets/ as core/_assets (pyproject.toml); a checkout keeps it beside core/
_PACKAGED_ASSETS = Path(__file__).resolve().with_name("_assets")
ASSETS_DIR = Path(os.environ.get("JOINTSCOPE_ASSETS") or
                  (_PACKAGED_ASSETS if _PACKAGED_ASSETS.is_dir() else PROJECT_ROOT / "assets"))
_REGISTRY_FILE = Path(__file__).with_name("models.json")

FAMILIES = ("openclip", "openclip-local", "st", "precomputed")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the model and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    family: str
    modalities: tuple[str, ...]
    available: bool
    dim: int | None = None
    description: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "family": self.family,
            "modalities": list(self.modalities),
            "available": self.available,
            "dim": self.dim,
            "description": self.description,
        }


def _aliases() -> dict[str, dict]:
    with open(_REGISTRY_FILE, encoding="utf-8") as f:
        return json.load(f)["aliases"]


def _resolve_target(target: str) -> str:
    if target.startswith("package:"):
        module = target.split(":", 1)[1]
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ModelLoadError(
                f"package {module!r} is not installed; run `pip install {module.replace('_', '-')}`"
            ) from e
        return str(mod.get_model_path())
    if target.startswith("assets:"):
        return str(ASSETS_DIR / target.split(":", 1)[1])
    return target


def local_model_folder(model_id: str | None) -> Path | None:
    """The folder of a model whose weights are local files that can change under the same id (bundled
    models, ``openclip-local:``, ``st:`` folders); None for hub ids (their weights are fixed by the name),
    unknown ids and folders that do not exist."""
    if not model_id:
        return None
    try:
        family, target = parse_model_id(str(model_id))
    except ValueError:
        return None
    folder = Path(target)
    return folder if family in ("openclip-local", "st") and folder.is_dir() else None


def weights_key(model_id: str) -> tuple | None:
    """(name, size, mtime) of the files in a model's :func:`local_model_folder`; None where there is none.
    Changes whenever the checkpoint is replaced."""
    folder = local_model_folder(model_id)
    if folder is None:
        return None
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()))


def parse_model_id(model_id: str) -> tuple[str, str]:
    """Split a model id into (family, target); aliases resolve to their family and target.

    Raises ValueError listing the valid forms for an unknown id.
    """
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError(f"model id must be a non-empty string; got {model_id!r}")
    aliases = _aliases()
    if model_id in aliases:
        a = aliases[model_id]
        return a["family"], _resolve_target(a["target"])
    family, sep, target = model_id.partition(":")
    if sep and family in FAMILIES and target:
        return family, target
    raise ValueError(
        f"unknown model id {model_id!r}; valid: {', '.join(sorted(aliases))}, "
        "openclip:<arch>/<pretrained>, openclip-local:<dir>, st:<name or dir>, precomputed:<name>"
    )


HUB_PROBE_TIMEOUT = 3.0  # seconds a hub that is not answering may take before a download is given up


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache the environment names now: HF_HUB_CACHE, else HF_HOME/hub, else
    huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _in_hf_cache(repo: str, names: Sequence[str], *, file: bool = True) -> str | None:
    """The cached path of the first of ``names`` in hub repo ``repo`` (huggingface_hub's own cache lookup);
    None when none is cached. ``file=False`` also accepts the cache's record that the repo has no such file
    (what a library that asks for an optional file leaves there), and returns the name then."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=_hf_cache_dir())
        if isinstance(hit, str) or (hit is not None and not file):
            return hit if isinstance(hit, str) else name
    return None


def _openclip_hub_files(arch: str, tag: str) -> list[tuple[str, str | None]]:
    """What open_clip downloads for a pretrained pair, as (what it is, local path or None when it is not on
    this computer): the weights first (the hub file, its safetensors alternative first, as open_clip
    resolves ``pretrained``; a ``file`` entry; or a URL's copy in ``~/.cache/clip``), then the config of a
    Hugging Face text tower and its tokenizer where the architecture has them."""
    import open_clip
    from open_clip import pretrained

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("file"):
        files = [(f"weights ({cfg['file']})", cfg["file"] if Path(cfg["file"]).is_file() else None)]
    elif cfg.get("hf_hub"):
        repo, name = os.path.split(cfg["hf_hub"])  # "org/repo/" names open_clip's default file
        name = name or pretrained.HF_WEIGHTS_NAME
        alternatives = getattr(pretrained, "_get_safe_alternatives", lambda n: ())(name)
        files = [(f"weights ({repo}/{name})", _in_hf_cache(repo, [*alternatives, name]))]
    else:
        url = cfg.get("url", "")
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        files = [(f"weights ({url})", str(path) if url and path.is_file() else None)]
    text_cfg = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
    for key, what, name in (("hf_model_name", "text tower", "config.json"),
                            ("hf_tokenizer_name", "tokenizer", "tokenizer_config.json")):
        if text_cfg.get(key):
            files.append((f"{what} ({text_cfg[key]})", _in_hf_cache(text_cfg[key], [name], file=False)))
    return files


def _openclip_hub_cached(arch: str, tag: str) -> bool:
    """True when everything open_clip downloads for a pretrained pair is in the local caches."""
    files = _openclip_hub_files(arch, tag)
    return bool(files) and all(path for _, path in files)


def _hub_endpoint() -> str:
    """The Hugging Face hub's address: HF_ENDPOINT, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_unreachable(url: str, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why ``url``'s host cannot be reached now, or None when it answers: ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) is set, or no connection (through the proxy the environment names, if any)
    within ``timeout`` seconds, name lookup included."""
    import socket
    import urllib.parse
    import urllib.request

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    try:
        address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except ValueError as e:  # a port that is not a number
        return one_line(e)
    answer: dict[str, str | None] = {}

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer["why"] = None
        except OSError as e:
            answer["why"] = one_line(e)

    probe = threading.Thread(target=connect, name="jointscope-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)  # the name lookup is not bounded by the socket's timeout
    return answer.get("why", f"no answer within {timeout:g} s")


def _local_openclip_ok(path: str) -> bool:
    p = Path(path)
    return (p / "open_clip_config.json").is_file() and any(
        (p / n).is_file() for n in _OPENCLIP_WEIGHT_NAMES
    )


_OPENCLIP_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
)


def list_models(*, include_hub: bool = True) -> list[ModelInfo]:
    """All known models: named aliases first, then every open_clip pretrained pair.

    ``available`` means usable offline right now (bundled, or weights in the local cache).
    """
    infos: list[ModelInfo] = []
    for name, a in _aliases().items():
        family = a["family"]
        try:
            target = _resolve_target(a["target"])
            ok = _local_openclip_ok(target) if family == "openclip-local" else Path(target).is_dir()
        except ModelLoadError:
            ok = False
        mods = ("image", "text") if family.startswith("openclip") else ("text",)
        infos.append(ModelInfo(name, family, mods, ok, a.get("dim"), a.get("description", "")))
    if include_hub:
        try:
            import open_clip
        except ImportError:
            log.warning("open_clip is not installed; hub models are not listed")
            return infos
        for arch, tag in open_clip.list_pretrained():
            try:
                cached = _openclip_hub_cached(arch, tag)
            except Exception:  # noqa: BLE001 - a broken cache entry must not hide the list
                cached = False
            infos.append(
                ModelInfo(f"openclip:{arch}/{tag}", "openclip", ("image", "text"), cached,
                          None, f"open_clip {arch} pretrained on {tag} (hub download on first use)")
            )
    return infos


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda > mps > cpu; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _batches(seq: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def unit_rows(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``x`` with every vector (the last axis) scaled to unit L2 norm; all-zero vectors stay zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_image(image) -> PIL.Image.Image:
    """Open a path, bytes or PIL image as an upright RGB image in full (see core.images.open_image)."""
    from .images import open_image

    return open_image(image)


class Encoder:
    """Common interface: ``id``, ``dim``, ``modalities``, ``encode_texts``, ``encode_images``."""

    id: str
    dim: int
    modalities: tuple[str, ...]
    device: str = "cpu"
    text_batch_size: int = 128
    image_batch_size: int = 64
    image_input_size: int | None = None  # shorter side the image transform needs (reduced decoding); None: full
    image_prefetch: int = 2  # batches decoded ahead of the one being encoded

    def encode_texts(self, texts: Sequence[str], *, batch_size: int | None = None,
                     progress: Progress | None = None) -> np.ndarray:
        """Texts -> (n, dim) float32, unit rows."""
        self._require("text")
        texts = [str(t) for t in texts]
        return self._run(texts, self._encode_text_batch, batch_size or self.text_batch_size, progress)

    def encode_images(self, images: Sequence, *, batch_size: int | None = None,
                      progress: Progress | None = None, reduced: bool = True) -> np.ndarray:
        """PIL images, paths or bytes -> (n, dim) float32, unit rows.

        Runs :meth:`iter_encode_images` (bounded prefetch, reduced decoding unless ``reduced=False``);
        an unreadable image raises :class:`core.images.ImageReadError` naming it.
        """
        from .images import ImageReadError

        images = list(images)
        out = np.zeros((len(images), self.dim), np.float32)
        for b in self.iter_encode_images(images, batch_size=batch_size, progress=progress, reduced=reduced):
            if b.errors:
                i, why = b.errors[0]
                raise ImageReadError(i, images[i], why)
            out[b.positions] = b.vectors
        return out

    def iter_encode_images(self, images: Sequence, *, batch_size: int | None = None,
                           progress: Progress | None = None, reduced: bool = True, prefetch: int | None = None,
                           workers: int | None = None) -> Iterator[ImageBatch]:
        """Encode images batch by batch while the next ones are decoded (core.images): yields one
        :class:`core.images.ImageBatch` per batch, unreadable images reported in its ``errors`` by index.

        ``images``: paths, bytes or PIL images. At most ``batch_size × prefetch`` prepared images are alive
        at once. ``reduced``: decode at the smallest scale the model's input size allows (``image_input_size``).
        ``workers``: decoding threads (default :func:`core.images.default_workers` for the model's device; 0
        decodes in this thread). ``progress(done, total)`` after each batch.
        """
        from .images import ImageBatch, default_workers, iter_prepared, open_image

        self._require("image")
        bs = batch_size or self.image_batch_size
        n = len(images)

        def prepare(source):
            im, size = open_image(source, min_side=self.image_input_size if reduced else None, with_size=True)
            return self._transform_image(im), size

        if workers is None:
            workers = default_workers(self.device)
        for positions, data, sizes, errors, done in iter_prepared(
                images, prepare, batch_size=bs, prefetch=prefetch or self.image_prefetch, workers=workers):
            X = unit_rows(self._encode_prepared(data)) if data else np.zeros((0, self.dim), np.float32)
            if progress is not None:
                progress(done, n)
            yield ImageBatch(positions, X, sizes, errors, done)

    def _transform_image(self, image):
        """An upright RGB PIL image -> what :meth:`_encode_prepared` takes (runs in decoding threads)."""
        return image

    def _encode_prepared(self, batch: list):
        return self._encode_image_batch(batch)

    def _require(self, modality: str) -> None:
        if modality not in self.modalities:
            have = ", ".join(self.modalities) or "none"
            raise ValueError(f"model {self.id!r} cannot encode {modality}s (it encodes: {have})")

    def _run(self, seq, fn, batch_size: int, progress: Progress | None) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        out = [np.zeros((0, self.dim), np.float32)]
        done = 0
        for batch in _batches(seq, batch_size):
            out.append(unit_rows(fn(batch)))
            done += len(batch)
            if progress is not None:
                progress(done, len(seq))
        return np.concatenate(out, axis=0)

    def _encode_text_batch(self, texts):  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_image_batch(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim}, device={self.device!r})"


class OpenCLIPEncoder(Encoder):
    """An open_clip model with its own preprocessing and tokenizer.

    Exposes ``model``, ``preprocess`` and ``tokenizer`` for patch-level work (concepts).
    """

    modalities = ("image", "text")

    def __init__(self, model_id: str, model, preprocess, tokenizer, device: str):
        self.id = model_id
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.dim = int(self._output_dim(model))
        size = getattr(getattr(model, "visual", None), "image_size", None)
        if size is not None:
            self.image_input_size = int(max(size) if isinstance(size, (tuple, list)) else size)

    @staticmethod
    def _output_dim(model) -> int:
        proj = getattr(model, "text_projection", None)
        if proj is not None and hasattr(proj, "shape"):
            return proj.shape[1]
        return model.visual.output_dim

    def _encode_text_batch(self, texts):
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()

    def _transform_image(self, image):
        return self.preprocess(image)

    def _encode_prepared(self, batch: list):
        import torch

        with torch.inference_mode():
            return self.model.encode_image(torch.stack(batch).to(self.device)).float().cpu().numpy()

    def _encode_image_batch(self, images):
        return self._encode_prepared([self._transform_image(load_image(im)) for im in images])


class SentenceTransformerEncoder(Encoder):
    modalities = ("text",)

    def __init__(self, model_id: str, st_model, device: str):
        self.id = model_id
        self.model = st_model.eval()
        self.device = device
        getdim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        self.dim = int(getdim())

    def _encode_text_batch(self, texts):
        import torch

        with torch.inference_mode():
            return self.model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)


class PrecomputedEncoder(Encoder):
    """Vectors that came with an uploaded table: nothing can be encoded, only looked up."""

    modalities = ()

    def __init__(self, model_id: str, dim: int | None = None):
        self.id = model_id
        self.dim = int(dim or 0)


def _load_openclip_hub(model_id: str, target: str, device: str) -> Encoder:
    import open_clip

    arch, sep, tag = target.partition("/")
    pairs = open_clip.list_pretrained()
    if not sep or (arch, tag) not in pairs:
        some = ", ".join(f"{a}/{t}" for a, t in pairs[:8])
        raise ModelLoadError(
            f"{model_id}: not an open_clip pretrained pair (<arch>/<pretrained>); "
            f"see `jointscope models` for all {len(pairs)}, e.g. {some}"
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    files = _openclip_hub_files(arch, tag)
    missing = [what for what, path in files if path is None]
    kwargs: dict = {"pretrained": tag}
    if missing:  # a download: fail at once, in whole words, when it cannot happen
        source = _hub_endpoint() if cfg.get("hf_hub") or not cfg.get("url") else cfg["url"]
        why = hub_unreachable(source)
        verb = "is" if len(missing) == 1 and not missing[0].startswith("weights") else "are"
        if why:
            raise ModelLoadError(
                f"{model_id}: its {' and '.join(missing)} {verb} not on this computer, and the Hugging Face hub "
                f"({source}) cannot be reached ({why}). Connect to the network once to download them "
                "(they are kept in the Hugging Face cache), or use a local folder: openclip-local:DIR.")
    else:  # cached weights load from their file: no look-up on the network
        kwargs = {"pretrained": files[0][1], "image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
                  "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode")}
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, device=device, **kwargs)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:  # network, cache or config problems all end here
        raise ModelLoadError(
            f"{model_id}: could not load ({type(e).__name__}: {one_line(e)}). "
            "Weights download from the Hugging Face hub on first use: connect to the network once, "
            "or download them elsewhere and use openclip-local:DIR."
        ) from e
    return OpenCLIPEncoder(model_id, model, preprocess, tokenizer, device)


def _load_openclip_local(model_id: str, target: str, device: str) -> Encoder:
    import open_clip

    path = Path(target).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"{model_id}: folder {str(path)!r} does not exist; "
                             "openclip-local needs a folder with open_clip_config.json and the weights")
    if not (path / "open_clip_config.json").is_file():
        raise ModelLoadError(f"{model_id}: {str(path / 'open_clip_config.json')!r} is missing; "
                             "write the model config there as {\"model_cfg\": {...}, \"preprocess_cfg\": {...}}")
    if not any((path / n).is_file() for n in _OPENCLIP_WEIGHT_NAMES):
        raise ModelLoadError(f"{model_id}: no weights in {str(path)!r}; expected one of "
                             f"{', '.join(_OPENCLIP_WEIGHT_NAMES)} (safetensors preferred)")
    try:
        # weights_only=True: a pickle checkpoint can hold tensors only, never code
        model, _, preprocess = open_clip.create_model_and_transforms(
            f"local-dir:{path}", device=device, weights_only=True)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    except Exception as e:
        raise ModelLoadError(f"{model_id}: could not load the checkpoint in {str(path)!r} "
                             f"({type(e).__name__}: {one_line(e, limit=300)})") from e
    return OpenCLIPEncoder(model_id, model, preprocess, tokenizer, device)


def _load_st(model_id: str, target: str, device: str) -> Encoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ModelLoadError(f"{model_id}: sentence-transformers is missing; "
                             "run `pip install sentence-transformers`") from e
    try:  # no per-tensor progress bar on stderr for every load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    local = Path(target).expanduser()
    try:
        if local.is_dir():
            model = SentenceTransformer(str(local), device=device, local_files_only=True)
        else:
            model = SentenceTransformer(target, device=device)
    except Exception as e:
        raise ModelLoadError(
            f"{model_id}: could not load sentence-transformers model {target!r} "
            f"({type(e).__name__}: {one_line(e)}); give a local folder or connect to the network once"
        ) from e
    return SentenceTransformerEncoder(model_id, model, device)


def _load_precomputed(model_id: str, target: str, device: str) -> Encoder:
    return PrecomputedEncoder(model_id)


_LOADERS: dict[str, Callable[[str, str, str], Encoder]] = {
    "openclip": _load_openclip_hub,
    "openclip-local": _load_openclip_local,
    "st": _load_st,
    "precomputed": _load_precomputed,
}

_CACHE: dict[tuple[str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(model_id: str, device: str = "auto") -> Encoder:
    """Load (once per process) the encoder for a model id.

    Raises ValueError for an unknown id, ModelLoadError when a known model cannot be loaded.
    """
    family, target = parse_model_id(model_id)
    dev = resolve_device(device)
    key = (model_id, dev)
    with _CACHE_LOCK:
        enc = _CACHE.get(key)
        if enc is None:
            log.info("loading %s on %s", model_id, dev)
            enc = _LOADERS[family](model_id, target, dev)
            _CACHE[key] = enc
        return enc


def clear_encoder_cache() -> None:
    """Forget loaded encoders (tests, or after replacing a local checkpoint)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def modalities_of(model_id: str) -> tuple[str, ...]:
    """Modalities a model encodes, without loading it."""
    family, _ = parse_model_id(model_id)
    if family in ("openclip", "openclip-local"):
        return ("image", "text")
    if family == "st":
        return ("text",)
    return ()
