"""What tests/test_mpi.py runs twice: once under ``mpiexec -n N``, once in the
test's own process with ``threads = N``; both must end on the same bits.

``python -m tests.mpi_helpers OUT`` (under mpiexec) trains every classic
network of the catalogue and a small network with batch norm and dropout on
the first samples of the bundled MNIST sample, each into ``OUT/<name>``;
:func:`train_both` with ``threads`` does the same on one machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import laminae
from laminae.network.catalogue import model_file

SAMPLES = 578
"""Nine batches of 64 and one of 2 (lenet), eighteen of 32 and one of 2 (the
batch-norm network): the last batch is smaller than three processes."""
CLASSIC = ("two_layer", "dnn", "simple_cnn", "sigmoid_net", "lenet", "mnist_best", "fashion_best")
NAMES = (*CLASSIC, "norm_net")


def norm_spec() -> dict:
    """A small conv network with batch norm (running averages combined over the
    slices) and dropout (a random stream for every slice)."""
    return {
        "name": "norm_net",
        "input": [1, 28, 28],
        "layers": [
            {"type": "conv", "filters": 6, "size": 5},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "pool", "size": 2, "stride": 2},
            {"type": "dropout", "rate": 0.25},
            {"type": "affine", "units": 10},
        ],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "adam", "lr": 0.002},
        "train": {"dataset": "mnist-sample", "epochs": 1, "batch_size": 32, "seed": 0},
    }


def models(registry: laminae.Registry) -> dict[str, laminae.Model]:
    classic = {name: laminae.from_toml(*model_file(name, None), registry=registry) for name in CLASSIC}
    return {**classic, "norm_net": laminae.build(norm_spec(), registry=registry)}


def train_both(out: Path, threads: int | None = None) -> None:
    """Train every network for one epoch on :data:`SAMPLES` samples into ``out/<name>``."""
    registry = laminae.make_registry(autoload=False)
    splits = registry.create("datasets", "mnist-sample").load([])
    x, y = splits.train.x[:SAMPLES], splits.train.y[:SAMPLES]
    for name, model in models(registry).items():
        model.fit(x, y, epochs=1, threads=threads, progress=False, run_dir=out / name)


if __name__ == "__main__":
    train_both(Path(sys.argv[1]))
