"""Floor 4, the ``Model`` facade: what users build, train, evaluate and save.

A :class:`Model` is its :class:`~laminae.network.ModelParts` (network, loss,
optimizer, resolved spec) plus the methods users call, each handing the
parts to the floor that does the work: training, evaluation, checkpoints.
The floors below never import this module; they take the parts.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from laminae.network.assembly import ModelParts, assemble
from laminae.network.spec import read_toml
from laminae.persistence import checkpoint
from laminae.persistence.onnx_export import export_onnx
from laminae.errors import TrainingError, blamed_on, one_line
from laminae.registry import Registry
from laminae.training.evaluation import evaluate_in_processes, refuse_non_finite
from laminae.training.loop import FitOptions, TrainingResult, fit
from laminae.training.state import TrainingState
from laminae.validators import thread_count


@attrs.define(eq=False)
class Model(ModelParts):
    """What ``laminae.build`` returns: ready to train, evaluate and save."""

    @classmethod
    def from_parts(cls, parts: ModelParts) -> Model:
        return cls(**{field.name: getattr(parts, field.name) for field in attrs.fields(ModelParts)})

    def fit(self, x: np.ndarray, y: np.ndarray, **options: Any) -> TrainingResult:
        """Train in place on shuffled mini-batches; the same seed gives the same weights to the bit.

        The keyword options are the fields of :class:`laminae.training.FitOptions`:
        ``epochs``, ``batch_size``, ``seed``, ``threads``, ``validation_data``,
        ``test_data``, ``progress``, ``run_dir``, ``resume``, ``on_epoch``,
        ``registry``, ``loggers`` (objects sent the run's events, beside the
        spec's ``train.log``) and ``trial``.  Ctrl-C or SIGTERM stops after the current batch and
        returns with ``interrupted`` set; pass the returned ``state`` as
        ``resume`` to continue exactly where it stopped.  A loss that becomes
        NaN or infinite raises :class:`laminae.TrainingError`.
        """
        return fit(self, x, y, FitOptions(**options))

    def evaluate(self, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` in inference mode, scored in
        ``threads`` processes side by side (default: ``train.threads``; on
        Linux), each taking whole chunks in turn: the same figures, to the bit,
        whatever the count."""
        threads = self.train_config.threads if threads is None else threads
        try:
            thread_count(self, attrs.fields(TrainingState).threads, threads)
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"cannot evaluate: {one_line(exc)}") from None
        return evaluate_in_processes(self, x, y, threads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of every sample (int64)."""
        outputs = self.network.predict(x)
        refuse_non_finite(outputs)
        return outputs.argmax(axis=1).astype(np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: the loss's own ``probabilities(output)`` if it has
        one, else the softmax of the outputs (read as scores, as cross-entropy does)."""
        outputs = self.network.predict(x)
        refuse_non_finite(outputs)
        convert = getattr(self.loss, "probabilities", None)
        if convert is not None:
            with blamed_on(lambda: self.network.registry.describe("losses", self.loss), "probabilities"):
                return convert(outputs)
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def save(self, path: str | os.PathLike, *, registry: Registry | None = None) -> Path:
        """Write a checkpoint that :func:`laminae.load` reads back without any TOML file."""
        return checkpoint.save(self, path, registry=registry)

    def export_onnx(self, path: str | os.PathLike, *, logits: bool = False) -> Path:
        """Write the network as an ONNX model that returns :meth:`predict_proba`'s
        probabilities, or with ``logits`` the outputs (needs ``laminae[onnx]``;
        docs/export.md)."""
        return export_onnx(self, path, logits=logits)


def build(
    spec: Mapping[str, Any],
    *,
    registry: Registry | None = None,
    source: str = "<dict>",
    name: str | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> Model:
    """Build one model from a resolved spec, a model table, or a whole document.

    A document (a dict with ``models``) needs ``name`` unless it holds one
    model; every model in it is validated and built before the wanted one is
    returned.  ``train_overrides`` are ``[train]`` keys merged over the
    model's table before the network draws its parameters.  ``dtype``
    (``"float32"``, the default, or ``"float64"``) replaces the spec's own
    ``dtype``: the float type of the parameters and of every computation.
    """
    parts = assemble(spec, registry=registry, source=source, name=name, train_overrides=train_overrides, dtype=dtype)
    return Model.from_parts(parts)


def from_toml(
    path: str | Path,
    name: str,
    *,
    registry: Registry | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> Model:
    """Build the model ``name`` of a TOML file, after validating every model in it."""
    return build(
        read_toml(path), registry=registry, source=str(path), name=name, train_overrides=train_overrides, dtype=dtype
    )


def load(path: str | os.PathLike, *, registry: Registry | None = None) -> Model:
    """The model saved at ``path`` (a ``.npz`` file or a run directory), ready to use."""
    return Model.from_parts(checkpoint.read(path, registry=registry).parts)


def load_training(path: str | os.PathLike, *, registry: Registry | None = None) -> tuple[Model, TrainingState]:
    """The model of a run directory (or checkpoint) and where its training stopped,
    to continue it: ``model.fit(x, y, run_dir=path, resume=state)``."""
    saved = checkpoint.read(path, registry=registry)
    if saved.training is None:
        raise TrainingError(f"{saved.path}: holds no training position (saved with Model.save?); nothing to resume")
    return Model.from_parts(saved.parts), TrainingState.from_json(saved.training, str(saved.path))
