"""Worked examples on the demo world (the app shows them as a starting point)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..terms import filter_mask

if TYPE_CHECKING:  # pragma: no cover
    from ..workspace import Workspace


def worked_example(ws: Workspace, model: str) -> dict | None:
    """A cross-modal analogy on the demo world, or None when the workspace cannot host it.

    Image of a red circle − "a red object" + "a blue object" -> images of blue circles. The red circle
    is the first image (a single-object one when the world records ``n_objects``) with metadata
    ``colour=red, shape=circle`` and a vector for ``model``. Returns ``{"plus": [terms], "minus":
    [terms], "modality": "image", "expect": {"colour": "blue", "shape": "circle"}, "item": id}``.
    """
    items = ws.items
    if not {"colour", "shape"} <= set(items.columns):
        return None
    have = set(ws.store(model).ids()) if model in ws.models() else set()
    mask = filter_mask(items, {"colour": "red", "shape": "circle"}, "image") & items["id"].isin(have).to_numpy()
    if "n_objects" in items.columns:
        single = mask & filter_mask(items, {"n_objects": "1"})
        mask = single if single.any() else mask
    if not mask.any():
        return None
    item_id = str(items["id"].to_numpy()[mask][0])
    return {"plus": [f"item:{item_id}", "a blue object"], "minus": ["a red object"], "modality": "image",
            "expect": {"colour": "blue", "shape": "circle"}, "item": item_id}
