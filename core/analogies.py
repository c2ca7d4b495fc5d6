"""Analogies (vector arithmetic over terms: 3CosAdd, 3CosMul) and scoring analogy sets.

Analogy sets (``evaluate_analogies``)
-------------------------------------
A CSV with columns ``a, b, c, d`` (one analogy ``a : b :: c : d`` per row, so ``d ≈ b − a + c``);
any other column is kept (``category`` gives per-category accuracy). The plain-text format of word2vec's
``questions-words.txt`` (as gensim reads it) is read too: ``: section`` lines start a category, every other
line holds the four words ``a b c d`` separated by white space; a line that does not is reported in
``malformed`` (with its line number) and the rest of the file is kept. Two kinds of space:

- a **vocabulary** (a model id such as ``minilm`` or an Encoder): every cell is a text; the candidates
  are every distinct text in the set; ``a``, ``b`` and ``c`` of a row are never candidates for it.
- a **workspace** (with ``model=``): ``a``, ``b``, ``c`` are texts, item ids (bare or ``item:<id>``) or
  ``image:<path>``; candidates are the workspace's items (only those of the modality in an optional
  ``modality`` column, or of the ``modality`` argument); input items are never candidates. ``d`` is
  the expectation, one of

  * attribute constraints ``column=value[;column=value...]`` matched (case-insensitively, as text)
    against the items' metadata, e.g. ``colour=blue;shape=circle``: any matching item is a hit;
  * an item id (bare or ``item:<id>``): that item is the only hit;
  * a text: a text item with exactly that text (case-insensitive) is the hit.

Accuracy@1 / @k count rows whose top-1 / top-k results hold a hit. The baseline ranks the
candidates by similarity to ``c`` alone (inputs excluded), the "plain nearest neighbour" an analogy
has to beat. Rows that cannot be evaluated are listed in ``skipped`` with the row number (1-based,
header not counted) and the reason; they do not count in ``n``.

Terms are described in :mod:`core.search`.
"""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .encoders import unit_rows
from .errors import one_line
from .terms import (
    FilterSpec,
    Hit,
    ModalitySpec,
    Term,
    check_k,
    filter_mask,
    index_mask,
    make_hits,
    model_id,
    nonzero,
    parse_term,
    term_id,
    term_vectors,
    top_indices,
)

if TYPE_CHECKING:  # pragma: no cover
    from .encoders import Encoder
    from .workspace import Workspace

log = logging.getLogger(__name__)


METHODS = ("3cosadd", "3cosmul")
COSMUL_EPS = 1e-3  # Levy & Goldberg (2014)
COSMUL_EXACT_LIMIT = 500_000  # above: 3CosMul ranks a candidate pool picked by the index
COSMUL_POOL = 5_000
ANALOGY_COLUMNS = ("a", "b", "c", "d")


def analogy_scores(X: np.ndarray, plus: np.ndarray, minus: np.ndarray, method: str = "3cosadd") -> np.ndarray:
    """Score candidates ``X`` (n, d) unit rows against terms ``plus`` (p, d) and ``minus`` (q, d), unit rows.

    ``3cosadd``: cos(x, Σplus − Σminus). ``3cosmul`` (Levy & Goldberg 2014):
    Π cos'(x, plus) / (Π cos'(x, minus) + ε) with cos' = (cos + 1) / 2 and ε = 0.001.
    Returns (n,) float32, higher is better.
    """
    method = _check_method(method)
    if method == "3cosadd":
        q = nonzero(np.asarray(plus).sum(0) - np.asarray(minus).reshape(-1, X.shape[1]).sum(0), "analogy")
        return (X @ unit_rows(q)).astype(np.float32)
    cp = (X @ np.asarray(plus).T + 1.0) / 2.0
    cm = (X @ np.asarray(minus).reshape(-1, X.shape[1]).T + 1.0) / 2.0
    return (cp.prod(1) / (cm.prod(1) + COSMUL_EPS)).astype(np.float32)


def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return m


def analogy(ws: Workspace, model: str, plus: Sequence[str | Term], minus: Sequence[str | Term] = (), *,
            method: str = "3cosadd", k: int = 10, modality: ModalitySpec = None, filter: FilterSpec = None,
            exclude: Sequence[str] | None = None) -> list[Hit]:
    """Vector arithmetic over terms of any modality, e.g. ``plus=["item:<red car>", "blue"], minus=["red"]``.

    ``3cosadd`` ranks items by cos(x, Σplus − Σminus) through the workspace's neighbour index.
    ``3cosmul`` ranks by Π cos'(x, plus) / (Π cos'(x, minus) + 0.001), cos' = (cos + 1) / 2, exactly over
    every candidate up to ``COSMUL_EXACT_LIMIT`` (500k) items; above that the candidates are a pool
    of the ``COSMUL_POOL`` nearest items of the 3CosAdd vector and of each plus term, found with the
    index (the 3CosMul top-k can then, rarely, miss an item outside the pool). Term vectors are unit
    normalised; input items (and stored copies of input texts/images) are never returned. Hit
    scores are the method's score. ``modality`` / ``filter`` as in :func:`search`.
    """
    from .index import workspace_index

    method = _check_method(method)
    k = check_k(k)
    plus, minus = list(plus), list(minus)
    if not plus:
        raise ValueError("an analogy needs at least one plus term")
    V = term_vectors(ws, model, plus + minus)
    P, M = V[: len(plus)], V[len(plus):]
    own = [i for i in (term_id(t) for t in plus + minus) if i is not None] + list(exclude or [])
    idx = workspace_index(ws, model)
    if V.shape[1] != idx.dim_:
        raise ValueError(f"term vectors have dim {V.shape[1]}; model {model!r} has dim {idx.dim_}")
    items = ws.items
    mask = index_mask(idx, items, filter, modality)
    if method == "3cosadd":
        q = nonzero(P.sum(0) - M.sum(0), "analogy")
        ids, scores = idx.query(q[None], k=min(k, len(idx.ids_)), filter=mask, exclude=own or None)
        return make_hits(ws, ids[0], scores[0])
    # 3CosMul: exact over the candidates that pass
    allowed = idx.ids_ if mask is None else idx.ids_[mask]
    if len(allowed) > COSMUL_EXACT_LIMIT:
        pool_k = min(COSMUL_POOL, len(idx.ids_))
        Q = np.vstack([unit_rows(P.sum(0) - M.sum(0))[None], P])
        pool, _ = idx.query(Q, k=pool_k, filter=mask, exclude=own or None)
        allowed = pd.unique(pool.ravel())
        log.info("3CosMul over %d items: ranking a pool of %d found with the index", len(idx.ids_), len(allowed))
    own_set = set(own)
    allowed = [a for a in allowed.tolist() if a not in own_set]
    X, cand = ws.vectors(model, ids=allowed)
    if not len(cand):
        return []
    s = analogy_scores(unit_rows(X), P, M, "3cosmul")
    top = top_indices(s, k)
    return make_hits(ws, cand[top], s[top])


# ---- analogy evaluation -------------------------------------------------------------------------
@dataclass
class AnalogyEvaluation:
    """Scores of an analogy set; ``to_dict()`` is the JSON of ``jointscope analogy --eval``."""

    method: str
    k: int
    space: str
    n: int = 0
    candidates: int = 0
    hits_at_1: int = 0
    hits_at_k: int = 0
    baseline_at_1: int = 0
    baseline_at_k: int = 0
    per_category: dict[str, dict] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason): lines of a text set not read

    @property
    def accuracy(self) -> float:
        """acc@1."""
        return self.hits_at_1 / self.n if self.n else float("nan")

    @property
    def accuracy_at_k(self) -> float:
        return self.hits_at_k / self.n if self.n else float("nan")

    @property
    def baseline_accuracy(self) -> float:
        return self.baseline_at_1 / self.n if self.n else float("nan")

    def to_dict(self, *, rows: bool = True) -> dict:
        def acc(h1, hk, n):
            return {"acc@1": _ratio(h1, n), f"acc@{self.k}": _ratio(hk, n)}

        out = {"method": self.method, "k": self.k, "space": self.space, "n": self.n,
               "candidates": self.candidates, **acc(self.hits_at_1, self.hits_at_k, self.n),
               "baseline": acc(self.baseline_at_1, self.baseline_at_k, self.n), "per_category": {}}
        for cat, c in self.per_category.items():
            out["per_category"][cat] = {"n": c["n"], **acc(c["h1"], c["hk"], c["n"]),
                                        "baseline": acc(c["b1"], c["bk"], c["n"])}
        out["skipped"] = [{"row": r, "reason": why} for r, why in self.skipped]
        out["malformed"] = [{"line": n, "reason": why} for n, why in self.malformed]
        if rows:
            out["rows"] = self.rows
        return out


def _ratio(h: int, n: int) -> float | None:
    return round(h / n, 4) if n else None


def is_questions_words(text: str) -> bool:
    """True when ``text`` looks like word2vec's ``questions-words.txt`` format: its first non-blank line is a
    ``: section`` line, or four words separated by white space with no comma (a CSV header has commas)."""
    for line in text.splitlines():
        s = line.strip()
        if s:
            return s.startswith(":") or ("," not in s and len(s.split()) == 4)
    return False


def read_questions_words(text: str, *, where: str = "the analogy set") -> pd.DataFrame:
    """Analogies in the ``questions-words.txt`` format (``: section`` lines, then ``a b c d`` per line) as a
    frame with columns a, b, c, d, category (the section; absent when the file has none) and line (the
    line number in the file). Lines that are not four words are left out and listed, as ``(line, reason)``,
    in ``frame.attrs["malformed"]``. Words keep their case. Raises ``ValueError`` when no line is an analogy.
    """
    rows, malformed, section, sections = [], [], "", False
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith(":"):
            section, sections = s[1:].strip(), True
            continue
        words = s.split()
        if len(words) != 4:
            malformed.append((no, f"line {no}: expected four words 'a b c d', got {len(words)}: {one_line(s)!r}"))
            continue
        rows.append([*words, section, str(no)])
    if not rows:
        raise ValueError(f"{where} holds no analogy line (four words 'a b c d' per line"
                         + (f"; {len(malformed)} malformed, e.g. {malformed[0][1]}" if malformed else "") + ")")
    df = pd.DataFrame(rows, columns=[*ANALOGY_COLUMNS, "category", "line"])
    if not sections:
        df = df.drop(columns="category")
    df.attrs["malformed"] = malformed
    return df


def _questions_words_text(data: bytes) -> str | None:
    """``data`` decoded when it is a ``questions-words.txt`` style file; None otherwise (then it is read as
    a CSV, which reports what is wrong with it)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return text if is_questions_words(text) else None


def load_analogy_set(source: str | Path | bytes | pd.DataFrame | Sequence[Mapping], *,
                     name: str | None = None) -> pd.DataFrame:
    """An analogy set as a frame of text cells (columns a, b, c, d, then any extra columns).

    ``source``: a CSV or ``questions-words.txt`` path, the bytes of one (an upload; ``name`` is its file
    name, used in errors), a DataFrame or a list of dicts. The text format is recognised by its content
    (:func:`is_questions_words`); its malformed lines are in ``frame.attrs["malformed"]``. Raises
    ``ValueError`` when a required column is missing (naming it) or the file cannot be read.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"analogy set {str(path)!r} does not exist") from None
        except OSError as e:
            raise ValueError(f"analogy set {str(path)!r} cannot be read ({type(e).__name__}: "
                             f"{one_line(e, limit=None)})") from None
        if (text := _questions_words_text(raw)) is not None:
            return read_questions_words(text, where=f"analogy set {str(path)!r}")
    if isinstance(source, (bytes, bytearray)):
        label = name or "the uploaded CSV"
        if (text := _questions_words_text(bytes(source))) is not None:
            return read_questions_words(text, where=f"analogy set {label!r}")
        try:
            df = pd.read_csv(io.BytesIO(bytes(source)), dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"analogy set {label!r} is not a readable CSV "
                             f"({type(e).__name__}: {one_line(e, limit=None)})") from None
        where = repr(label)
    elif isinstance(source, (str, Path)):
        try:
            df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"analogy set {str(path)!r} is not a readable CSV "
                             f"({type(e).__name__}: {one_line(e, limit=None)})") from None
        where = repr(str(path))
    else:
        df = pd.DataFrame(source) if not isinstance(source, pd.DataFrame) else source.copy()
        where = "the analogy set"
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ANALOGY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where} lacks column(s) {', '.join(missing)}; expected a, b, c, d "
                         f"(got {', '.join(df.columns) or 'none'})")
    malformed = list(df.attrs.get("malformed", ()))
    df = df.fillna("").astype(str)
    for c in df.columns:
        df[c] = df[c].str.strip()
    df = df.reset_index(drop=True)
    df.attrs = {"malformed": malformed}
    return df


_CONSTRAINT = re.compile(r"^\s*([^=;]+?)\s*=\s*([^;]*?)\s*$")


def _parse_constraints(cell: str) -> dict[str, str] | None:
    parts = [p for p in cell.split(";") if p.strip()]
    if not parts:
        return None
    out = {}
    for p in parts:
        m = _CONSTRAINT.match(p)
        if not m:
            return None
        out[m.group(1)] = m.group(2)
    return out


_CONTENT_ID = re.compile(r"^[0-9a-f]{16}$")


def suggested_space(rows) -> str:
    """``"workspace"`` or ``"vocabulary"``: where an analogy set is meant to be scored.

    A set refers to a workspace when a cell is an ``item:``/``image:`` term or a bare item id (16 hex
    digits), ``d`` holds attribute constraints (``colour=blue``), or it has a ``modality`` column;
    otherwise (plain words, like ``minilm.csv``) its own words are the candidates.
    """
    df = load_analogy_set(rows)
    if "modality" in df.columns and df["modality"].str.len().gt(0).any():
        return "workspace"
    for col in ANALOGY_COLUMNS:
        for cell in df[col]:
            if not cell:
                continue
            if cell.startswith(("item:", "image:")) or _CONTENT_ID.match(cell):
                return "workspace"
            if col == "d" and "=" in cell and _parse_constraints(cell) is not None:
                return "workspace"
    return "vocabulary"


def bundled_analogy_sets() -> dict[str, Path]:
    """``{file name: path}`` of the analogy sets shipped with Jointscope (``assets/analogies/*.csv``)."""
    from .encoders import ASSETS_DIR

    return {p.name: p for p in sorted((ASSETS_DIR / "analogies").glob("*.csv"))}


def default_analogy_set(model: str | None, names: Sequence[str]) -> str | None:
    """The set of ``names`` (bundled file names) to offer first for ``model``: the one named after the model
    (``demo`` → ``demo.csv``), else the first set of plain words (scored on a vocabulary, so it suits any
    model that encodes texts: a workspace set refers to items of one particular workspace), else the first."""
    names = list(names)
    if not names:
        return None
    if model and f"{model}.csv" in names:
        return f"{model}.csv"
    sets = bundled_analogy_sets()
    for n in names:
        if n in sets:
            try:
                if suggested_space(sets[n]) == "vocabulary":
                    return n
            except ValueError:  # an unreadable bundled file is reported when it is chosen
                continue
    return names[0]


def evaluate_analogies(space: Workspace | str | Encoder, rows, *, model: str | None = None, k: int = 5,
                       method: str = "3cosadd", modality: ModalitySpec = None) -> AnalogyEvaluation:
    """Score an analogy set ``a : b :: c : d`` (see the module docstring for the format and spaces).

    ``space``: a model id or Encoder (vocabulary of the set's texts) or a Workspace (with ``model``).
    ``rows``: a CSV path, DataFrame or list of dicts. Reports acc@1, acc@k and the nearest-neighbour
    baseline (neighbours of ``c`` alone, inputs excluded), per category when the set has a
    ``category`` column, and the skipped rows with their reasons.
    """
    method = _check_method(method)
    k = check_k(k)
    df = load_analogy_set(rows)
    from .workspace import Workspace

    if isinstance(space, Workspace):
        if model is None:
            raise ValueError("evaluating on a workspace needs model=<id>")
        ev = _evaluate_workspace(space, model, df, k=k, method=method, modality=modality)
    elif model is not None and not isinstance(space, str):
        raise ValueError("give the model either as space or as model=, not both")
    else:
        ev = _evaluate_vocabulary(space if model is None else model, df, k=k, method=method)
    ev.malformed = list(df.attrs.get("malformed", ()))
    return ev


def _record(ev: AnalogyEvaluation, row_no: int, r: pd.Series, rank: int | None, base_rank: int | None,
            predicted, expected_hits: int) -> None:
    cat = r["category"] if "category" in r.index else ""
    ev.n += 1
    h1, hk = rank == 1, rank is not None and rank <= ev.k
    b1, bk = base_rank == 1, base_rank is not None and base_rank <= ev.k
    ev.hits_at_1 += h1
    ev.hits_at_k += hk
    ev.baseline_at_1 += b1
    ev.baseline_at_k += bk
    if cat:
        c = ev.per_category.setdefault(cat, {"n": 0, "h1": 0, "hk": 0, "b1": 0, "bk": 0})
        c["n"] += 1
        c["h1"] += h1
        c["hk"] += hk
        c["b1"] += b1
        c["bk"] += bk
    ev.rows.append({"row": row_no, **{c: r[c] for c in ANALOGY_COLUMNS}, "category": cat or None,
                    "predicted": predicted, "rank": rank, "baseline_rank": base_rank,
                    "expected_matches": expected_hits})


def _rank_of_first_hit(scores: np.ndarray, hit: np.ndarray, k: int) -> int | None:
    """1-based rank of the best-scored hit if it is within the top k (ties broken by position)."""
    order = top_indices(scores, k)
    where = np.flatnonzero(hit[order])
    return int(where[0]) + 1 if len(where) else None


def _evaluate_vocabulary(model: str | Encoder, df: pd.DataFrame, *, k: int, method: str) -> AnalogyEvaluation:
    ev = AnalogyEvaluation(method=method, k=k, space=f"vocabulary:{model_id(model)}")
    valid = []
    for i, r in df.iterrows():
        empty = [c for c in ANALOGY_COLUMNS if not r[c]]
        if empty:
            ev.skipped.append((i + 1, f"row {i + 1}: column(s) {', '.join(empty)} empty"))
            continue
        if r["d"] in (r["a"], r["b"], r["c"]):
            ev.skipped.append((i + 1, f"row {i + 1}: d={r['d']!r} is also an input, and inputs are excluded"))
            continue
        kinds = [c for c in ANALOGY_COLUMNS if parse_term(r[c]).kind != "text"]
        if kinds:
            ev.skipped.append((i + 1, f"row {i + 1}: {kinds[0]}={r[kinds[0]]!r} is an item/image term; "
                                      "a vocabulary holds texts only (evaluate on a workspace instead)"))
            continue
        valid.append((i, r))
    words = sorted({r[c] for _, r in valid for c in ANALOGY_COLUMNS})
    ev.candidates = len(words)
    if not valid:
        return ev
    E = term_vectors(None, model, words)
    pos = {w: j for j, w in enumerate(words)}
    for i, r in valid:
        a, b, c = (pos[r[x]] for x in ("a", "b", "c"))
        s = analogy_scores(E, E[[b, c]], E[[a]], method)
        base = (E @ E[c]).astype(np.float32)
        s[[a, b, c]] = -np.inf
        base[[a, b, c]] = -np.inf
        hit = np.zeros(len(words), bool)
        hit[pos[r["d"]]] = True
        top = top_indices(s, 1)
        _record(ev, i + 1, r, _rank_of_first_hit(s, hit, k), _rank_of_first_hit(base, hit, k),
                words[top[0]] if len(top) else None, 1)
    return ev


def _evaluate_workspace(ws: Workspace, model: str, df: pd.DataFrame, *, k: int, method: str,
                        modality: ModalitySpec) -> AnalogyEvaluation:
    ev = AnalogyEvaluation(method=method, k=k, space=f"workspace:{ws.name}:{model}")
    X_all, ids_all = ws.vectors(model)
    if not len(ids_all):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}; embed it first")
    X_all = unit_rows(X_all)
    items = ws.items.set_index("id", drop=False).loc[ids_all].reset_index(drop=True)
    known = set(ids_all.tolist())
    text_key = items["text"].astype("string").str.strip().str.lower()

    def as_term(cell: str) -> Term:
        t = parse_term(cell)
        return Term("item", cell) if t.kind == "text" and cell in known else t

    ev.candidates = len(ids_all)
    base_mask = filter_mask(items, None, modality)
    for i, r in df.iterrows():
        row_no = i + 1
        empty = [c for c in ANALOGY_COLUMNS if not r[c]]
        if empty:
            ev.skipped.append((row_no, f"row {row_no}: column(s) {', '.join(empty)} empty"))
            continue
        terms = [as_term(r[c]) for c in ("a", "b", "c")]
        try:
            V = term_vectors(ws, model, terms)
        except ValueError as e:
            ev.skipped.append((row_no, f"row {row_no}: {e}"))
            continue
        cand = base_mask.copy()
        row_mod = r.get("modality", "") if "modality" in r.index else ""
        if row_mod:
            cand &= filter_mask(items, None, [m.strip() for m in row_mod.split("|")])
        own = {term_id(t) for t in terms} - {None}
        cand &= ~items["id"].isin(own).to_numpy()
        # the expectation
        d = r["d"]
        cons, dt = _parse_constraints(d), as_term(d)
        try:
            if cons is not None:
                hit = filter_mask(items, cons)
            elif dt.kind in ("item", "image"):
                hit = (items["id"] == term_id(dt)).to_numpy()
            else:
                hit = (text_key == d.strip().lower()).fillna(False).to_numpy(dtype=bool)
        except ValueError as e:
            ev.skipped.append((row_no, f"row {row_no}: d={d!r}: {e}"))
            continue
        hit &= cand
        if not hit.any():
            ev.skipped.append((row_no, f"row {row_no}: no candidate item matches d={d!r}"
                                       + (f" among {row_mod} items" if row_mod else "")))
            continue
        s = analogy_scores(X_all, V[[1, 2]], V[[0]], method)
        base = (X_all @ V[2]).astype(np.float32)
        s[~cand] = -np.inf
        base[~cand] = -np.inf
        top = top_indices(s, 1)
        _record(ev, row_no, r, _rank_of_first_hit(s, hit, k), _rank_of_first_hit(base, hit, k),
                str(ids_all[top[0]]) if len(top) else None, int(hit.sum()))
    return ev
