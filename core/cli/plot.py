"""``laminae plot RUN_DIR``: the loss and accuracy curves of a run, as a PNG.

It reads only ``metrics.csv``, so it works on a run still in progress.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from laminae.errors import TrainingError
from laminae.training.metrics import METRICS_FILE, EpochMetrics, read_log

HELP = "draw a run's loss and accuracy curves to a PNG (needs laminae[plot])"
EXAMPLE = "laminae plot runs/quickstart-20240101-120000"
PLOT_FILE = "curves.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding metrics.csv)")
    parser.add_argument("--out", metavar="PNG", help=f"where to write the image (default: RUN_DIR/{PLOT_FILE})")


def run(args: argparse.Namespace) -> int:
    from laminae.optional import require

    figure_module = require("matplotlib.figure", "plot", "plotting")
    run_dir = Path(args.run_dir)
    rows = read_log(run_dir / METRICS_FILE)
    if not rows:
        raise TrainingError(f"{run_dir / METRICS_FILE}: no finished epoch yet, nothing to plot")
    out = Path(args.out) if args.out else run_dir / PLOT_FILE
    figure = figure_module.Figure(figsize=(14, 4), layout="constrained")
    draw(figure, rows, run_dir.name)
    figure.savefig(out, dpi=100)
    print(out)
    return 0


def draw(figure, rows: list[EpochMetrics], title: str) -> None:
    """Loss on the left, accuracies in the middle, the learning rate on the right
    (when it was recorded); splits that were not measured are left out."""
    epochs = [m.epoch for m in rows]
    rates = [m.lr for m in rows]
    has_rate = any(rate is not None for rate in rates)
    loss_axes, accuracy_axes, *rate_axes = figure.subplots(1, 3 if has_rate else 2)
    loss_axes.plot(epochs, [m.train_loss for m in rows], marker="o", label="train")
    loss_axes.set(xlabel="epoch", ylabel="loss", title=f"{title}: training loss")
    series = {
        "train": [m.train_accuracy for m in rows],
        "validation": [m.val_accuracy for m in rows],
        "test": [m.test_accuracy for m in rows],
    }
    for label, values in series.items():
        if any(v is not None for v in values):
            accuracy_axes.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=label)
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for axes in rate_axes:
        axes.plot(epochs, [float("nan") if r is None else r for r in rates], marker="o", label="lr")
        axes.set(xlabel="epoch", ylabel="learning rate", title=f"{title}: learning rate")
    from matplotlib.ticker import MaxNLocator

    for axes in (loss_axes, accuracy_axes, *rate_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
