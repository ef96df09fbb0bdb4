"""``laminae tune FILE NAME``: search a model's hyperparameters as its tune table says
(``laminae tune lenet`` for a built-in model that has one).

The study directory (``--out``, default ``runs/tune-NAME``) holds the
journal file the study lives in (unless ``--storage URL`` names another
storage), one run directory per trial under ``trials/``, ``best.toml``
and, with ``laminae[plot]``, two plots.  Running the same command again
resumes the study; ``--list`` prints its trials, best first.  Ctrl-C stops
every worker after its current batch, exits 130, and keeps every finished
trial for the next run.
"""
from __future__ import annotations

import argparse
import time

from laminae.cli import model_arguments, model_source, plugin_options, registry_from
from laminae.cli.train import data_dir_option, log_option

HELP = "search a model's hyperparameters with Optuna (needs laminae[tune])"
EXAMPLE = "laminae tune models.toml lenet --data-dir ../shared/data --workers 2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser, name_help="the model to tune: it needs a [models.NAME.tune] table")
    parser.add_argument("--trials", type=int, metavar="N", help="run the study up to N trials (default: the tune table's)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="run N local worker processes (default 1)")
    parser.add_argument("--storage", metavar="URL", help="an Optuna storage URL shared by several machines (postgresql+psycopg://...)")
    parser.add_argument("--out", metavar="DIR", help="the study directory (default: runs/tune-NAME)")
    data_dir_option(parser)
    parser.add_argument("--list", action="store_true", help="print the study's trials, best first, and run none")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    log_option(parser, "trial")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.tuning import trials_table, tune

    registry = registry_from(args)
    model_source(args)
    if args.list:
        print(trials_table(args.file, args.name, out=args.out, storage=args.storage, registry=registry))
        return 0
    started = time.perf_counter()
    result = tune(
        args.file,
        args.name,
        out=args.out,
        trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        data_dir=args.data_dir,
        registry=registry,
        show=lambda line: print(line, flush=True),
        bar=False if args.quiet else None,
        log=args.log,
    )
    print(f"took {time.perf_counter() - started:.0f} s")
    return 130 if result.interrupted else 0
