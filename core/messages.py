"""User-facing wording that more than one front end shows (the CLI on stderr, the app's pages as warnings):
one formatter per message, so the words stay the same everywhere. Each returns plain text; the front end
adds its own frame (``warning: `` on the CLI, escaping and an icon on a page).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def stale_vectors_warning(model: str, stale: Mapping, remedy: str) -> str:
    """The warning for stored vectors of ``model`` made with other weights than the model has now.

    ``stale``: a :meth:`core.workspace.Workspace.stale_vectors` finding (``min_cosine``); ``remedy``: the
    front end's way to embed everything again (the CLI's command, the Data page's tick box), one sentence.
    E.g. ``Stale vectors: the stored vectors of 'demo' were made with other weights than the model has now
    (cosine 0.12 for an item encoded again), so results mix two spaces: text queries and new items land in
    another space. <remedy>``.
    """
    from .workspace import stale_reason

    return (f"Stale vectors: {stale_reason(model, stale)}, so results mix two spaces: text queries and new "
            f"items land in another space. {remedy}")


def unknown_words_warning(model: str, words: Sequence[str]) -> str:
    """The warning naming the ``words`` of a query that ``model`` never saw in training
    (:func:`core.vocabulary.unknown_words`, non-empty), e.g. ``Model demo never saw these words in training:
    crimson, disc. Results for them are guesses; words it knows give better ones.``"""
    return (f"Model {model} never saw these words in training: {', '.join(words)}. Results for them are "
            "guesses; words it knows give better ones.")


def skipped_words(existing: int, repeated: int) -> str:
    """How many items an import skipped and why, in words ('' when none):
    ``12 skipped (10 already in the workspace, 2 repeated in this upload)``."""
    parts = [f"{existing} already in the workspace"] if existing else []
    parts += [f"{repeated} repeated in this upload"] if repeated else []
    return f"{existing + repeated} skipped ({', '.join(parts)})" if parts else ""


def unsupported_hint(ws, report) -> str | None:
    """After an embedding run (``report``: a :class:`core.embedding.EmbedReport`) that found nothing its model
    can encode in the workspace ``ws`` (every item left is of another modality): one sentence naming the models
    that do have vectors there, or what kind of model would fit. None when the run encoded, found or failed on
    anything."""
    if report.embedded or report.cached or report.errors or not report.unsupported:
        return None
    counts = ws.items["modality"].value_counts()
    what = ", ".join(f"{n} {mod} item{'' if n == 1 else 's'}" for mod, n in counts.items())
    have = {m: n for m, n in ws.models_with_vectors().items() if m != report.model}
    head = f"{report.model} encodes none of the items of workspace {ws.name!r} ({what})"
    if have:
        return (f"{head}; models with vectors here: {', '.join(f'{m} ({n} items)' for m, n in have.items())}. "
                "Choose one of them to map and search this workspace.")
    return (f"{head}; texts embed with minilm, images and texts with demo or an open_clip model, and table rows "
            "use the vectors that came with their table (precomputed:<column>).")
