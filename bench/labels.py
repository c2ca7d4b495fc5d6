"""Named clusters on a map (core.labels.map_labels): how often the names are right, and what they cost.

* ``floor``: a demo workspace of ``--n-demo`` world images (``create_demo_workspace``, embedded with the
  bundled ``demo`` model), a map of its images only, clusters named zero-shot with the model's own
  vocabulary. A cluster's name is right when it is a colour word and the colour most of the cluster's
  images show (either object of a two-object image counts: metadata ``colour``/``colour2``), or a shape
  word and the shape most of them show (``shape``/``shape2``). ``share`` weights clusters by size; the
  floor is 0.9 for the coarse level.
* ``speed``: a synthetic workspace of ``--n`` texts with ``--d``-d precomputed vectors around
  ``--topics`` topic centres (each caption: its topic's two words, three filler words shared by every
  topic, a number), so names come from c-TF-IDF. Timed on the same map: ``compute_map`` (a PCA map, the
  cheapest map there is, including the neighbour index its per-point trust needs), then ``map_labels``
  (coarse, first call: vectors read, k-means fitted on a sample, every point assigned, captions counted,
  the cache written), the same call again (read from the cache) and the fine level. ``ratio`` =
  labels / map; the target is ≤ 0.2. Named clusters that carry their topic's words are counted too.

    python bench/labels.py [--n-demo 2000] [--n 100000] [--d 64] [--topics 30]
    python bench/labels.py --demo-ws PATH    # reuse a demo workspace built before
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARE_FLOOR = 0.9
RATIO_TARGET = 0.2
PRE = "precomputed:vec"
FILLER = ("report", "notes", "weekly", "summary", "draft", "update", "item", "entry", "record", "memo",
          "review", "list", "page", "section", "part", "issue", "topic", "piece", "chapter", "file")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def floor(ws_path: Path | None, n: int, tmp: Path) -> dict:
    from core.demo.evaluate import cluster_names
    from core.demo.workspace import create_demo_workspace
    from core.labels import map_labels
    from core.projection import compute_map

    t0 = time.perf_counter()
    ws = create_demo_workspace(ws_path or tmp / "demo", n=n)
    log(f"demo workspace ready in {time.perf_counter() - t0:.0f}s")
    res = compute_map(ws, "demo", method="pca", modalities=["image"])
    out = {"n_images": res.n}
    for level in ("coarse", "fine"):
        t0 = time.perf_counter()
        labels = map_labels(ws, "demo", res, level=level, use_cache=False)
        seconds = time.perf_counter() - t0
        fit = cluster_names(ws, labels)
        out[level] = {"clusters": len(labels), "share": round(fit["share"], 4), "named_by": fit["named_by"],
                      "wrong": fit["wrong"], "seconds": round(seconds, 2)}
        log(f"{level}: {len(labels)} clusters, share {fit['share']:.3f}")
    out["floor"] = SHARE_FLOOR
    out["meets_floor"] = out["coarse"]["share"] >= SHARE_FLOOR
    return out


def synthetic(path: Path, n: int, d: int, topics: int, seed: int = 0):
    """A workspace of ``n`` texts with precomputed vectors in ``topics`` planted topics; (ws, topic words)."""
    from core.encoders import unit_rows
    from core.ingest import Candidate
    from core.workspace import Workspace

    rng = np.random.default_rng(seed)
    words = [(f"alpha{chr(97 + t % 26)}{chr(97 + t // 26)}x", f"beta{chr(97 + t % 26)}{chr(97 + t // 26)}y")
             for t in range(topics)]  # letters only: digits are not words
    centres = unit_rows(rng.standard_normal((topics, d)).astype(np.float32))
    topic = rng.integers(0, topics, n)
    X = unit_rows(centres[topic] + rng.standard_normal((n, d)).astype(np.float32) * (0.6 / np.sqrt(d)) * 2)
    filler = rng.integers(0, len(FILLER), (n, 3))
    cands = [Candidate(modality="text", source=f"synthetic {i}",
                       text=f"{words[t][0]} {words[t][1]} {' '.join(FILLER[j] for j in f)} {i}",
                       vectors={PRE: X[i]}) for i, (t, f) in enumerate(zip(topic, filler))]
    ws = Workspace(path)
    t0 = time.perf_counter()
    ws.add_candidates(cands)
    log(f"synthetic workspace of {n} texts in {time.perf_counter() - t0:.0f}s")
    return ws, words


def speed(n: int, d: int, topics: int, tmp: Path) -> dict:
    from core.labels import map_labels
    from core.projection import compute_map

    ws, words = synthetic(tmp / "synthetic", n, d, topics)
    t0 = time.perf_counter()
    res = compute_map(ws, PRE, method="pca")
    t_map = time.perf_counter() - t0
    log(f"PCA map of {res.n} points: {t_map:.1f}s")
    t0 = time.perf_counter()
    labels = map_labels(ws, PRE, res)
    t_labels = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = map_labels(ws, PRE, res)
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    fine = map_labels(ws, PRE, res, level="fine")
    t_fine = time.perf_counter() - t0
    log(f"labels: {t_labels:.1f}s, cached {t_cached:.2f}s, fine {t_fine:.1f}s")
    topical = {w for pair in words for w in pair}
    out = {"n": res.n, "d": d, "topics": topics, "map_s": round(t_map, 2), "labels_s": round(t_labels, 2),
           "labels_cached_s": round(t_cached, 3), "labels_fine_s": round(t_fine, 2),
           "ratio": round(t_labels / t_map, 3), "ratio_fine": round(t_fine / t_map, 3), "target": RATIO_TARGET,
           "cache_equal": again == labels, "clusters": len(labels), "fine_clusters": len(fine),
           "names": [d_["name"] for d_ in labels],
           "named_by_topic_words": sum(all(w in topical for w in d_["name"].split(", ")) for d_ in labels),
           "methods": sorted({d_["method"] for d_ in labels})}
    out["meets_target"] = out["ratio"] <= RATIO_TARGET
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-demo", type=int, default=2000)
    ap.add_argument("--demo-ws", type=Path, help="a demo workspace to reuse (built there if missing)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--topics", type=int, default=30)
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="jointscope-labels-") as tmp:
        if not args.skip_floor:
            out["floor"] = floor(args.demo_ws, args.n_demo, Path(tmp))
        if not args.skip_speed:
            out["speed"] = speed(args.n, args.d, args.topics, Path(tmp))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
