"""Map: UMAP/PCA projection of the chosen model's vectors — colour, pairs, thumbnails, selection."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from core.encoders import modalities_of
from core.export import (
    map_html,
    metadata_columns,
    parquet_bytes,
    safe_csv_bytes,
    selection_table,
)
from core.items import captions, item_titles
from core.mapview import (
    COLOUR_CLUSTER,
    COLOUR_LABELS,
    COLOUR_SIMILARITY,
    NAMES_OFF,
    PARAMETERS,
    QUALITY_COLOURS,
    MapParams,
    colour_choices,
    view_figure,
)
from core.plots import gap_figure, map_figure
from pages import ui

MIN_ITEMS = 4
MAX_PAIR_LINES = 5000
MAX_GALLERY = 40
SAMPLE_GALLERY = 10
MAX_TABLE_ROWS = 1000
N_NEIGHBOURS = 10  # true neighbours listed and drawn for a single selected point
NAME_LEVELS = PARAMETERS["names"].choices
MAX_MAP_POINTS = 50_000  # maps of more items are fitted on a sample of this size, the rest placed (core.projection)
MATCHES_ON_SAMPLE = 200  # on a sampled map, the best matches of a text among all items are added
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]}
MAP_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": "jointscope-map", "scale": 2}}


# ---- helpers (no widgets) -----------------------------------------------------------------------
def view_key(res) -> str:
    """Names the drawn point set: the map file, plus added search matches (see ui.map_with_matches)."""
    return str(res.path) + res.extra.get("view", "")


def sample_rows(mask: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Up to k row positions where ``mask`` is true, a seeded sample in ascending order."""
    rows = np.flatnonzero(mask)
    if len(rows) > k:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=k, replace=False))
    return rows


MAP_STAGES = {"neighbours": (0.0, 0.1, "finding neighbours"), "layout": (0.1, 0.85, "laying out"),
              "placing": (0.1, 0.85, "placing new items"), "trust": (0.85, 1.0, "measuring trust")}


# ---- sections -----------------------------------------------------------------------------------
P = PARAMETERS  # bounds, choices, defaults and help of every setting (core.mapview)
METHOD_LABELS = {"umap": "UMAP", "pca": "PCA"}
DIM_LABELS = {2: "2-D", 3: "3-D"}
URL_PARAMS = {  # query parameter: (widget key, default) — a reload or a copied link restores the map
    "method": ("map_method", METHOD_LABELS[P["method"].default]), "view": ("map_dim", DIM_LABELS[P["dim"].default]),
    "gap": ("map_gap", P["gap_corrected"].default), "neighbors": ("map_neighbors", P["n_neighbors"].default),
    "min_dist": ("map_min_dist", P["min_dist"].default), "colour": ("map_colour", COLOUR_LABELS[P["colour"].default]),
    "k": ("map_k", P["k"].default), "text": ("map_query", P["text"].default),
    "pairs": ("map_pairs", P["pairs"].default), "thumbs": ("map_thumbs", P["thumbnails"].default),
    "density": ("map_density", P["density"].default),
    "names": ("map_names", P["names"].default)}


def controls(present: dict[str, int], meta: list[str], can_text: bool) -> MapParams | None:
    """The map's widgets in two compact rows; returns the chosen view (None: no modality chosen). Their
    values live in the URL; bounds, choices and defaults come from core.mapview.PARAMETERS."""
    ss = st.session_state
    ui.bind_url(URL_PARAMS)
    keys = colour_choices(meta, text=can_text, quality=True, metadata_first=True)
    label = {k: COLOUR_LABELS.get(k, k) for k in keys}
    options = list(label.values())
    for param, allowed in (("method", tuple(METHOD_LABELS.values())), ("view", tuple(DIM_LABELS.values())),
                           ("colour", options), ("names", NAME_LEVELS)):
        key, default = URL_PARAMS[param]
        if ss.get(key) not in allowed:  # a link from another workspace or an edited URL
            ss[key] = default
    for name, key in (("n_neighbors", "map_neighbors"), ("min_dist", "map_min_dist"), ("k", "map_k")):
        ss[key] = P[name].clamp(ss.get(key))
    r1 = st.columns([1.1, 0.9, 2.2, 1.2, 1.0], vertical_alignment="bottom")
    method = r1[0].radio("Method", list(METHOD_LABELS.values()), horizontal=True, key="map_method",
                         help=P["method"].help)
    dim = r1[1].radio("View", list(DIM_LABELS.values()), horizontal=True, key="map_dim")
    mods = list(present)
    kept = [m for m in ss.get("map_modalities", mods) if m in mods]
    if not kept and ss.get("map_modalities"):  # another workspace or model: start from all of them
        kept = mods
    ss["map_modalities"] = kept
    chosen = r1[2].multiselect("Modalities", mods, key="map_modalities",
                               format_func=lambda m: f"{m} ({present[m]})")
    gap = r1[3].toggle("gap-corrected", key="map_gap",
                       help=P["gap_corrected"].help + " The gap numbers above the map always describe the "
                                                      "uncorrected space.")
    with r1[4].popover("UMAP settings", disabled=method != "UMAP", width="stretch"):
        st.slider("neighbours", P["n_neighbors"].low, P["n_neighbors"].high, key="map_neighbors",
                  help=P["n_neighbors"].help)
        st.slider("minimum distance", P["min_dist"].low, P["min_dist"].high, step=0.01, key="map_min_dist",
                  help=P["min_dist"].help)
    r2 = st.columns([1.6, 1.6, 1.0, 1.0, 1.0, 1.0], vertical_alignment="bottom")
    colour = colour_key_of(r2[0].selectbox("Colour by", options, key="map_colour"), label)
    names = r2[5].selectbox("Cluster names", NAME_LEVELS, key="map_names",
                            help="Clusters found in the embedding space (k-means), named by the model's own text "
                                 "side (zero-shot over its vocabulary) or, without one, by their captions' "
                                 "distinctive words (c-TF-IDF). Coarse: a few large clusters; fine: each split. "
                                 "Click a name (or a row of the table under the map) to select its points.")
    k, query = P["k"].default, ""
    if colour == COLOUR_CLUSTER:
        k = r2[1].slider("clusters (k)", P["k"].low, P["k"].high, key="map_k")
    elif colour == COLOUR_SIMILARITY:
        query = r2[1].text_input("Text", key="map_query", placeholder="e.g. a red circle")
    pairs = r2[2].toggle("pair lines", key="map_pairs", help=P["pairs"].help)
    thumbs = r2[3].toggle("thumbnails", key="map_thumbs", disabled=dim == "3-D",
                          help="Draw the images in view at their points (up to 150, spread over the view); zoom "
                               "in to see more of them (2-D).")
    density = r2[4].toggle("density", key="map_density", disabled=dim == "3-D",
                           help=P["density"].help + " Useful when there are too many points to see them one by one.")
    ui.write_url(URL_PARAMS)
    if not chosen:
        return None
    raw = {"method": method, "dim": 3 if dim == "3-D" else 2,
           "modalities": None if set(chosen) == set(mods) else sorted(chosen), "gap_corrected": gap,
           "n_neighbors": ss["map_neighbors"], "min_dist": ss["map_min_dist"], "colour": colour, "k": k,
           "text": query, "pairs": pairs, "thumbnails": thumbs, "density": density, "names": names}
    return MapParams.from_dict(raw, columns=meta, text=can_text)


def colour_key_of(choice: str, label: dict[str, str]) -> str:
    """The colouring (core.mapview key or metadata column) a 'Colour by' option names."""
    return next(k for k, v in label.items() if v == choice)


def view_spinner(params: MapParams, model: str) -> str:
    """What building the view waits for, in words."""
    if params.colour == COLOUR_CLUSTER:
        return "Clustering…"
    if params.colour == COLOUR_SIMILARITY and params.text:
        return ui.plain(f"Encoding the text with {model}…")
    if params.colour in QUALITY_COLOURS:
        return "Measuring quality…"
    return "Naming the clusters…" if params.names != NAMES_OFF else "Preparing the map…"


def metrics_row(ws, model, res, last: dict | None) -> None:
    gap = ui.modality_gap(ui.data_key(ws, model))
    cols = st.columns(5)
    cols[0].metric("points", f"{res.n:,}", help="Items of the chosen modalities with a vector for this model"
                   + (f" (a sample of {res.n_total:,})." if res.sampled else "."))
    cols[1].metric("trustworthiness", f"{res.trustworthiness:.3f}",
                   help="scikit-learn's trustworthiness (10 neighbours, on a sample of up to 2,000 points): "
                        "1.0 means no point has map neighbours that are far away in the space.")
    cols[2].metric("mean trust", f"{float(np.nanmean(res.trust)):.2f}" if np.isfinite(res.trust).any() else "—",
                   help="Average share of each point's 10 nearest neighbours in the space that are also "
                        "its neighbours on the map. Colour by trust to see where the map misleads.")
    if gap["centroid_distance"] is not None:
        cols[3].metric("modality gap", f"{gap['centroid_distance']:.3f}",
                       help="Distance between the image centroid and the text centroid (unit vectors, "
                            "uncorrected space). 0 = no gap.")
    else:
        cols[3].metric("modality gap", "—", help="Needs both images and texts with vectors.")
    if gap["pair_cosine"] is not None:
        fit = ui.model_fit(ws, model) or {}  # a green arrow only for a difference beyond noise
        significant = bool(fit.get("evidence", {}).get("pair_cosine_significant"))
        cols[4].metric("true-pair cosine", f"{gap['pair_cosine']:.3f}",
                       delta=f"{gap['pair_cosine'] - gap['random_pair_cosine']:+.2f} vs random",
                       delta_color="normal" if significant else "off",
                       delta_arrow="auto" if significant else "off",
                       help=f"Mean cosine of {gap['n_pairs']} image–caption pairs; random image–text pairs: "
                            f"{gap['random_pair_cosine']:.3f} (uncorrected space)."
                            + ("" if significant else " The difference is not beyond noise here."))
    else:
        cols[4].metric("true-pair cosine", "—", help="Needs images paired with captions.")
    what = (f"{res.method.upper()} {res.dim}-D map of {res.n:,} points"
            + (", gap-corrected" if res.gap_corrected else ""))
    if res.n_fitted < res.n:
        how = ("projected onto its components" if res.method == "pca" else
               "placed next to their nearest sample items (their trust compares them with the sample)")
        st.caption(f"Every one of the {res.n:,} items is on the map: {res.method.upper()} was fitted on a random "
                   f"sample of {res.n_fitted:,} and the other {res.n - res.n_fitted:,} were {how}.")
    if last and last.get("path") == str(res.path):
        how = {"fit": "computed", "incremental": f"{last['n_new']} new items placed"}.get(last["cache"], "read")
        st.caption(f"{what} · {how} in {last['seconds']:.1f} s and saved in the workspace")
    else:
        st.caption(f"{what} · read from the workspace's cache in {res.seconds:.2f} s")
    if gap["random_pair_cosine"] is not None:
        with st.expander("Modality gap"):
            st.plotly_chart(gap_figure(gap), key="gap_chart", config=PLOT_CONFIG)
            st.caption((f"On a sample of {gap['sampled']:,} items with their partners. " if gap.get("sampled") else "")
                       + f"{gap['n_a']} images, {gap['n_b']} texts, {gap['n_pairs']} true pairs. True pairs well "
                       "above random ones mean the model aligns images with their captions; a large centroid "
                       "distance means the two modalities sit apart (try the gap-corrected map).")


def point_neighbours(view, row: int) -> pd.DataFrame:
    """The true neighbours (original space) of the map's point at ``row``: row, cosine, map_rank, id, item."""
    return ui.true_neighbours(ui.data_key(view.ws, view.model), view_key(view.res), row, N_NEIGHBOURS, view)


def draw_map(ws, model, view, where) -> None:
    """The map of ``view`` into the container ``where``: a 2-D map with the WebGL map (:mod:`pages.ui.scatter`) —
    every point drawn, lasso/box/click and cluster names select, hover captions and thumbnails fetched for the rows
    that need them — or a 3-D map with plotly (no selection)."""
    box = where
    if view.res.dim == 2:
        webgl_map(ws, view, box)
    else:
        plotly_3d(view, box)
    left, right = box.columns([4, 1], vertical_alignment="center")
    if view.res.dim == 2:
        left.caption(f"All {view.res.n:,} points: drag to pan, scroll to zoom; lasso, box and a PNG of the view are in "
                     "the map's toolbar, a click on a point or a cluster's name selects it. The selection is kept for "
                     "Search, Concepts, Analogies and the downloads until you press Clear selection.")
    else:
        left.caption("Drag to rotate (a PNG of the view is in the chart's toolbar). Selecting points works on the "
                     "2-D map only.")
    right.download_button(
        "Map as HTML", lambda: map_html(ws, model, view.res, view=view.with_selection([])),
        file_name=f"{ws.name}-map.html", mime="text/html", icon=":material/download:", key="dl_map_html",
        on_click="ignore", help="One file that opens in any browser without the app or a network: every point "
                                "coloured as here, captions on hover, thumbnails for a sample, the legend.")


def plotly_3d(view, where) -> None:
    """A 3-D map with plotly (rotate, zoom; no selection)."""
    res, params = view.res, view.params
    view = view.with_selection([])
    if view.note:
        where.caption(view.note)
    pairs = None
    if params.pairs:
        pairs = view.pair_rows()
        if len(pairs) > MAX_PAIR_LINES:
            where.caption(f"Lines for a sample of {MAX_PAIR_LINES:,} of {len(pairs):,} pairs.")
            pairs = pairs[sample_rows(np.ones(len(pairs), bool), MAX_PAIR_LINES)]
    data = params.data_params()
    fig_key = "|".join(map(str, (ui.data_key(view.ws, view.model), view_key(res), data.colour, data.k, data.text,
                                 None if pairs is None else len(pairs), params.names)))

    def build():
        hover = ui.map_hover(ui.data_key(view.ws, view.model), view_key(res), view)  # the same for every colouring
        return view_figure(view, hover=hover, pair_rows=pairs,
                           uirevision=f"{res.method}-{res.dim}-{res.gap_corrected}")

    where.plotly_chart(ui.cached_figure(fig_key, build), key="map_chart_3d", config=MAP_CONFIG)


def _map_tag(res) -> str:
    """A short name of the drawn map (its file and added points): a view is kept for this map only."""
    import hashlib

    return hashlib.blake2b(view_key(res).encode(), digest_size=4).hexdigest()


def keep_view(res, view: dict) -> None:
    """Remember the view the browser reports for map ``res`` (this session; the browser keeps it over a rerun).
    Not in the URL: a query parameter written from Python makes the browser draw the page's elements anew,
    and the map would be sent again at every zoom."""
    st.session_state["map_webgl_view"] = {"map": _map_tag(res), "view": view}


def kept_view(res) -> dict | None:
    """The view kept for map ``res``; None for another map, whose coordinates it would not fit."""
    kept = st.session_state.get("map_webgl_view")
    return kept["view"] if isinstance(kept, dict) and kept.get("map") == _map_tag(res) else None


def webgl_map(ws, view, where) -> None:
    """The 2-D map (:func:`pages.ui.scatter.scatter_map`): what the user selected on it (lasso, box, click, a
    cluster's name) becomes the workspace's selection, drawn back in the same run."""
    from core.plots import colorscale_hex
    from pages.ui.scatter import current_state, scatter_map

    ss, res, params = st.session_state, view.res, view.params
    key = f"map_webgl_{ss.get(ui.WORKSPACE_ROUND, 0)}"  # kept through Clear selection: the map is not resent
    state = current_state(key, res.n, data_version=view_key(res))
    rows = state["selection"]
    if len(rows):
        digest = (view_key(res), state["token"], len(rows), hash(rows.tobytes()))
        if digest != ss.get("map_webgl_event"):  # a new lasso, box or click
            ss["map_webgl_event"] = digest
            ui.set_selection(ws, res.ids[rows].astype(str).tolist())
    if state["label_click"] is not None and state["label_click"] != ss.get("map_label_click"):  # a new click
        ss["map_label_click"] = state["label_click"]
        chosen = str(state["label_clicked"])
        ui.set_selection(ws, [i for lab in view.labels if str(lab["cluster"]) == chosen for i in lab["ids"]])
    if state["view"]:
        keep_view(res, state["view"])
    view = view.with_selection(ui.selection(ws))
    notes = [view.note] if view.note else []  # written below the map: the map stays the container's first element
    lines = []
    if len(view.selection) == 1:  # one point: its true neighbours
        row = int(view.selection[0])
        lines.append([(row, int(r)) for r in point_neighbours(view, row)["row"]])
    if params.pairs:
        pairs = view.pair_rows()
        if not len(pairs):
            notes.append("No image–caption pairs among the mapped items.")
        elif len(pairs) > MAX_PAIR_LINES:
            notes.append(f"Lines for a sample of {MAX_PAIR_LINES:,} of {len(pairs):,} pairs.")
            pairs = pairs[sample_rows(np.ones(len(pairs), bool), MAX_PAIR_LINES)]
        lines.append([tuple(map(int, p)) for p in pairs])
    lines = [p for part in lines for p in part]
    colour = ({"codes": view.codes, "categories": view.categories, "palette": view.palette}
              if view.codes is not None else
              {"values": view.values, "colorscale": colorscale_hex(view.colorscale), "value_range": view.value_range}
              if view.values is not None else {})
    with where:
        scatter_map(key=key, x=view.x, y=view.y, **colour, colour_title=view.colour_title, labels=list(view.labels),
                    selected=view.selection if len(view.selection) else None,
                    lines=np.asarray(lines, dtype=np.int32).reshape(-1, 2) if lines else None,
                    density=view.density_grid() if params.density else None,
                    view=kept_view(res), hover_text=view.hover_text,
                    thumbnails=view.thumbnail_items if params.thumbnails else None,
                    data_version=view_key(res))
        for note in notes:
            st.caption(note)


METHOD_NOTES = {
    "zero-shot": "named zero-shot with the model's own text side: the words of its vocabulary closest to each "
                 "cluster's mean vector, minus their mean closeness to all clusters (score; runner-up beside it)",
    "c-tf-idf": "named by the words most distinctive of each cluster's captions and text metadata (class-based "
                "TF-IDF; this model encodes no text)",
    "c-tf-idf+model": "named by the words and phrases most distinctive of each cluster's texts (class-based "
                      "TF-IDF), re-ranked by closeness to the cluster's mean vector",
    "metadata": "named by the metadata value most of the cluster's items share (its share is the score)",
    "none": "not named: these items have no text and the model encodes none",
}


def clusters_section(ws, model: str, res, labels: list[dict]) -> None:
    """The named clusters as a table under the map; choosing a row selects the cluster's points."""
    if not labels:
        return
    ss = st.session_state
    level = labels[0]["level"]
    table = ui.cluster_table(ui.data_key(ws, model), view_key(res), level, labels)
    with st.expander(f"Named clusters ({len(labels)}, {level})", expanded=True, icon=":material/label:"):
        notes = "; ".join(dict.fromkeys(METHOD_NOTES.get(d["method"].split(":")[0], "") for d in labels))
        st.caption(f"Clusters of the embedding space (k-means), {notes}. "
                   "Choose a row to select the cluster's points.")
        key = f"clusters_table_{ss.get(ui.SELECTION_ROUND, 0)}"
        event = st.dataframe(table, hide_index=True, key=key, on_select="rerun", selection_mode="single-row",
                             column_config={"score": st.column_config.NumberColumn("score", format="%.3f"),
                                            "share": st.column_config.ProgressColumn(
                                                "share", format="percent", min_value=0.0, max_value=1.0,
                                                help="Share of the cluster's texts that hold the name (a "
                                                     "metadata name: of its items that hold the value)"),
                                            "top items": st.column_config.TextColumn("top items", width="large")})
        chosen = event.selection.rows if event is not None else []
        if chosen and (key, level, chosen[0]) != ss.get("clusters_event"):
            ss["clusters_event"] = (key, level, chosen[0])
            ui.set_selection(ws, labels[chosen[0]]["ids"])
            st.rerun()


def gallery(ws, items: pd.DataFrame, rows, *, width: int, captions: bool) -> None:
    rows = [i for i in rows if isinstance(items["thumb"].iloc[i], str)]
    if not rows:
        return
    caps = None
    if captions:  # each image's caption, else its file (core.items.item_titles)
        caps = [ui.plain(t, limit=28) for t in item_titles(ws.items, items.iloc[rows], limit=200)]
    st.image([str(ws.abspath(items["thumb"].iloc[i])) for i in rows], caption=caps, width=width)


def selection_labels(ws, model: str, sel: pd.DataFrame) -> None:
    """Zero-shot labels of the selection (bundled vocabulary), on demand; needs a text encoder."""
    if not ui.can_encode(model, "text"):
        return
    if not st.toggle("Label this selection", key="map_label_selection",
                     help="Rank the bundled vocabulary (the model's own words when it ships them, as demo does) "
                          "by how much closer each word is to the selected items than to the whole workspace "
                          "(cosine with the selection's mean minus cosine with the workspace's mean), so words "
                          "that fit everything do not win."):
        return
    with ui.guard(), st.spinner("Labelling…"):
        labels = ui.item_labels(ui.data_key(ws, model), tuple(sel["id"].astype(str)), contrast=True)
        st.dataframe(labels[["label", "score", "cosine"]], hide_index=True, key="selection_labels",
                     column_config={"score": st.column_config.NumberColumn("vs workspace", format="%+.3f"),
                                    "cosine": st.column_config.NumberColumn("cosine", format="%.3f")})


def side_panel(ws, view, selected_rows) -> None:
    """Beside the map: a sample of its images, or what is selected with the actions on it."""
    model, res, items = view.model, view.res, view.items
    is_image = (items["modality"] == "image").to_numpy()
    if not selected_rows:
        if not is_image.any():
            st.caption("No images on this map. Select points to list them below the map.")
            return
        st.markdown("**Images on this map**")
        st.caption("A sample. Select points on the map to list them instead.")
        gallery(ws, items, sample_rows(is_image, SAMPLE_GALLERY).tolist(), width=88, captions=True)
        return
    sel = items.iloc[selected_rows]
    st.markdown(f"**{len(sel):,} selected**")
    if len(selected_rows) == 1:
        neighbours_panel(view, selected_rows[0])
    st.caption("Listed below the map. The selection stays while you use the other pages.")
    st.button("Clear selection", icon=":material/deselect:", key="clear_selection", on_click=ui.clear_selection)
    if st.button("Search from here", icon=":material/search:", key="search_from_here", type="primary",
                 help="Open Search with the selected items as the query."):
        st.session_state["search_ids"] = [str(i) for i in sel["id"]]
        st.switch_page("pages/search.py")
    out = selection_table(ws, sel["id"].tolist(), res.coords[selected_rows])
    st.download_button("CSV", safe_csv_bytes(out), file_name="selection.csv", mime="text/csv",
                       icon=":material/download:", key="dl_csv", on_click="ignore",
                       help="The selected items with their metadata and map coordinates.")
    st.download_button("Parquet", parquet_bytes(out), file_name="selection.parquet",
                       mime="application/vnd.apache.parquet", icon=":material/download:", key="dl_parquet",
                       on_click="ignore", help="The selected items with their metadata and map coordinates.")
    selection_labels(ws, model, sel)
    ui.delete_items_button(ws, sel, what=f"the {ui.items_word(len(sel))} selected", key="map_delete",
                           on_done=ui.clear_selection)


def neighbours_panel(view, row: int) -> None:
    """One selected point: its trust and its true neighbours (lines on the map, listed here)."""
    near, res = point_neighbours(view, row), view.res
    kept = int((near["map_rank"] <= N_NEIGHBOURS).sum())
    st.caption(f"Trust {float(res.trust[row]):.2f}: {kept} of its {len(near)} nearest neighbours in the space are "
               f"among its {N_NEIGHBOURS} nearest on the map. Lines join it to them; map rank 1 is its nearest "
               "point on the map, a large rank means the map tore that neighbour away.")
    # the narrow side column: the two numbers first and small, so "map rank" is never cut off
    table = near[["map_rank", "cosine", "item", "id"]].rename(columns={"map_rank": "map rank"})
    st.dataframe(table, hide_index=True, key="neighbours_table",  # cells are plain text: no escaping needed
                 column_config={"map rank": st.column_config.NumberColumn("map rank", format="%d", width="small"),
                                "cosine": st.column_config.NumberColumn("cosine", format="%.3f", width="small"),
                                "item": st.column_config.TextColumn("true neighbour", width="medium")})


def selection_section(ws, items, selected_rows) -> None:
    sel = items.iloc[selected_rows]
    st.subheader("Selection")
    by_mod = sel["modality"].value_counts()
    st.caption(f"{len(sel)} selected: " + ", ".join(f"{v} {k}{'' if v == 1 else 's'}" for k, v in by_mod.items()))
    imgs = [i for i in selected_rows if items["modality"].iloc[i] == "image"]
    if imgs:
        if len(imgs) > MAX_GALLERY:
            st.caption(f"The first {MAX_GALLERY} of {len(imgs)} images:")
        gallery(ws, items, imgs[:MAX_GALLERY], width=80, captions=False)
    show = sel.head(MAX_TABLE_ROWS)
    meta = metadata_columns(sel)
    table = pd.DataFrame({"thumb": [ui.thumb_data_uri(str(ws.abspath(t))) if isinstance(t, str) else None
                                    for t in show["thumb"]]}, index=show.index)
    caption = captions(ws.items, show)  # an image shows its caption (core.items)
    table = pd.concat([table, show[["modality"]], caption.rename("text"), show[["source", *meta, "id"]]], axis=1)
    st.dataframe(table, hide_index=True, key="selection_table", row_height=56, placeholder="",  # a text: no thumb
                 column_config={"thumb": st.column_config.ImageColumn("thumb", width="small"),
                                "text": st.column_config.TextColumn("caption / text", width="large")})
    if len(sel) > MAX_TABLE_ROWS:
        st.caption(f"Showing the first {MAX_TABLE_ROWS:,} of {len(sel):,}; the downloads hold all.")


def map_section(ws, model: str, present: dict[str, int]) -> None:
    try:
        can_text = "text" in modalities_of(model)
    except ValueError:
        can_text = False
    all_items = ws.items
    has_vec = all_items["modality"].isin(list(present))
    opt = controls(present, metadata_columns(all_items[has_vec]), can_text)
    if opt is None:
        st.info("Choose at least one modality to map.", icon=":material/info:")
        return
    n_chosen = sum(present[m] for m in (opt.modalities or present))
    if n_chosen < MIN_ITEMS:
        st.warning(f"A map needs at least {MIN_ITEMS} items with vectors; the chosen modalities have "
                   f"{n_chosen}. Add items on the Data page and embed them, or choose more modalities.",
                   icon=":material/warning:")
        return
    params = {**opt.map_kwargs(), "modalities": opt.modalities,  # a tuple: part of the cache key
              "max_points": MAX_MAP_POINTS}
    metrics_box = st.container()
    map_col, side_col = st.columns([3, 1])
    res = ui.stored_map(ws, model, params)
    # the map's block keeps its place and kind from run to run: an ``st.empty`` sent first and filled later
    # would let the browser draw the empty slot in between and mount the map anew (a lost lasso, a redraw)
    chart = map_col.container() if res is not None else map_col.empty()
    if res is None:
        key = ui.data_key(ws, model)
        status = map_col.empty()
        if opt.method == "umap":
            coords, ids, mods = ui.pca_preview(key, params["modalities"], opt.dim, opt.gap_corrected,
                                              MAX_MAP_POINTS)
            with chart.container():
                st.caption("Preview (PCA) — the UMAP map is being computed and replaces it when done.")
                st.plotly_chart(map_figure(coords, color=mods, color_title="modality", dim=opt.dim,
                                           customdata=ids, uirevision="preview"),
                                key="map_preview", config=PLOT_CONFIG)
        bar = status.progress(0.0, text=f"{opt.method.upper()}: starting…")
        t0 = time.perf_counter()
        try:
            progress = ui.stage_progress(bar, MAP_STAGES, f"{opt.method.upper()}: ")
            res = ui.compute_map(ws, model, params, progress=progress)
        finally:
            status.empty()
        st.session_state["map_last"] = {"path": str(res.path), "seconds": time.perf_counter() - t0,
                                        "cache": res.cache, "n_new": res.n_new}
        chart = chart.container()  # the map takes the preview's place
    with metrics_box:
        metrics_row(ws, model, res, st.session_state.get("map_last"))
    if opt.colour == COLOUR_SIMILARITY and opt.text:
        ui.unknown_words_note(model, [opt.text])
    if res.sampled and opt.colour == COLOUR_SIMILARITY and opt.text:
        with st.spinner(ui.plain(f"Searching every item for the best {MATCHES_ON_SAMPLE} matches…")):
            res = ui.map_with_matches(ui.data_key(ws, model), str(res.path), opt.text, MATCHES_ON_SAMPLE, res)
        st.caption(f"{res.extra.get('placed', 0)} of the text's {MATCHES_ON_SAMPLE} best matches among all items "
                   "were not in the sample; they are placed into the map (trust not measured for them).")
    quality = None
    if opt.colour in QUALITY_COLOURS:
        with st.spinner("Measuring quality…"):
            quality = ui.quality_flags(ui.data_key(ws, model))
    with st.spinner(view_spinner(opt, model)):
        view = ui.map_view(ws, model, res, opt, map_path=view_key(res), quality=quality)
    draw_map(ws, model, view, chart)
    selected_rows = view.with_selection(ui.selection(ws)).selection.tolist() if res.dim == 2 else []
    items = view.items
    with side_col:
        side_panel(ws, view, selected_rows)
    with ui.guard():
        clusters_section(ws, model, res, list(view.labels))
    if selected_rows:
        selection_section(ws, items, selected_rows)


# ---- page ---------------------------------------------------------------------------------------
def start_here(ws) -> None:
    """On the demo workspace while it is the only one: one line pointing to the Data page."""
    if ws.name == ui.DEMO_NAME and ui.list_workspaces() == [ui.DEMO_NAME]:
        label = "Start here: this is the demo world. Bring your own images, texts or tables on the Data page."
        try:
            st.page_link("pages/data.py", icon=":material/arrow_forward:", label=label)
        except StreamlitAPIException:  # the page runs alone (no st.navigation), e.g. in tests
            st.caption(label)


with ui.page("Map", purpose="to map its vectors") as (ws, model):
    if ws is not None:
        start_here(ws)
        ui.deleted_message(ws)
        present = ui.vector_modalities(ui.data_key(ws, model))
        n = sum(present.values())
        if n == 0:
            ui.no_vectors_info(ws, model)
        elif n < MIN_ITEMS:
            st.warning(f"A map needs at least {MIN_ITEMS} items with vectors; this workspace has {n}. "
                       "Add more items on the Data page and embed them.", icon=":material/warning:")
        else:
            ui.fit_note(ws, model)
            map_section(ws, model, present)
