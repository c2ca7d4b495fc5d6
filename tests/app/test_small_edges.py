"""AppTest checks of small edges of the pages: the Map's neighbour table and selection table, the
Analogies verdict when only the order changed, image captions in the Data page's item table, and the
progress text before a rate can be measured."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

import core

from helpers import shown_map

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_map_neighbour_table_shows_the_rank_first_and_the_selection_table_no_none(demo_home, items):
    ws = core.Workspace(demo_home / "demo", create=False)
    image = ws.items[ws.items["modality"] == "image"].iloc[0]
    at = page("map", workspace="demo", model="demo", map_method="PCA",
              selection={"workspace": "demo", "ids": [image["id"]]})
    assert not at.exception, at.exception
    near = next(d for d in at.dataframe if "map rank" in d.value.columns)
    assert list(near.value.columns)[:2] == ["map rank", "cosine"]  # the narrow side column keeps both visible
    cfg = json.loads(near.proto.columns)
    assert cfg["map rank"]["width"] == "small"
    # the lone point is drawn selected on the map (the browser rings it), with lines to its 10 true neighbours
    shown = shown_map(at)
    assert shown["selected"] == 1 and shown["lines"] == 10

    # an image and a text selected: the text's thumbnail cell is blank, the image shows its caption
    caption = ws.items[ws.items["pair"] == image["id"]].iloc[0]
    at.session_state["selection"] = {"workspace": "demo", "ids": [image["id"], caption["id"]]}
    at.run()
    sel = next(d for d in at.dataframe if "thumb" in d.value.columns and "source" in d.value.columns)
    assert sel.proto.placeholder == ""  # Streamlit writes "None" in empty cells otherwise
    rows = sel.value.set_index("id")
    assert rows.loc[caption["id"], "thumb"] is None
    assert rows.loc[image["id"], "text"] == rows.loc[caption["id"], "text"] == caption["text"]


def _analogies_with(monkeypatch, reorder):
    """The Analogies page whose arithmetic returns ``reorder(baseline)``: the plain nearest neighbours
    of the first plus term, changed as the test asks."""
    from core.search import term_id
    from pages import ui

    real = ui.search_results

    def fake(key, plus, minus, method, k, mod, flt):
        inputs = tuple(i for i in (term_id(t) for t in plus + minus) if i)
        return reorder(list(real(key, (plus[0],), k, mod, (), inputs)))

    monkeypatch.setattr(ui, "analogy_results", fake)
    return page("analogies", workspace="demo", model="demo", ana_plus="a blue object", ana_minus="a red object")


def _said(at: AppTest) -> list[str]:
    return [e.value for e in [*at.warning, *at.info, *at.success]]


def test_analogies_say_changed_nothing_only_for_the_same_ranked_list(demo_home, monkeypatch):
    same = _analogies_with(monkeypatch, lambda base: base)
    assert not same.exception, same.exception
    assert any(s.startswith("The arithmetic changed nothing") for s in _said(same))

    flipped = _analogies_with(monkeypatch, lambda base: base[::-1])
    assert not flipped.exception, flipped.exception
    said = _said(flipped)
    assert not any("changed nothing" in s for s in said)
    [note] = [s for s in said if s.startswith("The arithmetic only reordered the results")]
    k = len(next(d.value for d in flipped.dataframe if "rank" in d.value.columns))
    assert f"{k - k % 2} of them at another rank" in note  # reversed: all but the middle one moved

    other = _analogies_with(monkeypatch, lambda base: base[1:])
    assert not any("changed nothing" in s for s in _said(other))


def test_data_items_table_shows_an_images_caption(demo_home):
    ws = core.Workspace(demo_home / "demo", create=False)
    at = page("data", workspace="demo", model="demo")
    at.selectbox(key="items_modality").select("image").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "thumb" in d.value.columns and "pair" in d.value.columns)
    text_of = ws.items.drop_duplicates("id").set_index("id")["text"]
    assert (table["modality"] == "image").all() and len(table) > 10
    assert table["text"].notna().all()
    assert table["text"].tolist() == table["pair"].map(text_of).tolist()  # the paired caption


def test_progress_has_no_rate_until_one_is_measured():
    from pages.ui.widgets import make_progress

    class Bar:
        def __init__(self):
            self.texts: list[str] = []

        def progress(self, frac, text=""):
            self.texts.append(text)

    bar = Bar()
    cb = make_progress(bar, "store: ")
    cb(500, 800)  # a stage that reports in large steps: its first report has no rate
    assert bar.texts[-1] == "store: 500/800 …"
    cb(800, 800)
    assert bar.texts[-1] == "store: 800/800"
    assert not any("0.0 items/s" in t for t in bar.texts)

    import time

    bar.texts.clear()
    cb = make_progress(bar)
    cb(0, 100)
    time.sleep(0.25)  # time passes between two reports: that is what a rate and an ETA are made of
    cb(50, 100)
    assert " items/s · ETA " in bar.texts[-1] and not bar.texts[-1].startswith("50/100 · 0.0")
