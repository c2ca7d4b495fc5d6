"""core.search: terms, cross-modal search with filters, analogies (3CosAdd / 3CosMul) and their
evaluation on the bundled sets, text-defined axes, zero-shot labels; the `search` / `analogy` CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import core
import core.analogies
from core.analogies import AnalogyEvaluation, analogy, analogy_scores, evaluate_analogies, load_analogy_set
from core.cli import main
from core.demo.world import COLOURS, SHAPES
from core.encoders import ASSETS_DIR
from core.search import Hit, parse_term, search, term_vectors, text_axes
from core.vocabulary import (
    default_vocabulary,
    known_words,
    label_clusters,
    unknown_words,
    vocabulary_vectors,
    words_of,
    zero_shot_labels,
)

from helpers import make_png

MINILM_SET = ASSETS_DIR / "analogies" / "minilm.csv"
DEMO_SET = ASSETS_DIR / "analogies" / "demo.csv"


@pytest.fixture(scope="module")
def ws(demo_ws_template, tmp_path_factory):
    """One copy of the demo workspace for this module (searching writes the workspace's index)."""
    dst = tmp_path_factory.mktemp("search") / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    return core.Workspace(dst, create=False)


@pytest.fixture(scope="module")
def items(ws) -> pd.DataFrame:
    return ws.items.set_index("id", drop=False)


def single_images(items: pd.DataFrame) -> pd.DataFrame:
    return items[(items["modality"] == "image") & (items["n_objects"].astype(int) == 1)]


def has_object(row, colour: str, shape: str) -> bool:
    return (row["colour"], row["shape"]) == (colour, shape) or (row["colour2"], row["shape2"]) == (colour, shape)


# ---- terms --------------------------------------------------------------------------------------
def test_parse_term():
    assert parse_term("a red car") == core.search.Term("text", "a red car")
    assert parse_term("item:abc") == core.search.Term("item", "abc")
    assert parse_term("image:/x/y.png") == core.search.Term("image", "/x/y.png")
    assert str(parse_term("item:abc")) == "item:abc"
    for bad in ("", "  ", "item:", "image: "):
        with pytest.raises(ValueError):
            parse_term(bad)


def test_term_errors_name_the_term(ws, tmp_path):
    with pytest.raises(ValueError, match=r"item:nope.*not in workspace"):
        term_vectors(ws, "demo", ["a red object", "item:nope"])
    with pytest.raises(ValueError, match=r"image:.*missing\.png.*no such file"):
        search(ws, "demo", f"image:{tmp_path / 'missing.png'}")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(ValueError, match=r"junk\.png.*cannot read the image"):
        search(ws, "demo", f"image:{junk}")
    img = make_png(tmp_path / "red.png")
    with pytest.raises(ValueError, match=r"image:.*red\.png.*'minilm' cannot encode images"):
        term_vectors(None, "minilm", ["king", f"image:{img}"])
    with pytest.raises(ValueError, match=r"item terms need a workspace"):
        term_vectors(None, "minilm", ["item:abc"])
    some_id = ws.items["id"].iloc[0]
    with pytest.raises(ValueError, match=r"has no vector for model 'minilm'"):
        term_vectors(ws, "minilm", [f"item:{some_id}"])


def test_term_vectors_are_unit_rows_and_items_use_stored_vectors(ws):
    item_id = ws.items["id"].iloc[0]
    V = term_vectors(ws, "demo", ["a red object", f"item:{item_id}"])
    assert V.shape == (2, 128) and V.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-5)
    X, _ = ws.vectors("demo", ids=[item_id])
    np.testing.assert_allclose(V[1], X[0] / np.linalg.norm(X[0]), atol=1e-6)


# ---- search -------------------------------------------------------------------------------------
def test_text_to_image_search_finds_red_circles(ws, items):
    hits = search(ws, "demo", "a red circle", k=5, modality="image")
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert all(h.modality == "image" and h.image and h.image.endswith(".png") for h in hits)
    assert all(has_object(items.loc[h.id], "red", "circle") for h in hits), [h.id for h in hits]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    d = hits[0].to_dict()
    assert {"id", "score", "modality", "text", "image"} <= set(d)
    json.dumps(d)


def test_image_to_text_finds_its_own_caption(ws, items):
    images = items[items["modality"] == "image"].head(40)
    ranks = []
    for _, r in images.iterrows():
        hits = search(ws, "demo", f"item:{r['id']}", k=10, modality="text")
        assert all(h.modality == "text" for h in hits)
        ids = [h.id for h in hits]
        ranks.append(ids.index(r["pair"]) + 1 if r["pair"] in ids else None)
    assert np.mean([x is not None and x <= 5 for x in ranks]) >= 0.8, ranks
    assert np.mean([x == 1 for x in ranks]) >= 0.4, ranks


def test_item_query_excludes_itself_and_vector_queries(ws, items):
    item_id = single_images(items)["id"].iloc[0]
    hits = search(ws, "demo", f"item:{item_id}", k=10)
    assert item_id not in [h.id for h in hits] and len(hits) == 10
    X, _ = ws.vectors("demo", ids=[item_id])
    by_vector = search(ws, "demo", X[0], k=3)
    assert by_vector[0].id == item_id  # a raw vector is not an item: nothing is excluded
    two = single_images(items)["id"].iloc[:2].tolist()
    hits = search(ws, "demo", [f"item:{i}" for i in two], k=5)  # "more like these"
    assert not set(two) & {h.id for h in hits}
    X2, _ = ws.vectors("demo", ids=two)
    assert [h.id for h in search(ws, "demo", X2, k=5, exclude=two)] == [h.id for h in hits]
    # a query text stored as an item is that item: excluded too
    caption = items[items["modality"] == "text"].iloc[0]
    hits = search(ws, "demo", caption["text"], k=5, modality="text")
    assert caption["id"] not in [h.id for h in hits]


def test_filters_return_k_results(ws, items):
    hits = search(ws, "demo", "a circle", k=12, modality="image", filter={"colour": "blue"})
    assert len(hits) == 12
    assert all(items.loc[h.id, "colour"] == "blue" and h.modality == "image" for h in hits)
    hits = search(ws, "demo", "a circle", k=8, filter={"colour": ["Red", "green"], "n_objects": 1})
    assert len(hits) == 8
    assert all(items.loc[h.id, "colour"] in ("red", "green") and int(items.loc[h.id, "n_objects"]) == 1 for h in hits)
    # a callable on the items frame
    hits = search(ws, "demo", "a circle", k=10, filter=lambda df: df["background"] == "stripes")
    assert len(hits) == 10 and all(items.loc[h.id, "background"] == "stripes" for h in hits)
    # fewer pass than k: all of them come back
    few = items[(items["colour"] == "red") & (items["shape"] == "star") & (items["modality"] == "image")]
    hits = search(ws, "demo", "a blue ring", k=50, modality="image", filter={"colour": "red", "shape": "star"})
    assert {h.id for h in hits} == set(few["id"]) and len(few) < 50
    with pytest.raises(ValueError, match=r"filter column 'color' is not in the workspace"):
        search(ws, "demo", "a circle", filter={"color": "red"})
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got 0"):
        search(ws, "demo", "a circle", k=0)


def test_search_on_the_hnsw_backend_keeps_filters_and_exclusions(demo_ws, monkeypatch):
    from core.index import NeighborIndex, workspace_index

    monkeypatch.setitem(NeighborIndex.__init__.__kwdefaults__, "exact_threshold", 100)
    assert workspace_index(demo_ws, "demo").backend_ == "hnsw"
    items = demo_ws.items.set_index("id", drop=False)
    src = single_images(items)["id"].iloc[0]
    hits = search(demo_ws, "demo", f"item:{src}", k=10, modality="image", filter={"shape": "ring"})
    assert len(hits) == 10 and src not in [h.id for h in hits]
    assert all(items.loc[h.id, "shape"] == "ring" and h.modality == "image" for h in hits)
    exact = NeighborIndex(exact_threshold=10**9).fit(*demo_ws.vectors("demo"))
    mask = ((items["shape"] == "ring") & (items["modality"] == "image")).reindex(exact.ids_).to_numpy()
    X, _ = demo_ws.vectors("demo", ids=[src])
    want, _ = exact.query(X, k=10, filter=mask, exclude=[src])
    assert len(set(want[0]) & {h.id for h in hits}) >= 9


# ---- analogies ----------------------------------------------------------------------------------
def test_analogy_scores_follow_the_definitions():
    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    X, P, M = unit(rng.normal(size=(50, 8))), unit(rng.normal(size=(2, 8))), unit(rng.normal(size=(1, 8)))
    q = P.sum(0) - M.sum(0)
    np.testing.assert_allclose(analogy_scores(X, P, M, "3cosadd"), X @ q / np.linalg.norm(q), atol=1e-5)
    c = lambda v: (X @ v + 1) / 2  # noqa: E731
    want = c(P[0]) * c(P[1]) / (c(M[0]) + 0.001)
    np.testing.assert_allclose(analogy_scores(X, P, M, "3CosMul"), want, rtol=1e-5)
    with pytest.raises(ValueError, match="method must be one of 3cosadd, 3cosmul; got 'pairdirection'"):
        analogy_scores(X, P, M, "pairdirection")
    with pytest.raises(ValueError, match="cancel out"):
        analogy_scores(X, P[:1], P[:1], "3cosadd")


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_minilm_analogy_set_reaches_the_floor(method):
    ev = evaluate_analogies("minilm", MINILM_SET, method=method)
    rows = len(pd.read_csv(MINILM_SET))
    assert rows >= 100 and ev.n == rows and not ev.skipped
    assert ev.accuracy >= 0.8, ev.to_dict(rows=False)
    assert ev.accuracy > ev.baseline_accuracy + 0.1
    d = ev.to_dict()
    assert d["acc@1"] == pytest.approx(ev.accuracy, abs=1e-4) and d["acc@5"] >= d["acc@1"]
    assert set(d["per_category"]) >= {"capital-country", "gender", "plural", "comparative", "past-tense", "opposite"}
    assert sum(c["n"] for c in d["per_category"].values()) == ev.n
    # every prediction is a word of the set that is not an input of its row
    assert all(r["predicted"] not in (r["a"], r["b"], r["c"]) for r in d["rows"])


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_demo_cross_modal_analogies_beat_nearest_neighbours(ws, method):
    ev = evaluate_analogies(ws, DEMO_SET, model="demo", method=method)
    assert ev.n == len(pd.read_csv(DEMO_SET)) and not ev.skipped, ev.skipped
    d = ev.to_dict(rows=False)
    assert ev.accuracy >= 0.8 and d["acc@5"] >= 0.9, d
    assert ev.accuracy >= ev.baseline_accuracy + 0.5, d
    for cat, c in d["per_category"].items():
        assert c["acc@5"] > c["baseline"]["acc@5"], (cat, c)


def test_analogy_image_minus_text_plus_text(ws, items):
    red_circles = single_images(items)
    red_circles = red_circles[(red_circles["colour"] == "red") & (red_circles["shape"] == "circle")]
    src = red_circles["id"].iloc[0]
    for method in ("3cosadd", "3cosmul"):
        hits = analogy(ws, "demo", [f"item:{src}", "a blue object"], ["a red object"], method=method, k=3,
                       modality="image")
        assert src not in [h.id for h in hits]
        assert all(has_object(items.loc[h.id], "blue", "circle") for h in hits), (method, [h.id for h in hits])
    # without a modality filter the input item is still excluded, and 3CosMul ranks by its own score
    hits = analogy(ws, "demo", [f"item:{src}"], [], method="3cosmul", k=5)
    assert src not in [h.id for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(ValueError, match="at least one plus term"):
        analogy(ws, "demo", [], ["a red object"])


def test_analogy_matches_exact_3cosmul(ws, monkeypatch):
    X, ids = ws.vectors("demo", modality="image")
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    V = term_vectors(ws, "demo", ["a green object", "a star", "a square"])
    want = analogy_scores(X, V[:2], V[2:], "3cosmul")
    hits = analogy(ws, "demo", ["a green object", "a star"], ["a square"], method="3cosmul", k=5, modality="image")
    assert [h.id for h in hits] == list(ids[np.argsort(-want)[:5]])
    np.testing.assert_allclose([h.score for h in hits], np.sort(want)[::-1][:5], rtol=1e-5)
    # large collections: a candidate pool from the index, the same top 5 here
    monkeypatch.setattr(core.analogies, "COSMUL_EXACT_LIMIT", 50)  # the constants live in core.analogies
    monkeypatch.setattr(core.analogies, "COSMUL_POOL", 100)
    pooled = analogy(ws, "demo", ["a green object", "a star"], ["a square"], method="3cosmul", k=5, modality="image")
    assert [h.id for h in pooled] == [h.id for h in hits]


def test_evaluation_reports_bad_rows(ws, items):
    img = single_images(items)["id"].iloc[0]
    colour, shape = items.loc[img, "colour"], items.loc[img, "shape"]
    other = next(c for c in COLOURS if c != colour)
    rows = [
        {"a": f"a {colour} object", "b": f"a {other} object", "c": img, "d": f"colour={other};shape={shape}"},
        {"a": "a red object", "b": "", "c": img, "d": "colour=red"},
        {"a": "a red object", "b": "a blue object", "c": "item:0000000000000000", "d": "colour=blue"},
        {"a": "a red object", "b": "a blue object", "c": img, "d": "colour=mauve"},
        {"a": "a red object", "b": "a blue object", "c": img, "d": "hue=blue"},
    ]
    ev = evaluate_analogies(ws, rows, model="demo", modality="image")
    assert isinstance(ev, AnalogyEvaluation) and ev.n == 1
    reasons = dict(ev.skipped)
    assert sorted(reasons) == [2, 3, 4, 5]
    assert reasons[2].startswith("row 2:") and "column(s) b empty" in reasons[2]
    assert "item:0000000000000000" in reasons[3] and "not in workspace" in reasons[3]
    assert "no candidate item matches d='colour=mauve'" in reasons[4]
    assert "'hue' is not in the workspace" in reasons[5]
    with pytest.raises(ValueError, match=r"lacks column\(s\) d"):
        load_analogy_set(pd.DataFrame({"a": ["x"], "b": ["y"], "c": ["z"]}))
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_analogies("minilm", "/nonexistent/set.csv")
    voc = evaluate_analogies("minilm", [{"a": "man", "b": "king", "c": "woman", "d": "queen"},
                                        {"a": "man", "b": "king", "c": "item:x", "d": "queen"},
                                        {"a": "man", "b": "king", "c": "woman", "d": "king"}])
    assert voc.n == 1 and [r for r, _ in voc.skipped] == [2, 3]
    assert "vocabulary holds texts only" in voc.skipped[0][1] and "is also an input" in voc.skipped[1][1]


# ---- axes and zero-shot labels ------------------------------------------------------------------
def test_text_axes_separate_colours_and_shapes(ws, items):
    df = text_axes(ws, "demo", x=("a red object", "a blue object"), y=("a circle", "a square"), modality="image")
    assert list(df.columns) == ["id", "modality", "x", "y"] and (df["modality"] == "image").all()
    assert df["x"].between(-1, 1).all() and df["y"].between(-1, 1).all()
    meta = items.loc[df["id"]]
    def mean(axis, column, value):
        return df[axis][meta[column].eq(value).to_numpy()].mean()

    assert mean("x", "colour", "red") > mean("x", "colour", "blue") + 0.1
    assert mean("y", "shape", "circle") > mean("y", "shape", "square") + 0.1
    one = text_axes(ws, "demo", x=("a red object", "a blue object"), y=None, ids=df["id"].iloc[:3].tolist())
    assert list(one.columns) == ["id", "modality", "x"] and len(one) == 3
    with pytest.raises(ValueError, match="axis x must be a pair"):
        text_axes(ws, "demo", x=("red",))


def test_zero_shot_labels_rank_the_right_colour(ws, items):
    singles = single_images(items).head(30)
    right = 0
    for _, r in singles.iterrows():
        top = zero_shot_labels(ws, "demo", list(COLOURS), ids=r["id"], k=3)
        assert list(top.columns) == ["label", "prompt", "score"] and len(top) == 3
        assert top["score"].is_monotonic_decreasing
        right += top["label"].iloc[0] == r["colour"]
    assert right / len(singles) >= 0.9
    reds = singles[singles["colour"] == "red"]["id"].tolist()
    sel = zero_shot_labels(ws, "demo", list(COLOURS) + list(SHAPES), ids=reds, k=None, template="a {} object")
    assert sel["label"].iloc[0] == "red" and len(sel) == len(COLOURS) + len(SHAPES)
    assert sel["prompt"].iloc[0] == "a red object"
    X, _ = ws.vectors("demo", ids=reds)
    np.testing.assert_array_equal(zero_shot_labels(X, "demo", list(COLOURS), k=2)["label"],
                                  zero_shot_labels(ws, "demo", list(COLOURS), ids=reds, k=2)["label"])
    vocab = default_vocabulary()
    assert len(vocab) >= 200 and set(COLOURS) | set(SHAPES) | {"small", "large", "left", "center"} <= set(vocab)
    assert len(zero_shot_labels(ws, "demo", ids=reds[0], k=5)) == 5  # the bundled vocabulary
    with pytest.raises(ValueError, match="nope"):
        zero_shot_labels(ws, "demo", list(COLOURS), ids=["nope"])


def test_label_clusters_name_colour_clusters(ws, items):
    singles = single_images(items)
    singles = singles[singles["colour"].isin(["red", "green", "blue"])]
    X, ids = ws.vectors("demo", ids=singles["id"].tolist())
    labels = items.loc[ids, "colour"].to_numpy()
    vocab = list(COLOURS) + list(SHAPES) + ["object", "shape"]
    T = vocabulary_vectors("demo", vocab, "a {} object")
    names = label_clusters(X, labels, T, vocab, k=2)
    assert set(names) == {"red", "green", "blue"}
    for colour, words in names.items():
        assert words[0][0] == colour and len(words) == 2


def test_core_exports_search_api():
    import core.search as search_module

    assert core.search_items is search and search_module.search is search
    assert core.analogy is analogy and core.evaluate_analogies is evaluate_analogies
    assert core.text_axes is text_axes and core.zero_shot_labels is zero_shot_labels


# ---- CLI ----------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else None), err


def test_cli_search_and_analogy_json(capsys, ws, items):
    code, doc, _ = run(capsys, "search", str(ws.path), "--model", "demo", "--text", "a red circle", "--k", "4",
                       "--modality", "image", "--json")
    assert code == 0 and len(doc["results"]) == 4 and doc["unknown_words"] == []
    for r in doc["results"]:
        assert {"id", "score", "modality", "text", "image"} <= set(r)
        assert r["modality"] == "image" and has_object(items.loc[r["id"]], "red", "circle")
    src = single_images(items)["id"].iloc[0]
    code, doc, _ = run(capsys, "search", str(ws.path), "--model", "demo", "--item", src, "--filter", "colour=green",
                       "--filter", "colour=blue", "--k", "6", "--json")
    assert code == 0 and len(doc["results"]) == 6 and src not in [r["id"] for r in doc["results"]]
    assert doc["unknown_words"] == [], "an item query has no words"
    assert all(items.loc[r["id"], "colour"] in ("green", "blue") for r in doc["results"])
    colour = items.loc[src, "colour"]
    other = next(c for c in COLOURS if c != colour)
    code, doc, _ = run(capsys, "analogy", str(ws.path), "--model", "demo", "--plus", f"item:{src}",
                       f"a {other} object", "--minus", f"a {colour} object", "--method", "3cosmul",
                       "--modality", "image", "--k", "3", "--json")
    assert code == 0 and len(doc["results"]) == 3 and doc["unknown_words"] == []
    assert all(items.loc[r["id"], "colour"] == other for r in doc["results"])
    code, doc, err = run(capsys, "analogy", str(ws.path), "--model", "demo", "--plus", f"item:{src}", "a navy disc",
                         "--minus", f"a {colour} object", "--k", "3", "--json")
    assert code == 0 and doc["unknown_words"] == ["navy", "disc"], "the text terms' words; not the item id"
    assert "never saw these words in training: navy, disc." in err


def test_cli_analogy_eval_json(capsys, ws, tmp_path):
    code, doc, _ = run(capsys, "analogy", "--model", "minilm", "--eval", str(MINILM_SET), "--json")
    assert code == 0
    assert {"acc@1", "acc@5", "baseline", "n", "per_category", "skipped"} <= set(doc)
    assert doc["acc@1"] >= 0.8 and doc["n"] >= 100 and {"acc@1", "acc@5"} <= set(doc["baseline"])
    code, doc, _ = run(capsys, "analogy", str(ws.path), "--model", "demo", "--eval", str(DEMO_SET), "--json")
    assert code == 0 and doc["acc@1"] > doc["baseline"]["acc@1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\nx,y,z\n")
    code, _, err = run(capsys, "analogy", "--model", "minilm", "--eval", str(bad), "--json")
    assert code == 1 and "lacks column(s) d" in err and err.count("\n") == 1
    empty = tmp_path / "empty_cells.csv"
    empty.write_text("a,b,c,d\nman,,woman,queen\n")
    code, _, err = run(capsys, "analogy", "--model", "minilm", "--eval", str(empty), "--json")
    assert code == 1 and "row 1: column(s) b empty" in err


def test_cli_errors_and_exit_codes(capsys, ws, tmp_path):
    code, _, err = run(capsys, "search", str(ws.path), "--model", "demo", "--item", "nope", "--json")
    assert code == 1 and "item:nope" in err and err.count("\n") == 1
    code, _, err = run(capsys, "search", str(ws.path), "--model", "demo", "--image", str(tmp_path / "no.png"))
    assert code == 1 and "no.png" in err and "cannot read the image" in err
    code, _, err = run(capsys, "search", str(ws.path), "--model", "demo", "--text", "x", "--filter", "colour")
    assert code == 2 and "COLUMN=VALUE" in err
    code, _, err = run(capsys, "search", str(ws.path), "--model", "demo", "--text", "x", "--k", "0")
    assert code == 2
    code, _, _ = run(capsys, "search", str(ws.path), "--model", "demo")  # no query: argparse usage error
    assert code == 2
    code, _, err = run(capsys, "analogy", "--model", "demo", "--plus", "a red object")
    assert code == 2 and "WORKSPACE" in err
    code, _, err = run(capsys, "analogy", str(ws.path), "--model", "demo", "--plus", "image:/no/such.png", "--json")
    assert code == 1 and "image:/no/such.png" in err
    code, _, err = run(capsys, "search", str(tmp_path / "nows"), "--model", "demo", "--text", "x")
    assert code == 1 and "no workspace" in err


# ---- helpers for the pages ----------------------------------------------------------------------
def test_load_analogy_set_from_uploaded_bytes():
    df = load_analogy_set(b"A,b,c,d,category\nparis,france,rome, italy,capital\n", name="mine.csv")
    assert list(df.columns) == ["a", "b", "c", "d", "category"] and df["d"].tolist() == ["italy"]
    with pytest.raises(ValueError, match=r"'mine\.csv' lacks column\(s\) d"):
        load_analogy_set(b"a,b,c\nx,y,z\n", name="mine.csv")
    with pytest.raises(ValueError, match=r"'empty\.csv' is not a readable CSV"):
        load_analogy_set(b"", name="empty.csv")
    with pytest.raises(ValueError, match=r"'bin\.csv' is not a readable CSV"):
        load_analogy_set(b"\xff\xfe\x00\x81a,b\x00", name="bin.csv")


def test_suggested_space_tells_workspace_sets_from_word_sets():
    from core.analogies import suggested_space

    assert suggested_space(MINILM_SET) == "vocabulary"
    assert suggested_space(DEMO_SET) == "workspace"
    assert suggested_space([{"a": "x", "b": "y", "c": "item:abc", "d": "w"}]) == "workspace"
    assert suggested_space([{"a": "x", "b": "y", "c": "z", "d": "colour=blue"}]) == "workspace"
    assert suggested_space([{"a": "x", "b": "y", "c": "z", "d": "w = v"}]) == "workspace"
    assert suggested_space([{"a": "king", "b": "queen", "c": "man", "d": "woman"}]) == "vocabulary"


def test_metadata_values_and_hits_frame(ws, items):
    from core.search import hits_frame, metadata_values

    meta = metadata_values(ws.items)
    assert {"colour", "shape", "background"} <= set(meta) and not {"id", "text", "source"} & set(meta)
    assert meta["colour"] == sorted(COLOURS) and all(isinstance(v, str) for v in meta["colour"])
    assert meta["n_objects"] == ["1", "2"]
    assert "size" not in metadata_values(ws.items, max_values=2) or len(meta["size"]) <= 2
    hits = search(ws, "demo", "a red circle", k=4, modality="image")
    df = hits_frame(ws, hits)
    assert list(df["rank"]) == [1, 2, 3, 4] and list(df["id"]) == [h.id for h in hits]
    assert list(df.columns[:5]) == ["rank", "score", "modality", "text", "source"] and df.columns[-1] == "id"
    assert (df["colour"] == "red").all() and (df["shape"] == "circle").all()
    # an image shows its paired caption
    assert df["text"].tolist() == [items.loc[items.loc[h.id, "pair"], "text"] for h in hits]
    np.testing.assert_allclose(df["score"], [h.score for h in hits], atol=1e-6)
    assert hits_frame(ws, [h.to_dict() for h in hits])["id"].tolist() == df["id"].tolist()
    assert len(hits_frame(ws, [])) == 0


def test_worked_example_is_a_red_circle_that_turns_blue(ws, items):
    from core.demo.examples import worked_example

    ex = worked_example(ws, "demo")
    assert ex is not None and ex["minus"] == ["a red object"] and ex["plus"][1] == "a blue object"
    row = items.loc[ex["item"]]
    assert ex["plus"][0] == f"item:{ex['item']}"
    assert (row["modality"], row["colour"], row["shape"], int(row["n_objects"])) == ("image", "red", "circle", 1)
    hits = analogy(ws, "demo", ex["plus"], ex["minus"], k=5, modality=ex["modality"])
    assert sum(has_object(items.loc[h.id], "blue", "circle") for h in hits) >= 4
    base = search(ws, "demo", ex["plus"][0], k=5, modality="image")
    assert sum(has_object(items.loc[h.id], "blue", "circle") for h in base) <= 1
    assert worked_example(ws, "minilm") is None  # no vectors for that model


def test_contrast_labels_say_what_sets_a_selection_apart(demo_ws):
    items = demo_ws.items
    blue = items[(items["modality"] == "image") & (items["colour"] == "blue")]["id"].head(10).tolist()
    plain = zero_shot_labels(demo_ws, "demo", ids=blue, k=3)
    contrast = zero_shot_labels(demo_ws, "demo", ids=blue, k=3, contrast=True)
    assert contrast["label"].iloc[0] == "blue"
    assert list(contrast.columns) == ["label", "prompt", "score", "cosine"]
    assert contrast["score"].is_monotonic_decreasing and not plain.equals(contrast)


def test_a_model_folder_with_a_vocabulary_names_with_its_words(tmp_path):
    from core.demo import world_vocabulary

    general = default_vocabulary()
    assert default_vocabulary("demo") == world_vocabulary(), "demo ships the words of its world"
    assert "pizza" in general and "pizza" not in default_vocabulary("demo")
    assert {"red", "orange", "star", "background"} <= set(default_vocabulary("demo"))
    assert default_vocabulary("openclip:ViT-B-32/laion2b_s34b_b79k") == general, "hub models: the general list"
    assert default_vocabulary("minilm") == general, "a package model without a vocabulary.txt"
    (tmp_path / "vocabulary.txt").write_text("# my words\ncat\n\ndog\ncat\n")
    assert default_vocabulary(f"openclip-local:{tmp_path}") == ["cat", "dog"]
    assert default_vocabulary("no-such-model") == general


def test_known_and_unknown_words_of_a_model(tmp_path):
    """known_words: a local folder's known_words.txt, else its vocabulary.txt, else None (nothing to check);
    unknown_words: the words outside it, lower-cased, unique, in order, compared exactly (no stemming)."""
    from core.demo import world_words

    assert known_words("demo") == world_words(), "demo ships every word of its world"
    shipped = (ASSETS_DIR / "demo" / "known_words.txt").read_text().splitlines()
    assert shipped[0].startswith("#") and shipped[1:] == sorted(world_words())
    assert unknown_words("demo", "a crimson disc") == ["crimson", "disc"]
    assert unknown_words("demo", ["A photo of a CAT", "3 cats, a cat and 2 circles", "a red circle"]) == \
        ["cat", "cats", "circles"]
    assert unknown_words("demo", "a red circle on the left") == []
    assert unknown_words("demo", ["item:0123abcd", "image:/tmp/crimson.png", "a purple disc"], terms=True) == ["disc"]
    assert unknown_words("demo", ["Don\u2019t", "l'été", "", None]) == ["don't", "l'été"]
    assert words_of("x_y 42 {} été") == ["x", "y", "été"]
    hub = "openclip:ViT-B-32/laion2b_s34b_b79k"
    assert known_words(hub) is None and unknown_words(hub, "a crimson disc") == [], "hub models: no check"
    assert known_words("minilm") is None and unknown_words("no-such-model", "zzz") == []
    folder = f"openclip-local:{tmp_path}"
    assert known_words(folder) is None
    (tmp_path / "vocabulary.txt").write_text("# names\ncat\ntraffic light\n")
    assert known_words(folder) == {"cat", "traffic", "light"}, "only a naming vocabulary: its words"
    assert unknown_words(folder, "a cat at a traffic light") == ["a", "at"]
    (tmp_path / "known_words.txt").write_text("# all\na\ncat\n")
    assert unknown_words(folder, "a cat at a traffic light") == ["at", "traffic", "light"], "known_words.txt first"
    (tmp_path / "known_words.txt").write_text("a\nat\ncat\ntraffic\n")
    assert unknown_words(folder, "a cat at a traffic light") == ["light"], "a changed file is read again"


# ---- word2vec's questions-words.txt (the format gensim's evaluate_word_analogies reads) ----------------
def _gensim_questions_words():
    pytest.importorskip("gensim")
    from gensim.test.utils import datapath

    return Path(datapath("questions-words.txt"))


def _gensim_sections(path: Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """The file read the way gensim's KeyedVectors.evaluate_word_analogies reads it (its loop, restated)."""
    sections, section = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(": "):
            section = line.lstrip(": ").strip()
            sections[section] = []
        else:
            a, b, c, expected = line.split()
            sections[section].append((a, b, c, expected))
    return sections


def test_questions_words_reads_gensims_file_as_gensim_does():
    from core.analogies import is_questions_words

    path = _gensim_questions_words()
    assert is_questions_words(path.read_text(encoding="utf-8"))
    df = load_analogy_set(path)
    ref = _gensim_sections(path)
    assert list(df.columns) == ["a", "b", "c", "d", "category", "line"]
    assert len(df) == sum(len(v) for v in ref.values()) == 19544
    assert df["category"].unique().tolist() == list(ref)  # sections in file order
    for cat, rows in ref.items():
        got = df[df["category"] == cat]
        assert list(got[["a", "b", "c", "d"]].itertuples(index=False, name=None)) == rows
    assert df.attrs["malformed"] == []
    # the uploaded bytes read the same
    up = load_analogy_set(path.read_bytes(), name="questions-words.txt")
    assert up[["a", "b", "c", "d", "category"]].equals(df[["a", "b", "c", "d", "category"]])


def test_questions_words_keeps_good_lines_and_names_bad_ones(tmp_path):
    text = ("\ufeff: capital-common-countries\nAthens Greece Baghdad Iraq\n\nAthens Greece\n"
            "Athens Greece Berlin Germany extra\nparis france rome italy\n")
    df = load_analogy_set(text.encode(), name="mine.txt")
    assert df[["a", "d", "line"]].values.tolist() == [["Athens", "Iraq", "2"], ["paris", "italy", "6"]]
    assert [n for n, _ in df.attrs["malformed"]] == [4, 5]
    assert "line 4: expected four words" in df.attrs["malformed"][0][1]
    no_sections = load_analogy_set(b"king man queen woman\n", name="w.txt")
    assert list(no_sections.columns) == ["a", "b", "c", "d", "line"]
    with pytest.raises(ValueError, match=r"'bad\.txt' holds no analogy line.*line 2: expected four words"):
        load_analogy_set(b": only-a-section\nhello world\n", name="bad.txt")
    # a CSV whose header has four words and commas is still a CSV
    assert list(load_analogy_set(b"a,b,c,d\nx,y,z,w\n").columns) == ["a", "b", "c", "d"]


def test_questions_words_scored_with_malformed_lines_reported(tmp_path):
    f = tmp_path / "questions-words.txt"
    f.write_text(": family\nman woman king queen\nboy girl brother sister\nbroken line\n"
                 ": gram9-plural-verbs\nwork works run runs\n", encoding="utf-8")
    ev = evaluate_analogies("minilm", str(f), k=3)
    d = ev.to_dict(rows=False)
    assert d["n"] == 3 and set(d["per_category"]) == {"family", "gram9-plural-verbs"}
    assert d["malformed"] == [{"line": 4, "reason": "line 4: expected four words 'a b c d', got 2: 'broken line'"}]


def test_cli_scores_questions_words(capsys, tmp_path):
    f = tmp_path / "questions-words.txt"
    f.write_text(": family\nman woman king queen\nboy girl brother sister\n", encoding="utf-8")
    code, out, err = run(capsys, "analogy", "--model", "minilm", "--eval", str(f), "--json")
    assert code == 0, err
    assert out["n"] == 2 and list(out["per_category"]) == ["family"] and out["malformed"] == []


def test_default_analogy_set_suits_the_model():
    from core.analogies import bundled_analogy_sets, default_analogy_set

    names = list(bundled_analogy_sets())
    assert {"demo.csv", "minilm.csv"} <= set(names)
    assert default_analogy_set("demo", names) == "demo.csv"
    assert default_analogy_set("minilm", names) == "minilm.csv"
    # any other text model gets the set of plain words, never the demo world's item set
    assert default_analogy_set("openclip:ViT-B-32/openai", names) == "minilm.csv"
    assert default_analogy_set(None, []) is None
