"""A small tunable model on the bundled MNIST sample, ways to run ``laminae tune`` on it, and to read a study back."""
from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna

LAMINAE = [sys.executable, "-m", "laminae"]
T = TypeVar("T")

SMALL = """\
[models.small]
input = [1, 28, 28]
layers = [
  { type = "affine", units = 16 },
  { type = "relu" },
  { type = "affine", units = 10 },
]
loss = "softmax_cross_entropy"
optimizer = { type = "sgd", lr = 0.1 }
train = { dataset = "mnist-sample", epochs = 2, batch_size = 64, seed = 0 }

[models.small.tune]
trials = 6
validation = 0.2
seed = 0
pruner = "median"
startup_trials = 2
space."optimizer.lr" = { type = "float", low = 0.0001, high = 0.3, log = true }
space."train.batch_size" = { type = "choice", choices = [64, 128] }
space."layers.0.units" = { type = "int", low = 8, high = 24, step = 8 }
"""


def write_model(folder: Path, text: str = SMALL, file: str = "small.toml") -> Path:
    path = folder / file
    path.write_text(text)
    return path


def with_tune(text: str = SMALL, **keys: object) -> str:
    """``text`` with these keys of its tune table set, as TOML literals (``pruner='"none"'``)."""
    head, table = text.split("[models.small.tune]\n")
    lines = [line for line in table.splitlines(keepends=True) if line.split(" = ")[0] not in keys]
    return head + "[models.small.tune]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "".join(lines)


@contextlib.contextmanager
def tune_process(*args: object) -> Iterator[subprocess.Popen]:
    """``laminae tune ARGS`` as a terminal starts it, the leader of its own process
    group; whatever of it still runs when the block ends is killed."""
    command = subprocess.Popen(
        [*LAMINAE, "tune", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield command
    finally:
        for pid in [*children(command.pid), command.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        command.communicate()


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (the tune command's workers)."""
    found = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in listing.read_text().split()]
    return found


def wait_for(find: Callable[[], T], what: str, command: subprocess.Popen, timeout: float = 60) -> T:
    """The first true value ``find`` returns, polling while ``command`` runs; fails
    the test naming ``what`` if the command ends first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := find()):
        if command.poll() is not None:
            out, err = command.communicate()
            raise AssertionError(f"no {what}: the command ended with status {command.returncode}\n{out}{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.05)
    return found


def trials_in_training(study_dir: Path, count: int) -> list[int]:
    """The numbers of the trials that have finished an epoch, once there are ``count`` of them (else [])."""
    numbers = [int(log.parent.name) for log in sorted((study_dir / "trials").glob("*/metrics.csv")) if rows_in(log) >= 1]
    return numbers if len(numbers) >= count else []


def rows_in(metrics: Path) -> int:
    """Complete rows in a ``metrics.csv`` that training may be appending to."""
    try:
        return max(0, metrics.read_text().count("\n") - 1)
    except FileNotFoundError:
        return 0


def tune_command(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*LAMINAE, "tune", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def trials_of(storage: object, name: str = "small") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def counted_trials(trials: list[optuna.trial.FrozenTrial], total: int) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward a study of ``total``, after checking the rest.

    Two workers may each ask for a trial when the study holds ``total - 1``: the
    later one is recorded as surplus (failed before it trained, not counted;
    docs/tuning.md): at most one here, begun after ``total`` counted trials."""
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    kept = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(surplus) <= 1, [t.number for t in surplus]
    for extra in surplus:
        assert extra.state.name == "FAIL" and "run_dir" not in extra.user_attrs
        assert sum(t.number < extra.number for t in kept) >= total
    return kept


def journal(study_dir: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))


def epochs_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def logged_test_accuracies(run_dir: Path) -> list[str]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [row["test_accuracy"] for row in csv.DictReader(file)]
