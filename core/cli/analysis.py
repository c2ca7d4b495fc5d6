"""The subcommands that read a workspace's space: map, search, analogy, quality and concepts."""
from __future__ import annotations

import argparse

from .common import STAGE_UNITS, CLIError, command, open_ws, progress_printer, read_ws, warn_unknown_words


# ---- map ----------------------------------------------------------------------------------------
def _map_configure(p):
    p.add_argument("workspace")
    p.add_argument("--model", required=True)
    from ..mapview import PARAMETERS as P

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

    from ..export import colour_choices

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
    from ..export import write_map_html
    from ..projection import compute_map, map_to_json
    from ..quality import workspace_modality_gap

    ws = read_ws(args)
    _check_html_args(args, ws)
    if args.labels is None and (args.vocab or args.vocab_only):
        raise argparse.ArgumentTypeError("--vocab and --vocab-only apply to --labels only")
    if args.vocab_only and not args.vocab:
        raise argparse.ArgumentTypeError("--vocab-only needs the words to name with: --vocab WORD [WORD ...]")
    from ..mapview import MapParams, build_view

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
            printer[stage] = progress_printer(f"map {stage}", STAGE_UNITS.get(stage, "steps"))
        printer[stage](done, total)

    try:
        res = compute_map(ws, args.model, **params.map_kwargs(), progress=progress, use_cache=not args.refit)
    except ValueError as e:
        raise CLIError(str(e)) from e
    out = map_to_json(res)
    out["modality_gap"] = workspace_modality_gap(ws, args.model, ids=res.ids)  # on a sample above GAP_SAMPLE items
    labels = None
    if args.labels is not None:
        from ..labels import map_labels

        try:
            labels = map_labels(ws, args.model, res, level=args.labels, words=args.vocab, only_words=args.vocab_only,
                                use_cache=not args.refit)
        except ValueError as e:
            raise CLIError(str(e)) from e
        out["labels"] = labels
        out["unknown_words"] = warn_unknown_words(args.model, args.vocab)
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
    """``--k`` of search and analogy (``default`` when not given), checked against core.terms.QUERY_CONSTRAINTS."""
    from ..params import describe_value, is_valid
    from ..terms import QUERY_CONSTRAINTS

    if k is None:
        return default
    if not is_valid(k, QUERY_CONSTRAINTS, "k"):
        raise argparse.ArgumentTypeError(f"--k must be {describe_value(QUERY_CONSTRAINTS, 'k')}; got {k}")
    return k


def _search_configure(p):
    p.add_argument("workspace")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="query text")
    q.add_argument("--image", metavar="PATH", help="query image file")
    q.add_argument("--item", metavar="ID", help="query item id (more like this item; the item is excluded)")
    _query_options(p)


def _search(args):
    from ..encoders import ModelLoadError
    from ..search import search

    k = _k_arg(args.k, 10)
    filters = _parse_filters(args.filter)
    ws = read_ws(args)
    term = (args.text if args.text is not None else f"image:{args.image}" if args.image is not None
            else f"item:{args.item}")
    try:
        hits = search(ws, args.model, term, k=k, modality=args.modality, filter=filters)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {"model": args.model, "query": term, "results": [h.to_dict() for h in hits],
            "unknown_words": warn_unknown_words(args.model, [term], terms=True)}


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
    from ..analogies import analogy, evaluate_analogies
    from ..encoders import ModelLoadError

    k = _k_arg(args.k, 5 if args.eval else 10)
    filters = _parse_filters(args.filter)
    if args.eval:
        if args.plus or args.minus:
            raise argparse.ArgumentTypeError("give either --eval CSV or --plus/--minus terms, not both")
        if filters:
            raise argparse.ArgumentTypeError("--filter does not apply to --eval")
        try:
            if args.workspace:
                ev = evaluate_analogies(open_ws(args.workspace), args.eval, model=args.model, k=k,
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
    ws = read_ws(args)
    try:
        hits = analogy(ws, args.model, args.plus, args.minus, method=args.method, k=k,
                       modality=args.modality, filter=filters)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {"model": args.model, "method": args.method, "plus": args.plus, "minus": args.minus,
            "results": [h.to_dict() for h in hits],
            "unknown_words": warn_unknown_words(args.model, args.plus + args.minus, terms=True)}


_analogy.configure = _analogy_configure
command("analogy", "vector arithmetic over terms (a text, item:<id>, image:<path>), or --eval an analogy set")(_analogy)


# ---- quality ------------------------------------------------------------------------------------
def _quality_configure(p):
    from ..params import describe
    from ..quality import QUALITY_CONSTRAINTS

    p.add_argument("workspace")
    p.add_argument("--model", required=True, help="model id, see `jointscope models`")
    p.add_argument("--k", type=int, default=10, help="neighbours for hubness, outliers and pair scores; "
                   + describe(QUALITY_CONSTRAINTS, "k", default=10))
    p.add_argument("--sample", type=int, default=10_000,
                   help="at most this many items (RankMe, uniformity, separability) and pairs (retrieval); "
                   + describe(QUALITY_CONSTRAINTS, "sample", default=10_000))
    p.add_argument("--compare", metavar="MODEL_B", help="also compare with another model on the items both have")
    p.add_argument("--compare-method", choices=["umap", "pca"], default="umap",
                   help="projection of the two maps aligned by Procrustes (default umap)")
    p.add_argument("--modality", choices=["image", "text", "row"], help="with --compare: compare only this modality")


def _quality(args):
    from ..params import describe_value, is_valid
    from ..quality import QUALITY_CONSTRAINTS, compare_models, fit_verdict, quality_report

    for flag, name in (("--k", "k"), ("--sample", "sample")):
        if not is_valid(getattr(args, name), QUALITY_CONSTRAINTS, name):
            raise argparse.ArgumentTypeError(
                f"{flag} must be {describe_value(QUALITY_CONSTRAINTS, name)}; got {getattr(args, name)}")
    if args.modality and not args.compare:
        raise argparse.ArgumentTypeError("--modality applies to --compare only")
    ws = read_ws(args)
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


# ---- concepts -----------------------------------------------------------------------------------
# the concepts options that set a PACE parameter (core.concepts.PACE.parameter_constraints) or one of explain's
# own (core.concepts.explain.EXPLAIN_CONSTRAINTS): flag -> parameter
PACE_FLAGS = {"--k": "n_concepts", "--covariance": "covariance", "--n-init": "n_init", "--alpha": "alpha",
              "--temperature": "temperature", "--seed": "random_state"}
EXPLAIN_FLAGS = {"--block": "block", "--space": "space", "--attention-smoothing": "attention_smoothing"}


def check_options(args: argparse.Namespace, flags: dict[str, str], constraints: dict[str, list]) -> None:
    """Each option of ``flags`` (flag -> parameter name) against the parameter's declared ``constraints``
    (:mod:`core.params`); a usage error (exit 2) naming the flag, the allowed values and the value."""
    from ..params import describe_value, is_valid

    for flag, name in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if not is_valid(value, constraints, name):
            raise argparse.ArgumentTypeError(f"{flag} must be {describe_value(constraints, name, scalar=True)}; "
                                             f"got {value!r}")


def option_help(text: str, constraints: dict[str, list], name: str, default=None) -> str:
    """``text`` plus what the parameter ``name`` may be (from its declared ``constraints``) and its default."""
    from ..params import describe

    return f"{text} ({describe(constraints, name, default=default)})"


def _concepts_configure(p):
    from ..concepts.explain import EXPLAIN_CONSTRAINTS as E
    from ..concepts.explain import EXPLAIN_DEFAULTS
    from ..concepts.pace import PACE
    from ..params import options

    C = PACE.parameter_constraints
    d = {**PACE().get_params(), **EXPLAIN_DEFAULTS}  # the PACE model explain fits by default
    p.add_argument("workspace")
    p.add_argument("--model", required=True, help="an open_clip model with a ViT image tower (e.g. demo)")
    p.add_argument("--k", type=int, default=d["n_concepts"],
                   help=option_help("number of concepts", C, "n_concepts", d["n_concepts"]))
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
    p.add_argument("--space", choices=options(E, "space"), default=None,
                   help="fit on the last block's patch tokens projected into the joint space (default) or on the "
                        "block's residual tokens (default when --block names an earlier block)")
    p.add_argument("--covariance", choices=options(C, "covariance"), default=d["covariance"],
                   help="concept covariances: isotropic, one shared variance for every direction and concept; tied, "
                        "one shared full covariance; full, one per concept; diag, diagonal per concept "
                        f"(default {d['covariance']})")
    p.add_argument("--n-init", type=int, default=d["n_init"],
                   help=option_help("EM starts; the best-scoring fit is kept", C, "n_init", d["n_init"]))
    p.add_argument("--alpha", type=float, default=d["alpha"],
                   help=option_help("Dirichlet prior of the concept proportions, sparse below 1", C, "alpha",
                                    d["alpha"]))
    p.add_argument("--no-attention", action="store_true",
                   help="count every patch once instead of weighting it by the model's CLS attention (PACE)")
    p.add_argument("--attention-smoothing", type=float, default=1.0, metavar="SIGMA",
                   help=option_help("blur the attention over the patch grid by a Gaussian of SIGMA patches before it "
                                    "weights the patches; 0: the raw attention, as in the paper", E,
                                    "attention_smoothing", 1.0))
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help=option_help("temper the patch likelihood: above 1 each image gathers in fewer concepts", C,
                                    "temperature", d["temperature"]))
    p.add_argument("--seed", type=int, default=d["random_state"], help=option_help("random seed", C, "random_state"))
    p.add_argument("--refit", action="store_true", help="ignore cached patches and results")


def _concepts(args):
    from ..concepts import PACE, default_estimator, explain
    from ..concepts.explain import EXPLAIN_CONSTRAINTS
    from ..encoders import ModelLoadError
    from ..vocabulary import naming_vocabulary

    check_options(args, PACE_FLAGS, PACE.parameter_constraints)  # the one check: the declared constraints
    check_options(args, EXPLAIN_FLAGS, EXPLAIN_CONSTRAINTS)
    chosen = {name: getattr(args, flag[2:].replace("-", "_")) for flag, name in PACE_FLAGS.items()}
    estimator = default_estimator(use_attention=not args.no_attention, **chosen)
    ids = None
    if args.ids_from:
        try:
            with open(args.ids_from, encoding="utf-8") as f:
                ids = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise CLIError(f"cannot read --ids-from {args.ids_from!r} ({e.strerror or e})") from e
        if not ids:
            raise CLIError(f"--ids-from {args.ids_from!r} lists no ids (one id per line)")
    ws = read_ws(args)
    try:
        vocab = naming_vocabulary(args.model, args.vocab, only=args.vocab_only)
    except ValueError:
        raise CLIError("--vocab-only needs the words to name with: --vocab WORD [WORD ...]") from None
    state = {"stage": None}
    printer = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            state["stage"] = stage
            printer[stage] = progress_printer(f"concepts {stage}", STAGE_UNITS.get(stage, "steps"))
        printer[stage](done, total)

    try:
        res = explain(ws, args.model, estimator=estimator, ids=ids, label=args.label, prompts=args.prompts,
                      templates=args.templates, vocabulary=vocab, block=args.block, space=args.space,
                      attention_smoothing=args.attention_smoothing, progress=progress, use_cache=not args.refit)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from e
    return {**res.to_dict(), "unknown_words": warn_unknown_words(
        args.model, [*(args.prompts or []), *(args.templates or []), *args.vocab])}


_concepts.configure = _concepts_configure
command("concepts", "concept explanations (PACE) of the images: named concepts, shares, metrics")(_concepts)
