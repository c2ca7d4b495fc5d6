"""AppTest checks of the Streamlit app: the router with its sidebar, and every page file on its own.

Workspaces live in a temporary JOINTSCOPE_HOME; images are generated with PIL. The only real model
used is ``minilm`` (offline, shipped as a pip package), once, for the embed button.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 60  # the first run imports open_clip/torch to list the models (~5 s on 2 cores)


def png_bytes(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def filled(home) -> str:
    """A workspace 'w1' with 3 texts and 2 images."""
    ws = core.Workspace(core.workspace_path("w1"))
    (home / "in").mkdir()
    for name, colour in [("red.png", (220, 20, 20)), ("blue.png", (20, 20, 220))]:
        (home / "in" / name).write_bytes(png_bytes(colour))
    rep = ws.ingest([home / "in" / "red.png", home / "in" / "blue.png"],
                    texts=["a red square", "a blue circle", "**bold** [link](http://example.com)"])
    assert rep.added == 5 and not rep.errors
    return "w1"


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


TABLES = {"items_table": "thumb", "ingest_errors": "reason", "models_table": "coverage"}


def frame(at: AppTest, name: str):
    """The read-only table of a kind (items, errors, models), found by a column only it has."""
    col = TABLES[name]
    hits = [d.value for d in at.dataframe if d.editing_mode == "read_only" and col in d.value.columns]
    assert hits, f"no {name}; tables have columns {[list(d.value.columns) for d in at.dataframe]}"
    return hits[0]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


# ---- app.py: router + sidebar --------------------------------------------------------------------
def test_app_first_start_without_workspaces(home):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.session_state["workspace"] is None
    assert [t.value for t in at.title] == ["Map"]  # the app opens on the Map
    assert any("No workspace is open" in s for s in texts(at.info))
    labels = [s.label for s in at.sidebar.selectbox]
    assert labels == ["Workspace", "Model"]
    model_opts = at.sidebar.selectbox(key="_model_select").options
    assert model_opts[:2] == [o for o in model_opts if o.split(" ")[0] in ("demo", "minilm")]
    assert "minilm (offline)" in model_opts
    # every page of the router runs
    for name in ("data", "search", "analogies", "quality", "concepts"):
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, name
        assert any("No workspace is open" in s for s in texts(at.info)), name
        assert [s.label for s in at.sidebar.selectbox] == ["Workspace", "Model"]


def test_app_opens_demo_workspace_first(home):
    core.Workspace(core.workspace_path("alpha"))
    core.Workspace(core.workspace_path("demo"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.session_state["workspace"] == "demo"
    assert at.session_state["model"] == "demo"
    assert at.sidebar.selectbox(key="_ws_select").value == "demo"


def test_app_opens_first_workspace_otherwise(home):
    core.Workspace(core.workspace_path("zeta"))
    core.Workspace(core.workspace_path("alpha"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.session_state["workspace"] == "alpha"
    assert at.session_state["model"] is not None  # an offline model is offered at once


def test_sidebar_creates_workspace_and_rejects_bad_names(home):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.sidebar.text_input(key="_ws_new").input("../escape")
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert any("workspace name must be" in e for e in texts(at.sidebar.error))
    assert at.session_state["workspace"] is None
    assert not (home.parent / "escape").exists()

    at.sidebar.text_input(key="_ws_new").input("fresh")
    at.sidebar.button[0].click().run()
    assert not at.exception and not at.error
    assert at.session_state["workspace"] == "fresh"
    assert (home / "fresh" / "workspace.json").is_file()
    assert at.sidebar.selectbox(key="_ws_select").value == "fresh"
    assert [s.value for s in at.subheader][:3] == ["Add items", "Items", "Vectors"]

    # switching workspace in the sidebar changes the open one
    core.Workspace(core.workspace_path("other"))
    at.run()
    at.sidebar.selectbox(key="_ws_select").select("other").run()
    assert at.session_state["workspace"] == "other"


def test_sidebar_hub_models_checkbox(home):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    few = at.sidebar.selectbox(key="_model_select").options
    at.sidebar.checkbox(key="_show_hub").check().run()
    assert not at.exception
    many = at.sidebar.selectbox(key="_model_select").options
    assert len(many) > len(few)
    assert any(o.startswith("openclip:") and o.endswith("(download, needs a network)") for o in many)
    at.sidebar.selectbox(key="_model_select").select("minilm").run()
    assert at.session_state["model"] == "minilm"


# ---- Data page -----------------------------------------------------------------------------------
def test_data_page_lists_items(filled):
    at = page("data", workspace=filled, model="minilm")
    assert not at.exception
    assert [m.value for m in at.metric] == ["5", "2", "3", "0"]
    items = frame(at, "items_table")
    assert len(items) == 5
    assert {"thumb", "modality", "text", "source", "pair", "id"} <= set(items.columns)
    thumbs = items.loc[items["modality"] == "image", "thumb"]
    assert thumbs.str.startswith("data:image/webp;base64,").all()
    # markdown in user text is data in a table, never rendered
    assert "**bold** [link](http://example.com)" in set(items["text"])
    assert not any("bold" in m.value for m in at.markdown)

    at.selectbox(key="items_modality").select("image").run()
    assert len(frame(at, "items_table")) == 2
    at.selectbox(key="items_modality").select("all")
    at.text_input(key="items_query").input("CIRCLE").run()
    assert list(frame(at, "items_table")["text"]) == ["a blue circle"]
    assert any(b.label == "Embed with minilm" for b in at.button)


def test_data_page_upload_reports_per_item_errors(filled, home):
    at = page("data", workspace=filled, model="minilm")
    at.file_uploader[0].set_value([
        ("green.png", png_bytes((20, 200, 20)), "image/png"),
        ("red.png", png_bytes((220, 20, 20)), "image/png"),  # already there -> skipped
        ("broken.png", b"this is not a png", "image/png"),
        ("notes.txt", b"first note\nsecond note\n", "text/plain"),
    ])
    at.text_area[0].input("pasted one\n\npasted two")
    at.run()
    [imp] = [b for b in at.button if b.label == "Import"]
    imp.click().run()
    assert not at.exception
    assert any("5 added, 1 skipped (1 already in the workspace)" in w and "1 could not be read" in w
               for w in texts(at.warning))
    errs = frame(at, "ingest_errors")
    assert list(errs.columns) == ["source", "reason"]
    assert len(errs) == 1 and "broken.png" in errs["source"].iloc[0]
    assert len(frame(at, "items_table")) == 10
    ws = core.Workspace(core.workspace_path(filled), create=False)
    assert len(ws.items) == 10
    # the uploader and text area start empty again
    assert not at.text_area[0].value


def test_data_page_table_roles_editor(filled):
    at = page("data", workspace=filled, model="minilm")
    csv = b"caption,label,score\nhello world,greeting,0.5\ngood night,farewell,0.7\n"
    at.file_uploader[0].set_value(("captions.csv", csv, "text/csv"))
    at.run()
    assert not at.exception
    [editor] = at.data_editor
    roles = editor.value
    assert list(roles.columns) == ["column", "role", "sample"]
    detected = dict(zip(roles["column"], roles["role"]))
    assert detected["caption"] == "text"
    assert roles.loc[roles["column"] == "caption", "sample"].iloc[0] == "hello world"
    # the user overrides 'label' to ignore (edits are seeded through the editor's state)
    row = int(roles.index[roles["column"] == "label"][0])
    at.session_state[editor.key] = {"edited_rows": {row: {"role": "ignore"}}, "added_rows": [],
                                    "deleted_rows": []}
    [imp] = [b for b in at.button if b.label == "Import"]
    imp.click().run()
    assert not at.exception
    assert any("2 added" in s for s in texts(at.success))
    items = core.Workspace(core.workspace_path(filled), create=False).items
    assert {"hello world", "good night"} <= set(items["text"])
    assert "label" not in items.columns


def test_data_page_embed_with_minilm(home):
    ws = core.Workspace(core.workspace_path("txt"))
    ws.ingest([], texts=["a cat", "a dog", "a bird"])
    at = page("data", workspace="txt", model="minilm")
    assert at.button(key="embed").label == "Embed with minilm"
    at.button(key="embed").click().run(timeout=120)
    assert not at.exception
    assert any("3 embedded" in s for s in texts(at.success))
    assert ws.models()["minilm"] == {"dim": 384, "n": 3}
    models = frame(at, "models_table")
    assert models.to_dict("records") == [{"model": "minilm", "dim": 384, "vectors": 3, "coverage": "3/3"}]


def test_data_page_embed_with_a_model_that_fits_nothing_names_the_models_that_do(home, tmp_path):
    import numpy as np
    import pandas as pd

    table = tmp_path / "digits.csv"
    pd.DataFrame({f"px_{i}": np.random.default_rng(i).random(6) for i in range(4)}).to_csv(table, index=False)
    ws = core.Workspace(core.workspace_path("digits"))
    ws.ingest([table])
    at = page("data", workspace="digits", model="minilm")
    at.button(key="embed").click().run(timeout=120)
    assert not at.exception
    warned = [w.replace("\\", "") for w in texts(at.warning)]  # shown as plain text: Markdown escaped
    assert any("0 embedded" in w for w in warned), warned
    assert any("minilm encodes none of the items" in w and "precomputed:px (6 items)" in w for w in warned), warned


def test_data_page_embed_failure_is_one_line(filled):
    at = page("data", workspace=filled, model="no-such-model")
    at.button(key="embed").click().run()
    assert not at.exception
    [err] = texts(at.error)
    assert "unknown model id" in err and "\n" not in err


def test_data_page_offline_hub_model_fails_fast_in_one_whole_line(filled, monkeypatch, tmp_path):
    """A hub model whose weights were never downloaded, on a computer without the hub: one whole error."""
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = page("data", workspace=filled, model="openclip:ViT-B-32/laion2b_s34b_b79k")
    t0 = time.perf_counter()
    at.button(key="embed").click().run()
    assert time.perf_counter() - t0 < 10 and not at.exception
    [err] = texts(at.error)
    plain_err = err.replace("\\", "")  # the page escapes Markdown
    assert plain_err.startswith("openclip:ViT-B-32/laion2b_s34b_b79k: its weights") and "\n" not in err
    assert plain_err.endswith("use a local folder: openclip-local:DIR.") and "…" not in err, err


def test_data_page_without_workspace_offers_demo(home, monkeypatch):
    import core.demo

    real = core.demo.create_demo_workspace
    calls = []

    def small_demo(path, *, progress=None, **kw):
        calls.append(path)
        return real(path, n=8, model=None, progress=progress)

    monkeypatch.setattr(core.demo, "create_demo_workspace", small_demo)
    at = page("data")
    assert not at.exception
    assert at.session_state["workspace"] is None
    assert any("No workspace is open" in s for s in texts(at.info))
    [btn] = [b for b in at.button if b.label == "Load demo"]
    btn.click().run()
    assert not at.exception, at.exception
    assert calls and Path(calls[0]) == home / "demo"
    assert at.session_state["workspace"] == "demo" and at.session_state["model"] == "demo"
    assert [m.value for m in at.metric][:2] == ["16", "8"]


def test_missing_workspace_shows_error_not_traceback(home):
    at = page("data", workspace="gone", model="minilm")
    assert not at.exception
    assert any("does not exist" in e for e in texts(at.error))
    at = page("map", workspace="gone", model="minilm")
    assert not at.exception and at.error


# ---- helpers -------------------------------------------------------------------------------------
def test_plain_escapes_markdown():
    from pages.ui import plain

    s = plain("![x](http://e/t.png) :red[hi] <b>$x$</b>\nnext")
    assert re.search(r"(?<!\\)[\[\]()<>$:!*_`]", s) is None, s  # every markup character is escaped
    assert "\n" not in s


def test_data_page_paginates_long_lists(home):
    ws = core.Workspace(core.workspace_path("long"))
    ws.ingest([], texts=[f"caption number {i}" for i in range(450)])
    at = page("data", workspace="long", model="minilm")
    assert not at.exception
    assert len(frame(at, "items_table")) == 200
    assert any("rows 1–200 of 450" in c for c in texts(at.caption))
    at.number_input(key="items_page").set_value(3).run()
    assert len(frame(at, "items_table")) == 50
    at.text_input(key="items_query").input("number 1").run()  # 111 matches: one page, clamped
    assert not at.exception
    assert len(frame(at, "items_table")) == 111


def test_first_start_builds_and_opens_the_demo_workspace(home, monkeypatch):
    """Nothing chosen and no workspace at all: the app builds the demo (embedded with `demo`) and opens it."""
    import core.demo
    from pages.ui.cached import first_start_gate

    real = core.demo.create_demo_workspace
    gate_during_build = []

    def build(path, *, progress=None, **kw):
        gate_during_build.append(first_start_gate().is_set())
        return real(path, n=12, progress=progress, **kw)

    monkeypatch.setattr(core.demo, "create_demo_workspace", build)
    monkeypatch.setenv("JOINTSCOPE_AUTODEMO", "1")
    first_start_gate.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert at.session_state["workspace"] == "demo" and at.session_state["model"] == "demo"
    ws = core.Workspace(home / "demo", create=False)
    assert len(ws.items) == 24 and ws.models()["demo"]["n"] == 24
    # the UMAP warm-up waits for this gate: closed while the demo is built, open afterwards
    assert gate_during_build == [False] and first_start_gate().is_set()


def test_pages_warn_when_the_model_weights_changed_under_the_vectors(home, filled):
    """Vectors made with a checkpoint that has since been replaced (same model id): every page's header
    warns, until the Data page's "Embed everything again" re-embeds."""
    import streamlit as st

    from core.encoders import clear_encoder_cache

    from helpers import write_tiny_clip

    folder = write_tiny_clip(home / "ckpt", seed=0)
    model = f"openclip-local:{folder}"
    ws = core.Workspace(core.workspace_path(filled))
    ws.embed(model)
    at = page("search", workspace=filled, model=model)
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    write_tiny_clip(folder, seed=1)
    clear_encoder_cache()
    st.cache_resource.clear()  # a fresh app process after the update
    try:
        at = page("data", workspace=filled, model=model)
        warned = [w.value for w in at.warning if "made with other weights" in w.value]
        assert warned and warned[0].startswith("Stale vectors") and "Embed everything again" in warned[0]
        at.checkbox(key="embed_refresh").check()
        at.button(key="embed").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert not [w.value for w in at.warning if "made with other weights" in w.value]
        assert any("5 embedded, 0 already had vectors" in m.value for m in at.success), [m.value for m in at.success]
        assert core.Workspace(core.workspace_path(filled)).stale_vectors(model) is None
    finally:
        clear_encoder_cache()
