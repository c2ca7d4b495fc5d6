"""The caption rule (core.items.captions / item_titles) and the front ends that show it."""
from __future__ import annotations

import pandas as pd

import core
from core.export import selection_table
from core.items import captions, item_titles
from core.search import hits_frame


def _items() -> pd.DataFrame:
    """img_a: paired with t_a (t_b names it too, earlier); img_b: no pair, named by t_b2 then t_b3;
    img_c: no caption at all; t_loose: a text without a pair; r1: a table row without text."""
    rows = [
        ("t_b", "text", "another caption of a", "img_a", "c.csv row 1"),
        ("img_a", "image", None, "t_a", "a.png"),
        ("t_a", "text", "the caption of a", "img_a", "c.csv row 2"),
        ("img_b", "image", None, None, "b.png"),
        ("t_b2", "text", "first text naming b", "img_b", "c.csv row 3"),
        ("t_b3", "text", "second text naming b", "img_b", "c.csv row 4"),
        ("img_c", "image", None, None, "photos.zip:c.png"),
        ("t_loose", "text", "a loose note", None, "notes.txt line 1"),
        ("r1", "row", None, None, "table.csv row 1"),
    ]
    return pd.DataFrame(rows, columns=["id", "modality", "text", "pair", "source"])


def test_caption_rule_pair_wins_then_first_text_naming_the_image_then_none():
    items = _items()
    caps = captions(items).set_axis(items["id"]).to_dict()
    assert caps["img_a"] == "the caption of a", "the text the image's pair names wins over one naming it earlier"
    assert caps["img_b"] == "first text naming b", "no pair: the first text whose pair names the image"
    assert caps["img_c"] is None and caps["r1"] is None
    assert caps["t_a"] == "the caption of a" and caps["t_loose"] == "a loose note", "a text is its own caption"
    # a subset keeps its own index and order; an id the items lack (a reindex's NaN row) has none
    some = items.set_index("id", drop=False).reindex(["img_c", "nope", "img_b"])
    assert captions(items, some).tolist() == [None, None, "first text naming b"]
    assert captions(items, some).index.tolist() == ["img_c", "nope", "img_b"]


def test_item_titles_fall_back_to_the_file_and_cut():
    items = _items()
    titles = item_titles(items, limit=12).set_axis(items["id"]).to_dict()
    assert titles["img_a"] == "the caption "  # cut to 12 characters
    assert titles["img_c"] == "photos.zip:c"  # no caption: the file it came from
    assert titles["r1"] == "table.csv ro"
    no_source = items.assign(source=None)
    assert item_titles(no_source, no_source[no_source["id"] == "img_c"]).tolist() == [""]


def test_search_results_and_selection_exports_show_the_same_caption(tmp_path):
    """A workspace whose image has no pair but a caption naming it (items referenced where they are, as a
    manifest adds them): search results and the selection download both show that caption."""
    ws = core.Workspace(tmp_path / "ws", create=True)
    items = _items()
    assert ws.add_rows(items[["id", "modality", "text", "pair", "source"]]) == len(items)
    ids = ["img_a", "img_b", "img_c", "t_loose", "r1"]
    expected = captions(ws.items, ws.items.set_index("id", drop=False).loc[ids]).tolist()
    assert expected == ["the caption of a", "first text naming b", None, "a loose note", None]
    hits = [{"id": i, "score": 1.0 - n / 10, "modality": m} for n, (i, m) in
            enumerate(zip(ids, ["image", "image", "image", "text", "row"]))]
    assert hits_frame(ws, hits)["text"].tolist() == expected
    assert selection_table(ws, ids)["caption"].tolist() == expected
