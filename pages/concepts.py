"""Concepts — placeholder until its issue lands; shows a real summary of the open workspace."""
from pages import common as c

c.placeholder_page(
    "Concepts",
    (
        "Concepts (PACE: sparse concept explanations of what the image model looks at, with "
        "faithfulness, stability and sparsity) are not built yet — coming in a later issue."
    ),
)
