"""The progress callbacks long-running functions accept, one definition each.

Every callback is optional (``progress: Progress | None = None``) and is called from the thread doing
the work; an exception it raises ends that work (the Data page's Stop button interrupts an embedding at
its next progress update this way).
"""
from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` of ``total`` units (items, images, batches) finished."""

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: as :data:`Progress`, within a named stage of a longer run
(e.g. ``"knn"``, ``"fit"``, ``"patches"``); each stage counts from 0 to its own total."""

StepProgress = Callable[[dict], None]
"""``progress(info)``: one record per training step reported (``step``, ``steps``, ``loss``, ``lr``,
``steps_per_s``, ``eta_s``; ``eval`` after an evaluation)."""

__all__ = ["Progress", "StageProgress", "StepProgress"]
