"""What every subcommand shares: the command registry, the workspace openers, warnings on stderr and
progress lines."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("jointscope")

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Any], str]] = {}


class CLIError(Exception):
    """Failure reported as one line on stderr with exit code 1."""


def command(name: str, help: str):
    """Register a subcommand: decorate ``run(args) -> dict``; ``run.configure(parser)`` adds arguments."""

    def deco(fn):
        COMMANDS[name] = (getattr(fn, "configure", lambda p: None), fn, help)
        return fn

    return deco


def open_ws(path: str, *, create: bool = False):
    from ..workspace import Workspace

    try:
        return Workspace(path, create=create)
    except FileNotFoundError as e:
        raise CLIError(f"{e}; create it with `jointscope ingest {path} FILES...` or `jointscope demo {path}`") from e


def read_ws(args):
    """The workspace of a read-only command (map, search, analogy, quality, concepts), with a warning on
    stderr when the stored vectors of ``args.model`` were made with other weights than its local folder
    holds now (the same check as embedding; hub ids name fixed weights and are not checked)."""
    from ..encoders import local_model_folder
    from ..messages import stale_vectors_warning

    ws = open_ws(args.workspace)
    model = getattr(args, "model", None)
    if local_model_folder(model) is not None and model in ws.models():
        try:
            stale = ws.stale_vectors(model)
        except Exception:  # noqa: BLE001 - the command itself reports a model that does not load
            stale = None
        if stale is not None:
            remedy = f"Embed everything again: jointscope embed {ws.path} --model {model} --refresh"
            print(f"warning: {stale_vectors_warning(model, stale, remedy)}", file=sys.stderr)
    return ws


def warn_unknown_words(model: str, texts, *, terms: bool = False) -> list[str]:
    """The words of the user's texts that ``model`` never saw in training (core.vocabulary.unknown_words; ``[]``
    for models without a list of known words), with one warning line on stderr when there are any."""
    from ..messages import unknown_words_warning
    from ..vocabulary import unknown_words

    words = unknown_words(model, texts, terms=terms)
    if words:
        print(f"warning: {unknown_words_warning(model, words)}", file=sys.stderr)
    return words


# what the done/total of a stage counts, where it is not items (map and concepts stages)
STAGE_UNITS = {"patches": "images", "stability": "images", "fit": "EM iterations", "layout": "epochs",
               "placing": "items"}


def progress_printer(label: str, unit: str = "items", *, resumable: bool = False):
    """progress(done, total) printing one line a second on stderr; ``resumable``: the line says that Ctrl-C
    keeps what was committed and a rerun continues (embedding)."""
    state = {"t0": None, "last": 0.0}
    hint = "; Ctrl-C stops, a rerun continues" if resumable else ""

    def cb(done: int, total: int) -> None:
        now = time.perf_counter()
        if state["t0"] is None or done == 0:  # the rate counts from the first call, not from model loading
            state["t0"] = now
        if done < total and now - state["last"] < 1.0:
            return
        state["last"] = now
        el = now - state["t0"]
        if done and el >= 0.05:
            rate = done / el
            tail = f" ({rate:.1f} {unit}/s, ETA {(total - done) / rate:.0f}s{hint if done < total else ''})"
        else:
            tail = f" ({hint[2:]})" if hint and done < total else ""
        print(f"{label}: {done}/{total}{tail}", file=sys.stderr, flush=True)

    return cb
