"""AppTest checks of what the app keeps and chooses for the user: the workspace and model in the URL,
and the model that has vectors (after an import of a table's own vectors, after a workspace change, and
on a page whose chosen model has none)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

import core

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 90


def _plain(elements) -> list[str]:
    """Texts of alerts as the user reads them (ui.plain escapes Markdown with backslashes)."""
    return [e.value.replace("\\", "") for e in elements]


def _vectors_table(path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    pd.DataFrame({"title": [f"note {i} about {'cats' if i % 2 else 'dogs'}" for i in range(n)],
                  "emb": [json.dumps(rng.normal(size=5).round(4).tolist()) for _ in range(n)]}
                 ).to_csv(path, index=False)
    return path


def test_a_link_opens_its_workspace_and_model(home):
    core.Workspace(core.workspace_path("alpha")).ingest(texts=["one", "two"])
    core.Workspace(core.workspace_path("beta")).ingest(texts=["three"])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["ws"] = "beta"
    at.query_params["model"] = "minilm"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["workspace"] == "beta" and at.session_state["model"] == "minilm"
    assert at.sidebar.selectbox(key="_ws_select").value == "beta"
    # the sidebar's choice goes back into the URL
    at.sidebar.selectbox(key="_ws_select").select("alpha").run()
    assert at.query_params["ws"] in ("alpha", ["alpha"])

    missing = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    missing.query_params["ws"] = "<b>gone</b>"
    missing.run()
    assert not missing.exception, missing.exception
    assert missing.session_state["workspace"] == "alpha"  # the first one, as without a link
    assert any("The link names workspace <b>gone</b>, which does not exist here" in i for i in _plain(missing.info))


def test_importing_a_tables_vectors_switches_to_their_model(home, tmp_path):
    core.Workspace(core.workspace_path("mine"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "mine"
    at.session_state["model"] = "demo"
    at.run()
    at.switch_page("pages/data.py").run()
    table = _vectors_table(tmp_path / "notes.csv")
    [uploader] = [u for u in at.get("file_uploader") if u.key.startswith("upload_")]
    uploader.set_value((table.name, table.read_bytes(), "text/csv")).run()
    [imp] = [b for b in at.button if b.label == "Import"]
    imp.click().run()
    assert not at.exception, at.exception
    assert at.session_state["model"] == "precomputed:emb"
    assert any(i.startswith("Switched the model to precomputed:emb after the import: mine has 12 vectors for it "
                            "and none for demo") for i in _plain(at.info))
    assert at.sidebar.selectbox(key="_model_select").value == "precomputed:emb"
    assert any(m.startswith("Import: 12 added") for m in _plain(at.success))
    # the next files wait in the (fresh) uploader: the old report goes away
    [uploader] = [u for u in at.get("file_uploader") if u.key.startswith("upload_")]
    uploader.set_value(("more.txt", b"a new line\n", "text/plain")).run()
    assert not any(m.startswith("Import:") for m in _plain(at.success))


def test_pages_name_the_models_that_have_vectors_and_switch(home, tmp_path):
    ws = core.Workspace(core.workspace_path("mine"))
    assert not ws.ingest([_vectors_table(tmp_path / "t.csv", n=8)]).errors
    assert set(ws.models()) == {"precomputed:emb"}
    core.Workspace(core.workspace_path("other")).ingest(texts=["x"])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["workspace"] = "other"
    at.session_state["model"] = "minilm"
    at.run()
    # changing the workspace in the sidebar picks a model with vectors there, and says so
    at.sidebar.selectbox(key="_ws_select").select("mine").run()
    assert not at.exception, at.exception
    assert at.session_state["model"] == "precomputed:emb"
    assert any(i.startswith("Switched the model to precomputed:emb for this workspace") for i in _plain(at.info))

    # a page whose chosen model has no vectors here names the ones that do, with a button each
    at.session_state["model"] = "minilm"
    at.run()
    [info] = [i for i in _plain(at.info) if i.startswith("No vectors for minilm")]
    assert "Models with vectors here: precomputed:emb (8)" in info
    [use] = [b for b in at.button if b.label.replace("\\", "") == "Use precomputed:emb"]
    use.click().run()
    assert not at.exception, at.exception
    assert at.session_state["model"] == "precomputed:emb"
    assert not [i for i in _plain(at.info) if i.startswith("No vectors for")]
