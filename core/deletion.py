"""Deleting from workspaces: items (their rows, vectors, stored files and the derived files that hold them,
crash-safe through a journal) and whole workspace folders.

Every function takes the :class:`~core.workspace.Workspace` first and uses only its public methods;
``Workspace.delete_items`` and ``Workspace.delete`` call these, and ``Workspace.write_items`` finishes a
journaled deletion through :func:`finish_delete`.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .storage import atomic_write_json, fsync_dir, read_json, remove_file, remove_temp_files

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger(__name__)

DELETE_JOURNAL = ".delete.json"  # the items a deletion removes, until it has removed what they left behind
TOMBSTONE = ".deleted-"  # a deleted workspace folder is renamed to ".<name>.deleted-<random>" before removal


@dataclass
class DeleteReport:
    deleted: int = 0
    ids: list[str] = field(default_factory=list)  # ids of the deleted items, in the order asked
    missing: list[str] = field(default_factory=list)  # ids asked for that are not items here
    by_modality: dict[str, int] = field(default_factory=dict)  # deleted items per modality
    unpaired: int = 0  # items left that lost their pair
    items: int = 0  # items left in the workspace

    def to_dict(self) -> dict:
        return {"deleted": self.deleted, "items": self.items, "ids": self.ids, "missing": self.missing,
                "by_modality": self.by_modality, "unpaired": self.unpaired}


def delete_items(ws: Workspace, ids: Iterable[str] | str) -> DeleteReport:
    """Delete items of ``ws`` by id (see :meth:`Workspace.delete_items <core.workspace.Workspace.delete_items>`).

    Under the write lock: the ids and their files are written to the journal (``.delete.json``), then
    ``items.parquet`` is replaced (the commit point), which removes vectors, files and derived data and the
    journal last (:func:`finish_delete`)."""
    want = list(dict.fromkeys(str(i) for i in ([ids] if isinstance(ids, str) else ids)))
    if not want:
        raise ValueError("give at least one item id to delete")
    with ws.writing():
        finish_delete(ws, ws.items)
        items = ws.items
        gone_mask = items["id"].isin(want).to_numpy()
        if not gone_mask.any():
            raise ValueError(f"none of the {len(want)} id(s) is an item of workspace {ws.name!r}, "
                             f"e.g. {want[0]!r}; nothing was deleted")
        gone, left = items[gone_mask], items[~gone_mask]
        gone_ids = set(gone["id"])
        files = sorted({f for col in ("image", "thumb") for f in gone[col].dropna()
                        if isinstance(f, str) and f.split("/", 1)[0] in ("images", "thumbs")})
        report = DeleteReport(ids=[i for i in want if i in gone_ids],
                              missing=[i for i in want if i not in gone_ids],
                              by_modality={k: int(v) for k, v in gone["modality"].value_counts().items()})
        report.deleted = len(report.ids)
        left, report.unpaired = unlink_pairs(left, gone_ids)
        atomic_write_json(ws.path / DELETE_JOURNAL, {"ids": sorted(gone_ids), "files": files})
        ws.write_items(left)  # the commit point; it also finishes the journal
        report.items = len(left)
    log.info("deleted %d items from %s", report.deleted, ws.name)
    return report


def finish_delete(ws: Workspace, items: pd.DataFrame) -> None:
    """Remove what a journaled deletion left behind (caller holds the lock; ``items``: the items now).

    Only ids that are not items remove anything (an id added again since keeps its vectors and files),
    so this is safe to repeat after a crash at any point; the journal goes last."""
    from .vectorstore import remove_uncommitted

    journal = ws.path / DELETE_JOURNAL
    remove_temp_files(ws.path, DELETE_JOURNAL)
    job = read_json(journal)
    if job is None:
        return
    gone = set(job["ids"]) - set(items["id"])
    if gone:
        root = ws.path / "vectors"
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            m = read_json(folder / "manifest.json")
            if m is not None:
                ws.store(m["model"]).remove(gone)
            elif folder.is_dir():
                remove_uncommitted(folder)
        ws.purge_derived(gone)
        used = set(items["image"].dropna()) | set(items["thumb"].dropna())
        for rel in job["files"]:
            if rel not in used:
                remove_file(ws.path / rel)
    remove_file(journal)


def pending_deleted(ws: Workspace) -> set[str]:
    """Ids of a deletion that committed but has not removed their vectors yet (normally none)."""
    job = read_json(ws.path / DELETE_JOURNAL)
    return set(job["ids"]) - set(ws.items["id"]) if job else set()


def unlink_pairs(items: pd.DataFrame, gone: set[str]) -> tuple[pd.DataFrame, int]:
    """``items`` without pairs that point at a deleted id: such an item is paired with another item that
    points at it (an image with several captions keeps one of them), else left unpaired.
    Also drops metadata columns that are empty once the deleted rows are gone. Returns (items, unpaired)."""
    from .workspace import ITEM_COLUMNS

    items = items.copy()
    lost = items["pair"].isin(gone).to_numpy()
    if lost.any():
        back = items[items["pair"].notna() & ~lost].drop_duplicates("pair").set_index("pair")["id"]
        items.loc[lost, "pair"] = items.loc[lost, "id"].map(back)
        items["pair"] = items["pair"].astype(object).where(items["pair"].notna(), None)
    empty = [c for c in items.columns if c not in ITEM_COLUMNS and items[c].isna().all()]
    unpaired = int((lost & items["pair"].isna().to_numpy()).sum())
    return items.drop(columns=empty).reset_index(drop=True), unpaired


def delete_workspace(target: str | os.PathLike, *, home: str | os.PathLike | None = None) -> dict:
    """Delete a whole workspace: a folder (a path) or a named workspace under the root (a plain name).

    Refuses a folder that is not a workspace (no workspace.json). Waits for the workspace's writers, then
    renames the folder to a hidden tombstone beside it (one atomic step: from then on the workspace is
    gone for every reader) and removes the tombstone; a tombstone left by an interrupted deletion is
    removed by the next :func:`~core.workspace.list_workspaces` or deletion there. Returns
    ``{"path", "deleted"}`` (``deleted``: the number of items it held).
    """
    from .workspace import Workspace, workspace_path

    is_name = isinstance(target, str) and "/" not in target and os.sep not in target
    path = workspace_path(target, home) if is_name else Path(target).expanduser()
    if not (path / "workspace.json").is_file():
        raise FileNotFoundError(f"no workspace at {str(path)!r} (workspace.json missing); nothing was deleted")
    ws = Workspace(path, create=False)
    with ws.writing():
        n = len(ws.items)
        tomb = path.parent / f".{path.name}{TOMBSTONE}{uuid.uuid4().hex[:12]}"
        os.replace(path, tomb)  # the commit point
    fsync_dir(path.parent)
    shutil.rmtree(tomb, ignore_errors=True)
    remove_tombstones(path.parent)
    return {"path": str(path), "deleted": n}


def remove_tombstones(root: Path) -> None:
    """Remove the tombstones of deleted workspaces under ``root`` (left when a deletion was interrupted)."""
    for tomb in root.glob(f".*{TOMBSTONE}*"):
        if tomb.is_dir():
            shutil.rmtree(tomb, ignore_errors=True)
