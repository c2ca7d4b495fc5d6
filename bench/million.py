"""A million rows in, every item mapped: ingest of a 1M-row vector table and maps of 1M items.

Prints one JSON document (also saved to bench/results/million.json with ``--save``). Each measurement
runs in a fresh Python process; its peak RSS is that process's ``ru_maxrss``.

* ``ingest_parquet``: ``jointscope ingest WS table.parquet`` of a 1M-row table (a 32-d ``list<float>``
  vector column ``emb``, an integer ``row_id`` and a ``label`` column) against ``pandas.read_parquet``
  of the same file, each in its own process: seconds (after the imports, for both), their ratio, peak
  RSS.
* ``ingest_csv``: the same table as CSV (the vectors as ``"[0.1, ...]"`` strings) against
  ``pandas.read_csv``.
* ``map_32d``: ``compute_map`` (UMAP, every item) of the 1M items ingested above.
* ``map_512d``: the same for 1M synthetic 512-d items written straight into a workspace's vector store
  (1M x 512 rows through a table would only measure ingest again; 2 GB of float32).

  For the maps: seconds, items fitted and placed, and the 10-NN label agreement on the map (the share
  of a point's 10 nearest map neighbours with its cluster label) of the placed items against the fitted
  ones (on 50,000 seeded items of each kind), with their ratio; peak RSS.
* ``colour_512d``: the Map's colour by cluster (k = 30, the largest the Map offers) and by similarity on that
  512-d map, the vectors read a chunk at a time (as the Map does) against every vector read at once with
  MiniBatchKMeans fitted on all of them (as it did before): seconds, peak RSS, the clusters' agreement (ARI)
  and their NMI with the true labels.

Data: 50 Gaussian clusters (centres N(0, 1) per dimension, noise ``--noise`` per dimension).

    python bench/million.py --save          # everything (about 15 minutes on 2 cores)
    python bench/million.py --n 100000      # smaller
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "precomputed:emb"
CLUSTERS = 50
COLOUR_K = 30  # clusters of the colour comparison: the largest k the Map offers (its default is 8)


def _clusters(n: int, d: int, noise: float, seed: int, start: int = 0, stop: int | None = None):
    """Rows start..stop of the synthetic set: (X (m, d) float32, labels (m,) int)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, d)).astype(np.float32)
    labels = np.random.default_rng(seed + 1).integers(0, CLUSTERS, n)
    stop = n if stop is None else stop
    noise_rng = np.random.default_rng([seed, start])
    lab = labels[start:stop]
    return centres[lab] + noise * noise_rng.normal(size=(len(lab), d)).astype(np.float32), lab


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- tasks (each in its own process) ----------------------------------------------------------------
def task_write_table(path: str, n: int, d: int, noise: float, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    X, lab = _clusters(n, d, noise, seed)
    emb = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(X.ravel()))
    table = pa.table({"row_id": np.arange(n), "label": pa.array([f"c{i}" for i in lab]), "emb": emb})
    if path.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        strings = ["[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in X.tolist()]
        pacsv.write_csv(table.set_column(2, "emb", pa.array(strings)), path)
    return {"bytes": os.path.getsize(path)}


def task_pandas_read(path: str) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    return {"seconds": time.perf_counter() - t0, "rows": len(df), "peak_rss_mb": _rss_mb()}


def task_ingest(ws: str, path: str) -> dict:
    import contextlib
    import io

    import core.ingest  # imported before the clock starts, as pandas is for its read
    import core.workspace  # noqa: F401
    from core.cli import main

    t0 = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["ingest", ws, path, "--json"])
    out = json.loads(buf.getvalue())
    return {"seconds": time.perf_counter() - t0, "rc": rc, "added": out["added"], "errors": len(out["errors"]),
            "peak_rss_mb": _rss_mb()}


def task_vector_workspace(ws: str, n: int, d: int, noise: float, seed: int) -> dict:
    """1M items written straight into a workspace: item rows + the vector store in shards."""
    import pandas as pd

    import core

    t0 = time.perf_counter()
    w = core.Workspace(ws)
    ids = np.unique([f"{v:016x}" for v in np.random.default_rng(seed).integers(0, 2**63, n)])
    assert len(ids) == n, "repeated random ids: use another --seed"
    ids = ids[np.random.default_rng(seed + 2).permutation(n)]
    labels = np.random.default_rng(seed + 1).integers(0, CLUSTERS, n)
    w.add_rows(pd.DataFrame({"id": ids, "modality": "row", "source": "synthetic", "label": [f"c{v}" for v in labels]}))
    step = 250_000
    for s in range(0, n, step):
        X, _ = _clusters(n, d, noise, seed, s, min(s + step, n))
        with w.writing():
            w.store(MODEL).append(X, ids[s : s + step])
    return {"seconds": time.perf_counter() - t0}


def task_map(ws: str, sample: int, seed: int) -> dict:
    import core
    from core.projection import compute_map, neighbour_label_agreement

    w = core.Workspace(ws, create=False)
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    last = {"stage": None, "t": t0}

    def progress(stage, done, total):
        if stage != last["stage"]:
            now = time.perf_counter()
            if last["stage"] is not None:
                stages[last["stage"]] = stages.get(last["stage"], 0.0) + now - last["t"]
            last.update(stage=stage, t=now)

    res = compute_map(w, MODEL, progress=progress, use_cache=False)
    seconds = time.perf_counter() - t0
    stages[last["stage"]] = stages.get(last["stage"], 0.0) + time.perf_counter() - last["t"]
    items = w.items.set_index("id")
    labels = items["label"].reindex(res.ids).to_numpy()
    rng = np.random.default_rng(seed)
    fitted_rows = np.flatnonzero(res.fitted)
    placed_rows = np.flatnonzero(~res.fitted)
    fr = rng.choice(fitted_rows, size=min(sample, len(fitted_rows)), replace=False)
    pr = rng.choice(placed_rows, size=min(sample, len(placed_rows)), replace=False)
    t1 = time.perf_counter()
    a_fit = neighbour_label_agreement(res.coords, labels, rows=fr)
    a_place = neighbour_label_agreement(res.coords, labels, rows=pr)
    return {"seconds": round(seconds, 1), "stages_s": {k: round(v, 1) for k, v in stages.items()},
            "n": res.n, "n_fitted": res.n_fitted, "n_placed": res.n - res.n_fitted,
            "finite": bool(np.isfinite(res.coords).all()), "trustworthiness": round(res.trustworthiness, 4),
            "mean_trust": round(float(np.nanmean(res.trust)), 4),
            "label_agreement_10nn": {"fitted": round(a_fit, 4), "placed": round(a_place, 4),
                                     "ratio": round(a_place / a_fit, 4), "sample_each": len(pr),
                                     "seconds": round(time.perf_counter() - t1, 1)},
            "peak_rss_mb": round(_rss_mb())}


def task_colour(ws: str, how: str, out: str, seed: int) -> dict:
    """Colour the workspace's cached map by cluster (k = COLOUR_K) and by similarity to a fixed direction: ``how`` =
    "chunked" as the Map does it (:class:`core.mapvectors.MapVectors`, read a chunk at a time), or "all" as it
    did before (every vector read at once, MiniBatchKMeans fitted on all of them). The cluster codes go to
    ``out`` (.npy) for the comparison."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import normalized_mutual_info_score

    import core
    from core.encoders import unit_rows
    from core.mapvectors import MapVectors
    from core.projection import cluster_labels, compute_map, map_vectors, similarity_to_text

    w = core.Workspace(ws, create=False)
    res = compute_map(w, MODEL)  # the map task's, read from the cache
    q = unit_rows(np.random.default_rng(seed).normal(size=(1, 512)).astype(np.float32))[0]

    class Direction:  # similarity to a fixed unit vector stands in for a text's
        def encode_texts(self, texts):
            return q[None, :]

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if how == "chunked":
        named = cluster_labels(MapVectors(w, MODEL, res.ids), k=COLOUR_K, seed=0)
        codes = np.array([int(v.split()[-1]) for v in named])
    else:
        X = unit_rows(map_vectors(w, MODEL, ids=res.ids))
        codes = MiniBatchKMeans(n_clusters=COLOUR_K, n_init=3, random_state=0, batch_size=4096).fit_predict(X) + 1
    t_cluster = time.perf_counter() - t0
    t0 = time.perf_counter()
    if how == "chunked":
        sim = similarity_to_text(MapVectors(w, MODEL, res.ids), text="-", encoder=Direction())
    else:
        sim = X @ q
    t_sim = time.perf_counter() - t0
    np.save(out, codes)
    labels = w.items.set_index("id")["label"].reindex(res.ids).to_numpy()
    return {"cluster_s": round(t_cluster, 1), "similarity_s": round(t_sim, 1), "n": len(codes),
            "nmi_with_true_labels": round(float(normalized_mutual_info_score(labels, codes)), 4),
            "similarity_mean": round(float(np.mean(sim)), 6), "rss_before_mb": round(rss0),
            "peak_rss_mb": round(_rss_mb())}


TASKS = {"write_table": task_write_table, "pandas_read": task_pandas_read, "ingest": task_ingest,
         "vector_workspace": task_vector_workspace, "map": task_map, "colour": task_colour}


def run(name: str, *args) -> dict:
    cmd = ["nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), "--task", name, "--args",
           json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def colour_comparison(ws: str, tmp: str, seed: int) -> dict:
    """The Map's colour by cluster and by similarity on the 512-d map, chunked against every vector at once."""
    from sklearn.metrics import adjusted_rand_score

    out = {how: run("colour", ws, how, str(Path(tmp) / f"codes_{how}.npy"), seed) for how in ("chunked", "all")}
    a, b = (np.load(Path(tmp) / f"codes_{how}.npy") for how in ("chunked", "all"))
    out["ari_chunked_vs_all"] = round(float(adjusted_rand_score(a, b)), 4)
    out["peak_rss_ratio"] = round(out["chunked"]["peak_rss_mb"] / out["all"]["peak_rss_mb"], 3)
    out["cluster_seconds_ratio"] = round(out["chunked"]["cluster_s"] / out["all"]["cluster_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", action="append", default=[], choices=["csv", "map_32d", "map_512d", "colour_512d"])
    ap.add_argument("--save", action="store_true", help="also write bench/results/million.json")
    ap.add_argument("--task")
    ap.add_argument("--args")
    a = ap.parse_args()
    if a.task:
        print(json.dumps(TASKS[a.task](*json.loads(a.args))))
        return
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "n": a.n, "noise": a.noise, "clusters": CLUSTERS}
    with tempfile.TemporaryDirectory(prefix="jointscope-million-") as tmp:
        for ext in ["parquet"] + ([] if "csv" in a.skip else ["csv"]):
            path = str(Path(tmp) / f"table.{ext}")
            size = run("write_table", path, a.n, 32, a.noise, a.seed)["bytes"]
            pandas = run("pandas_read", path)
            ws = str(Path(tmp) / f"ws_{ext}")
            ingest = run("ingest", ws, path)
            doc[f"ingest_{ext}"] = {"file_mb": round(size / 2**20, 1), "pandas_read_s": round(pandas["seconds"], 2),
                                    "pandas_peak_rss_mb": round(pandas["peak_rss_mb"]),
                                    "ingest_s": round(ingest["seconds"], 2), "ingest_peak_rss_mb":
                                    round(ingest["peak_rss_mb"]), "added": ingest["added"],
                                    "ratio": round(ingest["seconds"] / pandas["seconds"], 2)}
            print(json.dumps({f"ingest_{ext}": doc[f"ingest_{ext}"]}), file=sys.stderr)
            if ext == "parquet" and "map_32d" not in a.skip:
                doc["map_32d"] = run("map", ws, 50_000, a.seed)
                print(json.dumps({"map_32d": doc["map_32d"]}), file=sys.stderr)
            os.remove(path)
        if "map_512d" not in a.skip:
            ws = str(Path(tmp) / "ws_512")
            made = run("vector_workspace", ws, a.n, 512, a.noise, a.seed)
            doc["map_512d"] = {"workspace_written_s": round(made["seconds"], 1), **run("map", ws, 50_000, a.seed)}
            print(json.dumps({"map_512d": doc["map_512d"]}), file=sys.stderr)
            if "colour_512d" not in a.skip:
                doc["colour_512d"] = colour_comparison(ws, tmp, a.seed)
                print(json.dumps({"colour_512d": doc["colour_512d"]}), file=sys.stderr)
    print(json.dumps(doc, indent=1))
    if a.save:
        out = ROOT / "bench" / "results" / "million.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
