"""Widgets and display helpers shared by the pages: error display (:func:`guard`, :func:`show_error`),
progress bars, the workspace summary line, result cards, uploads, map selections and the note on words a
model never saw (:func:`unknown_words_note`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import streamlit as st

import core
from core.errors import one_line
from core.images import IMAGE_EXTENSIONS
from pages.ui.cached import data_key, fit_verdict, stale_vectors, workspace_summary
from pages.ui.state import after_delete, models_with_vectors, select
from pages.ui.text import hit_caption, plain, upload_name

log = logging.getLogger("jointscope.app")


def show_error(e: BaseException | str, *, where=None) -> None:
    """st.error with a one-line reason; the full traceback goes to the server log only."""
    if isinstance(e, BaseException):
        expected = isinstance(e, (ValueError, OSError, KeyError, core.ModelLoadError))
        log.log(logging.INFO if expected else logging.WARNING, "page error: %s", e,
                exc_info=None if expected else e)
        text = one_line(e, limit=None)  # plain() below cuts it
    else:
        text = str(e)
    (where or st).error(plain(text, limit=500), icon=":material/error:")


@contextlib.contextmanager
def guard(where=None) -> Iterator[None]:
    """Run a block; any failure becomes one st.error line. st.rerun/st.stop pass through
    (they are BaseExceptions, not Exceptions)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a page never shows a traceback
        show_error(e, where=where)


def make_progress(bar, label: str = ""):
    """progress(done, total) for st.progress: 'done/total · items/s · ETA', at most 5 updates/s. The rate
    and ETA appear once they can be measured (items done after the first report); until then 'done/total …'."""
    state = {"t0": None, "last": 0.0, "done0": 0}

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"], state["done0"] = now, done  # a rate counts what was done after the first report
        if 0 < done < total and now - state["last"] < 0.2:
            return
        state["last"] = now
        el, since = now - state["t0"], done - state.get("done0", 0)
        rate = since / el if el > 0 and since > 0 else 0.0
        frac = min(done / total, 1.0) if total else 1.0
        # no rate until one can be measured (e.g. a stage that reports only in large steps)
        speed = f" · {rate:.1f} items/s · ETA {(total - done) / rate:.0f}s" if rate > 0 and done < total else ""
        bar.progress(frac, text=f"{label}{done}/{total}{speed}" + ("" if speed or done >= total else " …"))

    return cb


def stage_progress(bar, spans: dict[str, tuple[float, float, str]], prefix: str = ""):
    """progress(stage, done, total) -> one st.progress bar over several stages, at most 5 updates/s.

    ``spans``: stage -> (start, end, words): the share of the bar the stage fills and how it is named.
    """
    last = {"t": 0.0}

    def cb(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if 0 < done < total and now - last["t"] < 0.2:
            return
        last["t"] = now
        lo, hi, words = spans.get(stage, (0.0, 1.0, stage))
        frac = lo + (hi - lo) * (min(done / total, 1.0) if total else 1.0)
        count = f" {done}/{total}" if total > 1 else ""
        bar.progress(frac, text=f"{prefix}{words}{count}…")

    return cb


def no_vectors_info(ws, model: str) -> None:
    """The message of a page that needs vectors of ``model`` when ``ws`` has none yet: the models that do
    have vectors here, each with a button that switches to it, and how to embed with ``model``."""
    have = models_with_vectors(ws)
    if not have:
        st.info(plain(f"No vectors for {model} in workspace {ws.name} yet. Open the Data page and embed the "
                      f"items with {model} (Vectors → Embed), then come back."), icon=":material/bolt:")
        return
    listed = ", ".join(f"{m} ({n:,})" for m, n in have.items())
    st.info(plain(f"No vectors for {model} in workspace {ws.name}. Models with vectors here: {listed}. Switch "
                  f"to one of them, or embed the items with {model} on the Data page."), icon=":material/bolt:")
    cols = st.columns(min(len(have), 4))
    for i, m in enumerate(list(have)[:4]):
        cols[i].button(plain(f"Use {m}"), key=f"use_model_{i}", icon=":material/swap_horiz:",
                       on_click=select, kwargs={"model": m})


def build_demo(*, with_vectors: bool = True) -> None:
    """Build the bundled demo workspace with a progress bar per stage (generate, embed)."""
    from core.demo import DEMO_WORKSPACE, create_demo_workspace

    bar = st.progress(0.0, text="Building the demo workspace…")
    per_stage: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in per_stage:
            per_stage[stage] = make_progress(bar, f"{stage}: ")
        per_stage[stage](done, total)

    create_demo_workspace(core.workspace_path(DEMO_WORKSPACE), progress=progress,
                          **({} if with_vectors else {"model": None}))
    bar.empty()


def summary_line(ws: core.Workspace | None, model: str | None) -> None:
    """One caption with the workspace, item counts and vectors of the chosen model."""
    if ws is None:
        st.caption("No workspace open — create one or load the demo on the Data page.")
        return
    s = workspace_summary(ws, model)
    mods = ", ".join(f"{v} {k}{'' if v == 1 else 's'}" for k, v in sorted(s["by_modality"].items())) or "empty"
    vec = (f"{s['vectors']} vectors for {model} ({s['dim']}-d)" if s["vectors"]
           else f"no vectors for {model} yet" if model else "no model chosen")
    st.caption(plain(f"Workspace {ws.name}: {s['items']} items ({mods}) · {vec}"))
    if s["vectors"]:
        stale_warning(ws, model)


def stale_warning(ws: core.Workspace, model: str) -> None:
    """A warning when the stored vectors of a model whose weights live in a local folder (bundled models,
    local checkpoints) are not what the model gives now; checked again when either changes."""
    from core.encoders import weights_key
    from core.messages import stale_vectors_warning

    wkey = weights_key(model)
    if wkey is None:
        return
    stale = stale_vectors(data_key(ws, model), wkey)
    if stale is not None:
        remedy = "On the Data page, tick “Embed everything again” and embed."
        st.warning(plain(stale_vectors_warning(model, stale, remedy), limit=1000), icon=":material/sync_problem:")


def unknown_words_note(model: str, texts, *, terms: bool = False) -> None:
    """A warning naming the words of the user's ``texts`` that ``model`` never saw in training
    (core.vocabulary.unknown_words; ``terms=True``: item and image terms are skipped); nothing for a model
    without a list of known words (hub models)."""
    from core.messages import unknown_words_warning
    from core.vocabulary import unknown_words

    words = unknown_words(model, texts, terms=terms)
    if words:
        st.warning(plain(unknown_words_warning(model, words), limit=600), icon=":material/spellcheck:")


def errors_frame(errors) -> pd.DataFrame:
    """Per-item errors (list of (source, reason) or {source, reason}) as a two-column table."""
    rows = [e if isinstance(e, dict) else {"source": e[0], "reason": e[1]} for e in (errors or [])]
    return pd.DataFrame(rows, columns=["source", "reason"])


IMAGE_TYPES = [e.lstrip(".") for e in IMAGE_EXTENSIONS]  # st.file_uploader types: without the dot
UPLOAD_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "jointscope-uploads"
MODALITY_PLURAL = {"image": "images", "text": "texts", "row": "table rows"}


def image_upload_term(file) -> str:
    """An uploaded image as an ``image:<path>`` term (see core.search).

    The bytes are decoded first: a corrupt or non-image file raises ValueError naming the file. The
    file is kept in a content-addressed temp folder under its own name, so the same upload is the same
    term (cached results stay valid) and core can exclude a stored copy of it from the results.
    """
    import hashlib
    import io

    from PIL import Image

    from core.encoders import load_image

    name, data = upload_name(file.name), file.getvalue()
    try:
        with Image.open(io.BytesIO(data)) as im:
            load_image(im).load()
    except Exception as e:  # noqa: BLE001 - any unreadable upload ends here, named
        why = ("not an image PIL can read" if isinstance(e, Image.UnidentifiedImageError)
               else one_line(e, limit=None))
        raise ValueError(f"{name} is not a readable image ({why})") from None
    path = UPLOAD_DIR / hashlib.sha256(data).hexdigest()[:20] / name
    if not path.is_file():  # a temp name of its own: two sessions may upload the same image at once
        from core.storage import atomic_write_bytes

        atomic_write_bytes(path, data)
    return f"image:{path}"


def result_cards(hits: list[dict], *, key: str, captions: dict[str, str] | None = None, columns: int = 5,
                 actions=()) -> None:
    """A gallery of results: images as thumbnails, texts as text cards, each with its rank and score.

    User text goes through :func:`plain` (shown literally). ``actions``: ``(label, callback(item_id),
    icon, help)`` tuples, one button each on every card (e.g. "More like this").
    """
    captions = captions or {}
    for start in range(0, len(hits), columns):
        cols = st.columns(columns)
        for rank, (col, hit) in enumerate(zip(cols, hits[start:start + columns]), start=start + 1):
            with col.container(border=True):
                if hit.get("thumb") or hit.get("image"):
                    st.image(hit.get("thumb") or hit["image"], width="stretch")
                    st.caption(f"**{rank}** · score **{hit['score']:.3f}**")
                    st.caption(plain(hit_caption(hit, captions), limit=80))
                else:
                    st.caption(f"**{rank}** · score **{hit['score']:.3f}** · {hit['modality']}")
                    st.markdown(plain(hit_caption(hit, captions), limit=160))
                spots = st.columns(len(actions), gap="small") if len(actions) > 1 else [st.container()] * len(actions)
                for i, (spot, (label, fn, icon, helptext)) in enumerate(zip(spots, actions)):
                    spot.button(label, key=f"{key}_{i}_{hit['id']}", on_click=fn, args=(hit["id"],), icon=icon,
                                type="tertiary", help=helptext)


# ---- deleting items (Data page filter, Map selection) ---------------------------------------------
CONFIRM_DELETE = "delete_items_confirm"  # dict | None — {workspace, ids, key} waiting for the user's confirmation
LAST_DELETE = "last_delete"  # dict | None — what the last deletion removed, said once after the rerun


def items_word(n: int) -> str:
    return f"{n} item{'s' * (n != 1)}"


def count_words(modalities: pd.Series) -> str:
    """'2 images, 1 text' for a column of modalities."""
    one = {"row": "table row"}
    return ", ".join(f"{n} {one.get(m, m) if n == 1 else MODALITY_PLURAL.get(m, m)}"
                     for m, n in modalities.value_counts().sort_index().items())


def delete_items_button(ws, df: pd.DataFrame, *, what: str, key: str, on_done=None) -> None:
    """A "Delete {what}…" button for the items of ``df`` (columns id, modality); the deletion runs after a
    confirmation that says how many of which modality go. ``on_done()`` runs after a deletion (e.g. clear
    the selection); :func:`deleted_message` says what went on the next run."""
    ss = st.session_state
    ids = df["id"].astype(str).tolist()
    pending = ss.get(CONFIRM_DELETE)
    if pending and (pending["workspace"] != ws.name or pending["ids"] != ids or pending["key"] != key):
        pending = None  # the filter, the selection or the workspace changed since the first click
    if not pending:
        if st.button(plain(f"Delete {what}…"), icon=":material/delete:", key=key):
            ss[CONFIRM_DELETE] = {"workspace": ws.name, "ids": ids, "key": key}
            st.rerun()
        return
    st.warning(plain(f"Delete {items_word(len(ids))} ({count_words(df['modality'])}) from "
                     f"workspace {ws.name}, with their vectors of every model, their stored images and what "
                     "was computed from them (index, maps, concepts)? Paired items stay, unpaired. This "
                     "cannot be undone."), icon=":material/warning:")
    yes, no = st.columns([1, 2])
    if yes.button("Delete", type="primary", key=f"{key}_yes"):
        ss[CONFIRM_DELETE] = None
        with guard(), st.spinner("Deleting…"):
            rep = ws.delete_items(ids)
            after_delete(ws.name, rep.ids)  # queries, typed ids, selections and results that named them
            gone = f"{items_word(rep.deleted)} ({count_words(df[df['id'].isin(rep.ids)]['modality'])})"
            ss[LAST_DELETE] = {"workspace": ws.name, "text": f"Deleted {gone}; {rep.items} left."}
            if on_done is not None:
                on_done()
            st.rerun()
    if no.button("Cancel", key=f"{key}_no"):
        ss[CONFIRM_DELETE] = None
        st.rerun()


def deleted_message(ws) -> None:
    """What the last deletion removed (once, in the workspace it concerned or after a workspace went)."""
    done = st.session_state.get(LAST_DELETE)
    if done and done["workspace"] in (None, getattr(ws, "name", None)):
        st.session_state[LAST_DELETE] = None
        st.success(plain(done["text"]), icon=":material/delete:")


def model_fit(ws, model: str | None) -> dict | None:
    """The cached :func:`core.quality.fit_verdict` of ``model`` on ``ws`` (``{"verdict", "evidence",
    "reason"}``); None without a workspace or model, or when it cannot be measured (logged: the pages work
    without it)."""
    if ws is None or not model:
        return None
    try:
        return fit_verdict(data_key(ws, model))
    except Exception as e:  # noqa: BLE001 - the verdict is a note; the page itself still works
        log.warning("fit of %s on %s not measured: %s", model, getattr(ws, "name", ws), one_line(e))
        return None


def fit_note(ws, model: str | None) -> dict | None:
    """One plain sentence when ``model`` does not fit the workspace's data (verdict "weak" or "near chance":
    a warning; "unknown" with items to measure: an info); nothing when it fits or has no vectors here (the
    pages say that themselves). Returns the verdict (see :func:`model_fit`)."""
    fit = model_fit(ws, model)
    if fit is None or fit["verdict"] == "fits":
        return fit
    if fit["verdict"] == "unknown":
        if fit["evidence"].get("n_items"):
            st.info(plain(fit["reason"], limit=500), icon=":material/help:")
    else:
        st.warning(plain(fit["reason"], limit=500), icon=":material/report:")
    return fit
