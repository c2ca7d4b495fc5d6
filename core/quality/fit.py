"""Does a model fit a workspace's data? :func:`fit_verdict` and the statistics behind it (Wilson intervals,
odds ratios over chance, log-rank scores, neighbour structure and zero-shot margins against shuffled
vectors)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..encoders import unit_rows
from .metrics import json_float as _f
from .metrics import paired_retrieval

# ---- does the model fit the data? ----------------------------------------------------------------
FIT_MIN_ITEMS = 20  # fewer items (or pairs) with vectors than this say nothing either way
FIT_SAMPLE = 2000  # pairs (or items) a verdict measures at most: a seeded sample
FIT_Z = 1.96  # two-sided 95 % confidence bounds
# a "small" effect (Cohen's d = 0.2), and the odds ratio that matches it (ln OR = d * pi / sqrt(3),
# Hasselblad & Hedges 1995): a margin over chance below this is not a meaningful one
FIT_SMALL_D = 0.2
FIT_SMALL_ODDS = float(np.exp(FIT_SMALL_D * np.pi / np.sqrt(3)))  # ≈ 1.44
FIT_LOG_RANK = 0.5  # a fitting model removes at least half of chance's log-rank (see log_rank_score)
FIT_KNOWN_MOST = 0.5  # below this share of known words the model never saw most of the words
FIT_KNOWN_NEARLY_ALL = 0.9  # below this, about one word in ten (one a sentence) is unknown to it
FIT_K = 10  # neighbours behind the neighbour-structure test
VERDICTS = ("fits", "weak", "near chance", "unknown")


def wilson_interval(hits: int, n: int, z: float = FIT_Z) -> tuple[float, float]:
    """Wilson score interval (lower, upper) of a proportion ``hits / n``; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def odds_ratio(p: float, chance: float) -> float:
    """Odds of ``p`` over the odds of ``chance`` (both in [0, 1]); inf when p = 1, 0 when p = 0."""
    p, chance = float(np.clip(p, 0.0, 1.0)), float(np.clip(chance, 1e-12, 1 - 1e-12))
    if p >= 1.0:
        return float("inf")
    return (p / (1 - p)) / (chance / (1 - chance))


def log_rank_score(ranks: np.ndarray, candidates: np.ndarray, z: float = FIT_Z) -> dict:
    """How much of the uncertainty about a query's partner a ranking removes, on a log scale.

    ``ranks`` (p,) filtered ranks of the true partners (1 = first) among ``candidates`` (p,) positions each
    (the non-partners + 1). A random ranking puts a partner at a uniform rank, whose mean log is
    ``ln(m!) / m`` (about ``ln m - 1``); the score is ``1 - mean(ln rank) / mean(ln(m!) / m)``: 0 = chance,
    1 = every partner first. 0.5 means the partners' geometric-mean rank is about the square root of a
    random ranking's. Returns ``{"value", "lower", "upper"}`` (normal bounds of the mean log rank).
    """
    from scipy.special import gammaln

    r = np.log(np.maximum(np.asarray(ranks, dtype=np.float64), 1.0))
    m = np.maximum(np.asarray(candidates, dtype=np.float64), 1.0)
    e0 = float(np.mean(gammaln(m + 1) / m))
    if not len(r) or e0 <= 0:
        return {"value": None, "lower": None, "upper": None}
    se = float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("inf")
    mean = float(r.mean())
    return {"value": 1 - mean / e0, "lower": 1 - (mean + z * se) / e0, "upper": 1 - (mean - z * se) / e0}


def _effect(a: np.ndarray, b: np.ndarray, z: float = FIT_Z) -> dict:
    """Cohen's d of mean(a) - mean(b) over their pooled SD, with a normal bound from its standard error
    (Hedges & Olkin: sqrt((na + nb) / (na nb) + d^2 / (2 (na + nb))))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = len(a), len(b)
    sd = float(np.sqrt((a.var(ddof=1) * (na - 1) + b.var(ddof=1) * (nb - 1)) / max(na + nb - 2, 1)))
    d = float((a.mean() - b.mean()) / sd) if sd > 1e-12 else 0.0
    se = float(np.sqrt((na + nb) / (na * nb) + d * d / (2 * (na + nb))))
    return {"d": d, "lower": d - z * se, "upper": d + z * se}


def shuffle_dimensions(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """``X`` (n, d) with each column permuted independently across rows (seeded): every dimension keeps
    its values (and the space its mean direction), but which values occur together is random — the
    baseline of a space without structure beyond its marginals."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X)
    return np.stack([X[rng.permutation(len(X)), j] for j in range(X.shape[1])], axis=1)


def _knn_cosine(U: np.ndarray, k: int) -> np.ndarray:
    """Per row of unit rows ``U`` (m, d), the mean cosine of its k nearest other rows: (m,) float64."""
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    return np.mean(-np.partition(-S, k - 1, axis=1)[:, :k], axis=1).astype(np.float64)


def neighbour_structure(X: np.ndarray, *, k: int = FIT_K, seed: int = 0) -> dict:
    """Whether a space has neighbourhoods beyond noise: the mean cosine of each item to its ``k`` nearest
    neighbours, against the same in :func:`shuffle_dimensions` of the vectors (rows L2-normalised in both).

    ``X`` (m, d), m >= 3. Returns ``{"n", "k", "knn_cosine", "shuffled_knn_cosine", "effect",
    "effect_lower"}``: ``effect`` = Cohen's d of the per-item values (real − shuffled) and its 95 % lower
    bound. Vectors without structure (e.g. Gaussian noise) give an effect near 0; real embeddings of
    related items give several SDs.
    """
    X = np.asarray(X, dtype=np.float32)
    m = len(X)
    if m < 3:
        raise ValueError(f"neighbour structure needs at least 3 items; got {m}")
    kk = min(k, m - 1)
    real = _knn_cosine(unit_rows(X), kk)
    shuffled = _knn_cosine(unit_rows(shuffle_dimensions(X, seed)), kk)
    eff = _effect(real, shuffled)
    return {"n": int(m), "k": int(kk), "knn_cosine": float(real.mean()), "shuffled_knn_cosine": float(shuffled.mean()),
            "effect": eff["d"], "effect_lower": eff["lower"]}


def zero_shot_margin(X: np.ndarray, vocab_vectors: np.ndarray, *, seed: int = 0) -> dict:
    """How peaked a model's best vocabulary word is for each item, against structure-less vectors.

    ``X`` (m, d) item vectors (e.g. images), ``vocab_vectors`` (V, d) unit prompt vectors, V >= 3. Per item,
    ``(best - runner-up) / SD`` of its cosines to the V words; the baseline is the same on
    :func:`shuffle_dimensions` of X. Returns ``{"n", "words", "margin", "shuffled_margin", "effect",
    "effect_lower"}`` (Cohen's d real − shuffled and its 95 % lower bound).
    """
    T = np.asarray(vocab_vectors, dtype=np.float32)
    if T.ndim != 2 or len(T) < 3:
        raise ValueError(f"zero-shot margins need at least 3 words; got {len(T)}")

    def margins(U):
        S = np.sort(U @ T.T, axis=1)
        return ((S[:, -1] - S[:, -2]) / np.maximum(S.std(axis=1), 1e-9)).astype(np.float64)

    X = np.asarray(X, dtype=np.float32)
    real, shuffled = margins(unit_rows(X)), margins(unit_rows(shuffle_dimensions(X, seed)))
    eff = _effect(real, shuffled)
    return {"n": len(X), "words": len(T), "margin": float(real.mean()), "shuffled_margin": float(shuffled.mean()),
            "effect": eff["d"], "effect_lower": eff["lower"]}


def _trained_on(model: str) -> str | None:
    """What a named model was trained on, from its registry description (``... trained on X; ...``)."""
    import re

    from ..encoders import list_models

    for info in list_models(include_hub=False):
        if info.id == model:
            m = re.search(r"\btrained on ([^;.]+)", info.description)
            return m.group(1).strip() if m else None
    return None


def _advice(images: bool) -> str:
    """What to try instead, for a workspace with images (``images``) or with texts / rows only."""
    return ("Try a model trained on data like yours, e.g. an open_clip model." if images else
            "Try a model trained on texts like yours, e.g. a sentence-transformers model such as minilm.")


def _share(x: float) -> str:
    """A proportion for a sentence: two decimals, or one significant digit below 0.01."""
    return f"{x:.2f}" if x >= 0.01 else f"{x:.1g}"


def _fit(verdict: str, evidence: dict, reason: str) -> dict:
    assert verdict in VERDICTS
    return {"verdict": verdict, "evidence": evidence, "reason": reason}


def _retrieval_direction(ranks: np.ndarray, query: np.ndarray, n_candidates: int, n_partners: np.ndarray) -> dict:
    """Recall@1 with its Wilson bounds, chance, odds ratios and the log-rank score of one direction.
    ``ranks`` (p,), ``query`` (p,) the query row of each pair, ``n_partners`` per query row."""
    p = len(ranks)
    m = n_candidates - n_partners[query] + 1  # positions a true partner can take among the non-partners
    chance = float(np.mean(1.0 / m))
    hits = int(np.sum(ranks <= 1))
    lo, hi = wilson_interval(hits, p)
    lr = log_rank_score(ranks, m)
    return {"recall@1": hits / p, "lower": lo, "upper": hi, "chance": chance, "candidates": int(n_candidates),
            "odds_ratio": _f(odds_ratio(hits / p, chance)), "odds_ratio_lower": _f(odds_ratio(lo, chance)),
            "median_rank": float(np.median(ranks)), "log_rank_score": _f(lr["value"]),
            "log_rank_score_lower": _f(lr["lower"])}


def _paired_fit(ws, model: str, ids: np.ndarray, pairs: np.ndarray, *, max_items: int, seed: int) -> dict:
    """The verdict from image–caption retrieval among a seeded sample of at most ``max_items`` pairs."""
    rng = np.random.default_rng(seed)
    n_total = len(pairs)
    if n_total > max_items:
        pairs = pairs[np.sort(rng.choice(n_total, size=max_items, replace=False))]
    used = np.unique(pairs.ravel())
    X, got = ws.vectors(model, ids=ids[used])
    if len(got) != len(used):  # the ids come from the model's own store: only a concurrent deletion does this
        raise ValueError(f"workspace {ws.name!r}: {len(used) - len(got)} paired items lost their {model!r} vectors "
                         "while the fit was measured; try again")
    local = np.full(len(ids), -1, np.int64)
    local[used] = np.arange(len(used))
    P = local[pairs]
    mods = np.array(["text"] * len(used), dtype=object)
    mods[np.isin(np.arange(len(used)), P[:, 0])] = "image"
    U = unit_rows(X)
    summary, frame = paired_retrieval(U, mods.astype(str), P)
    n_img, n_txt = summary["n_images"], summary["n_texts"]
    row_of = np.full(len(U), -1, np.int64)
    row_of[mods == "image"] = np.arange(n_img)
    row_of[mods == "text"] = np.arange(n_txt)
    pi, pt = row_of[frame["image"].to_numpy(np.int64)], row_of[frame["text"].to_numpy(np.int64)]
    i2t = _retrieval_direction(frame["rank_i2t"].to_numpy(), pi, n_txt, np.bincount(pi, minlength=n_img))
    t2i = _retrieval_direction(frame["rank_t2i"].to_numpy(), pt, n_img, np.bincount(pt, minlength=n_txt))
    # true-pair cosine against random image–caption pairs of the sample
    true = frame["cosine"].to_numpy(np.float64)
    Ui, Ut = U[mods == "image"], U[mods == "text"]
    ri, rt = rng.integers(0, n_img, size=20_000), rng.integers(0, n_txt, size=20_000)
    partner = set(zip(pi.tolist(), pt.tolist()))
    keep = np.array([(a, b) not in partner for a, b in zip(ri.tolist(), rt.tolist())], dtype=bool)
    rand = np.sum(Ui[ri[keep]] * Ut[rt[keep]], axis=1).astype(np.float64)
    se = float(np.sqrt(true.var(ddof=1) / len(true) + rand.var(ddof=1) / max(len(rand), 1))) if len(rand) > 1 else 0.0
    diff = float(true.mean() - rand.mean()) if len(rand) else 0.0
    rand_sd = float(rand.std(ddof=1)) if len(rand) > 1 else 0.0
    effect = diff / rand_sd if rand_sd > 1e-12 else 0.0
    effect_lower = (diff - FIT_Z * se) / rand_sd if rand_sd > 1e-12 else 0.0
    evidence = {
        "method": "pairs", "n_pairs": len(frame), "n_pairs_total": int(n_total), "sampled": n_total > max_items,
        "image_to_text": i2t, "text_to_image": t2i,
        "pair_cosine": _f(true.mean()), "random_pair_cosine": _f(rand.mean()) if len(rand) else None,
        "random_pair_sd": _f(rand_sd), "pair_cosine_effect": _f(effect), "pair_cosine_effect_lower": _f(effect_lower),
        "pair_cosine_significant": bool(se > 0 and diff - FIT_Z * se > 0),
        "log_rank_score": _f(np.mean([i2t["log_rank_score"] or 0.0, t2i["log_rank_score"] or 0.0])),
        "cut_points": {"odds_ratio": FIT_SMALL_ODDS, "effect": FIT_SMALL_D, "log_rank_score": FIT_LOG_RANK},
    }
    best_or = max(i2t["odds_ratio_lower"] or 0.0, t2i["odds_ratio_lower"] or 0.0)
    who = model + (f" (trained on {t})" if (t := _trained_on(model)) else "")
    nums = (f"recall@1 {i2t['recall@1']:.2f} image→caption against {_share(i2t['chance'])} by chance, "
            f"{len(frame)} pairs")
    if best_or < FIT_SMALL_ODDS and (effect_lower < FIT_SMALL_D):
        return _fit("near chance", evidence,
                    f"{who} matches images to their captions here no better than chance ({nums}): its results "
                    f"will not mean much on this workspace. {_advice(True)}")
    if evidence["log_rank_score"] < FIT_LOG_RANK:
        return _fit("weak", evidence,
                    f"{who} matches images to their captions here better than chance but far from what a fitting "
                    f"model does ({nums}): read its results with care. {_advice(True)}")
    return _fit("fits", evidence, f"{model} matches images to their captions here well ({nums}).")


def _items_fit(ws, model: str, ids: np.ndarray, *, max_items: int, seed: int, n_pairs: int) -> dict:
    """The verdict without enough pairs: neighbour structure per modality, known words, zero-shot margins."""
    from ..encoders import ModelLoadError, modalities_of
    from ..vocabulary import default_vocabulary, known_words, vocabulary_vectors, words_of

    rng = np.random.default_rng(seed)
    if len(ids) > max_items:
        ids = ids[np.sort(rng.choice(len(ids), size=max_items, replace=False))]
    X, ids = ws.vectors(model, ids=ids)
    ids = ids.astype(str)
    by_id = ws.items.set_index("id")
    mods = by_id["modality"].reindex(ids).fillna("row").to_numpy().astype(str)
    precomputed = model.startswith("precomputed:")
    evidence: dict = {"method": "items", "n_items": len(ids), "n_pairs": int(n_pairs), "structure": {},
                      "known_word_share": None, "zero_shot": None,
                      "cut_points": {"effect": FIT_SMALL_D, "known_word_share": [FIT_KNOWN_MOST, FIT_KNOWN_NEARLY_ALL]}}
    for m in ("image", "text", "row"):
        if (mods == m).sum() >= FIT_MIN_ITEMS:
            evidence["structure"][m] = neighbour_structure(X[mods == m], seed=seed)
    if not evidence["structure"]:
        counts = ", ".join(f"{int((mods == m).sum())} {m}s" for m in ("image", "text", "row") if (mods == m).any())
        return _fit("unknown", evidence, f"Too few items of one kind ({counts}) to tell whether {model} fits this "
                                         f"workspace; {FIT_MIN_ITEMS} of a kind are needed.")
    flat = [m for m, s in evidence["structure"].items() if s["effect_lower"] < FIT_SMALL_D]
    texts = by_id["text"].reindex(ids[mods == "text"]).dropna().astype(str).tolist()
    known = None if precomputed else known_words(model)
    unknown_list: list[str] = []
    if known is not None and texts:
        words = [w for t in texts for w in words_of(t)]
        if words:
            evidence["known_word_share"] = float(np.mean([w in known for w in words]))
            evidence["n_words"] = len(words)
            unknown_list = list(dict.fromkeys(w for w in words if w not in known))[:10]
            evidence["unknown_words"] = unknown_list
    img = mods == "image"
    try:
        reads_text = "text" in modalities_of(model)
    except ValueError:  # vectors of a model id this version no longer knows
        reads_text = False
    if not precomputed and img.sum() >= FIT_MIN_ITEMS and reads_text:
        try:
            T = vocabulary_vectors(model, default_vocabulary(model))
            evidence["zero_shot"] = zero_shot_margin(X[img], T, seed=seed)
        except (ValueError, OSError, ModelLoadError) as e:
            evidence["zero_shot_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    who = model + (f" (trained on {t})" if (t := _trained_on(model)) else "")
    share = evidence["known_word_share"]
    advice = _advice("image" in evidence["structure"])
    if flat:
        kinds = " and ".join(f"{m}s" for m in flat)
        return _fit("near chance", evidence,
                    f"The {kinds} have no neighbour structure beyond noise in {model}'s space: its maps and "
                    f"neighbours will not mean much here." + ("" if precomputed else f" {advice}"))
    if precomputed:
        return _fit("unknown", evidence,
                    f"{model} are your own vectors: they have neighbour structure beyond noise, but without "
                    "image–caption pairs nothing here says what they capture.")
    if share is not None and share < FIT_KNOWN_MOST:
        return _fit("near chance", evidence,
                    f"{who} never saw {1 - share:.0%} of the words in these texts (e.g. "
                    f"{', '.join(unknown_list[:4])}): its results will not mean much here. {advice}")
    zs = evidence["zero_shot"]
    if share is not None and share < FIT_KNOWN_NEARLY_ALL:
        return _fit("weak", evidence,
                    f"{who} never saw {1 - share:.0%} of the words in these texts (e.g. "
                    f"{', '.join(unknown_list[:4])}): read its results with care. {advice}")
    if zs is not None and zs["effect_lower"] < FIT_SMALL_D:
        return _fit("weak", evidence,
                    f"{who} names these images no more clearly than it names noise (its best word stands out "
                    f"{zs['margin']:.2f} SDs against {zs['shuffled_margin']:.2f}): read its results with care. "
                    f"{advice}")
    return _fit("fits", evidence, f"{model}'s space has clear neighbour structure on these items"
                + ("" if share is None else f" and it knows {share:.0%} of their words") + ".")


def _pair_array(items: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """The pairs of :func:`pair_positions` (``text_links=True``) as a set, vectorised for large workspaces:
    (p, 2) int64 positions into ``ids``, sorted."""
    index = pd.Index(np.asarray(ids), dtype=object)
    mod = items["modality"].to_numpy()
    img, txt = items[mod == "image"][["id", "pair"]].dropna(), items[mod == "text"][["id", "pair"]].dropna()
    txt = txt[txt["pair"].isin(items.loc[mod == "image", "id"])]
    a = np.concatenate([img["id"].to_numpy(object), txt["pair"].to_numpy(object)])
    b = np.concatenate([img["pair"].to_numpy(object), txt["id"].to_numpy(object)])
    P = np.stack([index.get_indexer(a), index.get_indexer(b)], axis=1).astype(np.int64)
    P = P[(P >= 0).all(axis=1)]
    _, first = np.unique(P[:, 0] * (len(index) + 1) + P[:, 1], return_index=True)  # each pair once, sorted
    return P[first].reshape(-1, 2)


def fit_verdict(ws, model: str, *, max_items: int = FIT_SAMPLE, seed: int = 0, pairs: bool = True) -> dict:
    """Does ``model`` fit the data of workspace ``ws``? ``{"verdict", "evidence", "reason"}``, JSON-safe.

    ``verdict`` is one of ``"fits"``, ``"weak"``, ``"near chance"``, ``"unknown"``; ``reason`` one plain
    sentence for a user; ``evidence`` the numbers behind it. With at least :data:`FIT_MIN_ITEMS`
    image–caption pairs (and ``pairs``), from retrieval among a seeded sample of at most ``max_items``
    pairs (candidates: the sample's images and captions):

    * per direction, recall@1 with its Wilson 95 % interval against chance (a random ranking's recall@1,
      1 / (candidates − other partners of the query)), as odds ratios; the log-rank score
      (:func:`log_rank_score`); the true-pair cosine against random image–caption pairs (Cohen's d over the
      random pairs' SD, with its 95 % lower bound, and whether the difference is significant);
    * "near chance" when neither direction's recall@1 lower bound reaches the odds ratio of a small effect
      over chance (:data:`FIT_SMALL_ODDS`) and the lower bound of the pair-cosine effect is below a small
      effect (:data:`FIT_SMALL_D`); else "weak" when the mean log-rank score of the two directions is below
      :data:`FIT_LOG_RANK`; else "fits".

    Otherwise (texts only, images only, tables, few pairs), on a seeded sample of at most ``max_items``
    items: :func:`neighbour_structure` per modality (with at least :data:`FIT_MIN_ITEMS` items), the share
    of the texts' words the model knows (local models with a word list; hub models have none, which is no
    evidence) and, for images, :func:`zero_shot_margin` over the model's default vocabulary:

    * "near chance" when a modality shows no neighbour structure beyond a small effect, or the model
      never saw most of the words (share < :data:`FIT_KNOWN_MOST`);
    * "weak" when it misses about one word in ten or more (share < :data:`FIT_KNOWN_NEARLY_ALL`) or its
      best word for the images stands out no more than for structure-less vectors; else "fits".

    ``precomputed:*`` vectors are the user's own: "near chance" without neighbour structure, else
    "unknown". "unknown" too with fewer than :data:`FIT_MIN_ITEMS` items with vectors.
    """
    ids = ws.vector_ids(model)
    if not len(ids):
        return _fit("unknown", {"method": None, "n_items": 0},
                    f"This workspace has no vectors for {model} yet, so nothing says whether it fits; embed it "
                    "first.")
    ids = np.asarray(ids).astype(str).astype(object)
    if len(ids) < FIT_MIN_ITEMS:
        return _fit("unknown", {"method": None, "n_items": len(ids)},
                    f"Too few items ({len(ids)}) with vectors to tell whether {model} fits this workspace; "
                    f"{FIT_MIN_ITEMS} are needed.")
    pos = _pair_array(ws.items, ids)
    if pairs and len(pos) >= FIT_MIN_ITEMS and not model.startswith("precomputed:"):
        return _paired_fit(ws, model, ids, pos, max_items=max_items, seed=seed)
    return _items_fit(ws, model, ids, max_items=max_items, seed=seed, n_pairs=len(pos))
