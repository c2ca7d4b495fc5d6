"""`pip install .` gives a working Jointscope: the wheel holds core/, the assets (core/_assets, without
assets/demo/train_state/) and the web app (core/_app); installed, `jointscope models` finds the bundled
`demo` model, `jointscope demo` builds a workspace and `jointscope app` serves the packaged app.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from core.cli import app_command, app_script, main

from helpers import free_port, stop_process, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


# ---- quick: the `app` command line ----------------------------------------------------------------
def test_app_flags_are_the_streamlit_config():
    """`jointscope app` passes every setting of .streamlit/config.toml as a flag (an installed package
    runs from folders without that file); --host / --port replace the address and port."""
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    want = {f"{section}.{k}": str(v).lower() if isinstance(v, bool) else str(v)
            for section, opts in cfg.items() for k, v in opts.items()}
    cmd = app_command()
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(app_script())]
    assert app_script() in (ROOT / "app.py", Path(sys.modules["core"].__file__).parent / "_app" / "app.py")
    flags = cmd[5:]
    assert all(f.startswith("--") for f in flags[::2])
    assert dict(zip((f[2:] for f in flags[::2]), flags[1::2])) == want
    custom = dict(zip(app_command("10.1.2.3", 9000)[5::2], app_command("10.1.2.3", 9000)[6::2]))
    assert (custom["--server.address"], custom["--server.port"], custom["--browser.serverAddress"]) == \
        ("10.1.2.3", "9000", "10.1.2.3")
    exposed = dict(zip(app_command("0.0.0.0")[5::2], app_command("0.0.0.0")[6::2]))
    assert (exposed["--server.address"], exposed["--browser.serverAddress"]) == ("0.0.0.0", "127.0.0.1")


def test_app_help_and_usage_errors(capsys):
    assert main(["app", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--host" in out and "127.0.0.1" in out and "--json" not in out
    assert main(["app", "--json"]) == 2  # a server prints no JSON
    assert main(["app", "--port", "0"]) == 2
    assert "--port must be" in capsys.readouterr().err


# ---- slow: build the wheel, install it elsewhere, run it -----------------------------------------
APP_CHECK = """
import json, sys
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest
from core.cli import app_script

orig = PagesManager.__init__  # as tests/app/conftest.py: run the router the way the server does
def init(self, *a, **k):
    orig(self, *a, **k)
    PagesManager.uses_pages_directory = False
PagesManager.__init__ = init
at = AppTest.from_file(str(app_script()), default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
titles = [t.value for t in at.title]
at.switch_page("pages/search.py").run()
assert not at.exception, [e.value for e in at.exception]
print(json.dumps({"app": str(app_script()), "titles": titles + [t.value for t in at.title],
                  "sidebar": [s.label for s in at.sidebar.selectbox]}))
"""


def _checkout_copy(dst: Path) -> Path:
    """The checkout's files (tracked + untracked, not ignored) copied to ``dst``: the build neither
    writes build/ into the shared checkout nor depends on what is ignored there."""
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.mark.slow  # builds and installs a wheel, then runs the CLI, AppTest and a server from it
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs(tmp_path):
    t0 = time.monotonic()
    src = _checkout_copy(tmp_path / "src")
    state = src / "assets" / "demo" / "train_state"  # a training run's folder: must not ship
    state.mkdir(parents=True, exist_ok=True)
    (state / "checkpoint.pt").write_bytes(b"not shipped")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("jointscope-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [n for n in names if "train_state" in n]
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "core", "assets", "pages", "app.py"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    want = set()
    for rel in tracked:
        if rel.startswith("core/") and rel.endswith((".py", ".json", ".txt")):
            want.add(rel)  # every module of every subpackage: pyproject.toml lists the packages by name
        elif rel.startswith("assets/"):
            want.add("core/_assets/" + rel.removeprefix("assets/"))
        elif rel == "app.py" or (rel.startswith("pages/") and rel.endswith(".py")):
            want.add("core/_app/" + rel)
    assert {"core/_assets/demo/open_clip_model.safetensors", "core/_assets/demo/known_words.txt"} <= want
    assert sorted(want - names) == []

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, cwd=tmp_path)
    run_dir = tmp_path / "elsewhere"  # outside the checkout: nothing of it is importable from here
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JOINTSCOPE_ASSETS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), JOINTSCOPE_HOME=str(tmp_path / "home"), JOINTSCOPE_AUTODEMO="0",
               PYTHONUNBUFFERED="1")

    def py(*args, timeout=300) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, *args], cwd=run_dir, env=env, capture_output=True, text=True,
                             timeout=timeout)
        assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stderr[-3000:]}"
        return res

    where = json.loads(py("-c", "import json, core, core.encoders as e; "
                                "print(json.dumps([core.__file__, str(e.ASSETS_DIR)]))").stdout)
    assert [Path(p).is_relative_to(site) for p in where] == [True, True], where
    assert Path(where[1]) == site / "core" / "_assets"

    models = {m["id"]: m for m in json.loads(py("-m", "core", "models", "--json").stdout)}
    assert models["demo"]["available"] is True

    ws = tmp_path / "ws"
    doc = json.loads(py("-m", "core", "demo", str(ws), "--n", "24", "--json").stdout)
    assert Path(doc["path"]) == ws and doc["items"] > 0 and "demo" in doc["models"]

    page = json.loads(py("-c", APP_CHECK).stdout)  # the packaged router and pages run (AppTest)
    assert Path(page["app"]) == site / "core" / "_app" / "app.py"
    assert page["titles"] == ["Map", "Search"] and page["sidebar"] == ["Workspace", "Model"]

    port = free_port()
    log_path = tmp_path / "app.log"
    with open(log_path, "w+b") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core", "app", "--port", str(port)], cwd=run_dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", proc, log, "jointscope app")
            cmdline = Path(f"/proc/{proc.pid}/cmdline")
            if cmdline.exists():  # Linux: `jointscope app` became the server, running the packaged app.py
                assert str(site / "core" / "_app" / "app.py") in cmdline.read_bytes().decode().split("\0")
        finally:
            stop_process(proc)
    print(f"wheel built, installed and run in {time.monotonic() - t0:.1f} s")
