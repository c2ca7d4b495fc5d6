"""Text for the UI: escaping user-derived text (:func:`plain`) and short plain labels of models, terms,
uploads and results. No Streamlit here.

User text is never rendered as HTML or Markdown: tables go through ``st.dataframe``, single values
through :func:`plain` (Markdown-escaped) or ``st.text`` / ``st.code``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from core.errors import shorten

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'%^])")


def plain(text: object, limit: int = 300) -> str:
    """One line of user-derived text, safe to pass to st.caption / st.error / st.info.

    Streamlit renders those as Markdown (links, images, colour directives); escaping every
    punctuation character makes the text show literally. Longer text ends after a whole word with "…".
    """
    s = shorten(" ".join(str(text).split()), limit)
    return _MD_SPECIAL.sub(r"\\\1", s)


def model_label(info: dict | None, model_id: str) -> str:
    """A model's name in the sidebar with where it comes from: vectors only, offline, or a download that
    needs a network (a hub model whose weights are not on this computer yet)."""
    if info is None:
        return f"{model_id} (vectors in workspace)"
    if info["available"]:
        return f"{model_id} (offline)"
    return f"{model_id} (download, needs a network)" if not info["bundled"] else f"{model_id} (not installed)"


def upload_name(name: str) -> str:
    """An uploaded file's own name without any folder part (uploads never choose where they land)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    return base if base not in ("", ".", "..") else "upload"


def term_label(term: str, items: pd.DataFrame | None = None, limit: int = 60) -> str:
    """A short plain label for a term: the text in quotes, an uploaded image's file name, an item's
    caption or source."""
    from core.search import parse_term

    t = parse_term(term)
    if t.kind == "text":
        s = f"“{t.value}”"
    elif t.kind == "image":
        s = f"image {Path(t.value).name}"
    else:
        s = f"item {t.value}"
        if items is not None and t.value in items.index:
            r = items.loc[t.value]
            if isinstance(r, pd.DataFrame):
                r = r.iloc[0]
            s = f"“{r['text']}”" if isinstance(r["text"], str) else str(r["source"] or s)
    return shorten(s, limit)


def hit_caption(hit: dict, captions: dict[str, str]) -> str:
    """What a result card says under its score: a text's text, an image's caption or file name."""
    if hit["modality"] == "text" and hit.get("text"):
        return str(hit["text"])
    return captions.get(hit["id"]) or str(hit.get("source") or hit["id"])
