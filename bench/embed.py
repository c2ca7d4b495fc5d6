"""Embedding what users bring: throughput, memory and reduced decoding on phone-sized JPEGs.

Generated photo-like JPEGs (smooth shapes plus sensor-like noise, quality 90, half of them with the EXIF
orientation of a phone held upright) of two sizes: 1 MP (1152×864) and 12 MP (4032×3024). Measured side
by side in one run:

* ``throughput``: images per second of the loop a user writes by hand (open with Pillow, the model's
  own ``preprocess``, batches of 32, ``encode_image`` under ``torch.inference_mode``) against
  ``Workspace.embed`` on the same files (the bounded prefetch pipeline of core.images with reduced JPEG
  decoding), for ViT-B-32 (random weights saved as an ``openclip-local:`` folder: no hub here) and for the
  bundled ``demo``; the model is loaded once before both and its load time reported apart. Each side runs
  ``--rounds`` times alternately; the best round of each is compared (``ratio`` = pipeline / loop).
* ``cosine``: vectors from reduced decodes against full decodes of the same files (mean and minimum),
  per model and size, on distinct images.
* ``rss``: peak resident memory (``VmHWM`` of the child) of a ``jointscope embed``
  process (``core.cli.main(['embed', WS, '--model', 'demo'])``) on N = 100 and N = 1,000 12-MP photos, beside the same
  process with nothing to embed (model load and imports only) and N = 100 with ``--full-decode``; and of
  the ``jointscope ingest`` that put them there.
* ``ray``: the Ray engine (``--engine ray``, a local Ray instance) on N = 100 and N = 250 12-MP photos:
  peak RSS of the driver and of the encoding workers (each worker's ``VmHWM`` from /proc, polled).

The N photos of the memory runs are a few distinct photos each written many times with a different JPEG
comment, so every file has its own content id and is decoded and encoded as an item of its own.

    python bench/embed.py                 # everything (~15 min on 2 CPU cores)
    python bench/embed.py --quick         # a smoke run: small N, demo only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"1mp": (1152, 864), "12mp": (4032, 3024)}
FLOORS = {"ratio_1mp_vit": 0.95, "ratio_12mp_vit": 2.0, "rss_1000_mb": 2048, "rss_ratio_1000_100": 1.15,
          "cosine_mean": 0.995}


# ---- data ------------------------------------------------------------------------------------------------
def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A photo-like RGB image: blurred shapes on a gradient plus per-pixel noise (JPEG sizes like a phone's)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    sw, sh = 504, 378
    base = np.linspace(rng.integers(0, 255, 3), rng.integers(0, 255, 3), sh)[:, None, :].repeat(sw, 1)
    im = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, sw), rng.integers(0, sh)
        box = [x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)]
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(2)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.int16)
    arr = arr + rng.normal(0, 6, (h, w, 1)).astype(np.int16)  # luminance noise, like a sensor's
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_jpeg(im, path: Path, rotated: bool) -> None:
    from PIL import Image

    exif = Image.Exif()
    if rotated:
        exif[0x0112] = 6  # a phone held upright: stored landscape, shown portrait
    im.save(path, format="JPEG", quality=90, exif=exif.tobytes())


def with_comment(data: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment after SOI: other bytes, so another content id; same pixels."""
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def distinct_photos(folder: Path, size_key: str, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{size_key}-{i:04d}.jpg"
        if not p.exists():
            write_jpeg(photo(seed + i, SIZES[size_key]), p, rotated=i % 2 == 1)
        out.append(p)
    return out


def many_photos(folder: Path, bases: list[Path], n: int) -> list[Path]:
    """``n`` files from ``bases``, each with a comment of its own (distinct content ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [b.read_bytes() for b in bases]
    out = []
    for i in range(n):
        p = folder / f"photo-{i:05d}.jpg"
        p.write_bytes(with_comment(blobs[i % len(blobs)], f"variant {i}"))
        out.append(p)
    return out


def vit_b32_folder(folder: Path) -> Path:
    """open_clip ViT-B-32 with random weights, saved as an openclip-local folder (safetensors)."""
    if (folder / "open_clip_model.safetensors").is_file():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = open_clip.get_model_config("ViT-B-32")
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    return folder


# ---- measurements ------------------------------------------------------------------------------------------
def hand_loop(enc, paths: list[Path], batch_size: int = 32) -> float:
    """Seconds of the loop a user writes: open, the model's preprocess, batches, encode_image."""
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            x = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths[i:i + batch_size]])
            enc.model.encode_image(x)
    return time.perf_counter() - t0


def pipeline(ws, model: str) -> tuple[float, int]:
    ws.forget_model(model)
    t0 = time.perf_counter()
    rep = ws.embed(model)
    return time.perf_counter() - t0, rep.embedded


def throughput(models: dict[str, str], paths: dict[str, list[Path]], work: Path, rounds: int) -> dict:
    import core
    from core.encoders import clear_encoder_cache

    out = {}
    for name, model in models.items():
        clear_encoder_cache()
        t0 = time.perf_counter()
        enc = core.load_encoder(model)
        load_s = time.perf_counter() - t0
        for size_key, files in paths.items():
            ws = core.Workspace(work / f"tp-{name}-{size_key}")
            if len(ws) < len(files):
                ws.ingest([str(p) for p in files])
            loop_s, pipe_s = [], []
            for _ in range(rounds):
                loop_s.append(hand_loop(enc, files))
                s, n = pipeline(ws, model)
                assert n == len(files), (n, len(files))
                pipe_s.append(s)
            n = len(files)
            row = {"n": n, "model_load_s": round(load_s, 2),
                   "loop_images_per_s": round(n / min(loop_s), 2), "pipeline_images_per_s": round(n / min(pipe_s), 2),
                   "loop_s": [round(v, 2) for v in loop_s], "pipeline_s": [round(v, 2) for v in pipe_s]}
            row["ratio"] = round(row["pipeline_images_per_s"] / row["loop_images_per_s"], 3)
            out[f"{name}/{size_key}"] = row
            print(f"throughput {name}/{size_key}: {row}", file=sys.stderr, flush=True)
    return out


def cosine(models: dict[str, str], paths: dict[str, list[Path]]) -> dict:
    import core

    out = {}
    for name, model in models.items():
        enc = core.load_encoder(model)
        for size_key, files in paths.items():
            R = enc.encode_images(files, reduced=True)
            F = enc.encode_images(files, reduced=False)
            cos = (R * F).sum(1)
            out[f"{name}/{size_key}"] = {"n": len(files), "mean": round(float(cos.mean()), 5),
                                         "min": round(float(cos.min()), 5)}
            print(f"cosine {name}/{size_key}: {out[f'{name}/{size_key}']}", file=sys.stderr, flush=True)
    return out


def decode_times(paths: dict[str, list[Path]], min_side: int = 224) -> dict:
    from core.images import open_image

    out = {}
    for size_key, files in paths.items():
        files = files[:8]
        t0 = time.perf_counter()
        for p in files:
            open_image(p)
        full = (time.perf_counter() - t0) / len(files)
        t0 = time.perf_counter()
        for p in files:
            open_image(p, min_side=min_side)
        red = (time.perf_counter() - t0) / len(files)
        out[size_key] = {"full_ms": round(full * 1000, 1), "reduced_ms": round(red * 1000, 1),
                         "speedup": round(full / red, 1), "min_side": min_side}
    return out


MEASURED = """
import sys
from core.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as f:
    peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
print("VmHWM_kB", peak, file=sys.stderr, flush=True)
sys.stdout.flush()
import os
os._exit(rc)
"""


def run_measured(args: list[str]) -> tuple[dict | None, float, float]:
    """Run ``jointscope ARGS`` in a child process: (its JSON output, its peak RSS in MB, seconds).

    The peak is the child's own ``VmHWM`` read at its end: ``ru_maxrss`` of a child started from a large
    process counts the parent's pages it shared before ``exec``, so it cannot tell a small child apart."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, cwd=str(ROOT))
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"jointscope {' '.join(args)} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    kb = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VmHWM_kB"))
    return (json.loads(proc.stdout) if proc.stdout.strip() else None), kb / 1024, secs


def photo_workspace(work: Path, tag: str, bases: list[Path], n: int) -> tuple[Path, Path, dict, float, float]:
    """A fresh workspace holding ``n`` photo files ingested by a measured ``jointscope ingest``:
    (workspace, photo folder, ingest JSON, ingest peak RSS MB, ingest seconds)."""
    files = many_photos(work / f"{tag}-photos-{n}", bases, n)
    ws = work / f"{tag}-{n}"
    shutil.rmtree(ws, ignore_errors=True)
    rep, mb, secs = run_measured(["ingest", str(ws), str(files[0].parent), "--json"])
    assert rep["added"] == n, rep
    return ws, files[0].parent, rep, mb, secs


def rss(work: Path, bases: list[Path], ns: list[int]) -> dict:
    out = {}
    for n in ns:
        ws, folder, _, ingest_mb, ingest_s = photo_workspace(work, "rss", bases, n)
        rep, mb, secs = run_measured(["embed", str(ws), "--model", "demo", "--json"])
        assert rep["embedded"] == n, rep
        row = {"n": n, "embed_peak_rss_mb": round(mb), "embed_s": round(secs, 1),
               "images_per_s": round(n / rep["seconds"], 1),
               "ingest_peak_rss_mb": round(ingest_mb), "ingest_s": round(ingest_s, 1)}
        if n == ns[0]:
            _, idle_mb, _ = run_measured(["embed", str(ws), "--model", "demo", "--json"])  # nothing left to do
            row["nothing_to_embed_peak_rss_mb"] = round(idle_mb)
            rep, full_mb, _ = run_measured(["embed", str(ws), "--model", "demo", "--refresh", "--full-decode",
                                            "--json"])
            assert rep["embedded"] == n, rep
            row["full_decode_peak_rss_mb"] = round(full_mb)
        out[str(n)] = row
        print(f"rss {n}: {row}", file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return out


class WorkerWatch:
    """Polls /proc for Ray's encoding workers and keeps each one's peak RSS (VmHWM)."""

    def __init__(self, pattern: str = "EmbedBatches"):
        self.pattern, self.peak_kb, self._stop = pattern, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if self.pattern not in cmd:
                        continue
                    for line in (d / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            kb = int(line.split()[1])
                            self.peak_kb[d.name] = max(self.peak_kb.get(d.name, 0), kb)
                except OSError:
                    continue
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ray_rss(work: Path, bases: list[Path], ns: list[int]) -> dict:
    out = {}
    for n in ns:
        ws, folder, *_ = photo_workspace(work, "ray", bases, n)
        with WorkerWatch() as watch:
            rep, mb, secs = run_measured(["embed", str(ws), "--model", "demo", "--engine", "ray", "--json"])
        assert rep["embedded"] == n, rep
        workers = sorted(round(v / 1024) for v in watch.peak_kb.values())
        out[str(n)] = {"n": n, "driver_peak_rss_mb": round(mb), "worker_peak_rss_mb": workers,
                       "workers": rep.get("workers"), "embed_s": round(secs, 1)}
        print(f"ray {n}: {out[str(n)]}", file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def floors(res: dict) -> dict:
    tp, rs, cs = res.get("throughput", {}), res.get("rss", {}), res.get("cosine", {})
    f = {}
    if "vit-b-32/1mp" in tp:
        f["ratio_1mp_vit >= 0.95"] = tp["vit-b-32/1mp"]["ratio"] >= FLOORS["ratio_1mp_vit"]
    if "vit-b-32/12mp" in tp:
        f["ratio_12mp_vit >= 2"] = tp["vit-b-32/12mp"]["ratio"] >= FLOORS["ratio_12mp_vit"]
    if "1000" in rs and "100" in rs:
        big, small = rs["1000"]["embed_peak_rss_mb"], rs["100"]["embed_peak_rss_mb"]
        f["rss_1000 <= 2048 MB"] = big <= FLOORS["rss_1000_mb"]
        f["rss_1000 / rss_100 <= 1.15"] = big / small <= FLOORS["rss_ratio_1000_100"]
    if cs:
        f["cosine mean >= 0.995 (every model and size)"] = all(v["mean"] >= FLOORS["cosine_mean"] for v in cs.values())
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: demo only, small N")
    ap.add_argument("--n-throughput", type=int, default=96, help="images per throughput run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rss-n", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--ray-n", type=int, nargs="*", default=[100, 250])
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "cosine", "rss", "ray"])
    ap.add_argument("--work", default=None, help="folder for generated files (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = ap.parse_args()
    if args.quick:
        args.n_throughput, args.rounds, args.rss_n, args.ray_n = 16, 1, [20, 60], [20]
    os.environ.setdefault("JOINTSCOPE_HOME", tempfile.mkdtemp(prefix="jointscope-bench-home-"))
    work = Path(args.work or tempfile.mkdtemp(prefix="jointscope-bench-embed-"))
    t_all = time.perf_counter()
    models = {"demo": "demo"}
    if not args.quick:
        models = {"vit-b-32": f"openclip-local:{vit_b32_folder(work / 'vit-b-32')}", "demo": "demo"}
    n_distinct = min(args.n_throughput, 24)
    distinct = {k: distinct_photos(work / "distinct", k, n_distinct) for k in SIZES}
    tp_files = {k: many_photos(work / f"tp-{k}", v, args.n_throughput) for k, v in distinct.items()}
    import torch

    res: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "python": platform.python_version(), "torch": torch.__version__},
                 "decode": decode_times(distinct)}
    if "cosine" not in args.skip:
        res["cosine"] = cosine(models, distinct)
    if "throughput" not in args.skip:
        res["throughput"] = throughput(models, tp_files, work, args.rounds)
    if "rss" not in args.skip:
        res["rss"] = rss(work, distinct["12mp"], args.rss_n)
    if "ray" not in args.skip:
        try:
            import ray  # noqa: F401
        except ImportError:
            res["ray"] = {"skipped": "ray is not installed (pip install '.[ray]')"}
        else:
            res["ray"] = ray_rss(work, distinct["12mp"], args.ray_n)
    res["floors"] = floors(res)
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    if not args.quick:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
