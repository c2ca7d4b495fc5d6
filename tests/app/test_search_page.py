"""AppTest checks of the Search page on a real demo-world workspace (400 images + captions, model `demo`)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # first encoder load + index build on 2 busy cores


def search_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "search.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> list[str]:
    """Element texts with pages.ui.plain's Markdown escapes removed."""
    return [e.value.replace("\\", "") for e in elements]


def results(at: AppTest):
    """The results table (the one with a rank column)."""
    hits = [d.value for d in at.dataframe if "rank" in d.value.columns]
    assert hits, f"no results table; tables: {[list(d.value.columns) for d in at.dataframe]}"
    return hits[0]


def labels(at: AppTest):
    hits = [d.value for d in at.dataframe if list(d.value.columns) == ["label", "score"]]
    assert hits, "no labels table"
    return hits[0]


def has_object(row, colour: str, shape: str) -> bool:
    return (row["colour"], row["shape"]) == (colour, shape) or (row["colour2"], row["shape2"]) == (colour, shape)


def png(colour=(220, 30, 30)) -> bytes:
    im = Image.new("RGB", (64, 64), (245, 245, 240))
    ImageDraw.Draw(im).ellipse((14, 14, 50, 50), fill=colour)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_text_query_shows_matching_images_with_scores(demo_home, items):
    at = search_page(workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert at.radio(key="search_mode").value == "Text"
    assert at.radio(key="search_modality").value == "image"  # text -> images by default
    assert any("Type a query" in s for s in texts(at.caption))
    at.text_input(key="search_text").input("a red circle").run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert any(s.startswith("**15** nearest images to “a red circle”") for s in texts(at.markdown))
    df = results(at)
    assert len(df) == 15 and (df["modality"] == "image").all()
    assert df["score"].is_monotonic_decreasing
    assert all(has_object(items.loc[i], "red", "circle") for i in df["id"].head(5)), df[["colour", "shape"]]
    # one card per result: a thumbnail, the rank + score, the caption, a "More like this" button
    assert len(at.image) == 15
    assert sum("score **" in s for s in texts(at.caption)) == 15
    assert len([b for b in at.button if b.label == "More like this"]) == 15
    # zero-shot labels of the query
    assert labels(at)["label"].iloc[0] == "red"


def test_filters_k_and_result_modality(demo_home, items):
    at = search_page(workspace="demo", model="demo")
    at.text_input(key="search_text").input("a circle").run()
    at.slider(key="search_k").set_value(8).run()
    at.selectbox(key="search_filter_col").select("colour").run()
    at.multiselect(key="search_filter_colour").set_value(["blue", "green"]).run()
    assert not at.exception, at.exception
    df = results(at)
    assert len(df) == 8 and set(df["colour"]) <= {"blue", "green"} and (df["modality"] == "image").all()
    assert any("colour in blue, green" in s for s in texts(at.markdown))
    at.radio(key="search_modality").set_value("text").run()
    df = results(at)
    assert len(df) == 8 and (df["modality"] == "text").all() and set(df["colour"]) <= {"blue", "green"}
    # text results are text cards (no thumbnails), their text shown literally
    assert not at.image
    assert all(t in texts(at.markdown) for t in df["text"].head(3)), df["text"]
    at.radio(key="search_modality").set_value("all").run()
    assert set(results(at)["modality"]) <= {"image", "text"}


def test_items_from_the_map_and_more_like_this(demo_home, items):
    reds = items[(items["modality"] == "image") & (items["colour"] == "red") & (items["shape"] == "circle")]
    chosen = reds["id"].head(3).tolist()
    at = search_page(workspace="demo", model="demo", search_ids=chosen)
    assert not at.exception, at.exception
    assert at.radio(key="search_mode").value == "Items"
    assert any("More like **3** items" in s for s in texts(at.markdown))
    df = results(at)
    assert not set(chosen) & set(df["id"])  # the query items are left out
    assert sum(has_object(items.loc[i], "red", "circle") for i in df["id"].head(5)) >= 4
    # "More like this" on the first card: that item becomes the query
    first = df["id"].iloc[0]
    [more] = [b for b in at.button if b.label == "More like this" and b.key.endswith(first)]
    more.click().run()
    assert not at.exception, at.exception
    assert at.session_state["search_query_ids"] == [first]
    assert any("More like **1** item " in s for s in texts(at.markdown))
    assert first not in set(results(at)["id"])
    # Clear: back to an empty items query
    at.button(key="search_clear").click().run()
    assert not at.exception and not [d for d in at.dataframe if "rank" in d.value.columns]
    at.text_input(key="search_item_input").input(f"item:{chosen[0]}, {chosen[1]}").run()
    assert not set(chosen[:2]) & set(results(at)["id"])
    at.text_input(key="search_item_input").input("nope").run()
    assert not at.exception
    [err] = texts(at.error)
    assert "nope" in err and "not in workspace" in err


def test_image_upload_and_a_corrupt_file(demo_home, items):
    # a copy of a stored red circle: its neighbours are red circles, the stored copy itself is left out
    single = items[(items["modality"] == "image") & (items["n_objects"].astype(int) == 1)]
    red = single[(single["colour"] == "red") & (single["shape"] == "circle")].iloc[0]
    data = (demo_home / "demo" / red["image"]).read_bytes()
    at = search_page(workspace="demo", model="demo")
    at.radio(key="search_mode").set_value("Image").run()
    at.file_uploader(key="search_image").set_value(("my red circle.png", data, "image/png")).run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert any("nearest images to my red circle.png" in s for s in texts(at.markdown))
    df = results(at)
    assert red["id"] not in set(df["id"])
    assert sum(has_object(items.loc[i], "red", "circle") for i in df["id"].head(5)) >= 4, df[["colour", "shape"]]
    # an image that is not in the workspace works too
    at.file_uploader(key="search_image").set_value(("drawn.png", png(), "image/png")).run()
    assert not at.exception and not at.error and len(results(at)) == 15

    at.file_uploader(key="search_image").set_value(("broken.png", b"not a png at all", "image/png")).run()
    assert not at.exception
    [err] = texts(at.error)
    assert "broken.png is not a readable image" in err and "\n" not in err
    assert not [d for d in at.dataframe if "rank" in d.value.columns]


def test_text_axes(demo_home):
    at = search_page(workspace="demo", model="demo")
    assert at.text_input(key="axes_x_pos").value == "a red object"  # demo world: colour / shape axes
    [draw] = [b for b in at.button if b.label == "Draw the axes"]
    draw.click().run()
    assert not at.exception, at.exception
    [chart] = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"] == "a blue object  ←  →  a red object"
    assert sum(len(t["customdata"]) for t in spec["data"]) == 749
    at.selectbox(key="axes_colour").select("colour").run()
    names = {t["name"].split(" (")[0] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert {"red", "blue", "green"} <= names


def test_custom_label_words(demo_home):
    at = search_page(workspace="demo", model="demo")
    at.text_input(key="search_text").input("a blue square").run()
    at.text_area(key="search_vocab").input("circle, square\ntriangle").run()
    assert not at.exception, at.exception
    df = labels(at)
    assert df["label"].iloc[0] == "square" and set(df["label"]) == {"circle", "square", "triangle"}


def test_words_the_model_never_saw_are_named(demo_home):
    """A query (or a label word) with words outside the demo model's training captions gets one warning
    naming them and the model, next to the results; a query in the world's words gets none."""
    at = search_page(workspace="demo", model="demo")
    at.text_input(key="search_text").input("a crimson disc").run()
    assert not at.exception, at.exception
    assert len(results(at)) == 15, "the results are still shown"
    assert texts(at.warning) == ["Model demo never saw these words in training: crimson, disc. Results for them "
                                 "are guesses; words it knows give better ones."]
    at.text_area(key="search_vocab").input("red, scarlet\nl'été").run()
    assert [w.split(": ")[1].split(".")[0] for w in texts(at.warning)] == ["crimson, disc", "scarlet, l'été"]
    at.text_input(key="search_text").input("a red circle").run()
    assert not [w for w in texts(at.warning) if "crimson" in w or "disc" in w]
    at.text_area(key="search_vocab").input("red, circle").run()
    assert not [w for w in texts(at.warning) if "never saw" in w]


def test_text_only_model_cannot_search_by_image(home):
    ws = core.Workspace(core.workspace_path("notes"))
    ws.ingest([], texts=["a cat on a mat", "a dog in the park", "stock prices fell", "**bold** [x](http://e.com)"])
    ws.embed("minilm")
    at = search_page(workspace="notes", model="minilm")
    assert at.radio(key="search_modality").value == "text"
    at.radio(key="search_mode").set_value("Image").run()
    assert not at.exception
    assert any("text-only" in s for s in texts(at.info))
    assert not at.file_uploader
    at.radio(key="search_mode").set_value("Text").run()
    at.text_input(key="search_text").input("a kitten").run()
    assert not at.exception, at.exception
    df = results(at)
    assert df["text"].iloc[0] == "a cat on a mat"
    # markdown in user text is shown literally, never rendered
    assert "**bold** [x](http://e.com)" in set(df["text"])
    card = [e.value for e in at.markdown if "bold" in e.value]
    assert card == ["\\*\\*bold\\*\\* \\[x\\]\\(http\\://e\\.com\\)"], card


def test_empty_states(home):
    at = search_page()
    assert not at.exception
    assert any("No workspace is open" in s for s in texts(at.info))

    core.Workspace(core.workspace_path("empty"))
    at = search_page(workspace="empty", model="demo")
    assert not at.exception
    [info] = texts(at.info)
    assert "No vectors for demo" in info and "Data page" in info
    assert not at.text_input

    at = search_page(workspace="gone", model="demo")
    assert not at.exception and at.error


def test_precomputed_vectors_search_from_items(home):
    ws = core.Workspace(core.workspace_path("tiny"))
    (home / "t.csv").write_text("text,v_0,v_1,v_2\nalpha,1,0,0\nbeta,0.9,0.1,0\ngamma,0,0,1\n", encoding="utf-8")
    assert ws.ingest([home / "t.csv"]).added == 3
    at = search_page(workspace="tiny", model="precomputed:v")
    assert not at.exception, at.exception
    assert at.radio(key="search_mode").value == "Items"  # this model encodes no text
    alpha = ws.items.set_index("text").loc["alpha", "id"]
    at.text_input(key="search_item_input").input(alpha).run()
    assert not at.exception, at.exception
    df = results(at)
    assert list(df["text"]) == ["beta", "gamma"]
    assert any("need a model that encodes texts" in s for s in texts(at.caption))
    at.radio(key="search_mode").set_value("Text").run()
    assert any("cannot encode texts" in s for s in texts(at.info))
