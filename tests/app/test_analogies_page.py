"""AppTest checks of the Analogies page: term builder, the worked example against the nearest-neighbour
baseline, and the evaluation of bundled and uploaded analogy sets."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # first encoder loads + index build on 2 busy cores


def analogies_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "analogies.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> list[str]:
    """Element texts with pages.ui.plain's Markdown escapes removed."""
    return [e.value.replace("\\", "") for e in elements]


def result_tables(at: AppTest):
    """(analogy, baseline) result tables (those with a rank column), in page order."""
    tables = [d.value for d in at.dataframe if "rank" in d.value.columns]
    assert len(tables) == 2, [list(d.value.columns) for d in at.dataframe]
    return tables


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def has_object(row, colour: str, shape: str) -> bool:
    return (row["colour"], row["shape"]) == (colour, shape) or (row["colour2"], row["shape2"]) == (colour, shape)


def test_worked_example_beats_the_baseline(demo_home, items):
    at = analogies_page(workspace="demo", model="demo")
    assert not at.exception, at.exception
    assert any("Add at least one plus term" in s for s in texts(at.info))
    at.button(key="ana_example").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    plus = at.text_area(key="ana_plus").value.splitlines()
    assert plus[0].startswith("item:") and plus[1] == "a blue object"
    assert at.text_area(key="ana_minus").value == "a red object"
    start = items.loc[plus[0][5:]]
    assert (start["modality"], start["colour"], start["shape"]) == ("image", "red", "circle")
    # the analogy as written, then both galleries side by side
    md = texts(at.markdown)
    plain = [s.replace("*", "") for s in md]
    assert "+ “a blue object”" in plain and "− “a red object”" in plain
    assert any(s.startswith("**Analogy · 3CosAdd**") for s in md)
    assert any(s.startswith("**Baseline · nearest neighbours of world image") for s in md)
    ana, base = result_tables(at)
    assert len(ana) == len(base) == 9 and (ana["modality"] == "image").all()
    assert plus[0][5:] not in set(ana["id"]) | set(base["id"])  # inputs are never results
    blue = sum(has_object(items.loc[i], "blue", "circle") for i in ana["id"].head(5))
    blue_base = sum(has_object(items.loc[i], "blue", "circle") for i in base["id"].head(5))
    assert blue >= 4 and blue_base <= 1, (blue, blue_base)
    assert sum(has_object(items.loc[i], "red", "circle") for i in base["id"].head(5)) >= 4
    [ok] = texts(at.success)
    assert "differ from the plain nearest neighbours" in ok
    assert len(at.image) >= 18  # 9 + 9 result thumbnails (+ the term's own)

    at.radio(key="ana_method").set_value("3CosMul").run()
    assert not at.exception, at.exception
    ana, _ = result_tables(at)
    assert any(s.startswith("**Analogy · 3CosMul**") for s in texts(at.markdown))
    assert sum(has_object(items.loc[i], "blue", "circle") for i in ana["id"].head(5)) >= 4


def test_pick_items_as_terms_and_nothing_changes_without_minus(demo_home, items):
    at = analogies_page(workspace="demo", model="demo")
    at.text_input(key="ana_find").input("a green star").run()
    assert not at.exception, at.exception
    adds = [b for b in at.button if b.label == "plus"]
    assert len(adds) == 6
    first = adds[0].key.rsplit("_", 1)[1]
    adds[0].click().run()
    assert at.session_state["ana_plus"] == f"item:{first}"
    # one plus term and no minus: the analogy is the plain nearest neighbours
    ana, base = result_tables(at)
    assert list(ana["id"]) == list(base["id"])
    assert any("analogy is its nearest neighbours" in s for s in texts(at.caption))
    [minus] = [b for b in at.button if b.label == "minus" and b.key.endswith(first)]
    minus.click().run()
    assert not at.exception
    [err] = texts(at.error)
    assert "zero" in err and "cancel out" in err  # x − x: nothing left to rank by


def test_uploaded_images_as_terms(demo_home, items):
    single = items[(items["modality"] == "image") & (items["n_objects"].astype(int) == 1)]
    red = single[(single["colour"] == "red") & (single["shape"] == "circle")].iloc[0]
    at = analogies_page(workspace="demo", model="demo")
    at.file_uploader(key="ana_plus_img_0").set_value(
        ("red circle.png", (demo_home / "demo" / red["image"]).read_bytes(), "image/png")).run()
    at.text_area(key="ana_plus").input("a blue object").run()
    at.text_area(key="ana_minus").input("a red object").run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    md = [s.replace("*", "") for s in texts(at.markdown)]
    assert "+ image red circle.png" in md
    assert any(s.startswith("Baseline · nearest neighbours of image red circle.png") for s in md)
    ana, base = result_tables(at)
    assert red["id"] not in set(ana["id"]) | set(base["id"])  # the stored copy of the upload is an input
    assert sum(has_object(items.loc[i], "blue", "circle") for i in ana["id"].head(5)) >= 3
    assert sum(has_object(items.loc[i], "red", "circle") for i in base["id"].head(5)) >= 3
    assert not [w for w in texts(at.warning) if "never saw" in w], "an image term's file name is no text"
    at.text_area(key="ana_plus").input("a navy object").run()
    assert [w for w in texts(at.warning) if "never saw" in w] == [
        "Model demo never saw these words in training: navy. Results for them are guesses; words it knows give "
        "better ones."]
    at.file_uploader(key="ana_minus_img_0").set_value(("junk.jpg", b"\x00\x01 not a jpeg", "image/jpeg")).run()
    assert not at.exception
    assert any("junk.jpg is not a readable image" in e for e in texts(at.error))
    # the worked example replaces every term: the uploaded image is not mixed in
    at.button(key="ana_example").click().run()
    assert not at.exception, at.exception
    md = [s.replace("*", "") for s in texts(at.markdown)]
    assert not [s for s in md if "red circle.png" in s]
    assert [u.key for u in at.get("file_uploader")] == ["ana_plus_img_1", "ana_minus_img_1"]
    assert not any("junk.jpg" in e for e in texts(at.error))


def test_the_map_selection_becomes_plus_terms(demo_home, items):
    picked = items[items["modality"] == "image"]["id"].head(3).tolist()
    at = analogies_page(workspace="demo", model="demo", selection={"workspace": "demo", "ids": picked})
    at.button(key="ana_selection").click().run()
    assert not at.exception, at.exception
    assert at.text_area(key="ana_plus").value.splitlines() == [f"item:{i}" for i in picked]


def test_evaluate_the_bundled_demo_set(demo_home):
    at = analogies_page(workspace="demo", model="demo")
    assert at.selectbox(key="eval_set").value == "demo.csv"
    assert at.radio(key="eval_space_demo.csv").value == "workspace"
    assert any("Press Evaluate" in s for s in texts(at.caption))
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    m = metrics(at)
    assert float(m["acc@1"]) >= 0.85 and float(m["acc@5"]) >= 0.95
    assert float(m["baseline acc@1"]) <= 0.1
    cats = [d.value for d in at.dataframe if "category" in d.value.columns and "rows" in d.value.columns]
    assert len(cats) == 1 and cats[0]["rows"].sum() == 44 and len(cats[0]) == 5
    [rows] = [d.value for d in at.dataframe if "predicted" in d.value.columns]
    assert len(rows) == 44 and {"a", "b", "c", "d", "rank", "baseline_rank"} <= set(rows.columns)
    assert at.get("download_button")
    assert any("44 rows scored (0 skipped)" in s for s in texts(at.caption))


def test_evaluate_minilm_set_on_its_vocabulary(demo_home):
    at = analogies_page(workspace="demo", model="demo")
    at.selectbox(key="eval_set").select("minilm.csv").run()
    assert at.radio(key="eval_space_minilm.csv").value == "vocabulary"
    assert at.selectbox(key="eval_model_minilm.csv").value == "minilm"
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    m = metrics(at)
    assert float(m["acc@1"]) >= 0.8 and float(m["baseline acc@1"]) < float(m["acc@1"])
    assert any("the 224 distinct words of the set" in s for s in texts(at.caption))


def test_uploaded_sets_report_bad_files_and_rows(demo_home, items):
    at = analogies_page(workspace="demo", model="demo")
    at.selectbox(key="eval_set").select("upload a set").run()
    at.file_uploader(key="eval_upload").set_value(("mine.csv", b"a,b,c\nx,y,z\n", "text/csv")).run()
    assert not at.exception
    [err] = texts(at.error)
    assert "mine.csv" in err and "lacks column(s) d" in err

    red_circles = (items["modality"] == "image") & (items["colour"] == "red") & (items["shape"] == "circle")
    red = items[red_circles]["id"].iloc[0]
    csv = (f"a,b,c,d,category\na red object,a blue object,{red},colour=blue;shape=circle,swap\n"
           "a red object,a blue object,item:nope,colour=blue,swap\n"
           "a red object,a blue object,,colour=blue,swap\n").encode()
    at.file_uploader(key="eval_upload").set_value(("mine.csv", csv, "text/csv")).run()
    assert at.radio(key="eval_space_mine.csv").value == "workspace"
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert metrics(at)["acc@1"] in ("0.000", "1.000")
    [skipped] = [d.value for d in at.dataframe if list(d.value.columns) == ["row", "reason"]]
    assert list(skipped["row"]) == [2, 3]
    assert "nope" in skipped["reason"].iloc[0] and "empty" in skipped["reason"].iloc[1]


def test_text_only_model_and_empty_states(home):
    at = analogies_page()
    assert not at.exception
    assert any("No workspace is open" in s for s in texts(at.info))
    # a word set can still be scored without a workspace
    at.selectbox(key="eval_set").select("minilm.csv").run()
    assert at.button(key="eval_run")

    ws = core.Workspace(core.workspace_path("notes"))
    ws.ingest([], texts=["king", "queen", "man", "woman", "a red object"])
    ws.embed("minilm")
    at = analogies_page(workspace="notes", model="minilm")
    assert not at.exception, at.exception
    assert at.button(key="ana_example").disabled  # no demo world here
    assert any("text-only" in s for s in texts(at.caption))
    at.text_area(key="ana_plus").input("king\nwoman").run()
    at.text_area(key="ana_minus").input("man").run()
    assert not at.exception, at.exception
    ana, _base = result_tables(at)
    assert ana["text"].iloc[0] == "queen"
    assert not [w for w in texts(at.warning) if "never saw" in w], "a hub model: no list of words to check"

    core.Workspace(core.workspace_path("empty"))
    at = analogies_page(workspace="empty", model="demo")
    assert not at.exception
    assert any("No vectors for demo" in s for s in texts(at.info))


def test_the_set_offered_first_suits_the_model(demo_home):
    assert analogies_page(workspace="demo", model="demo").selectbox(key="eval_set").value == "demo.csv"
    ws = core.Workspace(core.workspace_path("notes"))
    ws.ingest([], texts=["king", "queen", "man", "woman"])
    ws.embed("minilm")
    at = analogies_page(workspace="notes", model="minilm")
    assert not at.exception, at.exception
    assert at.selectbox(key="eval_set").value == "minilm.csv"  # words, not the demo world's items
    at.session_state["model"] = "demo"  # the sidebar switches model: the set follows
    at.run()
    assert at.selectbox(key="eval_set").value == "demo.csv"


def test_questions_words_upload_is_scored_with_bad_lines_listed(demo_home):
    text = (b": capital-common-countries\nAthens Greece Baghdad Iraq\nAthens Greece Berlin Germany\n"
            b"Athens Greece Oslo\n: gram8-plural\nbanana bananas bird birds\ncat cats dog dogs\n")
    at = analogies_page(workspace="demo", model="demo")
    at.selectbox(key="eval_set").select("upload a set").run()
    at.file_uploader(key="eval_upload").set_value(("questions-words.txt", text, "text/plain")).run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert at.radio(key="eval_space_questions-words.txt").value == "vocabulary"
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert any("4 rows scored (0 skipped)" in s for s in texts(at.caption))
    cats = [d.value for d in at.dataframe if "category" in d.value.columns and "rows" in d.value.columns]
    assert sorted(cats[0]["category"]) == ["capital-common-countries", "gram8-plural"]
    [bad] = [d.value for d in at.dataframe if list(d.value.columns) == ["line", "reason"]]
    assert bad["line"].tolist() == [4] and "four words" in bad["reason"].iloc[0]
