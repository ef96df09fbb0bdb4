"""``laminae layers [TYPE]``: the registered types and the TOML keys each one takes.

Everything shown comes from the classes themselves: the keys and defaults
from their attrs init fields, a key's doc from ``metadata={"doc": ...}``,
the summary from the class docstring, so a plugin is documented by being
written, and this listing cannot drift from what the builder accepts.
"""
from __future__ import annotations

import argparse

import attrs

from laminae.cli import plugin_options, registry_from
from laminae.errors import PluginError
from laminae.fields import default_of, hyperparameters, is_required, key_of
from laminae.registry import KINDS
from laminae.network.spec import INITIALIZER, toml_text

HELP = "list the registered layer types (or losses, optimizers, ...) and their keys"
EXAMPLE = "laminae layers conv    (or: laminae layers --kind optimizers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("type", nargs="?", help="show this type's keys in detail")
    parser.add_argument("--kind", choices=list(KINDS), default="layers", help="what to list (default: layers)")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    registry = registry_from(args, builds_models=False)
    if args.type is not None:
        other = registry.kind_of(args.type)
        if args.type not in registry.classes[args.kind] and other is not None:
            raise PluginError(
                f"{args.type!r} is not a {KINDS[args.kind].word} but a registered {KINDS[other].word}:"
                f" laminae layers --kind {other} {args.type}"
            )
        cls = registry.get(args.kind, args.type)
        print(f"{args.type} ({KINDS[args.kind].word}, from {registry.owner(args.kind, args.type)}): {summary_line(cls)}")
        fields = hyperparameters(cls)
        width = max((len(key_of(f)) for f in fields), default=0)
        default_width = max((len(default_text(f)) for f in fields), default=0)
        for field in fields:
            print(f"  {key_of(field):<{width}}  {default_text(field):<{default_width}}{_doc_text(field)}".rstrip())
        if not fields:
            print("  (no keys)")
        return 0
    names = registry.names(args.kind)
    width = max((len(name) for name in names), default=0)
    for name in names:
        cls = registry.get(args.kind, name)
        keys = ", ".join(f"{key_of(f)}={default_text(f)}" for f in hyperparameters(cls)) or "no keys"
        print(f"{name:<{width}}  {keys}  # {summary_line(cls)}")
    return 0


def summary_line(cls: type) -> str:
    """The first paragraph of the class docstring, on one line."""
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or "(undocumented)"


def default_text(field: attrs.Attribute) -> str:
    if is_required(field):
        return "required"
    default = default_of(field)
    return "computed" if default is attrs.NOTHING else toml_text(default)


def _doc_text(field: attrs.Attribute) -> str:
    doc = field.metadata.get("doc", "")
    if field.metadata.get("laminae") == INITIALIZER:
        doc = (doc + " " if doc else "") + "(an initializer: a name or a { type = ... } table)"
    return f"  {doc}" if doc else ""
