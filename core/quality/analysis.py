"""The quality of one model's space in a workspace: :func:`quality_analysis` (every measure of
:mod:`core.quality.metrics` on the model's vectors, per-item scores and flags), its JSON summary
:func:`quality_report` and its per-item frame :func:`item_flags`."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..encoders import unit_rows
from ..params import Interval, validate
from ..progress import StageProgress
from .metrics import (
    HUB_SIGMA,
    NOISY_Z,
    OUTLIER_LOF,
    TOP,
    alignment,
    cross_modal_hubness,
    flag_noisy_pairs,
    hubness,
    local_outlier_factor,
    modality_gap,
    pair_positions,
    paired_retrieval,
    rankme,
    uniformity,
)
from .metrics import json_float as _f

log = logging.getLogger("core.quality")  # the name its log lines always had

# :func:`quality_analysis`'s parameters, declared once (core.params): read by the CLI for its checks and help
QUALITY_CONSTRAINTS: dict[str, list] = {
    "k": [Interval(int, 1, None)],
    "sample": [Interval(int, 10, None)],
    "seed": [Interval(int, 0, None)],
    "noisy_threshold": [Interval(float, 0, None, closed="neither")],
    "outlier_threshold": [Interval(float, 0, None, closed="neither")],
    "hub_sigma": [Interval(float, 0, None, closed="neither")],
}


# ---- workspace level ---------------------------------------------------------------------------
@dataclass
class QualityAnalysis:
    """Everything :func:`quality_analysis` measured.

    ``report``: the JSON-able summary (see :func:`quality_report`). ``items``: one row per item with a
    vector (``id, modality, n_k, knn_similarity, lof, pair_cosine, partner_rank, noisy_score,
    noisy_pair, hub, outlier``; pair columns are NaN for items without a pair). ``pairs``: one row per
    (image, caption) pair (``image_id, text_id, cosine, rank_i2t, rank_t2i, csls, noisy_score,
    noisy``). ``singular_values``: the spectrum behind RankMe. ``cross_n_k``: per image, N_k in the
    captions' image-kNN lists (None without both modalities).
    """

    report: dict
    items: pd.DataFrame
    pairs: pd.DataFrame
    singular_values: np.ndarray
    cross_n_k: pd.Series | None = None
    extra: dict = field(default_factory=dict)


def _item_records(items: pd.DataFrame, ids: Sequence[str], **cols) -> list[dict]:
    """``[{id, modality, text, source, **cols}]`` for JSON lists (``text``: the item's caption,
    :func:`core.items.captions`; all None but ``id`` for an id not in ``items``)."""
    from ..items import captions

    rows = items.set_index("id", drop=False).reindex([str(i) for i in ids])
    texts, mods, sources = captions(items, rows).tolist(), rows["modality"].tolist(), rows["source"].tolist()
    out = []
    for j, i in enumerate(ids):
        rec = {"id": str(i), "modality": mods[j] if isinstance(mods[j], str) else None, "text": texts[j],
               "source": sources[j] if isinstance(sources[j], str) else None}
        for k, v in cols.items():
            val = v[j]
            rec[k] = int(val) if isinstance(val, (np.integer, int)) else _f(val)
        out.append(rec)
    return out


def _workspace_knn(ws, model: str, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN (positions into ``ids``, self first) and cosines from the workspace's neighbour index."""
    from ..index import NeighborIndex, workspace_index

    idx = workspace_index(ws, model)
    if len(idx.ids_) != len(ids) or set(idx.ids_.tolist()) != set(ids.tolist()):
        X, _ = ws.vectors(model, ids=ids)
        idx = NeighborIndex("cosine").fit(X, ids)
    pos_of = {k_: i for i, k_ in enumerate(ids.tolist())}
    perm = np.array([pos_of[k_] for k_ in idx.ids_.tolist()], dtype=np.int64)  # index row -> our row
    p, sim = idx.kneighbors(k)
    out = np.empty_like(p)
    out[perm] = perm[p]
    s = np.empty_like(sim)
    s[perm] = sim
    return out, s


def _load_space(ws, model: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """The model's vectors in ``ws`` as unit rows ``U`` (n, d), their ``ids`` (n,) str, their modalities (n,) str
    (``row`` for an id without an item) and the workspace's items; raises ``ValueError`` when there is too little
    to measure or ``k`` < 1."""
    X, ids = ws.vectors(model)
    if not len(ids):
        raise ValueError(f"workspace {ws.name!r} has no vectors for model {model!r}; embed it first")
    if len(ids) < 3:
        raise ValueError(f"quality needs at least 3 items with vectors for {model!r}; workspace "
                         f"{ws.name!r} has {len(ids)}")
    if not k >= 1:
        raise ValueError(f"k must be >= 1; got {k}")
    ids = ids.astype(str)
    U = unit_rows(X)
    items = ws.items
    mods = items.set_index("id")["modality"].reindex(ids).fillna("row").to_numpy().astype(str)
    return U, ids, mods, items


def _spread(U: np.ndarray, mods: np.ndarray, present: list[str], *, sample: int, seed: int) -> dict:
    """How the unit rows ``U`` (n, d) fill the space: ``{"rankme": rankme(U) on at most ``sample`` rows,
    "rankme_by": {modality: {value, max}}, "uniformity": float, "uniformity_by": {modality: float}}`` (per
    modality of ``present`` with at least 2 items)."""
    rk = rankme(U, max_rows=sample, seed=seed)
    by_mod_rank = {}
    for m in present:
        if (mods == m).sum() >= 2:
            r = rankme(U[mods == m], max_rows=sample, seed=seed)
            by_mod_rank[m] = {"value": r["value"], "max": r["max"]}
    uni = uniformity(U, seed=seed)
    uni_by = {m: uniformity(U[mods == m], seed=seed) for m in present if (mods == m).sum() >= 2}
    return {"rankme": rk, "rankme_by": by_mod_rank, "uniformity": uni, "uniformity_by": uni_by}


def _neighbourhoods(ws, model: str, U: np.ndarray, ids: np.ndarray, mods: np.ndarray, present: list[str], kk: int,
                    hub_sigma: float) -> tuple[np.ndarray, np.ndarray, dict, dict | None, pd.Series | None]:
    """The kNN graph of every item (``knn``, ``sim``: (n, kk + 1), self first, from the workspace's index), its
    :func:`hubness` and, with images and texts, the images' :func:`cross_modal_hubness` among the captions with
    their N_k as a Series by image id (else None, None)."""
    knn, sim = _workspace_knn(ws, model, np.asarray(ids, dtype=object), kk + 1)
    hub = hubness(knn=knn, k=kk, sigma=hub_sigma)
    cross = None
    cross_n_k = None
    if "image" in present and "text" in present:
        cross = cross_modal_hubness(U[mods == "image"], U[mods == "text"], k=kk, sigma=hub_sigma)
        cross_n_k = pd.Series(cross["n_k"], index=ids[mods == "image"], name="n_k_cross")
    return knn, sim, hub, cross, cross_n_k


def _pair_frame(U: np.ndarray, mods: np.ndarray, ids: np.ndarray, pairs: np.ndarray, kk: int,
                noisy_threshold: float) -> tuple[dict, pd.DataFrame]:
    """:func:`paired_retrieval` of ``pairs`` with the noisy-pair flags: the summary and one row per pair
    (``image_id, text_id, cosine, rank_i2t, rank_t2i, csls, noisy_score, noisy``), most suspicious first."""
    retrieval, pf = paired_retrieval(U, mods, pairs, k_csls=kk)
    pf = flag_noisy_pairs(pf, threshold=noisy_threshold)
    pf.insert(0, "image_id", ids[pf["image"].to_numpy(np.int64)] if len(pf) else pd.Series(dtype=object))
    pf.insert(1, "text_id", ids[pf["text"].to_numpy(np.int64)] if len(pf) else pd.Series(dtype=object))
    pf = pf.drop(columns=["image", "text"]).sort_values("noisy_score", ascending=False, kind="stable")
    return retrieval, pf.reset_index(drop=True)


def _item_frame(ids: np.ndarray, mods: np.ndarray, hub: dict, knn_sim: np.ndarray, lof: np.ndarray,
                pf: pd.DataFrame, outlier_threshold: float) -> pd.DataFrame:
    """One row per item (see :class:`QualityAnalysis`): its neighbour numbers, the numbers of its most
    suspicious pair (an image with two captions, a caption of several images) and its three flags."""
    frame = pd.DataFrame({"id": ids, "modality": mods, "n_k": hub["n_k"], "knn_similarity": knn_sim, "lof": lof})
    worst = pd.concat([pf[["image_id", "cosine", "rank_i2t", "noisy_score", "noisy"]]
                       .rename(columns={"image_id": "id", "rank_i2t": "partner_rank"}),
                       pf[["text_id", "cosine", "rank_t2i", "noisy_score", "noisy"]]
                       .rename(columns={"text_id": "id", "rank_t2i": "partner_rank"})])
    # an item in several pairs appears once per pair here: keep its worst one
    worst = worst.sort_values("noisy_score", ascending=False, kind="stable").drop_duplicates("id").set_index("id")
    frame["pair_cosine"] = frame["id"].map(worst["cosine"]).astype(np.float64)
    frame["partner_rank"] = frame["id"].map(worst["partner_rank"]).astype(np.float64)
    frame["noisy_score"] = frame["id"].map(worst["noisy_score"]).astype(np.float64)
    frame["noisy_pair"] = frame["id"].isin(worst.index[worst["noisy"].to_numpy(bool)])
    frame["hub"] = np.isin(np.arange(len(ids)), hub["hubs"])
    frame["outlier"] = lof > outlier_threshold
    return frame


def _noisy_list(items: pd.DataFrame, pf: pd.DataFrame) -> list[dict]:
    """The report's ``noisy_pairs``: the first :data:`TOP` flagged pairs of ``pf`` with their caption and the
    image's source."""
    noisy_top = pf[pf["noisy"]].head(TOP)
    text_of = items.set_index("id")
    return [{"image_id": str(r.image_id), "text_id": str(r.text_id),
             "text": text_of["text"].get(r.text_id), "image_source": text_of["source"].get(r.image_id),
             "cosine": _f(r.cosine), "rank_i2t": int(r.rank_i2t), "rank_t2i": int(r.rank_t2i),
             "noisy_score": _f(r.noisy_score)} for r in noisy_top.itertuples(index=False)]


def _hub_report(items: pd.DataFrame, ids: np.ndarray, mods: np.ndarray, hub: dict, cross: dict | None) -> dict:
    """The report's ``hubness``: :func:`hubness` without its arrays, the number of hubs, the top :data:`TOP` hubs
    and the same for the images among the captions (``cross_modal``; None without both modalities)."""
    hubs_top = hub["hubs"][:TOP]
    hub_json = {k_: v for k_, v in hub.items() if k_ not in ("n_k", "hubs")}
    hub_json.update(n_hubs=len(hub["hubs"]),
                    top=_item_records(items, ids[hubs_top], n_k=hub["n_k"][hubs_top]))
    if cross is not None:
        img_ids = ids[mods == "image"]
        ctop = cross["hubs"][:TOP]
        hub_json["cross_modal"] = {**{k_: v for k_, v in cross.items() if k_ not in ("n_k", "hubs")},
                                   "n_hubs": len(cross["hubs"]),
                                   "top": _item_records(items, img_ids[ctop], n_k=cross["n_k"][ctop])}
    else:
        hub_json["cross_modal"] = None
    return hub_json


def _report(model: str, items: pd.DataFrame, ids: np.ndarray, mods: np.ndarray, present: list[str], *,
            spread: dict, align: float | None, gap: dict, hub: dict, cross: dict | None, retrieval: dict,
            frame: pd.DataFrame, pf: pd.DataFrame, lof: np.ndarray, dim: int, kk: int, n_pairs: int,
            thresholds: tuple[float, float]) -> dict:
    """The JSON summary of :func:`quality_analysis` (keys in :func:`quality_report`'s order; ``seconds`` 0.0 until
    the caller sets it). ``thresholds``: (noisy score, LOF)."""
    noisy_threshold, outlier_threshold = thresholds
    rk = spread["rankme"]
    out_order = np.argsort(-lof, kind="stable")
    out_top = out_order[lof[out_order] > outlier_threshold][:TOP]
    return {
        "rankme": {"value": rk["value"], "max": rk["max"], "ratio": rk["value"] / rk["max"], "n": rk["n"],
                   "by_modality": spread["rankme_by"]},
        "alignment": _f(align),
        "uniformity": _f(spread["uniformity"]),
        "modality_gap": gap,
        "hubness": _hub_report(items, ids, mods, hub, cross),
        "retrieval": retrieval,
        "flags": {"noisy_pair": int(frame["noisy_pair"].sum()), "noisy_pairs": int(pf["noisy"].sum()) if len(pf) else 0,
                  "hub": int(frame["hub"].sum()), "outlier": int(frame["outlier"].sum()),
                  "thresholds": {"noisy_score": noisy_threshold, "hub_n_k": hub["threshold"],
                                 "lof": outlier_threshold}},
        "noisy_pairs": _noisy_list(items, pf),
        "outliers": _item_records(items, ids[out_top], lof=lof[out_top]),
        "uniformity_by_modality": spread["uniformity_by"],
        "model": model, "n": len(ids), "dim": int(dim),
        "by_modality": {m: int((mods == m).sum()) for m in present},
        "k": int(kk), "alignment_alpha": 2, "uniformity_t": 2, "n_pairs": n_pairs,
        "seconds": 0.0,
    }


def quality_analysis(ws, model: str, *, k: int = 10, sample: int = 10_000, seed: int = 0,
                     noisy_threshold: float = NOISY_Z, outlier_threshold: float = OUTLIER_LOF,
                     hub_sigma: float = HUB_SIGMA, progress: StageProgress | None = None) -> QualityAnalysis:
    """Measure the quality of ``model``'s space in workspace ``ws`` (cosine geometry, unit rows).

    ``k``: neighbours for hubness, outliers and CSLS. ``sample``: at most this many items for RankMe,
    uniformity and separability, and at most this many pairs for retrieval and the noisy-pair flags
    (seeded samples; hubness and outliers always cover every item, through the workspace's index).
    Raises ``ValueError`` when the workspace has no vectors for the model, or for a parameter outside
    :data:`QUALITY_CONSTRAINTS`.
    """
    validate({"k": k, "sample": sample, "seed": seed, "noisy_threshold": noisy_threshold,
              "outlier_threshold": outlier_threshold, "hub_sigma": hub_sigma}, QUALITY_CONSTRAINTS, "quality_analysis")
    t0 = time.perf_counter()

    def step(stage: str, i: int) -> None:
        if progress is not None:
            progress(stage, i, 6)

    U, ids, mods, items = _load_space(ws, model, k)
    n, d = U.shape
    rng = np.random.default_rng(seed)
    present = [m for m in ("image", "text", "row") if (mods == m).any()]

    step("rank", 0)
    spread = _spread(U, mods, present, sample=sample, seed=seed)

    step("pairs", 1)
    pairs = pair_positions(items, ids, text_links=True)
    if len(pairs) > sample:
        pairs = pairs[np.sort(rng.choice(len(pairs), size=sample, replace=False))]
    align = alignment(U[pairs[:, 0]], U[pairs[:, 1]]) if len(pairs) else None
    gap = modality_gap(U, mods, pairs, seed=seed, separability=True)

    step("neighbours", 2)
    kk = min(k, n - 1)
    knn, sim, hub, cross, cross_n_k = _neighbourhoods(ws, model, U, ids, mods, present, kk, hub_sigma)

    step("outliers", 3)
    lof = local_outlier_factor(knn, sim, k=kk)
    knn_sim = sim[:, 1 : kk + 1].mean(1).astype(np.float64)

    step("retrieval", 4)
    retrieval, pf = _pair_frame(U, mods, ids, pairs, kk, noisy_threshold)

    step("flags", 5)
    frame = _item_frame(ids, mods, hub, knn_sim, lof, pf, outlier_threshold)
    report = _report(model, items, ids, mods, present, spread=spread, align=align, gap=gap, hub=hub, cross=cross,
                     retrieval=retrieval, frame=frame, pf=pf, lof=lof, dim=d, kk=kk, n_pairs=len(pairs),
                     thresholds=(noisy_threshold, outlier_threshold))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    step("done", 6)
    log.info("quality of %s in %s: %.1fs", model, ws.name, report["seconds"])
    return QualityAnalysis(report=report, items=frame, pairs=pf, singular_values=spread["rankme"]["singular_values"],
                           cross_n_k=cross_n_k)


def quality_report(ws, model: str, *, k: int = 10, sample: int = 10_000, seed: int = 0, **kw) -> dict:
    """The JSON summary of :func:`quality_analysis` (``jointscope quality``'s output).

    Keys, those docs/cli.md lists for ``jointscope quality`` first: ``rankme`` ({value, max = min(n, d),
    ratio, by_modality}), ``alignment`` (image–caption pairs, alpha = 2; None without pairs), ``uniformity``
    (all items, t = 2), ``modality_gap`` (:func:`modality_gap` with separability), ``hubness`` ({k, skewness, n_hubs,
    top, cross_modal, ...}), then ``retrieval`` (recall@1/5/10 both ways), ``flags`` (counts and
    thresholds), ``noisy_pairs`` / ``outliers`` (top items with ids, text and source),
    ``uniformity_by_modality``, ``model, n, dim, by_modality, k, n_pairs, seconds``.
    """
    return quality_analysis(ws, model, k=k, sample=sample, seed=seed, **kw).report


def item_flags(ws, model: str, **kw) -> pd.DataFrame:
    """Per-item quality scores and flags of :func:`quality_analysis` (``id`` + numbers + booleans),
    usable as a colour or a filter on a map."""
    return quality_analysis(ws, model, **kw).items
