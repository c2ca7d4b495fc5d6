"""Neighbour search: NeighborIndex (hnswlib) against exact numpy search, side by side in one run.

For each N (default 100k and 1M) of d=512 synthetic unit vectors of two kinds — ``clustered``: random
centres plus isotropic noise in all 512 dimensions (the hard case: RankMe ~410 of 512), ``subspace``:
clusters in a random 128-d subspace plus a little isotropic noise (shaped like learned embeddings, which
use far fewer directions than they have: RankMe ~200) — and, with ``--workspace``, the vectors of a real
workspace (e.g. the demo world embedded with ``demo``):

* ``recall@10``: NeighborIndex's top 10 against the exact top 10, on held-out queries (not indexed
  items) from the same distribution;
* ``single_query_ms``: median latency of one query (``NeighborIndex.query`` on one row, wrapper
  included) vs exact numpy (``X @ q`` + ``argpartition``), over ``--queries`` queries; ``speedup`` is
  exact / index (the floor is 30x);
* ``batch_qps``: queries per second for a batch of ``--batch`` queries (hnswlib uses every core;
  numpy's BLAS too);
* ``build_s``: ``NeighborIndex.fit`` (hnswlib graph + ef tuning on a sample);
* ``bytes_per_vector``: hnswlib's index size on disk / N (graph + its copy of the vectors), plus the
  float32 copy NeighborIndex keeps for exact fallbacks and persistence.

NeighborIndex tunes ``ef`` at fit time to its recall target (default 0.98) on held-out-like queries
(sampled items moved by their nearest-neighbour distance); ``recall@10`` and the speed-ups are measured
at that ``ef`` on real held-out queries. ``ef_sweep`` gives recall and latency of held-out queries for each
``ef``, and ``ef_for_recall_floor`` the smallest that reaches 0.98 (null if none). Memory: about
4 x N x d x 4 bytes at peak (data, the index's copy, hnswlib's copy, exact scores in chunks): ~8 GB for
1M x 512.

    python bench/search.py [--n 100000 1000000] [--d 512] [--queries 200] [--batch 1000]
    python bench/search.py --quick            # tiny smoke run
    python bench/search.py --workspace workspaces/demo --model demo --n   # real vectors only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K = 10
RECALL_FLOOR = 0.98
SPEEDUP_FLOOR = 30.0
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 512)


def clustered(n: int, d: int, *, seed: int, n_clusters: int | None = None, spread: float = 0.6,
              chunk: int = 100_000) -> np.ndarray:
    """(n, d) float32 unit rows around ``n_clusters`` random centres (generated in chunks)."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(16, n // 1000)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32) / np.sqrt(d)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = (centres[rng.integers(0, n_clusters, m)]
             + spread * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d))
        X[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return X


def subspace(n: int, d: int, *, seed: int, n_clusters: int | None = None, rank: int = 128, spread: float = 0.6,
             noise: float = 0.1, chunk: int = 100_000) -> np.ndarray:
    """(n, d) float32 unit rows shaped like learned embeddings: clusters in a random ``rank``-dim
    subspace of R^d plus a little isotropic noise (RankMe about 200 of 512 at the defaults, where
    ``clustered`` gives about 410: real joint spaces use far fewer directions than they have)."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(16, n // 1000)
    W = np.linalg.qr(rng.standard_normal((d, rank)))[0].T.astype(np.float32)  # (rank, d) orthonormal rows
    centres = rng.standard_normal((n_clusters, rank), dtype=np.float32) / np.sqrt(rank)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z = (centres[rng.integers(0, n_clusters, m)]
             + spread * rng.standard_normal((m, rank), dtype=np.float32) / np.sqrt(rank))
        x = z @ W + noise * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        X[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return X


GENERATORS = {"clustered": clustered, "subspace": subspace}


def exact_topk(X: np.ndarray, Q: np.ndarray, k: int, *, chunk: int = 64) -> np.ndarray:
    """Exact top-k positions (best first) of each query row; scores in chunks to bound memory."""
    out = np.empty((len(Q), k), np.int64)
    for s in range(0, len(Q), chunk):
        S = Q[s : s + chunk] @ X.T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, part, 1), axis=1)
        out[s : s + chunk] = np.take_along_axis(part, order, 1)
    return out


def exact_one(X: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = X @ q
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part])]


def recall(got_ids: np.ndarray, truth_pos: np.ndarray, ids: np.ndarray) -> float:
    truth = ids[truth_pos]
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got_ids.tolist(), truth.tolist())]))


def median_ms(fn, queries: np.ndarray) -> float:
    fn(queries[0])  # warm
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def bench_one(name: str, X: np.ndarray, Q: np.ndarray, QB: np.ndarray, *, seed: int) -> dict:
    from core.index import NeighborIndex

    n, d = X.shape
    ids = np.array([f"v{i}" for i in range(n)], dtype=object)
    res: dict = {"data": name, "n": n, "d": d, "queries": len(Q), "batch": len(QB)}

    # exact numpy, the baseline
    truth = exact_topk(X, Q, K)
    res["exact_single_query_ms"] = round(median_ms(lambda q: exact_one(X, q, K), Q), 3)
    t0 = time.perf_counter()
    exact_topk(X, QB, K)
    res["exact_batch_qps"] = round(len(QB) / (time.perf_counter() - t0), 1)

    # NeighborIndex, forced onto hnswlib even for the smoke sizes
    t0 = time.perf_counter()
    idx = NeighborIndex("cosine", exact_threshold=min(20_000, n), seed=seed).fit(X, ids)
    res["build_s"] = round(time.perf_counter() - t0, 2)
    res["backend"] = idx.backend_
    res["recall_target"] = idx.recall_target
    res["ef"] = idx.ef_
    got, _ = idx.query(Q, k=K)
    res["recall@10"] = round(recall(got, truth, ids), 4)
    res["single_query_ms"] = round(median_ms(lambda q: idx.query(q[None], k=K), Q), 3)
    t0 = time.perf_counter()
    idx.query(QB, k=K)
    res["batch_qps"] = round(len(QB) / (time.perf_counter() - t0), 1)
    res["speedup_single_query"] = round(res["exact_single_query_ms"] / res["single_query_ms"], 1)
    res["speedup_batch"] = round(res["batch_qps"] / res["exact_batch_qps"], 1)

    # recall and latency of the held-out queries at each ef of a ladder
    tuned, sweep = idx.ef_, []
    for ef in EF_SWEEP:
        idx.ef_ = ef
        got, _ = idx.query(Q, k=K)
        sweep.append({"ef": ef, "recall@10": round(recall(got, truth, ids), 4),
                      "single_query_ms": round(median_ms(lambda q: idx.query(q[None], k=K), Q), 3)})
    idx.ef_ = tuned
    res["ef_sweep"] = sweep
    first = next((e for e in sweep if e["recall@10"] >= RECALL_FLOOR), None)
    res["ef_for_recall_floor"] = first and {**first, "speedup_single_query": round(
        res["exact_single_query_ms"] / first["single_query_ms"], 1)}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hnsw.bin")
        idx.hnsw.save_index(path)
        hnsw_bytes = os.path.getsize(path)
    res["hnsw_bytes_per_vector"] = round(hnsw_bytes / n, 1)
    res["kept_vectors_bytes_per_vector"] = d * 4
    res["bytes_per_vector"] = round(hnsw_bytes / n + d * 4, 1)
    res["meets_recall_floor"] = res["recall@10"] >= RECALL_FLOOR
    res["meets_speedup_floor"] = res["speedup_single_query"] >= SPEEDUP_FLOOR
    return res


def workspace_vectors(path: str, model: str) -> np.ndarray:
    import core

    X, _ = core.Workspace(path, create=False).vectors(model)
    if not len(X):
        raise SystemExit(f"workspace {path!r} has no vectors for {model!r}")
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000], help="synthetic sizes (none: skip)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--data", nargs="+", choices=sorted(GENERATORS), default=["clustered", "subspace"],
                   help="synthetic distributions: isotropic clusters (hard) and embedding-like clusters in a subspace")
    p.add_argument("--queries", type=int, default=200, help="single queries timed (median)")
    p.add_argument("--batch", type=int, default=1000, help="batch size for throughput")
    p.add_argument("--workspace", help="also bench the vectors of this workspace (held-out 5%% as queries)")
    p.add_argument("--model", default="demo", help="model of --workspace vectors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (n=3000, d=64, 50 queries, batch 200)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.d, a.queries, a.batch = [3000], 64, 50, 200
    from core.quality import rankme

    runs = []
    for n in a.n:
        for kind in a.data:
            gen = GENERATORS[kind]
            n_clusters = max(16, n // 1000)
            X = gen(n, a.d, seed=a.seed, n_clusters=n_clusters)
            Q = gen(n + a.queries + a.batch, a.d, seed=a.seed, n_clusters=n_clusters)[n:]  # unseen points
            run = bench_one(f"synthetic-{kind}", X, Q[: a.queries], Q[a.queries:], seed=a.seed)
            run["rankme_of_20k_sample"] = round(rankme(X, max_rows=20_000)["value"], 1)
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "ef_sweep"}), file=sys.stderr, flush=True)
            del X, Q
    if a.workspace:
        V = workspace_vectors(a.workspace, a.model)
        rng = np.random.default_rng(a.seed)
        perm = rng.permutation(len(V))
        n_q = max(10, len(V) // 20)
        Q, X = V[perm[:n_q]], V[perm[n_q:]]
        runs.append(bench_one(f"workspace:{Path(a.workspace).name}:{a.model}", X, Q[: a.queries],
                              Q[np.resize(np.arange(len(Q)), a.batch)], seed=a.seed))
    import hnswlib  # noqa: F401 - version below

    doc = {
        "bench": "search",
        "k": K,
        "floors": {"recall@10": RECALL_FLOOR, "speedup_single_query": SPEEDUP_FLOOR},
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "quick": a.quick,
        "runs": runs,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
