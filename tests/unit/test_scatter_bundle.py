"""The WebGL map component without a browser: the committed bundle matches its sources (``make scatter`` was
run after the last edit), it is one small offline ES module, and the wrapper's encoding (colour codes,
thumbnail rows, the selection coming up) does what pages/ui/scatter.py promises."""
from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from core import plots
from pages.ui import scatter

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend" / "scatter"
BUNDLE = ROOT / "assets" / "scatter" / "scatter.js"


def source_hash() -> str:
    """The hash frontend/scatter/build.mjs writes to assets/scatter/SOURCE_HASH (same files, same order)."""
    files = {"package.json", "package-lock.json", "build.mjs"}
    files |= {p.relative_to(FRONTEND).as_posix() for p in (FRONTEND / "src").rglob("*") if p.is_file()}
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0".encode())
        h.update((FRONTEND / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def test_bundle_is_built_from_the_current_sources():
    recorded = (BUNDLE.parent / "SOURCE_HASH").read_text().strip()
    assert recorded == source_hash(), ("assets/scatter/scatter.js is older than frontend/scatter: run "
                                       "`make scatter` and commit the bundle with SOURCE_HASH")


def test_bundle_is_one_small_offline_es_module():
    js = BUNDLE.read_text(encoding="utf-8")
    assert len(js.encode()) < 600_000, f"scatter.js is {len(js.encode())} bytes"
    assert re.search(r"export\s*\{\s*\w+ as default\s*\}", js), "scatter.js has no default export"
    assert not re.search(r"\bimport\s*(\(|[\w{*])", js), "scatter.js imports another module at runtime"
    for remote in ("unpkg.com", "jsdelivr", "cdnjs", "fonts.googleapis", "fonts.gstatic", "@font-face"):
        assert remote not in js, f"scatter.js refers to {remote}"
    assert asset_dir_is_packaged()


def asset_dir_is_packaged() -> bool:
    """assets/ ships as core/_assets (pyproject.toml), so the bundle needs no Node after `pip install`."""
    text = (ROOT / "pyproject.toml").read_text()
    return '"core._assets" = "assets"' in text and '"core._assets" = ["**/*"]' in text


def test_frontend_dependencies_are_pinned():
    pkg = json.loads((FRONTEND / "package.json").read_text())
    versions = {**pkg.get("dependencies", {}), **pkg.get("devDependencies", {})}
    assert versions["regl-scatterplot"].startswith("1.16.")
    loose = {k: v for k, v in versions.items() if not re.fullmatch(r"\d+\.\d+\.\d+", v)}
    assert loose == {}, f"package.json versions must be exact: {loose}"
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/regl-scatterplot"]["version"] == versions["regl-scatterplot"]


def test_asset_dir_finds_the_bundle():
    assert (scatter.asset_dir() / "scatter.js").is_file()


# ---- the wrapper's encoding ----------------------------------------------------------------------------------
def test_category_codes_keep_their_palette_and_use_one_byte():
    codes, pal = plots.encode_colours(4, codes=np.array([0, 2, 1, 2]), palette=["#111111", "#222222", "#333333"])
    assert codes.dtype == np.uint8 and codes.tolist() == [0, 2, 1, 2] and pal == ["#111111", "#222222", "#333333"]
    with pytest.raises(ValueError, match="palette has 2 colours"):
        plots.encode_colours(2, codes=np.array([0, 2]), palette=["#000000", "#ffffff"])
    with pytest.raises(ValueError, match="1-D array of 3"):
        plots.encode_colours(3, codes=np.array([0, 1]))
    big, pal = plots.encode_colours(2, codes=np.array([0, 299]), palette=["#000000"] * 300)
    assert big.dtype == np.uint16 and big.tolist() == [0, 299]


def test_values_are_cut_into_colour_steps_with_a_slot_for_missing_values():
    codes, pal = plots.encode_colours(4, values=np.array([0.0, 5.0, 10.0, np.nan]), colorscale=["#000000", "#ffffff"])
    assert codes.tolist() == [0, 127, 254, 255]
    assert len(pal) == 256 and pal[0] == "#000000" and pal[254] == "#ffffff" and pal[255] == plots.NO_VALUE_COLOUR
    clipped, _ = plots.encode_colours(2, values=np.array([-1.0, 3.0]), value_range=(0.0, 2.0))
    assert clipped.tolist() == [0, 254]
    with pytest.raises(ValueError, match="not both"):
        plots.encode_colours(1, codes=np.array([0]), values=np.array([1.0]))
    with pytest.raises(ValueError, match="not a hex colour"):
        plots.encode_colours(1, values=np.array([1.0]), colorscale=["red"])


def test_spread_rows_lie_in_the_view_and_spread_over_it():
    from core.mapview import spread_rows

    rng = np.random.default_rng(1)
    # a dense blob in one corner and a sparse rest: the rows must not all come from the blob
    x = np.concatenate([rng.normal(0.1, 0.02, 50_000), rng.uniform(0, 1, 2_000)]).astype(np.float32)
    y = np.concatenate([rng.normal(0.1, 0.02, 50_000), rng.uniform(0, 1, 2_000)]).astype(np.float32)
    view = (0.0, 1.0, 0.0, 1.0)
    rows = spread_rows(x, y, view, limit=150, grid=(12, 12))
    assert len(rows) == 150 and len(set(rows.tolist())) == len(rows)
    assert np.all((x[rows] >= 0) & (x[rows] <= 1) & (y[rows] >= 0) & (y[rows] <= 1))
    cells = set(zip((x[rows] * 12).astype(int).tolist(), (y[rows] * 12).astype(int).tolist()))
    assert len(cells) >= 100  # one per cell before any cell gets a second
    assert np.array_equal(rows, spread_rows(x, y, view, limit=150, grid=(12, 12)))  # seeded
    zoomed = spread_rows(x, y, (0.5, 0.6, 0.5, 0.6), limit=150)
    assert 0 < len(zoomed) < 150
    assert np.array_equal(np.sort(zoomed), np.flatnonzero((x >= 0.5) & (x <= 0.6) & (y >= 0.5) & (y <= 0.6)))
    # a map 480 × 240 pixels: cells of 48 px, at most one row each, so thumbnails do not pile up
    one_each = spread_rows(x, y, view, limit=150, grid=(10, 5), per_cell=1)
    cells = list(zip((x[one_each] * 10).astype(int).tolist(), (y[one_each] * 5).astype(int).tolist()))
    assert len(cells) == len(set(cells)) == 50
    x[:] = np.nan
    assert len(spread_rows(x, y, view, limit=150)) == 0


def test_selection_comes_up_as_packed_int32_rows():
    rows = np.array([3, 7, 1_000_000, 12], dtype="<i4")
    packed = base64.b64encode(rows.tobytes()).decode()
    assert len(packed) / len(rows) <= 8  # bytes per selected point on the wire
    got = scatter.decode_rows({"rows": packed, "n": 4}, n=100)
    assert got.dtype == np.int32 and got.tolist() == [3, 7, 12]  # rows past n are dropped
