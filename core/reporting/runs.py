"""What a report shows of one run directory, read and scored: its model's
layer tree and hyperparameters, its metrics, and its checkpoint on the test
split of the data set it was trained on.

What is there is shown; what is missing is said, in one line each
(``left_out``), rather than refused: a run killed before its first
checkpoint still has its spec and maybe some curves.  A folder that holds
no run at all, and files that are there but broken, are one-line errors.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from laminae.errors import DataError, location
from laminae.model import Model, build, load
from laminae.network.spec import toml_text
from laminae.persistence.checkpoint import CHECKPOINT_FILE
from laminae.registry import Registry
from laminae.reporting.scoring import MISTAKES, ClassScores, score
from laminae.training.metrics import METRICS_FILE, EpochMetrics, read_log
from laminae.training.rundir import SPEC_FILE, read_spec
from laminae.training.splits import class_names, load_splits

HYPERPARAMETER_TABLES = ("loss", "optimizer", "train")
"""The tables of a resolved spec shown as the run's hyperparameters."""


@attrs.frozen(eq=False)
class RunReport:
    """One run directory as the report shows it."""

    name: str
    """What the page and the legends call the run: its folder's name."""
    path: Path
    model: Model
    """The checkpoint's model, or, without one, a model built from ``spec.json``
    (untrained: good for its layer tree and hyperparameters only)."""
    metrics: list[EpochMetrics]
    scores: ClassScores | None
    """The checkpoint on the test split; None without a checkpoint."""
    left_out: list[str]
    """What the report lacks for this run and why, one line each."""

    @property
    def hyperparameters(self) -> dict[str, dict[str, str]]:
        """``{"optimizer": {"type": "sgd", "lr": "0.02", ...}, ...}``: each
        value as it would be written in a model file."""
        spec = self.model.spec
        return {
            table: {key: toml_text(value) for key, value in spec[table].items()}
            for table in HYPERPARAMETER_TABLES
            if isinstance(spec.get(table), dict)
        }


def run_names(paths: Sequence[Path]) -> list[str]:
    """Each run's folder name, or the path as given where two folders share a name."""
    names = [path.resolve().name or str(path) for path in paths]
    return [str(path) if names.count(name) > 1 else name for path, name in zip(paths, names)]


def read_run(
    path: Path,
    name: str,
    *,
    registry: Registry,
    data_dir: str | os.PathLike | None = None,
    mistakes: int = MISTAKES,
) -> RunReport:
    """Read the run directory ``path`` and score its checkpoint on the test split
    of its own data set (looked for in ``data_dir`` first, as ``laminae eval`` does)."""
    checkpoint, spec_file = path / CHECKPOINT_FILE, path / SPEC_FILE
    if not path.is_dir():
        raise DataError(f"{path}: not a run directory ({'not a folder' if path.exists() else 'no such folder'})")
    if not checkpoint.is_file() and not spec_file.is_file():
        raise DataError(f"{path}: not a run directory (it holds neither {CHECKPOINT_FILE} nor {SPEC_FILE})")
    metrics = read_log(path / METRICS_FILE)
    left_out = [] if metrics else [f"{path / METRICS_FILE}: no finished epoch yet, so no curves"]
    if not checkpoint.is_file():
        model = build(read_spec(path), registry=registry, source=str(spec_file))
        left_out.append(f"{checkpoint}: no such file, so no test-set figures (confusion matrix, mistakes)")
        return RunReport(name, path, model, metrics, None, left_out)
    model = load(checkpoint, registry=registry)
    dataset = model.train_config.dataset
    splits = load_splits(registry, dataset, data_dir)
    with location(f"{checkpoint}: model {model.name!r}"):
        names = class_names(registry, dataset, splits.classes)
        scores = score(model, splits.test, names, splits.source, mistakes)
    return RunReport(name, path, model, metrics, scores, left_out)
