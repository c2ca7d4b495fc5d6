"""What every front end shows for an item: its caption (:func:`captions`) and its one-line title
(:func:`item_titles`). One rule, used by the exports, search results, the map (hover texts, selection
table, gallery), the Quality page's tables, named clusters and the pages' caches.

The caption rule:

1. a text (or a table row) is captioned by its own ``text`` (None when it has none);
2. an image is captioned by the text its ``pair`` names;
3. else by the first text (in ``items`` order) whose ``pair`` names the image (an image whose caption was
   stored before it was, or one of several images sharing a caption);
4. else it has no caption (None). :func:`item_titles` then falls back to the file the item came from
   (``source``).

Needs only the items table (``Workspace.items``: ``id``, ``modality``, ``text``, ``pair``; ``source`` for
titles), where ids are unique by construction.
"""
from __future__ import annotations

import pandas as pd


def captions(items: pd.DataFrame, rows: pd.DataFrame | None = None) -> pd.Series:
    """The caption of each of ``rows`` by the rule of this module, None where there is none.

    ``items``: the whole items table (the texts that may caption an image); ``rows``: the items to caption
    (columns ``id, modality, text, pair``; rows of ids not in ``items``, e.g. a reindex's all-NaN row, get
    None), default every item. Returns an object Series of str or None aligned with ``rows`` (same index,
    length len(rows)).
    """
    rows = items if rows is None else rows
    is_image = (rows["modality"] == "image").to_numpy()
    out = rows["text"].astype(object).where(~is_image & rows["text"].notna().to_numpy(), None)
    if not is_image.any():
        return out
    texts = items[items["modality"] == "text"]
    images = rows[is_image]
    paired = images["pair"].map(texts.set_index("id")["text"]).astype(object)
    bare = paired.isna().to_numpy()
    if bare.any():  # looked up only for the images whose pair names no text
        # several texts may name the same image: the first one captions it
        by_image = texts.dropna(subset=["pair"]).drop_duplicates("pair").set_index("pair")["text"]
        paired[bare] = images["id"][bare].map(by_image).to_numpy(dtype=object)
    out[is_image] = paired.where(paired.notna(), None).to_numpy(dtype=object)
    return out


def item_titles(items: pd.DataFrame, rows: pd.DataFrame | None = None, limit: int = 80) -> pd.Series:
    """One short plain line per row for tables and galleries: its caption (:func:`captions`), else the file
    it came from (``source``), else ''; cut to ``limit`` characters. A str Series aligned with ``rows``
    (default every item)."""
    rows = items if rows is None else rows
    caption = captions(items, rows)
    head = caption.where(caption.notna(), rows["source"])
    return head.fillna("").astype(str).str.slice(0, limit)
