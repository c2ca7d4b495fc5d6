"""Search — placeholder until its issue lands; shows a real summary of the open workspace."""
from pages import common as c

c.placeholder_page(
    "Search",
    (
        "Search (cross-modal nearest neighbours: query by text, by an uploaded image or by an item, "
        "filtered by modality) is not built yet — coming in a later issue."
    ),
)
