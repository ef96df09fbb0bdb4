"""``laminae plot RUN_DIR``: the loss and accuracy curves of a run, as a PNG.

It reads only ``metrics.csv``, so it works on a run still in progress.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from laminae.errors import TrainingError
from laminae.training.metrics import METRICS_FILE, read_log

HELP = "draw a run's loss and accuracy curves to a PNG (needs laminae[plot])"
EXAMPLE = "laminae plot runs/quickstart-20240101-120000"
PLOT_FILE = "curves.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding metrics.csv)")
    parser.add_argument("--out", metavar="PNG", help=f"where to write the image (default: RUN_DIR/{PLOT_FILE})")


def run(args: argparse.Namespace) -> int:
    from laminae.optional import require
    from laminae.reporting.figures import CURVES_SIZE, draw_curves

    figure_module = require("matplotlib.figure", "plot", "plotting")
    run_dir = Path(args.run_dir)
    rows = read_log(run_dir / METRICS_FILE)
    if not rows:
        raise TrainingError(f"{run_dir / METRICS_FILE}: no finished epoch yet, nothing to plot")
    out = Path(args.out) if args.out else run_dir / PLOT_FILE
    figure = figure_module.Figure(figsize=CURVES_SIZE, layout="constrained")
    draw_curves(figure, {run_dir.name: rows})
    figure.savefig(out, dpi=100)
    print(out)
    return 0
