"""Quality: how good the chosen model's space is, which items look wrong, and how another model differs.

Numbers and plots come from core.quality (cached in pages.ui.cached); every user text is shown through
ui.plain, st.text or st.dataframe, never as HTML.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.items import captions
from core.plots import gap_figure, histogram_figure, map_figure, recall_figure, spectrum_figure
from pages import ui

CONFIRM_ABOVE = 200_000  # items; larger workspaces are measured only after the user asks
MIN_ITEMS = 4
GALLERY = 12  # images per flag kind in the gallery
TABLE_ROWS = 200
K_CHOICES = [5, 10, 20, 50]
NO_COMPARE = "—"
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]}


# ---- helpers (no widgets) -----------------------------------------------------------------------
def num(x, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def item_table(ws, items: pd.DataFrame) -> pd.DataFrame:
    """Items by id with ``caption`` (:func:`core.items.captions`: a text's text, an image's caption)."""
    return items.assign(caption=captions(items)).set_index("id")


def cell(table: pd.DataFrame, item_id: str, col: str = "caption") -> str:
    """A text cell of an item (caption, text or source) as a string; '' when missing."""
    v = table[col].get(item_id) if col in table.columns else None
    return v if isinstance(v, str) else ""


def thumb_uri(ws, thumb) -> str | None:
    return ui.thumb_data_uri(str(ws.abspath(thumb))) if isinstance(thumb, str) else None


# ---- sections -----------------------------------------------------------------------------------
def headline(rep: dict) -> None:
    rk, gap, hub, ret = rep["rankme"], rep["modality_gap"], rep["hubness"], rep["retrieval"]
    cols = st.columns(6)
    cols[0].metric("RankMe", f"{rk['value']:.1f}", delta=f"of max {rk['max']}", delta_color="off", delta_arrow="off",
                   help="Effective rank (Garrido et al. 2023): exp of the entropy of the normalised singular "
                        "values. It counts the directions the vectors really use; compare it with its maximum "
                        "min(items, dimensions). Higher is better; a small share means dimensional collapse.")
    cols[1].metric("alignment", num(rep["alignment"]),
                   help="Mean squared distance between true image–caption pairs on the unit sphere (Wang & Isola "
                        "2020). 0 = every pair coincides, 2 = orthogonal, 4 = opposite. Lower is better.")
    cols[2].metric("uniformity", num(rep["uniformity"]),
                   help="log mean exp(−2·‖x − y‖²) over pairs of items (Wang & Isola 2020). From 0 (all items at "
                        "one point) down to about −4 for points spread evenly over a high-dimensional sphere: "
                        "more negative = more uniform, i.e. more of the space is used.")
    cols[3].metric("modality gap", num(gap["centroid_distance"]),
                   help="Distance between the image and the text centroids (unit vectors). 0 = no gap. CLIP-style "
                        "models typically show a clear gap; it is harmless for retrieval but distorts maps.")
    cols[4].metric("hubness skew", num(hub["skewness"], ".2f"),
                   help=f"Skewness of N_{hub['k']}, how often each item is among the {hub['k']} nearest neighbours "
                        "of the others. Near 0 = every item is a neighbour about equally often; above ~1 a few "
                        "hubs crowd every result list.")
    if ret and ret["image_to_text"]:
        r1 = ret["image_to_text"]["recall@1"]
        cols[5].metric("recall@1 image→text", num(r1, ".2f"),
                       delta=f"text→image {ret['text_to_image']['recall@1']:.2f}", delta_color="off", delta_arrow="off",
                       help="Share of images whose own caption is the nearest of all captions (and of captions "
                            "whose image is the nearest image). 1.0 = perfect pairing; chance is 1/number of "
                            "candidates.")
    else:
        cols[5].metric("recall@1 image→text", "—", help="Needs images paired with captions, both embedded.")
    share = rk["value"] / rk["max"] if rk["max"] else 0.0
    st.caption(f"{rep['n']:,} items, {rep['dim']}-d · RankMe uses {share:.0%} of the possible directions · "
               f"{rep['flags']['noisy_pair']} items in suspicious pairs, {rep['flags']['hub']} hubs, "
               f"{rep['flags']['outlier']} outliers (k = {rep['k']}) · measured in {rep['seconds']:.1f} s")


def rank_section(qa) -> None:
    rep = qa.report
    rk = rep["rankme"]
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(spectrum_figure(qa.singular_values, rankme=rk["value"], max_rank=rk["max"]),
                        key="quality_spectrum", config=PLOT_CONFIG)
    with right:
        rows = [{"set": "all items", "RankMe": rk["value"], "max": rk["max"], "uniformity": rep["uniformity"]}]
        for m, v in rk["by_modality"].items():
            rows.append({"set": f"{m}s", "RankMe": v["value"], "max": v["max"],
                         "uniformity": rep["uniformity_by_modality"].get(m)})
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="quality_rank_table",
                     column_config={"RankMe": st.column_config.NumberColumn(format="%.1f"),
                                    "uniformity": st.column_config.NumberColumn(format="%.3f")})
        st.caption("A spectrum that drops fast means the vectors live in few directions (low RankMe). "
                   "Uniformity per modality shows whether images or texts are the more crowded side.")


def gap_section(rep: dict) -> None:
    gap = rep["modality_gap"]
    if gap["random_pair_cosine"] is None:
        st.caption("The modality gap needs both images and texts with vectors.")
        return
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(gap_figure(gap), key="quality_gap_chart", config=PLOT_CONFIG)
    with right:
        sep = gap.get("separability")
        if sep:
            st.metric("modality separability", f"{sep['accuracy']:.3f}", delta=f"chance {sep['chance']:.2f}",
                      delta_color="off", delta_arrow="off",
                      help=f"Cross-validated accuracy ({sep['folds']}-fold) of a logistic regression telling "
                           f"images from texts on {sep['n']:,} items. 1.0 = the two modalities sit in separate "
                           "regions of the space (a strong gap).")
        st.caption("True pairs well above random ones mean images and captions are aligned; a large centroid "
                   "distance with perfect separability is the modality gap (the Map page can correct it).")


def hubness_section(qa) -> None:
    hub = qa.report["hubness"]
    n_k = qa.items["n_k"].to_numpy()
    left, right = st.columns(2)
    with left:
        st.plotly_chart(histogram_figure(n_k, x_title=f"N_{hub['k']} (times in others' {hub['k']}-NN lists)",
                                         title=f"k-occurrence, all items · skew {hub['skewness']:.2f}",
                                         bin_size=1, threshold=hub["threshold"], threshold_label="hub",
                                         log_y=True),
                        key="quality_kocc", config=PLOT_CONFIG)
        st.caption(f"Mean is k = {hub['k']}. {hub['n_hubs']} hubs (N_k above {hub['threshold']:.1f}), "
                   f"{hub['antihubs']} items never a neighbour (anti-hubs).")
    with right:
        cross = hub.get("cross_modal")
        if cross and qa.cross_n_k is not None:
            st.plotly_chart(histogram_figure(qa.cross_n_k.to_numpy(), x_title="N_k of images in captions' image lists",
                                             title=f"cross-modal k-occurrence · skew {cross['skewness']:.2f}",
                                             bin_size=1, threshold=cross["threshold"], threshold_label="hub",
                                             colour="#00CC96", log_y=True),
                            key="quality_kocc_cross", config=PLOT_CONFIG)
            st.caption(f"How often each image is among the {cross['k']} nearest images of a caption: "
                       f"{cross['n_hubs']} images are returned for many captions.")
        else:
            st.caption("Cross-modal hubness needs both images and texts with vectors.")


def retrieval_section(qa, chance: bool = False) -> None:
    ret = qa.report["retrieval"]
    pairs = qa.pairs
    if not ret or not ret["n_pairs"]:
        st.caption("Paired retrieval needs images paired with captions (an image column and a caption column in "
                   "one table, or the demo workspace), both embedded with this model.")
        return
    a, b, d = st.columns(3)
    with a:
        st.plotly_chart(recall_figure(ret), key="quality_recall", config=PLOT_CONFIG)
        st.caption(f"{ret['n_pairs']:,} pairs; candidates: all {ret['n_texts']:,} texts / "
                   f"{ret['n_images']:,} images. Median rank of the true partner: "
                   f"{ret['median_rank']['image_to_text']:.0f} (image→text), "
                   f"{ret['median_rank']['text_to_image']:.0f} (text→image).")
    with b:
        st.plotly_chart(histogram_figure(pairs["rank_i2t"], x_title="rank of the caption for its image",
                                         title="partner rank (image → text)", nbins=50, log_y=True,
                                         split=pairs["noisy"], split_names=("noisy", "other pairs")),
                        key="quality_ranks", config=PLOT_CONFIG)
        st.caption("1 = the image's own caption is its nearest caption. Noisy pairs sit far right.")
    with d:
        th = qa.report["flags"]["thresholds"]["noisy_score"]
        st.plotly_chart(histogram_figure(pairs["noisy_score"], x_title="noisy-pair score (robust SDs below median)",
                                         title="pair score", nbins=50, threshold=th, threshold_label="flag",
                                         split=pairs["noisy"], split_names=("noisy", "other pairs")),
                        key="quality_pair_scores", config=PLOT_CONFIG)
        st.caption("The pair's CSLS similarity (cosine corrected for hubness) compared with all pairs: pairs "
                   f"more than {th:g} robust SDs below the median are flagged as likely wrong captions"
                   + (": not on this model, which is near chance here, so these scores mean nothing."
                      if chance else "."))


def noisy_tab(ws, qa, table: pd.DataFrame, chance: bool = False) -> None:
    bad = qa.pairs[qa.pairs["noisy"]]
    if bad.empty:
        st.caption("No pair scores far below the others.")
        return
    if chance:  # every pair scores like a random one: a low score says nothing about a caption
        st.info(ui.plain(f"{len(bad)} pairs score far below the others, but {qa.report['model']} matches images to "
                         "captions here no better than chance, so these scores mean nothing on this model: no caption "
                         "is flagged as wrong."), icon=":material/info:")
        return
    st.caption(f"{len(bad)} image–caption pairs whose caption fits its image much worse than the other pairs "
               "fit theirs (likely a wrong or unrelated caption). Worst first.")
    show = bad.head(GALLERY)
    thumbs = [table["thumb"].get(i) for i in show["image_id"]]
    keep = [j for j, t in enumerate(thumbs) if isinstance(t, str)]
    if keep:
        st.image([str(ws.abspath(thumbs[j])) for j in keep], width=110,
                 caption=[ui.plain(f"{show['noisy_score'].iloc[j]:.1f} · "
                                   f"{cell(table, show['text_id'].iloc[j], 'text')}", limit=60) for j in keep])
    rows = bad.head(TABLE_ROWS)
    df = pd.DataFrame({"thumb": [thumb_uri(ws, table["thumb"].get(i)) for i in rows["image_id"]],
                       "caption": [table["text"].get(t) for t in rows["text_id"]],
                       "score": rows["noisy_score"].to_numpy(), "cosine": rows["cosine"].to_numpy(),
                       "caption rank": rows["rank_i2t"].to_numpy(), "image rank": rows["rank_t2i"].to_numpy(),
                       "image": [table["source"].get(i) for i in rows["image_id"]],
                       "image id": rows["image_id"].to_numpy(), "caption id": rows["text_id"].to_numpy()})
    st.dataframe(df, hide_index=True, key="quality_noisy_table", row_height=56,
                 column_config={"thumb": st.column_config.ImageColumn("image", width="small"),
                                "caption": st.column_config.TextColumn("caption", width="large"),
                                "score": st.column_config.NumberColumn(format="%.2f"),
                                "cosine": st.column_config.NumberColumn(format="%.3f")})


def flagged_tab(ws, qa, table: pd.DataFrame, flag: str, score: str, label: str, what: str) -> None:
    items = qa.items
    sel = items[items[flag]].sort_values(score, ascending=False, kind="stable")
    if sel.empty:
        st.caption(f"No {label}.")
        return
    st.caption(f"{len(sel)} {label}: {what}")
    imgs = sel[sel["modality"] == "image"].head(GALLERY)
    if len(imgs):
        thumbs = [table["thumb"].get(i) for i in imgs["id"]]
        keep = [j for j, t in enumerate(thumbs) if isinstance(t, str)]
        if keep:
            st.image([str(ws.abspath(thumbs[j])) for j in keep], width=110,
                     caption=[ui.plain(f"{imgs[score].iloc[j]:.2f} · {cell(table, imgs['id'].iloc[j])}",
                                      limit=60) for j in keep])
    rows = sel.head(TABLE_ROWS)
    df = pd.DataFrame({"thumb": [thumb_uri(ws, table["thumb"].get(i)) for i in rows["id"]],
                       "modality": rows["modality"].to_numpy(),
                       "caption / text": [table["caption"].get(i) for i in rows["id"]],
                       score: rows[score].to_numpy(),
                       "source": [table["source"].get(i) for i in rows["id"]], "id": rows["id"].to_numpy()})
    st.dataframe(df, hide_index=True, key=f"quality_{flag}_table", row_height=56,
                 column_config={"thumb": st.column_config.ImageColumn("image", width="small"),
                                "caption / text": st.column_config.TextColumn(width="large"),
                                score: st.column_config.NumberColumn(format="%.2f")})


def flags_section(ws, qa, chance: bool = False) -> None:
    table = item_table(ws, ws.items)
    f = qa.report["flags"]
    noisy = "—" if chance else f.get("noisy_pairs", 0)
    tabs = st.tabs([f"Noisy pairs ({noisy})", f"Hubs ({f['hub']})", f"Outliers ({f['outlier']})"])
    with tabs[0]:
        noisy_tab(ws, qa, table, chance)
    with tabs[1]:
        flagged_tab(ws, qa, table, "hub", "n_k", "hubs",
                    "items in far more neighbour lists than average (generic captions, average-looking images).")
    with tabs[2]:
        flagged_tab(ws, qa, table, "outlier", "lof",
                    "outliers", f"items in a sparser region than their neighbours (local outlier factor > "
                                f"{f['thresholds']['lof']:g}).")
    st.download_button("Scores and flags (CSV)", qa.items.to_csv(index=False).encode("utf-8"),
                       file_name="quality_flags.csv", mime="text/csv", icon=":material/download:",
                       key="quality_dl", on_click="ignore",
                       help="One row per item: id, modality, N_k, kNN similarity, LOF, pair scores and the flags. "
                            "The Map page can colour by the same scores.")


def compare_section(ws, model: str) -> None:
    others = [m for m, info in ws.models().items() if m != model and info.get("n")]
    if not others:
        st.caption(ui.plain(f"Embed the items with a second model on the Data page (e.g. minilm for the captions) "
                           f"to compare it with {model} item by item."))
        return
    r = st.columns([2, 1.2, 1.2], vertical_alignment="bottom")
    other = r[0].selectbox("Model B", [NO_COMPARE, *others], key="quality_compare",
                           help="Another model with vectors in this workspace; compared on the items both have.")
    if other == NO_COMPARE:
        st.caption("Choose a model to compare neighbourhoods (kNN overlap), whole spaces (linear CKA) and maps.")
        return
    key_a, key_b = ui.data_key(ws, model), ui.data_key(ws, other)
    shared = [m for m in ui.vector_modalities(key_a) if m in ui.vector_modalities(key_b)]
    if not shared:
        st.warning(ui.plain(f"{model} and {other} have no modality in common."), icon=":material/warning:")
        return
    modality = r[1].selectbox("Items", ["all shared", *shared], key="quality_compare_modality")
    method = r[2].radio("Maps", ["UMAP", "PCA"], horizontal=True, key="quality_compare_method")
    with st.spinner(ui.plain(f"Comparing {model} with {other}…")):
        cmp = ui.model_comparison(key_a, key_b, None if modality == "all shared" else modality,
                                 method.lower())
    cols = st.columns(4)
    cols[0].metric("shared items", f"{cmp.n:,}", help="Items with vectors for both models (of the chosen kind).")
    cols[1].metric("linear CKA", f"{cmp.cka:.3f}",
                   help="Centred kernel alignment with linear kernels (Kornblith et al. 2019): 1 = the same space up "
                        "to rotation and scale, near 0 = unrelated.")
    cols[2].metric(f"kNN overlap (k={cmp.k})", f"{cmp.knn_overlap:.3f}",
                   help="Mean Jaccard overlap of each item's nearest neighbours in the two spaces: 1 = same "
                        "neighbours, 0 = none shared.")
    cols[3].metric("map disparity", f"{cmp.disparity:.3f}",
                   help="Mean squared distance between an item's two positions after aligning the maps "
                        "(rotation/reflection, both scaled to unit size): 0 = the same map, larger = more moved.")
    df = cmp.items
    left, right = st.columns([1, 2])
    with left:
        st.plotly_chart(histogram_figure(df["knn_overlap"], x_title="kNN overlap (Jaccard)", title="per item",
                                         nbins=20, colour="#AB63FA"),
                        key="quality_overlap_hist", config=PLOT_CONFIG)
    table = item_table(ws, ws.items)
    hover = [f"{(cell(table, i) or cell(table, i, 'source') or i)[:100]}\nmoved {d:.2f} · overlap {o:.2f}"
             for i, d, o in zip(df["id"], df["displacement"], df["knn_overlap"])]
    rng = (0.0, float(df["displacement"].max()) or 1.0)
    with right:
        ma, mb = st.columns(2)
        for col, name, x, y, key in ((ma, model, "ax", "ay", "quality_map_a"),
                                     (mb, other, "bx", "by", "quality_map_b")):
            with col:
                st.caption(ui.plain(f"{name} ({cmp.method.upper()}, aligned)"))
                fig = map_figure(df[[x, y]].to_numpy(), color=df["displacement"].to_numpy(), color_title="moved",
                                 hover_text=hover, customdata=df["id"].tolist(), height=360, colorscale="Plasma",
                                 color_range=rng, categorical=False, uirevision=key)
                st.plotly_chart(fig, key=key, config=PLOT_CONFIG)
    st.caption("Both maps are aligned by Procrustes (B rotated onto A); colour = how far each item moved between "
               "them. Items that keep few neighbours are where the two models disagree.")
    moved = df.sort_values("displacement", ascending=False, kind="stable").head(20)
    st.dataframe(pd.DataFrame({"caption / text": [table["caption"].get(i) for i in moved["id"]],
                               "modality": moved["modality"].to_numpy(),
                               "moved": moved["displacement"].to_numpy(),
                               "kNN overlap": moved["knn_overlap"].to_numpy(),
                               "id": moved["id"].to_numpy()}),
                 hide_index=True, key="quality_moved_table",
                 column_config={"moved": st.column_config.NumberColumn(format="%.2f"),
                                "kNN overlap": st.column_config.NumberColumn(format="%.2f")})


def quality_page(ws, model: str, fit: dict | None = None) -> None:
    chance = bool(fit) and fit["verdict"] == "near chance"  # core.quality.fit_verdict
    k = st.select_slider("Neighbours (k)", K_CHOICES, value=ui.QUALITY_K, key="quality_k",
                         help="Neighbours used for hubness, outliers and the hubness-corrected pair score.")
    with st.spinner("Measuring the space…"):
        qa = ui.quality_analysis(ui.data_key(ws, model), int(k))
    headline(qa.report)
    st.subheader("Effective rank and uniformity")
    rank_section(qa)
    st.subheader("Modality gap")
    gap_section(qa.report)
    st.subheader("Hubness")
    hubness_section(qa)
    st.subheader("Paired retrieval")
    retrieval_section(qa, chance)
    st.subheader("Flagged items")
    flags_section(ws, qa, chance)
    st.subheader("Compare with another model")
    compare_section(ws, model)


# ---- page ---------------------------------------------------------------------------------------
with ui.page("Quality", purpose="to measure its space") as (ws, model):
    if ws is not None:
        n = sum(ui.vector_modalities(ui.data_key(ws, model)).values())
        if n == 0:
            ui.no_vectors_info(ws, model)
        elif n < MIN_ITEMS:
            st.warning(f"Measuring a space needs at least {MIN_ITEMS} items with vectors; this workspace has {n}. "
                       "Add more items on the Data page and embed them.", icon=":material/warning:")
        elif n > CONFIRM_ABOVE and not st.session_state.get(confirm_key := f"quality_confirmed:{ws.path}:{model}"):
            # every item's neighbours are searched (hubness, outliers): minutes at this size, so ask first
            st.info(f"This workspace has {n:,} items with vectors. Measuring its space searches the neighbours "
                    "of every item (hubness, outliers) and takes minutes at this size; the result is kept "
                    "for the rest of the session.", icon=":material/schedule:")
            if st.button(f"Measure all {n:,} items", type="primary", key="quality_confirm"):
                st.session_state[confirm_key] = True
                st.rerun()
        else:
            quality_page(ws, model, ui.fit_note(ws, model))
