"""A network together with what trains it: the object the builder returns."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from laminae.network import Network
from laminae.protocols import Loss, Optimizer
from laminae.validators import non_negative_int, positive_int

if TYPE_CHECKING:
    from laminae.metrics import EpochMetrics
    from laminae.registry import Registry
    from laminae.training import TrainingResult, TrainingState

@attrs.define
class TrainConfig:
    """The ``[models.NAME.train]`` table; command-line flags override it key for key."""

    dataset: str = attrs.field(default="mnist", validator=attrs.validators.instance_of(str))
    epochs: int = attrs.field(default=1, validator=positive_int)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    validation: int = attrs.field(default=0, validator=non_negative_int)
    threads: int = attrs.field(default=1, validator=positive_int)


@attrs.define(eq=False)
class Model:
    """What ``laminae.build`` returns: ready to train, evaluate and save.

    ``spec`` is the fully resolved specification (``extends`` applied,
    defaults filled in) as plain JSON-able data, so a checkpoint can rebuild
    the model without the TOML file it came from.
    """

    network: Network
    loss: Loss
    optimizer: Optimizer
    spec: dict[str, Any]
    train_config: TrainConfig = attrs.field(factory=TrainConfig)
    name: str = "model"
    registry: Registry | None = attrs.field(default=None, repr=False)
    """The registry that built the model: training on threads (where workers cannot be forked) builds replicas with it."""

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        threads: int | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        test_data: tuple[np.ndarray, np.ndarray] | None = None,
        progress: bool | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: TrainingState | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
        registry: Registry | None = None,
    ) -> TrainingResult:
        """Train in place on shuffled mini-batches; the same seed gives the same weights to the bit.

        ``epochs``, ``batch_size``, ``seed`` and ``threads`` default to :attr:`train_config`;
        ``seed`` here drives only the batch order (the initial weights came
        from ``train.seed`` when the model was built).  ``threads`` above 1
        trains that many slices of every mini-batch side by side, in worker
        processes on Linux (:mod:`laminae.forked`), on threads elsewhere
        (:mod:`laminae.parallel`): faster for conv networks, deterministic,
        but not bit-identical to one.  ``progress`` shows a
        bar (default: when stderr is a terminal).  With ``run_dir``, every
        epoch appends to ``metrics.csv`` and rewrites the checkpoint
        ``model.npz``.  Ctrl-C or SIGTERM stops after the current batch and
        returns with ``interrupted`` set; pass the returned ``state`` (or a
        checkpoint's) as ``resume`` to continue exactly where it stopped.
        A loss that becomes NaN or infinite raises :class:`laminae.TrainingError`.
        """
        from laminae.training import fit

        return fit(
            self, x, y, epochs=epochs, batch_size=batch_size, seed=seed, threads=threads,
            validation_data=validation_data,
            test_data=test_data, progress=progress, run_dir=run_dir, resume=resume, on_epoch=on_epoch,
            registry=registry,
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` in inference mode."""
        from laminae.data_checks import check_data

        check_data(self, x, y, "evaluation data")
        total_loss, correct = 0.0, 0
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        chunk = self.network.inference_batch()
        for start in range(0, len(x), chunk):
            stop = start + chunk
            output = self.network.forward(x[start:stop], False)
            total_loss += self.loss.forward(output, y[start:stop]) * len(output)
            correct += int(np.count_nonzero(output.argmax(axis=1) == labels[start:stop]))
        return total_loss / len(x), correct / len(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of every sample (int64)."""
        return self.network.predict(x).argmax(axis=1).astype(np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: the loss's own ``probabilities(output)`` if it has
        one, else the softmax of the outputs (read as scores, as cross-entropy does)."""
        outputs = self.network.predict(x)
        convert = getattr(self.loss, "probabilities", None)
        if convert is not None:
            return convert(outputs)
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def save(self, path: str | os.PathLike, *, registry: Registry | None = None) -> Path:
        """Write a checkpoint that :func:`laminae.load` reads back without any TOML file."""
        from laminae.checkpoint import save

        return save(self, path, registry=registry)
