"""AppTest checks of the Quality page (and the quality colours of the Map page) on the demo-world workspace
(400 images + captions embedded with `demo`; the captions also with `minilm` for the comparison)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core
from core.quality import quality_report

import helpers
from helpers import shown_map, texts

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # quality + two UMAP maps on 2 busy cores


@pytest.fixture(scope="module")
def demo_with_minilm(demo_ws_template, tmp_path_factory) -> Path:
    """The demo workspace with its captions also embedded with `minilm` (built once for this module)."""
    dst = tmp_path_factory.mktemp("quality_page") / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    core.Workspace(dst, create=False).embed("minilm")
    return dst


@pytest.fixture
def demo_home(home, demo_with_minilm, umap_warm) -> Path:
    shutil.copytree(demo_with_minilm, home / "demo")
    return home


def run_page(name: str, **state) -> AppTest:
    return helpers.run_page(name, timeout=TIMEOUT, **state)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def test_quality_page_on_demo(demo_home):
    at = run_page("quality", workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    rep = quality_report(core.Workspace(demo_home / "demo", create=False), "demo")
    m = metrics(at)
    assert float(m["RankMe"]) == pytest.approx(rep["rankme"]["value"], abs=0.05)
    assert float(m["RankMe"]) <= rep["rankme"]["max"]
    assert float(m["alignment"]) == pytest.approx(rep["alignment"], abs=1e-3)
    assert float(m["uniformity"]) == pytest.approx(rep["uniformity"], abs=1e-3)
    assert float(m["modality gap"]) > 0
    assert float(m["hubness skew"]) == pytest.approx(rep["hubness"]["skewness"], abs=0.01)
    assert float(m["recall@1 image→text"]) == pytest.approx(rep["retrieval"]["image_to_text"]["recall@1"], abs=0.01)
    assert 0.5 <= float(m["modality separability"]) <= 1
    assert {"Effective rank and uniformity", "Modality gap", "Hubness", "Paired retrieval", "Flagged items",
            "Compare with another model"} <= set(texts(at.subheader))
    specs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    titles = [s["layout"].get("title", {}).get("text", "") for s in specs]
    assert any(t.startswith("singular values") for t in titles)
    assert any(t.startswith("k-occurrence") for t in titles) and any(t.startswith("cross-modal") for t in titles)
    assert any(t == "pair score" for t in titles) and any(t == "paired retrieval" for t in titles)
    # flagged items: tabs with the report's counts, a table per kind, images with their scores
    f = rep["flags"]
    assert [t.label for t in at.tabs] == [f"Noisy pairs ({f['noisy_pairs']})", f"Hubs ({f['hub']})",
                                          f"Outliers ({f['outlier']})"]
    hub_tables = [d for d in frames(at) if "n_k" in d.columns]
    assert hub_tables and len(hub_tables[0]) == f["hub"]
    assert hub_tables[0]["n_k"].is_monotonic_decreasing
    outlier_tables = [d for d in frames(at) if "lof" in d.columns]
    assert outlier_tables and len(outlier_tables[0]) == f["outlier"]
    assert at.image, "no flagged image gallery"
    assert all(cap for g in at.image for cap in g.captions)
    # the second model is offered but not computed until chosen
    assert at.selectbox(key="quality_compare").options == ["—", "minilm"]
    assert any("Choose a model to compare" in s for s in texts(at.caption))


def test_compare_section_with_minilm(demo_home):
    at = run_page("quality", workspace="demo", model="demo")
    at.selectbox(key="quality_compare").select("minilm").run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    m = metrics(at)
    n_txt = int((core.Workspace(demo_home / "demo", create=False).items["modality"] == "text").sum())
    assert m["shared items"] == f"{n_txt:,}"
    assert 0 <= float(m["linear CKA"]) <= 1 and 0 < float(m["kNN overlap (k=10)"]) <= 1
    maps = [json.loads(e.proto.spec) for e in at.get("plotly_chart")
            if any(t.get("type") == "scattergl" for t in json.loads(e.proto.spec)["data"])]
    assert len(maps) == 2  # side by side, aligned
    for spec in maps:
        [trace] = [t for t in spec["data"] if t.get("mode") == "markers"]
        assert len(trace["customdata"]) == n_txt
        assert trace["marker"]["colorbar"]["title"]["text"] == "moved"
    assert any("overlap" in d.columns or "kNN overlap" in d.columns for d in frames(at))
    at.radio(key="quality_compare_method").set_value("PCA").run()
    assert not at.exception
    assert any("PCA, aligned" in s for s in texts(at.caption))


def test_text_only_model(demo_home):
    at = run_page("quality", workspace="demo", model="minilm")
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    m = metrics(at)
    assert float(m["RankMe"]) > 1 and m["alignment"] == "—" and m["recall@1 image→text"] == "—"
    caps = texts(at.caption)
    assert any("Paired retrieval needs images paired with captions" in s for s in caps)
    assert any("modality gap needs both images and texts" in s for s in caps)
    assert at.selectbox(key="quality_compare").options == ["—", "demo"]


def test_map_colours_by_quality_scores(demo_home):
    at = run_page("map", workspace="demo", model="demo")
    opts = at.selectbox(key="map_colour").options
    assert {"noisy-pair score", "hubness (N_k)", "outlier score (LOF)"} <= set(opts)
    at.selectbox(key="map_colour").select("hubness (N_k)").run()
    assert not at.exception, at.exception
    shown = shown_map(at)
    assert shown["legend_title"] == "hubness (N_k)"
    assert shown["n"] == core.Workspace(demo_home / "demo", create=False).models()["demo"]["n"]
    assert float(shown["legend"]["low"]) >= 0 and float(shown["legend"]["high"]) > 10  # N_k: mean k = 10


def test_empty_states_and_no_second_model(home, demo_ws_template):
    at = run_page("quality")
    assert not at.exception
    assert any("No workspace is open" in s for s in texts(at.info))

    core.Workspace(core.workspace_path("empty"))
    at = run_page("quality", workspace="empty", model="demo")
    assert not at.exception
    [info] = texts(at.info)
    assert "No vectors for demo" in info and "Data page" in info
    assert not at.get("plotly_chart")

    ws = core.Workspace(core.workspace_path("tiny"))
    (home / "t.csv").write_text("text,v_0,v_1,v_2\na,1,0,0\nb,0,1,0\nc,0,0,1\n", encoding="utf-8")
    assert ws.ingest([home / "t.csv"]).added == 3
    at = run_page("quality", workspace="tiny", model="precomputed:v")
    assert not at.exception
    [warning] = texts(at.warning)
    assert "at least 4 items" in warning and "has 3" in warning

    shutil.copytree(demo_ws_template.path, home / "solo")  # demo vectors only: nothing to compare with
    at = run_page("quality", workspace="solo", model="demo")
    assert not at.exception and not at.error
    assert any("Embed the items with a second model" in s for s in texts(at.caption))
