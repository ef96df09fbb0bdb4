"""``laminae check FILE``: validate and build every model of a file, one line each."""
from __future__ import annotations

import argparse

from laminae.cli import plugin_options, registry_from

HELP = "validate every model in a TOML file and show its size and shapes"
EXAMPLE = "laminae check models.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the TOML file of models")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.network import assemble_document, read_toml

    models = assemble_document(read_toml(args.file), registry=registry_from(args), source=args.file)
    width = max(len(name) for name in models)
    for name, model in models.items():
        net = model.network
        print(
            f"ok  {name:<{width}}  {len(net.layers)} layers, {net.num_params:,} params,"
            f" {net.input_shape} -> {net.output_shape}"
        )
    return 0
