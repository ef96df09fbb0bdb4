"""``tune``: the whole search as one call, for the command and for Python users.

It reads the model and its tune table, holds a validation split out of the
training data, opens (or resumes) the study, runs the workers, and then
reports: the trials best first, the best trial as a model file, its test
accuracy (the one time tuning looks at the test set) and, with
``laminae[plot]``, the plots.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

import laminae.tuning.report as report
from laminae.errors import SpecError, location
from laminae.model import build, load
from laminae.network.spec import read_toml
from laminae.registry import Registry, make_registry
from laminae.training.rundir import folder_name
from laminae.training.splits import load_splits
from laminae.tuning.paths import with_values
from laminae.tuning.storage import JOURNAL_FILE, counted, open_storage, open_study, optuna
from laminae.tuning.table import TuneTable, read_tune_table
from laminae.tuning.trials import StudySetup
from laminae.tuning.workers import fail_orphans, run_workers


@attrs.frozen
class TuneResult:
    """What :func:`tune` found; ``best_*`` are None while no trial has completed."""

    study_dir: Path
    trials: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_file: Path | None
    test_accuracy: float | None
    interrupted: bool
    table: str


def tune(
    model: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    *,
    out: str | os.PathLike | None = None,
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    data_dir: str | os.PathLike | None = None,
    registry: Registry | None = None,
    show: Callable[[str], None] = print,
    bar: bool | None = None,
    log: Sequence[str] = (),
) -> TuneResult:
    """Search the hyperparameters of model ``name`` as its tune table says.

    ``model`` is a TOML file, or a dict: a document with ``models`` or one
    model's table, with its ``tune`` table inside.  ``out`` is the study
    directory (default ``runs/tune-NAME``); ``trials`` overrides the
    table's; ``workers`` local processes run trials side by side;
    ``storage`` is an Optuna storage URL (default: a journal file in the
    study directory).  Running it again resumes the study up to ``trials``.
    ``show`` prints each line (a finished trial, the summary); ``bar``
    shows a progress bar (default: on a terminal).  ``log`` names loggers
    every trial sends its events to besides the model's ``train.log``
    (``laminae tune --log``), each trial's run nested under the study where
    the tracker nests runs.
    """
    optuna()
    setup, test = prepare(model, name, out, trials, storage, data_dir, registry, log)
    if type(workers) is not int or workers < 1:
        raise SpecError(f"--workers must be a positive integer, got {workers!r}")
    setup.study_dir.mkdir(parents=True, exist_ok=True)
    study = setup.open()
    if setup.table.baseline and not study.get_trials(deepcopy=False):
        study.enqueue_trial(setup.table.baseline_values(setup.spec, setup.registry), skip_if_exists=True)
    for line in fail_orphans(study, setup):
        show(line)
    interrupted = False
    if counted(study) >= setup.table.trials:
        show(f"study {setup.name!r} already has its {setup.table.trials} trials (ask for more with --trials)")
    else:
        show(f"tuning {setup.name}: {setup.table.trials} trials of {_epochs(setup)} epochs, {workers} worker(s);"
             f" {len(setup.train)} training and {len(setup.validation)} validation samples; study in {setup.study_dir}")
        outcome = run_workers(study, setup, workers, show, bar)
        interrupted = outcome.interrupted
        for line in outcome.lost:
            show(line)
    return finish(study, setup, test, interrupted, show)


def prepare(
    model: str | os.PathLike | Mapping[str, Any],
    name: str | None,
    out: str | os.PathLike | None,
    trials: int | None,
    storage: str | None,
    data_dir: str | os.PathLike | None,
    registry: Registry | None,
    log: Sequence[str] = (),
) -> tuple[StudySetup, Any]:
    """The study's setup (model, table, data, loggers) and the test split kept aside for the end."""
    registry = registry if registry is not None else make_registry()
    name, spec, table = read_model(model, name, registry)
    source = "<dict>" if isinstance(model, Mapping) else str(model)
    with location(f"{source}: model {name!r}: --log"):
        for logger in log:  # each trial makes its own; a wrong name is one line before the study opens
            registry.create("loggers", logger)
    if trials is not None:
        if type(trials) is not int or trials < 1:
            raise SpecError(f"--trials must be a positive integer, got {trials!r}")
        table = attrs.evolve(table, trials=trials)
    train = spec["train"]
    splits = load_splits(registry, train["dataset"], data_dir)  # the fraction held out needs the split's size
    splits = splits.hold_out(max(1, round(table.validation * len(splits.train))), train["seed"])
    setup = StudySetup(
        name=name,
        source=source,
        spec=spec,
        table=table,
        registry=registry,
        train=splits.train,
        validation=splits.validation,
        study_dir=study_dir(out, name),
        storage=storage,
        log=tuple(log),
    )
    return setup, splits.test


def trials_table(
    model: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    *,
    out: str | os.PathLike | None = None,
    storage: str | None = None,
    registry: Registry | None = None,
) -> str:
    """The study's trials as a table, best first, without running any."""
    optuna()
    name, _spec, table = read_model(model, name, registry if registry is not None else make_registry())
    folder = study_dir(out, name)
    if storage is None and not (folder / JOURNAL_FILE).exists():
        raise SpecError(f"{folder}: no study here (run laminae tune first, or give --out or --storage)")
    study = open_study(name, table, open_storage(storage, folder, table))
    return report.table(study, table.metric)


def finish(study: Any, setup: StudySetup, test: Any, interrupted: bool, show: Callable[[str], None]) -> TuneResult:
    """Report the study: the best trials, the best model file, its test accuracy, plots."""
    done = counted(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    table = report.table(study, setup.table.metric)
    show(f"study {setup.name!r}: {done} of {setup.table.trials} trials, best first:")
    show(report.table(study, setup.table.metric, limit=10))
    stopped = f"interrupted: {done} of {setup.table.trials} trials finished; run the same command to resume"
    if not complete:
        show("no trial completed yet: nothing to write")
        if interrupted:
            show(stopped)
        return TuneResult(setup.study_dir, done, None, None, {}, None, None, interrupted, table)
    best = study.best_trial
    best_file = report.write_best(
        setup.study_dir / report.BEST_FILE, setup.name, with_values(setup.spec, best.params), best, setup.table.metric, _epochs(setup)
    )
    show(f"best trial {best.number}: {setup.table.metric} {best.value:.4f}; its model: {best_file}")
    accuracy = None
    if interrupted:
        show(stopped)
    elif done >= setup.table.trials:
        accuracy = _test_accuracy(study, best, setup, test, show)
    for line in report.write_plots(study, setup.study_dir):
        show(line)
    return TuneResult(setup.study_dir, done, best.number, best.value, dict(best.params), best_file, accuracy, interrupted, table)


def _test_accuracy(study: Any, best: Any, setup: StudySetup, test: Any, show: Callable[[str], None]) -> float | None:
    """The best trial's test accuracy, measured once (and kept in the study, so asking again reads it)."""
    kept = study.user_attrs.get("test_accuracy")
    if kept is not None and kept.get("trial") == best.number:
        accuracy = kept["value"]
    else:
        run_dir = Path(best.user_attrs.get("run_dir", ""))
        if not (run_dir / "model.npz").exists():
            show(f"test accuracy not measured: trial {best.number}'s checkpoint is on {best.user_attrs.get('worker', '?')}")
            return None
        accuracy = load(run_dir, registry=setup.registry).evaluate(test.x, test.y)[1]
        study.set_user_attr("test_accuracy", {"trial": best.number, "value": accuracy})
    show(f"test accuracy of best trial {best.number}: {accuracy:.4f} ({round(accuracy * len(test))}/{len(test)}),"
         " measured once, after the search")
    return accuracy


def read_model(
    model: str | os.PathLike | Mapping[str, Any], name: str | None, registry: Registry
) -> tuple[str, dict[str, Any], TuneTable]:
    """The model's name, resolved spec and tune table, every mistake one line naming file, model and key."""
    source = "<dict>" if isinstance(model, Mapping) else str(model)
    doc = model if isinstance(model, Mapping) else read_toml(model)
    built = build(doc, registry=registry, source=source, name=name)
    where = f"{source}: model {built.name!r}"
    table = doc["models"][built.name] if "models" in doc else doc
    if "tune" not in table:
        raise SpecError(f"{where} has no tune table: add [models.{built.name}.tune] (see docs/tuning.md)")
    return built.name, built.spec, read_tune_table(table["tune"], built.spec, registry, where)


def _epochs(setup: StudySetup) -> int:
    return setup.table.epochs or setup.spec["train"]["epochs"]


def study_dir(out: str | os.PathLike | None, name: str) -> Path:
    """``out``, or ``runs/tune-NAME`` with NAME made safe for a folder name."""
    if out is not None:
        return Path(out)
    return Path("runs") / f"tune-{folder_name(name)}"
