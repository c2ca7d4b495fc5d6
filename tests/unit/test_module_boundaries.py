"""The code's own boundaries: no module imports another module's private names, and modules and functions stay
small enough to read (docs/architecture.md says where a new piece goes)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("core", "pages", "bench", "app.py")
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


def _python_files(*tops: str) -> list[Path]:
    out: list[Path] = []
    for top in tops:
        p = ROOT / top
        out.extend([p] if p.is_file() else sorted(p.rglob("*.py")))
    return [f for f in out if "node_modules" not in f.parts]


def private_imports(path: Path) -> list[str]:
    """``from x import _name`` statements of ``path`` that take a private name of another module (a dunder such
    as ``__version__`` is public; ``import x as _x`` renames a public name and is fine)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    where = "." * node.level + (node.module or "")
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {where} import {alias.name}")
    return bad


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [f"{path.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.end_lineno - n.lineno + 1 > limit]


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    f = tmp_path / "m.py"
    f.write_text("from .a import _hidden, public\nfrom b import __version__\nfrom c import thing as _t\n"
                 "def f():\n" + "    x = 1\n" * 81)
    assert private_imports(f) == ["m.py:1 from .a import _hidden"]
    assert long_functions(f, 80) == ["m.py:4 f (82 lines)"]


def test_no_module_imports_another_modules_private_names():
    bad = [b for f in _python_files(*SOURCES) for b in private_imports(f)]
    assert not bad, "private names imported across modules (make the helper public):\n" + "\n".join(bad)


@pytest.mark.parametrize("top", ["core", "pages"])
def test_modules_stay_under_the_size_limit(top):
    big = [f"{f.relative_to(ROOT)} ({n} lines)" for f in _python_files(top)
           if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_functions_stay_under_the_size_limit():
    long = [b for f in _python_files("core", "pages", "app.py") for b in long_functions(f, MAX_FUNCTION_LINES)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def unresolved_imports(path: Path) -> list[str]:
    """``from core... / pages... import name`` statements of ``path`` (module level or inside a function, where
    nothing runs them until that code path is taken) whose module or name does not exist."""
    import importlib

    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts if rel.name == "__init__" else rel.parts[:-1])
    package = [p for p in package if p != "__init__"]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        if node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] not in ("core", "pages"):
            continue
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {target}: {e}")
            continue
        for alias in node.names:
            if alias.name != "*" and not hasattr(module, alias.name):
                try:
                    importlib.import_module(f"{target}.{alias.name}")
                except ImportError:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {target} import {alias.name}")
    return bad


def test_every_import_inside_core_and_pages_resolves():
    """A deferred import (inside a function) of a name that does not exist fails only when a user takes that
    path (e.g. a similarity colour asked for through the Python API): every one is resolved here."""
    bad = [b for f in _python_files("core", "pages/ui") for b in unresolved_imports(f)]
    assert not bad, "imports that do not resolve:\n" + "\n".join(bad)
