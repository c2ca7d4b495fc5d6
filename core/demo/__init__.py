"""Demo data for Jointscope: a procedural world of captioned shape images."""

from core.demo.world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT_COMBOS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_COMBOS,
    WorldItem,
    WorldObject,
    caption_for,
    generate,
    iter_generate,
    paint_patterns,
    prompts_for,
    render,
    sample_objects,
    world_vocabulary,
)

from core.demo.workspace import DEMO_MODEL, DEMO_SEED, DEMO_WORKSPACE, create_demo_workspace, load_world_masks

__all__ = [
    "DEMO_MODEL",
    "DEMO_SEED",
    "DEMO_WORKSPACE",
    "create_demo_workspace",
    "load_world_masks",
    "BACKGROUNDS",
    "COLOURS",
    "HELDOUT_COMBOS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "TRAIN_COMBOS",
    "WorldItem",
    "WorldObject",
    "caption_for",
    "generate",
    "iter_generate",
    "paint_patterns",
    "prompts_for",
    "render",
    "sample_objects",
    "world_vocabulary",
]
