"""Analogies: vector arithmetic over texts, items and images (3CosAdd / 3CosMul) beside the plain
nearest-neighbour baseline, and the evaluation of an analogy set (acc@1, acc@k, per category)."""
from __future__ import annotations

import hashlib
import re

import pandas as pd
import streamlit as st

from core.analogies import bundled_analogy_sets, default_analogy_set, load_analogy_set, suggested_space
from core.demo.examples import worked_example
from core.export import safe_csv_bytes
from core.search import hits_frame, term_id
from pages import ui

METHODS = {"3CosAdd": "3cosadd", "3CosMul": "3cosmul"}
ALL = "all"
UPLOAD = "upload a set"
EVAL = "eval_request"  # dict | None — the evaluation last asked for (small values only)
MAX_TERMS_SHOWN = 8
MAX_SELECTION_TERMS = 20


# ---- helpers (no widgets) -----------------------------------------------------------------------
def lines(text: str) -> list[str]:
    """One term per non-empty line (a text, or item:<id>)."""
    return [s.strip() for s in (text or "").splitlines() if s.strip()]


def text_models(model: str | None) -> list[str]:
    """Offline models that encode texts (they can score a vocabulary), the chosen one included."""
    ids = [m["id"] for m in ui.model_catalogue(include_hub=False) if m["available"] and "text" in m["modalities"]]
    if model and ui.can_encode(model, "text") and model not in ids:
        ids.append(model)
    return ids


# ---- callbacks ----------------------------------------------------------------------------------
def _load_example(example: dict) -> None:
    """The worked example replaces every term, uploaded images included (fresh uploaders)."""
    ss = st.session_state
    ss["ana_plus"] = "\n".join(example["plus"])
    ss["ana_minus"] = "\n".join(example["minus"])
    ss["ana_modality"] = example["modality"]
    ss["ana_method"] = "3CosAdd"
    ss["ana_round"] = ss.get("ana_round", 0) + 1


def _add_selection(ids: list[str]) -> None:
    ss = st.session_state
    have = set(lines(ss.get("ana_plus", "")))
    ss["ana_plus"] = "\n".join([*lines(ss.get("ana_plus", "")),
                                *(t for t in (f"item:{i}" for i in ids) if t not in have)])


def _append(which: str, item_id: str) -> None:
    ss = st.session_state
    ss[which] = "\n".join([*lines(ss.get(which, "")), f"item:{item_id}"])


def _add_plus(item_id: str) -> None:
    _append("ana_plus", item_id)


def _add_minus(item_id: str) -> None:
    _append("ana_minus", item_id)


# ---- sections -----------------------------------------------------------------------------------
def builder(ws, model: str) -> tuple[list[str], list[str]]:
    """The term builder: plus and minus terms as texts / item ids (one per line) and uploaded images."""
    ex = worked_example(ws, model) if ui.can_encode(model, "text") else None
    head = st.columns([1, 1, 3], vertical_alignment="center")
    head[0].button("Worked example", key="ana_example", icon=":material/auto_awesome:", disabled=ex is None,
                   on_click=_load_example, args=(ex,) if ex else None,
                   help="Replaces every term." if ex else "Needs items with colour and shape metadata (the "
                                                         "demo workspace) and a model that encodes texts.")
    sel = ui.selection(ws)[:MAX_SELECTION_TERMS]
    head[1].button(f"+ the selection ({len(sel)})" if sel else "+ the selection", key="ana_selection",
                   icon=":material/select:", disabled=not sel, on_click=_add_selection, args=(sel,),
                   help="Add the items selected on the Map as plus terms" + (
                       f" (the first {MAX_SELECTION_TERMS})." if sel else "; select points on the Map first."))
    head[2].caption(("Worked example: image of a red circle − “a red object” + “a blue object” should give blue "
                     "circles. " if ex else "")
                    + "b − a + c: each term is a text, an item (`item:<id>`, from the picker below, a result or the "
                      "Map selection) or an uploaded image. Input items are never results.")
    can_img = ui.can_encode(model, "image")
    plus_col, minus_col = st.columns(2)
    out = []
    for col, sign, key, word in ((plus_col, "+", "ana_plus", "add"), (minus_col, "−", "ana_minus", "subtract")):
        with col:
            typed = lines(st.text_area(f"{sign} terms to {word}, one per line", key=key, height=96,
                                       placeholder="a blue object\nitem:<id>"))
            files = st.file_uploader(f"Images to {word}", type=ui.IMAGE_TYPES, accept_multiple_files=True,
                                     key=f"{key}_img_{st.session_state.get('ana_round', 0)}", disabled=not can_img,
                                     help=None if can_img else ui.plain(f"Model {model} cannot encode images."))
            images = []
            for f in files or []:
                try:
                    images.append(ui.image_upload_term(f))
                except ValueError as e:
                    ui.show_error(e)
            out.append(images + typed)  # an uploaded image is the anchor: the baseline's query
    if not can_img:
        st.caption(ui.plain(f"Model {model} " + ("is text-only: uploaded images cannot be terms"
                                                 if ui.can_encode(model, "text") else "encodes no images")
                           + ". Items of the workspace can still be terms."))
    return out[0], out[1]


def picker(ws, model: str) -> None:
    """Find items by text and add them as plus or minus terms."""
    with st.expander("Pick items as terms", icon=":material/add_photo_alternate:"):
        if not ui.can_encode(model, "text"):
            st.caption("Paste item ids (item:<id>) from the Search page's result table instead.")
            return
        q = st.text_input("Find items", key="ana_find", placeholder="e.g. a red circle — then press Enter")
        if not q.strip():
            return
        with ui.guard():
            hits = ui.search_results(ui.data_key(ws, model), (q.strip(),), 6, None, ())
            ui.result_cards(hits, key="ana_pick", columns=6,
                           actions=[("plus", _add_plus, ":material/add:", "Add as a plus term"),
                                    ("minus", _add_minus, ":material/remove:", "Add as a minus term")])


def terms_row(ws, plus: list[str], minus: list[str]) -> None:
    """The analogy as written: each term with its sign, images as small thumbnails."""
    items = ui.items_frame(ws).set_index("id")
    terms = [("+", t) for t in plus] + [("−", t) for t in minus]
    cols = st.columns(min(len(terms), MAX_TERMS_SHOWN) + (len(terms) > MAX_TERMS_SHOWN))
    for col, (sign, t) in zip(cols, terms[:MAX_TERMS_SHOWN]):
        with col:
            st.markdown(f"**{sign}** {ui.plain(ui.term_label(t, items), limit=60)}")
            if t.startswith("image:"):
                st.image(t[len("image:"):], width=64)
            elif t.startswith("item:") and t[5:] in items.index and isinstance(items.at[t[5:], "thumb"], str):
                st.image(str(ws.abspath(items.at[t[5:], "thumb"])), width=64)
    if len(terms) > MAX_TERMS_SHOWN:
        cols[-1].caption(f"… and {len(terms) - MAX_TERMS_SHOWN} more")


def results(ws, model: str, plus: list[str], minus: list[str], present: dict[str, int]) -> None:
    ss = st.session_state
    options = list(present) + ([ALL] if len(present) > 1 else [])
    if ss.get("ana_modality") not in options:
        ss["ana_modality"] = "image" if "image" in options else options[0]
    r = st.columns([1.0, 1.4, 1.4], vertical_alignment="bottom")
    method = r[0].radio("Method", list(METHODS), key="ana_method", horizontal=True,
                        help="3CosAdd: cosine with Σplus − Σminus. 3CosMul (Levy & Goldberg 2014): "
                             "Π cos(plus) / Π cos(minus), each cosine shifted to [0, 1].")
    modality = r[1].radio("Results", options, key="ana_modality", horizontal=True,
                          format_func=lambda m: ui.MODALITY_PLURAL.get(m, m) if m != ALL else "all")
    k = int(r[2].slider("Results (k)", 1, 30, 9, key="ana_k"))
    if not plus:
        st.info("Add at least one plus term (or press Worked example).", icon=":material/info:")
        return
    mod = None if modality == ALL else modality
    key = ui.data_key(ws, model)
    terms_row(ws, plus, minus)
    ui.unknown_words_note(model, plus + minus, terms=True)
    with st.spinner("Computing…"):
        hits = ui.analogy_results(key, tuple(plus), tuple(minus), METHODS[method], k, mod, ())
        inputs = tuple(i for i in (term_id(t) for t in plus + minus) if i)
        base = ui.search_results(key, (plus[0],), k, mod, (), inputs)
    got, plain_nn = [h["id"] for h in hits], [h["id"] for h in base]
    new = len(set(got) - set(plain_nn))
    if not minus and len(plus) == 1:
        st.caption("With one plus term and nothing to subtract, the analogy is its nearest neighbours.")
    elif got == plain_nn:  # "nothing" only when the ranked lists are the same, in the same order
        st.warning(f"The arithmetic changed nothing: the top {len(hits)} equal the plain nearest neighbours of "
                   "the first plus term, in the same order.", icon=":material/drag_handle:")
    elif new == 0:
        moved = sum(a != b for a, b in zip(got, plain_nn))
        st.info(f"The arithmetic only reordered the results: the top {len(hits)} are plain nearest neighbours of "
                f"the first plus term, {moved} of them at another rank.", icon=":material/swap_vert:")
    else:
        st.success(f"{new} of the top {len(hits)} differ from the plain nearest neighbours of the first plus term.",
                   icon=":material/difference:")
    table = hits_frame(ws, hits + base) if hits or base else None
    captions = ({} if table is None else
                {i: str(t if isinstance(t, str) else s)
                 for i, t, s in zip(table["id"], table["text"], table["source"])})
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown(f"**Analogy · {method}**")
        ui.result_cards(hits, key="ana_res", captions=captions, columns=3)
    with right:
        items = ui.items_frame(ws).set_index("id")
        st.markdown(f"**Baseline · nearest neighbours of {ui.plain(ui.term_label(plus[0], items), limit=50)}**")
        ui.result_cards(base, key="ana_base", captions=captions, columns=3)
    if table is not None:
        with st.expander("Both as tables"):
            st.caption("Analogy")
            st.dataframe(hits_frame(ws, hits), hide_index=True, key="ana_table")
            st.caption("Baseline")
            st.dataframe(hits_frame(ws, base), hide_index=True, key="ana_base_table")


def evaluation(ws, model: str | None) -> None:
    ss = st.session_state
    st.subheader("Evaluate an analogy set")
    st.caption("A CSV with columns a, b, c, d (a : b :: c : d, so d ≈ b − a + c) and optional category / "
               "modality, or word2vec's questions-words.txt (': section' lines, then 'a b c d' per line). "
               "acc@k counts rows whose expected d is in the top k; the baseline ranks by similarity to c alone.")
    sets = bundled_analogy_sets()
    choices = [*sets, UPLOAD]
    if ss.get("eval_set") not in choices or ss.get("eval_set_model") != model:  # the set that suits this model
        ss["eval_set"] = default_analogy_set(model, list(sets)) or UPLOAD
        ss["eval_set_model"] = model
    r = st.columns([1.4, 1.6, 1.0, 1.0], vertical_alignment="bottom")
    name = r[0].selectbox("Analogy set", choices, key="eval_set",
                          format_func=lambda n: n if n == UPLOAD else f"{n} (bundled)")
    if name == UPLOAD:
        f = st.file_uploader("Analogy set (CSV or questions-words.txt)", type=["csv", "txt"], key="eval_upload")
        if f is None:
            return
        name, data = ui.upload_name(f.name), f.getvalue()
    else:
        with open(sets[name], "rb") as fh:
            data = fh.read()
    try:
        rows = load_analogy_set(data, name=name)
    except ValueError as e:
        ui.show_error(e)
        return
    suggested = suggested_space(rows)
    spaces = ["workspace", "vocabulary"]
    space = r[1].radio("Candidates", spaces, index=spaces.index(suggested), key=f"eval_space_{name}",
                       horizontal=True,
                       format_func=lambda s: "workspace items" if s == "workspace" else "the set's words",
                       help="Workspace: the items of the open workspace, with the model of the sidebar. "
                            "The set's words: every distinct text of the set, encoded with a text model.")
    if space == "vocabulary":
        options = text_models(model)
        if not options:
            st.warning("No offline model encodes texts, so no vocabulary can be scored.", icon=":material/warning:")
            return
        stem = name.rsplit(".", 1)[0]
        default = stem if stem in options else model if model in options else options[0]
        eval_model = st.selectbox("Text model", options, index=options.index(default), key=f"eval_model_{name}")
    else:
        if ws is None or model is None:
            st.info("Scoring on workspace items needs an open workspace and a model.", icon=":material/info:")
            return
        eval_model = model
    method = r[2].radio("Method", list(METHODS), key="eval_method", horizontal=True)
    k = int(r[3].number_input("k", 1, 20, 5, key="eval_k"))
    digest = hashlib.sha256(data).hexdigest()[:16]
    if st.button("Evaluate", key="eval_run", type="primary", icon=":material/play_arrow:"):
        ss[EVAL] = {"set": name, "digest": digest, "space": space, "model": eval_model,
                    "method": METHODS[method], "k": k}
    req = ss.get(EVAL)
    if not req or req["set"] != name or req["digest"] != digest:
        st.caption(f"{len(rows)} rows. Press Evaluate to score them.")
        return
    on = ui.data_key(ws, req["model"]) if req["space"] == "workspace" else req["model"]  # a workspace, or words
    with st.spinner(ui.plain(f"Scoring {len(rows)} analogies with {req['model']}…")):
        ev = ui.analogy_evaluation(on, name, data, req["method"], req["k"])
    show_evaluation(ev, name)


def show_evaluation(ev: dict, name: str) -> None:
    k = ev["k"]
    where = (f"the {ev['candidates']} distinct words of the set" if ev["space"].startswith("vocabulary:")
             else f"{ev['candidates']:,} workspace items")
    st.caption(ui.plain(f"{name}: {ev['n']} rows scored ({len(ev['skipped'])} skipped) · candidates: {where} · "
                       f"{ev['space']} · {ev['method']}"))
    if not ev["n"]:
        st.warning("No row could be scored; see the reasons below.", icon=":material/warning:")
    else:
        base = ev["baseline"]
        m = st.columns(4)
        m[0].metric("acc@1", f"{ev['acc@1']:.3f}", delta=f"{ev['acc@1'] - base['acc@1']:+.3f} vs baseline",
                    help="Share of rows whose top result is an expected d.")
        m[1].metric(f"acc@{k}", f"{ev[f'acc@{k}']:.3f}",
                    delta=f"{ev[f'acc@{k}'] - base[f'acc@{k}']:+.3f} vs baseline",
                    help=f"Share of rows with an expected d among the top {k}.")
        m[2].metric("baseline acc@1", f"{base['acc@1']:.3f}",
                    help="Nearest neighbours of c alone (inputs excluded): what the arithmetic has to beat.")
        m[3].metric(f"baseline acc@{k}", f"{base[f'acc@{k}']:.3f}")
    if ev["per_category"]:
        cats = pd.DataFrame([{"category": cat, "rows": v["n"], "acc@1": v["acc@1"], f"acc@{k}": v[f"acc@{k}"],
                              "baseline acc@1": v["baseline"]["acc@1"],
                              f"baseline acc@{k}": v["baseline"][f"acc@{k}"]}
                             for cat, v in ev["per_category"].items()])
        st.dataframe(cats, hide_index=True, key="eval_categories",
                     column_config={col: st.column_config.NumberColumn(col, format="%.3f")
                                    for col in cats.columns if col.startswith(("acc", "baseline"))})
    if ev["skipped"]:
        with st.expander(f"{len(ev['skipped'])} skipped rows", expanded=not ev["n"]):
            st.dataframe(pd.DataFrame(ev["skipped"], columns=["row", "reason"]), hide_index=True,
                         key="eval_skipped", column_config={"reason": st.column_config.TextColumn(width="large")})
    if ev.get("malformed"):
        with st.expander(f"{len(ev['malformed'])} lines not read (not four words)"):
            st.dataframe(pd.DataFrame(ev["malformed"], columns=["line", "reason"]), hide_index=True,
                         key="eval_malformed", column_config={"reason": st.column_config.TextColumn(width="large")})
    per_row = pd.DataFrame(ev.get("rows") or [])
    if len(per_row):
        with st.expander("Per-row results"):
            st.dataframe(per_row, hide_index=True, key="eval_rows")
        st.download_button("Per-row results (CSV)", safe_csv_bytes(per_row),
                           file_name=re.sub(r"\.csv$", "", name) + f"-{ev['method']}-results.csv", mime="text/csv",
                           icon=":material/download:", key="eval_download", on_click="ignore")


# ---- page ---------------------------------------------------------------------------------------
with ui.page("Analogies", purpose="to do arithmetic with its vectors",
             hint="A bundled analogy set can still be scored on a vocabulary below.") as (ws, model):
    if ws is not None:
        present = ui.vector_modalities(ui.data_key(ws, model))
        if not present:
            ui.no_vectors_info(ws, model)
        else:
            plus, minus = builder(ws, model)
            picker(ws, model)
            with ui.guard():
                results(ws, model, plus, minus, present)
    st.divider()
    with ui.guard():
        evaluation(ws, model)
