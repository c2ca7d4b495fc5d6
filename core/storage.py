"""Atomic file writes: write a temporary file beside the target, fsync it, rename it over the target.

A crash at any point leaves either the old file or the new one, never a half-written file.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync, then atomically replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode("utf-8")
    return atomic_write_bytes(path, data)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def atomic_write_parquet(path: str | os.PathLike, df) -> Path:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def remove_temp_files(folder: str | os.PathLike, name: str | None = None) -> int:
    """Delete the temp files that interrupted atomic writes left in ``folder``: those of target ``name``,
    or all of them. Returns how many were removed.

    A process killed between creating its temp file and the rename leaves the temp file behind. Only
    call this while no other writer can be writing there (callers hold the workspace lock).
    """
    pattern = f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"
    n = 0
    for p in Path(folder).glob(pattern):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def remove_file(path: str | os.PathLike) -> bool:
    """Unlink one file (False when it was not there). Deletions name every removal through here, so a
    crash test can stop a process between two of them."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
