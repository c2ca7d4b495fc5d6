"""Selection exports (core.export.selection_table) and the standalone HTML map (map_html, `map --html`)."""
from __future__ import annotations

import base64
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
from core.projection import compute_map

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


class _Page(HTMLParser):
    """What a browser makes of the document: the real tags' attributes, each script element's type and
    body (a script body is data, not tags) and the text of h1 and footer."""

    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.scripts: list[tuple[str | None, str]] = []
        self.text: dict[str, str] = {}
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "script":
            self.scripts.append((dict(attrs).get("type"), ""))
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag):]

    def handle_data(self, data):
        if "script" in self._in:
            kind, body = self.scripts[-1]
            self.scripts[-1] = (kind, body + data)
        for tag in ("h1", "footer"):
            if tag in self._in:
                self.text[tag] = self.text.get(tag, "") + data


def _read_page(html: str) -> tuple[_Page, dict]:
    """The parsed document and the map's data, decoded as the page's script decodes it (JSON.parse of the
    ``application/json`` script element)."""
    page = _Page()
    page.feed(html)
    data = [body for kind, body in page.scripts if kind == "application/json"]
    assert len(data) == 1, f"one JSON data element; got {len(data)}"
    return page, json.loads(data[0])


def _column(col: dict) -> np.ndarray:
    """A payload column ``{dtype, b64}`` as the numpy array the page's typed array holds."""
    return np.frombuffer(base64.b64decode(col["b64"]), dtype=f"<{col['dtype']}")


def test_cli_map_html_is_standalone_and_escapes_captions(small_ws, tiny_clip_id, tmp_path, capsys):
    out = tmp_path / "share" / "map.html"
    code = main(["map", str(small_ws.path), "--model", tiny_clip_id, "--method", "pca", "--html", str(out),
                 "--color", "colour", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["html"] == str(out.resolve()) and doc["n"] == 7
    html = out.read_text(encoding="utf-8")
    page, data = _read_page(html)
    links = [(t, k, v) for t, k, v in page.attrs if k in ("src", "href") and re.search(r"https?:", v or "", re.I)]
    assert not links, f"network references: {links}"
    assert ("script", "src") not in {(t, k) for t, k, _ in page.attrs}, "the map's script is inlined"
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # every point, at the map's coordinates
    res = compute_map(small_ws, tiny_clip_id, method="pca")
    assert data["n"] == 7 and len(_column(data["columns"]["x"])) == 7
    np.testing.assert_array_equal(_column(data["columns"]["x"]), res.coords[:, 0].astype(np.float32))
    np.testing.assert_array_equal(_column(data["columns"]["y"]), res.coords[:, 1].astype(np.float32))
    # hostile captions arrive as the same literal text; in the file they cannot end the script or add a tag
    captions = data["captions"]
    assert len(captions) == 7
    for caption in ("a blue one", "a loose note", "photos.zip:IMG_1.png", HOSTILE, BREAKOUT):
        assert any(caption in c for c in captions)
    assert HOSTILE not in html and "alert(2)</script>" not in html and "</script><script>" not in html
    assert [kind for kind, _ in page.scripts] == ["application/json", None, None]
    assert not [t for t, k, _ in page.attrs if k.startswith("on")], "no event handler attributes"
    # legend: the colour column's values, with their counts, in the colours the points are drawn in
    codes = _column(data["columns"]["c"])
    legend = {d["name"]: (d["count"], d["colour"]) for d in data["legend"]["items"]}
    assert legend == {c: (int((codes == i).sum()), data["palette"][i]) for i, c in enumerate(data["categories"])
                      if (codes == i).any()}
    assert legend["red"][0] == legend["blue"][0] == 2 and data["legend"]["title"] == "colour"
    assert len(data["palette"]) == len(data["categories"])
    thumbs = data["thumbs"]
    assert len(thumbs) == 3 and all(t["url"].startswith("data:image/webp;base64,") for t in thumbs)
    assert sorted(res.modality[[t["row"] for t in thumbs]]) == ["image"] * 3
    assert re.fullmatch(r"ws · openclip-local:\S+ · PCA 2-D map · 7 points", page.text["h1"])
    assert page.text["footer"].startswith("Coloured by colour. Every point is drawn")


def test_html_map_bounds_captions_and_colours_values(small_ws, tiny_clip_id):
    from core.export import MAX_HTML_CAPTION_CHARS, map_html, map_payload, view_html
    from core.mapview import MapParams, build_view

    res = compute_map(small_ws, tiny_clip_id, method="pca")
    view = build_view(small_ws, tiny_clip_id, MapParams(method="pca", names="off"), res=res)
    assert [len(c) <= MAX_HTML_CAPTION_CHARS for c in map_payload(view)["captions"]] == [True] * 7
    assert map_payload(view, max_captions=6)["captions"] is None  # above the bound: no captions inlined
    assert map_payload(view, thumbs=1)["thumbs"].__len__() == 1
    # a continuous colour: 254 steps over the range, 255 for "no value"; the legend shows the range
    trust = res.trust.astype(np.float64)
    trust[0] = np.nan
    _, data = _read_page(view_html(view.with_colour(trust, "trust", colorscale="RdYlGn", color_range=(0.0, 1.0))))
    codes = _column(data["columns"]["c"])
    assert codes[0] == 255 and codes[1:].max() <= 254 and data["value_range"] == [0.0, 1.0]
    np.testing.assert_array_equal(codes[1:], np.rint(trust[1:].astype(np.float32).astype(np.float64) * 254))
    assert len(data["palette"]) == 256 and data["categories"] is None
    assert {k: data["legend"][k] for k in ("title", "low", "high", "missing")} == {
        "title": "trust", "low": "0", "high": "1", "missing": "1 without a value (grey)"}
    _, again = _read_page(map_html(small_ws, tiny_clip_id, res, color=trust, color_title="trust", categorical=False,
                                   color_range=(0.0, 1.0)))
    assert {k: v for k, v in again["legend"].items() if k != "ramp"} == {
        k: v for k, v in data["legend"].items() if k != "ramp"}


def test_three_d_html_map_is_a_plotly_figure(small_ws, tiny_clip_id):
    from core.export import map_html

    res = compute_map(small_ws, tiny_clip_id, method="pca", dim=3)
    html = map_html(small_ws, tiny_clip_id, res)
    page = _Page()
    page.feed(html)
    assert "jointscope-map-data" not in html and "Plotly.newPlot" in html
    assert re.fullmatch(r"ws · openclip-local:\S+ · PCA 3-D map · 7 points", page.text["h1"])
    assert "&lt;img src=x onerror=alert(1)&gt;" in html.replace("\\u003c", "<").replace("\\u003e", ">")
    assert HOSTILE not in html and "alert(2)</script>" not in html


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
    _, data = _read_page((tmp_path / "m.html").read_text())
    assert {d["name"]: d["count"] for d in data["legend"]["items"]} == {"image": 3, "text": 4}
    assert data["colour_title"] == data["legend"]["title"] == "modality"
