"""core.plots: map and gap figures (pure plotly, no Streamlit)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.plots import MAX_CATEGORIES, categories, gap_figure, map_figure, plot_text


def _points(n=300, dim=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _n_points(fig) -> int:
    return sum(len(t.x) for t in fig.data if t.mode == "markers")


def test_map_figure_categories_become_legend_entries():
    X = _points(300)
    colour = np.array(["red", "green", "blue"] * 100, dtype=object)
    ids = [f"id{i}" for i in range(300)]
    fig = map_figure(X, color=colour, color_title="colour", hover_text=[f"item {i}" for i in range(300)],
                     customdata=ids)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert [t.type for t in markers] == ["scattergl"] * 3
    assert [t.name for t in markers] == ["blue (100)", "green (100)", "red (100)"]
    assert _n_points(fig) == 300
    # every point keeps its id and its own coordinates
    got = {cid: (x, y) for t in markers for cid, x, y in zip(t.customdata, t.x, t.y)}
    assert set(got) == set(ids)
    assert np.allclose(got["id7"], X[7])
    assert fig.layout.uirevision and fig.layout.dragmode == "pan" and fig.layout.clickmode == "event+select"


def test_map_figure_is_deterministic():
    X = _points(500)
    colour = np.random.default_rng(1).choice(["a", "b", "c"], 500)
    kw = {"color": colour, "color_title": "c", "hover_text": [f"t{i}" for i in range(500)],
          "customdata": [str(i) for i in range(500)], "pair_segments": np.array([[0, 1], [2, 3]]),
          "thumbs": [(0.0, 0.0, "data:image/webp;base64,AAAA")]}
    assert map_figure(X, **kw).to_json() == map_figure(X.copy(), **kw).to_json()
    other = map_figure(X, **dict(kw, color=colour[::-1])).to_json()
    assert other != map_figure(X, **kw).to_json()


def test_map_figure_3d_and_pair_lines():
    X = _points(40, dim=3)
    fig = map_figure(X, dim=3, pair_segments=np.array([[0, 1], [2, 3], [4, 5]]))
    kinds = [(t.type, t.mode) for t in fig.data]
    assert kinds == [("scatter3d", "lines"), ("scatter3d", "markers")]
    lines = fig.data[0]
    assert len(lines.x) == 9 and np.isnan(np.asarray(lines.x, float)[2::3]).all()  # 3 segments, broken by gaps
    assert lines.x[0] == X[0, 0] and lines.z[1] == X[1, 2]
    assert _n_points(fig) == 40
    with pytest.raises(ValueError, match="coords must be"):
        map_figure(_points(10, dim=2), dim=3)


def test_map_figure_numbers_get_a_colour_bar_and_missing_values_stay():
    X = _points(50)
    values = np.linspace(0, 1, 50)
    values[3] = np.nan
    fig = map_figure(X, color=values, color_title="trust", color_range=(0.0, 1.0))
    main, missing = fig.data
    assert main.marker.colorbar.title.text == "trust" and main.marker.cmin == 0 and main.marker.cmax == 1
    assert len(main.x) == 49 and len(missing.x) == 1
    assert missing.name.startswith("(missing)")


def test_many_categories_fold_into_other():
    values = [f"v{i % 50}" for i in range(500)] + ["v0"] * 10
    _labels, order = categories(values)
    assert len(order) == MAX_CATEGORIES and order[-1] == f"other ({50 - MAX_CATEGORIES + 1} values)"
    assert "v0" in order  # the most common keeps its colour
    fig = map_figure(_points(510), color=values)
    assert len(fig.data) == MAX_CATEGORIES and _n_points(fig) == 510
    assert fig.data[-1].marker.color == "#b0b0b0"
    # natural order of numbered categories
    assert categories(["cluster 10", "cluster 2", "cluster 1"])[1] == ["cluster 1", "cluster 2", "cluster 10"]


def test_thumbnails_are_layout_images_in_2d_only():
    X = _points(20)
    thumbs = [(float(X[i, 0]), float(X[i, 1]), "data:image/webp;base64,AAAA") for i in range(5)]
    fig = map_figure(X, thumbs=thumbs)
    assert len(fig.layout.images) == 5 and fig.layout.images[0].xref == "x"
    assert fig.layout.images[0].x == pytest.approx(X[0, 0])
    assert len(map_figure(_points(20, 3), dim=3, thumbs=thumbs).layout.images) == 0


def test_user_text_is_escaped_not_html():
    X = _points(2)
    fig = map_figure(X, color=["<b>x</b>", "a&b"], hover_text=['<a href="http://e">click</a>\nline 2', "ok"])
    names = sorted(t.name for t in fig.data)
    assert names == ["&lt;b&gt;x&lt;/b&gt; (1)", "a&amp;b (1)"]
    texts = [s for t in fig.data for s in t.text]
    assert '&lt;a href="http://e"&gt;click&lt;/a&gt;<br>line 2' in texts
    assert "<" not in plot_text("<script>") and plot_text("a\nb") == "a<br>b"


def test_wrong_lengths_are_rejected():
    with pytest.raises(ValueError, match="color must have one entry per point"):
        map_figure(_points(5), color=["a"])


def test_gap_figure():
    gap = {"a": "image", "b": "text", "pair_cosine": 0.31, "random_pair_cosine": 0.12, "centroid_cosine": 0.4}
    fig = gap_figure(gap)
    assert list(fig.data[0].x) == [0.31, 0.12, 0.4]
    assert json.loads(fig.to_json())["data"][0]["orientation"] == "h"
    fig = gap_figure(dict(gap, pair_cosine=None))
    assert len(fig.data[0].x) == 2


def test_axes_figure_titles_escape_and_keep_ticks():
    from core.plots import axes_figure

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    fig = axes_figure(x, y, x_terms=("a red object", "a blue object"), y_terms=("<b>circle</b>", "a square"),
                      color=np.array(["image", "text"] * 25, dtype=object), color_title="modality",
                      hover_text=[f"item {i}" for i in range(50)], customdata=[f"id{i}" for i in range(50)])
    assert fig.layout.xaxis.title.text == "a blue object  ←  →  a red object"
    assert fig.layout.yaxis.title.text == "a square  ←  →  &lt;b&gt;circle&lt;/b&gt;"
    assert fig.layout.xaxis.showticklabels and fig.layout.yaxis.zeroline
    assert _n_points(fig) == 50 and sorted(t.name for t in fig.data) == ["image (25)", "text (25)"]
    got = {cid: (px, py) for t in fig.data for cid, px, py in zip(t.customdata, t.x, t.y)}
    assert np.allclose(got["id3"], (x[3], y[3]), atol=1e-6)
    assert json.loads(fig.to_json()) == json.loads(axes_figure(x, y, x_terms=("a red object", "a blue object"),
                                                               y_terms=("<b>circle</b>", "a square"),
                                                               color=np.array(["image", "text"] * 25, dtype=object),
                                                               color_title="modality",
                                                               hover_text=[f"item {i}" for i in range(50)],
                                                               customdata=[f"id{i}" for i in range(50)]).to_json())
    with pytest.raises(ValueError, match="same length"):
        axes_figure(x, y[:3], x_terms=("a", "b"), y_terms=("c", "d"))
    with pytest.raises(ValueError, match="x_terms"):
        axes_figure(x, y, x_terms=("a",), y_terms=("c", "d"))


def test_colour_names_are_drawn_in_their_colours_and_other_values_in_a_safe_palette():
    from plotly.colors import qualitative

    X = _points(8)
    colour = np.array(["red", "Orange", "cyan", "white", "dark green", "apples", "pears", "red"], dtype=object)
    fig = map_figure(X, color=colour, color_title="colour")
    got = {t.name.rsplit(" (", 1)[0]: t.marker for t in fig.data if t.mode == "markers"}
    assert got["red"].color == "#ff0000" and got["Orange"].color == "#ffa500" and got["cyan"].color == "#00ffff"
    assert got["dark green"].color == "#006400"
    assert got["white"].line.width > 0, "light named colours get an outline on the white background"
    others = [got["apples"].color, got["pears"].color]
    assert others == list(qualitative.Safe[:2]) and got["apples"].line.width is None


@pytest.mark.parametrize("values", [
    np.array(["image", "text", "row", "text"] * 50, dtype=object),
    np.array([f"cluster {i}" for i in (1, 12, 3, 2, 12)] * 20, dtype=object),  # natural order: 2 before 12
    pd.Categorical.from_codes([0, 4, 2, 2], categories=[f"cluster {i}" for i in range(1, 8)]),  # unused left out
    np.array(["red", "blue", "Red"] * 10, dtype=object),  # names equal but for case
    np.array(["a1", "a01", "a2"] * 5, dtype=object),
    np.array([f"v{i}" for i in range(40)] * 3, dtype=object),  # more than fit: "other"
    np.array(["x", None, "y"] * 4, dtype=object),
    pd.Categorical(["b", "a", None, "b"]),
    np.array([3, 1, 2, 2]),
])
def test_category_codes_are_the_same_on_the_fast_path(values, monkeypatch):
    """Few strings or a Categorical (a million points by cluster or modality) are coded without a label per
    point; the codes, legend order and colours are what the general path gives."""
    from core.plots import style

    fast = style.category_codes(values)
    monkeypatch.setattr(style, "_few_categories", lambda *a: None)
    slow = style.category_codes(values)
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[0].dtype == slow[0].dtype and fast[1] == slow[1] and fast[2] == slow[2]
