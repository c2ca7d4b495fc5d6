"""The subcommands that build and manage a workspace: models, ingest, embed, compact, index, delete, info,
export, demo and train."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import CLIError, command, open_ws, progress_printer


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


# ---- models -------------------------------------------------------------------------------------
def _models(args):
    from ..encoders import list_models

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
    from ..ingest import IngestError

    if not args.paths and not args.text:
        raise argparse.ArgumentTypeError("give at least one PATH or --text")
    ws = open_ws(args.workspace, create=True)
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
    from ..messages import unsupported_hint

    hint = unsupported_hint(ws, report)
    if hint:
        print(f"jointscope embed: hint: {hint}", file=sys.stderr)


def _embed(args):
    from ..encoders import ModelLoadError

    if args.workers is not None and args.workers < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1; got {args.workers}")
    if args.cpus_per_worker <= 0:
        raise argparse.ArgumentTypeError(f"--cpus-per-worker must be > 0; got {args.cpus_per_worker}")
    if args.engine == "local" and not args.manifest:
        ws = open_ws(args.workspace)
        try:
            report = ws.embed(args.model, device=args.device, batch_size=args.batch_size, dtype=args.dtype,
                              refresh=args.refresh, reduced_decode=not args.full_decode,
                              progress=progress_printer(f"embed {args.model}", resumable=True))
        except (ModelLoadError, ValueError) as e:
            raise CLIError(str(e)) from e
        _print_hint(ws, report)
        out = report.to_dict()
        out["engine"] = "local"
        return out
    from ..distributed import RayNotInstalled, embed_manifest, embed_workspace

    ws = open_ws(args.workspace, create=bool(args.manifest))
    if args.refresh:
        ws.forget_model(args.model)
    kw = {"engine": args.engine, "address": args.ray_address, "workers": args.workers,
          "cpus_per_worker": args.cpus_per_worker, "device": args.device, "batch_size": args.batch_size,
          "dtype": args.dtype, "reduced_decode": not args.full_decode,
          "progress": progress_printer(f"embed {args.model} ({args.engine})", resumable=True)}
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
    ws = open_ws(args.workspace)
    store = ws.store(args.model)
    if store.dtype is None:
        raise CLIError(f"workspace {ws.name!r} has no vectors for {args.model!r}; embed it first")
    import numpy as np

    from ..vectorstore import dtype_recall

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

    from ..index import index_dir, workspace_index

    ws = open_ws(args.workspace)
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
    from ..workspace import delete_workspace

    if args.whole:
        try:
            out = delete_workspace(os.path.abspath(args.workspace))
        except FileNotFoundError as e:
            raise CLIError(str(e)) from e
        return {"workspace": out["path"], "path": out["path"], "deleted": out["deleted"], "items": 0,
                "deleted_workspace": True}
    ws = open_ws(args.workspace)
    try:
        report = ws.delete_items(args.item)
    except ValueError as e:
        raise CLIError(str(e)) from e
    return {"workspace": str(ws.path), **report.to_dict(), "deleted_workspace": False}


_delete.configure = _delete_configure
command("delete", "delete items (with their vectors, files and derived data) or a whole workspace")(_delete)


# ---- info ---------------------------------------------------------------------------------------
def _info(args):
    return open_ws(args.workspace).info()


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
    from ..export import export

    ws = open_ws(args.workspace)
    try:
        return export(ws, args.model, args.out, fmt=args.format)
    except ValueError as e:
        raise CLIError(str(e)) from e


_export.configure = _export_configure
command("export", "write vectors + metadata (Parquet, or TSV for TensorFlow Projector)")(_export)


# ---- demo ---------------------------------------------------------------------------------------
def _demo_configure(p):
    p.add_argument("workspace", help="folder of the demo workspace (created or completed)")
    p.add_argument("--n", type=int, default=2000, help="number of world images (each with its caption)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--model", default="demo", help="model to embed with ('' to skip embedding)")


def _demo(args):
    from ..demo import DEMO_SEED, create_demo_workspace
    from ..encoders import ModelLoadError

    if args.n < 1:
        raise argparse.ArgumentTypeError(f"--n must be >= 1; got {args.n}")
    cb = progress_printer("demo")
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
    from ..train import TrainConfig

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
    from ..train import TrainConfig, train

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
