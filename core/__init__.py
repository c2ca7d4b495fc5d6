"""Jointscope core library: encoders, workspaces, ingestion, indexes, projections, concepts, quality.

Heavy imports (torch, open_clip, umap) happen inside the functions that need them, so ``import core``
is fast. Public names are re-exported here lazily.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "PACE": "concepts",
    "ConceptsResult": "concepts",
    "explain_concepts": "concepts",
    "list_models": "encoders",
    "load_encoder": "encoders",
    "ModelInfo": "encoders",
    "ModelLoadError": "encoders",
    "Encoder": "encoders",
    "Workspace": "workspace",
    "IngestReport": "workspace",
    "EmbedReport": "workspace",
    "StaleVectorsError": "workspace",
    "DeleteReport": "workspace",
    "delete_workspace": "workspace",
    "workspace_path": "workspace",
    "list_workspaces": "workspace",
    "scan": "ingest",
    "embed_workspace": "distributed",
    "embed_manifest": "distributed",
    "NeighborIndex": "index",
    "workspace_index": "index",
    "Projector": "projection",
    "MapResult": "projection",
    "compute_map": "projection",
    "cluster_labels": "projection",
    "similarity_to_text": "projection",
    "map_labels": "labels",
    "vector_modalities": "projection",
    "modality_gap": "quality",
    "workspace_modality_gap": "quality",
    "fit_verdict": "quality",
    "MapParams": "mapview",
    "build_view": "mapview",
    "quality_report": "quality",
    "quality_analysis": "quality",
    "item_flags": "quality",
    "compare_models": "quality",
    "rankme": "quality",
    "alignment": "quality",
    "uniformity": "quality",
    "linear_cka": "quality",
    "search_items": "search",
    "analogy": "analogies",
    "evaluate_analogies": "analogies",
    "text_axes": "search",
    "zero_shot_labels": "vocabulary",
    "label_clusters": "vocabulary",
    "default_vocabulary": "vocabulary",
    "known_words": "vocabulary",
    "unknown_words": "vocabulary",
    "Hit": "search",
    "selection_table": "export",
    "map_html": "export",
    "write_map_html": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{mod}")
    value = getattr(module, "search" if name == "search_items" else name)  # core.search is the module
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
