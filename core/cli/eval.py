"""``laminae eval CHECKPOINT``: the test loss and accuracy of a saved model.

The data set defaults to the one the model was trained on, as recorded in
the checkpoint's spec, so no TOML file is needed.
"""
from __future__ import annotations

import argparse

from laminae.cli import plugin_options, registry_from
from laminae.cli.train import data_dir_option
from laminae.training.splits import load_splits
from laminae.errors import location

HELP = "report the test loss and accuracy of a checkpoint"
EXAMPLE = "laminae eval runs/quickstart-20240101-120000/model.npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a model.npz file, or a run directory holding one")
    parser.add_argument("--dataset", metavar="NAME", help="evaluate on this data set's test split instead")
    data_dir_option(parser)
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.model import load
    from laminae.persistence.checkpoint import checkpoint_path

    registry = registry_from(args)
    model = load(args.checkpoint, registry=registry)
    test = load_splits(registry, args.dataset or model.train_config.dataset, args.data_dir).test
    with location(f"{checkpoint_path(args.checkpoint)}: model {model.name!r}"):
        loss, accuracy = model.evaluate(test.x, test.y)
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {accuracy:.4f} ({round(accuracy * len(test))}/{len(test)})")
    return 0
