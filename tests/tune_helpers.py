"""A small tunable model on the bundled MNIST sample, and ways to read a study back."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import optuna

LAMINAE = [sys.executable, "-m", "laminae"]

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


def write_model(folder: Path, text: str = SMALL) -> Path:
    path = folder / "small.toml"
    path.write_text(text)
    return path


def tune_command(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*LAMINAE, "tune", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def trials_of(storage: object, name: str = "small") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def journal(study_dir: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))


def epochs_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def logged_test_accuracies(run_dir: Path) -> list[str]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [row["test_accuracy"] for row in csv.DictReader(file)]
