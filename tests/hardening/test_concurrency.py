"""Four processes write one workspace at the same time: create it, ingest, embed, index and map.

Extends ``tests/unit/test_workspace.py::test_two_processes_writing_lose_nothing`` (two processes,
texts only) to four processes that start together (a barrier) and do everything a user can do to one
workspace: create it in the same instant, ingest images, texts and a table with precomputed vectors
(part of every upload is the same in all four, so they race on the same ids), embed with ``demo``
after every upload, then update the neighbour index and compute a PCA map while the others may still
be writing. Afterwards the workspace must hold exactly the union of the uploads, once each, with one
correct vector per item and model, a consistent index and a readable map.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import make_png

N_WRITERS, N_CALLS, OWN_IMAGES, OWN_TEXTS, SHARED = 4, 3, 2, 2, 2
MODEL = "demo"


def _vector_of(text: str) -> np.ndarray:
    """The precomputed vector that goes with a text (so its alignment can be checked afterwards)."""
    seed = int.from_bytes(text.encode()[-8:].rjust(8, b"\0"), "little") % (2**32)
    return np.random.default_rng(seed).normal(size=6).astype(np.float32)


def _data(root: Path) -> dict:
    """Per writer, N_CALLS uploads: its own images and texts plus the shared ones (same in every upload
    of every writer); the first upload also carries a Parquet table with precomputed vectors."""
    rng = np.random.default_rng(11)
    shared = [make_png(root / "shared" / f"shared_{i}.png", tuple(int(v) for v in rng.integers(0, 256, 3)))
              for i in range(SHARED)]
    shared_texts = [f"a text every writer uploads {i}" for i in range(SHARED)]
    plan = {}
    for w in range(N_WRITERS):
        calls = []
        for c in range(N_CALLS):
            folder = root / f"w{w}c{c}"
            for i in range(OWN_IMAGES):
                make_png(folder / f"w{w}_c{c}_{i}.png", tuple(int(v) for v in rng.integers(0, 256, 3)),
                         size=(20 + i, 18 + c))
            for p in shared:
                (folder / p.name).write_bytes(p.read_bytes())
            paths = [folder.name]
            if c == 0:
                texts = [f"writer {w} table row {j}" for j in range(2)]
                pd.DataFrame({"text": texts, "embedding": [_vector_of(t) for t in texts]}).to_parquet(
                    root / f"w{w}.parquet")
                paths.append(f"w{w}.parquet")
            calls.append({"paths": paths,
                          "texts": [f"writer {w} call {c} text {j}" for j in range(OWN_TEXTS)] + shared_texts})
        plan[w] = calls
    (root / "plan.json").write_text(json.dumps(plan))
    return plan


def _writer(ws_path: str, data: str, w: int, barrier, out: str) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        import core
        from core.index import workspace_index
        from core.projection import compute_map
        from core.workspace import Workspace

        core.load_encoder(MODEL)  # loaded before the barrier: the race is about writing
        calls = json.loads((Path(data) / "plan.json").read_text())[str(w)]
        barrier.wait(120)
        ws = Workspace(ws_path)  # all four create the workspace in the same instant
        reports = []
        for call in calls:
            r = ws.ingest([Path(data) / p for p in call["paths"]], texts=call["texts"])
            reports.append({"ingest": r.to_dict()})
            reports.append({"embed": ws.embed(MODEL, chunk_size=4, batch_size=4).to_dict()})
        reports.append({"index": len(workspace_index(ws, MODEL).ids_)})
        reports.append({"map": int(compute_map(ws, MODEL, method="pca").n)})
        Path(out).write_text(json.dumps(reports))
    except BaseException:
        Path(out).write_text(traceback.format_exc())
        raise


def _expected_ids(data: Path, plan: dict) -> dict[str, str]:
    """id -> modality of everything uploaded (content ids, as core derives them)."""
    from core.workspace import content_id

    out = {}
    for calls in plan.values():
        for call in calls:
            for p in call["paths"]:
                path = data / p
                if path.suffix == ".parquet":
                    for t in pd.read_parquet(path)["text"]:
                        out[content_id("text", t.encode())] = "text"
                else:
                    for f in path.glob("*.png"):
                        out[content_id("image", f.read_bytes())] = "image"
            for t in call["texts"]:
                out[content_id("text", t.encode())] = "text"
    return out


@pytest.mark.slow  # ~80 s on 2 cores: four interpreters load torch and the demo model
@pytest.mark.timeout(600)
def test_four_processes_create_ingest_embed_index_and_map_one_workspace(tmp_path):
    from core.index import workspace_index
    from core.projection import cached_map
    from core.workspace import Workspace

    data = tmp_path / "data"
    plan = _data(data)
    ws_path = tmp_path / "shared_ws"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    outs = [tmp_path / f"writer{w}.json" for w in range(N_WRITERS)]
    procs = [ctx.Process(target=_writer, args=(str(ws_path), str(data), w, barrier, str(outs[w])))
             for w in range(N_WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    for w, (p, out) in enumerate(zip(procs, outs)):
        text = out.read_text() if out.exists() else "(no output)"
        assert p.exitcode == 0, f"writer {w} failed (exit {p.exitcode}):\n{text}"
    reports = [json.loads(out.read_text()) for out in outs]

    expected = _expected_ids(data, plan)
    ws = Workspace(ws_path, create=False)
    items = ws.items
    # exactly the union of the uploads, each item once, none lost, nothing extra
    assert items["id"].is_unique
    assert set(items["id"]) == set(expected)
    assert dict(zip(items["id"], items["modality"])) == expected
    ingests = [r["ingest"] for rep in reports for r in rep if "ingest" in r]
    assert not [e for r in ingests for e in r["errors"]]
    assert sum(r["added"] for r in ingests) == len(expected)  # each item added by exactly one writer
    for w, calls in plan.items():
        mine = [r["ingest"] for r in reports[int(w)] if "ingest" in r]
        assert [r["added"] + r["skipped"] for r in mine] == [
            OWN_IMAGES + SHARED + len(c["texts"]) + (2 if i == 0 else 0) for i, c in enumerate(calls)]

    # one vector per item and model: no item stored twice, even when two writers encoded it at once
    for model, n in ((MODEL, len(expected)), ("precomputed:embedding", 2 * N_WRITERS)):
        store = ws.store(model)
        manifest = json.loads(store.manifest_path.read_text())
        stored = np.concatenate([np.load(store.path / f"{s['name']}.ids.npy") for s in manifest["shards"]])
        assert len(stored) == sum(s["n"] for s in manifest["shards"]) == n, model
        assert len(set(stored.tolist())) == n, f"{model}: an item was stored twice"
    embeds = [r["embed"] for rep in reports for r in rep if "embed" in r]
    assert sum(r["embedded"] for r in embeds) == len(expected)

    # the vectors belong to their items: precomputed ones as uploaded, demo ones as the encoder gives them
    texts = {t for calls in plan.values() for c in calls for t in c["texts"]}
    rows = items[items["text"].notna() & items["text"].str.startswith("writer") & items["text"].str.contains("table")]
    X, ids = ws.vectors("precomputed:embedding", ids=rows["id"].tolist())
    np.testing.assert_allclose(X, np.stack([_vector_of(t) for t in rows["text"]]), atol=1e-6)
    import core

    enc = core.load_encoder(MODEL)
    X, ids = ws.vectors(MODEL)
    by_id = items.set_index("id")
    text_rows = [i for i, k in enumerate(ids) if by_id.loc[k, "modality"] == "text"]
    image_rows = [i for i, k in enumerate(ids) if by_id.loc[k, "modality"] == "image"]
    want_t = enc.encode_texts([by_id.loc[ids[i], "text"] for i in text_rows])
    want_i = enc.encode_images([ws.abspath(by_id.loc[ids[i], "image"]) for i in image_rows])
    np.testing.assert_allclose(X[text_rows], want_t, atol=1e-4)
    np.testing.assert_allclose(X[image_rows], want_i, atol=1e-4)
    assert len(texts) + 2 * N_WRITERS == (items["modality"] == "text").sum()

    # the index and the map the writers saved while others were still writing load and are usable
    idx = workspace_index(ws, MODEL)
    assert sorted(idx.ids_) == sorted(ids)
    got, _ = idx.query(X, k=1)
    assert (got[:, 0] == ids).mean() > 0.95
    for rep in reports:
        assert next(r["index"] for r in rep if "index" in r) <= len(expected)
    maps = list((ws_path / "derived" / "maps").rglob("*.npz"))
    assert maps, "no writer saved its map"
    for f in maps:
        with np.load(f, allow_pickle=False) as z:
            assert len(z["ids"]) == len(z["embedding"]) and np.isfinite(z["embedding"]).all()
    hit = cached_map(ws, MODEL, method="pca")
    assert hit is None or hit.n == len(expected)
    assert not list(ws_path.rglob("*.tmp")), "temp files left behind"


@pytest.fixture(autouse=True)
def _quiet_torch_threads():
    """The machine is shared: the checks above need one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sessions_uploading_the_same_query_image_at_once(tmp_path, monkeypatch):
    """Streamlit sessions are threads of one process: eight of them turn the same uploaded image into a
    search term at the same instant (each writes the upload to the shared, content-addressed folder)."""
    import io
    import threading

    from PIL import Image

    from pages.ui import widgets

    monkeypatch.setattr(widgets, "UPLOAD_DIR", tmp_path / "uploads")
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(buf, format="PNG")
    data = buf.getvalue()

    class Upload:
        name = "query.png"

        def getvalue(self) -> bytes:
            return data

    barrier, terms, errors = threading.Barrier(8), [], []

    def session() -> None:
        barrier.wait(30)
        try:
            terms.append(widgets.image_upload_term(Upload()))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=session) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(terms)) == 1 and len(terms) == 8
    path = Path(terms[0].removeprefix("image:"))
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["query.png"]  # no temp file left beside it
