"""The ``laminae`` command: one module per subcommand, one error policy for all.

Each subcommand module defines ``HELP`` (one line), ``EXAMPLE`` (shown by
``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.  A
:class:`laminae.LaminaeError` anywhere becomes one line on stderr and exit
status 2; a reader that stops early (``laminae summary lenet | head``) ends
the command quietly with status 141; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from laminae import __version__
from laminae.errors import LaminaeError

SUBCOMMANDS = ["check", "summary", "models", "layers", "plugins", "train", "eval", "predict", "export", "plot", "report", "tune"]

USER_ERROR = 2
READER_GONE = 128 + signal.SIGPIPE
"""The status a shell reports for a tool that SIGPIPE killed (``yes | head``), as
130 is Ctrl-C's: ``set -o pipefail`` scripts see what they see from other tools."""
TRACEBACK_ENV = "LAMINAE_TRACEBACK"


def plugin_options(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand that loads plugins shares."""
    parser.add_argument("--plugins-dir", metavar="DIR", help="also load every *.py plugin file in DIR")
    parser.add_argument("--block", metavar="NAME", action="append", default=[], help="do not load the plugin NAME (repeatable)")


def model_arguments(parser: argparse.ArgumentParser, *, name_help: str = "the model (not needed when FILE holds one)") -> None:
    """FILE [NAME], as every command that builds a model of a file takes them."""
    parser.add_argument("file", metavar="FILE", help="a TOML file of models, or a built-in model's name (see laminae models)")
    parser.add_argument("name", metavar="NAME", nargs="?", help=name_help)


def model_source(args: argparse.Namespace) -> None:
    """Read ``args.file`` as a built-in model's name when it is one (``laminae train lenet``)."""
    from laminae.network.catalogue import model_file

    args.file, args.name = model_file(args.file, args.name)


def registry_from(args: argparse.Namespace, *, builds_models: bool = True):
    """The registry the options ask for; the one place the CLI makes one.

    A command that builds or loads models warns, a line each, about the
    plugins that failed to load: a model that does not name their types
    would otherwise never show that they are missing.  The registry is kept
    on ``args`` so that :func:`main` can warn about refused names it served.
    """
    from laminae.registry import make_registry

    registry = make_registry(plugins_dir=args.plugins_dir, block=args.block)
    if builds_models:
        for info in registry.plugins:
            if info.status == "failed":
                warn(args, f"plugin {info.name!r} failed to load: {info.reason} (see laminae plugins)")
    args.registry = registry
    return registry


def warn(args: argparse.Namespace, message: str) -> None:
    print(f"laminae {args.command}: warning: {message}", file=sys.stderr)


def _warn_refused_names(args: argparse.Namespace) -> None:
    registry = getattr(args, "registry", None)
    for notice in registry.notices if registry is not None else ():
        warn(args, notice)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (usage is one ``--help`` away), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="laminae", description="Declare, train and inspect numpy neural networks.")
    parser.add_argument("--version", action="version", version=f"laminae {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"with an error, print its full traceback too, for plugin authors (or set {TRACEBACK_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"laminae.cli.{name}")
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    try:
        try:
            return _run_command(argv)
        finally:  # a reader gone shows here, not as "Exception ignored" at exit
            sys.stdout.flush()
            sys.stderr.flush()
    except BrokenPipeError:
        _silence_output()
        return READER_GONE


def _silence_output() -> None:
    """Point stdout and stderr at /dev/null, so that nothing written after the
    reader left (the interpreter's last flush included) fails again: Python's
    recipe (docs.python.org/3/library/signal.html, "Note on SIGPIPE").  Both,
    since progress and errors go to stderr, which a pipe may carry too
    (``laminae train lenet 2>&1 | head``)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        os.dup2(devnull, stream.fileno())


def _run_command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.run(args) or 0)
    except LaminaeError as err:
        _warn_refused_names(args)
        if args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exception(err)
        print(f"laminae {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"laminae {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # a size no check foresaw: still one line, never a traceback
        print(f"laminae {args.command}: error: out of memory", file=sys.stderr)
        return USER_ERROR
    _warn_refused_names(args)
    return code
