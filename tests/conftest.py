"""Shared test setup: the repository root is importable (``pages.common``, ``app``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The app builds the demo workspace on a first start; tests start from their own empty homes.
os.environ.setdefault("JOINTSCOPE_AUTODEMO", "0")
