"""Shared test setup: the repository root is importable (``pages.ui``, ``app``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The app builds the demo workspace on a first start; tests start from their own empty homes.
os.environ.setdefault("JOINTSCOPE_AUTODEMO", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _run_home(tmp_path_factory):
    """JOINTSCOPE_HOME for the whole run, in pytest's temporary folder: a test that sets no home of its own
    never touches ./workspaces or the user's workspaces, and two runs at once never share one."""
    home = tmp_path_factory.mktemp("run_home")
    before = os.environ.get("JOINTSCOPE_HOME")
    os.environ["JOINTSCOPE_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("JOINTSCOPE_HOME", None)
    else:
        os.environ["JOINTSCOPE_HOME"] = before


@pytest.fixture(scope="session")
def demo_ws_template(tmp_path_factory):
    """A demo-world workspace (400 images + their captions, embedded with `demo`), built once per run.

    Tests that change a workspace must copy it (see ``demo_ws``); tests that only read may use it.
    """
    from core.demo.workspace import create_demo_workspace

    return create_demo_workspace(tmp_path_factory.mktemp("demo_tpl") / "demo", n=400)


@pytest.fixture
def demo_ws(demo_ws_template, tmp_path):
    """A private copy of the demo-world workspace (safe to change)."""
    import shutil

    import core

    dst = tmp_path / "demo"
    shutil.copytree(demo_ws_template.path, dst)
    return core.Workspace(dst, create=False)


@pytest.fixture(scope="session")
def umap_warm():
    """umap-learn's numba kernels compiled once per test run (they take ~10-60 s cold)."""
    from core.projection import warm_up

    return warm_up()
