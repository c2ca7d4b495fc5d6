"""Shared browser-test plumbing: a streamlit server on a free loopback port and Debian chromium."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, OfflineBrowser, e2e_marks, free_port, stop_process, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items) -> None:
    """Every test of tests/e2e is a browser test: one whose module forgot ``pytestmark = e2e_marks()`` still
    gets its marks (so ``-m "not e2e"`` never starts a browser)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.resolve().is_relative_to(here) and item.get_closest_marker("e2e") is None:
            for mark in e2e_marks():
                item.add_marker(mark)


@contextlib.contextmanager
def streamlit_server(home: Path, log_path: Path, *, script: str = "app.py", env: dict | None = None):
    """Run `streamlit run SCRIPT` (default app.py) with JOINTSCOPE_HOME=home (and ``env``) on 127.0.0.1;
    yields the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, JOINTSCOPE_HOME=str(home), PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "w+b") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(base, proc, log, f"streamlit ({script})")
            yield base
        finally:
            stop_process(proc)


@pytest.fixture(scope="session")
def serve_home():
    """:func:`streamlit_server` for modules that build their own JOINTSCOPE_HOME:
    ``with serve_home(home, log_path) as base: ...``."""
    return streamlit_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with an empty JOINTSCOPE_HOME; yields the base URL."""
    with streamlit_server(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, demo_ws_template):
    """A server whose JOINTSCOPE_HOME holds a copy of the demo workspace; yields (base URL, home)."""
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(demo_ws_template.path, home / "demo")
    with streamlit_server(home, tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base, home


@pytest.fixture(scope="module")
def browser():
    """Debian chromium (an :class:`helpers.OfflineBrowser`): every request that would leave the machine is
    aborted, and the module's tests fail at teardown if any page tried one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = OfflineBrowser(p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS))
        try:
            yield b
        finally:
            b.browser.close()
        assert b.attempts == [], f"pages tried to reach other machines: {sorted(set(b.attempts))[:10]}"
