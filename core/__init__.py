"""Laminae: a numpy neural-network framework whose every part is a plugin.

The package is built in floors; each imports only the floors below it
(import-linter contracts in pyproject.toml say so, and a test runs them):

- the plugin API, at the top of the package: ``errors``, ``protocols``
  (with ``BuildContext``), ``chain`` (layers in order: a network's, a
  composite layer's), ``contracts`` (what a layer's build, forward and
  backward, a transform and a schedule must get right), ``events`` (what a
  run tells its loggers), ``hookspecs``,
  ``registry``, ``fields``, ``validators``, ``testing`` and the
  plugin-author helpers ``buffers``, ``arena``, ``randomness``, ``data``,
  ``safe_npz``, ``optional``, ``atomic`` (files replaced whole or not at
  all) and ``onnx_graph`` (what a plugin's ``onnx``
  method adds its nodes to);
- ``laminae.network``: the network and its assembly from a spec;
- ``laminae.persistence``: checkpoints and ONNX export;
- ``laminae.training``: the loop, its state and steps, run directories;
- ``laminae.model``: the ``Model`` facade with ``build``, ``from_toml`` and ``load``;
- ``laminae.cli``: the ``laminae`` command.

A module imports its siblings by their own names (``import
laminae.training.batches as batches``), not from its package's face
(``from laminae.training import batches``): that takes the name from the
package's ``__init__``, which imports the module back, a cycle the same
test finds.

The names below are the public ones; they stay where they are whatever moves.
"""
from importlib.metadata import version

from laminae.chain import Chain
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
from laminae.model import Model, build, from_toml, load, load_training
from laminae.network import ModelParts, Network, TrainConfig
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import (
    BuildContext,
    Dataset,
    Initializer,
    Layer,
    Logger,
    Loss,
    Node,
    Optimizer,
    Schedule,
    Shape,
    Transform,
)
from laminae.registry import Registry, make_registry
from laminae.training import EpochMetrics, FitOptions, TrainingResult, TrainingState

__version__ = version("laminae")

__all__ = [
    "BuildContext",
    "Chain",
    "CheckpointError",
    "DataError",
    "Dataset",
    "EpochMetrics",
    "FitOptions",
    "Initializer",
    "LaminaeError",
    "Layer",
    "Logger",
    "Loss",
    "Model",
    "ModelParts",
    "Network",
    "Node",
    "OnnxGraph",
    "Optimizer",
    "PluginError",
    "Registry",
    "Schedule",
    "Shape",
    "ShapeError",
    "SpecError",
    "TrainConfig",
    "TrainingError",
    "TrainingResult",
    "TrainingState",
    "Transform",
    "build",
    "from_toml",
    "hookimpl",
    "load",
    "load_training",
    "make_registry",
]
