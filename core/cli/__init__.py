"""Command line: ``jointscope`` == ``python -m core``.

Every subcommand but ``app`` (the web server) accepts ``--json`` and then prints exactly one JSON document
on stdout; logs go to stderr. Exit 0 on success (per-item errors are reported, not fatal), 2 on a usage
error, 1 on failure with one line on stderr saying what failed and what to do.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from typing import Any

from ..errors import one_line
from .common import COMMANDS, CLIError, command

log = logging.getLogger("jointscope")

# the subcommands register themselves when their module is imported, in the order `jointscope --help` lists
for _module in ("data", "analysis", "serve"):
    importlib.import_module(f"{__name__}.{_module}")
from .serve import APP_FLAGS, app_command, app_script  # noqa: E402 - after the registration above

__all__ = ["APP_FLAGS", "COMMANDS", "CLIError", "app_command", "app_script", "build_parser", "command",
           "entry", "main"]


# ---- plumbing -----------------------------------------------------------------------------------
def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``jointscope`` parser. With ``argv``, only the subcommand it names gets its options: configuring
    one reads the parameter declarations of the modules it calls (``map``: core.projection, ``concepts``:
    core.concepts), which import scikit-learn, and a command such as ``info`` should not wait for that."""
    parser = argparse.ArgumentParser(prog="jointscope", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    for name, (configure, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if argv is not None and name != chosen:  # not the command asked for (or none was: --help, --version)
            continue
        if getattr(run, "json", True):  # every command but a server (app)
            p.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="log more to stderr")
        configure(p)
    return parser


def _version() -> str:
    from .. import __version__

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
        atexit._run_exitfuncs()  # noqa: SLF001 - the one way to run the exit handlers before os._exit
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
                stream.flush()
        os._exit(rc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
