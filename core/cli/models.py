"""``laminae models``: the built-in models, with their measured accuracies;
``--copy NAME [FILE]`` writes one out as a starting point for a model file
of one's own.

Every command that takes ``FILE NAME`` also takes a bare built-in name
(``laminae train lenet``).  The copy is the model's table as the catalogue
writes it, with any ``extends`` merged in so that it stands alone, and
without ``accuracy``, which was measured for the original.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from laminae.errors import SpecError, did_you_mean
from laminae.network.catalogue import CATALOGUE_FILE, catalogue
from laminae.network.spec import TrainConfig, model_file_text
from laminae.atomic import atomic_write

HELP = "list the built-in models and their measured test accuracies, or copy one out to edit"
EXAMPLE = "laminae models --copy lenet my_lenet.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--copy", metavar="NAME", help="write the built-in model NAME to FILE (default: NAME.toml)")
    parser.add_argument("file", metavar="FILE", nargs="?", help="where --copy writes; never overwritten")


def run(args: argparse.Namespace) -> int:
    tables = catalogue()
    if args.copy is not None:
        return _copy(tables, args.copy, Path(args.file or f"{args.copy}.toml"))
    if args.file is not None:
        raise SpecError(f"FILE ({args.file}) is where --copy NAME writes: give --copy NAME too")
    width = max(len(name) for name in tables)
    rows = [(name, _accuracy_text(table), _dataset(table), table.get("description", "")) for name, table in tables.items()]
    dataset_width = max(len(row[2]) for row in rows)
    for name, accuracy, dataset, description in rows:
        print(f"{name:<{width}}  {accuracy:>6} {dataset:<{dataset_width}}  {description}".rstrip())
    return 0


def _copy(tables: dict, name: str, out: Path) -> int:
    if name not in tables:
        raise SpecError(f"no built-in model {name!r}{did_you_mean(name, tables)} (models: {', '.join(tables)})")
    if out.exists():
        raise SpecError(f"{out}: already exists, and is never overwritten: give another FILE")
    table = {key: value for key, value in tables[name].items() if key != "accuracy"}
    comments = [
        f"{name}: a copy of Laminae's built-in model (from {CATALOGUE_FILE}), to edit as your own.",
        f"Train it with: laminae train {out} {name}",
    ]
    text = model_file_text(name, table, comments)
    atomic_write(out, lambda file: file.write(text.encode()))
    print(f"wrote {out}")
    return 0


def _accuracy_text(table: dict) -> str:
    accuracy = table.get("accuracy")
    return "-" if accuracy is None else f"{100 * accuracy:.2f}%"


def _dataset(table: dict) -> str:
    """The data set the accuracy was measured on: the model's own."""
    train = table.get("train", {})
    return f"({train.get('dataset', TrainConfig().dataset)})"
