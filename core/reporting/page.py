"""The report as one HTML page that needs nothing else: its CSS, figures and
images are inside it, and its Content-Security-Policy lets it load nothing
from anywhere and run no script.

The page is the Jinja2 template ``report.html.j2`` beside this module, with
autoescaping on: every name in it (of a run, a model, a layer, a class) may
be anything a user typed, and is shown as text, never read as markup.  The
one piece put in as it is, the curves' SVG, is matplotlib's, which escapes
the text it holds itself.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from laminae.errors import DataError
from laminae.atomic import atomic_write
from laminae.reporting.figures import curves_svg, png_data_uri
from laminae.reporting.runs import RunReport
from laminae.reporting.scoring import ClassScores

TEMPLATE = "report.html.j2"
SHADE_DARK = 0.55
"""A confusion cell shaded more than this (its share of its row) gets white text."""


def render_page(runs: Sequence[RunReport]) -> str:
    """The whole page for ``runs``, in the order given."""
    import jinja2

    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    template = environment.from_string(files("laminae.reporting").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    curves = {run.name: run.metrics for run in runs if run.metrics}
    return template.render(
        runs=[_run_view(run) for run in runs],
        curves=curves_svg(curves) if curves else None,
        written=time.strftime("%Y-%m-%d %H:%M"),
        version=version("laminae"),
    )


def write_page(path: Path, page: str) -> Path:
    """Write ``page`` to ``path`` whole or not at all; a one-line DataError if it cannot be."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file to write the report to")
    try:
        atomic_write(path, lambda file: file.write(page.encode("utf-8")))
    except OSError as exc:
        raise DataError(f"{exc.filename or path}: cannot write the report ({exc.strerror or exc})") from None
    return path


def _run_view(run: RunReport) -> dict:
    """What the template shows of one run, as plain text and numbers."""
    return {
        "name": run.name,
        "path": str(run.path),
        "model": run.model.name,
        "description": run.model.spec.get("description") or "",
        "summary": run.model.network.summary(),
        "hyperparameters": run.hyperparameters,
        "left_out": run.left_out,
        "epochs": len(run.metrics),
        "scores": None if run.scores is None else _scores_view(run.scores),
    }


def _scores_view(scores: ClassScores) -> dict:
    """The confusion matrix as rows of shaded cells, each class's accuracy, and the mistakes."""
    counts = scores.class_counts
    shares = scores.confusion / counts.clip(min=1)[:, None]
    rows = [
        {
            "name": name,
            "cells": [
                {"count": int(count), "shade": round(float(part), 2), "dark": part > SHADE_DARK}
                for count, part in zip(row, share)
            ],
            "samples": int(count),
            "accuracy": "–" if math.isnan(accuracy) else f"{accuracy:.4f}",
        }
        for name, row, share, count, accuracy in zip(
            scores.class_names, scores.confusion, shares, counts, scores.class_accuracy
        )
    ]
    mistakes = scores.mistakes
    return {
        "class_names": scores.class_names,
        "rows": rows,
        "source": scores.source,
        "accuracy": f"{scores.accuracy:.4f}",
        "correct": scores.correct,
        "samples": scores.samples,
        "mistakes": [
            {
                "index": int(index),
                "image": png_data_uri(image),
                "true": int(true),
                "predicted": int(predicted),
                "true_name": scores.class_names[true],
                "predicted_name": scores.class_names[predicted],
                "confidence": f"{confidence:.4f}",
            }
            for index, image, true, predicted, confidence in zip(
                mistakes.indices, mistakes.images, mistakes.true, mistakes.predicted, mistakes.confidence
            )
        ],
    }
