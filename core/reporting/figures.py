"""Figures of runs, drawn with matplotlib (the ``plot`` and ``report`` extras):
the learning curves of one run or several overlaid, as a PNG file
(``laminae plot``) or as SVG text to put inside a page (``laminae report``),
and images as PNG data URIs.

matplotlib is imported inside the functions that draw, so that importing
this module costs nothing where the extra is not installed.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np

from laminae.training.metrics import EpochMetrics

SPLIT_STYLES = {"train": "-", "validation": "--", "test": ":"}
"""How each split's curve is drawn; colours tell runs apart."""
CURVES_SIZE = (14, 4)
"""Inches: three panels side by side, readable at a laptop's width."""
SVG_SETTINGS = {"svg.hashsalt": "laminae", "svg.fonttype": "path"}
"""The same runs give the same SVG (its ids are hashes salted with this), and
text is drawn as paths, so that a page looks the same without the fonts."""


def draw_curves(figure, runs: Mapping[str, Sequence[EpochMetrics]]) -> None:
    """Loss on the left, accuracies in the middle, the learning rate on the right
    (when any run recorded it), every run of ``runs`` (name: its rows) in the
    same axes.  Splits that were not measured are left out.  One run's
    curves are coloured by split and its name goes in the titles; several
    runs are coloured by run, named in the legends, with a line style per split."""
    from matplotlib.ticker import MaxNLocator

    several = len(runs) > 1
    has_rate = any(m.lr is not None for rows in runs.values() for m in rows)
    loss_axes, accuracy_axes, *rate_axes = figure.subplots(1, 3 if has_rate else 2)
    for index, (name, rows) in enumerate(runs.items()):
        shown = _literal(name)
        epochs = [m.epoch for m in rows]
        losses = {"train": [m.train_loss for m in rows], "validation": [m.val_loss for m in rows]}
        accuracies = {
            "train": [m.train_accuracy for m in rows],
            "validation": [m.val_accuracy for m in rows],
            "test": [m.test_accuracy for m in rows],
        }
        for axes, series in ((loss_axes, losses), (accuracy_axes, accuracies)):
            for split, values in series.items():
                if any(v is not None for v in values):
                    label, colour = (f"{shown} ({split})", f"C{index}") if several else (split, None)
                    style = SPLIT_STYLES[split]
                    axes.plot(epochs, _gaps(values), marker="o", linestyle=style, color=colour, label=label)
        for axes in rate_axes:
            rates = _gaps([m.lr for m in rows])
            axes.plot(epochs, rates, marker="o", color=f"C{index}", label=shown if several else "lr")
    prefix = "" if several else f"{_literal(next(iter(runs)))}: "
    loss_axes.set(xlabel="epoch", ylabel="loss", title=f"{prefix}training loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title=f"{prefix}accuracy")
    for axes in rate_axes:
        axes.set(xlabel="epoch", ylabel="learning rate", title=f"{prefix}learning rate")
    for axes in (loss_axes, accuracy_axes, *rate_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")


def _gaps(values: Sequence[float | None]) -> list[float]:
    """None (not measured that epoch) as NaN, which matplotlib leaves out."""
    return [float("nan") if v is None else v for v in values]


def _literal(text: str) -> str:
    """``text`` as matplotlib shows it verbatim: a ``$`` would start mathtext
    (and an unpaired one fail the drawing), a run's name may hold any."""
    return text.replace("$", r"\$")


def curves_svg(runs: Mapping[str, Sequence[EpochMetrics]]) -> str:
    """:func:`draw_curves` as an ``<svg>`` element, to go inside an HTML page."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(SVG_SETTINGS):
        figure = Figure(figsize=CURVES_SIZE, layout="constrained")
        draw_curves(figure, runs)
        text = io.StringIO()
        figure.savefig(text, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = text.getvalue()
    return svg[svg.index("<svg"):]  # without the XML declaration and DOCTYPE, which HTML has no use for


def png_data_uri(image: np.ndarray) -> str:
    """One image (C x H x W, values in [0, 1]) as a ``data:image/png;base64,`` URI:
    grey for one channel, colour for three (other counts: the first channel)."""
    from matplotlib.image import imsave

    pixels = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
    png = io.BytesIO()
    imsave(png, np.clip(pixels, 0, 1), cmap="gray", vmin=0, vmax=1, format="png")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")
