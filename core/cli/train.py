"""``laminae train FILE NAME``: train a model of a TOML file into a run directory
(``laminae train NAME`` for a built-in model).

The run directory holds ``model.npz`` (rewritten after every epoch),
``metrics.csv`` and ``spec.json``.  Ctrl-C or SIGTERM stops after the current
batch, saves, prints how to resume and exits with 128 + the signal number
(130 for Ctrl-C); ``--resume RUN_DIR`` continues to the same weights, bit
for bit, as a run never stopped.  The last line printed is always the final
test accuracy, so scripts can read it with ``tail -n 1``.

Under ``mpiexec -n N`` every process runs this command and trains one slice
of every batch (:mod:`laminae.training.mpi`); rank 0 alone reads the
checkpoint it resumes (and hands it to the others), writes the run directory
and prints.  A failure on any process ends the whole job with one line
naming its rank and host (docs/distributed.md).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from laminae.cli import TRACEBACK_ENV, model_source, plugin_options, registry_from
from laminae.errors import LaminaeError, SpecError, location
from laminae.training.mpi import RanksDiffer, World, launched_world
from laminae.training.rundir import folder_name
from laminae.training.splits import load_splits

if TYPE_CHECKING:
    from laminae.model import Model
    from laminae.registry import Registry
    from laminae.training.state import TrainingState

HELP = "train a model of a TOML file, or a built-in one, and report its test accuracy"
EXAMPLE = "laminae train quickstart --epochs 1    (or: laminae train models.toml quickstart)"

OVERRIDES = ("epochs", "batch_size", "seed", "dataset", "threads")
"""The flags that override the model's [train] table key for key."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", nargs="?",
        help="a TOML file of models, or a built-in model's name (see laminae models); not with --resume",
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="the model to train (not needed when FILE holds one)")
    parser.add_argument("--epochs", type=int, metavar="N", help="train for N epochs (with --resume: in all)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="samples per mini-batch")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the initial weights and the batch order")
    parser.add_argument("--dataset", metavar="NAME", help="a registered data set (see `laminae plugins`)")
    parser.add_argument("--threads", type=int, metavar="N", help="train N slices of each mini-batch side by side (conv networks)")
    data_dir_option(parser)
    parser.add_argument("--out", metavar="RUN_DIR", help="the run directory (default: runs/NAME-<timestamp>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    parser.add_argument("--quiet", action="store_true", help="print only the final test accuracy")
    log_option(parser, "run")
    plugin_options(parser)


def data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", help="look for data sets in DIR first (then $LAMINAE_DATA, the cache)")


def log_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--log", metavar="NAME", action="append", default=[],
        help=f"also send each {what}'s events to the logger NAME, with its defaults (repeatable; see laminae plugins)",
    )


def run(args: argparse.Namespace) -> int:
    world = launched_world()
    if world is None:
        return _run(args, None)
    return _run_on_ranks(args, world)


def _run_on_ranks(args: argparse.Namespace, world: World) -> int:
    """The command on one of the MPI processes: only rank 0 prints (the others'
    stdout goes nowhere), and a failure here ends the whole job with one line
    naming this rank, never leaving the others waiting (``World.end_failed``)."""
    try:
        with contextlib.ExitStack() as silence:
            if not world.leads:
                silence.enter_context(contextlib.redirect_stdout(silence.enter_context(open(os.devnull, "w"))))
            return _run(args, world)
    except RanksDiffer as err:  # every rank found it alike: rank 0 says it
        world.end_failed(f"laminae train: error: {err}", everywhere=True)
    except LaminaeError as err:
        if args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exception(err)
        world.end_failed(f"laminae train: error: {world.name()}: {err}")
    except KeyboardInterrupt:  # a second Ctrl-C: at once, without saving
        world.end_failed(f"laminae train: interrupted ({world.name()})", status=130)
    except Exception as exc:  # noqa: BLE001 - MPI's own failure, or a bug (its traceback first)
        reason = world.mpi_error(exc)
        if reason is None:
            traceback.print_exc()
            reason = f"{type(exc).__name__}: {exc}"
        world.end_failed(f"laminae train: error: {world.name()}: {reason}")


def _run(args: argparse.Namespace, world: World | None) -> int:
    from laminae.model import from_toml
    from laminae.persistence.checkpoint import checkpoint_path

    registry = registry_from(args)
    overrides = {key: getattr(args, key) for key in OVERRIDES if getattr(args, key) is not None}
    if args.resume is not None:
        if args.file is not None or args.out is not None:
            raise SpecError("--resume RUN_DIR continues that run: give no FILE, NAME or --out with it")
        model, state = _load_training(args.resume, registry, world)
        run_dir = Path(args.resume)
        where = f"{checkpoint_path(args.resume)}: model {model.name!r}"
    else:
        if args.file is None:
            raise SpecError("give a built-in model's NAME, or a TOML FILE and a model NAME (or --resume RUN_DIR)")
        model_source(args)
        model = from_toml(args.file, args.name, registry=registry, train_overrides=overrides)
        state = None
        run_dir = Path(args.out) if args.out is not None else _new_run_dir(model.name)
        where = f"{args.file}: model {model.name!r}"
    with location(where):
        return _train(args, model, state, run_dir, registry, world)


def _load_training(path: str, registry: Registry, world: World | None) -> tuple[Model, TrainingState]:
    """The run to resume: read by rank 0, whose machine holds the run directory,
    and handed to the other MPI processes as the checkpoint file's bytes."""
    from laminae.model import load_training
    from laminae.persistence.checkpoint import checkpoint_path

    if world is None:
        return load_training(path, registry=registry)
    if world.leads:
        loaded = load_training(path, registry=registry)
        world.share_file(checkpoint_path(path).read_bytes())
        return loaded
    data = world.share_file(None)
    with tempfile.TemporaryDirectory(prefix="laminae-resume-") as folder:
        copy = Path(folder) / "model.npz"
        copy.write_bytes(data)
        return load_training(copy, registry=registry)


def _train(
    args: argparse.Namespace,
    model: Model,
    state: TrainingState | None,
    run_dir: Path,
    registry: Registry,
    world: World | None,
) -> int:
    """Load the data, train, report; every error gets the file and model in front."""
    config = model.train_config
    with location("--log"):
        loggers = [registry.create("loggers", name) for name in args.log]
    splits = load_splits(registry, args.dataset or config.dataset, args.data_dir, config.validation, config.seed)
    validation = None if splits.validation is None else (splits.validation.x, splits.validation.y)
    epochs = config.epochs if state is None else state.epochs if args.epochs is None else args.epochs
    if not args.quiet:
        print(f"training {model.name} on {splits.source}; run directory {run_dir}", flush=True)
    result = model.fit(
        splits.train.x,
        splits.train.y,
        # Without --resume these flags already went into the spec through train_overrides.
        epochs=args.epochs if state is not None else None,
        batch_size=args.batch_size if state is not None else None,
        seed=args.seed if state is not None else None,
        threads=args.threads if state is not None or world is not None else None,  # MPI: each process is a slice
        validation_data=validation,
        test_data=(splits.test.x, splits.test.y),
        progress=False if args.quiet else None,
        run_dir=run_dir,
        resume=state,
        on_epoch=None if args.quiet else lambda row: print(row.summary(epochs), flush=True),
        registry=registry,
        loggers=loggers,
    )
    if result.interrupted:
        print(f"interrupted ({result.stopped_by}) at epoch {result.state.epoch + 1}, batch {result.state.batch};"
              f" checkpoint saved to {result.checkpoint}")
        print(f"resume with: laminae train --resume {run_dir}")
        return 128 + int(signal.Signals[result.stopped_by])
    if result.stopped_early and not args.quiet:
        config = model.train_config
        print(f"stopped early: no better {config.monitor} for {config.patience} epochs;"
              f" the best was epoch {result.state.best_epoch} ({run_dir / 'best.npz'})")
    if result.history:
        accuracy = result.history[-1].test_accuracy
    else:
        accuracy = model.evaluate(splits.test.x, splits.test.y)[1]
    if not args.quiet:
        print(f"checkpoint: {result.checkpoint}")
    print(f"test accuracy: {accuracy:.4f} ({round(accuracy * len(splits.test))}/{len(splits.test)})")
    return 0


def _new_run_dir(name: str) -> Path:
    """``runs/NAME-<timestamp>``, with a suffix if two runs start in the same second
    (NAME: :func:`~laminae.training.rundir.folder_name`)."""
    base = Path("runs") / f"{folder_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
