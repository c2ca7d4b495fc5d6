"""A 1,000,000-item workspace opens in the app with every item on the Map, its vectors read in chunks.

The workspace is written directly (items.parquet + one float16 vector shard of 8-d vectors), so the
fixture takes seconds. Every vector read in core goes through ``core.vectorstore._StoreView.take``; the
tests count the rows it is asked for while the pages run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import core
from core import vectorstore

ROOT = Path(__file__).resolve().parents[2]
N = 1_000_000
DIM = 8
MODEL = "precomputed:emb"
TIMEOUT = 240  # a first map of the 50k sample, PCA + its neighbour graph, on 2 busy cores
# each AppTest run may take TIMEOUT, and the first test also writes the workspace
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def million_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("million")
    rng = np.random.default_rng(0)
    ids = np.unique(np.array([f"{v:016x}" for v in rng.integers(0, 2**63, N + 1000)]))[:N]
    rng.shuffle(ids)
    assert len(ids) == N
    cluster = rng.integers(0, 20, N)
    centres = rng.normal(size=(20, DIM)).astype(np.float32)
    X = centres[cluster] + 0.3 * rng.normal(size=(N, DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ws = core.Workspace(home / "big")
    ws.add_rows(pd.DataFrame({"id": ids, "modality": "row", "source": "synthetic.parquet",
                              "cluster": [f"c{v}" for v in cluster]}))
    with ws.writing():
        ws.store(MODEL).append(X, ids, dtype="float16")
    return home


@pytest.fixture
def big_home(million_home, monkeypatch) -> Path:
    monkeypatch.setenv("JOINTSCOPE_HOME", str(million_home))
    return million_home


@pytest.fixture
def rows_read(monkeypatch) -> list[int]:
    calls: list[int] = []
    orig = vectorstore._StoreView.take

    def take(view, rows):
        calls.append(len(rows))
        return orig(view, rows)

    monkeypatch.setattr(vectorstore._StoreView, "take", take)
    return calls


def map_points(at: AppTest) -> int:
    """The number of points the Map says it shows (its "points" metric)."""
    return int({m.label: m.value for m in at.metric}["points"].replace(",", ""))


def drawn_with_plotly(at: AppTest) -> bool:
    charts = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    return any(t.get("type") == "scattergl" for c in charts for t in c["data"])


@pytest.mark.slow  # 60-80 s on 2 cores: the first map of a million items
def test_app_opens_a_million_item_workspace(big_home, rows_read):
    """app.py opens on the Map with every item on it: the map is fitted on a sample and the rest placed, and
    the points are drawn with the WebGL map, not plotly."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "big"
    at.session_state["model"] = MODEL
    at.query_params["method"] = "PCA"  # a link that asks for a PCA map (UMAP fits take minutes on 2 cores)
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("1000000 items" in c.value for c in at.caption), [c.value for c in at.caption][:5]
    assert map_points(at) == N
    assert any(f"Every one of the {N:,} items is on the map" in c.value for c in at.caption)
    assert not drawn_with_plotly(at), "a million points must not go through plotly"
    print(f"app.py (Map page) on {N:,} items: {seconds:.1f} s, {sum(rows_read):,} vector rows read")


@pytest.mark.slow  # 30 s on 2 cores
def test_map_page_maps_every_one_of_a_million_items(big_home, rows_read):
    at = AppTest.from_file(str(ROOT / "pages" / "map.py"), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "big"
    at.session_state["model"] = MODEL
    at.session_state["map_method"] = "PCA"
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert map_points(at) == N
    assert any(f"Every one of the {N:,} items is on the map" in c.value for c in at.caption)
    # a fresh session and a fresh server cache on the saved map: the map and its cluster names are read back
    # from the workspace, so only the gap numbers' sample of vectors is read
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    rows_read.clear()
    again = AppTest.from_file(str(ROOT / "pages" / "map.py"), default_timeout=TIMEOUT)
    for k in ("workspace", "model", "map_method"):
        again.session_state[k] = at.session_state[k]
    t0 = time.perf_counter()
    again.run()
    reopen = time.perf_counter() - t0
    assert not again.exception and map_points(again) == N
    assert sum(rows_read) <= 50_000, f"reopening read {sum(rows_read):,} vectors"
    print(f"Map page on {N:,} items: first map {first:.1f} s, reopened {reopen:.1f} s")


def test_quality_page_asks_before_measuring_a_million_items(big_home, rows_read):
    at = AppTest.from_file(str(ROOT / "pages" / "quality.py"), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "big"
    at.session_state["model"] = MODEL
    at.run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button] == [f"Measure all {N:,} items"]
    assert not at.metric, "measured without being asked"
    assert sum(rows_read) == 0, f"the Quality page read {sum(rows_read):,} vectors before being asked"
