"""Parameter constraints, declared once per estimator or function and read by every front end.

An estimator (or a workspace function) declares its parameters once, in the style of scikit-learn's
``_parameter_constraints``: a dict ``{name: [constraint, ...]}`` where a value is valid when it satisfies
any of the listed constraints. A constraint is

* an :class:`Interval` ``(type, low, high, closed=...)`` of integers (``numbers.Integral``) or real
  numbers (``numbers.Real``); bools are never numbers here, and a real interval holds finite values only;
* :class:`Options` — one of a fixed set of values;
* ``None`` — the value None;
* a type such as ``bool`` or ``str`` — an instance of it (``bool`` also takes ``numpy.bool_``);
* the string ``"array-like"`` — a list, tuple or numpy array.

:func:`validate` checks a dict of values against such a declaration (ValueError naming the owner, the
parameter, the allowed values and the value); :func:`bounds`, :func:`options` and :func:`describe` read a
declaration for a user interface (a slider's range, a select box's choices, a CLI option's help), so the
CLI's options and the pages' widgets never repeat a bound of their own.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["Interval", "Options", "bounds", "describe", "describe_value", "is_valid", "options", "validate"]

CLOSED = ("both", "left", "right", "neither")


@dataclass(frozen=True)
class Interval:
    """Numbers of ``type`` (``numbers.Integral`` or ``numbers.Real``; ``int`` / ``float`` are taken as those)
    between ``low`` and ``high`` (None: unbounded on that side). ``closed``: which ends belong to it:
    "both" (default), "left", "right" or "neither"."""

    type: type
    low: float | None
    high: float | None
    closed: str = "both"

    def __post_init__(self):
        kind = {int: Integral, float: Real}.get(self.type, self.type)
        if kind not in (Integral, Real):
            raise TypeError(f"Interval type must be numbers.Integral or numbers.Real; got {self.type!r}")
        object.__setattr__(self, "type", kind)
        if self.closed not in CLOSED:
            raise ValueError(f"closed must be one of {', '.join(CLOSED)}; got {self.closed!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Interval low ({self.low}) must not exceed high ({self.high})")

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.type):
            return False
        if self.type is Real and not math.isfinite(float(value)):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        what = "an integer" if self.type is Integral else "a finite number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if lo_in else '('}{_num(self.low)}, {_num(self.high)}{']' if hi_in else ')'}"
        if self.low is not None:
            return f"{what} {'>=' if lo_in else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{what} {'<=' if hi_in else '<'} {_num(self.high)}"
        return what


class Options:
    """One of ``values`` (compared with ``==``; a bool never matches an integer option)."""

    def __init__(self, values: Iterable):
        self.values = tuple(values)
        if not self.values:
            raise ValueError("Options needs at least one value")

    def is_satisfied_by(self, value: Any) -> bool:
        for v in self.values:
            if isinstance(value, (bool, np.bool_)) != isinstance(v, bool):
                continue
            try:
                if value == v:
                    return True
            except (TypeError, ValueError):  # an array compared with a string
                continue
        return False

    def __str__(self) -> str:
        return ("one of " if len(self.values) > 1 else "") + ", ".join(map(repr, self.values))

    def __repr__(self) -> str:
        return f"Options({self.values!r})"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


def _satisfied(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, (Interval, Options)):
        return constraint.is_satisfied_by(value)
    if constraint == "array-like":
        return isinstance(value, (list, tuple, np.ndarray))
    if constraint is bool:
        return isinstance(value, (bool, np.bool_))
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    raise TypeError(f"unknown constraint {constraint!r}")


def _text(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if constraint == "array-like":
        return "an array"
    if constraint is bool:
        return "True or False"
    if isinstance(constraint, type):
        return f"a {constraint.__name__}"
    return str(constraint)


def describe_value(constraints: Mapping[str, list], name: str, *, scalar: bool = False) -> str:
    """What ``name`` may be, in words: ``"an integer in [2, 200]"``, ``"one of 'umap', 'pca'"``,
    ``"a finite number > 0 or an array"``. ``scalar``: only what one typed value (a CLI option, a widget) can
    be, leaving out None and arrays."""
    found = [c for c in _of(constraints, name) if not (scalar and (c is None or c == "array-like"))]
    return " or ".join(_text(c) for c in found)


def is_valid(value: Any, constraints: Mapping[str, list], name: str) -> bool:
    """Whether ``value`` satisfies one of the constraints declared for ``name``."""
    return any(_satisfied(c, value) for c in _of(constraints, name))


def validate(params: Mapping[str, Any], constraints: Mapping[str, list], owner: str) -> None:
    """Check every value of ``params`` against its declared constraints.

    Raises ValueError ``"<owner>: <name> must be <allowed>; got <value>"`` for the first value that fits
    none of them, and for a parameter without a declaration (``owner`` names the estimator or function,
    e.g. ``"Projector"``)."""
    for name, value in params.items():
        if name not in constraints:
            raise ValueError(f"{owner}: unknown parameter {name!r}; known: {', '.join(sorted(constraints))}")
        if not is_valid(value, constraints, name):
            raise ValueError(f"{owner}: {name} must be {describe_value(constraints, name)}; got {value!r}")


def _of(constraints: Mapping[str, list], name: str) -> list:
    try:
        return list(constraints[name])
    except KeyError:
        raise KeyError(f"no constraints declared for {name!r}; declared: {', '.join(sorted(constraints))}") from None


def _interval(constraints: Mapping[str, list], name: str) -> Interval:
    found = [c for c in _of(constraints, name) if isinstance(c, Interval)]
    if not found:
        raise ValueError(f"{name} is not declared as a number in an interval")
    return found[0]


def bounds(constraints: Mapping[str, list], name: str, *, step: float | None = None
           ) -> tuple[float | None, float | None]:
    """``(low, high)`` of the interval declared for ``name`` (its first :class:`Interval`), for a slider or a
    number box; None where it is unbounded.

    An open end moves inwards to the nearest allowed value on the widget's grid: by 1 for integers, by
    ``step`` for real numbers (an open end without a ``step`` is returned as declared).
    ValueError when ``name`` has no interval."""
    iv = _interval(constraints, name)
    inc = 1 if iv.type is Integral else step
    low, high = iv.low, iv.high
    if low is not None and iv.closed in ("right", "neither") and inc is not None:
        low = low + inc
    if high is not None and iv.closed in ("left", "neither") and inc is not None:
        high = high - inc
    if iv.type is Integral:
        return (None if low is None else int(low)), (None if high is None else int(high))
    return (None if low is None else float(low)), (None if high is None else float(high))


def options(constraints: Mapping[str, list], name: str) -> tuple:
    """The values of the :class:`Options` declared for ``name`` (e.g. argparse ``choices``); ValueError when
    it has none."""
    found = [c for c in _of(constraints, name) if isinstance(c, Options)]
    if not found:
        raise ValueError(f"{name} is not declared as one of a set of values")
    return found[0].values


def describe(constraints: Mapping[str, list], name: str, *, default: Any = None) -> str:
    """A help text for one typed value of ``name`` (a CLI option, a widget): ``"an integer in [2, 200];
    default 15"`` (the default only when given; None and arrays left out, see :func:`describe_value`)."""
    text = describe_value(constraints, name, scalar=True)
    return text if default is None else f"{text}; default {default}"
