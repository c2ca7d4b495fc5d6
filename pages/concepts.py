"""Concepts: PACE concept explanations of the image model — dataset, image and patch level, with metrics."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.encoders import modalities_of
from core.export import safe_csv_bytes
from core.plots import concept_shares_figure, patch_heatmap_figure, theta_figure
from core.workspace import ITEM_COLUMNS
from pages import ui

SRC_ALL, SRC_MAP, SRC_LABEL = "All images", "Selected on the Map", "Images with a label value"
PRED_VOCAB, PRED_LABEL, PRED_PROMPTS = ("Zero-shot over the vocabulary", "A label column", "Zero-shot over my prompts")
PARAMS = "concepts_params"  # dict | None — the parameters of the last run (small values only)
MAX_CHOICE_IMAGES = 2000
HEATMAPS = 6
USES = 0.1  # an image uses a concept when its share θ is at least USES / K (as the dataset level counts them)
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]}
METRIC_HELP = {
    "faithfulness": "Held-out accuracy of a logistic regression that predicts the model's label from the concept "
                    "proportions θ alone. 1.0: the concepts fully account for what the model predicts.",
    "stability": "Mean relative change ‖θ − θ′‖ / ‖θ‖ when the image is flipped, cropped, colour-jittered and "
                 "blurred a little. Lower is better; 0 means the explanation does not move.",
    "sparsity": "Share of concepts an image does not use (θ < 0.1 / K), averaged over images. Higher means each "
                "image is explained by few concepts.",
    "parsimony": "Number of concepts K. Fewer concepts are easier to read.",
}


# ---- helpers (no widgets) -----------------------------------------------------------------------
def metadata_columns(items: pd.DataFrame) -> list[str]:
    images = items[items["modality"] == "image"]
    return [col for col in items.columns if col not in ITEM_COLUMNS and images[col].notna().any()]


def image_ids_for(items: pd.DataFrame, source: str, *, map_ids=None, column: str | None = None,
                  value: str | None = None) -> list[str]:
    images = items[items["modality"] == "image"]
    if source == SRC_MAP:
        want = {str(i) for i in (map_ids or [])}
        return [i for i in images["id"].astype(str) if i in want]
    if source == SRC_LABEL and column:
        return images.loc[images[column].astype(str) == str(value), "id"].astype(str).tolist()
    return images["id"].astype(str).tolist()


CONCEPT_STAGES = {"patches": (0.0, 0.35, "reading patches"), "fit": (0.35, 0.85, "fitting concepts"),
                  "stability": (0.85, 1.0, "measuring stability")}


def run(ws, model: str, params: dict, progress=None):
    from core.concepts import default_estimator, explain

    p = dict(params)
    estimator = default_estimator(n_concepts=p["k"], alpha=p["alpha"], use_attention=p.get("use_attention", True),
                                  temperature=p.get("temperature", 1.0))
    return explain(ws, model, estimator=estimator, ids=p["ids"], label=p["label"], prompts=p["prompts"],
                   templates=p.get("templates"), vocabulary=p["vocabulary"], block=p["block"], space=p.get("space"),
                   attention_smoothing=p.get("attention_smoothing", 1.0), progress=progress)


# ---- sections -----------------------------------------------------------------------------------
def advanced_controls(model: str) -> dict:
    """The "Naming and advanced" choices: naming words, patch features and the concept model's settings, with
    the bounds PACE (and explain) declare."""
    from core.concepts import PACE
    from core.concepts.explain import EXPLAIN_CONSTRAINTS as E
    from core.concepts.explain import EXPLAIN_DEFAULTS
    from core.concepts.patches import n_blocks
    from core.params import bounds
    from core.vocabulary import default_vocabulary

    C, d = PACE.parameter_constraints, {**PACE().get_params(), **EXPLAIN_DEFAULTS}
    with st.expander("Naming and advanced"):
        words = st.text_input("Words to name concepts with (comma-separated)", key="concepts_words",
                              help="Added to the model's default vocabulary, or used alone (below).")
        only = st.checkbox("Name with these words only", key="concepts_words_only",
                           help=f"The default vocabulary of {model} has {len(default_vocabulary(model))} words.")
        nb = n_blocks(ui.get_encoder(model))
        feature = st.selectbox("Patch features", ["joint", *range(nb)], key="concepts_block",
                               format_func=lambda b: ("Joint space (last block, projected like the image vector)"
                                                      if b == "joint" else f"ViT tokens of block {b}"),
                               help="Concepts are found among these patch vectors. The joint space is where they "
                                    "are named; earlier blocks keep more local detail.")
        block, space = (nb - 1, "joint") if feature == "joint" else (int(feature), "tokens")
        alpha = st.number_input("Dirichlet prior α", *bounds(C, "alpha", step=0.01), d["alpha"], step=0.05,
                                key="concepts_alpha",
                                help="Below 1 each image uses few concepts (sparser explanations).")
        weighted = st.checkbox("Weight patches by the model's attention", True, key="concepts_attention",
                               help="PACE weights each patch by the CLS token's attention to it, so concepts "
                                    "follow what the model looks at. Untick to count every patch once: "
                                    "image-level shares then describe what the image shows and move less when "
                                    "the image is flipped or cropped.")
        smoothing = st.number_input("Attention smoothing (patches)", *bounds(E, "attention_smoothing"), 1.0, step=0.25,
                                    key="concepts_smoothing", disabled=not weighted,
                                    help="Blur the attention over the patch grid (Gaussian σ in patches) before it "
                                         "weights the patches: a flip or crop then moves the image-level shares "
                                         "less. 0 uses the raw attention, as in the PACE paper.")
        temperature = st.number_input("Likelihood temperature", *bounds(C, "temperature", step=0.1), d["temperature"],
                                      step=1.0,
                                      key="concepts_temperature",
                                      help="Above 1 the patch likelihood is tempered, so the prior α gathers each "
                                           "image in fewer concepts: sparser explanations with many concepts "
                                           "(K = 64 at 10 is the benchmark's sparse setting), at the price of "
                                           "purer and more stable concepts.")
    return {"words": words, "only": only, "block": int(block), "space": space, "alpha": float(alpha),
            "use_attention": bool(weighted), "attention_smoothing": float(smoothing),
            "temperature": float(temperature)}


def controls(ws, model: str, items: pd.DataFrame) -> dict | None:
    """The choices; returns the parameters when the button was pressed."""
    from core.concepts import PACE
    from core.concepts.explain import EXPLAIN_DEFAULTS, check_templates
    from core.params import bounds
    from core.vocabulary import naming_vocabulary

    meta = metadata_columns(items)
    map_ids = ui.selection(ws)
    n_map = len(image_ids_for(items, SRC_MAP, map_ids=map_ids))
    r1 = st.columns([2, 1, 2])
    sources = [SRC_ALL] + ([SRC_MAP] if n_map else []) + ([SRC_LABEL] if meta else [])
    if st.session_state.get("concepts_source") not in sources:  # the selection was cleared
        st.session_state.pop("concepts_source", None)
    source = r1[0].radio("Images", sources, key="concepts_source", horizontal=True,
                         help="All image items, the images selected on the Map, or those with one label value.")
    column = value = None
    if source == SRC_LABEL:
        column = r1[0].selectbox("Column", meta, key="concepts_filter_col")
        values = sorted(items.loc[items["modality"] == "image", column].dropna().astype(str).unique().tolist())
        value = r1[0].selectbox("Value", values, key="concepts_filter_value")
    elif source == SRC_MAP:
        r1[0].caption(f"{n_map} images selected on the Map.")
    k = r1[1].slider("Concepts (K)", *bounds(PACE.parameter_constraints, "n_concepts"), EXPLAIN_DEFAULTS["n_concepts"],
                     key="concepts_k",
                     help="Parsimony: fewer concepts are easier to read; more split finer.")
    pred = r1[2].radio("Explain the model's", [PRED_VOCAB] + ([PRED_LABEL] if meta else []) + [PRED_PROMPTS],
                       key="concepts_pred", help="What the concepts should account for (PACE ties them to the "
                                                 "model's prediction).")
    label = prompts = templates = None
    if pred == PRED_LABEL:
        label = r1[2].selectbox("Label column", meta, key="concepts_label")
    elif pred == PRED_PROMPTS:
        text = r1[2].text_area("Prompts (one per line)", key="concepts_prompts", height=90,
                               placeholder="a red object\na blue object")
        prompts = [t.strip() for t in text.splitlines() if t.strip()]
        ttext = r1[2].text_area("Templates (optional, one per line)", key="concepts_templates", height=68,
                                placeholder="a photo of a {}.\na drawing of a {}.",
                                help="Each prompt is put where {} is in every template and the texts are "
                                     "averaged (a prompt ensemble, as CLIP's zero-shot classifiers do).")
        templates = [t.strip() for t in ttext.splitlines() if t.strip()] or None
    adv = advanced_controls(model)
    ids = image_ids_for(items, source, map_ids=map_ids, column=column, value=value)
    st.caption(f"{len(ids):,} images to explain.")
    if not st.button("Find concepts", type="primary", icon=":material/psychology:", key="concepts_run",
                     disabled=len(ids) < 2):
        return None
    if pred == PRED_PROMPTS and len(set(prompts or [])) < 2:
        st.warning("Give at least two different prompts, one per line.", icon=":material/warning:")
        return None
    try:
        check_templates(templates, prompts)
    except ValueError as e:
        st.warning(str(e), icon=":material/warning:")
        return None
    try:
        vocabulary = naming_vocabulary(model, (adv["words"] or "").split(","), only=adv["only"])
    except ValueError:
        st.warning("Type the words to name with, or untick “Name with these words only”.",
                   icon=":material/warning:")
        return None
    return {"k": int(k), "ids": None if source == SRC_ALL else ids, "label": label, "prompts": prompts,
            "templates": templates, "vocabulary": vocabulary, "block": adv["block"], "space": adv["space"],
            "alpha": adv["alpha"], "use_attention": adv["use_attention"],
            "attention_smoothing": adv["attention_smoothing"], "temperature": adv["temperature"],
            "workspace": ws.name, "model": model}


def metrics_row(res) -> None:
    m = res.metrics
    cols = st.columns(4)
    fmt = {"faithfulness": "{:.2f}", "stability": "{:.2f}", "sparsity": "{:.2f}", "parsimony": "{}"}
    for col, name in zip(cols, ("faithfulness", "stability", "sparsity", "parsimony")):
        v = m.get(name)
        col.metric(name, "—" if v is None else fmt[name].format(v), help=METRIC_HELP[name])
    st.caption(ui.plain(f"{res.n_images} images · K = {res.k} · predictions: {res.prediction_source} · "
                       + (f"joint space (block {res.params.get('block')}) · " if res.params.get("space") == "joint"
                          else f"tokens of block {res.params.get('block')} · ")
                       + ("" if res.params.get("use_attention", True) else "every patch counted once · ")
                       + ("read from the workspace's cache" if res.cached else f"computed in {res.seconds:.1f} s")))
    with st.expander("What the metrics mean"):
        for name in ("faithfulness", "stability", "sparsity", "parsimony"):
            st.caption(f"**{name}** — {METRIC_HELP[name]}")


def dataset_level(ws, res, paths: dict) -> None:
    st.subheader("Concepts in the dataset")
    labels = [con.label for con in res.concepts]
    st.plotly_chart(concept_shares_figure([con.share for con in res.concepts], labels), key="concept_shares",
                    config=PLOT_CONFIG)
    for con in res.concepts:
        st.markdown(f"**{ui.plain(con.label)}**")
        st.caption(ui.plain(f"names: {', '.join(con.names)} · {con.share:.0%} of the patches · used by "
                           f"{con.images} of {res.n_images} images"))
        crops = [ui.concept_crop(str(paths[i]), j, tuple(res.grid), tuple(res.image_size))
                 for i, j in con.prototypes if i in paths]
        if crops:
            st.image(crops, width=56)


def concept_across_images(res, paths: dict) -> None:
    st.subheader("One concept across images")
    labels = [con.label for con in res.concepts]
    k = labels.index(st.selectbox("Concept", labels, key="concepts_pick"))
    top = res.top_images(k, n=HEATMAPS, min_share=USES)
    if not len(top):
        st.caption(ui.plain(f"No image uses concept {labels[k]}: its share θ is below 0.1 / K in every image."))
        return
    st.caption(ui.plain(f"The {len(top)} image{'s' * (len(top) != 1)} with the most of concept {labels[k]} (only "
                       "images that use it: θ ≥ 0.1 / K); the heat map is φ, the probability that each patch shows "
                       "the concept."))
    cols = st.columns(3)
    for n, m in enumerate(top):
        item = str(res.ids[m])
        fig = patch_heatmap_figure(ui.concept_frame(str(paths[item]), tuple(res.image_size)),
                                   res.phi[m, :, k].reshape(res.grid), title=f"θ = {res.theta[m, k]:.2f}")
        cols[n % 3].plotly_chart(fig, key=f"across_{k}_{n}", config=PLOT_CONFIG)


def image_level(res, paths: dict, items: pd.DataFrame) -> None:
    st.subheader("One image")
    source = items.set_index("id")["source"]
    choices = {f"{source.get(i, i)} ({i[:8]})": i for i in (str(x) for x in res.ids[:MAX_CHOICE_IMAGES])}
    item = choices[st.selectbox("Image", list(choices), key="concepts_image")]
    m = res.row_of(item)
    labels = [con.label for con in res.concepts]
    left, right = st.columns([1, 2])
    left.image(ui.concept_frame(str(paths[item]), tuple(res.image_size)), caption=ui.plain(source.get(item, item)),
               width=192)
    left.caption(ui.plain(f"the model's prediction: {res.predicted[m]}"))
    right.plotly_chart(theta_figure(res.theta[m], labels, highlight=int(res.theta[m].argmax())),
                       key="theta_chart", config=PLOT_CONFIG)
    used = res.used_concepts(m, n=HEATMAPS)
    st.caption("Patch level: φ of each concept this image uses, over its patch grid.")
    cols = st.columns(3)
    for n, k in enumerate(used):
        fig = patch_heatmap_figure(ui.concept_frame(str(paths[item]), tuple(res.image_size)),
                                   res.phi[m, :, k].reshape(res.grid), title=labels[k])
        cols[n % 3].plotly_chart(fig, key=f"patch_{item}_{k}", config=PLOT_CONFIG)


def export(res, items: pd.DataFrame) -> None:
    df = res.assignments_frame()
    src = items.set_index("id")["source"]
    df.insert(1, "source", df["id"].map(src))
    st.download_button("Concept assignments (CSV)", safe_csv_bytes(df),  # sources may start with "="
                       file_name="concepts.csv", mime="text/csv", icon=":material/download:", key="concepts_csv",
                       on_click="ignore", help="One row per image: top concept, prediction and θ of every concept.")


def concepts_section(ws, model: str) -> None:
    items = ws.items
    params = controls(ws, model, items)
    res = None
    if params is not None:
        bar = st.progress(0.0, text="Starting…")
        try:
            res = run(ws, model, params, progress=ui.stage_progress(bar, CONCEPT_STAGES))
        finally:
            bar.empty()
        st.session_state[PARAMS] = params
    params = st.session_state.get(PARAMS)
    if params and params.get("ids") and not set(params["ids"]) <= set(image_ids_for(items, SRC_ALL)):
        params = st.session_state[PARAMS] = None  # some of its images were deleted since (another tab)
    if not params or params.get("workspace") != ws.name or params.get("model") != model:
        st.info("Choose the images and K, then press Find concepts.", icon=":material/info:")
        return
    if res is None:  # a rerun (another image or concept): the result saved in the workspace
        res = run(ws, model, params)
    ui.unknown_words_note(model, [*(params.get("prompts") or []), *(params.get("templates") or []),
                                  *(params.get("vocabulary") or [])])
    images = items[items["modality"] == "image"].set_index("id")["image"]
    paths = {str(i): ws.abspath(images[i]) for i in res.ids if i in images.index}
    metrics_row(res)
    export(res, items)
    dataset_level(ws, res, paths)
    concept_across_images(res, paths)
    image_level(res, paths, items)


# ---- page ---------------------------------------------------------------------------------------
with ui.page("Concepts", purpose="", summary=False,
             caption="PACE concept explanations: the image model's patch embeddings as a few concepts per image, "
                     "named with the closest words in the joint space.") as (ws, model):
    if ws is None:
        pass  # the helper said what to choose
    elif "image" not in modalities_of(model):
        st.info(ui.plain(f"{model} does not encode images; concepts need an open_clip model with a ViT image "
                        "tower (e.g. demo)."), icon=":material/info:")
    else:
        ui.summary_line(ws, model)
        ui.fit_note(ws, model)
        n_images = int((ws.items["modality"] == "image").sum())
        if n_images < 2:
            st.info("Concepts need at least 2 images. Add images on the Data page.", icon=":material/image:")
        else:
            concepts_section(ws, model)
