"""AppTest checks of the Map page on a real demo-world workspace (400 images + captions, model `demo`).

The 2-D map is the WebGL map (pages.ui.scatter): what it shows is read from the data the page sends to the
browser (tests.helpers.shown_map), and what the user does on it (a lasso, a click on a cluster's name, a zoom)
is played back as the browser's state of the element. The drawing itself is checked in Chromium
(tests/e2e/test_map_browser.py, tests/e2e/test_scatter_browser.py).
"""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core

from helpers import shown_map, texts

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # a first UMAP in this process, on 2 busy cores
MAP_KEY = "map_webgl_0"  # the map element's key until the workspace changes


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


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def n_vectors(home: Path) -> int:
    return core.Workspace(home / "demo", create=False).models()["demo"]["n"]


def map_rows(home: Path, ids, method: str = "pca") -> list[int]:
    """The rows of ``ids`` on the saved 2-D map of the demo workspace (what the browser reports back)."""
    res = core.compute_map(core.Workspace(home / "demo", create=False), "demo", method=method, max_points=50_000)
    row_of = {str(i): r for r, i in enumerate(res.ids)}
    return [row_of[str(i)] for i in ids]


TRIGGERS = ("selection", "missing")  # sent once by the browser; state values stay


def browser_does(at: AppTest, key: str = MAP_KEY, **state) -> AppTest:
    """Play back what the browser reports for the map element ``key`` (selection, label_clicked, view…) for
    one run; its triggers are gone in the next run, as in a browser."""
    at.session_state[key] = state
    at.run()
    at.session_state[key] = {k: v for k, v in state.items() if k not in TRIGGERS}
    return at


def lasso(rows, token: str = "lasso-1") -> dict:
    """A lasso/box selection of ``rows`` as the map component sends it up (base64 int32)."""
    packed = base64.b64encode(np.asarray(sorted(rows), dtype="<i4").tobytes()).decode()
    return {"rows": packed, "n": len(rows), "token": token, "clicked": None}


def selected_count(at: AppTest) -> int | None:
    """The "N selected" heading of the side panel (None when nothing is selected)."""
    for s in texts(at.markdown):
        if s.startswith("**") and s.endswith(" selected**"):
            return int(s[2:].split()[0].replace(",", ""))
    return None


def test_umap_map_with_metrics(demo_home):
    at = map_page(workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    n = n_vectors(demo_home)
    shown = shown_map(at)
    assert shown["n"] == n
    assert shown["legend_title"] == "modality"
    assert set(shown["legend"]) == {"image", "text"} and sum(shown["legend"].values()) == n
    assert not at.get("plotly_chart") or all("scattergl" not in e.proto.spec for e in at.get("plotly_chart"))
    m = metrics(at)
    assert m["points"] == f"{n:,}"
    assert 0.5 < float(m["trustworthiness"]) <= 1.0
    assert 0.0 < float(m["mean trust"]) <= 1.0
    assert float(m["modality gap"]) > 0
    assert float(m["true-pair cosine"]) > 0
    # the map was saved in the workspace: a rerun reads it back and does not send the points again
    assert list((demo_home / "demo" / "derived" / "maps").rglob("*.npz"))
    at.run()
    assert not at.exception
    assert metrics(at)["points"] == f"{n:,}"
    assert shown_map(at)["points"] is None  # the browser holds them
    # nothing selected: a sample gallery of the workspace's images
    assert any("Images on this map" in s for s in texts(at.markdown))
    [gallery] = at.image
    assert len(gallery.value) == 10 and all(cap for cap in gallery.captions)


def test_pca_3d_and_gap_corrected(demo_home):
    at = map_page(workspace="demo", model="demo")
    umap_xy = shown_map(at)["points"]
    at.radio(key="map_method").set_value("PCA").run()
    assert not at.exception, at.exception
    pca_xy = shown_map(at)["points"]
    assert pca_xy is not None and len(pca_xy[0]) == len(umap_xy[0])
    assert not np.allclose(pca_xy[0], umap_xy[0])
    at.toggle(key="map_gap").set_value(True).run()
    assert not at.exception and not at.error
    gap_xy = shown_map(at)["points"]
    assert gap_xy is not None and not np.allclose(gap_xy[0], pca_xy[0])
    # the gap numbers describe the uncorrected space either way
    assert float(metrics(at)["modality gap"]) > 0
    at.radio(key="map_dim").set_value("3-D").run()
    assert not at.exception
    assert [c for c in at.get("plotly_chart") if "scatter3d" in c.proto.spec]  # 3-D stays on plotly
    assert any("2-D map only" in s for s in texts(at.caption))


def test_colour_by_metadata_cluster_and_trust(demo_home):
    at = map_page(workspace="demo", model="demo")
    opts = at.selectbox(key="map_colour").options
    assert {"modality", "shape", "colour", "background", "cluster (KMeans)", "trust (neighbours kept)"} <= set(opts)
    assert "similarity to a text" in opts  # demo encodes texts
    at.selectbox(key="map_colour").select("shape").run()
    assert not at.exception
    assert {"circle", "square", "triangle", "star", "cross", "ring"} <= set(shown_map(at)["legend"])
    at.selectbox(key="map_colour").select("cluster (KMeans)").run()
    at.slider(key="map_k").set_value(5).run()
    assert not at.exception
    legend = shown_map(at)["legend"]
    assert sorted(legend) == [f"cluster {i}" for i in range(1, 6)]
    assert sum(legend.values()) == n_vectors(demo_home)
    at.selectbox(key="map_colour").select("trust (neighbours kept)").run()
    shown = shown_map(at)
    assert shown["legend_title"] == "trust" and set(shown["legend"]) == {"low", "high"}
    assert 0 <= float(shown["legend"]["low"]) < float(shown["legend"]["high"]) <= 1


def test_colour_by_text_similarity(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.selectbox(key="map_colour").select("similarity to a text").run()
    assert any("Type a text" in s for s in texts(at.caption))
    at.text_input(key="map_query").input("a red circle").run()
    assert not at.exception, at.exception
    shown = shown_map(at)
    assert shown["legend_title"] == "similarity" and set(shown["legend"]) == {"low", "high"}


def test_pair_lines_and_thumbnails_at_the_view(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.toggle(key="map_pairs").set_value(True).run()
    assert not at.exception, at.exception
    assert shown_map(at)["lines"] == 400  # one line per image–caption pair
    at.toggle(key="map_thumbs").set_value(True).run()
    assert shown_map(at)["thumbnails"] == 0  # no view reported yet: nothing asked for
    xy = shown_map(map_page(workspace="demo", model="demo"))["points"]
    x0, x1, y0, y1 = float(xy[0].min()), float(xy[0].max()), float(xy[1].min()), float(xy[1].max())
    browser_does(at, view={"x0": x0, "x1": x1, "y0": y0, "y1": y1})
    assert not at.exception, at.exception
    whole = shown_map(at)["thumbnails"]
    assert 50 <= whole <= 150  # the images spread over the whole map, up to the component's limit
    # the browser says the map is 480 × 240 pixels: at most one image per 48-pixel cell, so they do not pile up
    browser_does(at, view={"x0": x0, "x1": x1, "y0": y0, "y1": y1, "w": 480, "h": 240})
    assert 10 <= shown_map(at)["thumbnails"] <= 10 * 5
    # zoomed into a corner: only images inside that view
    browser_does(at, view={"x0": x0, "x1": (x0 + x1) / 2, "y0": y0, "y1": (y0 + y1) / 2})
    assert 0 < shown_map(at)["thumbnails"] <= whole


def test_only_one_modality(demo_home):
    at = map_page(workspace="demo", model="demo")
    at.multiselect(key="map_modalities").set_value(["image"]).run()
    assert not at.exception, at.exception
    shown = shown_map(at)
    assert shown["n"] == 400 and shown["legend"] == {"image": 400}
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
    assert not at.get("bidi_component") and not at.get("plotly_chart")


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
    assert not at.get("bidi_component")


def test_label_this_selection(demo_home):
    """A lasso around red images is labelled zero-shot from the side panel."""
    items = core.Workspace(demo_home / "demo", create=False).items
    reds = items[(items["modality"] == "image") & (items["colour"] == "red")]["id"].head(12).tolist()
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    assert not [t for t in at.toggle if t.label == "Label this selection"]  # nothing selected yet
    browser_does(at, selection=lasso(map_rows(demo_home, reds)))
    assert not at.exception, at.exception
    assert selected_count(at) == 12
    assert sorted(at.session_state["selection"]["ids"]) == sorted(reds)
    at.toggle(key="map_label_selection").set_value(True).run()
    assert not at.exception, at.exception
    [labels] = [d.value for d in at.dataframe if list(d.value.columns) == ["label", "score", "cosine"]]
    assert len(labels) == 8 and labels["label"].iloc[0] == "red"  # what sets the selection apart
    assert labels["score"].is_monotonic_decreasing


def test_one_selection_for_the_workspace(demo_home):
    """A lasso on the Map becomes the workspace's selection: drawn selected with the rest grey, kept when
    the map is drawn anew (another page was open), used by Concepts, and gone with Clear selection."""
    items = core.Workspace(demo_home / "demo", create=False).items
    blues = items[(items["modality"] == "image") & (items["colour"] == "blue")]["id"].head(7).tolist()
    rows = map_rows(demo_home, blues)
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    browser_does(at, selection=lasso(rows))
    assert not at.exception, at.exception
    assert at.session_state["selection"]["workspace"] == "demo"
    assert sorted(at.session_state["selection"]["ids"]) == sorted(blues)
    assert shown_map(at)["selected"] is None  # drawn from the rows the browser reported: not sent back down

    # the page entered again: a fresh map without state draws the stored selection
    again = map_page(workspace="demo", model="demo", map_method="PCA", selection=at.session_state["selection"])
    assert not again.exception, again.exception
    assert selected_count(again) == 7
    assert shown_map(again)["selected"] == 7

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

    # Clear selection: no selection, and the map draws none
    again.button(key="clear_selection").click().run()
    assert not again.exception, again.exception
    assert again.session_state["selection"] is None
    assert shown_map(again)["selected"] == 0
    assert selected_count(again) is None


def test_one_point_clicked_shows_its_true_neighbours(demo_home):
    """A click on one point lists its true neighbours beside the map and draws lines to them."""
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    browser_does(at, selection={**lasso([5], token="click-1"), "clicked": 5})
    assert not at.exception, at.exception
    assert selected_count(at) == 1
    [table] = [d.value for d in at.dataframe if "map rank" in d.value.columns]
    assert len(table) == 10 and table["cosine"].is_monotonic_decreasing
    assert shown_map(at)["lines"] == 10


def map_link(**params) -> AppTest:
    """The Map page opened on the demo workspace from a link with these query parameters."""
    at = AppTest.from_file(str(ROOT / "pages" / "map.py"), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "demo"
    at.session_state["model"] = "demo"
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_a_zoomed_view_is_kept_for_its_map_only(demo_home):
    """The view the browser reports is passed back to the same map (the browser keeps it over reruns and a
    return to the page); another map (other settings) is not zoomed to coordinates that are not its own."""
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    view = {"x0": -0.25, "x1": 0.5, "y0": -0.125, "y1": 0.375, "w": 600, "h": 400,
            "points": shown_map(at)["points_key"]}  # the browser tags a view with the points it shows
    browser_does(at, view=view)
    assert not at.exception, at.exception
    at.run()
    assert shown_map(at)["view"] == view
    # the browser still reports that view (of the PCA map) in the first run of the UMAP map
    at.radio(key="map_method").set_value("UMAP").run()
    assert not at.exception, at.exception
    assert shown_map(at)["view"] is None and shown_map(at)["points_key"] != view["points"]


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


def test_delete_the_selection(demo_home):
    """The Map selection can be deleted after a confirmation: gone from the workspace, the map and search."""
    from core.search import search

    ws = core.Workspace(demo_home / "demo", create=False)
    n = n_vectors(demo_home)
    reds = ws.items[(ws.items["modality"] == "image") & (ws.items["colour"] == "red")]["id"].head(5).tolist()
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    browser_does(at, selection=lasso(map_rows(demo_home, reds)))
    at.button(key="map_delete").click().run()
    [confirm] = [w.replace("\\", "") for w in texts(at.warning) if w.startswith("Delete 5 items")]
    assert "5 images" in confirm
    assert set(ws.items["id"]) >= set(reds)  # nothing deleted before the confirmation
    at.button(key="map_delete_yes").click().run()
    assert not at.exception, at.exception
    assert any(s.replace("\\", "").startswith("Deleted 5 items (5 images)") for s in texts(at.success))
    assert at.session_state["selection"] is None
    assert not set(reds) & set(ws.items["id"])
    assert shown_map(at)["n"] == n - 5
    hits = search(ws, "demo", "a red object", k=50, modality="image")
    assert not set(reds) & {h.id for h in hits}


def test_named_clusters_are_drawn_listed_and_select_their_points(demo_home):
    """Coarse names by default, drawn over the points and listed in a table; a table row or a click on a
    name selects the cluster's members; fine names on request; off draws none."""
    at = map_page(workspace="demo", model="demo", map_method="PCA")
    assert not at.exception, at.exception
    names = shown_map(at)["labels"]
    assert len(names) >= 2
    from core.vocabulary import default_vocabulary

    # named by the demo world's own words (its metadata values, its captions' words); a second word after a
    # comma only tells two clusters with the same name apart
    assert {w for n in names for w in n.split(",")[0].split()} <= set(default_vocabulary("demo"))
    table = next(d.value for d in at.dataframe if "top items" in d.value.columns)
    assert list(table["name"]) == names
    assert table["items"].sum() == n_vectors(demo_home)

    # a click on the first name on the map: its members become the selection
    browser_does(at, label_clicked={"cluster": shown_map(at)["clusters"][0], "click": 1, "uid": MAP_KEY})
    assert not at.exception, at.exception
    n0 = int(table["items"].iloc[0])
    assert len(at.session_state["selection"]["ids"]) == n0
    assert selected_count(at) == n0

    fine = map_page(workspace="demo", model="demo", map_method="PCA", map_names="fine")
    assert len(shown_map(fine)["labels"]) > len(names)
    off = map_page(workspace="demo", model="demo", map_method="PCA", map_names="off")
    assert shown_map(off)["labels"] == []
    assert not [d for d in off.dataframe if "top items" in d.value.columns]
