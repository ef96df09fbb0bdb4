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
from typing import Any

import attrs
import numpy as np

import laminae.training.batches as batches
from laminae.contracts import batch_problem
from laminae.errors import PluginError, TrainingError, blame, one_line
from laminae.network.assembly import ModelParts
from laminae.network.probe import probe, probe_schedule, schedule_label, transform_label
from laminae.randomness import rng_from_state
from laminae.registry import Registry
from laminae.training.data_checks import check_data
from laminae.training.broadcast import Broadcast
from laminae.training.evaluation import evaluate
from laminae.training.forked import ForkedStep, forking_works
from laminae.training.metrics import EpochMetrics
from laminae.training.mpi import MpiStep, World, check_same_start, launched_world
from laminae.training.progress import ProgressBar
from laminae.training.rundir import BEST_FILE, RunDir
from laminae.training.signals import GracefulStop
from laminae.training.state import TrainingState
from laminae.training.steps import Step, serial_step
from laminae.training.threads import ThreadedStep

Arrays = tuple[np.ndarray, np.ndarray]


@attrs.define(kw_only=True)
class FitOptions:
    """The keyword options of ``fit``, the one place they are named and typed.

    ``epochs``, ``batch_size``, ``seed`` and ``threads`` default to the
    model's ``[train]`` table; ``seed`` here drives only the batch order (the
    initial weights came from ``train.seed`` when the model was built).
    ``threads`` above 1 trains that many slices of every mini-batch side by
    side, in worker processes on Linux, on threads elsewhere: faster for conv
    networks, deterministic, but not bit-identical to one.  Under ``mpiexec
    -n N`` each of the N processes trains one slice instead (``threads``
    must then be left out, or 1), to the numbers of ``threads = N``; only
    rank 0 writes ``run_dir``, shows progress and tells the loggers.  ``progress``
    shows a bar (default: when stderr is a terminal).  With ``run_dir``,
    every epoch appends to ``metrics.csv`` and rewrites the checkpoint
    ``model.npz``.  ``resume`` is a :class:`TrainingState` (returned by an
    interrupted ``fit``, or read from a checkpoint) to continue exactly where
    it stopped.  ``on_epoch`` is called with each finished epoch's metrics;
    ``registry`` is the one whose plugins a checkpoint's versions name.
    ``loggers`` are logger objects (:class:`laminae.Logger`) sent the run's
    events beside the model's own ``train.log`` ones; ``trial`` is the
    ``laminae tune`` study and trial number the run is, for them.
    """

    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    threads: int | None = None
    validation_data: Arrays | None = None
    test_data: Arrays | None = None
    progress: bool | None = None
    run_dir: str | os.PathLike | None = None
    resume: TrainingState | None = None
    on_epoch: Callable[[EpochMetrics], None] | None = None
    registry: Registry | None = None
    loggers: list[Any] = attrs.field(factory=list)
    trial: tuple[str, int] | None = None


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
    stopped_early: bool = False
    """Whether ``train.patience`` epochs passed without a better validation figure."""
    late_signal: str = ""
    """A signal that came after the last batch (``"SIGINT"``): training finished
    all the same, but a caller that runs fit after fit (``laminae tune``) was
    asked to stop, and only this result can tell it."""


def fit(parts: ModelParts, x: np.ndarray, y: np.ndarray, options: FitOptions | None = None) -> TrainingResult:
    """Train ``parts`` in place on shuffled mini-batches; the same seed gives the
    same weights to the bit.  Ctrl-C or SIGTERM stops after the current batch
    and returns with ``interrupted`` set; a loss that becomes NaN or infinite
    raises :class:`laminae.TrainingError`.  See :class:`FitOptions`."""
    o = options if options is not None else FitOptions()
    check_data(parts.network, x, y, "training data")
    for name, data in (("validation data", o.validation_data), ("test data", o.test_data)):
        if data is not None:
            check_data(parts.network, *data, name)
    config = parts.train_config
    world = launched_world()
    try:
        if o.resume is None:
            state = TrainingState(
                epochs=config.epochs if o.epochs is None else o.epochs,
                batch_size=config.batch_size if o.batch_size is None else o.batch_size,
                seed=config.seed if o.seed is None else o.seed,
                samples=len(x),
                threads=config.threads if o.threads is None else o.threads,
            )
        else:
            state = o.resume
        _spread(state, world, o.threads, resumed=o.resume is not None)
        if o.resume is not None:
            _check_resumable(state, len(x), o.batch_size, o.seed, o.threads if world is None else None)
            if o.epochs is not None:
                state.epochs = o.epochs
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"cannot train: {one_line(exc)}") from None
    if state.rng_state is None:
        state.rng_state = batches.shuffle_rng(state.seed).bit_generator.state
    augment = None
    if parts.transforms:
        if state.augment_state is None:
            state.augment_state = batches.augment_rng(state.seed).bit_generator.state
        augment = rng_from_state(state.augment_state)
    if not parts.network.probed:  # a plugin's broken contract, named before the first batch
        probe(parts.network, training=False)
        parts.network.probed = True
    steps_per_epoch = batches.batch_count(len(x), state.batch_size)
    probe_schedule(parts, steps_per_epoch, state.epochs)
    leads = world is None or world.leads  # the one process that writes and speaks
    if world is not None:
        check_same_start(world, parts, {"training": (x, y), "validation": o.validation_data, "test": o.test_data})
    broadcast = Broadcast.of(parts, o.loggers) if leads else Broadcast()
    run = RunDir(Path(o.run_dir), parts, o.registry) if o.run_dir is not None and leads else None
    stopped_early = interrupted = False
    history: list[EpochMetrics] = []
    status, reason = "failed", ""
    try:
        if run is not None:
            run.start(state)
        show = leads and (sys.stderr.isatty() if o.progress is None else o.progress)
        # A loss that overflows is reported once, as a TrainingError naming the batch;
        # numpy's warnings about the same overflow would only print ahead of it.
        quiet_numpy = np.errstate(over="ignore", invalid="ignore", divide="ignore")
        with GracefulStop(agreed=world is not None) as stop, _stepper(parts, state, o.registry, world, stop) as step, \
                quiet_numpy:
            samples = {"train": len(x)}
            samples.update({name: len(data[0]) for name, data in (("validation", o.validation_data),
                                                                    ("test", o.test_data)) if data is not None})
            resumed_from = state.epoch if o.resume is not None else None
            run_path = None if run is None else run.path
            broadcast.started(parts, samples, run_path, state.epochs, steps_per_epoch, resumed_from, o.trial)
            while not state.finished and not stop.requested:
                if not _train_epoch(parts, x, y, state, stop, show, run, step, augment):
                    break
                chunks = step.forward_chunks if isinstance(step, ForkedStep) else None  # the workers score too
                val_loss, val_accuracy = (
                    (None, None) if o.validation_data is None else evaluate(parts, *o.validation_data, chunks)
                )
                row = EpochMetrics(
                    epoch=state.epoch + 1,
                    train_loss=state.loss_sum / state.seen,
                    train_accuracy=state.correct / state.seen,
                    val_accuracy=val_accuracy,
                    test_accuracy=None if o.test_data is None else evaluate(parts, *o.test_data, chunks)[1],
                    seconds=state.seconds,
                    val_loss=val_loss,
                    lr=getattr(parts.optimizer, "lr", None),
                )
                _next_epoch(state)
                history.append(row)
                improved = _note_best(state, row, parts.train_config.monitor)
                stalled = bool(parts.train_config.patience) and row.epoch - state.best_epoch >= parts.train_config.patience
                if stalled:
                    state.epochs = state.epoch  # finished: a resume has nothing left to do
                    stopped_early = True
                if run is not None:
                    run.log(row)
                    run.save(state)
                    if improved:
                        run.save_best(state)
                broadcast.epoch(row, state.epoch * steps_per_epoch)
                if improved and run is not None:
                    broadcast.best(row, parts.train_config.monitor, run.path / BEST_FILE)
                if o.on_epoch is not None:
                    o.on_epoch(row)
            interrupted = stop.requested and not state.finished
            if interrupted and run is not None:
                run.save(state)
        status = "interrupted" if interrupted else "stopped early" if stopped_early else "finished"
        reason = stop.signal_name if interrupted else ""
    except Exception as exc:
        reason = one_line(exc)
        raise
    finally:
        if run is not None:
            run.close()
        broadcast.ended(parts, status, state.epoch, history, None if run is None else run.path, reason)
    saved = run.checkpoint_file if run is not None else None
    return TrainingResult(history, state, interrupted, saved, stop.signal_name if interrupted else "", stopped_early,
                          "" if interrupted else stop.signal_name)


def _stepper(
    parts: ModelParts, state: TrainingState, registry: Registry | None, world: World | None, stop: GracefulStop
) -> contextlib.AbstractContextManager[Step]:
    """What runs forward and backward on each batch: on one thread, split across
    ``state.threads``, or one slice on each MPI process of ``world``."""
    if world is not None:
        return MpiStep(parts, world, stop)
    threads = state.threads
    if threads == 1:
        return contextlib.nullcontext(functools.partial(serial_step, parts.network, parts.loss))
    if forking_works():
        return ForkedStep(parts, threads)
    return ThreadedStep(parts, threads, registry)


def _note_best(state: TrainingState, row: EpochMetrics, monitor: str) -> bool:
    """Whether ``row`` beats the best validation figure so far (and record it if so)."""
    value = row.val_accuracy if monitor == "val_accuracy" else row.val_loss
    if value is None:
        return False
    if state.best is not None and (value <= state.best if monitor == "val_accuracy" else value >= state.best):
        return False
    state.best, state.best_epoch = value, row.epoch
    return True


def _train_epoch(
    parts: ModelParts,
    x: np.ndarray,
    y: np.ndarray,
    state: TrainingState,
    stop: GracefulStop,
    show: bool,
    run: RunDir | None,
    step: Step,
    augment: np.random.Generator | None,
) -> bool:
    """Run the rest of the current epoch; False if a signal stopped it early.

    Every batch goes through the model's transforms (drawing from ``augment``),
    each held to the batch's shape and dtype, and, with a schedule, sets the
    optimizer's ``lr`` for its step first."""
    params, grads, optimizer = parts.network.params, parts.network.grads, parts.optimizer
    transforms, schedule, base_lr = parts.transforms, parts.schedule, parts.base_lr
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
            xb = x[index]
            for position, transform in enumerate(transforms):
                try:
                    augmented = transform(xb, augment)
                except Exception as exc:
                    raise blame(exc, lambda: transform_label(parts.network.registry, position, transform), "__call__")
                problem = batch_problem(augmented, xb)
                if problem is not None:
                    raise PluginError(f"{transform_label(parts.network.registry, position, transform)}: {problem}")
                xb = augmented
            if schedule is not None:
                try:
                    optimizer.lr = schedule(base_lr, state.epoch * count + batch, count, state.epochs)
                except Exception as exc:
                    raise blame(exc, lambda: schedule_label(parts.network.registry, schedule), "__call__")
            yb = y[index]
            loss, hits = step(xb, yb, yb if labels is y else labels[index])
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {state.epoch + 1}, batch {batch + 1} of {count};"
                    f" training stopped ({run.last_good() if run is not None else 'nothing was saved'})"
                    " - try a lower learning rate"
                )
            correct += hits
            try:  # not blamed_on: this runs every batch
                optimizer.step(params, grads)
            except Exception as exc:
                raise blame(exc, lambda: parts.network.registry.describe("optimizers", optimizer), "step")
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
        if augment is not None:
            state.augment_state = augment.bit_generator.state
    state.batch, state.loss_sum, state.correct, state.seen = batch, loss_sum, correct, seen
    state.seconds += time.perf_counter() - started
    if batch == count:
        state.rng_state = rng.bit_generator.state
    return batch == count


def _next_epoch(state: TrainingState) -> None:
    state.epoch += 1
    state.batch, state.loss_sum, state.correct, state.seen, state.seconds = 0, 0.0, 0, 0, 0.0


def _spread(state: TrainingState, world: World | None, threads: int | None, resumed: bool) -> None:
    """Where the run's slices train: on this machine (a run resumed from MPI
    processes takes as many threads: the same numbers), or one on each MPI
    process.  Under MPI ``threads`` (asked for) must be None or 1; a resumed
    run whose slices were another number goes on, saying in one line that
    its numbers now differ from the original run's."""
    if world is None:
        if state.processes > 1:
            state.threads, state.processes = state.slices, 1
        return
    if threads not in (None, 1):
        raise TrainingError(
            f"cannot train on {threads} threads under MPI: each of the {world.size} processes trains one slice"
            " of every batch; leave threads out"
        )
    if resumed and state.slices != world.size and world.leads:
        print(
            f"laminae: note: the run trained {state.slices} slice{'s' if state.slices > 1 else ''} of every batch,"
            f" this one trains {world.size} (one per MPI process): its numbers from here on differ from the original run's",
            file=sys.stderr,
            flush=True,
        )
    state.threads, state.processes = 1, world.size


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
