"""Data: upload files and texts (with column roles for tables), browse items, embed with a model."""
from __future__ import annotations

import math
import tempfile
import threading
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

import core
from core.encoders import modalities_of
from core.ingest import ROLES, TABLE_EXTS, inspect_table
from core.items import captions
from core.messages import skipped_words, unsupported_hint
from core.workspace import ITEM_COLUMNS
from pages import ui

TABLE_TYPES = ["csv", "tsv", "parquet", "json", "jsonl", "xlsx"]
OTHER_TYPES = ["zip", "txt"]
PAGE_SIZE = 200


# ---- helpers (pure or cached; no widgets) -------------------------------------------------------
def _write_uploads(files, folder: Path) -> list[Path]:
    """Write uploads into ``folder`` keeping their names; repeated names go to numbered subfolders."""
    out = []
    for f in files:
        name = ui.upload_name(f.name)
        target, n = folder / name, 1
        while target.exists():
            target, n = folder / f"dup{n}" / name, n + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.getvalue())
        out.append(target)
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def inspect_upload(file_id: str, name: str, _data: bytes) -> tuple[pd.DataFrame, dict]:
    """inspect_table on an uploaded table (written to a temp file under its own name)."""
    with tempfile.TemporaryDirectory(prefix="jointscope-inspect-") as tmp:
        path = Path(tmp) / ui.upload_name(name)
        path.write_bytes(_data)
        preview, roles = inspect_table(path, n_preview=20)
    return preview, dict(roles)


def _sample(values: pd.Series) -> str:
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        s = " ".join(str(v).split())
        return s if len(s) <= 80 else s[:79] + "…"
    return ""


def merge_role_overrides(detected: dict[str, dict], edited: dict[str, dict]) -> dict[str, str]:
    """Role changes the user made, as one ``{column: role}`` map for the whole import.

    core applies roles to every table of an ingest call (tables and images must be ingested
    together so image references resolve), so two tables may not ask different roles for one name.
    """
    out: dict[str, str] = {}
    for fid, roles in edited.items():
        for col, role in roles.items():
            if detected.get(fid, {}).get(col) == role:
                continue
            if out.get(col, role) != role:
                raise ValueError(f"column {col!r} was given two different roles ({out[col]!r} and {role!r}) "
                                 "in two tables; import those tables separately")
            out[col] = role
    return out


def import_uploads(ws, files, texts: list[str], roles: dict[str, str] | None) -> dict:
    """Write uploads to a fresh temp folder (keeping their names) and ingest everything in one call."""
    with tempfile.TemporaryDirectory(prefix="jointscope-upload-") as tmp:
        paths = _write_uploads(files or [], Path(tmp))
        rep = ws.ingest(paths, texts=texts, roles=roles or None)
    return {"workspace": ws.name, "added": rep.added, "skipped": rep.skipped, "repeated": rep.repeated,
            "errors": [{"source": s, "reason": r} for s, r in rep.errors]}


@st.cache_data(show_spinner=False, max_entries=32)
def page_captions(path: str, version: tuple, ids: tuple[str, ...], _ws, _rows: pd.DataFrame) -> list:
    """:func:`core.export.captions` of one page of the item table (``ids``, in order), computed once per
    page and version of the items (reruns while typing a filter or paging back reuse it)."""
    return captions(_ws.items, _rows).tolist()


def display_table(ws, df: pd.DataFrame) -> pd.DataFrame:
    """Items for st.dataframe: thumbnail data URI first, then caption (a text's own text, an image's paired
    caption: :func:`core.export.captions`), source, pair, metadata, id."""
    meta = [col for col in df.columns if col not in ITEM_COLUMNS]
    out = pd.DataFrame({"thumb": [ui.thumb_data_uri(str(ws.abspath(t))) if isinstance(t, str) else None
                                  for t in df["thumb"]], "modality": df["modality"]}, index=df.index)
    out["text"] = page_captions(str(ws.path), ws.items_version(), tuple(df["id"].astype(str)), ws, df)
    return pd.concat([out, df[["source", "pair", "width", "height", *meta, "id"]]], axis=1)


# ---- sections -----------------------------------------------------------------------------------
def demo_section(*, prominent: bool) -> None:
    from core.demo import DEMO_WORKSPACE

    exists = DEMO_WORKSPACE in ui.list_workspaces()
    label = "Open demo" if exists else "Load demo"
    demo_ok = any(m.id == ui.DEMO_MODEL and m.available for m in core.list_models(include_hub=False))
    if not demo_ok and not exists:
        st.caption("The 'demo' model is not installed yet, so the demo loads without vectors.")
    if not st.button(label, type="primary" if prominent else "secondary", icon=":material/auto_awesome:",
                     help="A generated world of coloured shapes with captions, embedded with the bundled "
                          "'demo' model (about a minute on a CPU the first time)."):
        return
    with ui.guard():
        if not exists:
            ui.build_demo(with_vectors=demo_ok)
        ui.select(workspace=DEMO_WORKSPACE, model=ui.DEMO_MODEL)
        st.session_state[ui.LAST_INGEST] = st.session_state[ui.LAST_EMBED] = None
        st.rerun()


def add_section(ws) -> None:
    ss = st.session_state
    st.subheader("Add items")
    rnd = ss[ui.UPLOAD_ROUND]
    files = st.file_uploader(
        "Files: images, ZIPs of images, tables (CSV, TSV, Parquet, JSON, JSONL, XLSX), .txt (one text per line)",
        type=ui.IMAGE_TYPES + TABLE_TYPES + OTHER_TYPES, accept_multiple_files=True, key=f"upload_{rnd}")
    pasted = st.text_area("Or paste texts, one item per line", key=f"paste_{rnd}", height=100)

    detected_roles: dict[str, dict] = {}
    edited_roles: dict[str, dict] = {}
    tables = [f for f in files or [] if Path(ui.upload_name(f.name)).suffix.lower().lstrip(".") in TABLE_EXTS]
    for f in tables:
        with st.expander(ui.plain(f"Columns of {ui.upload_name(f.name)}"), expanded=True):
            try:
                preview, roles = inspect_upload(f.file_id, f.name, f.getvalue())
            except Exception as e:  # noqa: BLE001 - the import will report the same file as an error
                ui.show_error(e)
                continue
            editor = pd.DataFrame({
                "column": [str(k) for k in roles],
                "role": list(roles.values()),
                "sample": [_sample(preview[k]) if k in preview.columns else "" for k in roles],
            })
            edited = st.data_editor(
                editor, key=f"roles_{rnd}_{f.file_id}", hide_index=True, disabled=["column", "sample"],
                column_config={
                    "column": st.column_config.TextColumn("column"),
                    "role": st.column_config.SelectboxColumn("role", options=list(ROLES), required=True,
                                                             help="How this column becomes items"),
                    "sample": st.column_config.TextColumn("sample value"),
                })
            by_name = {str(k): k for k in roles}
            detected_roles[f.file_id] = dict(roles)
            edited_roles[f.file_id] = {by_name[col]: role for col, role in zip(edited["column"], edited["role"])}
    if len(edited_roles) > 1:
        st.caption("A role change applies to every uploaded table that has a column of that name.")

    texts = [line.strip() for line in (pasted or "").splitlines() if line.strip()]
    if st.button("Import", type="primary", icon=":material/upload:", disabled=not (files or texts)):
        try:
            roles = merge_role_overrides(detected_roles, edited_roles)
            with st.spinner("Importing…"):
                report = import_uploads(ws, files, texts, roles)
        except Exception as e:  # noqa: BLE001
            ui.show_error(e)
        else:
            ss[ui.LAST_INGEST] = report
            ss[ui.UPLOAD_ROUND] = rnd + 1  # fresh (empty) uploader and text area
            ui.fit_model(ws, why="after the import")  # e.g. a table's vector columns: precomputed:<name>
            st.rerun()

    rep = ss.get(ui.LAST_INGEST)
    if rep and rep.get("workspace") == ws.name and not (files or texts):  # new files wait: the old report goes
        skipped = skipped_words(rep["skipped"] - rep.get("repeated", 0), rep.get("repeated", 0))
        msg = f"Import: {rep['added']} added" + (f", {skipped}" if skipped else ", 0 skipped")
        (st.success if not rep["errors"] else st.warning)(
            msg + (f", {len(rep['errors'])} could not be read" if rep["errors"] else ""))
        if rep["errors"]:
            st.dataframe(ui.errors_frame(rep["errors"]), hide_index=True, key="ingest_errors",
                         column_config={"source": st.column_config.TextColumn("source"),
                                        "reason": st.column_config.TextColumn("reason", width="large")})


def items_section(ws) -> None:
    st.subheader("Items")
    items = ws.items
    counts = items["modality"].value_counts()
    cols = st.columns(4)
    cols[0].metric("items", len(items))
    for col, mod in zip(cols[1:], ("image", "text", "row")):
        col.metric(mod + "s", int(counts.get(mod, 0)))
    if items.empty:
        st.caption("No items yet — upload files or paste texts above.")
        return
    f1, f2 = st.columns([1, 3])
    mod = f1.selectbox("Modality", ["all", "image", "text", "row"], key="items_modality")
    query = f2.text_input("Filter by text, source or id", key="items_query")
    df = ui.items_frame(ws, modality=None if mod == "all" else mod, query=query)
    n = len(df)
    if n == 0:
        st.caption("No item matches the filter.")
        return
    pages = max(1, math.ceil(n / PAGE_SIZE))
    page = 1
    if pages > 1:
        if st.session_state.get("items_page", 1) > pages:  # the filter shrank the list
            st.session_state["items_page"] = pages
        page = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1,
                                   key="items_page"))
    start = (page - 1) * PAGE_SIZE
    view = df.iloc[start:start + PAGE_SIZE]
    st.dataframe(
        display_table(ws, view), hide_index=True, key="items_table", row_height=64, placeholder="",
        column_config={
            "thumb": st.column_config.ImageColumn("thumb", width="small"),
            "text": st.column_config.TextColumn("caption / text", width="large"),
            "width": st.column_config.NumberColumn("w", format="%d"),
            "height": st.column_config.NumberColumn("h", format="%d"),
        })
    shown = f"rows {start + 1}–{start + len(view)} of {n}" if n > PAGE_SIZE else f"all {n} rows"
    st.caption(f"Showing {shown}" + ("" if n == len(items) else f" ({len(items)} items in the workspace)")
               + (f"; at most {PAGE_SIZE} rows per page" if n > PAGE_SIZE else ""))
    what = f"all {ui.items_word(n)}" if n == len(items) else f"the {ui.items_word(n)} the filter shows"
    ui.delete_items_button(ws, df, what=what, key="delete_items")


def run_embedding(ws, model: str, refresh: bool) -> None:
    """Embed with a Stop button. Stop (or any other click) interrupts the run at its next progress update:
    core commits what was encoded, and the next run of the page waits for that, then says how far it got."""
    ss = st.session_state
    run_id = uuid.uuid4().hex
    released = ui.embed_runs().setdefault(run_id, threading.Event())
    ss[ui.EMBED_RUN] = {"workspace": ws.name, "model": model, "id": run_id}
    st.button("Stop embedding", key="embed_stop", icon=":material/stop_circle:",
              help="Stops after the current batch; what was embedded is kept and the next Embed continues from there.")
    bar = st.progress(0.0, text=ui.plain(f"Loading {model}…"))
    try:
        rep = ws.embed(model, progress=ui.make_progress(bar), refresh=refresh)
    except Exception as e:  # noqa: BLE001 - unknown id, missing weights, dimension clash
        ss[ui.EMBED_RUN] = None
        ui.embed_runs().pop(run_id, None)
        bar.empty()
        ui.show_error(e)
        return
    finally:
        released.set()
    ss[ui.EMBED_RUN] = None
    ui.embed_runs().pop(run_id, None)
    bar.progress(1.0, text="done")
    ss[ui.LAST_EMBED] = dict(rep.to_dict(), workspace=ws.name, hint=unsupported_hint(ws, rep))
    st.rerun()  # the header, the counts and the models table were drawn before these vectors existed


def stopped_run(ws) -> None:
    """A run marked in the session but not running now was stopped: wait until it has committed what it
    encoded (it finishes its batch first), then say how far it got (once)."""
    ss = st.session_state
    run = ss.get(ui.EMBED_RUN)
    if not run or run.get("workspace") != ws.name:
        return
    ss[ui.EMBED_RUN] = None
    released = ui.embed_runs().pop(run.get("id"), None)
    if released is not None and not released.is_set():
        with st.spinner("Stopping after the current batch…"):
            released.wait(timeout=600)
    ss[ui.LAST_EMBED] = {"workspace": ws.name, "model": run["model"], "stopped": True,
                        "have": ws.store(run["model"]).count(), "items": len(ws.items)}
    st.rerun()  # the header above was drawn before the stopped run's last vectors were committed


def own_vectors_note(ws, model: str) -> None:
    """A model that encodes nothing holds vectors that came with the data: say how many items have them and
    how to embed the others (another model), instead of offering an Embed button that cannot do anything."""
    have, n = ws.store(model).count(), len(ws.items)
    if have:
        st.info(ui.plain(f"{model} is this workspace's own vectors: they came with the data ({have} of {n} items "
                         "have one). It encodes nothing itself, so there is nothing to embed with it; to embed "
                         "items with a model, choose one that encodes them in the sidebar (e.g. demo or minilm)."),
                icon=":material/table_chart:")
    else:
        st.info(ui.plain(f"{model} encodes nothing: it stands for vectors that come with a table's data, and this "
                         "workspace has none for it. Choose a model that encodes your items in the sidebar "
                         "(e.g. demo or minilm)."), icon=":material/info:")


def embed_section(ws, model: str | None) -> None:
    ss = st.session_state
    st.subheader("Vectors")
    can: tuple | None = None
    if model is None:
        st.info("Choose a model in the sidebar to embed the items.", icon=":material/info:")
    else:
        try:
            can = modalities_of(model)
        except ValueError:
            can = None  # an unknown id: the button reports it in one line
        if can == ():  # a table's own vectors (precomputed:<column>): nothing to embed with
            own_vectors_note(ws, model)
        elif can is not None:
            left = {k: v for k, v in ws.items["modality"].value_counts().items() if k not in can}
            if left:
                st.caption(ui.plain(f"{model} encodes {' and '.join(can)}; "
                                   + ", ".join(f"{v} {k} item{'' if v == 1 else 's'}" for k, v in left.items())
                                   + " will be left out."))
        if model.startswith("openclip:"):
            st.caption("Hub models download their weights on first use (the network is needed once).")
    if model is not None and can != ():
        refresh = st.checkbox("Embed everything again", key="embed_refresh",
                              help="Delete this model's vectors and what was derived from them (index, maps, "
                                   "concepts), then embed every item: needed when the model's weights changed.")
        stopped_run(ws)
        if st.button(ui.plain(f"Embed with {model}"), type="primary", icon=":material/bolt:", disabled=ws.items.empty,
                     key="embed"):
            run_embedding(ws, model, refresh)
        rep = ss.get(ui.LAST_EMBED)
        if rep and rep.get("workspace") == ws.name and rep.get("stopped"):
            st.info(ui.plain(f"Embedding with {rep['model']} was stopped: {rep['have']} of {rep['items']} items have "
                            f"vectors for it, and what was embedded is kept. Embed again to continue from there."),
                    icon=":material/stop_circle:")
        elif rep and rep.get("workspace") == ws.name:
            msg = (f"{rep['model']}: {rep['embedded']} embedded, {rep['cached']} already had vectors, "
                   f"{rep['unsupported']} of a modality this model does not encode · {rep['seconds']:.1f} s")
            (st.success if not rep["errors"] and not rep.get("hint") else st.warning)(ui.plain(msg))
            if rep.get("hint"):
                st.warning(ui.plain(rep["hint"]), icon=":material/lightbulb:")
            if rep["errors"]:
                st.dataframe(ui.errors_frame(rep["errors"]), hide_index=True, key="embed_errors")
    models = ws.models()
    if models:
        n = len(ws.items)
        st.dataframe(pd.DataFrame([{"model": m, "dim": v["dim"], "vectors": v["n"],
                                    "coverage": f"{v['n']}/{n}"} for m, v in models.items()]),
                     hide_index=True, key="models_table")
    else:
        st.caption("No vectors yet in this workspace.")


# ---- deleting -----------------------------------------------------------------------------------
def delete_workspace_section(ws) -> None:
    """Delete the whole workspace once its name is typed; the sidebar then opens another one (or none)."""
    st.caption(ui.plain(f"Deletes the folder {ws.path} with every item, vector and stored file in it. This "
                        "cannot be undone."))
    typed = st.text_input("Type the workspace's name to confirm", key="delete_ws_name")
    if st.button("Delete workspace", icon=":material/delete_forever:", key="delete_ws",
                 disabled=typed.strip() != ws.name):
        with ui.guard():
            n = ui.items_word(core.delete_workspace(ws.path)["deleted"])
            ss = st.session_state
            ss[ui.LAST_DELETE] = {"workspace": None, "text": f"Deleted workspace {ws.name} ({n})."}
            ss[ui.LAST_INGEST] = ss[ui.LAST_EMBED] = ss[ui.CONFIRM_DELETE] = None
            ss.pop("delete_ws_name", None)
            ui.select(workspace=next(iter(ui.list_workspaces()), None))
            st.rerun()


# ---- page ---------------------------------------------------------------------------------------
with ui.page("Data") as (ws, model):
    ui.deleted_message(ws)
    if ws is None:
        st.info("No workspace is open. Create one in the sidebar (Workspace → New workspace), "
                "or load the bundled demo.", icon=":material/folder_open:")
        demo_section(prominent=True)
    else:
        add_section(ws)
        items_section(ws)
        embed_section(ws, model)
        with st.expander("Demo workspace"):
            demo_section(prominent=False)
        with st.expander("Delete this workspace"):
            delete_workspace_section(ws)
