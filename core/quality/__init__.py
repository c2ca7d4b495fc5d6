"""Measures of a joint space: how good it is, which items look wrong, how two models differ, and whether a model
fits a workspace's data.

Array functions (``X`` is an (n, d) float array; unless a docstring says otherwise its rows are
L2-normalised here, i.e. everything is measured in cosine geometry):

* :func:`rankme` — effective rank (Garrido et al. 2023) with its maximum min(n, d) and the spectrum;
* :func:`alignment`, :func:`uniformity` — Wang & Isola (2020) on true pairs / on all pairs;
* :func:`modality_gap` (+ :func:`modality_separability`) — centroid distance, pair vs random cosines,
  cross-validated linear separability of the two modalities (:func:`workspace_modality_gap`: of a
  workspace's vectors, on a pair-keeping sample above :data:`GAP_SAMPLE` items);
* :func:`k_occurrence`, :func:`hubness`, :func:`cross_modal_hubness` — skewness of the k-occurrence
  distribution N_k and the hub items (Radovanović et al. 2010);
* :func:`paired_retrieval` — image→text / text→image recall@k and, per pair, the rank of its true
  partner and a hubness-corrected pair score (CSLS, Conneau et al. 2018);
* :func:`robust_z`, :func:`local_outlier_factor` — the statistics behind the per-item flags;
* :func:`linear_cka`, :func:`knn_jaccard` — comparing two representations of the same items.

Workspace functions (a :class:`core.workspace.Workspace` and a model id):

* :func:`quality_analysis` — everything above on the model's vectors, with per-item scores and flags
  (``noisy_pair``, ``hub``, ``outlier``) as a DataFrame; :func:`quality_report` is its JSON summary
  (the ``jointscope quality`` output) and :func:`item_flags` its per-item frame;
* :func:`compare_models` — two models on the items both have: kNN overlap per item, linear CKA, and
  their maps (``core.projection.compute_map``) aligned by Procrustes with per-item displacement;
* :func:`fit_verdict` — does the model fit the workspace's data (``"fits"``, ``"weak"``, ``"near chance"``,
  ``"unknown"``, with the evidence and one sentence for a user).

The package by role: ``metrics`` (the array measures and the flags' thresholds), ``analysis``
(:func:`quality_analysis`, :func:`quality_report`, :func:`item_flags`), ``compare`` (CKA, kNN overlap, aligned
maps, :func:`compare_models`) and ``fit`` (:func:`fit_verdict` and its statistics). Every name is importable
from ``core.quality``.
"""
from __future__ import annotations

from .analysis import (
    QUALITY_CONSTRAINTS,
    QualityAnalysis,
    item_flags,
    quality_analysis,
    quality_report,
)
from .compare import (
    ModelComparison,
    align_maps,
    compare_models,
    knn_jaccard,
    linear_cka,
)
from .fit import (
    FIT_K,
    FIT_KNOWN_MOST,
    FIT_KNOWN_NEARLY_ALL,
    FIT_LOG_RANK,
    FIT_MIN_ITEMS,
    FIT_SAMPLE,
    FIT_SMALL_D,
    FIT_SMALL_ODDS,
    FIT_Z,
    VERDICTS,
    fit_verdict,
    log_rank_score,
    neighbour_structure,
    odds_ratio,
    shuffle_dimensions,
    wilson_interval,
    zero_shot_margin,
)
from .metrics import (
    GAP_SAMPLE,
    HUB_SIGMA,
    MIN_PAIRS_FOR_FLAGS,
    NOISY_Z,
    OUTLIER_LOF,
    RETRIEVAL_KS,
    TOP,
    alignment,
    cross_modal_hubness,
    flag_noisy_pairs,
    gap_sample_ids,
    hubness,
    json_float,
    k_occurrence,
    local_outlier_factor,
    modality_gap,
    modality_separability,
    pair_positions,
    paired_retrieval,
    rankme,
    robust_z,
    uniformity,
    workspace_modality_gap,
)

__all__ = [
    "FIT_K",
    "FIT_KNOWN_MOST",
    "FIT_KNOWN_NEARLY_ALL",
    "FIT_LOG_RANK",
    "FIT_MIN_ITEMS",
    "FIT_SAMPLE",
    "FIT_SMALL_D",
    "FIT_SMALL_ODDS",
    "FIT_Z",
    "GAP_SAMPLE",
    "HUB_SIGMA",
    "MIN_PAIRS_FOR_FLAGS",
    "ModelComparison",
    "NOISY_Z",
    "OUTLIER_LOF",
    "QUALITY_CONSTRAINTS",
    "QualityAnalysis",
    "RETRIEVAL_KS",
    "TOP",
    "VERDICTS",
    "align_maps",
    "alignment",
    "compare_models",
    "cross_modal_hubness",
    "fit_verdict",
    "flag_noisy_pairs",
    "gap_sample_ids",
    "hubness",
    "item_flags",
    "json_float",
    "k_occurrence",
    "knn_jaccard",
    "linear_cka",
    "local_outlier_factor",
    "log_rank_score",
    "modality_gap",
    "modality_separability",
    "neighbour_structure",
    "odds_ratio",
    "pair_positions",
    "paired_retrieval",
    "quality_analysis",
    "quality_report",
    "rankme",
    "robust_z",
    "shuffle_dimensions",
    "uniformity",
    "wilson_interval",
    "workspace_modality_gap",
    "zero_shot_margin",
]
