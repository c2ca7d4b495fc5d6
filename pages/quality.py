"""Quality — placeholder until its issue lands; shows a real summary of the open workspace."""
from pages import common as c

c.placeholder_page(
    "Quality",
    (
        "Quality (effective rank / RankMe, alignment and uniformity, modality gap, hubness, near-"
        "duplicates and outliers) is not built yet — coming in a later issue."
    ),
)
