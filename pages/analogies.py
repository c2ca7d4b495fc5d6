"""Analogies — placeholder until its issue lands; shows a real summary of the open workspace."""
from pages import common as c

c.placeholder_page(
    "Analogies",
    (
        "Analogies (vector arithmetic such as image of a red car − 'red' + 'blue', with 3CosAdd / "
        "3CosMul) are not built yet — coming in a later issue."
    ),
)
