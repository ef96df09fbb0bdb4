"""``laminae summary FILE NAME`` (or ``laminae summary NAME`` for a built-in model):
one model's layer table, loss, optimizer and training setup."""
from __future__ import annotations

import argparse

from laminae.cli import model_arguments, model_source, plugin_options, registry_from
from laminae.network.spec import toml_text

HELP = "show one model's layers, shapes and parameter counts"
EXAMPLE = "laminae summary simple_cnn    (or: laminae summary models.toml simple_cnn)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.model import from_toml

    registry = registry_from(args)
    model_source(args)
    model = from_toml(args.file, args.name, registry=registry)
    spec = model.spec
    print(f"model {model.name}: {spec['description']}" if spec["description"] else f"model {model.name}")
    print(model.network.summary())
    print(f"loss: {_table_text(spec['loss'])}")
    print(f"optimizer: {_table_text(spec['optimizer'])}")
    print(f"train: {_options_text(spec['train'])}")
    return 0


def _table_text(table: dict) -> str:
    options = {key: value for key, value in table.items() if key != "type"}
    return f"{table['type']} ({_options_text(options)})" if options else table["type"]


def _options_text(options: dict) -> str:
    return ", ".join(f"{key} = {toml_text(value)}" for key, value in options.items())
