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
* ``real``: real text nobody here wrote (gensim's test corpora, see tests/real_text.py): Usenet posts
  (alt.atheism + sci.space, headers stripped), one-line movie reviews, Australian news articles, each
  ingested as a CSV, embedded with ``minilm``, a PCA map, named at both levels. A name is grounded
  (:func:`core.labels.grounding`) when its words occur in ≥ 25 % of its cluster's texts and in at least
  twice that share of the other clusters' texts; floor 0.9 of the coarse clusters of the Usenet posts.
  ``zero_shot`` is the same clusters named the way every text model named them before (the model ranks
  the bundled vocabulary against each cluster's mean, :func:`core.vocabulary.label_clusters`).
  And a table: scikit-learn's wine data (13 numeric columns → ``precomputed:numeric``, a string column
  ``target`` "cultivar A/B/C"): every cluster ≥ 80 % one cultivar must be named by it.

    python bench/labels.py [--n-demo 2000] [--n 100000] [--d 64] [--topics 30] [--skip-real]
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
GROUNDED_FLOOR = 0.9
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


def _zero_shot_names(ws, model: str, res, labels: list[dict]) -> list[dict]:
    """``labels`` renamed by the vocabulary zero-shot every text model used before (the baseline)."""
    from core.projection import map_vectors
    from core.vocabulary import default_vocabulary, label_clusters, vocabulary_vectors

    ids = np.asarray(res.ids).astype(str)
    cluster = np.zeros(len(ids), np.int64)
    pos = {i: r for r, i in enumerate(ids)}
    for d in labels:
        cluster[[pos[i] for i in d["ids"]]] = d["cluster"]
    vocab = default_vocabulary(model)
    ranked = label_clusters(map_vectors(ws, model, ids=ids), cluster, vocabulary_vectors(model, vocab), vocab, k=1)
    return [{**d, "name": ranked[d["cluster"]][0][0], "method": "zero-shot"} for d in labels]


def real(tmp: Path) -> dict:
    import pandas as pd

    sys.path.insert(0, str(ROOT / "tests"))
    import real_text

    from core.labels import grounding, map_labels
    from core.projection import compute_map
    from core.workspace import Workspace

    corpora = {"usenet": [p["text"][:2000] for p in real_text.newsgroups()],
               "reviews": [r["text"] for r in real_text.reviews()],
               "news": [r["text"] for r in real_text.news()]}
    out = {}
    for name, texts in corpora.items():
        pd.DataFrame({"text": texts}).to_csv(tmp / f"{name}.csv", index=False)
        ws = Workspace(tmp / name)
        ws.ingest([tmp / f"{name}.csv"])
        t0 = time.perf_counter()
        ws.embed("minilm")
        res = compute_map(ws, "minilm", method="pca")
        log(f"{name}: {res.n} texts embedded and mapped in {time.perf_counter() - t0:.0f}s")
        by_id = ws.items.set_index("id")["text"].dropna().to_dict()
        out[name] = {"n": res.n}
        for level in ("coarse", "fine"):
            t0 = time.perf_counter()
            labels = map_labels(ws, "minilm", res, level=level, use_cache=False)
            seconds = time.perf_counter() - t0
            g, before = grounding(labels, by_id), grounding(_zero_shot_names(ws, "minilm", res, labels), by_id)
            out[name][level] = {"clusters": len(labels), "grounded": round(g["share"], 3),
                                "zero_shot_grounded": round(before["share"], 3),
                                "sibling_duplicates": g["sibling_duplicates"], "seconds": round(seconds, 2),
                                "methods": sorted({d["method"] for d in labels})}
            if level == "coarse":
                out[name][level]["names"] = [d["name"] for d in labels]
                out[name][level]["zero_shot_names"] = [d["name"] for d in _zero_shot_names(ws, "minilm", res, labels)]
            log(f"{name} {level}: grounded {g['share']:.2f} (zero-shot {before['share']:.2f})")
    out["usenet"]["floor"] = GROUNDED_FLOOR
    out["usenet"]["meets_floor"] = out["usenet"]["coarse"]["grounded"] >= GROUNDED_FLOOR
    out["wine"] = wine(tmp)
    return out


def wine(tmp: Path) -> dict:
    from sklearn.datasets import load_wine

    from core.labels import map_labels
    from core.projection import compute_map
    from core.workspace import Workspace

    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "cultivar A", 1: "cultivar B", 2: "cultivar C"})
    frame.to_csv(tmp / "wine.csv", index=False)
    ws = Workspace(tmp / "wine")
    ws.ingest([tmp / "wine.csv"])
    res = compute_map(ws, "precomputed:numeric", method="pca")
    items = ws.items.set_index("id")
    out = {"n": res.n}
    for level in ("coarse", "fine"):
        labels = map_labels(ws, "precomputed:numeric", res, level=level, use_cache=False)
        pure = named = 0
        for d in labels:
            shares = items.loc[d["ids"], "target"].value_counts(normalize=True)
            if shares.iloc[0] >= 0.8:
                pure += 1
                named += d["name"].split(",")[0] == shares.index[0]
        out[level] = {"clusters": len(labels), "pure": pure, "named_by_value": named,
                      "unique_names": len({d["name"] for d in labels}),
                      "methods": sorted({d["method"] for d in labels})}
        if level == "coarse":
            out[level]["names"] = [d["name"] for d in labels]
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
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="jointscope-labels-") as tmp:
        if not args.skip_floor:
            out["floor"] = floor(args.demo_ws, args.n_demo, Path(tmp))
        if not args.skip_real:
            out["real"] = real(Path(tmp))
        if not args.skip_speed:
            out["speed"] = speed(args.n, args.d, args.topics, Path(tmp))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
