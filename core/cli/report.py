"""``laminae report RUN [RUN ...]``: one HTML page of training runs, readable offline.

For each run: its layer tree, hyperparameters, learning curves (several
runs in the same axes), and its checkpoint scored on its data set's test
split: the confusion matrix, each class's accuracy, and the test images it
gets most confidently wrong.  A run without a checkpoint is still shown,
with a warning line saying what is left out; a folder that is no run, or a
broken file, is one line and exit status 2.  The last line printed is the
page's path.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from laminae.cli import plugin_options, registry_from, warn
from laminae.cli.train import data_dir_option
from laminae.errors import SpecError

HELP = "write one self-contained HTML page of runs: curves, layers, confusion matrix, mistakes (needs laminae[report])"
EXAMPLE = "laminae report runs/lenet runs/simple_cnn --data-dir ../shared/data --out report.html"
REPORT_FILE = "report.html"
MISTAKES = 24
"""laminae.reporting.scoring.MISTAKES, written again so that building the
parser (every command does) does not import the model floor."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+", help="a run directory (what laminae train --out writes)")
    parser.add_argument(
        "--out", metavar="FILE", default=REPORT_FILE,
        help=f"where to write the page (default: {REPORT_FILE} in the current folder)",
    )
    parser.add_argument(
        "--mistakes", metavar="N", type=int, default=MISTAKES,
        help=f"how many wrong test images to show per run (default: {MISTAKES})",
    )
    data_dir_option(parser)
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.optional import require
    from laminae.reporting import read_run, render_page, run_names, write_page

    for module in ("matplotlib.figure", "jinja2"):
        require(module, "report", "the report")
    if args.mistakes < 0:
        raise SpecError(f"--mistakes must be 0 or more, got {args.mistakes}")
    registry = registry_from(args)
    paths = [Path(run) for run in args.runs]
    runs = [
        read_run(path, name, registry=registry, data_dir=args.data_dir, mistakes=args.mistakes)
        for path, name in zip(paths, run_names(paths))
    ]
    for report in runs:
        for line in report.left_out:
            warn(args, f"left out: {line}")
    print(write_page(Path(args.out), render_page(runs)))
    return 0
