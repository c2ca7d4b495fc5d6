"""Command line: ``jointscope`` == ``python -m core``.

Every subcommand but ``app`` (the web server) accepts ``--json`` and then prints exactly one JSON document
on stdout; logs go to stderr. Exit 0 on success (per-item errors are reported, not fatal), 2 on a usage
error, 1 on failure with one line on stderr saying what failed and what to do.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import one_line

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


def _open_ws(path: str, *, create: bool = False):
    from .workspace import Workspace

    try:
        return Workspace(path, create=create)
    except FileNotFoundError as e:
        raise CLIError(f"{e}; create it with `jointscope ingest {path} FILES...` or `jointscope demo {path}`") from e


def _read_ws(args):
    """The workspace of a read-only command (map, search, analogy, quality, concepts), with a warning on
    stderr when the stored vectors of ``args.model`` were made with other weights than its local folder
    holds now (the same check as embedding; hub ids name fixed weights and are not checked)."""
    from .encoders import local_model_folder
    from .workspace import stale_reason

    ws = _open_ws(args.workspace)
    model = getattr(args, "model", None)
    if local_model_folder(model) is not None and model in ws.models():
        try:
            stale = ws.stale_vectors(model)
        except Exception:  # noqa: BLE001 - the command itself reports a model that does not load
            stale = None
        if stale is not None:
            print(f"warning: workspace {ws.path}: {stale_reason(model, stale)}; results mix two spaces. Embed "
                  f"everything again: jointscope embed {ws.path} --model {model} --refresh", file=sys.stderr)
    return ws


def _unknown_words(model: str, texts, *, terms: bool = False) -> list[str]:
    """The words of the user's texts that ``model`` never saw in training (core.search.unknown_words; ``[]``
    for models without a list of known words), with one warning line on stderr when there are any."""
    from .search import unknown_words

    words = unknown_words(model, texts, terms=terms)
    if words:
        print(f"warning: the model '{model}' never saw these words in training: {', '.join(words)}; results for "
              "them are guesses", file=sys.stderr)
    return words


def _parse_roles(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    roles = {}
    for p in pairs:
        col, sep, role = p.rpartition("=")
        if not sep or not col:
            raise argparse.ArgumentTypeError(f"--role expects COLUMN=ROLE; got {p!r}")
        roles[col] = role
    return roles


# what the done/total of a stage counts, where it is not items (map and concepts stages)
STAGE_UNITS = {"patches": "images", "stability": "images", "fit": "EM iterations", "layout": "epochs",
               "placing": "items"}


def _progress_printer(label: str, unit: str = "items", *, resumable: bool = False):
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


# ---- models -------------------------------------------------------------------------------------
def _models(args):
    from .encoders import list_models

    infos = list_models(include_hub=not args.local)
    return [m.to_dict() for m in infos]


_models.configure = lambda p: p.add_argument("--local", action="store_true",
                                             help="list only bundled models, not every open_clip pair")
command("models", "list models and whether each is usable offline")(_models)


# ---- ingest -------------------------------------------------------------------------------------
def _ingest_configure(p):
    p.add_argument("workspace", help="workspace folder (created if missing)")
    p.add_argument("paths", nargs="*", help="files, folders, ZIPs, tables (csv, tsv, parquet, json, jsonl, xlsx), .txt")
    p.add_argument("--text", action="append", default=[], help="add a text item (repeatable)")
    p.add_argument("--role", action="append", metavar="COLUMN=ROLE",
                   help="override a table column's role: text, image, vector, numeric, metadata, ignore")


def _ingest(args):
    from .ingest import IngestError

    if not args.paths and not args.text:
        raise argparse.ArgumentTypeError("give at least one PATH or --text")
    ws = _open_ws(args.workspace, create=True)
    try:
        report = ws.ingest(args.paths, texts=args.text, roles=_parse_roles(args.role))
    except (IngestError, ValueError) as e:
        raise CLIError(str(e)) from e
    out = report.to_dict()
    out["workspace"] = str(ws.path)
    out["items"] = _item_count(ws)
    return out


def _item_count(ws) -> int:
    """How many items ``ws`` has, from the Parquet footer of its item list (not reading a million rows)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(ws.items_path).metadata.num_rows)
    except FileNotFoundError:
        return 0


_ingest.configure = _ingest_configure
command("ingest", "add files, folders, ZIPs and tables to a workspace")(_ingest)


# ---- embed --------------------------------------------------------------------------------------
def _embed_configure(p):
    p.add_argument("workspace", help="workspace folder (created for --manifest)")
    p.add_argument("--model", required=True, help="model id, see `jointscope models`")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data on the cluster at --ray-address / $RAY_ADDRESS, "
                        "or a local Ray instance (pip install '.[ray]')")
    p.add_argument("--manifest", metavar="PATH",
                   help="Parquet/CSV file, folder or glob of image paths/URIs and/or texts to add and embed "
                        "(images are referenced, not copied)")
    p.add_argument("--image-column",
                   help="manifest column of image paths/URIs (default: image, filepath, path, url...)")
    p.add_argument("--text-column", help="manifest column of texts (default: text, caption, title...)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, else one per CPU)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and torch threads) per Ray worker")
    p.add_argument("--dtype", choices=["float32", "float16", "int8"], default=None,
                   help="storage of a new vector store (default float32; float16 halves it, int8 quarters it)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--full-decode", action="store_true",
                   help="decode JPEGs at full size (default: at the smallest scale the model's input size allows, "
                        "several times faster on photos; vectors agree to cosine > 0.995)")
    p.add_argument("--refresh", action="store_true",
                   help="delete this model's vectors and what was derived from them (index, maps, concept caches) "
                        "and embed everything again, e.g. after its weights changed")


def _print_hint(ws, report) -> None:
    """A run that could encode none of the items exits 0 (nothing failed) but says which models fit."""
    hint = ws.unsupported_hint(report)
    if hint:
        print(f"jointscope embed: hint: {hint}", file=sys.stderr)


def _embed(args):
    from .encoders import ModelLoadError

    if args.workers is not None and args.workers < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1; got {args.workers}")
    if args.cpus_per_worker <= 0:
        raise argparse.ArgumentTypeError(f"--cpus-per-worker must be > 0; got {args.cpus_per_worker}")
    if args.engine == "local" and not args.manifest:
        ws = _open_ws(args.workspace)
        try:
            report = ws.embed(args.model, device=args.device, batch_size=args.batch_size, dtype=args.dtype,
                              refresh=args.refresh, reduced_decode=not args.full_decode,
                              progress=_progress_printer(f"embed {args.model}", resumable=True))
        except (ModelLoadError, ValueError) as e:
            raise CLIError(str(e)) from e
        _print_hint(ws, report)
        out = report.to_dict()
        out["engine"] = "local"
        return out
    from .distributed import RayNotInstalled, embed_manifest, embed_workspace

    ws = _open_ws(args.workspace, create=bool(args.manifest))
    if args.refresh:
        ws.forget_model(args.model)
    kw = {"engine": args.engine, "address": args.ray_address, "workers": args.workers,
          "cpus_per_worker": args.cpus_per_worker, "device": args.device, "batch_size": args.batch_size,
          "dtype": args.dtype, "reduced_decode": not args.full_decode,
          "progress": _progress_printer(f"embed {args.model} ({args.engine})", resumable=True)}
    try:
        if args.manifest:
            report = embed_manifest(ws, args.manifest, args.model, image_column=args.image_column,
                                    text_column=args.text_column, **kw)
        else:
            report = embed_workspace(ws, args.model, **kw)
            _print_hint(ws, report)
    except RayNotInstalled as e:
        raise CLIError(str(e)) from e
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    return report.to_dict()


_embed.configure = _embed_configure
command("embed", "encode items without vectors for a model (incremental)")(_embed)


# ---- compact ------------------------------------------------------------------------------------
def _compact_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", choices=["float32", "float16", "int8"], default=None,
                   help="convert the stored vectors (default: keep their dtype)")


def _compact(args):
    ws = _open_ws(args.workspace)
    store = ws.store(args.model)
    if store.dtype is None:
        raise CLIError(f"workspace {ws.name!r} has no vectors for {args.model!r}; embed it first")
    import numpy as np

    from .vectorstore import dtype_recall

    t0 = time.perf_counter()
    before = store.dtype
    recall = None
    if args.dtype and args.dtype != before and store.count() > 10:
        # what the conversion costs search, measured on (a seeded sample of) these vectors
        n = store.count()
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, 200_000), replace=False))
        recall = round(dtype_recall(store.take(rows), args.dtype, k=10), 4)
    with ws.writing():
        out = store.rewrite(dtype=args.dtype)
    res = {"model": args.model, "from_dtype": before, **out, "seconds": round(time.perf_counter() - t0, 3)}
    if recall is not None:
        res["recall_at_10_vs_" + before] = recall
    return res


_compact.configure = _compact_configure
command("compact", "rewrite a model's vectors as few shards, optionally as float16 or int8")(_compact)


# ---- index --------------------------------------------------------------------------------------
def _index(args):
    import json as _json

    from .index import index_dir, workspace_index

    ws = _open_ws(args.workspace)
    meta = index_dir(ws, args.model) / "meta.json"
    before = _json.loads(meta.read_text()).get("n", 0) if meta.is_file() else 0
    t0 = time.perf_counter()
    try:
        idx = workspace_index(ws, args.model)
    except ValueError as e:
        raise CLIError(str(e)) from e
    return {"model": args.model, "n": len(idx.ids_), "backend": idx.backend_, "ef": idx.ef_,
            "added": max(0, len(idx.ids_) - int(before)), "seconds": round(time.perf_counter() - t0, 3),
            "path": str(index_dir(ws, args.model))}


def _index_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True)


_index.configure = _index_configure
command("index", "build or extend (only new items) the saved neighbour index that search and maps use")(_index)


# ---- delete -------------------------------------------------------------------------------------
def _delete_configure(p):
    p.add_argument("workspace", help="workspace folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", action="extend", nargs="+", metavar="ID",
                      help="id of an item to delete (repeatable, or several ids after one --item)")
    what.add_argument("--workspace", dest="whole", action="store_true",
                      help="delete the whole workspace folder (refused for a folder that is not a workspace)")


def _delete(args):
    from .workspace import delete_workspace

    if args.whole:
        try:
            out = delete_workspace(os.path.abspath(args.workspace))
        except FileNotFoundError as e:
            raise CLIError(str(e)) from e
        return {"workspace": out["path"], "path": out["path"], "deleted": out["deleted"], "items": 0,
                "deleted_workspace": True}
    ws = _open_ws(args.workspace)
    try:
        report = ws.delete_items(args.item)
    except ValueError as e:
        raise CLIError(str(e)) from e
    return {"workspace": str(ws.path), **report.to_dict(), "deleted_workspace": False}


_delete.configure = _delete_configure
command("delete", "delete items (with their vectors, files and derived data) or a whole workspace")(_delete)


# ---- info ---------------------------------------------------------------------------------------
def _info(args):
    return _open_ws(args.workspace).info()


_info.configure = lambda p: p.add_argument("workspace")
command("info", "summarise a workspace")(_info)


# ---- export -------------------------------------------------------------------------------------
def _export_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["parquet", "tsv"], default="parquet",
                   help="parquet: items + vector column; tsv: vectors.tsv + metadata.tsv for TensorFlow Projector")


def _export(args):
    from .export import export

    ws = _open_ws(args.workspace)
    try:
        return export(ws, args.model, args.out, fmt=args.format)
    except ValueError as e:
        raise CLIError(str(e)) from e


_export.configure = _export_configure
command("export", "write vectors + metadata (Parquet, or TSV for TensorFlow Projector)")(_export)


# ---- map ----------------------------------------------------------------------------------------
def _map_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True)
    from .mapview import PARAMETERS as P

    p.add_argument("--method", choices=P["method"].choices, default=P["method"].default, help=P["method"].help)
    p.add_argument("--dim", type=int, choices=P["dim"].choices, default=P["dim"].default)
    p.add_argument("--gap-corrected", action="store_true",
                   help="mean-centre each modality before projecting (removes the modality gap)")
    p.add_argument("--modality", action="append", choices=["image", "text", "row"],
                   help="map only this modality (repeatable; default: all)")
    for flag, name, kind in (("--neighbors", "n_neighbors", int), ("--min-dist", "min_dist", float)):
        spec = P[name]
        p.add_argument(flag, type=kind, default=spec.default,
                       help=f"{spec.help} In [{spec.low}, {spec.high}]; default {spec.default}")
    p.add_argument("--seed", type=int, default=P["seed"].default)
    p.add_argument("--refit", action="store_true", help="ignore the cached map and fit again")
    p.add_argument("--html", metavar="FILE", help="also write the map as one standalone HTML file (opens offline)")
    p.add_argument("--color", metavar="NAME", help="with --html: colour by modality (default), cluster, trust "
                                                   "or a metadata column")
    spec = P["k"]
    p.add_argument("--k", type=int, default=spec.default,
                   help=f"with --color cluster: {spec.help} In [{spec.low}, {spec.high}]; default {spec.default}")
    p.add_argument("--labels", nargs="?", const="coarse", choices=["coarse", "fine"],
                   help="name the map's clusters (coarse: 2-12, fine: each split into up to 3; default coarse); "
                        "with --html the names are drawn too")
    p.add_argument("--vocab", action="extend", nargs="+", metavar="WORD", default=[],
                   help="with --labels: extra words to name clusters with (repeatable)")
    p.add_argument("--vocab-only", action="store_true", help="with --labels: name clusters with the --vocab words only")


def _check_html_args(args, ws) -> None:
    from pathlib import Path

    from .export import colour_choices

    if args.html is None:
        if args.color is not None:
            raise argparse.ArgumentTypeError("--color applies to --html only")
        return
    if Path(args.html).is_dir():
        raise argparse.ArgumentTypeError(f"--html {args.html}: is a folder; give a file name such as map.html")
    choices = colour_choices(ws)
    if args.color is not None and args.color not in choices:
        raise argparse.ArgumentTypeError(f"--color must be one of: {', '.join(choices)}; got {args.color!r}")


def _map(args):
    from .export import write_map_html
    from .projection import compute_map, map_to_json
    from .quality import modality_gap, pair_positions

    ws = _read_ws(args)
    _check_html_args(args, ws)
    if args.labels is None and (args.vocab or args.vocab_only):
        raise argparse.ArgumentTypeError("--vocab and --vocab-only apply to --labels only")
    if args.vocab_only and not args.vocab:
        raise argparse.ArgumentTypeError("--vocab-only needs the words to name with: --vocab WORD [WORD ...]")
    from .mapview import MapParams, build_view

    try:  # the one check of every map setting (bounds and choices: core.mapview.PARAMETERS)
        params = MapParams(method=args.method, dim=args.dim, modalities=args.modality, gap_corrected=args.gap_corrected,
                           n_neighbors=args.neighbors, min_dist=args.min_dist, seed=args.seed,
                           colour=args.color or "modality", k=args.k, names=args.labels or "off")
    except ValueError as e:
        flags = {"n_neighbors": "--neighbors", "min_dist": "--min-dist", "seed": "--seed", "k": "--k"}
        msg = str(e)
        for name, flag in flags.items():
            if msg.startswith(name + " "):
                msg = flag + msg[len(name):]
        raise argparse.ArgumentTypeError(msg) from e
    state = {"stage": None}
    printer = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            state["stage"] = stage
            printer[stage] = _progress_printer(f"map {stage}", STAGE_UNITS.get(stage, "steps"))
        printer[stage](done, total)

    try:
        res = compute_map(ws, args.model, **params.map_kwargs(), progress=progress, use_cache=not args.refit)
    except ValueError as e:
        raise CLIError(str(e)) from e
    out = map_to_json(res)
    X, _ = ws.vectors(args.model, ids=res.ids)
    out["modality_gap"] = modality_gap(X, res.modality, pair_positions(ws.items, res.ids))
    labels = None
    if args.labels is not None:
        from .labels import map_labels

        try:
            labels = map_labels(ws, args.model, res, level=args.labels, words=args.vocab, only_words=args.vocab_only,
                                use_cache=not args.refit)
        except ValueError as e:
            raise CLIError(str(e)) from e
        out["labels"] = labels
        out["unknown_words"] = _unknown_words(args.model, args.vocab)
    try:  # what the map shows (colour, named clusters), as the app and the HTML file draw it
        view = build_view(ws, args.model, params, res=res, labels=labels or ())
    except ValueError as e:
        raise CLIError(str(e)) from e
    out["view"] = view.to_dict()
    if args.html is not None:
        try:
            path = write_map_html(args.html, ws, args.model, res, view=view)
        except OSError as e:
            raise CLIError(f"cannot write {args.html}: {e.strerror or e}") from e
        out["html"] = str(path.resolve())
    return out


_map.configure = _map_configure
command("map", "project a model's vectors to a 2-D/3-D map (UMAP or PCA), cached in the workspace")(_map)


# ---- search / analogy ---------------------------------------------------------------------------
def _parse_filters(pairs: list[str] | None) -> dict[str, list[str]] | None:
    """``COLUMN=VALUE`` (repeatable; the same column twice means either value)."""
    if not pairs:
        return None
    out: dict[str, list[str]] = {}
    for p in pairs:
        col, sep, value = p.partition("=")
        if not sep or not col.strip():
            raise argparse.ArgumentTypeError(f"--filter expects COLUMN=VALUE; got {p!r}")
        out.setdefault(col.strip(), []).append(value.strip())
    return out


def _query_options(p, *, k_help: str = "number of results (default 10)") -> None:
    p.add_argument("--model", required=True, help="model id, see `jointscope models`")
    p.add_argument("--k", type=int, default=None, help=k_help)
    p.add_argument("--modality", action="append", choices=["image", "text", "row"],
                   help="return only this modality (repeatable; default: all)")
    p.add_argument("--filter", action="append", metavar="COLUMN=VALUE",
                   help="keep items whose metadata column equals VALUE (repeatable; same column = either)")


def _k_arg(k: int | None, default: int) -> int:
    if k is None:
        return default
    if k < 1:
        raise argparse.ArgumentTypeError(f"--k must be >= 1; got {k}")
    return k


def _search_configure(p):
    p.add_argument("workspace")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="query text")
    q.add_argument("--image", metavar="PATH", help="query image file")
    q.add_argument("--item", metavar="ID", help="query item id (more like this item; the item is excluded)")
    _query_options(p)


def _search(args):
    from .encoders import ModelLoadError
    from .search import search

    k = _k_arg(args.k, 10)
    filters = _parse_filters(args.filter)
    ws = _read_ws(args)
    term = (args.text if args.text is not None else f"image:{args.image}" if args.image is not None
            else f"item:{args.item}")
    try:
        hits = search(ws, args.model, term, k=k, modality=args.modality, filter=filters)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {"model": args.model, "query": term, "results": [h.to_dict() for h in hits],
            "unknown_words": _unknown_words(args.model, [term], terms=True)}


_search.configure = _search_configure
command("search", "nearest items of a text, an image or an item, across modalities")(_search)


def _analogy_configure(p):
    p.add_argument("workspace", nargs="?",
                   help="workspace folder (optional with --eval: without it the set is scored on a vocabulary "
                        "of its own texts)")
    p.add_argument("--plus", nargs="+", action="extend", metavar="TERM", default=[],
                   help="terms to add: a text, item:<id> or image:<path>")
    p.add_argument("--minus", nargs="+", action="extend", metavar="TERM", default=[], help="terms to subtract")
    p.add_argument("--method", choices=["3cosadd", "3cosmul"], default="3cosadd")
    p.add_argument("--eval", metavar="CSV", help="score an analogy set (columns a, b, c, d [, category, modality])")
    _query_options(p, k_help="number of results (default 10); with --eval: accuracy@k besides @1 (default 5)")


def _analogy(args):
    from .encoders import ModelLoadError
    from .search import analogy, evaluate_analogies

    k = _k_arg(args.k, 5 if args.eval else 10)
    filters = _parse_filters(args.filter)
    if args.eval:
        if args.plus or args.minus:
            raise argparse.ArgumentTypeError("give either --eval CSV or --plus/--minus terms, not both")
        if filters:
            raise argparse.ArgumentTypeError("--filter does not apply to --eval")
        try:
            if args.workspace:
                ev = evaluate_analogies(_open_ws(args.workspace), args.eval, model=args.model, k=k,
                                        method=args.method, modality=args.modality)
            else:
                ev = evaluate_analogies(args.model, args.eval, k=k, method=args.method)
        except (ModelLoadError, ValueError) as e:
            raise CLIError(str(e)) from e
        if not ev.n:
            first = ev.skipped[0][1] if ev.skipped else "the set has no rows"
            raise CLIError(f"no row of {args.eval!r} could be evaluated ({len(ev.skipped)} skipped; {first})")
        return ev.to_dict()
    if not args.workspace:
        raise argparse.ArgumentTypeError("give a WORKSPACE for --plus/--minus terms (or --eval CSV)")
    if not args.plus:
        raise argparse.ArgumentTypeError("give at least one --plus TERM")
    ws = _read_ws(args)
    try:
        hits = analogy(ws, args.model, args.plus, args.minus, method=args.method, k=k,
                       modality=args.modality, filter=filters)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {"model": args.model, "method": args.method, "plus": args.plus, "minus": args.minus,
            "results": [h.to_dict() for h in hits],
            "unknown_words": _unknown_words(args.model, args.plus + args.minus, terms=True)}


_analogy.configure = _analogy_configure
command("analogy", "vector arithmetic over terms (a text, item:<id>, image:<path>), or --eval an analogy set")(_analogy)


# ---- quality ------------------------------------------------------------------------------------
def _quality_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True, help="model id, see `jointscope models`")
    p.add_argument("--k", type=int, default=10, help="neighbours for hubness, outliers and pair scores (default 10)")
    p.add_argument("--sample", type=int, default=10_000,
                   help="at most this many items (RankMe, uniformity, separability) and pairs (retrieval)")
    p.add_argument("--compare", metavar="MODEL_B", help="also compare with another model on the items both have")
    p.add_argument("--compare-method", choices=["umap", "pca"], default="umap",
                   help="projection of the two maps aligned by Procrustes (default umap)")
    p.add_argument("--modality", choices=["image", "text", "row"], help="with --compare: compare only this modality")


def _quality(args):
    from .quality import compare_models, fit_verdict, quality_report

    if args.k < 1:
        raise argparse.ArgumentTypeError(f"--k must be >= 1; got {args.k}")
    if args.sample < 10:
        raise argparse.ArgumentTypeError(f"--sample must be >= 10; got {args.sample}")
    if args.modality and not args.compare:
        raise argparse.ArgumentTypeError("--modality applies to --compare only")
    ws = _read_ws(args)
    try:
        out = quality_report(ws, args.model, k=args.k, sample=args.sample)
        out["fit"] = fit_verdict(ws, args.model)
        if args.compare:
            out["compare"] = compare_models(ws, args.model, args.compare, modality=args.modality, k=args.k,
                                            method=args.compare_method).to_dict()
    except ValueError as e:
        raise CLIError(str(e)) from e
    return out


_quality.configure = _quality_configure
command("quality",
        "how good a model's space is: RankMe, alignment/uniformity, gap, hubness, retrieval, flags")(_quality)


# ---- demo ---------------------------------------------------------------------------------------
def _demo_configure(p):
    p.add_argument("workspace", help="folder of the demo workspace (created or completed)")
    p.add_argument("--n", type=int, default=2000, help="number of world images (each with its caption)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--model", default="demo", help="model to embed with ('' to skip embedding)")


def _demo(args):
    from .demo import DEMO_SEED, create_demo_workspace
    from .encoders import ModelLoadError

    if args.n < 1:
        raise argparse.ArgumentTypeError(f"--n must be >= 1; got {args.n}")
    cb = _progress_printer("demo")
    try:
        ws = create_demo_workspace(args.workspace, n=args.n, seed=DEMO_SEED if args.seed is None else args.seed,
                                   model=args.model or None, progress=lambda stage, d, t: cb(d, t))
    except ModelLoadError as e:
        raise CLIError(str(e)) from e
    info = ws.info()
    return {"path": str(ws.path), "items": info["items"], "by_modality": info["by_modality"],
            "models": info["models"]}


_demo.configure = _demo_configure
command("demo", "create the demo workspace (world images + captions, embedded with 'demo')")(_demo)


# ---- train --------------------------------------------------------------------------------------
def _train_configure(p):
    from .train import TrainConfig

    d = TrainConfig()
    p.add_argument("--out", required=True, help="output folder (an openclip-local model folder)")
    p.add_argument("--data", default=d.data, help="'world' (procedural generator) or a workspace folder with pairs")
    p.add_argument("--model-config", default=d.model_config, help="open_clip config JSON (model_cfg + preprocess_cfg)")
    for name in ("n_train", "steps", "batch_size", "seed", "warmup", "ckpt_every", "eval_every", "threads", "workers",
                 "pattern_steps", "pattern_warmup", "dense_steps", "dense_warmup"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "min_lr", "weight_decay", "p_two", "attr_loss", "orth_loss", "pattern_p", "pattern_lr",
                 "dense_loss", "dense_lr"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")


def _train(args):
    from .train import TrainConfig, train

    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})

    def prog(info):
        if info["step"] % 50 == 0 or "eval" in info or info["step"] == info["steps"]:
            msg = (f"train: step {info['step']}/{info['steps']} loss {info['loss']:.3f} "
                   f"{info['steps_per_s']:.2f} steps/s ETA {info['eta_s'] / 60:.1f} min")
            if "eval" in info:
                msg += " eval " + json.dumps(info["eval"])
            print(msg, file=sys.stderr, flush=True)

    try:
        return train(cfg, args.out, resume=not args.no_resume, progress=prog)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e


_train.configure = _train_configure
command("train", "train a small CLIP with open_clip (default recipe = the bundled demo model)")(_train)


# ---- concepts -----------------------------------------------------------------------------------
def _concepts_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True, help="an open_clip model with a ViT image tower (e.g. demo)")
    p.add_argument("--k", type=int, default=8, help="number of concepts (default 8)")
    pred = p.add_mutually_exclusive_group()
    pred.add_argument("--label", metavar="COLUMN", help="metadata column whose values are the predictions to explain")
    pred.add_argument("--prompts", nargs="+", metavar="P",
                      help="explain the model's zero-shot choice among these texts")
    p.add_argument("--template", action="append", metavar="T", dest="templates",
                   help="with --prompts: a prompt template with '{}' where the prompt goes (repeat it for an "
                        "ensemble, e.g. --template 'a photo of a {}.' --template 'a drawing of a {}.')")
    p.add_argument("--ids-from", metavar="FILE", help="explain only these image ids (one per line)")
    p.add_argument("--vocab", nargs="+", metavar="WORD", default=[],
                   help="extra words to name concepts with (added to the model's default vocabulary)")
    p.add_argument("--vocab-only", action="store_true",
                   help="name concepts with the --vocab words only, not the default vocabulary")
    p.add_argument("--block", type=int, default=None, help="ViT block of the patch tokens (default: the last)")
    p.add_argument("--space", choices=("joint", "tokens"), default=None,
                   help="fit on the last block's patch tokens projected into the joint space (default) or on the "
                        "block's residual tokens (default when --block names an earlier block)")
    p.add_argument("--covariance", choices=("isotropic", "tied", "full", "diag"), default="isotropic",
                   help="concept covariances: one shared variance for every direction and concept (default), one "
                        "shared full covariance, one full per concept, or diagonal per concept")
    p.add_argument("--n-init", type=int, default=4, help="EM starts; the best-scoring fit is kept (default 4)")
    p.add_argument("--alpha", type=float, default=0.1, help="Dirichlet prior of the concept proportions (< 1: sparse)")
    p.add_argument("--no-attention", action="store_true",
                   help="count every patch once instead of weighting it by the model's CLS attention (PACE)")
    p.add_argument("--attention-smoothing", type=float, default=1.0, metavar="SIGMA",
                   help="blur the attention over the patch grid by a Gaussian of SIGMA patches before it weights "
                        "the patches (default 1; 0: the raw attention, as in the paper)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="temper the patch likelihood (> 1: each image in fewer concepts, sparser θ; default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refit", action="store_true", help="ignore cached patches and results")


def _concepts(args):
    from .concepts import explain
    from .concepts.patches import check_smoothing
    from .encoders import ModelLoadError
    from .search import naming_vocabulary

    if args.k < 1:
        raise argparse.ArgumentTypeError(f"--k must be >= 1; got {args.k}")
    if args.alpha <= 0:
        raise argparse.ArgumentTypeError(f"--alpha must be > 0; got {args.alpha}")
    if args.n_init < 1:
        raise argparse.ArgumentTypeError(f"--n-init must be >= 1; got {args.n_init}")
    try:
        check_smoothing(args.attention_smoothing)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--attention-smoothing must be a finite number >= 0; "
                                         f"got {args.attention_smoothing}") from None
    if not args.temperature > 0 or args.temperature == float("inf"):
        raise argparse.ArgumentTypeError(f"--temperature must be a finite number > 0; got {args.temperature}")
    ids = None
    if args.ids_from:
        try:
            with open(args.ids_from, encoding="utf-8") as f:
                ids = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise CLIError(f"cannot read --ids-from {args.ids_from!r} ({e.strerror or e})") from e
        if not ids:
            raise CLIError(f"--ids-from {args.ids_from!r} lists no ids (one id per line)")
    ws = _read_ws(args)
    try:
        vocab = naming_vocabulary(args.model, args.vocab, only=args.vocab_only)
    except ValueError:
        raise CLIError("--vocab-only needs the words to name with: --vocab WORD [WORD ...]") from None
    state = {"stage": None}
    printer = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            state["stage"] = stage
            printer[stage] = _progress_printer(f"concepts {stage}", STAGE_UNITS.get(stage, "steps"))
        printer[stage](done, total)

    try:
        res = explain(ws, args.model, k=args.k, ids=ids, label=args.label, prompts=args.prompts,
                      templates=args.templates, vocabulary=vocab, block=args.block, space=args.space,
                      covariance=args.covariance, n_init=args.n_init, alpha=args.alpha,
                      use_attention=not args.no_attention, attention_smoothing=args.attention_smoothing,
                      temperature=args.temperature, random_state=args.seed, progress=progress,
                      use_cache=not args.refit)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {**res.to_dict(), "unknown_words": _unknown_words(
        args.model, [*(args.prompts or []), *(args.templates or []), *args.vocab])}


_concepts.configure = _concepts_configure
command("concepts", "concept explanations (PACE) of the images: named concepts, shares, metrics")(_concepts)


# ---- app ----------------------------------------------------------------------------------------
# The settings of .streamlit/config.toml that matter, as `streamlit run` flags: an installed package runs
# from any folder, where Streamlit would not find that file (tests/unit/test_package.py checks they agree).
# server.address, server.port and browser.serverAddress come from --host / --port.
APP_FLAGS = {
    "server.headless": "true",
    "server.maxUploadSize": "1024",
    "server.enableXsrfProtection": "true",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "minimal",
    "theme.base": "light",
}


def app_script():
    """The web app's app.py: core/_app/app.py in an installed package (pyproject.toml), else the checkout's."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for path in (here / "_app" / "app.py", here.parent / "app.py"):
        if path.is_file() and path.with_name("pages").is_dir():
            return path
    raise CLIError(f"the web app (app.py + pages/) is neither in {here / '_app'} nor beside {here}; "
                   "reinstall jointscope (pip install .) or run it from a checkout (make run)")


def app_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The `streamlit run` command line of ``jointscope app``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # where a browser on this computer connects
    flags = {**APP_FLAGS, "server.address": host, "server.port": str(port), "browser.serverAddress": shown}
    return [sys.executable, "-m", "streamlit", "run", str(app_script()),
            *(x for k, v in flags.items() for x in (f"--{k}", v))]


def _app_configure(p):
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this computer only; 0.0.0.0 exposes the app to the "
                        "network, see docs/security.md)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.epilog = ("Runs `streamlit run` on the packaged app.py, headless, without usage statistics, with the "
                "settings of the project's .streamlit/config.toml. Workspaces are found under $JOINTSCOPE_HOME "
                "(default ./workspaces). Stop it with Ctrl-C.")


def _app(args):
    import importlib.util

    if not 0 < args.port < 65536:
        raise argparse.ArgumentTypeError(f"--port must be 1..65535; got {args.port}")
    if importlib.util.find_spec("streamlit") is None:
        raise CLIError("streamlit is not installed; pip install 'streamlit>=1.40,<2'")
    cmd = app_command(args.host, args.port)
    log.info("running %s", " ".join(cmd))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)  # the server replaces this process: Ctrl-C and SIGTERM reach it directly
    import subprocess

    proc = subprocess.Popen(cmd)
    try:
        raise SystemExit(proc.wait())
    except KeyboardInterrupt:  # the server got the Ctrl-C too
        raise SystemExit(proc.wait()) from None


_app.configure = _app_configure
_app.json = False  # a server: no --json
command("app", "start the web app (Streamlit) on http://127.0.0.1:8501")(_app)


# ---- plumbing -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jointscope", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (configure, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if getattr(run, "json", True):  # every command but a server (app)
            p.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="log more to stderr")
        configure(p)
    return parser


def _version() -> str:
    from . import __version__

    return f"jointscope {__version__}"


def _human(obj: Any) -> str:
    if isinstance(obj, list):
        return "\n".join(_human(x) if not isinstance(x, dict) else
                         "  ".join(f"{k}={v}" for k, v in x.items() if k != "description") for x in obj)
    if isinstance(obj, dict):
        lines = []
        for k, v in obj.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                lines.append(f"{k}:")
                lines += ["  " + "  ".join(f"{a}={b}" for a, b in x.items()) for x in v]
            else:
                lines.append(f"{k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
        return "\n".join(lines)
    return str(obj)


def entry() -> None:
    """The ``jointscope`` / ``python -m core`` process: :func:`main`, then exit without CPython's native
    teardown. Arrow's (and other C++ libraries') thread pools can abort the process while they are
    destroyed at interpreter exit ("terminate called without an active exception", exit -6; apache/arrow
    #34314), turning a finished command into a failure after its JSON was written. Python's exit handlers
    still run (logging, Ray's shutdown); only the native finalisation is skipped."""
    import atexit

    rc = main()
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
                stream.flush()
        os._exit(rc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on usage errors, 0 on --help
        return int(e.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _, run, _ = COMMANDS[args.command]
    try:
        out = run(args)
    except argparse.ArgumentTypeError as e:
        print(f"jointscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except CLIError as e:
        print(f"jointscope {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"jointscope {args.command}: interrupted; finished work is kept, run it again to resume",
              file=sys.stderr)
        return 1
    except Exception as e:  # one line, not a traceback (that is logged, shown with -v)
        log.info("failure", exc_info=True)
        print(f"jointscope {args.command}: failed: {type(e).__name__}: {one_line(e, limit=None)} "
              "(rerun with -v for details)", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(out, default=str) + "\n")
    else:
        print(_human(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
