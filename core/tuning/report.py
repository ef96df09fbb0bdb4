"""What a study gives back: its trials as a table (best first), a line per
finished trial, the best trial as a ready-to-train model file, and plots.

These read the study from its storage, so they show the same whichever
worker or machine ran each trial.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from laminae.errors import LaminaeError, one_line
from laminae.optional import require
from laminae.network.spec import model_file_text
from laminae.atomic import atomic_write
from laminae.tuning.storage import counts

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
BEST_FILE = "best.toml"
PLOTS = {"history.png": "plot_optimization_history", "importances.png": "plot_param_importances"}


def state_of(trial: Any) -> str:
    if trial.state.name == "FAIL" and trial.user_attrs.get("interrupted"):
        return "interrupted"
    return STATES[trial.state.name]


def value_of(trial: Any) -> float | None:
    """A complete trial's value, or a pruned one's last reported value."""
    if trial.value is not None:
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def ranked(study: Any) -> list[Any]:
    """The study's trials, best first: complete ones by value, then pruned ones
    by their last value, then failed, interrupted and running ones by number."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    order = {"complete": 0, "pruned": 1, "failed": 2, "interrupted": 3, "running": 4, "waiting": 5}

    def key(trial: Any) -> tuple:
        value = value_of(trial)
        known = value is not None and not math.isnan(value)
        return order[state_of(trial)], not known, sign * value if known else 0, trial.number

    shown = [t for t in study.get_trials(deepcopy=False) if counts(t) or t.user_attrs.get("interrupted")]
    return sorted(shown, key=key)


def trial_line(trial: Any, metric: str, done: int, total: int) -> str:
    """``trial 7 complete (5/12): val_accuracy 0.9871 after 2 epochs, 61 s; optimizer.lr=0.0412``."""
    state, value = state_of(trial), value_of(trial)
    head = f"trial {trial.number} {state} ({done}/{total})"
    if state == "failed":
        return f"{head}: {trial.user_attrs.get('error') or trial.system_attrs.get('fail_reason', 'no reason recorded')}"
    epochs = trial.user_attrs.get("epochs", 0)
    measured = f"{metric} {value:.4f} after {epochs} epoch{'s' * (epochs != 1)}" if value is not None else "no epoch finished"
    params = " ".join(f"{path}={_shown(v)}" for path, v in trial.params.items())
    return f"{head}: {measured}, {_seconds(trial)}; {params}"


def table(study: Any, metric: str, limit: int | None = None) -> str:
    """The trials as aligned columns, best first; a failed trial's reason ends its row."""
    trials = ranked(study)[:limit]
    paths = sorted({path for trial in trials for path in trial.params})
    rows = [["trial", "state", metric, "epochs", "time", *paths, "note"]]
    for trial in trials:
        value = value_of(trial)
        note = trial.user_attrs.get("error", "") if state_of(trial) == "failed" else ""
        rows.append([
            str(trial.number),
            state_of(trial),
            "-" if value is None else f"{value:.4f}",
            str(trial.user_attrs.get("epochs", "-")),
            _seconds(trial),
            *(_shown(trial.params[p]) if p in trial.params else "-" for p in paths),
            note,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip() for row in rows
    )


def write_best(path: Path, name: str, spec: Mapping[str, Any], trial: Any, metric: str, epochs: int) -> Path:
    """The best trial's spec as a model file that ``laminae train`` takes as it is."""
    comments = [
        f"The best trial of the study of {name!r}: trial {trial.number},",
        f"{metric} {trial.value:.4f} on the validation split after {epochs} epochs.",
        f"Train it with: laminae train {path.name} {name}",
    ]
    text = model_file_text(name, {key: value for key, value in spec.items() if key != "name"}, comments)
    atomic_write(path, lambda file: file.write(text.encode()))
    return path


def write_plots(study: Any, study_dir: Path) -> list[str]:
    """The optimization history and parameter importances as PNGs (needs
    laminae[plot]); a line for each that was written or could not be."""
    try:
        require("matplotlib", "plot", "plots")
    except LaminaeError as err:
        return [f"no plots: {err}"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots

    lines = []
    for file, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(plots, function)(study)
            axes.figure.savefig(study_dir / file, dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
            lines.append(f"plot: {study_dir / file}")
        except (ValueError, RuntimeError) as exc:  # too few complete trials to plot
            lines.append(f"no {file}: {one_line(exc)}")
    return lines


def _seconds(trial: Any) -> str:
    duration = trial.duration
    if duration is None:
        return "-"
    seconds = duration.total_seconds()
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
