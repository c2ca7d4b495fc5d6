"""The opening every page shares (:func:`page`): session defaults (:func:`init_state`), the first start, and the
guarded lookup of the chosen workspace and model (:func:`current`, :func:`open_workspace_and_model`).

The top of :mod:`pages.ui`: it draws with :mod:`pages.ui.widgets` and reads and writes :mod:`pages.ui.state`,
and nothing in :mod:`pages.ui` imports it back.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import streamlit as st

import core
from pages.ui.cached import first_start_gate
from pages.ui.state import (
    DEMO_MODEL,
    DEMO_NAME,
    EMBED_RUN,
    LAST_EMBED,
    LAST_INGEST,
    MODEL,
    SELECTION,
    SELECTION_ROUND,
    SHOW_HUB,
    UPLOAD_ROUND,
    WS,
    default_model,
    from_url,
    get_workspace,
    list_workspaces,
    model_note,
    sync_url,
)
from pages.ui.widgets import build_demo, guard, show_error, summary_line


def _leave_legacy_pages_mode() -> None:
    """Hand a page that Streamlit ran alone (legacy pages/ folder mode) back to app.py's router.

    Streamlit decides per process: until app.py has called st.navigation once, a ``pages/`` folder
    beside it makes the server run ``pages/<name>.py`` directly when the very first request is a deep
    link (e.g. /map), with no sidebar and a page list of every .py file in pages/. Clearing the flag
    and rerunning executes app.py, which routes to the same page (same url path).
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - internal module moved; nothing to fix then
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


def _first_start_demo() -> str | None:
    """On a first start (no workspace at all), build the demo so the app opens on something real.

    Off with JOINTSCOPE_AUTODEMO=0 (tests), or when the demo model is not installed. The UMAP warm-up
    waits until this is over (:func:`~pages.ui.cached.first_start_gate`).
    """
    try:
        if os.environ.get("JOINTSCOPE_AUTODEMO", "1") == "0":
            return None
        if not any(m.id == DEMO_MODEL and m.available for m in core.list_models(include_hub=False)):
            return None
        with st.spinner("First start: building the demo workspace (world images with captions, "
                        "embedded with the bundled 'demo' model)…"):
            build_demo()
    except Exception as e:  # noqa: BLE001 - the app must still open
        show_error(e)
        return None
    finally:
        first_start_gate().set()
    return DEMO_NAME


def init_state() -> None:
    """Defaults for every session key (idempotent); the first start opens the demo if it exists."""
    _leave_legacy_pages_mode()
    ss = st.session_state
    from_url()
    if WS not in ss:
        names = list_workspaces()
        if not names and _first_start_demo():
            names = list_workspaces()
        if DEMO_NAME in names:
            ss[WS] = DEMO_NAME
            ss.setdefault(MODEL, DEMO_MODEL)
        else:
            ss[WS] = names[0] if names else None
    if ss.get(MODEL) is None and ss[WS]:  # a workspace is open: offer a usable model at once
        ss.pop(MODEL, None)
    if MODEL not in ss:
        models = None
        if ss[WS]:
            try:
                models = get_workspace(ss[WS]).models()
            except Exception:  # noqa: BLE001
                models = None
        ss[MODEL] = default_model(models) if ss[WS] else None
    ss.setdefault(SHOW_HUB, False)
    ss.setdefault(LAST_INGEST, None)
    ss.setdefault(LAST_EMBED, None)
    ss.setdefault(EMBED_RUN, None)
    ss.setdefault(UPLOAD_ROUND, 0)
    ss.setdefault(SELECTION, None)
    ss.setdefault(SELECTION_ROUND, 0)
    sync_url()


def current() -> tuple[core.Workspace | None, str | None]:
    """(open workspace or None, chosen model id or None); a vanished workspace shows one error."""
    name = st.session_state.get(WS)
    if not name:
        return None, st.session_state.get(MODEL)
    try:
        return get_workspace(name), st.session_state.get(MODEL)
    except Exception as e:  # noqa: BLE001
        show_error(e)
        return None, st.session_state.get(MODEL)


def open_workspace_and_model(purpose: str, *, hint: str = "") -> tuple[core.Workspace | None, str | None]:
    """The sidebar's (workspace, model), or (None, None) after one st.info saying what to choose.

    ``purpose`` completes "Choose a model in the sidebar …" (e.g. "to map its vectors"); ``hint`` is
    added to the no-workspace message (what the page can still do without one).
    """
    ws, model = current()
    if ws is None:
        if not st.session_state.get(WS):  # a workspace that vanished is reported by the sidebar
            st.info("No workspace is open. Create one in the sidebar, or load the demo on the Data page."
                    + (f" {hint}" if hint else ""), icon=":material/folder_open:")
        return None, None
    if model is None:
        st.info(f"Choose a model in the sidebar {purpose}.".replace(" .", "."), icon=":material/info:")
        return None, None
    return ws, model


@contextlib.contextmanager
def page(title: str, *, purpose: str | None = None, hint: str = "", caption: str | None = None,
         summary: bool = True) -> Iterator[tuple[core.Workspace | None, str | None]]:
    """The opening every page shares, as one ``with`` block around the page's body::

        with ui.page("Map", purpose="to map its vectors") as (ws, model):
            if ws is not None:
                ...

    Runs :func:`init_state`, draws the title (and ``caption`` under it), then, guarded like the body
    (:func:`~pages.ui.widgets.guard`: any failure becomes one st.error line), looks up the workspace and
    model: with ``purpose``, :func:`open_workspace_and_model` (``(None, None)`` after its st.info when
    either is missing; ``hint`` is added to the no-workspace message); with ``purpose=None``,
    :func:`current` (no message, the page says itself what it does without a workspace). With
    ``summary``, an open workspace gets its :func:`~pages.ui.widgets.summary_line`.
    """
    init_state()
    st.title(title)
    if caption:
        st.caption(caption)
    model_note()
    with guard():
        ws, model = current() if purpose is None else open_workspace_and_model(purpose, hint=hint)
        if ws is not None and summary:
            summary_line(ws, model)
        yield ws, model
