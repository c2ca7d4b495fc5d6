"""Crash safety: SIGKILL at real write boundaries during ingest, embedding, index build and projection.

``crash_harness.py`` runs each job in a forked child process and kills it with SIGKILL at a chosen
event: a step of an atomic write (temp file opened, half the data written, data written before fsync,
before / after the rename), an embedding progress callback (between encoder batches), or a timer
(mid-compute). One uninterrupted run of each job first enumerates its events and gives the
reference final state. For every kill point the test then checks on a fresh copy of the job's
starting workspace:

1. the process really died by SIGKILL at that point;
2. the workspace reopens and nothing is corrupt: items.parquet reads, ids are unique, every stored
   image and thumbnail decodes, every vector manifest names shards that exist with aligned ids and
   finite vectors, a saved index loads consistently (or fails cleanly so that it is rebuilt), a
   cached map loads with the reference coordinates (or is absent, so it is recomputed);
3. nothing committed is lost: every step the job journaled as done (an ingest call, a vector shard,
   the index, the map) is there, and an interrupted ingest call is all-or-nothing;
4. rerunning the job resumes to the same final state as the uninterrupted run: same item ids and
   columns, same vectors (float tolerance), same index neighbours, same map coordinates (seeded), and
   no temp files left behind.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import make_png

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "crash_harness.py"
sys.path.insert(0, str(HERE))
import crash_harness as H  # noqa: E402

# slow: the harness and the reference runs take 20 s before the first kill, and each job is killed and resumed
# at every write point (70 s in all on 2 cores, 6 min when they are busy)
pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash harness forks"), pytest.mark.slow]

N_BATCHES, IMAGES_PER_BATCH, EXTRA_TEXTS = 3, 8, 4  # 3 x (8 images + 8 captions + 4 texts) = 60 items

# Kill points per job: (event kind, regex on the event's target, occurrence among the matches).
# Several per phase, spread over its files and over the five steps of an atomic write.
PLAN = {
    "ingest": [
        ("open", r"^workspace\.json$", 0),       # creating the workspace
        ("renamed", r"^workspace\.json$", 0),
        ("write", r"^images/", 2),               # half an image file
        ("fsync", r"^thumbs/", 5),
        ("replace", r"^items\.parquet$", 0),     # first ingest call about to commit
        ("renamed", r"^items\.parquet$", 0),     # ... just committed
        ("write", r"^images/", 12),              # second call, mid-way
        ("write", r"^items\.parquet$", 1),       # second commit half-written
        ("open", r"^thumbs/", 20),               # third call (it carries precomputed vectors)
        ("renamed", r"^vectors/.*manifest\.json$", 0),  # its vectors committed, its items not yet
        ("fsync", r"^items\.parquet$", 2),
    ],
    "embed": [
        ("progress", r"^0/", 0),                 # before the first batch
        ("progress", r"", 3),                    # between encoder batches
        ("write", r"^vectors/.*\.npy$", 0),      # half a shard
        ("replace", r"^vectors/.*manifest\.json$", 0),
        ("renamed", r"^vectors/.*manifest\.json$", 1),
        ("fsync", r"^vectors/.*\.ids\.npy$", 2),
        ("open", r"^vectors/.*manifest\.json$", 3),
        ("write", r"^vectors/.*manifest\.json$", 4),
    ],
    "index": [
        ("write", r"vectors\.npy$", 0),
        ("renamed", r"vectors\.npy$", 0),        # new vectors beside the old ids and meta
        ("renamed", r"ids\.npy$", 0),
        ("write", r"hnsw\.bin$", 0),
        ("renamed", r"hnsw\.bin$", 0),
        ("replace", r"meta\.json$", 0),
    ],
    "map-pca": [
        ("renamed", r"^derived/index/.*meta\.json$", 0),  # index saved, map not yet
        ("write", r"^derived/maps/.*\.npz$", 0),
        ("renamed", r"^derived/maps/.*\.npz$", 0),
        ("replace", r"^derived/maps/.*\.npz\.artifact$", 0),  # the map's sidecar, before the map file's rename
    ],
    "map-umap": [
        ("write", r"^derived/maps/.*\.npz$", 0),
        ("renamed", r"^derived/maps/.*\.npz$", 0),
    ],
    "delete": [
        ("renamed", r"^\.delete\.json$", 0),          # journal written, items not yet
        ("write", r"^items\.parquet$", 0),
        ("replace", r"^items\.parquet$", 0),
        ("renamed", r"^items\.parquet$", 0),          # the commit point, nothing removed yet
        ("write", r"^vectors/demo.*\.npy$", 0),        # a shard without the deleted rows, half-written
        ("renamed", r"^vectors/demo.*manifest\.json$", 0),
        ("unlink", r"^vectors/demo.*\.npy$", 0),       # an old shard being removed
        ("renamed", r"^vectors/precomputed.*manifest\.json$", 0),
        ("unlink", r"^derived/index/.*meta\.json$", 0),
        ("unlink", r"^derived/maps/", 0),
        ("unlink", r"^images/", 0),
        ("unlink", r"^thumbs/", 0),
        ("unlink", r"^\.delete\.json$", 0),           # all removed but the journal
    ],
}
TIMERS = {"embed": 0.5, "index": 0.5, "map-pca": 0.5, "map-umap": 0.5}  # share of the reference run time
TEMPLATE = {"ingest": None, "embed": "ingest", "index": "index-start", "map-pca": "embed", "map-umap": "index",
            "delete": "map-pca"}


# ---- harness client ------------------------------------------------------------------------------------
class Harness:
    def __init__(self, log_path: Path):
        self.log = open(log_path, "w+b")  # noqa: SIM115 - the server's stderr while it lives; closed in close()
        self.proc = subprocess.Popen([sys.executable, str(HARNESS)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=HERE.parents[1])
        self._read(180)

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.log.seek(0)
            pytest.fail(f"crash harness did not answer:\n{self.log.read().decode(errors='replace')[-4000:]}")
        return json.loads(line)

    def run(self, job: str, ws: Path, data: Path, work: Path, *, kill_at: int | None = None,
            timer: float | None = None, timeout: float = 90) -> tuple[dict, list, list]:
        work.mkdir(parents=True, exist_ok=True)
        events, journal = work / "events.tsv", work / "journal.jsonl"
        for f in (events, journal):
            f.unlink(missing_ok=True)
        req = {"job": job, "ws": str(ws), "data": str(data), "events": str(events), "journal": str(journal),
               "kill_at": kill_at, "timer": timer, "timeout": timeout}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read(timeout + 30)
        ev = [tuple(line.split("\t", 2)) for line in events.read_text().splitlines()] if events.exists() else []
        jr = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
        return answer, [(int(i), k, w) for i, k, w in ev], jr

    def stderr_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("harness") / "stderr.log")
    yield h
    h.close()


def _ok(h: Harness, answer: dict, what: str) -> None:
    assert answer["status"] == "exited", f"{what}: {answer}\n{h.stderr_tail()}"


# ---- data and reference runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three ingest calls, 20 items each: 8 PNGs + a caption CSV pairing them + 4 texts; the third
    call's texts come in a Parquet table with precomputed vectors."""
    root = tmp_path_factory.mktemp("crash_data")
    rng = np.random.default_rng(7)
    batches = []
    for b in range(N_BATCHES):
        folder = root / f"imgs{b}"
        paths = []
        for i in range(IMAGES_PER_BATCH):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            paths.append(make_png(folder / f"{b}_{i}.png", colour, size=(24 + 4 * i, 20 + 2 * b)))
        lines = ["filepath,title,batch"] + [f"{folder.name}/{p.name},caption {b}-{i} of a shape,{b}"
                                            for i, p in enumerate(paths)]
        (root / f"captions{b}.csv").write_text("\n".join(lines) + "\n")
        batch = {"paths": [folder.name, f"captions{b}.csv"], "texts": []}
        texts = [f"a loose text number {b}-{j}" for j in range(EXTRA_TEXTS)]
        if b == N_BATCHES - 1:
            vecs = rng.normal(size=(EXTRA_TEXTS, 5)).astype(np.float32)
            pd.DataFrame({"text": texts, "embedding": list(vecs)}).to_parquet(root / "vectors.parquet")
            batch["paths"].append("vectors.parquet")
        else:
            batch["texts"] = texts
        batches.append(batch)
    (root / "ingest.json").write_text(json.dumps({"batches": batches}))
    return root


def _copy(src: Path | None, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    if src is not None:
        shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def refs(harness, data, tmp_path_factory) -> dict:
    """Uninterrupted runs of every job, chained: the start and end workspace of each, its events and
    its duration. ``index-start`` is the embedded workspace with a saved index over its first 40 items."""
    root = tmp_path_factory.mktemp("crash_refs")
    out = {"_data": data}
    for job, before in TEMPLATE.items():
        if job == "index":
            ws = _copy(out["embed"]["end"], root / "index-start")
            answer, _, _ = harness.run("prep-index", ws, data, root / "work-prep")
            _ok(harness, answer, "prep-index")
            out["index-start"] = {"end": ws}
        start = out[before]["end"] if before else None
        ws = _copy(start, root / f"{job}-ref")
        answer, events, journal = harness.run(job, ws, data, root / f"work-{job}")
        _ok(harness, answer, f"reference run of {job}")
        out[job] = {"start": start, "end": ws, "events": events, "journal": journal, "seconds": answer["seconds"]}
    return out


def _points(job: str, events: list) -> list[tuple[int, str]]:
    """Event numbers of the job's kill plan (each must exist: a stale plan fails loudly)."""
    out = []
    for kind, pattern, occ in PLAN[job]:
        hits = [(i, f"{k} {w}") for i, k, w in events if k == kind and re.search(pattern, w)]
        assert len(hits) > occ, (f"kill point {kind} {pattern!r} #{occ} not among the {len(events)} events of "
                                 f"{job}: {events[:80]}")
        out.append(hits[occ])
    assert len({i for i, _ in out}) == len(out), f"{job}: two plan entries name the same event"
    return out


# ---- checks ------------------------------------------------------------------------------------------------
def _files(ws: Path) -> list[str]:
    """Every file of a workspace but its lock (relative paths)."""
    return sorted(str(p.relative_to(ws)) for p in ws.rglob("*") if p.is_file() and p.name != ".lock")


def _temp_files(ws: Path) -> list[str]:
    return sorted(str(p.relative_to(ws)) for p in ws.rglob("*.tmp"))


def check_not_corrupt(ws_path: Path):
    """The workspace opens and every committed file is whole and consistent; returns the Workspace."""
    from PIL import Image

    from core.workspace import Workspace

    ws = Workspace(ws_path)  # a crash before workspace.json was written still opens (as a new workspace)
    items = pd.read_parquet(ws.items_path) if ws.items_path.exists() else ws.items
    assert items["id"].is_unique
    for col in ("image", "thumb"):
        for rel in items[col].dropna():
            with Image.open(ws.path / rel) as im:
                im.load()
    item_ids = set(items["id"])
    for manifest in sorted((ws.path / "vectors").glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        ids_all = []
        for sh in m["shards"]:
            X = np.load(manifest.parent / f"{sh['name']}.npy")
            ids = np.load(manifest.parent / f"{sh['name']}.ids.npy")
            assert X.shape == (sh["n"], m["dim"]) and ids.shape == (sh["n"],), f"shard {sh} of {manifest}"
            assert np.isfinite(X.astype(np.float32)).all()
            ids_all += ids.tolist()
        X, _vid = ws.vectors(m["model"])
        assert X.shape == (len(set(ids_all) & item_ids), m["dim"])
    return ws


def check_index(ws, *, must_exist: bool) -> None:
    """A saved index either loads and matches the workspace's vectors, or fails with an error that
    workspace_index catches (and then rebuilds)."""
    from core.index import NeighborIndex, index_dir

    folder = index_dir(ws, H.MODEL)
    if not (folder / "meta.json").is_file():
        assert not must_exist, "the index was journaled as saved but its meta.json is missing"
        return
    try:
        idx = NeighborIndex.load(folder)
    except (OSError, ValueError, KeyError, RuntimeError):
        assert not must_exist, "the index was journaled as saved but does not load"
        return
    X, ids = ws.vectors(H.MODEL, ids=list(idx.ids_))
    assert len(ids) == len(idx.ids_), "the saved index holds items without vectors"
    np.testing.assert_allclose(idx._X, X / np.linalg.norm(X, axis=1, keepdims=True), atol=1e-5)
    got, _ = idx.query(X, k=min(5, len(ids)))
    assert (got[:, 0] == ids).mean() > 0.9, "a loaded index does not find its own items"


def _map_params(job: str) -> dict:
    return dict(H.PCA_PARAMS if job == "map-pca" else H.UMAP_PARAMS)


def check_map(ws, job: str, ref_end: Path, *, must_exist: bool) -> None:
    from core.projection import cached_map
    from core.workspace import Workspace

    got = cached_map(ws, H.MODEL, **_map_params(job))
    if got is None:
        assert not must_exist, "the map was journaled as saved but is not in the cache"
        return
    ref = cached_map(Workspace(ref_end, create=False), H.MODEL, **_map_params(job))
    np.testing.assert_array_equal(got.ids, ref.ids)
    np.testing.assert_allclose(got.coords, ref.coords, atol=1e-4)


def check_committed(ws, job: str, journal: list, refs: dict) -> None:
    """Nothing the child journaled as done is missing; an ingest call is all-or-nothing."""
    if job == "ingest":
        per_batch = _batch_ids(refs)
        have = set(ws.items["id"])
        done = [r["batch"] for r in journal if r["step"] == "ingest"]
        prefixes = [set().union(*per_batch[:j]) for j in range(len(per_batch) + 1)]
        assert have in prefixes[len(done):], (f"items after the crash are not the result of whole ingest calls "
                                              f"({len(have)} items; calls done: {done})")
    for r in journal:
        if r["step"] == "vectors":
            X, ids = ws.vectors(r["model"], ids=r["ids"])
            assert len(ids) == len(r["ids"]), f"committed vectors of {r['model']} lost"
            ref_ws = _ref_ws(refs, "embed" if r["model"] == H.MODEL else "ingest")
            RX, _rids = ref_ws.vectors(r["model"], ids=list(ids))
            np.testing.assert_allclose(X, RX, atol=1e-5)
    if job == "index":
        check_index(ws, must_exist=any(r["step"] == "index" for r in journal))
    if job.startswith("map"):
        check_index(ws, must_exist=False)
        check_map(ws, job, refs[job]["end"], must_exist=any(r["step"] == "map" for r in journal))
    if job == "delete":
        check_deleted(ws, refs, done=any(r["step"] == "delete" for r in journal))


def check_deleted(ws, refs: dict, *, done: bool) -> None:
    """Readers see the items before the deletion or after it, never a mix, and nothing of a deleted item:
    no vector (in a store's count, by id or in a model's vectors), no map point, no search hit."""
    from core.projection import cached_map, compute_map
    from core.search import search

    gone = set(H.delete_ids(refs["_data"]))
    before = set(_ref_ws(refs, "map-pca").items["id"])
    have = set(ws.items["id"])
    assert have in (before, before - gone) and (not done or have == before - gone), "a deletion is all-or-nothing"
    if have == before:
        return
    for model, info in ws.models().items():
        _X, ids = ws.vectors(model)
        assert info["n"] == len(ids) and not set(ids) & gone
        assert len(ws.vectors(model, ids=sorted(gone))[1]) == 0, f"a deleted item's vector of {model} is readable"
    hit = cached_map(ws, H.MODEL, **H.PCA_PARAMS)
    assert hit is None or not set(hit.ids) & gone
    probe = _probe(ws.path)  # a search and a map write caches: on a copy, so the resume starts as killed
    q = probe.vectors(H.MODEL)[0][0]
    assert not {h.id for h in search(probe, H.MODEL, q, k=50)} & gone
    assert not set(compute_map(probe, H.MODEL, **H.PCA_PARAMS).ids) & gone


def _probe(path: Path):
    from core.workspace import Workspace

    return Workspace(_copy(path, path.parent / f"{path.name}-probe"), create=False)


def _ref_ws(refs: dict, job: str):
    from core.workspace import Workspace

    return Workspace(refs[job]["end"], create=False)


def _batch_ids(refs: dict) -> list[set]:
    """Item ids each ingest call adds (from the reference run: the items in order, 20 per call)."""
    if "_batches" not in refs:
        spec = json.loads((refs["_data"] / "ingest.json").read_text())
        ids = _ref_ws(refs, "ingest").items["id"].tolist()
        n = len(ids) // len(spec["batches"])
        refs["_batches"] = [set(ids[k * n:(k + 1) * n]) for k in range(len(spec["batches"]))]
    return refs["_batches"]


def check_same_final(ws_path: Path, job: str, refs: dict) -> None:
    """The resumed workspace equals the uninterrupted run's."""
    from core.index import NeighborIndex, index_dir
    from core.workspace import Workspace

    ws, ref = Workspace(ws_path, create=False), Workspace(refs[job]["end"], create=False)
    a, b = ws.items.drop(columns=["added"]), ref.items.drop(columns=["added"])
    pd.testing.assert_frame_equal(a, b)
    assert ws.models().keys() == ref.models().keys()
    for model in ref.models():
        X, ids = ws.vectors(model)
        RX, rids = ref.vectors(model)
        np.testing.assert_array_equal(ids, rids)
        np.testing.assert_allclose(X, RX, atol=1e-5)
    ref_index = index_dir(ref, H.MODEL)
    if (ref_index / "meta.json").exists():
        idx, ridx = NeighborIndex.load(index_dir(ws, H.MODEL)), NeighborIndex.load(ref_index)
        assert sorted(idx.ids_) == sorted(ridx.ids_)
        Q, _ = ref.vectors(H.MODEL)
        got, s = idx.query(Q, k=10)
        want, rs = ridx.query(Q, k=10)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(s, rs, atol=1e-5)
    if job.startswith("map"):
        check_map(ws, job, refs[job]["end"], must_exist=True)
    assert _temp_files(ws.path) == [], "temp files left behind after the resumed run"
    assert _files(ws.path) == _files(ref.path), "the resumed workspace holds other files than the reference"


# ---- the tests -----------------------------------------------------------------------------------------------
def _crash_and_resume(harness, refs, job: str, tmp_path: Path) -> list[str]:
    """Run every kill point of ``job``; returns a report line per point (failures raise)."""
    ref = refs[job]
    start = ref["start"]
    points = _points(job, ref["events"])
    lines = []
    for n, (event, what) in enumerate(points):
        ws = _copy(start, tmp_path / f"p{n}")
        answer, events, journal = harness.run(job, ws, refs["_data"], tmp_path / f"w{n}", kill_at=event)
        assert answer["status"] == "killed", f"{job} point {what}: {answer}\n{harness.stderr_tail()}"
        assert events[-1][1:] == tuple(what.split(" ", 1)), f"{job}: killed at {events[-1]}, planned {what}"
        _check_point(harness, refs, job, ws, journal, tmp_path / f"w{n}r", what)
        lines.append(f"{job}: {what}")
    if job in TIMERS:  # a kill at a moment rather than at a write: mid-compute
        delay = TIMERS[job] * ref["seconds"]
        for attempt in range(4):
            ws = _copy(start, tmp_path / f"t{attempt}")
            answer, events, journal = harness.run(job, ws, refs["_data"], tmp_path / f"wt{attempt}", timer=delay)
            if answer["status"] == "killed":
                break
            _ok(harness, answer, f"{job} with a timer")
            delay /= 2
        assert answer["status"] == "killed", f"{job}: the timer never fired before the job ended"
        _check_point(harness, refs, job, ws, journal, tmp_path / "wtr", f"timer {delay:.3f}s")
        lines.append(f"{job}: timer {delay:.3f}s after {len(events) - 1} events")
    return lines


def _check_point(harness, refs, job, ws, journal, work, what) -> None:
    try:
        opened = check_not_corrupt(ws)
        check_committed(opened, job, journal, refs)
    except AssertionError as e:
        raise AssertionError(f"{job}, killed at {what}: {e}") from e
    answer, _, _ = harness.run(job, ws, refs["_data"], work)
    _ok(harness, answer, f"{job} resumed after a kill at {what}")
    try:
        check_same_final(ws, job, refs)
    except AssertionError as e:
        raise AssertionError(f"{job}, resumed after a kill at {what}: {e}") from e


@pytest.mark.parametrize("job", list(PLAN))
@pytest.mark.timeout(600)  # the first job also pays for the harness and the reference runs
def test_sigkill_then_resume(job, harness, refs, tmp_path):
    lines = _crash_and_resume(harness, refs, job, tmp_path)
    assert len(lines) >= 3
    print("\n".join(lines))


def test_reference_runs_are_what_the_points_assume(refs):
    """The reference runs wrote what the kill plan counts on (so a point cannot silently vanish)."""
    assert sum(len(p) + (job in TIMERS) for job, p in PLAN.items()) >= 20
    from core.workspace import Workspace

    ws = Workspace(refs["ingest"]["end"], create=False)
    assert len(ws.items) == N_BATCHES * (2 * IMAGES_PER_BATCH + EXTRA_TEXTS)
    assert ws.models()["precomputed:embedding"]["n"] == EXTRA_TEXTS
    assert len(Workspace(refs["embed"]["end"], create=False).vectors(H.MODEL)[1]) == len(ws.items)
    shards = json.loads(next((refs["embed"]["end"] / "vectors").glob("demo-*/manifest.json")).read_text())["shards"]
    assert len(shards) >= 4, "the embedding run should commit several chunks"


def test_the_checks_catch_a_torn_commit(harness, refs, tmp_path):
    """The same checks on a deliberately broken writer (vector manifest committed before its shards),
    killed right after that manifest: they must report the workspace as corrupt."""
    events = harness.run("embed-manifest-first", _copy(refs["embed"]["start"], tmp_path / "count"),
                         refs["_data"], tmp_path / "wc")[1]
    [(point, _what)] = [(i, f"{k} {w}") for i, k, w in events if k == "renamed" and w.endswith("manifest.json")][:1]
    ws = _copy(refs["embed"]["start"], tmp_path / "ws")
    answer, _, _journal = harness.run("embed-manifest-first", ws, refs["_data"], tmp_path / "w", kill_at=point)
    assert answer["status"] == "killed"
    with pytest.raises((AssertionError, OSError, ValueError)) as caught:
        check_not_corrupt(ws)
    assert "000001" in str(caught.value), caught.value  # the first shard, named but never written
