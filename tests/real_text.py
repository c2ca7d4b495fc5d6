"""Labelled real text corpora nobody in this project wrote, from gensim's test data (a dev extra):

* :func:`newsgroups` — ``mini_newsgroup``: posts to 20 Usenet newsgroups (a zlib-compressed Python 2 pickle
  of a scikit-learn ``Bunch``), read with a restricted unpickler that builds only dicts and numpy arrays;
  mail headers, quoted lines and signatures stripped, the label from the ``Newsgroups:`` header.
* :func:`reviews` — ``pang_lee_polarity.cor``: one-line movie reviews, ``__label__neg`` / ``__label__pos``.
* :func:`news` — ``lee_background.cor``: 300 Australian news articles, unlabelled.

Importable by tests (pytest ``pythonpath = ["tests"]``) and bench scripts (add the tests folder to
``sys.path``). Without gensim every loader raises ImportError with the reason;
:func:`require` turns that into a pytest skip.
"""
from __future__ import annotations

import importlib
import io
import pickle
import re
import zlib
from pathlib import Path

import numpy as np

GENSIM_MISSING = ("gensim is not installed, so its test corpora (gensim/test/test_data) are missing; "
                  "install the dev extras (pip install -e '.[dev]') to run the real-text checks")


def data_file(name: str) -> Path:
    """The path of gensim's bundled test file ``name`` (``gensim.test.utils.datapath``); ImportError without
    gensim, FileNotFoundError when that gensim does not ship it."""
    try:
        from gensim.test.utils import datapath
    except ImportError as e:
        raise ImportError(GENSIM_MISSING) from e
    path = Path(datapath(name))
    if not path.is_file():
        raise FileNotFoundError(f"gensim's test data has no {name!r} (looked at {path})")
    return path


def require(name: str = "mini_newsgroup") -> Path:
    """:func:`data_file` for tests: a pytest skip with the reason when gensim or the file is missing."""
    import pytest

    try:
        return data_file(name)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(str(e))


class _Bunch(dict):
    """What the pickled ``sklearn.datasets.base.Bunch`` becomes: a plain dict (attributes kept apart)."""


def _numpy_reconstruct():
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(mod)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError("this numpy has no multiarray._reconstruct")


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only the classes a pickled ``Bunch`` of numpy arrays needs; anything else is refused."""

    def find_class(self, module: str, name: str):
        import copyreg

        allowed = {("copy_reg", "_reconstructor"): copyreg._reconstructor,
                   ("copyreg", "_reconstructor"): copyreg._reconstructor,
                   ("sklearn.datasets.base", "Bunch"): _Bunch, ("sklearn.utils", "Bunch"): _Bunch,
                   ("sklearn.utils._bunch", "Bunch"): _Bunch,
                   ("__builtin__", "dict"): dict, ("builtins", "dict"): dict,
                   ("__builtin__", "object"): object, ("builtins", "object"): object,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_reconstruct()
        raise pickle.UnpicklingError(f"mini_newsgroup: refusing to load {module}.{name} (not a Bunch of arrays)")


def load_bunch(path: str | Path) -> dict:
    """The dict inside a zlib-compressed pickled ``Bunch`` at ``path``, via the restricted unpickler."""
    raw = zlib.decompress(Path(path).read_bytes())
    obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path}: expected a Bunch (dict), got {type(obj).__name__}")
    return dict(obj)


_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):\s?(.*)$")
_QUOTE = re.compile(r"^\s*(>|\||:|[A-Za-z]{1,4}>)")
_WROTE = re.compile(r"(writes|wrote|said)( in| on)?[^.]{0,80}:\s*$|^In article\s", re.I)


def clean_post(post: str) -> tuple[str, str, str]:
    """One Usenet post → ``(newsgroup, subject, body)``: the header block dropped (its ``Newsgroups:``
    first group and ``Subject:`` kept, "Re:" removed), quoted lines (``>``, ``|``) and "… writes:"
    attributions dropped, the body cut at a signature (``--`` line) and after its last paragraph
    when that looks like a sign-off block of short lines."""
    head, _, body = post.replace("\r\n", "\n").partition("\n\n")
    fields = {}
    for line in head.splitlines():
        m = _HEADER.match(line)
        if m:
            fields[m.group(1).lower()] = m.group(2).strip()
    group = fields.get("newsgroups", "").split(",")[0].strip()
    subject = re.sub(r"^(re:\s*)+", "", fields.get("subject", ""), flags=re.I).strip()
    lines = []
    for line in body.splitlines():
        if line.strip() in ("--", "-- ", "---") or line.startswith("-- "):
            break
        if _QUOTE.match(line) or _WROTE.search(line):
            continue
        lines.append(line.rstrip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return group, subject, text


def newsgroups(min_chars: int = 40) -> list[dict]:
    """Posts of gensim's ``mini_newsgroup`` (100 from ``alt.atheism``, 100 from ``sci.space``) as
    ``[{text, label, group, subject}]``: label the group the post was collected from (the Bunch's
    ``target``), group the first of its ``Newsgroups:`` header (a cross-post may name another first);
    texts: subject + cleaned body; posts with under ``min_chars`` characters of body left out."""
    bunch = load_bunch(data_file("mini_newsgroup"))
    names = [str(n) for n in bunch.get("target_names", [])]
    targets = list(bunch.get("target", []))
    out = []
    for i, post in enumerate(bunch["data"]):
        group, subject, body = clean_post(str(post))
        label = names[int(targets[i])] if i < len(targets) and names else group
        if len(body) >= min_chars and label:
            out.append({"text": f"{subject}\n{body}" if subject else body, "label": label, "group": group,
                        "subject": subject})
    return out


def reviews() -> list[dict]:
    """gensim's ``pang_lee_polarity.cor``: ``[{text, label}]`` with label "neg" or "pos"."""
    out = []
    lines = data_file("pang_lee_polarity.cor").read_text(encoding="cp1252", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        label, _, text = line.strip().partition(" ")
        if not label.startswith("__label__") or not text:
            raise ValueError(f"pang_lee_polarity.cor line {n}: expected '__label__<label> text'")
        out.append({"text": text.strip(), "label": label.removeprefix("__label__")})
    return out


def news() -> list[dict]:
    """gensim's ``lee_background.cor``: 300 news articles ``[{text}]`` (no labels)."""
    return [{"text": t.strip()} for t in data_file("lee_background.cor").read_text(encoding="latin1").splitlines()
            if t.strip()]
