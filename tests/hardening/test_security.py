"""Security properties that do not need a browser (the browser ones are tests/e2e/test_xss_browser.py):

- the server binds 127.0.0.1 unless told otherwise (config parsed by Streamlit itself, and a real server
  started with no address flag listens on loopback only);
- uploads are capped (server.maxUploadSize) and the README says how to change the cap and how to expose
  the server deliberately;
- workspace names (library and sidebar) and uploaded file names cannot escape their root;
- checkpoints are never unpickled with code: safetensors or torch.load(weights_only=True) only
  (the dynamic proof is tests/unit/test_encoders.py::test_pickle_checkpoint_with_code_is_refused and the
  corpus case pickle_checkpoint_upload);
- pages never render HTML (no unsafe_allow_html, st.html or components.html) and CSV downloads are
  safe for spreadsheets.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import core

from helpers import free_port, stop_process, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".streamlit" / "config.toml"
README = (ROOT / "README.md").read_text(encoding="utf-8")

# The AppTest fixture that runs app.py the way the server does (tests/app/conftest.py), reused as is.
_spec = importlib.util.spec_from_file_location("_app_conftest", ROOT / "tests" / "app" / "conftest.py")
_app_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_app_conftest)
navigation_mode = _app_conftest.navigation_mode


# ---- server address and upload cap --------------------------------------------------------------------
def test_config_binds_loopback_and_caps_uploads():
    cfg = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["browser"]["serverAddress"] == "127.0.0.1"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert 1 <= cfg["server"]["maxUploadSize"] <= 4096  # MB per file: set, and not "unlimited"
    # `make run` says the same on its command line
    run = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "--server.address 127.0.0.1" in run and "0.0.0.0" not in run


def test_streamlit_reads_the_config_as_intended():
    code = ("import streamlit.config as c; c.get_config_options(force_reparse=True); "
            "print(c.get_option('server.address'), c.get_option('server.maxUploadSize'), "
            "c.get_option('server.enableXsrfProtection'), c.get_option('client.showErrorDetails'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    address, cap, xsrf, details = out.stdout.split()
    cfg = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert (address, int(cap), xsrf) == ("127.0.0.1", cfg["server"]["maxUploadSize"], "True")
    assert details == "none"  # tracebacks are never sent to the browser


def test_readme_says_how_to_expose_and_how_to_change_the_cap():
    security = README.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert "127.0.0.1" in security and "--server.address 0.0.0.0" in security
    assert "maxUploadSize" in security
    cfg = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert f"{cfg['server']['maxUploadSize']} MB" in security


def _listening(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port`` (Linux /proc/net), as text."""
    out = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    out.append(socket.inet_ntop(socket.AF_INET6, words))
    return out


def _other_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (from /proc/net/fib_trie), if any."""
    trie = Path("/proc/net/fib_trie")
    if not trie.exists():
        return []
    found = re.findall(r"\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL", trie.read_text())
    return sorted({a for a in found if not a.startswith("127.")})


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_server_started_without_address_flag_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = dict(os.environ, JOINTSCOPE_HOME=str(tmp_path))
    with open(tmp_path / "server.log", "w+b") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", proc, log, "streamlit (app.py, no address flag)")
            assert _listening(port) == ["127.0.0.1"]
            for addr in _other_addresses():
                with socket.socket() as s, pytest.raises(OSError):
                    s.settimeout(2)
                    s.connect((addr, port))
        finally:
            stop_process(proc)


# ---- names cannot escape their root ---------------------------------------------------------------------
BAD_NAMES = ["..", ".", "../escape", "a/../../b", "/etc", "/etc/passwd", "a/b", "a\\b", "C:evil", "x\x00y",
             "", " ", ".hidden", "-rf", "~root", "abc\n", "\nabc", "a" * 65, "é", "name with space", "..."]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_workspace_name_cannot_escape_the_root(name, tmp_path):
    with pytest.raises(ValueError, match="workspace name must be"):
        core.workspace_path(name, tmp_path)


@pytest.mark.parametrize("name", ["demo", "my-ws_1.0", "A" * 64, "x._y"])
def test_good_workspace_names_stay_under_the_root(name, tmp_path):
    path = core.workspace_path(name, tmp_path)
    assert path.parent == tmp_path and path.name == name


def test_sidebar_refuses_escaping_names(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("JOINTSCOPE_HOME", str(home))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    for name in ["../escape", f"{tmp_path}/escape_abs", "..", "a/../../escape2", "x\x00y", "abc\ndef"]:
        at.sidebar.text_input(key="_ws_new").input(name)
        at.sidebar.button[0].click().run()
        assert not at.exception, name
        assert any("workspace name must be" in e.value for e in at.sidebar.error), name
        assert at.session_state["workspace"] is None
    assert list(home.iterdir()) == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "escape_abs").exists()


def test_uploaded_file_names_cannot_choose_where_files_land(tmp_path, monkeypatch):
    """The Data page keeps only an upload's own name: '../', absolute and Windows paths land in its temp folder."""
    import tempfile

    from PIL import Image
    from streamlit.testing.v1 import AppTest

    # the page's temp folder under tmp_path: a name that escaped it would land in tmp_path or its parent
    (tmp_path / "tmp" / "sys").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp" / "sys"))
    home = tmp_path / "home"
    monkeypatch.setenv("JOINTSCOPE_HOME", str(home))
    core.Workspace(core.workspace_path("names", home))

    def png(colour) -> bytes:
        import io

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
        return buf.getvalue()
    names = ["../../escape_up.png", f"{tmp_path}/escape_abs.png", "..\\..\\escape_win.png",
             "a/b/../../../escape_mid.png", "sub/dir/inner.png"]
    at = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=60)
    at.session_state["workspace"] = "names"
    at.run()
    at.file_uploader[0].set_value([(n, png((40 * i, 10, 10)), "image/png") for i, n in enumerate(names)])
    at.run()
    [imp] = [b for b in at.button if b.label == "Import"]
    imp.click().run()
    assert not at.exception
    items = core.Workspace(home / "names", create=False).items
    assert sorted(items["source"]) == sorted(["escape_up.png", "escape_abs.png", "escape_win.png",
                                              "escape_mid.png", "inner.png"])
    for where in (tmp_path / "tmp" / "sys", tmp_path / "tmp", tmp_path, ROOT):
        assert not list(where.glob("escape_*.png")), where


# ---- checkpoints --------------------------------------------------------------------------------------
def test_core_never_unpickles():
    """Every torch.load in core passes weights_only=True; no pickle/joblib loads, no allow_pickle=True."""
    loads = []
    for path in (ROOT / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if fn.endswith("torch.load") or fn == "load_state_dict_from_url":
                loads.append(path.name)
                assert kw.get("weights_only") == "True", f"{path.name}:{node.lineno} {ast.unparse(node)}"
            assert not re.fullmatch(r"(pickle|cPickle|joblib|dill|cloudpickle)\.loads?", fn), \
                f"{path.name}:{node.lineno} {fn}"
            assert kw.get("allow_pickle") != "True", f"{path.name}:{node.lineno}"
            if "weights_only" in kw:
                assert kw["weights_only"] == "True", f"{path.name}:{node.lineno}"
    assert loads, "the scan found no torch.load at all; is it still looking in the right place?"


# ---- pages never render user text as HTML; downloads are safe for spreadsheets ------------------------
def test_pages_never_render_html():
    """No page renders HTML; the one component (the WebGL map, pages/ui/scatter.py) is Jointscope's own bundle,
    whose source puts user text (hover captions, cluster names) into the page as text only."""
    hits = []
    component = ROOT / "pages" / "ui" / "scatter.py"
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]:  # pages/ui/ included
        src = path.read_text(encoding="utf-8")
        patterns = ["unsafe_allow_html", "st.html(", "components.html(", "components.v1"]
        if path != component:
            patterns.append("st.components")
        hits += [f"{path.name}: {pattern}" for pattern in patterns if pattern in src]
    assert not hits
    sources = sorted((ROOT / "frontend" / "scatter" / "src").rglob("*.[jt]s"))
    assert sources, "the map component's source is missing"
    for path in sources:
        src = path.read_text(encoding="utf-8")
        for pattern in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert pattern not in src, f"{path.name}: {pattern}"
    bundle = (ROOT / "assets" / "scatter" / "scatter.js").read_text(encoding="utf-8")
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)[a-z0-9.-]+\.[a-z]{2,}/[^\s\"']*\.(js|css|woff2?)\b",
                         bundle), "the bundle loads code or fonts from another host"


def test_csv_downloads_neutralise_formulas():
    from core.export import safe_csv_bytes

    df = pd.DataFrame({"source": ["=cmd|' /C calc'!A0", "+1", "-2", "@x", "\t=y", "fine", None],
                       "score": [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0]})
    text = safe_csv_bytes(df).decode("utf-8")
    cells = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert cells[:6] == ["'=cmd|' /C calc'!A0", "'+1", "'-2", "'@x", " =y", "fine"] and cells[6] == ""
    assert [line.split(",")[1] for line in text.splitlines()[1:3]] == ["1.0", "-2.0"]  # numbers stay numbers
