"""The training loop: seeded mini-batches, a NaN guard, graceful stops, checkpoints.

Everything that decides which numbers come out (the batch order, the
optimizer state, the parameters) lives in :class:`TrainingState` plus the
checkpoint's arrays, so a run stopped after any batch and resumed gives the
same weights, bit for bit, as one that never stopped.  The per-batch path is
kept to the work itself: no dicts built, no strings formatted, no second
forward pass for the training accuracy.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from laminae import batches
from laminae.data_checks import check_data
from laminae.errors import CheckpointError, TrainingError, one_line
from laminae.forked import ForkedStep, forking_works
from laminae.interrupt import GracefulStop
from laminae.metrics import EpochMetrics
from laminae.parallel import DataParallelStep, serial_step
from laminae.progress import ProgressBar
from laminae.randomness import rng_from_state
from laminae.rundir import RunDir
from laminae.validators import non_negative_int, non_negative_number, positive_int

if TYPE_CHECKING:
    from laminae.model import Model
    from laminae.registry import Registry

Arrays = tuple[np.ndarray, np.ndarray]
Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, int]]
"""Forward and backward on ``(x, y, labels)`` of one batch: ``(mean loss, correct)``."""


def _rng_state(_state: TrainingState, _attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        rng_from_state(value)


@attrs.define
class TrainingState:
    """Where a run stands: finished epochs, batches done in the next one, and the
    shuffle generator's state at that epoch's start, plus the running sums of
    the unfinished epoch so its metrics come out as if never interrupted.

    ``epochs``, ``batch_size``, ``seed`` and ``samples`` are the run's settings,
    kept so that a resumed run cannot silently train differently.  Every field
    is validated, on creation and on assignment: a state read from a
    checkpoint someone edited must fail here, not as a traceback mid-epoch.
    """

    epochs: int = attrs.field(validator=positive_int)
    batch_size: int = attrs.field(validator=positive_int)
    seed: int = attrs.field(validator=non_negative_int)
    samples: int = attrs.field(validator=positive_int)
    epoch: int = attrs.field(default=0, validator=non_negative_int)
    batch: int = attrs.field(default=0, validator=non_negative_int)
    rng_state: dict[str, Any] | None = attrs.field(default=None, validator=_rng_state)
    loss_sum: float = attrs.field(default=0.0, validator=non_negative_number)
    correct: int = attrs.field(default=0, validator=non_negative_int)
    seen: int = attrs.field(default=0, validator=non_negative_int)
    seconds: float = attrs.field(default=0.0, validator=non_negative_number)
    threads: int = attrs.field(default=1, validator=positive_int)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "checkpoint") -> TrainingState:
        """The state saved by :meth:`to_json`, or a one-line CheckpointError naming ``where``."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: corrupt training position (not a table)")
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{where}: corrupt training position (unknown key {unknown[0]!r})")
        try:
            state = cls(**data)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: corrupt training position ({one_line(exc)})") from None
        if state.batch > batches.batch_count(state.samples, state.batch_size) or state.seen > state.samples:
            raise CheckpointError(f"{where}: corrupt training position (batch {state.batch} of an epoch that has fewer)")
        return state


@attrs.define
class TrainingResult:
    """What ``fit`` returns: one :class:`EpochMetrics` per epoch it finished, and
    whether a signal stopped it (then ``state`` resumes it: ``fit(..., resume=state)``)."""

    history: list[EpochMetrics]
    state: TrainingState
    interrupted: bool = False
    checkpoint: Path | None = None
    stopped_by: str = ""
    """The signal that stopped training early (``"SIGINT"``), if any."""


def fit(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    validation_data: Arrays | None = None,
    test_data: Arrays | None = None,
    progress: bool | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: TrainingState | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    registry: Registry | None = None,
) -> TrainingResult:
    """Train ``model`` in place; see :meth:`laminae.model.Model.fit`."""
    check_data(model, x, y, "training data")
    for name, data in (("validation data", validation_data), ("test data", test_data)):
        if data is not None:
            check_data(model, *data, name)
    config = model.train_config
    try:
        if resume is None:
            state = TrainingState(
                epochs=config.epochs if epochs is None else epochs,
                batch_size=config.batch_size if batch_size is None else batch_size,
                seed=config.seed if seed is None else seed,
                samples=len(x),
                threads=config.threads if threads is None else threads,
            )
        else:
            state = resume
            _check_resumable(state, len(x), batch_size, seed, threads)
            if epochs is not None:
                state.epochs = epochs
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"cannot train: {one_line(exc)}") from None
    if state.rng_state is None:
        state.rng_state = batches.shuffle_rng(state.seed).bit_generator.state
    run = RunDir(Path(run_dir), model, registry) if run_dir is not None else None
    if run is not None:
        run.start(state)
    show = sys.stderr.isatty() if progress is None else progress
    history: list[EpochMetrics] = []
    # A loss that overflows is reported once, as a TrainingError naming the batch;
    # numpy's warnings about the same overflow would only print ahead of it.
    quiet_numpy = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    with _stepper(model, state.threads, registry) as step, GracefulStop() as stop, quiet_numpy:
        while not state.finished and not stop.requested:
            if not _train_epoch(model, x, y, state, stop, show, run, step):
                break
            row = EpochMetrics(
                epoch=state.epoch + 1,
                train_loss=state.loss_sum / state.seen,
                train_accuracy=state.correct / state.seen,
                val_accuracy=None if validation_data is None else model.evaluate(*validation_data)[1],
                test_accuracy=None if test_data is None else model.evaluate(*test_data)[1],
                seconds=state.seconds,
            )
            _next_epoch(state)
            history.append(row)
            if run is not None:
                run.log(row)
                run.save(state)
            if on_epoch is not None:
                on_epoch(row)
        interrupted = stop.requested and not state.finished
        if interrupted and run is not None:
            run.save(state)
    saved = run.checkpoint_file if run is not None else None
    return TrainingResult(history, state, interrupted, saved, stop.signal_name if interrupted else "")


def _stepper(model: Model, threads: int, registry: Registry | None) -> contextlib.AbstractContextManager[Step]:
    """What runs forward and backward on each batch: on one thread, or split across ``threads``."""
    if threads == 1:
        return contextlib.nullcontext(functools.partial(serial_step, model.network, model.loss))
    if forking_works():
        return ForkedStep(model, threads)
    return DataParallelStep(model, threads, registry)


def _train_epoch(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    state: TrainingState,
    stop: GracefulStop,
    show: bool,
    run: RunDir | None,
    step: Step,
) -> bool:
    """Run the rest of the current epoch; False if a signal stopped it early."""
    params, grads, optimizer = model.network.params, model.network.grads, model.optimizer
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    rng = rng_from_state(state.rng_state)
    order = batches.epoch_order(rng, len(x))
    size = state.batch_size
    count = batches.batch_count(len(x), size)
    bar = ProgressBar(state.epoch + 1, state.epochs, count, state.batch) if show else None
    loss_sum, correct, seen = state.loss_sum, state.correct, state.seen
    started = time.perf_counter()
    batch = state.batch
    try:
        while batch < count:
            index = order[batch * size : (batch + 1) * size]
            loss, hits = step(x[index], y[index], labels[index])
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {state.epoch + 1}, batch {batch + 1} of {count};"
                    f" training stopped ({run.last_good() if run is not None else 'nothing was saved'})"
                    " - try a lower learning rate"
                )
            correct += hits
            optimizer.step(params, grads)
            loss_sum += loss * len(index)
            seen += len(index)
            batch += 1
            if bar is not None:
                bar.step(loss_sum / seen, correct / seen)
            if stop.requested:
                break
    finally:
        if bar is not None:
            bar.close()
    state.batch, state.loss_sum, state.correct, state.seen = batch, loss_sum, correct, seen
    state.seconds += time.perf_counter() - started
    if batch == count:
        state.rng_state = rng.bit_generator.state
    return batch == count


def _next_epoch(state: TrainingState) -> None:
    state.epoch += 1
    state.batch, state.loss_sum, state.correct, state.seen, state.seconds = 0, 0.0, 0, 0, 0.0


def _check_resumable(
    state: TrainingState, samples: int, batch_size: int | None, seed: int | None, threads: int | None
) -> None:
    """Refuse what would make a resumed run differ from the one it continues."""
    if samples != state.samples:
        raise TrainingError(
            f"cannot resume: the run trained on {state.samples} samples, this training set has {samples}"
        )
    for key, given in (("batch_size", batch_size), ("seed", seed), ("threads", threads)):
        if given is not None and given != getattr(state, key):
            raise TrainingError(f"cannot resume with {key} {given}: the run used {getattr(state, key)}")
