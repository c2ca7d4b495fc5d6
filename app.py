"""Jointscope web app: page config, the shared sidebar (workspace, model) and the page router.

Run with ``make run`` or ``streamlit run app.py`` (binds 127.0.0.1, see .streamlit/config.toml).
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(
    page_title="Jointscope",
    page_icon=":material/scatter_plot:",
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"About": "Jointscope — explore joint (CLIP-style) embedding spaces, locally."},
)

from pages import common as c  # noqa: E402  (set_page_config must come first)

PAGES = [
    st.Page("pages/data.py", title="Data", icon=":material/database:", default=True),
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/search.py", title="Search", icon=":material/search:"),
    st.Page("pages/analogies.py", title="Analogies", icon=":material/calculate:"),
    st.Page("pages/concepts.py", title="Concepts", icon=":material/lightbulb:"),
    st.Page("pages/quality.py", title="Quality", icon=":material/monitoring:"),
]


def _on_workspace_change() -> None:
    c.select(workspace=st.session_state["_ws_select"])
    st.session_state[c.LAST_INGEST] = None
    st.session_state[c.LAST_EMBED] = None


def _on_model_change() -> None:
    c.select(model=st.session_state["_model_select"])


def _on_hub_toggle() -> None:
    st.session_state[c.SHOW_HUB] = st.session_state["_show_hub"]


def workspace_picker() -> None:
    ss = st.session_state
    names = c.list_workspaces()
    if ss[c.WS] and ss[c.WS] not in names:
        st.error(c.plain(f"Workspace {ss[c.WS]} is gone from {c.core.workspace_path(ss[c.WS]).parent}"))
        c.select(workspace=None)
    # the widget keeps its own key; sync it from the canonical value before it is drawn
    ss["_ws_select"] = ss[c.WS]
    st.selectbox("Workspace", names, key="_ws_select", on_change=_on_workspace_change,
                 placeholder="No workspace yet" if not names else "Choose a workspace",
                 help="Workspaces are folders under $JOINTSCOPE_HOME (default ./workspaces).")
    with st.form("new_workspace", clear_on_submit=True, border=False):
        name = st.text_input("New workspace", key="_ws_new", placeholder="letters, digits, . _ -")
        if st.form_submit_button("Create workspace", icon=":material/add:"):
            try:
                c.create_workspace(name)
            except Exception as e:  # noqa: BLE001 - bad names and folders end in one line
                c.show_error(e)
            else:
                ss[c.LAST_INGEST] = ss[c.LAST_EMBED] = None
                st.rerun()


def model_picker() -> None:
    ss = st.session_state
    ss["_show_hub"] = ss[c.SHOW_HUB]
    show_hub = st.checkbox("show hub models", key="_show_hub", on_change=_on_hub_toggle,
                           help="List every open_clip pretrained model; those not on this computer "
                                "download from the Hugging Face hub on first use.")
    try:
        with st.spinner("Looking for models…"):
            catalogue = c.model_catalogue(include_hub=True)
    except Exception as e:  # noqa: BLE001 - e.g. a broken open_clip install: bundled ones still work
        c.show_error(e)
        catalogue = c.model_catalogue(include_hub=False)
    info = {m["id"]: m for m in catalogue}
    ids = [m["id"] for m in catalogue if m["bundled"] or m["available"] or show_hub]
    try:
        ws = c.get_workspace() if ss[c.WS] else None
        ids += [m for m in (ws.models() if ws else {}) if m not in ids]
    except Exception:  # noqa: BLE001 - the page itself reports a broken workspace
        pass
    if ss[c.MODEL] and ss[c.MODEL] not in ids:
        ids.append(ss[c.MODEL])
    ss["_model_select"] = ss[c.MODEL]
    model = st.selectbox("Model", ids, key="_model_select", on_change=_on_model_change,
                         format_func=lambda m: c.model_label(info.get(m), m),
                         placeholder="Choose a model")
    if model in info and info[model]["description"]:
        st.caption(c.plain(info[model]["description"]))


pg = st.navigation(PAGES)
c.start_umap_warm_up()  # once per server process: the first UMAP map then skips numba's compile
c.init_state()
with st.sidebar:
    st.subheader("Jointscope")
    workspace_picker()
    model_picker()
pg.run()
