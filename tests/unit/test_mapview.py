"""The map view model (core.mapview): parameters checked once against one table, the colouring as codes +
palette or values + scale, hover text per row, spread thumbnails, selection rows and the JSON summary."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import core
from core.export import captions, hover_lines, metadata_columns
from core.mapview import PARAMETERS, MapParams, build_view, colour_choices, view_figure
from core.plots import hex_colour, map_figure
from core.projection import cluster_labels, compute_map, map_vectors

HEX = re.compile(r"^#[0-9a-f]{6}$")


@pytest.fixture(scope="module")
def ws(demo_ws_template, tmp_path_factory):
    """A private copy of the demo workspace (maps are cached into it), shared by this module's tests."""
    import pandas as pd

    dst = tmp_path_factory.mktemp("mapview") / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    items = pd.read_parquet(dst / "items.parquet")  # plus a numeric attribute of the images
    weight = np.linspace(0.5, 9.5, len(items))
    items["weight"] = np.where(items["modality"] == "image", weight, np.nan)
    items.to_parquet(dst / "items.parquet", index=False)
    return core.Workspace(dst, create=False)


@pytest.fixture(scope="module")
def res(ws):
    return compute_map(ws, "demo", method="pca")


def view_of(ws, res, **params):
    return build_view(ws, "demo", MapParams(method="pca", names="off", **params), res=res)


# ---- parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    ({"n_neighbors": 500}, "n_neighbors must be in [2, 200]; got 500"),
    ({"n_neighbors": 1}, "n_neighbors must be in [2, 200]; got 1"),
    ({"min_dist": 1.5}, "min_dist must be in [0.0, 0.99]; got 1.5"),
    ({"min_dist": float("nan")}, "min_dist must be in [0.0, 0.99]; got nan"),
    ({"k": 31}, "k must be in [2, 30]; got 31"),
    ({"n_neighbors": 15.5}, "n_neighbors must be an integer in [2, 200]; got 15.5"),
    ({"method": "tsne"}, "method must be one of 'umap', 'pca'; got 'tsne'"),
    ({"dim": 4}, "dim must be one of 2, 3; got 4"),
    ({"names": "all"}, "names must be one of 'coarse', 'fine', 'off'; got 'all'"),
    ({"pairs": "yes"}, "pairs must be True or False; got 'yes'"),
    ({"modalities": ()}, "modalities must name at least one modality"),
])
def test_params_name_the_parameter_its_bounds_and_the_value(changes, message):
    with pytest.raises(ValueError) as e:
        MapParams(**changes)
    assert str(e.value).startswith(message)


def test_params_bounds_are_declared_once_and_clamp_url_values():
    assert (PARAMETERS["n_neighbors"].low, PARAMETERS["n_neighbors"].high) == (2, 200)
    assert MapParams().n_neighbors == PARAMETERS["n_neighbors"].default
    nn = PARAMETERS["n_neighbors"]
    assert nn.clamp("500") == 200 and nn.clamp(1) == 2 and nn.clamp("many") == 15 and nn.clamp("nan") == 15
    assert isinstance(nn.clamp("20.4"), int) and nn.clamp("20.4") == 20
    assert PARAMETERS["min_dist"].clamp("2") == 0.99 and PARAMETERS["names"].clamp("all") == "coarse"


def test_from_dict_takes_page_labels_and_checks_the_colour_against_the_columns():
    p = MapParams.from_dict({"method": "UMAP", "colour": "cluster (KMeans)", "modalities": ["text", "image"]},
                            columns=["shape"])
    assert (p.method, p.colour, p.modalities) == ("umap", "cluster", ("image", "text"))
    assert MapParams.from_dict({"colour": "shape"}, columns=["shape"]).colour == "shape"
    with pytest.raises(ValueError, match=r"colour must be one of modality, cluster, trust, shape; got 'size'"):
        MapParams.from_dict({"colour": "size"}, columns=["shape"], text=False, quality=False)
    with pytest.raises(ValueError, match=r"unknown map parameter\(s\) 'neighbours'; choose from"):
        MapParams.from_dict({"neighbours": 10})
    assert colour_choices(["shape"], text=True, quality=True, metadata_first=True)[:3] == [
        "modality", "shape", "cluster"]
    # the overlays do not change the data a view is built from
    p = MapParams(colour="modality", k=5, text="red", pairs=True, density=True)
    assert p.data_params() == MapParams()


def test_validate_checks_the_colour_against_the_workspace(ws):
    assert MapParams(colour="shape").validate(ws, "demo").colour == "shape"
    assert MapParams(colour="similarity", text="a red circle").validate(ws, "demo")
    with pytest.raises(ValueError, match=r"colour must be one of .*; got 'nonsense'"):
        MapParams(colour="nonsense").validate(ws, "demo")


def test_cli_reads_the_same_bounds(ws, capsys):
    from core.cli import main

    assert main(["map", str(ws.path), "--model", "demo", "--method", "pca", "--neighbors", "500", "--json"]) == 2
    assert "--neighbors must be in [2, 200]; got 500" in capsys.readouterr().err
    assert main(["map", str(ws.path), "--model", "demo", "--method", "pca", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["view"]["colour"] == "modality" and doc["view"]["n"] == doc["n"]


# ---- colour ----------------------------------------------------------------------------------------
def test_modality_colour_is_codes_categories_and_a_hex_palette(ws, res):
    view = view_of(ws, res)
    assert view.colour_kind == "categories" and view.codes.dtype == np.uint8 and len(view.codes) == res.n
    assert view.categories == ("image", "text")
    assert all(HEX.match(c) for c in view.palette) and len(set(view.palette)) == 2
    np.testing.assert_array_equal(np.asarray(view.categories)[view.codes], res.modality)
    assert view.coords.dtype == np.float32 and view.x.flags["C_CONTIGUOUS"]


def test_a_colour_name_column_is_drawn_in_its_colours(ws, res):
    view = view_of(ws, res, colour="colour")
    colours = dict(zip(view.categories, view.palette))
    assert colours["red"] == "#ff0000" and colours["blue"] == "#0000ff"
    values = view.items["colour"]
    got = np.asarray(view.categories, dtype=object)[view.codes]
    np.testing.assert_array_equal(got[values.notna().to_numpy()], values.dropna().to_numpy())
    if values.isna().any():  # missing values are grey, last
        assert view.categories[-1] == "(missing)" and view.palette[-1] == "#b0b0b0"


def test_a_numeric_column_is_values_with_a_scale(ws, res):
    view = view_of(ws, res, colour="weight")
    assert view.colour_kind == "values" and view.values.dtype == np.float32 and view.codes is None
    raw = view.items["weight"].to_numpy(dtype=np.float64)
    assert view.value_range == (float(np.nanmin(raw)), float(np.nanmax(raw)))
    np.testing.assert_array_equal(np.isnan(view.values), view.modality == "text")  # no value: NaN, drawn grey
    np.testing.assert_allclose(view.values, raw.astype(np.float32))
    assert view.colour_title == "weight" and view.colorscale == "Viridis"


def test_cluster_and_trust_colours(ws, res):
    view = view_of(ws, res, colour="cluster", k=5)
    assert view.categories == tuple(f"cluster {i}" for i in range(1, 6))
    expected = cluster_labels(map_vectors(ws, "demo", ids=res.ids), k=5)
    np.testing.assert_array_equal(np.asarray(view.categories)[view.codes], expected)
    assert view.colour_title == "cluster (k=5)"
    trust = view_of(ws, res, colour="trust")
    assert trust.colour_kind == "values" and trust.value_range == (0.0, 1.0) and trust.colorscale == "RdYlGn"
    none = view_of(ws, res, colour="similarity")  # no text yet: nothing to colour by, and a note saying so
    assert none.colour_kind == "none" and "Type a text" in none.note


def test_similarity_colour_loads_the_model_when_no_encoder_is_given(ws, res):
    """The Python API's similarity colour without an encoder loads the map's model itself; a caption scores
    highest against its own text."""
    text = str(ws.items.loc[ws.items["modality"] == "text", "text"].iloc[0])
    view = view_of(ws, res, colour="similarity", text=text)
    assert view.colour_kind == "values" and view.colour_title == "similarity"
    assert view.items["text"].iloc[int(np.argmax(view.values))] == text


def test_the_figure_from_a_view_matches_the_figure_from_values(ws, res):
    view = view_of(ws, res, colour="colour")
    old = map_figure(res.coords, color=view.items["colour"].to_numpy(), color_title="colour",
                     hover_text=hover_lines(view.items, captions=captions(ws.items, view.items)), customdata=res.ids)
    new = view_figure(view)
    pts = [(t.name, hex_colour(t.marker.color), len(t.x), tuple(t.text)) for t in old.data if t.mode == "markers"]
    assert pts == [(t.name, t.marker.color, len(t.x), tuple(t.text)) for t in new.data if t.mode == "markers"]


# ---- look-ups --------------------------------------------------------------------------------------
def test_hover_text_of_a_row_is_the_old_hover_text(ws, res):
    view = view_of(ws, res)
    old = hover_lines(view.items, metadata_columns(view.items), captions=captions(ws.items, view.items))
    image = int(np.flatnonzero(view.modality == "image")[0])
    text = int(np.flatnonzero(view.modality == "text")[0])
    assert [view.hover_text(row) for row in range(view.n)] == old  # one row at a time, every row
    assert view.hover_texts([text, image]) == [old[text], old[image]]
    assert view.hover_texts() == old
    lines = view.hover_text(image).split("\n")  # an image: its caption, then its file
    assert lines[0] == view.caption(image) and lines[1] == view.items["source"].iloc[image]
    with pytest.raises(ValueError, match=rf"row must be in \[0, {view.n}\); got {view.n}"):
        view.hover_text(view.n)


def test_thumbnail_rows_are_bounded_spread_and_inside_the_box(ws, res):
    view = view_of(ws, res)
    images = set(view.image_rows().tolist())
    rows = view.thumbnail_rows(max_n=16, seed=0)
    assert len(rows) == 16 and rows.dtype == np.int32 and set(rows.tolist()) <= images
    np.testing.assert_array_equal(rows, view.thumbnail_rows(max_n=16, seed=0))  # seeded
    assert not np.array_equal(rows, view.thumbnail_rows(max_n=16, seed=1))
    # spread: every occupied cell of the 4 x 4 grid gives one image before any gives two
    xy = view.coords[sorted(images), :2]
    lo, hi = xy.min(0), xy.max(0)

    def cells(r):
        c = np.minimum(((view.coords[r, :2] - lo) / (hi - lo) * 4).astype(int), 3)
        return set(map(tuple, c))

    assert len(cells(rows)) == min(16, len(cells(sorted(images))))
    x0, x1 = np.quantile(xy[:, 0], [0.25, 0.75])
    y0, y1 = np.quantile(xy[:, 1], [0.25, 0.75])
    inside = view.thumbnail_rows((x0, x1, y0, y1), max_n=10)
    pts = view.coords[inside]
    assert len(inside) == 10 and ((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)).all()
    assert len(view.thumbnail_rows(max_n=5000)) == len(images)  # fewer images than asked: all of them
    uris = view.thumbnails([*rows[:3].tolist(), int(np.flatnonzero(view.modality == "text")[0])])
    assert all(u.startswith("data:image/webp;base64,") for u in uris[:3]) and uris[3] is None


def test_selection_rows_from_ids(ws, res):
    view = view_of(ws, res)
    ids = res.ids.tolist()
    sel = view.with_selection([ids[5], "not-an-id", ids[2], ids[5]])
    assert sel.selection.dtype == np.int32 and sel.selection.tolist() == [5, 2]
    assert sel.selected_ids == [ids[5], ids[2]] and len(view.selection) == 0  # the view itself is unchanged
    assert build_view(ws, "demo", view.params, res=res, selection=[ids[7]]).selection.tolist() == [7]


def test_neighbours_and_density(ws, res):
    view = view_of(ws, res)
    near = view.neighbours(3, k=10)
    assert len(near) == 10 and {"row", "cosine", "map_rank", "id", "item"} <= set(near.columns)
    assert near["id"].tolist() == [str(res.ids[r]) for r in near["row"]]
    gx, gy, z = view.density_grid()
    assert z.shape == (len(gy), len(gx))


def test_to_dict_is_json_safe(ws, res):
    view = view_of(ws, res, colour="cluster", k=4).with_selection(res.ids[:3].tolist())
    doc = json.loads(json.dumps(view.to_dict()))
    assert doc["n"] == res.n and doc["colour"] == "cluster" and doc["selected"] == 3
    assert sum(c["n"] for c in doc["categories"]) == res.n and all(HEX.match(c["colour"]) for c in doc["categories"])
    assert doc["params"]["k"] == 4 and doc["params"]["method"] == "pca"
    values = json.loads(json.dumps(view_of(ws, res, colour="trust").to_dict()))
    assert values["value_range"] == [0.0, 1.0] and "categories" not in values
