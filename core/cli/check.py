"""``laminae check FILE [NAME]``: validate, build and try every model of a file (or one), one line each.

Every spec of the file is validated first; then the models (or the one
named; a bare built-in name is that model of the catalogue) are built one
at a time, each tried on two random samples in training and in inference mode
(:func:`laminae.network.probe.probe`), its transforms on two random samples
and its schedule over every step of its run, and its tune table read as
``laminae tune`` reads it; each is let go before the next.
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


TRAINING_SAMPLES = 60_000
"""The training set a schedule is checked for (MNIST's and Fashion-MNIST's size):
a data set's size is known only once it is loaded, which a check never does."""


def run(args: argparse.Namespace) -> int:
    from laminae.network import assemble_resolved, read_toml
    from laminae.network.assembly import pick_model
    from laminae.network.probe import probe, probe_schedule, probe_transforms
    from laminae.network.spec import resolve_document
    from laminae.training.batches import batch_count
    from laminae.tuning.table import read_tune_table

    registry = registry_from(args)
    model_source(args)
    doc = read_toml(args.file)
    specs = resolve_document(doc, registry, args.file)
    if args.name is not None:
        specs = {args.name: specs[pick_model(args.name, list(specs), args.file)]}
    width = max(len(name) for name in specs)
    for name, spec in specs.items():
        parts = assemble_resolved(spec, registry, args.file)
        net, train = parts.network, parts.train_config
        where = f"{args.file}: model {name!r}"
        with location(where):
            probe(net, training=True)
            probe(net, training=False)
            probe_transforms(parts)
            for steps_per_epoch in sorted({1, batch_count(TRAINING_SAMPLES, train.batch_size)}):
                probe_schedule(parts, steps_per_epoch, train.epochs)
        if "tune" in doc["models"][name]:
            read_tune_table(doc["models"][name]["tune"], parts.spec, registry, where)
        inner = f" ({len(net.nodes)} with those inside blocks)" if len(net.nodes) > len(net.layers) else ""
        print(
            f"ok  {name:<{width}}  {len(net.layers)} layers{inner}, {net.num_params:,} params,"
            f" {net.input_shape} -> {net.output_shape}",
            flush=True,
        )
    return 0
