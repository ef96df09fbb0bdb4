"""Where a study lives, and the Optuna objects that search it.

The default storage is Optuna's journal: one append-only file in the study
directory, locked by each writer, so several local processes share it with
no server.  ``--storage URL`` takes any Optuna storage URL instead; an RDB
one (``postgresql+psycopg://``, ``sqlite:///``) gets a heartbeat (the tune
table's ``heartbeat_seconds`` and ``grace_seconds``), so a worker that is
killed has its trial marked failed by the others.

Optuna is imported inside each function, through :func:`laminae.optional.require`:
without ``laminae[tune]`` the command says what to install in one line.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from laminae.errors import SpecError, one_line
from laminae.optional import require
from laminae.tuning.table import TuneTable

JOURNAL_FILE = "journal.log"
OPEN_ATTEMPTS = 3
"""Machines that start together on an empty database race to create Optuna's
tables, and all but one fail; the second attempt finds the tables there."""

NOT_COUNTED = ("interrupted", "surplus")
"""User attributes of failed trials that never ran to an end of their own: a
trial stopped by Ctrl-C (its slot is run again on resume) and one begun after
the study already had all its trials (by a worker on another machine)."""


def optuna() -> Any:
    """The optuna module, its own log lines silenced: the study prints one line per trial itself."""
    module = require("optuna", "tune", "laminae tune")
    module.logging.set_verbosity(module.logging.ERROR)
    return module


def open_storage(url: str | None, study_dir: Path, table: TuneTable) -> Any:
    """The storage of ``url``, beating as often as ``table`` says, or the journal file in ``study_dir``."""
    storages = optuna().storages
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        return storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise SpecError(f"--storage {url!r}: not an Optuna storage URL (sqlite:///FILE, postgresql+psycopg://..., mysql://...)")
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with _heartbeat_unannounced():
                return storages.RDBStorage(url, heartbeat_interval=table.heartbeat_seconds, grace_period=table.grace_seconds)
        except ImportError as exc:
            raise SpecError(f"--storage {url!r} needs a database driver: {one_line(exc)} (pip install 'laminae[tune]')") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: a server out of reach, a race
            if attempt == OPEN_ATTEMPTS - 1:
                raise SpecError(f"--storage {_without_password(url)}: cannot open: {one_line(exc)}") from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def fail_silent_trials(study: Any) -> list[int]:
    """Optuna's heartbeat sweep: fail the running trials whose workers have been
    silent for the grace period (none on a storage without a heartbeat); their numbers."""
    state = optuna().trial.TrialState
    running = study.get_trials(deepcopy=False, states=[state.RUNNING])
    with _heartbeat_unannounced():
        optuna().storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=[state.FAIL])}
    return [t.number for t in running if t.number in failed]


@contextlib.contextmanager
def _heartbeat_unannounced() -> Iterator[None]:
    """A block in which Optuna does not warn, at every start, that its heartbeat is experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna().exceptions.ExperimentalWarning)
        yield


def _without_password(url: str) -> str:
    head, at, tail = url.partition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    return head.rsplit(":", 1)[0] + ":***@" + tail


def make_sampler(table: TuneTable, worker: int) -> Any:
    """The table's sampler; with a seed, each local worker draws from its own stream."""
    samplers = optuna().samplers
    seed = None if table.seed is None else table.seed + worker
    if table.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    if table.sampler == "grid":
        return samplers.GridSampler({path: p.grid() for path, p in table.space.items()}, seed=seed)
    return samplers.TPESampler(seed=seed, n_startup_trials=table.startup_trials)


def make_pruner(table: TuneTable) -> Any:
    pruners = optuna().pruners
    if table.pruner == "median":
        return pruners.MedianPruner(n_startup_trials=table.startup_trials, n_warmup_steps=0)
    if table.pruner == "halving":
        return pruners.SuccessiveHalvingPruner(min_resource=1)
    return pruners.NopPruner()


def open_study(name: str, table: TuneTable, storage: Any, worker: int = 0) -> Any:
    """The study ``name`` in ``storage``, created if new; refused if it was begun
    with another metric or direction (its values would not compare)."""
    study = optuna().create_study(
        study_name=name,
        storage=storage,
        direction=table.direction,
        sampler=make_sampler(table, worker),
        pruner=make_pruner(table),
        load_if_exists=True,
    )
    begun = study.user_attrs.get("metric")
    if begun is None:
        study.set_user_attr("metric", table.metric)
    elif begun != table.metric or study.direction.name.lower() != table.direction:
        raise SpecError(
            f"study {name!r} was begun to {study.direction.name.lower()} {begun}; this tune table says"
            f" {table.direction} {table.metric} (choose another --out, --storage or --study)"
        )
    return study


def counts(trial: Any) -> bool:
    """Whether ``trial`` takes one of the study's ``trials``: finished (complete,
    pruned, failed on its own) or running now."""
    state = trial.state.name
    if state == "WAITING":
        return False
    return not (state == "FAIL" and any(trial.user_attrs.get(key) for key in NOT_COUNTED))


def counted(study: Any, below: int | None = None) -> int:
    """How many trials count toward the total (only those numbered below ``below``, if given)."""
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if counts(t) and (below is None or t.number < below))
