"""The hostile-input corpus (tests/hardening/corpus.py) through the CLI and through the Data page.

- every case on its own through ``jointscope ingest WS FILES... --json`` (core.cli.main in-process): exit 0,
  exactly the expected per-item errors, exactly the expected items, stored files inside the workspace,
  plus the case's own check (upright thumbnails, exact captions, a safe TSV export ...);
- all cases in ONE ``python -m core ingest`` subprocess, mixed with good files: the same errors, every
  good item kept;
- every case a browser can upload, all at once, through the Data page (AppTest's file_uploader +
  the Import button): the error table names every bad file/member/row, every good item is kept.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hardening.corpus import CASES, pickle_payload_ran, uploadable

import core
from core.cli import main as cli_main

from helpers import make_png

ROOT = Path(__file__).resolve().parents[2]
# What a workspace may hold: content-addressed files only, whatever the upload was called.
STORED = re.compile(r"^(images/[0-9a-f]{2}/[0-9a-f]{16}\.(png|jpg|webp|gif|bmp|tiff)"
                    r"|thumbs/[0-9a-f]{2}/[0-9a-f]{16}\.webp)$")


def test_corpus_is_large_and_unambiguous():
    names = [c.name for c in CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)
    assert {c.kind for c in CASES} == {"image", "archive", "table", "text", "name", "checkpoint"}
    assert sum(bool(c.errors) for c in CASES) >= 60  # cases that must produce a per-item error
    per_case = [{*c.kept, *(s for s, _ in c.errors)} for c in CASES]
    every = [s for sources in per_case for s in sources]
    assert len(every) == len(set(every)), "a source appears in two cases; the batch tests need them unique"


def error_pairs(report: dict) -> list[tuple[str, str]]:
    return [(e["source"], e["reason"]) for e in report["errors"]]


def assert_errors(case, errors: list[tuple[str, str]], *, exact: bool) -> None:
    """Every expected (source, reason substring) is reported; with ``exact``, nothing else is."""
    for src, needle in case.errors:
        got = [r for s, r in errors if s == src]
        assert got, f"{case.name}: no error for {src!r}; errors: {errors}"
        assert any(needle in r for r in got), f"{case.name}: {src!r} reason {got} lacks {needle!r}"
    if exact:
        assert sorted(s for s, _ in errors) == sorted(s for s, _ in case.errors), f"{case.name}: {errors}"


def assert_stored_inside(ws: core.Workspace) -> None:
    """Nothing an upload names decides where a file lands: only content-addressed paths in the workspace."""
    uploaded = {Path(s.split(":")[-1].replace("\\", "/")).name for s in ws.items["source"]}
    assert not [p for p in ws.path.rglob("*") if p.name in uploaded or "evil" in p.name]
    for col in ("image", "thumb"):
        for rel in ws.items[col].dropna():
            assert STORED.match(rel), rel
            assert (ws.path / rel).resolve().is_relative_to(ws.path.resolve())
    for p in ws.path.rglob("*"):
        if p.is_file() and p.parts[len(ws.path.parts)] in ("images", "thumbs"):
            assert STORED.match(p.relative_to(ws.path).as_posix()), p


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_through_the_cli(case, tmp_path):
    paths = case.files(tmp_path / "in")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(["ingest", str(tmp_path / "ws"), *map(str, paths), "--json"])
    assert rc == 0
    report = json.loads(out.getvalue())
    assert_errors(case, error_pairs(report), exact=True)
    ws = core.Workspace(tmp_path / "ws", create=False)
    assert sorted(ws.items["source"]) == sorted(case.kept)
    assert report["added"] == len(case.kept) and report["skipped"] == 0
    assert_stored_inside(ws)
    if case.check is not None:
        case.check(ws, tmp_path)
    assert not pickle_payload_ran(tmp_path)
    # nothing was written beside the upload (no archive member was extracted anywhere)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {p for p in tmp_path.rglob("*")
                                                                   if p.is_relative_to(tmp_path / "ws")}
    assert all(p.is_relative_to(tmp_path / "in") or p.is_relative_to(tmp_path / "export_tsv") for p in written)


def good_files(folder: Path) -> list[Path]:
    """Good items uploaded alongside the whole corpus: two images and a caption table."""
    imgs = [make_png(folder / "batch_good_red.png", (220, 30, 30)),
            make_png(folder / "batch_good_blue.png", (30, 30, 220))]
    table = folder / "batch_good.csv"
    table.write_text("caption,label\na batch caption that is fine,fine\nanother fine caption,fine\n", encoding="utf-8")
    return [*imgs, table]


GOOD_SOURCES = ["batch_good_red.png", "batch_good_blue.png", "batch_good.csv row 1", "batch_good.csv row 2"]


def assert_batch(cases, report_errors: list[tuple[str, str]], ws: core.Workspace, folder: Path) -> None:
    for case in cases:
        assert_errors(case, report_errors, exact=False)
    expected = {(c.name, s) for c in cases for s, _ in c.errors}
    extra = [e for e in report_errors if not any(e[0] == s for _, s in expected)]
    assert not extra, f"errors nobody expected: {extra}"
    assert len(report_errors) == len(expected), "an expected error reported twice"
    sources = set(ws.items["source"])
    missing = [(c.name, s) for c in cases for s in c.kept if s not in sources]
    assert not missing, f"good items lost: {missing}"
    assert not set(GOOD_SOURCES) - sources
    assert len(ws.items) == sum(len(c.kept) for c in cases) + len(GOOD_SOURCES)
    assert_stored_inside(ws)
    for case in cases:
        if case.check is not None:
            sub = folder / "checks" / case.name
            sub.mkdir(parents=True)
            case.check(ws, sub)


def test_whole_corpus_in_one_cli_call(tmp_path):
    """`python -m core ingest` once with every case's files and good files mixed in: exit 0, all reported."""
    paths = [p for case in CASES for p in case.files(tmp_path / "in" / case.name)]
    paths[len(paths) // 2:len(paths) // 2] = good_files(tmp_path / "good")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "core", "ingest", str(tmp_path / "ws"), *map(str, paths), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    ws = core.Workspace(tmp_path / "ws", create=False)
    assert report["added"] == len(ws.items)
    assert_batch(CASES, error_pairs(report), ws, tmp_path)
    assert not pickle_payload_ran(tmp_path)


def test_uploadable_corpus_through_the_data_page(tmp_path, monkeypatch):
    """Every case a browser can upload, at once, through the Data page's uploader and Import button."""
    from streamlit.testing.v1 import AppTest

    home = tmp_path / "home"
    monkeypatch.setenv("JOINTSCOPE_HOME", str(home))
    core.Workspace(core.workspace_path("hostile", home))
    cases, files = [], []
    for case in CASES:
        paths = case.files(tmp_path / "in" / case.name)
        if uploadable(paths):
            cases.append(case)
            files += [(p.name, p.read_bytes(), "application/octet-stream") for p in paths]
    files[len(files) // 2:len(files) // 2] = [(p.name, p.read_bytes(), "application/octet-stream")
                                                for p in good_files(tmp_path / "good")]
    assert len(cases) >= 60

    at = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=120)
    at.session_state["workspace"] = "hostile"
    at.session_state["model"] = "demo"
    at.run()
    at.file_uploader[0].set_value(files)
    at.run()
    assert not at.exception
    [imp] = [b for b in at.button if b.label == "Import"]
    imp.click().run()
    assert not at.exception
    ws = core.Workspace(home / "hostile", create=False)
    n_errors = sum(len(c.errors) for c in cases)
    assert any(f"Import: {len(ws.items)} added, 0 skipped" in w and f"{n_errors} could not be read" in w
               for w in (e.value for e in at.warning)), [e.value for e in at.warning]
    [errs] = [d.value for d in at.dataframe if list(d.value.columns) == ["source", "reason"]]
    assert_batch(cases, list(zip(errs["source"], errs["reason"])), ws, tmp_path)
    assert not pickle_payload_ran(tmp_path)
