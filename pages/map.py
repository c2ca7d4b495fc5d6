"""Map — placeholder until its issue lands; shows a real summary of the open workspace."""
from pages import common as c

c.placeholder_page(
    "Map",
    (
        "The Map (UMAP/PCA projection of the chosen model's vectors with thumbnails, colouring by "
        "metadata, lasso selection and a modality-gap view) is not built yet — coming in issue #4."
    ),
)
