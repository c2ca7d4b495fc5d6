"""Errors: one line for an exception (what the app, the CLI and per-item error reports show instead of a
traceback) and scikit-learn's ``NotFittedError``, which every estimator here raises when used before ``fit``.
"""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["not_fitted_getattr", "one_line", "shorten"]


def shorten(text: str, limit: int | None) -> str:
    """``text`` at most ``limit`` characters (None: no limit), cut after a whole word and ended with "…".

    A word longer than half the limit (a path, a URL) is cut inside rather than dropped whole.
    """
    if limit is None or len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(") + "…"


def one_line(e: BaseException, limit: int | None = 200) -> str:
    """The first line of ``e``'s message (its type's name when the message is empty), at most ``limit``
    characters (None: no limit), cut after a whole word (:func:`shorten`).

    The quotes ``KeyError`` and a bare ``FileNotFoundError`` put around their argument are dropped: the
    message names the key or file, not its repr.
    """
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, (FileNotFoundError, KeyError)) and msg.startswith(("'", '"')):
        msg = msg.strip("'\"")
    return shorten(msg, limit)


def not_fitted_getattr(module: str) -> Callable[[str], type]:
    """A module ``__getattr__`` that makes ``module.NotFittedError`` scikit-learn's
    ``sklearn.exceptions.NotFittedError`` (so ``from core.index import NotFittedError`` catches what
    ``NeighborIndex`` raises) while importing scikit-learn, about a second, only when it is asked for."""

    def __getattr__(name: str):
        if name == "NotFittedError":
            from sklearn.exceptions import NotFittedError

            return NotFittedError
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
