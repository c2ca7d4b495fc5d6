"""Jointscope web app: page config, the shared sidebar (workspace, model) and the page router.

Run with ``make run`` or ``streamlit run app.py`` (binds 127.0.0.1, see .streamlit/config.toml).
"""
from __future__ import annotations

import streamlit as st

from core.encoders import ASSETS_DIR

# The tab icon is a file served by this server: a ":material/...:" page icon would make the browser fetch
# the icon from a web-font server (the pages' navigation icons below come from Streamlit's bundled font).
_ICON = ASSETS_DIR / "icon.png"

st.set_page_config(
    page_title="Jointscope",
    page_icon=str(_ICON) if _ICON.is_file() else "🔭",
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"About": "Jointscope — explore joint (CLIP-style) embedding spaces, locally."},
)

import core  # noqa: E402  (set_page_config must come first)
from pages import ui  # noqa: E402

PAGES = [
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/database:"),
    st.Page("pages/search.py", title="Search", icon=":material/search:"),
    st.Page("pages/analogies.py", title="Analogies", icon=":material/calculate:"),
    st.Page("pages/concepts.py", title="Concepts", icon=":material/lightbulb:"),
    st.Page("pages/quality.py", title="Quality", icon=":material/monitoring:"),
]


def _on_workspace_change() -> None:
    # ui.select drops the old workspace's page state (queries, item ids, settings) and fits the model
    ui.select(workspace=st.session_state["_ws_select"])


def _on_model_change() -> None:
    ui.select(model=st.session_state["_model_select"])


def _on_hub_toggle() -> None:
    st.session_state[ui.SHOW_HUB] = st.session_state["_show_hub"]


def workspace_picker() -> None:
    ss = st.session_state
    names = ui.list_workspaces()
    if ss[ui.WS] and ss[ui.WS] not in names:
        st.error(ui.plain(f"Workspace {ss[ui.WS]} is gone from {core.workspace_path(ss[ui.WS]).parent}"))
        ui.select(workspace=None)
    # the widget keeps its own key; sync it from the canonical value before it is drawn
    ss["_ws_select"] = ss[ui.WS]
    st.selectbox("Workspace", names, key="_ws_select", on_change=_on_workspace_change,
                 placeholder="No workspace yet" if not names else "Choose a workspace",
                 help="Workspaces are folders under $JOINTSCOPE_HOME (default ./workspaces).")
    with st.form("new_workspace", clear_on_submit=True, border=False):
        name = st.text_input("New workspace", key="_ws_new", placeholder="letters, digits, . _ -")
        if st.form_submit_button("Create workspace", icon=":material/add:"):
            try:
                ui.create_workspace(name)
            except Exception as e:  # noqa: BLE001 - bad names and folders end in one line
                ui.show_error(e)
            else:
                ss[ui.LAST_INGEST] = ss[ui.LAST_EMBED] = None
                st.switch_page(PAGES[1])  # a new workspace is empty: fill it on the Data page


def model_picker() -> None:
    ss = st.session_state
    ss["_show_hub"] = ss[ui.SHOW_HUB]
    show_hub = st.checkbox("show hub models", key="_show_hub", on_change=_on_hub_toggle,
                           help="List every open_clip pretrained model; those not on this computer "
                                "download from the Hugging Face hub on first use.")
    try:
        with st.spinner("Looking for models…"):
            catalogue = ui.model_catalogue(include_hub=True)
    except Exception as e:  # noqa: BLE001 - e.g. a broken open_clip install: bundled ones still work
        ui.show_error(e)
        catalogue = ui.model_catalogue(include_hub=False)
    info = {m["id"]: m for m in catalogue}
    ids = [m["id"] for m in catalogue if m["bundled"] or m["available"] or show_hub]
    try:
        ws = ui.get_workspace() if ss[ui.WS] else None
        ids += [m for m in (ws.models() if ws else {}) if m not in ids]
    except Exception:  # noqa: BLE001 - the page itself reports a broken workspace
        pass
    if ss[ui.MODEL] and ss[ui.MODEL] not in ids:
        ids.append(ss[ui.MODEL])
    ss["_model_select"] = ss[ui.MODEL]
    model = st.selectbox("Model", ids, key="_model_select", on_change=_on_model_change,
                         format_func=lambda m: ui.model_label(info.get(m), m),
                         placeholder="Choose a model")
    if model in info and info[model]["description"]:
        st.caption(ui.plain(info[model]["description"]))


pg = st.navigation(PAGES)
ui.start_umap_warm_up()  # once per server process: the first UMAP map then skips numba's compile
ui.init_state()
with st.sidebar:
    st.subheader("Jointscope")
    workspace_picker()
    model_picker()
pg.run()
