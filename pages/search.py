"""Search: the items nearest to a text, an uploaded image or items of the workspace (any modality to any
modality), with result filters, zero-shot labels of the query and text-defined axes."""
from __future__ import annotations

import re

import streamlit as st

from core.plots import axes_figure
from core.search import hits_frame
from pages import ui

TEXT, IMAGE, ITEMS = "Text", "Image", "Items"
MODES = (TEXT, IMAGE, ITEMS)
ALL = "all"
NO_FILTER = "(no filter)"
INBOX = "search_ids"          # list[str] — set by the Map's "Search from here" and the cards' "More like this"
QUERY_IDS = "search_query_ids"  # list[str] — the items the query is made of (Items mode)
AXES = "search_axes"          # dict | None — the text pairs of the drawn axes
MAX_QUERY_THUMBS = 12
MAX_LABEL_WORDS = 500
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]}
# axes that mean something on the demo world (colour/shape metadata), and Parallax's own examples otherwise
DEMO_AXES = (("a red object", "a blue object"), ("a circle", "a square"))
GENERIC_AXES = (("day", "night"), ("a photo", "a sketch"))
URL_PARAMS = {"mode": ("search_mode", TEXT), "q": ("search_text", ""), "k": ("search_k", 15)}


# ---- state --------------------------------------------------------------------------------------
def take_inbox(model: str | None) -> None:
    """Items handed over by another page (or a card) become the query, in Items mode; a model that
    encodes no text starts in Items mode too."""
    ss = st.session_state
    ids = ss.pop(INBOX, None)
    if ids:
        ss[QUERY_IDS] = [str(i) for i in dict.fromkeys(ids)]
        ss["search_mode"] = ITEMS
    elif "search_mode" not in ss and model and not ui.can_encode(model, "text"):
        ss["search_mode"] = ITEMS


def _more_like(item_id: str) -> None:
    st.session_state[INBOX] = [item_id]


def _use_selection(ids: list[str]) -> None:
    st.session_state[QUERY_IDS] = list(ids)


def _clear_items() -> None:
    st.session_state[QUERY_IDS] = []
    st.session_state["search_item_input"] = ""


def parse_ids(text: str) -> list[str]:
    """Item ids typed or pasted: separated by spaces or commas, with or without ``item:``."""
    out = [t[5:] if t.startswith("item:") else t for t in re.split(r"[\s,;]+", text.strip()) if t]
    return [t for t in dict.fromkeys(out) if t]


# ---- sections -----------------------------------------------------------------------------------
def query_section(ws, model: str) -> tuple[list[str] | None, str]:
    """The query widgets; returns (terms or None, a short description of the query)."""
    ss = st.session_state
    left, right = st.columns([1, 3], vertical_alignment="top")
    mode = left.radio("Search by", MODES, key="search_mode", horizontal=True,
                      help="A text, an image file, or items of the workspace (their mean: 'more like these').")
    with right:
        if mode == TEXT:
            if not ui.can_encode(model, "text"):
                st.info(ui.plain(f"Model {model} cannot encode texts, so it cannot search by text. Search by "
                                "items, or choose a model that encodes texts in the sidebar."),
                        icon=":material/info:")
                return None, ""
            q = st.text_input("Query", key="search_text", placeholder="e.g. a red circle — then press Enter")
            return ([q.strip()], f"“{q.strip()}”") if q.strip() else (None, "")
        if mode == IMAGE:
            if not ui.can_encode(model, "image"):
                what = ("is text-only: it cannot encode an uploaded image" if ui.can_encode(model, "text")
                        else "encodes no images (its vectors came with the data)")
                st.info(ui.plain(f"Model {model} {what}. Choose a model that encodes images (e.g. demo) in the "
                                "sidebar, or search by text or by items."), icon=":material/hide_image:")
                return None, ""
            f = st.file_uploader("Query image", type=ui.IMAGE_TYPES, key="search_image",
                                 help="Encoded with the chosen model; a stored copy of it is left out of the results.")
            if f is None:
                return None, ""
            try:
                term = ui.image_upload_term(f)
            except ValueError as e:
                ui.show_error(e)
                return None, ""
            st.image(f.getvalue(), width=96)
            return [term], ui.upload_name(f.name)
        # items
        items = ui.items_frame(ws)
        by_id = items.set_index("id")
        ids = ss.get(QUERY_IDS) or []
        if ids and (by_id.index.get_indexer(ids) < 0).any():  # deleted since (e.g. in another tab)
            ids = ss[QUERY_IDS] = [i for i, j in zip(ids, by_id.index.get_indexer(ids)) if j >= 0]
            st.caption("Items of the query that were deleted are left out of it.")
        if not ids:
            sel = ui.selection(ws)
            row = st.columns([3, 1], vertical_alignment="bottom")
            typed = row[0].text_input("Item id(s)", key="search_item_input",
                                      placeholder="paste ids (item:<id> or bare, space-separated), or use "
                                                  "'More like this' on a result / the Map selection")
            row[1].button(f"Use the Map selection ({len(sel)})" if sel else "Use the Map selection",
                          key="search_use_selection", icon=":material/select:", disabled=not sel,
                          on_click=_use_selection, args=(sel,),
                          help=None if sel else "Select points on the Map first.")
            ids = parse_ids(typed)
            if not ids:
                return None, ""
        else:
            head = st.columns([3, 1], vertical_alignment="center")
            head[0].markdown(f"More like **{len(ids)}** item{'s' if len(ids) != 1 else ''} "
                             "(the mean of their vectors; they are left out of the results)")
            head[1].button("Clear", key="search_clear", icon=":material/close:", on_click=_clear_items)
        shown = by_id.reindex(ids[:MAX_QUERY_THUMBS])
        thumbs = [str(ws.abspath(t)) for t in shown["thumb"] if isinstance(t, str)]
        if thumbs:
            st.image(thumbs, width=56)
        texts = [t for t in shown["text"] if isinstance(t, str)][:3]
        if texts:
            st.caption(" · ".join(ui.plain(t, limit=60) for t in texts))
        desc = f"{len(ids)} items" if len(ids) > 1 else ui.term_label(f"item:{ids[0]}", by_id)
        return [f"item:{i}" for i in ids], desc


def result_controls(present: dict[str, int], meta: dict[str, list[str]]) -> tuple[str | None, dict, int]:
    """Result modality, metadata filter and k; returns (modality or None for all, filters, k)."""
    ss = st.session_state
    options = list(present) + ([ALL] if len(present) > 1 else [])
    if ss.get("search_modality") not in options:
        ss["search_modality"] = "image" if "image" in options else options[0]
    cols = st.columns([1.4, 1.0, 1.8, 1.2], vertical_alignment="bottom")
    modality = cols[0].radio("Results", options, key="search_modality", horizontal=True,
                             format_func=lambda m: ui.MODALITY_PLURAL.get(m, m) if m != ALL else "all")
    if ss.get("search_filter_col") not in [NO_FILTER, *meta]:  # another workspace: start unfiltered
        ss["search_filter_col"] = NO_FILTER
    col = cols[1].selectbox("Filter by", [NO_FILTER, *meta], key="search_filter_col",
                            help="Keep only results whose metadata column has one of the chosen values.")
    filters: dict = {}
    if col != NO_FILTER:
        values = cols[2].multiselect(ui.plain(f"{col} is one of"), meta[col], key=f"search_filter_{col}",
                                     placeholder="choose values")
        if values:
            filters = {col: values}
    else:
        cols[2].multiselect("Values", [], key="search_filter_none", disabled=True,
                            placeholder="choose a column to filter by" if meta else "no metadata columns")
    k = cols[3].slider("Results (k)", 1, 60, key="search_k")
    return (None if modality == ALL else modality), filters, int(k)


def labels_panel(ws, model: str, terms: list[str]) -> None:
    st.markdown("**Labels**")
    if not ui.can_encode(model, "text"):
        st.caption(ui.plain(f"Zero-shot labels need a model that encodes texts; {model} does not."))
        return
    table = st.container()
    words = st.text_area("Your words (optional)", key="search_vocab", height=68,
                         placeholder="e.g. red, blue, circle",
                         help="Comma-separated or one per line; empty: the bundled vocabulary (a model that ships "
                              "its own words, such as demo, uses those). Each word is encoded with the model and "
                              "ranked by cosine with the query (for several items: the mean of their vectors).")
    vocab = tuple(dict.fromkeys(w.strip() for w in re.split(r"[\n,]+", words) if w.strip()))[:MAX_LABEL_WORDS]
    with table:
        with st.spinner("Ranking the vocabulary…"):
            labels = ui.term_labels(ui.data_key(ws, model), tuple(terms), vocab or None, k=10)
        ui.unknown_words_note(model, vocab)
        st.dataframe(labels[["label", "score"]], hide_index=True, key="search_labels", width="stretch",
                     column_config={"label": st.column_config.TextColumn("label"),
                                    "score": st.column_config.NumberColumn("cosine", format="%.3f")})
        from core.vocabulary import model_vocabulary_file

        st.caption("Zero-shot: " + ("your words" if vocab else "the bundled vocabulary"
                                    + (" of this model (the words it was trained on)" if model_vocabulary_file(model)
                                       else ""))
                   + ", nearest to the query first.")


def results_section(ws, model: str, terms: list[str], desc: str, modality, filters: dict, k: int) -> None:
    key = ui.data_key(ws, model)
    with st.spinner("Searching…"):
        hits = ui.search_results(key, tuple(terms), k, modality, ui.filter_key(filters))
    main, side = st.columns([4, 1])
    with main:
        what = ui.MODALITY_PLURAL.get(modality, "items") if modality else "items"
        cond = "".join(ui.plain(f", {col} in {', '.join(v)}") for col, v in filters.items())
        st.markdown(f"**{len(hits)}** nearest {what} to {ui.plain(desc, limit=80)}{cond} "
                    "· score = cosine similarity")
        ui.unknown_words_note(model, terms, terms=True)
        if not hits:
            st.info("No item passes the filters. Choose other values or clear the filter.", icon=":material/info:")
        else:
            table = hits_frame(ws, hits)
            captions = dict(zip(table["id"], table["text"].where(table["text"].notna(), table["source"])))
            ui.result_cards(hits, key="search", captions={k_: str(v) for k_, v in captions.items()},
                           actions=[("More like this", _more_like, ":material/manage_search:",
                                     "Search again with this item as the query.")])
            with st.expander("Results as a table"):
                st.dataframe(table, hide_index=True, key="search_table",
                             column_config={"score": st.column_config.NumberColumn("score", format="%.3f"),
                                            "text": st.column_config.TextColumn("caption / text", width="large")})
    with side:
        labels_panel(ws, model, terms)


def axes_section(ws, model: str, meta: dict[str, list[str]]) -> None:
    """Text-defined axes (Parallax-style): items placed by their cosine with two text directions."""
    ss = st.session_state
    if not ui.can_encode(model, "text"):
        st.caption(ui.plain(f"Text-defined axes need a model that encodes texts; {model} does not."))
        return
    (xp, xn), (yp, yn) = DEMO_AXES if {"colour", "shape"} <= set(meta) else GENERIC_AXES
    st.caption("Each axis is a direction between two texts (positive − negative); an item's coordinate is the "
               "cosine of its vector with that direction.")
    with st.form("search_axes_form", border=False):
        r = st.columns(4)
        x_pos = r[0].text_input("x: towards", xp, key="axes_x_pos")
        x_neg = r[1].text_input("x: away from", xn, key="axes_x_neg")
        y_pos = r[2].text_input("y: towards", yp, key="axes_y_pos")
        y_neg = r[3].text_input("y: away from", yn, key="axes_y_neg")
        if st.form_submit_button("Draw the axes", icon=":material/insights:"):
            pairs = [p.strip() for p in (x_pos, x_neg, y_pos, y_neg)]
            if not all(pairs):
                st.warning("Give all four texts: two per axis.", icon=":material/warning:")
            else:
                ss[AXES] = {"x": pairs[:2], "y": pairs[2:]}
    spec = ss.get(AXES)
    if not spec:
        return
    ui.unknown_words_note(model, spec["x"] + spec["y"])
    colour = st.selectbox("Colour by", ["modality", *meta], key="axes_colour")
    with st.spinner("Placing the items on the axes…"):
        df = ui.axes_frame(ui.data_key(ws, model), tuple(spec["x"]), tuple(spec["y"]))
    hover = [f"{cap if isinstance(cap, str) else src}\n{mod}" for cap, src, mod
             in zip(df["caption"], df["source"], df["modality"])]
    fig = axes_figure(df["x"].to_numpy(), df["y"].to_numpy(), x_terms=tuple(spec["x"]), y_terms=tuple(spec["y"]),
                      color=df[colour].to_numpy(), color_title=colour, hover_text=hover,
                      customdata=df["id"].to_numpy())
    st.plotly_chart(fig, key="axes_chart", config=PLOT_CONFIG)
    st.caption(f"{len(df):,} items with a vector for this model.")


# ---- page ---------------------------------------------------------------------------------------
with ui.page("Search", purpose="to search its vectors") as (ws, model):
    take_inbox(st.session_state.get(ui.MODEL))  # before any widget of this page is drawn
    ui.bind_url(URL_PARAMS)
    if st.session_state.get("search_mode") not in MODES:
        st.session_state["search_mode"] = TEXT
    st.session_state["search_k"] = min(max(int(st.session_state["search_k"]), 1), 60)
    if ws is not None:
        present = ui.vector_modalities(ui.data_key(ws, model))
        if not present:
            ui.no_vectors_info(ws, model)
        else:
            ui.fit_note(ws, model)
            meta = ui.metadata_options(ui.data_key(ws))
            terms, desc = query_section(ws, model)
            modality, filters, k = result_controls(present, meta)
            if terms is None:
                if st.session_state.get("search_mode", TEXT) == TEXT and ui.can_encode(model, "text"):
                    st.caption("Type a query and press Enter. Try “a red circle” on the demo workspace.")
            else:
                with ui.guard():
                    results_section(ws, model, terms, desc, modality, filters, k)
            with st.expander("Text-defined axes", icon=":material/open_with:"), ui.guard():
                axes_section(ws, model, meta)
    ui.write_url(URL_PARAMS)
