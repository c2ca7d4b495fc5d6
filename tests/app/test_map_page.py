"""AppTest checks of the Map page on a real demo-world workspace (400 images + captions, model `demo`).

Selection by box/lasso needs a browser (tests/e2e/test_map_browser.py); here the page is driven through
its widgets and the plotly spec it sends is read back.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # a first UMAP in this process, on 2 busy cores


@pytest.fixture
def demo_home(home, demo_ws_template, umap_warm) -> Path:
    """JOINTSCOPE_HOME holding a private copy of the demo workspace under the name 'demo'."""
    shutil.copytree(demo_ws_template.path, home / "demo")
    return home


def map_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "map.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def map_spec(at: AppTest) -> dict:
    """The plotly figure of the map chart (the 2-D one has key map_chart)."""
    charts = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    maps = [c for c in charts if any(t.get("type") in ("scattergl", "scatter3d") for t in c["data"])]
    assert maps, f"no map chart among {len(charts)} plotly charts"
    return maps[-1]


def marker_traces(spec: dict) -> list[dict]:
    """The traces of the points (they carry item ids; a selection's rings carry none)."""
    return [t for t in spec["data"] if t.get("mode") == "markers" and "customdata" in t]


def n_points(spec: dict) -> int:
    return sum(len(t["customdata"]) for t in marker_traces(spec))


def n_vectors(home: Path) -> int:
    return core.Workspace(home / "demo", create=False).models()["demo"]["n"]


def test_umap_map_with_metrics(demo_home):
    at = map_page(workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    spec = map_spec(at)
    n = n_vectors(demo_home)
    assert n_points(spec) == n
    assert {t["type"] for t in marker_traces(spec)} == {"scattergl"}
    assert sorted(t["name"].split(" (")[0] for t in marker_traces(spec)) == ["image", "text"]
    m = metrics(at)
    assert m["points"] == f"{n:,}"
    assert 0.5 < float(m["trustworthiness"]) <= 1.0
    assert 0.0 < float(m["mean trust"]) <= 1.0
    assert float(m["modality gap"]) > 0
    assert float(m["true-pair cosine"]) > 0
    # the map was saved in the workspace: a rerun reads it back
    assert list((demo_home / "demo" / "derived" / "maps").rglob("*.npz"))
    at.run()
    assert not at.exception
    assert metrics(at)["points"] == f"{n:,}"
    # nothing selected: a sample gallery of the workspace's images
    assert any("Images on this map" in s for s in texts(at.markdown))
    [gallery] = at.image
    assert len(gallery.value) == 10 and all(cap for cap in gallery.captions)


def test_pca_3d_and_gap_corrected(demo_home):
    at = map_page(workspace="demo", model="demo")
    umap_spec = map_spec(at)
    at.radio(key="map_method").set_value("PCA").run()
    assert not at.exception, at.exception
    pca_spec = map_spec(at)
    assert n_points(pca_spec) == n_points(umap_spec)
    assert pca_spec["data"] != umap_spec["data"]
    at.toggle(key="map_gap").set_value(True).run()
    assert not at.exception and not at.error
    gap_spec = map_spec(at)
    assert gap_spec["data"] != pca_spec["data"]
    # the gap numbers describe the uncorrected space either way
    assert float(metrics(at)["modality gap"]) > 0
    at.radio(key="map_dim").set_value("3-D").run()
    assert not at.exception
    spec3 = map_spec(at)
    assert {t["type"] for t in marker_traces(spec3)} == {"scatter3d"}
    assert any("2-D map only" in s for s in texts(at.caption))


def test_colour_by_metadata_cluster_and_trust(demo_home):
    at = map_page(workspace="demo", model="demo")
    opts = at.selectbox(key="map_colour").options
    assert {"modality", "shape", "colour", "background", "cluster (KMeans)", "trust (neighbours kept)"} <= set(opts)
    assert "similarity to a text" in opts  # demo encodes texts
    at.selectbox(key="map_colour").select("shape").run()
    assert not at.exception
    names = {t["name"].split(" (")[0] for t in marker_traces(map_spec(at))}
    assert {"circle", "square", "triangle", "star", "cross", "ring"} <= names
    at.selectbox(key="map_colour").select("cluster (KMeans)").run()
    at.slider(key="map_k").set_value(5).run()
    assert not at.exception
    names = [t["name"].split(" (")[0] for t in marker_traces(map_spec(at))]
    assert names == [f"cluster {i}" for i in range(1, 6)]
    at.selectbox(key="map_colour").select("trust (neighbours kept)").run()
    [trace] = marker_traces(map_spec(at))
    assert trace["marker"]["colorbar"]["title"]["text"] == "trust"


def test_colour_by_text_similarity(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.selectbox(key="map_colour").select("similarity to a text").run()
    assert any("Type a text" in s for s in texts(at.caption))
    at.text_input(key="map_query").input("a red circle").run()
    assert not at.exception, at.exception
    [trace] = marker_traces(map_spec(at))
    assert trace["marker"]["colorbar"]["title"]["text"] == "similarity"


def test_pair_lines_and_thumbnails(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.toggle(key="map_pairs").set_value(True).run()
    at.toggle(key="map_thumbs").set_value(True).run()
    assert not at.exception, at.exception
    spec = map_spec(at)
    [lines] = [t for t in spec["data"] if t.get("mode") == "lines"]
    assert lines["name"] == "pairs (400)"
    images = spec["layout"]["images"]
    assert 0 < len(images) <= 60 and images[0]["source"].startswith("data:image/webp;base64,")


def test_only_one_modality(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.multiselect(key="map_modalities").set_value(["image"]).run()
    assert not at.exception, at.exception
    spec = map_spec(at)
    assert n_points(spec) == 400 and [t["name"] for t in marker_traces(spec)] == ["image (400)"]
    at.multiselect(key="map_modalities").set_value([]).run()
    assert any("at least one modality" in s for s in texts(at.info))


def test_empty_states(home):
    at = map_page()
    assert not at.exception
    assert any("No workspace is open" in s for s in texts(at.info))

    core.Workspace(core.workspace_path("empty"))
    at = map_page(workspace="empty", model="demo")
    assert not at.exception
    [info] = texts(at.info)
    assert "No vectors for demo" in info and "Data page" in info
    assert not at.get("plotly_chart")


def test_fewer_than_four_items(home):
    ws = core.Workspace(core.workspace_path("tiny"))
    (home / "t.csv").write_text("text,v_0,v_1,v_2\na,1,0,0\nb,0,1,0\nc,0,0,1\n", encoding="utf-8")
    rep = ws.ingest([home / "t.csv"])
    assert rep.added == 3 and not rep.errors, rep.errors
    assert ws.models()["precomputed:v"]["n"] == 3
    at = map_page(workspace="tiny", model="precomputed:v")
    assert not at.exception
    [warning] = texts(at.warning)
    assert "at least 4 items" in warning and "has 3" in warning
    assert not at.get("plotly_chart")


def test_selected_ids_reads_customdata():
    from pages.ui import selected_ids

    event = {"selection": {"points": [{"customdata": "a"}, {"customdata": ["b"]}, {"x": 1.0},
                                      {"customdata": "a"}], "point_indices": [0, 1, 2, 0]}}
    assert selected_ids(event) == ["a", "b"]
    assert selected_ids({"selection": {"points": []}}) == []
    assert selected_ids(None) == []


def test_label_this_selection(demo_home):
    """A selection (seeded as the chart's selection state) is labelled zero-shot from the side panel."""
    items = core.Workspace(demo_home / "demo", create=False).items
    reds = items[(items["modality"] == "image") & (items["colour"] == "red")]["id"].head(12).tolist()
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    assert not [t for t in at.toggle if t.label == "Label this selection"]  # nothing selected yet
    at.session_state["map_chart_0"] = {"selection": {"points": [{"customdata": i} for i in reds],
                                                     "point_indices": [], "box": [], "lasso": []}}
    at.run()
    assert not at.exception, at.exception
    assert any(s.startswith("**12 selected**") for s in texts(at.markdown))
    at.toggle(key="map_label_selection").set_value(True).run()
    assert not at.exception, at.exception
    [labels] = [d.value for d in at.dataframe if list(d.value.columns) == ["label", "score", "cosine"]]
    assert len(labels) == 8 and labels["label"].iloc[0] == "red"  # what sets the selection apart
    assert labels["score"].is_monotonic_decreasing


def chart_event(ids) -> dict:
    return {"selection": {"points": [{"customdata": i} for i in ids], "point_indices": [], "box": [], "lasso": []}}


def test_one_selection_for_the_workspace(demo_home):
    """A lasso on the Map becomes the workspace's selection: drawn selected with the rest grey, kept when
    the chart is drawn anew (another page was open), used by Concepts, and gone with Clear selection."""
    items = core.Workspace(demo_home / "demo", create=False).items
    blues = items[(items["modality"] == "image") & (items["colour"] == "blue")]["id"].head(7).tolist()
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    at.session_state["map_chart_0"] = chart_event(blues)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["selection"] == {"workspace": "demo", "ids": blues}
    traces = marker_traces(map_spec(at))
    chosen = {t["customdata"][i] for t in traces for i in t.get("selectedpoints", [])}
    assert chosen == set(blues)
    assert all(t["unselected"]["marker"]["color"] == "#cfcfcf" for t in traces)

    # the page entered again: a fresh chart without state keeps the stored selection
    again = map_page(workspace="demo", model="demo", map_method="PCA", selection=at.session_state["selection"])
    assert not again.exception, again.exception
    assert any(s.startswith("**7 selected**") for s in texts(again.markdown))
    assert {t["customdata"][i] for t in marker_traces(map_spec(again)) for i in t.get("selectedpoints", [])} \
        == set(blues)

    # Concepts offers the selection's images without a detour through Search
    concepts = AppTest.from_file(str(ROOT / "pages" / "concepts.py"), default_timeout=TIMEOUT)
    for k, v in {"workspace": "demo", "model": "demo", "selection": at.session_state["selection"]}.items():
        concepts.session_state[k] = v
    concepts.run()
    assert not concepts.exception, concepts.exception
    [source] = [r for r in concepts.radio if r.key == "concepts_source"]
    assert "Selected on the Map" in source.options
    source.set_value("Selected on the Map").run()
    assert any("7 images selected on the Map" in c for c in texts(concepts.caption))

    # Clear selection: no selection, and the chart starts over without one
    again.button(key="clear_selection").click().run()
    assert not again.exception, again.exception
    assert again.session_state["selection"] is None
    assert not any(t.get("selectedpoints") for t in marker_traces(map_spec(again)))
    assert not any(s.endswith(" selected**") for s in texts(again.markdown))


def map_link(**params) -> AppTest:
    """The Map page opened on the demo workspace from a link with these query parameters."""
    at = AppTest.from_file(str(ROOT / "pages" / "map.py"), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "demo"
    at.session_state["model"] = "demo"
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_map_settings_come_from_the_url(demo_home):
    """A reload or a shared link restores the map's settings from the query parameters and writes them back."""
    at = map_link(method="PCA", colour="colour")
    assert not at.exception, at.exception
    assert at.radio(key="map_method").value == "PCA"
    assert at.selectbox(key="map_colour").value == "colour"
    assert "PCA 2-D map" in " ".join(texts(at.caption))
    at.toggle(key="map_gap").set_value(True).run()
    assert at.query_params["gap"] in ("1", ["1"]) and at.query_params["method"] in ("PCA", ["PCA"])
    # a value the page does not offer falls back to the default instead of failing
    bad = map_link(method="PCA", colour="<b>nope</b>", neighbors="many", names="all", min_dist="nan")
    assert not bad.exception, bad.exception
    assert bad.selectbox(key="map_colour").value == "modality"
    assert bad.selectbox(key="map_names").value == "coarse"


def test_text_colouring_flags_unknown_words_and_offers_the_html_map(demo_home):
    at = map_page(workspace="demo", model="demo", map_method="PCA", map_colour="similarity to a text",
                  map_query="a crimson circle")
    assert not at.exception, at.exception
    [warning] = [w for w in texts(at.warning) if "never saw" in w]
    assert "training\\: crimson\\." in warning  # escaped markdown
    assert [b.proto.label for b in at.get("download_button")] == ["Map as HTML"]
    assert json.loads(at.get("plotly_chart")[-1].proto.config)["toImageButtonOptions"]["format"] == "png"


def test_delete_the_selection(demo_home):
    """The Map selection can be deleted after a confirmation: gone from the workspace, the map and search."""
    from core.search import search

    ws = core.Workspace(demo_home / "demo", create=False)
    n = n_vectors(demo_home)
    reds = ws.items[(ws.items["modality"] == "image") & (ws.items["colour"] == "red")]["id"].head(5).tolist()
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    at.session_state["map_chart_0"] = chart_event(reds)
    at.run()
    at.button(key="map_delete").click().run()
    [confirm] = [w.replace("\\", "") for w in texts(at.warning) if w.startswith("Delete 5 items")]
    assert "5 images" in confirm
    assert set(ws.items["id"]) >= set(reds)  # nothing deleted before the confirmation
    at.button(key="map_delete_yes").click().run()
    assert not at.exception, at.exception
    assert any(s.replace("\\", "").startswith("Deleted 5 items (5 images)") for s in texts(at.success))
    assert at.session_state["selection"] is None
    assert not set(reds) & set(ws.items["id"])
    assert n_points(map_spec(at)) == n - 5
    hits = search(ws, "demo", "a red object", k=50, modality="image")
    assert not set(reds) & {h.id for h in hits}


def test_named_clusters_are_drawn_listed_and_select_their_points(demo_home):
    """Coarse names by default, drawn over the points and listed in a table; a table row or a click on a
    name selects the cluster's members; fine names on request; off draws none."""
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    spec = map_spec(at)
    notes = spec["layout"].get("annotations", [])
    [names] = [t for t in spec["data"] if t.get("name") == "cluster names"]
    assert len(notes) == len(names["customdata"]) >= 2
    from core.search import default_vocabulary

    # named by the demo world's own words (its metadata values, its captions' words); a second word after a
    # comma only tells two clusters with the same name apart
    assert {w for n in notes for w in n["text"].split(",")[0].split()} <= set(default_vocabulary("demo"))
    table = next(d.value for d in at.dataframe if "top items" in d.value.columns)
    assert list(table["name"]) == [n["text"] for n in notes]
    assert table["items"].sum() == n_vectors(demo_home)

    # a click on the first name: its members become the selection
    at.session_state["map_chart_0"] = chart_event([names["customdata"][0]])
    at.run()
    assert not at.exception, at.exception
    n0 = int(table["items"].iloc[0])
    assert len(at.session_state["selection"]["ids"]) == n0
    assert any(s.startswith(f"**{n0:,} selected**") for s in texts(at.markdown))

    fine = map_page(workspace="demo", model="demo", map_method="PCA", map_names="fine")
    assert len(map_spec(fine)["layout"]["annotations"]) > len(notes)
    off = map_page(workspace="demo", model="demo", map_method="PCA", map_names="off")
    assert not map_spec(off)["layout"].get("annotations")
    assert not [d for d in off.dataframe if "top items" in d.value.columns]
