"""Test helpers: a tiny open_clip model on disk, generated images."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image

# A tiny CLIP: random weights, real open_clip classes, default tokenizer (vocab 49408).
TINY_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a tiny randomly initialised open_clip CLIP as an openclip-local folder (safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CFG["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CFG))
    return folder




def free_port() -> int:
    """A loopback port that nothing listens on (bound once by the OS, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_png(path: Path, colour=(200, 30, 30), size=(24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# Debian's chromium, driven by Playwright in the browser tests (its own browser download does not work here)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def e2e_marks() -> list:
    """``pytestmark`` of a browser test module: marked e2e, skipped without Debian chromium, and given 600 s
    (a module's first test also starts its server and browser, and may build the demo workspace)."""
    import pytest

    return [pytest.mark.e2e, pytest.mark.timeout(600),
            pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                                             "(run `make chromium`)")]


def wait_until_healthy(base: str, proc: subprocess.Popen, log, what: str, timeout: float = 60) -> None:
    """Poll ``base``/_stcore/health until the server started by ``proc`` answers "ok"; fail the test with
    the tail of its ``log`` (an open binary file) when it exits or ``timeout`` seconds pass."""
    import time
    import urllib.request

    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"{what} did not start (exit {proc.poll()}):\n{log.read().decode()[-3000:]}")
        time.sleep(0.3)


def wait_until(check, *, timeout: float = 30.0, interval: float = 0.1, what: str = "the condition", page=None,
               fail: bool = True):
    """Call ``check()`` every ``interval`` seconds until it returns a truthy value, and return that value; once
    ``timeout`` seconds have passed, fail the test (naming ``what`` and the last value), or with ``fail=False``
    return the last value (the caller's own assert then says what differs). With a Playwright ``page`` the
    pause between calls is ``page.wait_for_timeout`` (Playwright delivers a page's events only inside its own
    calls). Exceptions of ``check`` propagate."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            if not fail:
                return value
            raise AssertionError(f"{what}: not reached within {timeout:g} s (last value {value!r})")
        if page is not None:
            page.wait_for_timeout(interval * 1000)
        else:
            time.sleep(interval)


# Streamlit's stApp element carries the script's run state (notRunning, running, rerunRequested, ...);
# true once it has been notRunning for ``ms`` milliseconds without a break (a rerun that a widget has just
# asked for starts within that)
_APP_IDLE_JS = """(ms) => {
  const app = document.querySelector('[data-testid=stApp]');
  const now = performance.now();
  if (!app || app.dataset.testScriptState !== 'notRunning') { window.__jsIdleSince = null; return false; }
  if (window.__jsIdleSince == null) window.__jsIdleSince = now;
  return now - window.__jsIdleSince >= ms;
}"""


def wait_for_paint(page) -> None:
    """Return once the browser has painted the page as it is now (two animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def wait_for_app_idle(page, *, quiet_ms: int = 300, timeout: float = 60) -> None:
    """Wait until the Streamlit app in ``page`` has finished its runs (no run under way or asked for during
    ``quiet_ms``), every image of the page has loaded or failed, and the page is painted; a timeout fails."""
    page.evaluate("() => { window.__jsIdleSince = null; }")
    page.wait_for_function(_APP_IDLE_JS, arg=quiet_ms, polling=50, timeout=timeout * 1000)
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=timeout * 1000)
    wait_for_paint(page)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a server started by a test; kill it if it does not exit in ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# ---- the Map in a browser (Playwright) ------------------------------------------------------------------
MAP_ROOT_JS = "[...document.querySelectorAll('.js-scatter')].find(r => r.getClientRects().length)"  # the shown one
MAP_POINTS_JS = """() => {
  const root = """ + MAP_ROOT_JS + """;
  return root && root.dataset.ready === '1' ? Number(root.dataset.points) : 0;
}"""  # the number of points the WebGL map (pages.ui.scatter) has drawn

# the page position of a map row: the map's scales are in its canvas's CSS pixels
MAP_ROW_XY_JS = """(row) => {
  const root = """ + MAP_ROOT_JS + """;
  const view = window.jointscopeScatter.get(root.dataset.uid);
  const p = view.screenOfRow(row);
  const box = view.canvas.getBoundingClientRect();
  return p ? [box.left + p[0], box.top + p[1]] : null;
}"""


def map_view_js(expr: str) -> str:
    """A JS function returning ``expr`` evaluated with ``view``, the page's WebGL map (its MapView)."""
    return (f"() => {{ const root = {MAP_ROOT_JS}; if (!root) return null;"
            f" const view = window.jointscopeScatter.get(root.dataset.uid); return view ? ({expr}) : null; }}")


# the shown map has drawn its current points and reported its view of them to Python
MAP_VIEW_REPORTED_JS = map_view_js(
    "view.root.dataset.ready === '1' && view.root.dataset.drawnKey === String(view.pointsKey)"
    " && !!view.root.dataset.view && JSON.parse(view.root.dataset.view).points === view.pointsKey")


def wait_for_map_settled(page, timeout: float = 60) -> None:
    """Wait until the page's WebGL map has drawn its points, reported its view (a rerun) and the app's runs are
    over, so that what a test does next on the map does not race those runs."""
    page.wait_for_function(MAP_VIEW_REPORTED_JS, timeout=timeout * 1000)
    wait_for_app_idle(page, timeout=timeout)


def box_select(page, margin: float = 0.2) -> None:
    """Box-select on the page's WebGL map with the mouse, ``margin`` of it left out on every side: the map
    toolbar's Box, then a drag in ten steps."""
    wait_for_map_settled(page)
    root = page.locator(".js-scatter:visible").first
    root.locator(".js-toolbar button[data-mode=box]").click()
    box = root.bounding_box()
    x0, y0 = box["x"] + box["width"] * margin, box["y"] + box["height"] * margin
    x1, y1 = box["x"] + box["width"] * (1 - margin), box["y"] + box["height"] * (1 - margin)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * i / 10, y0 + (y1 - y0) * i / 10)
    page.mouse.up()
    root.locator(".js-toolbar button[data-mode=pan]").click()


# ---- nothing leaves the machine (browser tests) ------------------------------------------------------------
def is_local_url(url: str) -> bool:
    """True for a URL that stays on this machine: loopback hosts (127.0.0.0/8, ::1, localhost) and the
    browser's own schemes (data:, blob:, file:, about:); False for every other host."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "file", "about", "chrome", "chrome-error"):
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OfflineBrowser:
    """A Playwright (sync) browser whose every context aborts each request that would leave the machine and
    records its URL in :attr:`attempts`, so a test (or the fixture that hands it out) can fail on any.

    ``new_page``/``new_context`` take Playwright's keyword arguments; every other attribute is the browser's.
    A page's own ``page.route`` handlers run first (Playwright's order), so tests that route more strictly
    still work. Each URL is recorded once."""

    def __init__(self, browser):
        self.browser = browser
        self.attempts: list[str] = []

    def _route(self, route) -> None:
        url = route.request.url
        if is_local_url(url):
            route.fallback()
        else:
            self._record(url)
            route.abort("blockedbyclient")

    def _record(self, url: str) -> None:
        if url not in self.attempts:
            self.attempts.append(url)

    def _on_request(self, request) -> None:
        # requests the router never sees (e.g. a favicon in some chromium builds) are still recorded
        if not is_local_url(request.url):
            self._record(request.url)

    def new_context(self, **kwargs):
        context = self.browser.new_context(**kwargs)
        context.route("**/*", self._route)
        context.on("request", self._on_request)
        return context

    def new_page(self, **kwargs):
        return self.new_context(**kwargs).new_page()  # its context closes with the browser

    def __getattr__(self, name):
        return getattr(self.browser, name)


# ---- AppTest (tests/app) -----------------------------------------------------------------------------------
def run_page(name: str, *, timeout: float = 180, **state):
    """``pages/<name>.py`` run once in Streamlit's AppTest with ``state`` put into its session state first."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / f"{name}.py"), default_timeout=timeout)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> list[str]:
    """The values of AppTest elements (captions, warnings, …)."""
    return [e.value for e in elements]


def shown_map(at) -> dict:
    """What the last WebGL map (pages.ui.scatter) of an AppTest run shows, read from the data it sends to the
    browser: ``n`` points; ``points`` (x, y arrays; None when this run sent only their key); ``legend``
    {name: count} (categories) or {"low", "high"} (a colour ramp) with ``legend_title``; cluster ``labels``
    (names) and their ``clusters``; ``selected`` (row count; 0 for none; None when this run sent only the key
    of rows the browser already holds); ``lines`` (segment count, same rule); ``density`` (drawn or not);
    ``thumbnails`` (images sent for the view); ``view`` (the view it is asked to show, or None); ``points_key``
    (names the points; the browser tags its views with it). Fails when no WebGL map was drawn."""
    import json

    import pyarrow as pa

    maps = [e for e in at.get("bidi_component") if e.proto.component_name == "jointscope.scatter"]
    assert maps, "no WebGL map on the page"
    proto = maps[-1].proto
    mixed = proto.mixed if proto.WhichOneof("data") == "mixed" else None
    data = json.loads(mixed.json if mixed is not None else proto.json)

    def table(part):
        ref = data.get(part)
        if mixed is None or not isinstance(ref, dict) or "__streamlit_arrow_ref__" not in ref:
            return None
        return pa.ipc.open_stream(mixed.arrow_blobs[ref["__streamlit_arrow_ref__"]].data).read_all()

    def rows(kind: str) -> int | None:
        if data.get(f"{kind}_key") is None:
            return 0
        t = table(kind)
        return None if t is None else t.num_rows

    legend = data.get("legend") or {}
    shown = ({item["name"]: item["count"] for item in legend["items"]} if "items" in legend
             else {"low": legend["low"], "high": legend["high"]} if "ramp" in legend else {})
    thumbs = data.get("thumbs")
    points = table("points")
    return {"n": data["n"], "legend": shown, "legend_title": legend.get("title", ""),
            "points": None if points is None else (points.column("x").to_numpy(), points.column("y").to_numpy()),
            "labels": [lab["name"] for lab in data.get("labels", [])],
            "clusters": [lab["cluster"] for lab in data.get("labels", [])], "selected": rows("selected"),
            "lines": rows("lines"), "density": data.get("density_key") is not None, "view": data.get("view"),
            "points_key": data.get("points_key"),
            "thumbnails": len(thumbs["items"]) if isinstance(thumbs, dict) else 0}
