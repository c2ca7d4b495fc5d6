"""Fixtures shared by the AppTest files."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager


@pytest.fixture(autouse=True)
def navigation_mode(monkeypatch):
    """Run app.py / a page the way the server does once st.navigation has been called.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run and, because this project
    has a ``pages/`` folder, the legacy multipage mode then runs the page file alone on reruns
    (no sidebar). The server keeps the flag False after the first st.navigation call; mirror that.
    """
    orig = PagesManager.__init__

    def init(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty JOINTSCOPE_HOME for one test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("JOINTSCOPE_HOME", str(h))
    return h


@pytest.fixture
def demo_home(home, demo_ws_template) -> Path:
    """JOINTSCOPE_HOME holding a private copy of the demo workspace under the name 'demo'."""
    import shutil

    shutil.copytree(demo_ws_template.path, home / "demo")
    return home


@pytest.fixture
def items(demo_home):
    """The demo workspace's items, indexed by id."""
    import core

    return core.Workspace(demo_home / "demo", create=False).items.drop_duplicates("id").set_index("id", drop=False)
