"""AppTest checks of deleting on the Data page: the items a filter shows (with a confirmation that says
how many of which modality go) and the whole workspace (after typing its name)."""
from __future__ import annotations

import test_pages
from streamlit.testing.v1 import AppTest
from test_pages import APP, TIMEOUT, frame, texts

import core

filled = test_pages.filled  # the fixture: workspace 'w1' with 3 texts and 2 images


def _app(workspace: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["workspace"] = workspace
    at.session_state["model"] = "minilm"
    at.run()
    return at.switch_page("pages/data.py").run()  # the app opens on the Map


def _shown(elements) -> list[str]:
    """Texts of alerts as the user reads them (ui.plain escapes Markdown with backslashes)."""
    return [e.value.replace("\\", "") for e in elements]


def _button(at: AppTest, label: str):
    [b] = [b for b in at.button if b.label == label]
    return b


def test_data_page_deletes_the_filtered_items_after_confirmation(filled, home):
    ws = core.Workspace(core.workspace_path(filled), create=False)
    red = ws.items[ws.items["source"].str.contains("red")]["id"].tolist() + \
        ws.items[ws.items["text"] == "a red square"]["id"].tolist()
    red_image = ws.abspath(ws.item(red[0])["image"])
    at = _app(filled)
    assert [m.value for m in at.metric] == ["5", "2", "3", "0"]
    assert _button(at, "Delete all 5 items…")
    at.text_input(key="items_query").input("red").run()
    assert len(frame(at, "items_table")) == 2

    _button(at, "Delete the 2 items the filter shows…").click().run()  # first click only asks
    assert not at.exception and len(ws.items) == 5
    [ask] = [w for w in _shown(at.warning) if "cannot be undone" in w]
    assert "Delete 2 items (1 image, 1 text) from workspace w1" in ask
    _button(at, "Cancel").click().run()
    assert len(ws.items) == 5 and not [w for w in _shown(at.warning) if "cannot be undone" in w]

    _button(at, "Delete the 2 items the filter shows…").click().run()
    _button(at, "Delete").click().run()
    assert not at.exception and not at.error
    assert sorted(ws.items["text"].dropna()) == ["**bold** [link](http://example.com)", "a blue circle"]
    assert not set(red) & set(ws.items["id"]) and not red_image.exists()
    assert any("Deleted 2 items (1 image, 1 text); 3 left." in s for s in _shown(at.success))
    assert [m.value for m in at.metric] == ["3", "1", "2", "0"]  # the counts are redrawn at once
    assert any(c.startswith("Workspace w1: 3 items (1 image, 2 texts)") for c in _shown(at.caption)), "the header"


def test_data_page_deletes_the_workspace_after_its_name_is_typed(filled, home):
    core.Workspace(core.workspace_path("w2")).ingest(texts=["left alone"])
    at = _app(filled)
    button = _button(at, "Delete workspace")
    assert button.disabled
    at.text_input(key="delete_ws_name").input("w2").run()  # another workspace's name does not do
    assert _button(at, "Delete workspace").disabled
    at.text_input(key="delete_ws_name").input(filled).run()
    _button(at, "Delete workspace").click().run()
    assert not at.exception and not at.error
    assert not (home / filled).exists() and core.list_workspaces() == ["w2"]
    assert at.session_state["workspace"] == "w2"
    assert at.sidebar.selectbox(key="_ws_select").value == "w2"
    assert any("Deleted workspace w1 (5 items)." in s for s in _shown(at.success))
    assert [m.value for m in at.metric][:1] == ["1"]

    at.text_input(key="delete_ws_name").input("w2").run()
    _button(at, "Delete workspace").click().run()
    assert not at.exception and not at.error
    assert at.session_state["workspace"] is None and core.list_workspaces() == []
    assert any("No workspace is open" in s for s in texts(at.info))
