"""Laminae: a numpy neural-network framework whose every part is a plugin."""
from laminae.errors import (
    CheckpointError,
    DataError,
    LaminaeError,
    PluginError,
    ShapeError,
    SpecError,
    TrainingError,
)
from laminae.hookspecs import hookimpl
from laminae.network import Network
from laminae.protocols import BuildContext, Dataset, Initializer, Layer, Loss, Optimizer, Shape
from laminae.registry import Registry, make_registry

__version__ = "0.1.0"

__all__ = [
    "BuildContext",
    "CheckpointError",
    "DataError",
    "Dataset",
    "Initializer",
    "LaminaeError",
    "Network",
    "Layer",
    "Loss",
    "Optimizer",
    "PluginError",
    "Registry",
    "Shape",
    "ShapeError",
    "SpecError",
    "TrainingError",
    "hookimpl",
    "make_registry",
]
from laminae.builder import build, from_toml  # noqa: E402  (needs the names above)
from laminae.checkpoint import load  # noqa: E402

__all__ += ["build", "from_toml", "load"]
