"""The pages' caches key on the workspace's versions (pages.ui.cached.data_key): new items or a model's new
vectors make a cached result be computed again, and nothing else does — not another model's vectors, not the
same folder opened through another path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import core
from pages.ui import cached

MODEL = "precomputed:emb"


def _table(path: Path, start: int, n: int) -> Path:
    """A table of ``n`` rows with their own 5-d vectors (column emb: the model precomputed:emb)."""
    rng = np.random.default_rng(start)
    pd.DataFrame({"title": [f"note {i} about {'cats' if i % 2 else 'dogs'}" for i in range(start, start + n)],
                  "kind": ["a" if i % 3 else "b" for i in range(start, start + n)],
                  "emb": [json.dumps(rng.normal(size=5).round(4).tolist()) for _ in range(n)]}
                 ).to_csv(path, index=False)
    return path


@pytest.fixture
def ws(tmp_path) -> core.Workspace:
    ws = core.Workspace(tmp_path / "ws")
    assert not ws.ingest([_table(tmp_path / "a.csv", 0, 6)]).errors
    return ws


def _other_vectors(ws: core.Workspace, model: str) -> None:
    """Vectors of another model for every item (the items themselves stay as they are)."""
    ids = ws.items["id"].astype(str).tolist()
    with ws.writing():
        ws.store(model).append(np.random.default_rng(1).normal(size=(len(ids), 3)).astype(np.float32), ids)


def test_the_key_changes_with_the_items_and_the_models_vectors_only(ws, tmp_path):
    items_only, with_vectors = cached.data_key(ws), cached.data_key(ws, MODEL)
    assert items_only.model is None and items_only.vectors == ()
    assert with_vectors.model == MODEL and with_vectors.vectors == ws.vectors_version(MODEL)
    assert with_vectors.items == items_only.items == ws.items_version()

    # the same folder through a relative path and a symlink: the same key (one cache entry, one workspace)
    link = tmp_path / "link"
    link.symlink_to(ws.path, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for other in (core.Workspace("ws", create=False), core.Workspace(link, create=False)):
            assert cached.data_key(other, MODEL) == with_vectors
    finally:
        os.chdir(cwd)

    _other_vectors(ws, "precomputed:other")  # another model's vectors: neither key moves
    assert cached.data_key(ws) == items_only and cached.data_key(ws, MODEL) == with_vectors
    assert cached.data_key(ws, "precomputed:other").vectors not in ((), with_vectors.vectors)

    assert not ws.ingest([_table(tmp_path / "b.csv", 6, 2)]).errors  # new items with their own vectors
    after = cached.data_key(ws, MODEL)
    assert after.items != with_vectors.items and after.vectors != with_vectors.vectors
    assert cached.data_key(ws) != items_only


def test_a_cached_result_is_computed_again_exactly_when_its_inputs_change(ws, tmp_path, monkeypatch):
    import core.projection
    import core.search

    calls = {"metadata": 0, "modalities": 0}
    real_values, real_counts = core.search.metadata_values, core.projection.vector_modalities

    def values(items):
        calls["metadata"] += 1
        return real_values(items)

    def counts(w, model):
        calls["modalities"] += 1
        return real_counts(w, model)

    monkeypatch.setattr(core.search, "metadata_values", values)
    monkeypatch.setattr(core.projection, "vector_modalities", counts)
    cached.metadata_options.clear()
    cached.vector_modalities.clear()

    def ask():
        return (cached.metadata_options(cached.data_key(ws)), cached.vector_modalities(cached.data_key(ws, MODEL)))

    assert ask() == ({"kind": ["a", "b"]}, {"text": 6})
    assert ask() and calls == {"metadata": 1, "modalities": 1}  # unchanged: both hit

    _other_vectors(ws, "precomputed:other")  # another model's vectors: still both hit
    assert ask() and calls == {"metadata": 1, "modalities": 1}

    with ws.writing():  # this model's vectors change (items stay): what reads them misses, the items' values hit
        ws.store(MODEL).remove([ws.items["id"].iloc[0]])
    assert ask()[1] == {"text": 5}
    assert calls == {"metadata": 1, "modalities": 2}

    assert not ws.ingest([_table(tmp_path / "b.csv", 6, 2)]).errors  # new items: both miss
    assert ask()[1] == {"text": 7}
    assert calls == {"metadata": 2, "modalities": 3}
