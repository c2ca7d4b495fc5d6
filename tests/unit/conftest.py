"""Shared fixtures for unit tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import make_png, write_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_clip_id(tiny_clip_dir) -> str:
    return f"openclip-local:{tiny_clip_dir}"


@pytest.fixture
def image_files(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    return [make_png(tmp_path / "imgs" / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)))
            for i in range(3)]
