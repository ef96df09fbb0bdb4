"""``laminae check FILE [NAME]``: validate, build and try every model of a file (or one), one line each.

Every spec of the file is validated first; then the models (or the one
named; a bare built-in name is that model of the catalogue) are built one
at a time, each tried on two random samples in training and in inference mode
(:func:`laminae.network.probe.probe`) and let go before the next.
"""
from __future__ import annotations

import argparse

from laminae.cli import model_arguments, model_source, plugin_options, registry_from
from laminae.errors import location

HELP = "validate every model of a TOML file (or one, or a built-in one), try it on two samples, show its size and shapes"
EXAMPLE = "laminae check models.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser, name_help="check only this model")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.network import assemble_resolved, read_toml
    from laminae.network.assembly import pick_model
    from laminae.network.probe import probe
    from laminae.network.spec import resolve_document

    registry = registry_from(args)
    model_source(args)
    specs = resolve_document(read_toml(args.file), registry, args.file)
    if args.name is not None:
        specs = {args.name: specs[pick_model(args.name, list(specs), args.file)]}
    width = max(len(name) for name in specs)
    for name, spec in specs.items():
        net = assemble_resolved(spec, registry, args.file).network
        with location(f"{args.file}: model {name!r}"):
            probe(net, training=True)
            probe(net, training=False)
        inner = f" ({len(net.nodes)} with those inside blocks)" if len(net.nodes) > len(net.layers) else ""
        print(
            f"ok  {name:<{width}}  {len(net.layers)} layers{inner}, {net.num_params:,} params,"
            f" {net.input_shape} -> {net.output_shape}",
            flush=True,
        )
    return 0
