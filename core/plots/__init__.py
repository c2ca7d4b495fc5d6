"""Pure functions that turn arrays into plotly figures (no Streamlit here; pages render them).

Every function is deterministic: the same inputs give a byte-identical ``fig.to_json()`` (no random or
time-dependent values), so a Streamlit rerun with unchanged inputs resends nothing new.

User text (captions, file names, metadata values, column names) reaches plotly only through
:func:`plot_text`: plotly renders a small HTML subset (``<b>``, ``<a href>``, ``<br>``) in hover labels,
legends and titles, so ``& < >`` are escaped and the text shows literally.

The package by role: ``style`` (escaping, palette, colours of categories and values), ``maps`` (:func:`map_figure`
and its layers) and ``charts`` (bars, histograms and heatmaps of measures). Every name is importable from
``core.plots``.
"""
from __future__ import annotations

from .charts import (
    axes_figure,
    concept_shares_figure,
    gap_figure,
    histogram_figure,
    patch_heatmap_figure,
    recall_figure,
    spectrum_figure,
    theta_figure,
)
from .maps import (
    DENSITY_LINE,
    DENSITY_SCALE,
    LABEL_FONT,
    MAX_RINGED,
    NAMED_OUTLINE,
    NEIGHBOUR_COLOUR,
    PAIR_COLOUR,
    RING,
    UIREVISION,
    UNSELECTED_COLOUR,
    density_grid,
    density_layer,
    label_hover,
    label_layer,
    map_figure,
    marker_size,
    selection_rings,
)
from .style import (
    MAX_CATEGORIES,
    MAX_LEGEND,
    MISSING,
    NO_VALUE_COLOUR,
    OTHER_COLOUR,
    PALETTE,
    VALUE_STEPS,
    categories,
    category_codes,
    category_colours,
    colorscale_hex,
    colour_legend,
    encode_colours,
    hex_colour,
    interpolate_colours,
    is_categorical,
    is_colour_name,
    plot_text,
    safe_palette,
)

__all__ = [
    "DENSITY_LINE",
    "DENSITY_SCALE",
    "LABEL_FONT",
    "MAX_CATEGORIES",
    "MAX_LEGEND",
    "MAX_RINGED",
    "MISSING",
    "NAMED_OUTLINE",
    "NEIGHBOUR_COLOUR",
    "NO_VALUE_COLOUR",
    "OTHER_COLOUR",
    "PAIR_COLOUR",
    "PALETTE",
    "RING",
    "UIREVISION",
    "UNSELECTED_COLOUR",
    "VALUE_STEPS",
    "axes_figure",
    "categories",
    "category_codes",
    "category_colours",
    "colorscale_hex",
    "colour_legend",
    "concept_shares_figure",
    "density_grid",
    "density_layer",
    "encode_colours",
    "gap_figure",
    "hex_colour",
    "histogram_figure",
    "interpolate_colours",
    "is_categorical",
    "is_colour_name",
    "label_hover",
    "label_layer",
    "map_figure",
    "marker_size",
    "patch_heatmap_figure",
    "plot_text",
    "recall_figure",
    "safe_palette",
    "selection_rings",
    "spectrum_figure",
    "theta_figure",
]
