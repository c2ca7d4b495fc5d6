"""AppTest checks that no page state outlives its data: deleted items leave the queries and results that
named them, a deleted workspace takes its model along, and a workspace switch starts every page afresh
(the query, the mode, the Map's toggles and their copies in the URL)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 120


def _plain(elements) -> list[str]:
    """Texts of elements as the user reads them (no Markdown escapes or bold marks)."""
    return [e.value.replace("\\", "").replace("**", "") for e in elements]


def _table_with_vectors(path: Path, n: int = 8) -> Path:
    """A table whose rows come with their own vectors (column emb: the model precomputed:emb)."""
    rng = np.random.default_rng(0)
    pd.DataFrame({"title": [f"note {i} about {'cats' if i % 2 else 'dogs'}" for i in range(n)],
                  "emb": [json.dumps(rng.normal(size=5).round(4).tolist()) for _ in range(n)]}
                 ).to_csv(path, index=False)
    return path


def _vectors_workspace(name: str, tmp_path: Path) -> core.Workspace:
    ws = core.Workspace(core.workspace_path(name))
    assert not ws.ingest([_table_with_vectors(tmp_path / f"{name}.csv")]).errors
    assert set(ws.models()) == {"precomputed:emb"}
    return ws


def _app(workspace: str, model: str, page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["workspace"] = workspace
    at.session_state["model"] = model
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    return at.switch_page(page).run() if page else at


def _button(at: AppTest, label: str):
    [b] = [b for b in at.button if b.label.replace("\\", "") == label]
    return b


def test_deleting_the_items_of_a_query_drops_them_from_every_page(home, tmp_path):
    ws = _vectors_workspace("tab", tmp_path)
    by_title = ws.items.set_index("text")["id"]
    gone, kept = by_title["note 3 about cats"], by_title["note 4 about dogs"]
    # Search's "More like" query, ids typed on Search and on Analogies, a Concepts run on chosen ids
    at = _app("tab", "precomputed:emb", "pages/search.py",
              search_query_ids=[gone], search_item_input=f"item:{gone} {kept}",
              ana_plus=f"item:{gone}\na cat", ana_minus=f"item:{kept}",
              concepts_params={"workspace": "tab", "model": "precomputed:emb", "ids": [gone, kept]})
    assert not at.exception, at.exception
    assert any(s.startswith("More like 1 item") for s in _plain(at.markdown)), "the query before the deletion"

    at.switch_page("pages/data.py").run()
    at.text_input(key="items_query").input("note 3").run()
    _button(at, "Delete the 1 item the filter shows…").click().run()
    _button(at, "Delete").click().run()
    assert not at.exception and not at.error, _plain(at.error)
    assert gone not in set(ws.items["id"])
    ss = at.session_state
    assert ss["search_query_ids"] == []
    assert ss["search_item_input"] == kept
    assert ss["ana_plus"] == "a cat" and ss["ana_minus"] == f"item:{kept}"  # the kept item stays
    assert ss["concepts_params"] is None  # its images changed: Find concepts again

    at.switch_page("pages/search.py").run()
    assert not at.exception, at.exception
    assert not at.error, _plain(at.error)  # no "term 'item:…' is not in workspace" on every visit
    assert not any(s.startswith("More like") for s in _plain(at.markdown))
    assert at.text_input(key="search_item_input").value == kept


def test_search_drops_query_items_deleted_elsewhere(home, tmp_path):
    """Items deleted outside this session (another tab, the CLI) leave the query on the next run."""
    ws = _vectors_workspace("tab", tmp_path)
    ids = ws.items["id"].tolist()
    at = _app("tab", "precomputed:emb", "pages/search.py", search_query_ids=ids[:2])
    assert any(s.startswith("More like 2 items") for s in _plain(at.markdown))
    ws.delete_items([ids[0]])
    at.run()
    assert not at.exception and not at.error, _plain(at.error)
    assert at.session_state["search_query_ids"] == [ids[1]]
    assert any("deleted are left out" in c for c in _plain(at.caption))


def test_deleting_the_workspace_takes_its_own_model_along(home, tmp_path):
    _vectors_workspace("tab", tmp_path)
    core.Workspace(core.workspace_path("notes")).ingest(texts=["a cat", "a dog"])  # no vectors at all
    at = _app("tab", "precomputed:emb", "pages/data.py")
    assert any("is this workspace's own vectors" in i for i in _plain(at.info))
    at.text_input(key="delete_ws_name").input("tab").run()
    _button(at, "Delete workspace").click().run()
    assert not at.exception and not at.error, _plain(at.error)
    assert at.session_state["workspace"] == "notes"
    assert at.session_state["model"] == "demo"  # precomputed:emb meant nothing outside 'tab'
    assert at.sidebar.selectbox(key="_model_select").value == "demo"
    assert not [b for b in at.button if "precomputed" in b.label]
    assert not any("will be left out" in c for c in _plain(at.caption))
    assert any(b.label == "Embed with demo" for b in at.button)


def test_deleting_the_workspace_lands_on_a_model_with_vectors(demo_home, tmp_path):
    _vectors_workspace("tab", tmp_path)
    at = _app("tab", "precomputed:emb", "pages/data.py")
    at.text_input(key="delete_ws_name").input("tab").run()
    _button(at, "Delete workspace").click().run()
    assert not at.exception and not at.error, _plain(at.error)
    assert at.session_state["workspace"] == "demo" and at.session_state["model"] == "demo"
    models = next(d.value for d in at.dataframe if "coverage" in d.value.columns)
    assert list(models["model"]) == ["demo"]


def test_a_tables_own_vectors_are_not_offered_for_embedding(home, tmp_path):
    _vectors_workspace("tab", tmp_path)
    at = _app("tab", "precomputed:emb", "pages/data.py")
    assert not at.exception, at.exception
    [note] = [i for i in _plain(at.info) if "own vectors" in i]
    assert "came with the data (8 of 8 items have one)" in note
    assert not any("will be left out" in c for c in _plain(at.caption))
    assert not [b for b in at.button if b.label.startswith("Embed with")]
    assert not [c for c in at.checkbox if c.key == "embed_refresh"]
    models = next(d.value for d in at.dataframe if "coverage" in d.value.columns)
    assert list(models["coverage"]) == ["8/8"]


def test_switching_from_a_textless_model_draws_the_query_box_of_the_radio(demo_home, tmp_path):
    _vectors_workspace("tab", tmp_path)
    at = _app("tab", "precomputed:emb", "pages/search.py")
    assert at.radio(key="search_mode").value == "Items"  # this model encodes no text
    assert [t for t in at.text_input if t.key == "search_item_input"]
    at.sidebar.selectbox(key="_ws_select").select("demo").run()
    assert not at.exception, at.exception
    assert at.session_state["model"] == "demo"
    assert at.radio(key="search_mode").value == "Text"
    keys = {t.key for t in at.text_input}
    assert "search_text" in keys and "search_item_input" not in keys  # what is drawn matches the radio
    assert "mode" not in at.query_params


def test_a_query_and_the_maps_toggles_stay_with_their_workspace(demo_home):
    shutil.copytree(demo_home / "demo", demo_home / "demo2")
    at = _app("demo", "demo", "pages/search.py")
    at.text_input(key="search_text").input("a red zebra").run()
    assert not at.exception, at.exception
    assert any("zebra" in w for w in _plain(at.warning)), "the unknown word is flagged where it was typed"
    assert at.query_params["q"] in ("a red zebra", ["a red zebra"])
    at.session_state["map_pairs"] = True
    at.session_state["map_density"] = True

    at.sidebar.selectbox(key="_ws_select").select("demo2").run()
    assert not at.exception, at.exception
    assert at.session_state["workspace"] == "demo2"
    assert at.text_input(key="search_text").value == ""
    assert not any("zebra" in w for w in _plain(at.warning)), "nothing ran before the user typed"
    assert not [d for d in at.dataframe if "rank" in d.value.columns], "no results of the old query"
    assert "q" not in at.query_params
    assert "map_pairs" not in at.session_state and "map_density" not in at.session_state
    at.switch_page("pages/map.py").run()
    assert not at.exception, at.exception
    assert at.toggle(key="map_pairs").value is False and at.toggle(key="map_density").value is False

    # back in the first workspace the page starts afresh too (its URL copy went with the switch)
    at.sidebar.selectbox(key="_ws_select").select("demo").run()
    at.switch_page("pages/search.py").run()
    assert at.text_input(key="search_text").value == ""
