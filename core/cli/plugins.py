"""``laminae plugins``: every plugin, where it came from, and what it registered or why not.

One line per plugin, stable for grep and for tests:
``{name} {version} {source} {status}: {registrations joined by ", " | reason}``.
"""
from __future__ import annotations

import argparse

from laminae.cli import plugin_options, registry_from
from laminae.registry import PluginInfo

HELP = "list the plugins, their versions, sources, registrations and load status"
EXAMPLE = "laminae plugins --plugins-dir ./my_plugins"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    for info in registry_from(args, builds_models=False).plugins:
        print(plugin_line(info))
    return 0


def plugin_line(info: PluginInfo) -> str:
    """The documented one-line form of a plugin's state."""
    detail = (", ".join(info.registers) or "nothing") if info.ok else info.reason
    return f"{info.name} {info.version} {info.source} {info.status}: {detail}"
