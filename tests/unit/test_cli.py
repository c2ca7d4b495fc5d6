"""CLI contract: one JSON document on stdout with --json, exit codes 0 / 1 / 2, the keys docs/cli.md lists."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import main

from helpers import make_png


def run_json(capsys, *argv) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    doc = json.loads(out) if out.strip() else None
    if doc is not None:
        assert out.count("\n") == 1, "exactly one JSON document on one line"
    return code, doc, err


def test_models_json(capsys):
    code, doc, _ = run_json(capsys, "models", "--json")
    assert code == 0
    ids = {m["id"] for m in doc}
    assert {"demo", "minilm"} <= ids and any(i.startswith("openclip:ViT-B-32/") for i in ids)
    assert all({"id", "modalities", "available"} <= set(m) for m in doc)


def test_ingest_embed_info_export_roundtrip(capsys, tmp_path, tiny_clip_id):
    imgs = [make_png(tmp_path / "in" / f"{i}.png", (i * 60, 20, 90)) for i in range(3)]
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.txt").write_text("=cmd|' /C calc'!A0\nsecond line\n")
    ws = tmp_path / "ws"
    code, doc, _ = run_json(capsys, "ingest", str(ws), str(tmp_path / "in"), str(tmp_path / "notes.txt"), "--json")
    assert code == 0
    assert doc["added"] == 5 and doc["skipped"] == 0
    assert [e["source"] for e in doc["errors"]] == [str(tmp_path / "in" / "broken.png")] or \
        any("broken.png" in e["source"] for e in doc["errors"])
    code, doc, _ = run_json(capsys, "ingest", str(ws), *map(str, imgs), "--json")
    assert (doc["added"], doc["skipped"]) == (0, 3)

    code, doc, _err = run_json(capsys, "embed", str(ws), "--model", tiny_clip_id, "--json")
    assert code == 0 and doc["model"] == tiny_clip_id and doc["embedded"] == 5 and doc["cached"] == 0
    assert doc["seconds"] >= 0
    code, doc, _ = run_json(capsys, "embed", str(ws), "--model", tiny_clip_id, "--json")
    assert (doc["embedded"], doc["cached"]) == (0, 5)

    code, doc, _ = run_json(capsys, "info", str(ws), "--json")
    assert doc["items"] == 5 and doc["by_modality"] == {"image": 3, "text": 2}
    assert doc["models"][tiny_clip_id]["n"] == 5

    code, doc, _ = run_json(capsys, "export", str(ws), "--model", tiny_clip_id, "--out", str(tmp_path / "x"), "--json")
    assert code == 0 and doc["n"] == 5
    df = pd.read_parquet(doc["path"])
    assert len(df) == 5 and len(df["vector"].iloc[0]) == 32

    code, doc, _ = run_json(capsys, "export", str(ws), "--model", tiny_clip_id, "--out", str(tmp_path / "t"),
                            "--format", "tsv", "--json")
    vec = np.loadtxt(tmp_path / "t" / "vectors.tsv", delimiter="\t")
    meta = (tmp_path / "t" / "metadata.tsv").read_text().splitlines()
    assert vec.shape == (5, 32) and len(meta) == 6 and meta[0].startswith("label\t")
    assert not any(line.startswith("=") for line in meta), "formula injection is neutralised"
    assert any(line.startswith("'=cmd") for line in meta)


def test_usage_error_exits_2(capsys):
    assert main(["embed", "--json"]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["ingest", "somewhere", "--json"]) == 2  # nothing to ingest
    out, _err = capsys.readouterr()
    assert out == ""


def test_failure_exits_1_with_one_line(capsys, tmp_path):
    code, doc, err = run_json(capsys, "info", str(tmp_path / "missing"), "--json")
    assert code == 1 and doc is None
    assert len(err.strip().splitlines()) == 1 and "no workspace" in err
    (tmp_path / "ws").mkdir()
    main(["ingest", str(tmp_path / "ws"), "--text", "hi", "--json"])
    capsys.readouterr()
    code, doc, err = run_json(capsys, "embed", str(tmp_path / "ws"), "--model", "openclip-local:/nope", "--json")
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, doc, err = run_json(capsys, "embed", str(tmp_path / "ws"), "--model", "bogus", "--json")
    assert code == 1 and "unknown model id" in err


def test_role_override(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("name,notes\nalpha,first row here\nbeta,second row here\n")
    code, doc, _ = run_json(capsys, "ingest", str(tmp_path / "ws"), str(tmp_path / "t.csv"),
                            "--role", "name=text", "--role", "notes=metadata", "--json")
    assert code == 0 and doc["added"] == 2
    from core import Workspace

    items = Workspace(tmp_path / "ws").items
    assert sorted(items["text"]) == ["alpha", "beta"] and "notes" in items.columns


def test_entry_points_agree(tmp_path):
    """`python -m core` and the `jointscope` console script are the same program."""
    exe = Path(sys.executable).with_name("jointscope")
    a = subprocess.run([sys.executable, "-m", "core", "models", "--local", "--json"], capture_output=True, text=True)
    assert a.returncode == 0
    if exe.exists():
        b = subprocess.run([str(exe), "models", "--local", "--json"], capture_output=True, text=True)
        assert json.loads(a.stdout) == json.loads(b.stdout)


def test_search_flags_words_the_model_never_saw(capsys, demo_ws):
    """`search --text` on the demo model names the query words outside its training captions, in the JSON
    and as one warning line on stderr (human output too); the exit code stays 0."""
    ws = str(demo_ws.path)
    code, doc, err = run_json(capsys, "search", ws, "--model", "demo", "--text", "a crimson disc", "--k", "3", "--json")
    assert code == 0 and len(doc["results"]) == 3
    assert doc["unknown_words"] == ["crimson", "disc"]
    assert err.strip() == ("warning: Model demo never saw these words in training: crimson, disc. Results for them "
                           "are guesses; words it knows give better ones.")
    code, doc, err = run_json(capsys, "search", ws, "--model", "demo", "--text", "a red circle", "--k", "3", "--json")
    assert code == 0 and doc["unknown_words"] == [] and "never saw" not in err
    assert main(["search", ws, "--model", "demo", "--text", "a crimson square", "--k", "2"]) == 0
    out, err = capsys.readouterr()
    assert "unknown_words: [\"crimson\"]" in out and "never saw these words in training: crimson." in err
