"""Concept explanations (PACE) of ViT image towers: patches, the estimator, metrics, workspace results.

``explain(ws, model, estimator=PACE(8))`` is the workspace-level entry point; :class:`PACE` the estimator on
arrays (a scikit-learn ``BaseEstimator``), :func:`default_estimator` the PACE model ``explain`` fits unless
given one. Heavy imports (torch, open_clip) happen inside the functions that need them.
"""
from __future__ import annotations

from ..errors import not_fitted_getattr
from .explain import (
    Concept,
    ConceptsResult,
    default_estimator,
    explain,
    input_frame,
    name_concepts,
    patch_crop,
    zero_shot,
)
from .metrics import augmentation, faithfulness, recovery, sparsity, stability
from .pace import PACE
from .patches import NotViTError, PatchData, extract_patches, project_tokens, workspace_patches

explain_concepts = explain
__getattr__ = not_fitted_getattr(__name__)  # NotFittedError: scikit-learn's

__all__ = [
    "PACE",
    "Concept",
    "ConceptsResult",
    "NotFittedError",
    "NotViTError",
    "PatchData",
    "augmentation",
    "default_estimator",
    "explain",
    "explain_concepts",
    "extract_patches",
    "faithfulness",
    "input_frame",
    "name_concepts",
    "patch_crop",
    "project_tokens",
    "recovery",
    "sparsity",
    "stability",
    "workspace_patches",
    "zero_shot",
]
