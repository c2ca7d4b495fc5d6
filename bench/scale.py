"""What one machine holds: large workspaces (100k and 1M synthetic 512-d items) and the two embedding engines.

Prints one JSON document. Every number comes with the baseline it is compared with, measured in the
same run; each measurement of a workspace runs in a fresh Python process (clean memory, nothing
cached in the process; the files themselves are in the OS page cache, warm, for both sides):

* ``open``: ``Workspace`` + ``models()`` + the model's ids + 1,000 vectors by id (what the app does
  to open a workspace), per storage dtype, against the eager baseline: reading every vector
  (``VectorStore.load()``, what opening cost before the store became lazy); seconds and RSS.
* ``recall_at_10``: exact cosine search over the float16 / int8 stored vectors against exact search over
  float32 (``core.vectorstore.dtype_recall``, 200 queries) — what the smaller storage costs search.
* ``bytes_per_vector``: vector files on disk per item and dtype (ids not included).
* ``index``: ``workspace_index`` building the saved neighbour index from scratch (hnswlib above 20k
  items, ef tuned on held-out items), then adding 1 % new items (only they are read and added; the
  index files are saved again), as a ratio of the build; peak RSS; index bytes per vector.
* ``query``: opening the saved index in a fresh process, one query's latency (median of 200 held-out
  queries) against exact numpy search (``X @ q`` + argpartition over the float32 vectors in memory),
  the index's recall@10 against that exact search.
* ``engines``: the same demo-world items (``--engine-n`` world images with their captions) embedded
  with ``demo`` by the local engine and by the Ray engine on a local Ray instance (this machine's
  CPUs), from the workspace and from a Parquet manifest; items/s (each run's seconds include loading
  the model, in this process or in every Ray worker; ``first_result_s`` is the time until the first
  encoded batch came back, ``steady_items_per_s`` the rate after it), Ray start-up (separately), and
  the largest difference between the two engines' vectors.

    python bench/scale.py                      # 100k and 1M (the 1M part takes a while on 2 cores)
    python bench/scale.py --n 100000 --engine-n 1000
    python bench/scale.py --quick              # tiny smoke run

Synthetic vectors are shaped like learned embeddings: clusters in a random 128-d subspace of R^512 plus
a little isotropic noise (real joint spaces use far fewer directions than they have).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"float32": "precomputed:f32", "float16": "precomputed:f16", "int8": "precomputed:i8"}
CHUNK = 262_144
K = 10


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def rss_mb(kind: str = "RssAnon") -> float:
    """Resident memory of this process in MB: ``RssAnon`` (memory it allocated) by default, or
    ``RssFile`` (file pages it has mapped: memory-mapped vectors; clean page cache, shared and
    reclaimable — the kernel maps them in 2 MB pieces, so a few random rows map most of a small file)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embedding_like(n: int, d: int, *, seed: int, like: int | None = None, rank: int = 128, spread: float = 0.6,
                   noise: float = 0.1, start: int = 0):
    """Yield (start, (m, d) float32 unit rows) chunks: clusters in a random ``rank``-d subspace + noise.

    The subspace and the cluster centres are fixed (one per 1,000 items of a collection of ``like``
    items, default n), so another process draws new items or queries from the same distribution with
    another ``seed``.
    """
    rng = np.random.default_rng(seed)
    n_clusters = max(16, (like or n) // 1000)
    W = np.linalg.qr(np.random.default_rng(1234).standard_normal((d, rank)))[0].T.astype(np.float32)
    centres = np.random.default_rng(4321).standard_normal((n_clusters, rank), dtype=np.float32) / np.sqrt(rank)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        z = (centres[rng.integers(0, n_clusters, m)]
             + spread * rng.standard_normal((m, rank), dtype=np.float32) / np.sqrt(rank))
        x = z @ W + noise * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        yield start + s, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def hex_ids(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"{v:016x}" for v in rng.integers(0, 2**63, n)])


# ---- tasks (each runs in its own process) ---------------------------------------------------------
def task_build(ws_path: str, n: int, d: int) -> dict:
    import pandas as pd

    import core

    ws = core.Workspace(ws_path)
    ids = hex_ids(n, seed=n)
    t0 = time.perf_counter()
    ws.add_rows(pd.DataFrame({"id": ids, "modality": "row", "source": "synthetic"}))
    items_s = time.perf_counter() - t0
    write_s = dict.fromkeys(MODELS, 0.0)
    for s, X in embedding_like(n, d, seed=0):
        for dt, model in MODELS.items():
            t = time.perf_counter()
            with ws.writing():
                ws.store(model).append(X, ids[s:s + len(X)], dtype=dt)
            write_s[dt] += time.perf_counter() - t
    out = {"items_write_s": round(items_s, 2), "vectors_write_s": {k: round(v, 2) for k, v in write_s.items()},
           "bytes_per_vector": {}}
    for dt, model in MODELS.items():
        files = [f for f in ws.store(model).path.glob("*.npy") if ".ids." not in f.name]
        out["bytes_per_vector"][dt] = round(sum(f.stat().st_size for f in files) / n, 1)
    return out


def task_open(ws_path: str, dtype: str, eager: bool) -> dict:
    import pandas as pd
    import pyarrow.parquet  # noqa: F401 - imports are not what is measured

    import core
    import core.vectorstore

    warm = Path(ws_path).parent / f".warm-{os.getpid()}.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(warm)  # load the parquet engine before measuring
    warm.unlink()
    base, base_file = rss_mb(), rss_mb("RssFile")
    t0 = time.perf_counter()
    stages = {}
    ws = core.Workspace(ws_path, create=False)
    model = MODELS[dtype]
    n_items = len(ws.items)
    stages["items_table"] = round(rss_mb() - base, 1)
    info = ws.models()[model]  # reads the ids of every model's store (three here)
    stages["models"] = round(rss_mb() - base, 1)
    if eager:
        X, ids = ws.store(model).load()
        touched = float(X[:, 0].sum())
    else:
        ids = ws.vector_ids(model)
        pick = np.random.default_rng(0).choice(len(ids), size=1000, replace=False)
        X, _ = ws.vectors(model, ids=ids[pick])
        touched = float(X[:, 0].sum())
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "rss_anon_mb": round(rss_mb() - base, 1),
            "rss_file_mb": round(rss_mb("RssFile") - base_file, 1), "rss_anon_mb_after": stages,
            "n": info["n"], "items": n_items, "checksum": round(touched, 3)}


def task_recall(ws_path: str) -> dict:
    import core
    from core.vectorstore import dtype_recall

    ws = core.Workspace(ws_path, create=False)
    X, _ = ws.store(MODELS["float32"]).load()
    out = {}
    for dt in ("float16", "int8"):
        t0 = time.perf_counter()
        out[dt] = {"recall_at_10": round(dtype_recall(X, dt, k=K, n_queries=200), 4),
                   "seconds": round(time.perf_counter() - t0, 1)}
    return out


def task_index(ws_path: str, n: int, d: int) -> dict:
    import pandas as pd

    import core
    from core.index import index_dir, workspace_index

    ws = core.Workspace(ws_path, create=False)
    model = MODELS["float32"]
    t0 = time.perf_counter()
    idx = workspace_index(ws, model)
    build_s = time.perf_counter() - t0
    folder = index_dir(ws, model)
    index_bytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    out = {"backend": idx.backend_, "ef": idx.ef_, "build_s": round(build_s, 1),
           "peak_rss_mb_build": round(peak_rss_mb(), 0), "index_bytes_per_vector": round(index_bytes / n, 1)}
    del idx
    # 1 % new items: the saved index is extended, not refitted
    m = max(1, n // 100)
    new_ids = hex_ids(m, seed=n + 7)
    (_, Xn), = list(embedding_like(m, d, seed=99, like=n))
    with ws.writing():
        ws.store(model).append(Xn, new_ids)
    ws.add_rows(pd.DataFrame({"id": new_ids, "modality": "row", "source": "synthetic-new"}))
    t0 = time.perf_counter()
    idx = workspace_index(core.Workspace(ws_path, create=False), model)
    add_s = time.perf_counter() - t0
    out.update(added=m, add_s=round(add_s, 2), add_vs_build=round(add_s / build_s, 3), n_after=len(idx.ids_))
    return out


def task_query(ws_path: str, n: int, d: int, n_queries: int = 200) -> dict:
    import hnswlib  # noqa: F401 - imports are not what is measured

    import core
    from core.index import workspace_index

    base = rss_mb()
    ws = core.Workspace(ws_path, create=False)
    model = MODELS["float32"]
    t0 = time.perf_counter()
    idx = workspace_index(ws, model)
    open_s = time.perf_counter() - t0
    index_rss = rss_mb() - base  # the hnswlib graph with its vectors; the float32 copy stays memory-mapped
    (_, Q), = list(embedding_like(n_queries, d, seed=2024, like=n))  # held out: not in the workspace
    X = ws.store(model).load()[0]  # the exact baseline's matrix (not counted in the index's memory)
    lat_idx, lat_exact, hits = [], [], []
    for q in Q:
        t = time.perf_counter()
        got, _ = idx.query(q[None, :], k=K)
        lat_idx.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = X @ q
        top = np.argpartition(-s, K)[:K]
        top = top[np.argsort(-s[top])]
        lat_exact.append(time.perf_counter() - t)
        hits.append(len(set(got[0].tolist()) & set(idx.ids_[top].tolist())) / K)
    mi, me = float(np.median(lat_idx)) * 1000, float(np.median(lat_exact)) * 1000
    return {"index_open_s": round(open_s, 2), "index_rss_anon_mb": round(index_rss, 0),
            "index_rss_anon_bytes_per_vector": round(index_rss * 2**20 / len(idx.ids_), 0),
            "single_query_ms": round(mi, 3), "exact_numpy_ms": round(me, 2), "speedup_vs_exact": round(me / mi, 1),
            "recall_at_10_vs_exact": round(float(np.mean(hits)), 4), "ef": idx.ef_}


def task_engines(root: str, n_world: int) -> dict:
    import pandas as pd

    import core
    from core.demo import create_demo_workspace
    from core.distributed import embed_manifest, embed_workspace, init_ray
    from core.encoders import clear_encoder_cache

    src = create_demo_workspace(Path(root) / "src", n=n_world, model=None)
    items = src.items
    n_items = len(items)
    imgs = items[items["modality"] == "image"]
    caption = items.set_index("id")["text"]
    manifest = Path(root) / "manifest.parquet"
    pd.DataFrame({"image": [str(src.abspath(p)) for p in imgs["image"]],
                  "text": imgs["pair"].map(caption).tolist()}).to_parquet(manifest)
    out = {"model": "demo", "items": n_items, "images": len(imgs), "cpus": os.cpu_count()}
    from PIL import Image

    from core.encoders import load_encoder

    enc = load_encoder("demo")  # torch/open_clip imported and both towers run once, before any timing
    enc.encode_texts(["warm up"])
    enc.encode_images([Image.new("RGB", (64, 64))])
    runs = {}
    vecs = {}
    for name in ("local_workspace", "local_manifest", "ray_workspace", "ray_manifest"):
        engine, kind = name.split("_")
        if engine == "ray" and "ray_init_s" not in out:
            t0 = time.perf_counter()
            ray, _ = init_ray(None, num_cpus=os.cpu_count(), object_store_mb=300)
            out["ray_init_s"] = round(time.perf_counter() - t0, 2)
        path = Path(root) / name
        clear_encoder_cache()  # every run loads the model, as each Ray worker does
        if kind == "workspace":
            shutil.copytree(src.path, path)
            ws = core.Workspace(path, create=False)
            r = embed_workspace(ws, "demo", engine=engine)
        else:
            ws = core.Workspace(path)
            r = embed_manifest(ws, manifest, "demo", engine=engine)
        runs[name] = {"seconds": round(r.seconds, 2), "embedded": r.embedded, "workers": r.workers,
                      "items_per_s": round(r.embedded / r.seconds, 1), "errors": len(r.errors),
                      "first_result_s": None if r.first_result_s is None else round(r.first_result_s, 2),
                      "steady_items_per_s": None if r.steady_items_per_s is None else round(r.steady_items_per_s, 1)}
        vecs[name] = ws.vectors("demo")
        log(f"engines: {name} {runs[name]}")
    ray.shutdown()
    base, steady = runs["local_workspace"]["items_per_s"], runs["local_workspace"]["steady_items_per_s"]
    for r in runs.values():
        r["throughput_vs_local_workspace"] = round(r["items_per_s"] / base, 2)
        r["steady_vs_local_workspace"] = (round(r["steady_items_per_s"] / steady, 2)
                                          if r["steady_items_per_s"] and steady else None)
    Xa, ia = vecs["local_workspace"]
    diffs = {}
    for name, (X, ids) in vecs.items():
        pos = {k: i for i, k in enumerate(ids.tolist())}
        common = [k for k in ia.tolist() if k in pos]
        A = Xa[[i for i, k in enumerate(ia.tolist()) if k in pos]]
        B = X[[pos[k] for k in common]]
        diffs[name] = {"common_items": len(common), "max_abs_diff": float(np.abs(A - B).max()) if len(common) else None}
    out["runs"] = runs
    out["vs_local_workspace_vectors"] = diffs
    return out


TASKS = {"build": task_build, "open": task_open, "recall": task_recall, "index": task_index, "query": task_query,
         "engines": task_engines}


def run_task(name: str, *args, timeout: float = 7200) -> dict:
    """Run one task in a fresh Python process; its last stdout line is its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--task", name, "--args", json.dumps(args)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, cwd=str(ROOT))
    if p.returncode != 0:
        raise RuntimeError(f"task {name}{args} failed with exit code {p.returncode}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    log(f"{name} {args[1:] if len(args) > 1 else ''} done in {time.perf_counter() - t0:.1f}s: {res}")
    return res


def bench_size(n: int, d: int, tmp: Path) -> dict:
    ws = tmp / f"ws_{n}"
    out = {"n": n, "dim": d}
    out["build"] = run_task("build", str(ws), n, d)
    out["open"] = {}
    eager = run_task("open", str(ws), "float32", True)
    out["open"]["eager_float32_baseline"] = eager
    for dt in MODELS:
        r = run_task("open", str(ws), dt, False)
        r["time_vs_eager"] = round(r["seconds"] / eager["seconds"], 3)
        r["rss_anon_vs_eager"] = round(r["rss_anon_mb"] / eager["rss_anon_mb"], 3) if eager["rss_anon_mb"] > 0 else None
        out["open"][f"lazy_{dt}"] = r
    out["recall_vs_float32_exact"] = run_task("recall", str(ws))
    out["index"] = run_task("index", str(ws), n, d)
    out["query"] = run_task("query", str(ws), n, d)
    shutil.rmtree(ws, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000], help="sizes (none: engines only)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--engine-n", type=int, default=2000, help="demo-world images (each with its caption)")
    ap.add_argument("--no-engines", action="store_true")
    ap.add_argument("--quick", action="store_true", help="n=20k, 100 world images")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--task")
    ap.add_argument("--args")
    a = ap.parse_args()
    if a.task:
        print(json.dumps(TASKS[a.task](*json.loads(a.args))))
        return
    if a.quick:
        a.n, a.engine_n = [20_000], 100
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="jointscope-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    doc = {"bench": "scale", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                        "platform": platform.platform()},
           "sizes": {}}
    try:
        if not a.no_engines:
            doc["engines"] = run_task("engines", str(tmp / "engines"), a.engine_n)
        for n in a.n:
            doc["sizes"][str(n)] = bench_size(n, a.d, tmp)
    finally:
        if a.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
