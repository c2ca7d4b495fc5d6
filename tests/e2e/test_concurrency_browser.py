"""Four browser sessions at once on one server: two in workspaces of their own, two in the same one.

Each session (its own browser context, so its own Streamlit session) creates its workspace from the
sidebar, uploads its images and a text file on the Data page, imports them, embeds them with
``demo``, then searches on the Search page for one of its own texts (in upper case: a different text with the
same vector) and lists the nearest images.
The two sessions that share a workspace create it in the same instant and both upload a common
image pair and text file as well. All four run truly concurrently (async Playwright, one
``asyncio.gather``).

Checked: no session ever shows an error box or a traceback; no cross-talk — every session's summary
names its own workspace, its text query finds its own text first (cosine 1.000), its image results
are exactly its workspace's images, and nothing of a session in another workspace ever appears on
its page; no corrupted files — afterwards every workspace reopens with ``core.Workspace`` holding
exactly the union of what was uploaded into it, each item once, one ``demo`` vector per item.
"""
from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, e2e_marks, is_local_url, make_png

pytestmark = e2e_marks()

# (workspace, tag): the tag names the session's files and texts, so its items are recognisable anywhere
SESSIONS = [("conc-a", "alpha"), ("conc-b", "bravo"), ("conc-shared", "charlie"), ("conc-shared", "delta")]
COLOURS = ["red", "green", "blue"]
RGB = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "grey": (128, 128, 128),
       "yellow": (230, 210, 40)}
SLOW = 120_000  # the first run on a busy 2-core machine imports torch and lists the models
STEP = 60_000


@pytest.fixture(scope="module")
def server_and_home(tmp_path_factory, serve_home):
    home = tmp_path_factory.mktemp("home")
    with serve_home(home, tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base, home


def _files(root: Path, ws: str, tag: str) -> tuple[list[Path], list[str]]:
    """The session's upload (3 PNGs + a .txt of 3 lines; in the shared workspace also a common pair of
    PNGs and a common .txt) and the texts it carries."""
    folder = root / tag
    files, texts = [], []
    for i, colour in enumerate(COLOURS):
        size = (40 + 4 * i, 30 + 3 * SESSIONS.index((ws, tag)))
        files.append(make_png(folder / f"{tag}_{i}.png", RGB[colour], size=size))
    lines = [f"{tag} note {i} a {colour} shape" for i, colour in enumerate(COLOURS)]
    (folder / f"{tag}_notes.txt").write_text("\n".join(lines) + "\n")
    files.append(folder / f"{tag}_notes.txt")
    texts += lines
    if ws == "conc-shared":
        for i, colour in enumerate(("grey", "yellow")):
            files.append(make_png(folder / f"common_{i}.png", RGB[colour], size=(50, 50)))
        common = ["common note 0 a grey square", "common note 1 a yellow square"]
        (folder / "common_notes.txt").write_text("\n".join(common) + "\n")
        files.append(folder / "common_notes.txt")
        texts += common
    return files, texts


async def _no_errors(page, where: str) -> None:
    main = page.get_by_test_id("stApp")
    for testid in ("stException", "stAlertContentError"):
        n = await main.get_by_test_id(testid).count()
        if n:
            detail = " | ".join(await main.get_by_test_id(testid).all_inner_texts())
            raise AssertionError(f"{where}: {n} {testid} on the page: {detail}")
    if "Traceback (most recent call last)" in await main.inner_text():
        raise AssertionError(f"{where}: a traceback is shown")


class _Gate:
    """Sessions start writing together once every page has loaded (one that fails also passes)."""

    def __init__(self, n: int):
        self.left, self.event = n, asyncio.Event()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


def _line_after(text: str, pattern: str) -> str:
    """The first non-empty line after the line that matches ``pattern`` in a page's text."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if re.match(pattern, ln) and i + 1 < len(lines):
            return lines[i + 1]
    return ""


async def _session(browser, base: str, ws: str, tag: str, files: list[Path], foreign: list[str],
                   gate: _Gate, shots: Path) -> dict:
    """One user's whole visit; returns what the pages showed. ``foreign``: tags that must never appear."""
    from playwright.async_api import expect

    out = {"ws": ws, "tag": tag}
    context = await browser.new_context(viewport={"width": 1400, "height": 1500})

    async def offline(route) -> None:  # nothing may leave the machine (see helpers.OfflineBrowser)
        if is_local_url(route.request.url):
            await route.fallback()
        else:
            out.setdefault("offsite", []).append(route.request.url)
            await route.abort("blockedbyclient")

    await context.route("**/*", offline)
    page = await context.new_page()
    page.set_default_timeout(STEP)
    main = page.get_by_test_id("stMain")

    running = page.locator("[data-testid=stStatusWidgetRunningIcon], [data-testid=stStatusWidgetRunningManIcon]")

    async def clean(where: str) -> None:
        await expect(running).to_have_count(0, timeout=SLOW)  # the whole run is done: late errors count too
        await _no_errors(page, f"{tag}: {where}")
        text = await main.inner_text()
        leaked = [t for t in foreign if t in text]
        assert not leaked, f"{tag}: {where}: items of {leaked} appear on this session's page"

    arrived = False
    try:
        await page.goto(base)
        sidebar = page.get_by_test_id("stSidebar")
        await expect(sidebar.get_by_label("New workspace")).to_be_visible(timeout=SLOW)
        arrived = True
        gate.arrive()
        await asyncio.wait_for(gate.event.wait(), SLOW / 1000)  # from here on all sessions run at once
        await sidebar.get_by_label("New workspace").fill(ws)
        await sidebar.get_by_role("button", name="Create workspace").click()
        await expect(main.get_by_text(re.compile(f"^Workspace {re.escape(ws)}: "))).to_be_visible()
        await clean("after creating the workspace")

        await page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(
            [str(p) for p in files])
        for p in files:
            await expect(page.get_by_role("button", name=f"Remove {p.name}")).to_be_visible()
        await page.get_by_role("button", name="Import", exact=True).click()
        done = main.get_by_text(re.compile(r"^Import: \d+ added, \d+ skipped"))
        await expect(done).to_be_visible()
        m = re.search(r"Import: (\d+) added, (\d+) skipped", await done.inner_text())
        out["import"] = (int(m[1]), int(m[2]))
        await clean("after the import")

        await main.get_by_role("button", name="Embed with demo").click()
        embedded = main.get_by_text(re.compile(r"^demo: \d+ embedded"))
        await expect(embedded).to_be_visible(timeout=SLOW)
        out["embed"] = await embedded.inner_text()
        await clean("after embedding")

        await sidebar.get_by_role("link", name="Search").click()
        await expect(page.get_by_role("heading", name="Search")).to_be_visible()
        await expect(main.get_by_text(re.compile(f"^Workspace {re.escape(ws)}: "))).to_be_visible()
        # upper case: the demo tokenizer lowercases, so the vector is that of the session's first text, but
        # the query is not that text itself (a query's own item is left out of its results)
        query = f"{tag} note 0 a {COLOURS[0]} shape".upper()
        box = main.get_by_label("Query")
        await box.fill(query)
        await box.press("Enter")
        await expect(main.get_by_text(re.compile(r"nearest images to"))).to_be_visible(timeout=SLOW)
        await page.get_by_text("texts", exact=True).click()
        await expect(main.get_by_text(re.compile(r"nearest texts to"))).to_be_visible()
        await expect(main.get_by_text(re.compile(r"^1 · score \d\.\d{3} · text$"))).to_be_visible()
        await clean("text search")  # read the page once its run is over (no stale cards of the last run)
        out["top_text_score"] = await main.get_by_text(re.compile(r"^1 · score \d\.\d{3} · text$")).inner_text()
        out["top_text"] = _line_after(await main.inner_text(), r"^1 · score")  # the first card's text

        await page.get_by_text("images", exact=True).click()
        await expect(main.get_by_text(re.compile(r"nearest images to"))).to_be_visible()
        await expect(main.get_by_text(re.compile(r"^1 · score \d\.\d{3}$")).first).to_be_visible()
        # the cards arrive one by one and the running icon shows only after a moment: wait for this
        # session's own images (they must all be among its results) before reading the page
        for p in files:
            if p.suffix == ".png":
                await expect(main.get_by_text(p.name).first).to_be_visible()
        await clean("image results")
        out["images"] = sorted(set(re.findall(r"\b([a-z]+_\d+\.png)\b", await main.inner_text())))
        await page.screenshot(path=str(shots / f"{tag}.png"), full_page=True)
        return out
    except Exception:
        await page.screenshot(path=str(shots / f"{tag}-failed.png"), full_page=True)
        raise
    finally:
        if not arrived:
            gate.arrive()
        await context.close()


async def _all_sessions(base: str, uploads: dict, shots: Path) -> list:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=STEP)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            gate = _Gate(len(SESSIONS))
            return await asyncio.gather(*[
                _session(browser, base, ws, tag, uploads[tag][0], [t for w, t in SESSIONS if w != ws], gate, shots)
                for ws, tag in SESSIONS], return_exceptions=True)
        finally:
            await browser.close()


def test_four_sessions_upload_and_search_without_cross_talk(server_and_home, tmp_path):
    base, home = server_and_home
    uploads = {tag: _files(tmp_path / "uploads", ws, tag) for ws, tag in SESSIONS}
    shots = tmp_path / "shots"
    shots.mkdir()
    box: dict = {}

    def run() -> None:  # own thread, own event loop: independent of any sync Playwright in this process
        try:
            box["results"] = asyncio.run(_all_sessions(base, uploads, shots))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(400)
    assert not t.is_alive(), "the browser sessions did not finish"
    if "error" in box:
        raise box["error"]
    results = box["results"]
    failures = [f"{tag}: {r!r}" for (_, tag), r in zip(SESSIONS, results) if isinstance(r, BaseException)]
    assert not failures, "\n".join(failures) + f"\n(screenshots in {shots})"
    by_tag = {r["tag"]: r for r in results}
    offsite = sorted({u for r in results for u in r.get("offsite", [])})
    assert not offsite, f"pages tried to reach other machines: {offsite[:10]}"

    from core.workspace import Workspace, content_id

    for ws_name in sorted({w for w, _ in SESSIONS}):
        tags = [t for w, t in SESSIONS if w == ws_name]
        expected = {}
        for tag in tags:
            files, texts = uploads[tag]
            for f in files:
                if f.suffix == ".png":
                    expected[content_id("image", f.read_bytes())] = f.name
            for text in texts:
                expected[content_id("text", text.encode())] = text
        # files: every workspace holds exactly the union of its uploads, each once, with one vector each
        ws = Workspace(home / ws_name, create=False)
        items = ws.items
        assert items["id"].is_unique, ws_name
        assert set(items["id"]) == set(expected), ws_name
        assert sum(by_tag[t]["import"][0] for t in tags) == len(expected), "an item was added twice or lost"
        for tag in tags:
            assert sum(by_tag[tag]["import"]) == len(uploads[tag][1]) + sum(
                f.suffix == ".png" for f in uploads[tag][0])
        X, ids = ws.vectors("demo")
        assert sorted(ids) == sorted(expected) and np.isfinite(X).all()
        store = ws.store("demo")
        shard_ids = [i for s in store.manifest()["shards"] for i in np.load(store.path / f"{s['name']}.ids.npy")]
        assert len(shard_ids) == len(set(shard_ids)) == len(expected), f"{ws_name}: a vector stored twice"
        assert not list(ws.path.rglob("*.tmp"))
        # pages: own query text first with cosine 1, image results = exactly this workspace's images
        images = sorted(name for name in expected.values() if name.endswith(".png"))
        for tag in tags:
            r = by_tag[tag]
            assert r["top_text"] == f"{tag} note 0 a {COLOURS[0]} shape", r
            assert r["top_text_score"] == "1 · score 1.000 · text", r
            own = sorted(f.name for f in uploads[tag][0] if f.suffix == ".png")
            assert set(own) <= set(r["images"]) <= set(images), r  # the other session may not have embedded yet
            if len(tags) == 1:
                assert r["images"] == images, r
