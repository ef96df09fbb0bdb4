"""A data-parallel step whose extra slices run in forked worker processes.

Threads share one interpreter lock, and a conv network's step is hundreds
of numpy calls, each releasing and retaking it: two threads spent their
time handing the lock over (futex wake-ups were a sixth of the profile) and
a lenet step on two threads took 4.0 ms against 3.3 on one.  Processes
share no lock: in a worker forked from the training process the same
step took 2.3 ms.

Each worker is a copy of the training process made on the first batch, so
its network is a replica built by nothing but ``fork``: any layer works,
even one registered at run time.  It waits on a pipe; for each batch it
copies the model's parameters from shared memory into its own arrays, runs
forward and backward on its slice (copied into shared memory by the
caller), and writes its gradients, weighted by the slice's share of the
batch, and its loss back into shared memory.  The caller combines them in
slice order exactly as :class:`~laminae.parallel.DataParallelStep` does,
so both give the same numbers bit for bit.  A worker keeps the numpy error
settings the caller had when it forked (``fit`` silences overflow warnings
for the whole run, and so for its workers).  Workers ignore Ctrl-C (the
training process decides when to stop) and leave when their pipe closes,
whatever ended the training process.  Only where ``fork`` is safe, on Linux.
"""
from __future__ import annotations

import mmap
import os
import signal
import sys
import time
import warnings
from math import prod
from typing import TYPE_CHECKING

import numpy as np

from laminae.errors import TrainingError
from laminae.parallel import combine_slices, refuse_stateful_layers, serial_step, slice_bounds, weighted_slice_step

if TYPE_CHECKING:
    from laminae.model import Model

MESSAGE_BYTES = 4096
"""The most a worker writes to its pipe at once: writes up to this size are atomic."""


def forking_works() -> bool:
    """Whether this platform forks safely (macOS's system libraries may not)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class SharedArrays:
    """numpy arrays in one anonymous shared mapping: a forked process sees the
    same memory, so nothing is pickled or sent through pipes."""

    def __init__(self, layout: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        sizes = {key: prod(shape) * np.dtype(dtype).itemsize for key, (shape, dtype) in layout.items()}
        self._mapping = mmap.mmap(-1, max(1, sum(-(-size // 64) * 64 for size in sizes.values())))
        self.arrays: dict[str, np.ndarray] = {}
        offset = 0
        for key, (shape, dtype) in layout.items():
            self.arrays[key] = np.frombuffer(self._mapping, dtype, prod(shape), offset).reshape(shape)
            offset += -(-sizes[key] // 64) * 64  # each array on its own cache lines

    def close(self) -> None:
        self.arrays.clear()
        try:
            self._mapping.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with the last one
            pass


class ForkedStep:
    """:func:`~laminae.parallel.serial_step` split over ``workers`` slices: the
    first on the calling process, each other in a worker process; use as a
    context manager."""

    def __init__(self, model: Model, workers: int) -> None:
        refuse_stateful_layers(model.network, workers)
        self.model, self.workers = model, workers
        self.pids: list[int] = []
        self._pipes: list[tuple[int, int]] = []  # (read results, write commands) per worker
        self._shared: SharedArrays | None = None
        self._capacity: tuple = ()

    def __enter__(self) -> ForkedStep:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1, user_api="blas")  # inherited by the workers
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stop_workers()
        finally:
            self._limits.restore_original_limits()

    def __call__(self, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        slices, weights = slice_bounds(len(x), self.workers)
        longest = max(part.stop - part.start for part in slices)
        capacity = (longest, x.shape[1:], x.dtype, y.shape[1:], y.dtype, labels.dtype)
        if not self.pids or self._capacity[0] < longest or self._capacity[1:] != capacity[1:]:
            try:
                self._start_workers(capacity)
            except OSError as exc:  # no memory, a process limit, a sandbox that forbids fork
                self._stop_workers()
                raise TrainingError(f"cannot start a worker process ({exc.strerror or exc}); use threads = 1") from exc
        shared = self._shared.arrays
        for name, param in self.model.network.params.items():
            np.copyto(shared[f"param/{name}"], param)
        for worker, part in enumerate(slices[1:], 1):
            count = part.stop - part.start
            for key, data in (("x", x), ("y", y), ("labels", labels)):
                shared[f"{worker}/{key}"][:count] = data[part]
            try:
                os.write(self._pipes[worker - 1][1], count.to_bytes(4, "little") + len(x).to_bytes(4, "little"))
            except BrokenPipeError:  # it died since the last batch
                self._fail(worker, b"")
        first, model = slices[0], self.model
        results = [weighted_slice_step(model.network, model.loss, x[first], y[first], labels[first], weights[0])]
        for worker in range(1, len(slices)):
            self._wait_for(worker)
            loss, correct = shared[f"{worker}/result"]
            results.append((float(loss), int(correct)))
        replica_grads = [
            {name: shared[f"{worker}/grad/{name}"] for name in self.model.network.grads}
            for worker in range(1, len(slices))
        ]
        return combine_slices(self.model.network.grads, replica_grads, weights, results)

    def _wait_for(self, worker: int) -> None:
        message = os.read(self._pipes[worker - 1][0], MESSAGE_BYTES)
        if message != b"d":
            self._fail(worker, message)

    def _fail(self, worker: int, message: bytes) -> None:
        """Stop every worker and raise what went wrong in this one: its error, or its death (no message)."""
        pid = self.pids[worker - 1]
        where = f"worker process {pid} (slice {worker + 1} of each batch)"
        reason = _exit_reason(pid) if not message else ""
        self._stop_workers()
        if not message:
            raise TrainingError(f"{where} died: {reason}")
        raise TrainingError(f"in {where}: {message[1:].decode(errors='replace')}")

    def _start_workers(self, capacity: tuple) -> None:
        self._stop_workers()
        longest, x_shape, x_dtype, y_shape, y_dtype, labels_dtype = capacity
        network = self.model.network
        layout = {f"param/{name}": (p.shape, p.dtype) for name, p in network.params.items()}
        for worker in range(1, self.workers):
            layout[f"{worker}/x"] = ((longest, *x_shape), x_dtype)
            layout[f"{worker}/y"] = ((longest, *y_shape), y_dtype)
            layout[f"{worker}/labels"] = ((longest,), labels_dtype)
            layout[f"{worker}/result"] = ((2,), np.dtype(np.float64))
            layout.update((f"{worker}/grad/{name}", (g.shape, g.dtype)) for name, g in network.grads.items())
        self._shared, self._capacity = SharedArrays(layout), capacity
        for worker in range(1, self.workers):
            commands_read, commands_write = os.pipe()
            results_read, results_write = os.pipe()
            try:
                with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads (the BLAS's) alive
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pid = os.fork()
            except OSError:
                for end in (commands_read, commands_write, results_read, results_write):
                    os.close(end)
                raise
            if pid == 0:  # the worker: it never returns from here
                status = 1
                try:
                    os.close(commands_write)
                    os.close(results_read)
                    for _, write_end in self._pipes:  # earlier workers' command pipes: theirs alone
                        os.close(write_end)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    _serve(self.model, self._shared.arrays, worker, commands_read, results_write)
                    status = 0
                finally:
                    os._exit(status)
            os.close(commands_read)
            os.close(results_write)
            self.pids.append(pid)
            self._pipes.append((results_read, commands_write))

    def _stop_workers(self) -> None:
        """Close every pipe (a worker reads the end of its commands and leaves) and reap the workers."""
        for results_read, commands_write in self._pipes:
            os.close(commands_write)
            os.close(results_read)
        for pid in self.pids:
            _reap(pid)
        self._pipes, self.pids = [], []
        if self._shared is not None:
            self._shared.close()
            self._shared = None


def _serve(model: Model, shared: dict[str, np.ndarray], worker: int, commands: int, results: int) -> None:
    """A worker's loop: one slice per command, until the command pipe closes."""
    network = model.network
    while True:
        command = os.read(commands, 8)
        if len(command) < 8:
            return
        count, batch = int.from_bytes(command[:4], "little"), int.from_bytes(command[4:], "little")
        weight = float(count) / batch  # as slice_bounds computes it
        for name, param in network.params.items():
            np.copyto(param, shared[f"param/{name}"])
        try:
            x, y, labels = (shared[f"{worker}/{key}"][:count] for key in ("x", "y", "labels"))
            loss, correct = serial_step(network, model.loss, x, y, labels)
            for name, grad in network.grads.items():  # weighted as weighted_slice_step does it
                np.multiply(grad, grad.dtype.type(weight), out=shared[f"{worker}/grad/{name}"])
        except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
            os.write(results, (b"e" + f"{type(exc).__name__}: {exc}".encode())[:MESSAGE_BYTES])
            continue
        shared[f"{worker}/result"][:] = (loss, correct)
        os.write(results, b"d")


def _reap(pid: int, patience: float = 10.0) -> None:
    """Wait for a worker that was told to leave; kill one that does not within ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # reaped already (by _exit_reason)
            return
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _exit_reason(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
