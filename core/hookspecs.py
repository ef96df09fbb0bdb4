"""The hooks a plugin implements, one per kind of thing it can provide.

Each hook receives ``register(name, cls)``.  A plugin calls it once for every
class it provides; the name is what a TOML file writes as ``type``.  The
built-in plugins in ``laminae.plugins`` use exactly these hooks.
"""
from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "laminae"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, type], None]


@hookspec
def register_layers(register: Register) -> None:
    """Register layer classes (the :class:`laminae.Layer` protocol)."""


@hookspec
def register_losses(register: Register) -> None:
    """Register loss classes (the :class:`laminae.Loss` protocol)."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimizer classes (the :class:`laminae.Optimizer` protocol)."""


@hookspec
def register_initializers(register: Register) -> None:
    """Register initializer classes (the :class:`laminae.Initializer` protocol)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register data set classes (the :class:`laminae.Dataset` protocol)."""


@hookspec
def register_transforms(register: Register) -> None:
    """Register data augmentation classes (the :class:`laminae.Transform` protocol)."""


@hookspec
def register_schedules(register: Register) -> None:
    """Register learning-rate schedule classes (the :class:`laminae.Schedule` protocol)."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register training event loggers (the :class:`laminae.Logger` protocol)."""
