"""`jointscope app`: the web app's `streamlit run` command line and the subcommand that runs it."""
from __future__ import annotations

import argparse
import os
import sys

from .common import CLIError, command, log

# ---- app ----------------------------------------------------------------------------------------
# The settings of .streamlit/config.toml that matter, as `streamlit run` flags: an installed package runs
# from any folder, where Streamlit would not find that file (tests/unit/test_package.py checks they agree).
# server.address, server.port and browser.serverAddress come from --host / --port.
APP_FLAGS = {
    "server.headless": "true",
    "server.maxUploadSize": "1024",
    "server.enableXsrfProtection": "true",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "minimal",
    "theme.base": "light",
}


def app_script():
    """The web app's app.py: core/_app/app.py in an installed package (pyproject.toml), else the checkout's."""
    from pathlib import Path

    here = Path(__file__).resolve().parents[1]  # core/ (this file is core/cli/serve.py)
    for path in (here / "_app" / "app.py", here.parent / "app.py"):
        if path.is_file() and path.with_name("pages").is_dir():
            return path
    raise CLIError(f"the web app (app.py + pages/) is neither in {here / '_app'} nor beside {here}; "
                   "reinstall jointscope (pip install .) or run it from a checkout (make run)")


def app_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The `streamlit run` command line of ``jointscope app``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # where a browser on this computer connects
    flags = {**APP_FLAGS, "server.address": host, "server.port": str(port), "browser.serverAddress": shown}
    return [sys.executable, "-m", "streamlit", "run", str(app_script()),
            *(x for k, v in flags.items() for x in (f"--{k}", v))]


def _app_configure(p):
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this computer only; 0.0.0.0 exposes the app to the "
                        "network, see docs/security.md)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.epilog = ("Runs `streamlit run` on the packaged app.py, headless, without usage statistics, with the "
                "settings of the project's .streamlit/config.toml. Workspaces are found under $JOINTSCOPE_HOME "
                "(default ./workspaces). Stop it with Ctrl-C.")


def _app(args):
    import importlib.util

    if not 0 < args.port < 65536:
        raise argparse.ArgumentTypeError(f"--port must be 1..65535; got {args.port}")
    if importlib.util.find_spec("streamlit") is None:
        raise CLIError("streamlit is not installed; pip install 'streamlit>=1.40,<2'")
    cmd = app_command(args.host, args.port)
    log.info("running %s", " ".join(cmd))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)  # the server replaces this process: Ctrl-C and SIGTERM reach it directly
    import subprocess

    proc = subprocess.Popen(cmd)
    try:
        raise SystemExit(proc.wait())
    except KeyboardInterrupt:  # the server got the Ctrl-C too
        raise SystemExit(proc.wait()) from None


_app.configure = _app_configure
_app.json = False  # a server: no --json
command("app", "start the web app (Streamlit) on http://127.0.0.1:8501")(_app)
