"""Selection exports (core.export.selection_table) and the standalone HTML map (map_html, `map --html`)."""
from __future__ import annotations

import io
import json
import re
import zipfile
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import core
from core.cli import main
from core.export import captions, hover_lines, item_rows, parquet_bytes, safe_csv_bytes, selection_table

from helpers import make_png

HOSTILE = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script>"


@pytest.fixture(scope="module")
def small_ws(tmp_path_factory, tiny_clip_id):
    """photos.zip: three images and captions.csv (file, caption, colour); notes.txt: one loose text;
    embedded with the tiny CLIP."""
    root = tmp_path_factory.mktemp("export_ws")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(3):
            z.write(make_png(root / "src" / f"IMG_{i}.png", (i * 80, 20, 90)), f"IMG_{i}.png")
        z.writestr("captions.csv", f'file,caption,colour\nIMG_0.png,"{HOSTILE}",red\nIMG_1.png,a blue one,blue\n'
                                   f'IMG_2.png,"{BREAKOUT}",\n')
    (root / "photos.zip").write_bytes(buf.getvalue())
    (root / "notes.txt").write_text("a loose note\n")
    ws = core.Workspace(root / "ws", create=True)
    assert ws.ingest([root / "photos.zip", root / "notes.txt"]).added == 7
    ws.embed(tiny_clip_id)
    return ws


def _image(ws, name: str) -> str:
    items = ws.items
    return items.loc[items["source"] == f"photos.zip:{name}", "id"].item()


def test_selection_table_caption_file_metadata_and_no_internal_paths(small_ws):
    ws = small_ws
    texts = ws.items.loc[ws.items["modality"] == "text", "id"].tolist()
    ids = [_image(ws, "IMG_0.png"), _image(ws, "IMG_1.png"), *texts]
    coords = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2)
    df = selection_table(ws, ids, coords)
    assert list(df.columns) == ["id", "modality", "caption", "file", "colour", "map_x", "map_y"]
    assert df["id"].tolist() == ids  # in the order asked for
    img = df.iloc[0]
    assert (img["modality"], img["caption"], img["file"], img["colour"]) == ("image", HOSTILE, "photos.zip:IMG_0.png",
                                                                           "red")
    assert df.iloc[1]["caption"] == "a blue one" and df.iloc[1]["colour"] == "blue"
    texts = df[df["modality"] == "text"].set_index("caption")
    assert texts.loc["a loose note", "file"] == "notes.txt line 1"
    assert texts.loc["a blue one", "file"] == "photos.zip:captions.csv row 2"
    assert df["map_y"].tolist() == coords[:, 1].tolist()
    cells = df.astype(str).to_numpy().ravel()
    assert not [c for c in cells if c.startswith(("images/", "thumbs/"))], "no internal stored-file paths"
    # the downloads keep user text literal (no HTML, no entities)
    assert HOSTILE in safe_csv_bytes(df).decode() and BREAKOUT in safe_csv_bytes(df).decode()
    back = pd.read_parquet(io.BytesIO(parquet_bytes(df)))
    assert back["caption"].tolist() == df["caption"].tolist()
    assert "map_z" in selection_table(ws, ids, np.zeros((len(ids), 3))).columns
    assert "map_x" not in selection_table(ws, ids).columns


def test_selection_table_bad_input(small_ws):
    with pytest.raises(ValueError, match=r"not in workspace.*nope"):
        selection_table(small_ws, ["nope"])
    with pytest.raises(ValueError, match=r"coords must be \(1, 2 or 3\)"):
        selection_table(small_ws, [_image(small_ws, "IMG_0.png")], np.zeros((2, 2)))


def test_hover_lines_show_an_images_caption_and_file(small_ws):
    rows = item_rows(small_ws, [_image(small_ws, "IMG_1.png")])
    assert hover_lines(rows, captions=captions(small_ws.items, rows)) == [
        "a blue one\nphotos.zip:IMG_1.png\nimage · colour=blue"]
    assert hover_lines(rows, []) == ["photos.zip:IMG_1.png\nimage"]  # the page's call without captions


class _Attrs(HTMLParser):
    """The attributes of the document's real tags (script bodies are data, not tags)."""

    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v) for k, v in attrs]


def _json_text(html: str) -> str:
    """The document with plotly's JSON escapes of ``< > /`` undone (what the browser's JS sees)."""
    return html.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u002f", "/")


def test_cli_map_html_is_standalone_and_escapes_captions(small_ws, tiny_clip_id, tmp_path, capsys):
    out = tmp_path / "share" / "map.html"
    code = main(["map", str(small_ws.path), "--model", tiny_clip_id, "--method", "pca", "--html", str(out),
                 "--color", "colour", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["html"] == str(out.resolve()) and doc["n"] == 7
    html = out.read_text(encoding="utf-8")
    parser = _Attrs()
    parser.feed(html)
    links = [(t, k, v) for t, k, v in parser.attrs if k in ("src", "href") and re.search(r"https?:", v or "", re.I)]
    assert not links, f"network references: {links}"
    assert ("script", "src") not in {(t, k) for t, k, _ in parser.attrs}, "plotly.js is inlined"
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    text = _json_text(html)
    for caption in ("a blue one", "a loose note", "photos.zip:IMG_1.png"):
        assert caption in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and HOSTILE not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in text and "alert(2)</script>" not in text
    assert '"name":"red (2)"' in text and '"name":"blue (2)"' in text  # legend: the colour column's values
    assert text.count('"source":"data:image/webp;base64,') == 3  # the thumbnails, inline
    assert re.search(r"<h1>ws · openclip-local:\S+ · PCA 2-D map · 7 points</h1>", html)
    assert "<footer>Coloured by colour." in html


def test_cli_map_html_usage_errors(small_ws, tiny_clip_id, tmp_path, capsys):
    base = ["map", str(small_ws.path), "--model", tiny_clip_id, "--method", "pca", "--json"]
    assert main([*base, "--html", str(tmp_path / "m.html"), "--color", "bogus"]) == 2
    _, err = capsys.readouterr()
    assert "--color must be one of: modality, cluster, trust, colour; got 'bogus'" in err
    assert main([*base, "--color", "cluster"]) == 2  # --color without --html
    assert main([*base, "--html", str(tmp_path)]) == 2  # a folder
    out, err = capsys.readouterr()
    assert out == "" and "is a folder" in err and not (tmp_path / "m.html").exists()
    # default colour: modality
    assert main([*base, "--html", str(tmp_path / "m.html")]) == 0
    text = _json_text((tmp_path / "m.html").read_text())
    assert '"name":"image (3)"' in text and '"name":"text (4)"' in text
