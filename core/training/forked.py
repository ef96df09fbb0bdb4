"""A data-parallel step whose extra slices run in forked worker processes.

Threads share one interpreter lock, and a conv network's step is hundreds
of numpy calls, each releasing and retaking it: two threads spent their
time handing the lock over (futex wake-ups were a sixth of the profile) and
a lenet step (with its optimizer update) took 4.4 ms on two threads
against 3.5 on one.  Processes share no lock: with a worker forked from
the training process the same step took 2.5 ms.

Each worker is a copy of the training process made on the first batch, so
its network is a replica built by nothing but ``fork``: any layer works,
even one registered at run time.  It waits on a pipe; for each batch it
copies the model's parameters from shared memory into its own arrays, runs
forward and backward on its slice (copied into shared memory by the
caller), and writes its gradients, weighted by the slice's share of the
batch, and its loss back into shared memory.  The caller combines them in
slice order exactly as :class:`~laminae.training.threads.ThreadedStep` does,
so both give the same numbers bit for bit.  A worker keeps the numpy error
settings the caller had when it forked (``fit`` silences overflow warnings
for the whole run, and so for its workers).  Only where ``fork`` is safe,
on Linux.

Between epochs the workers also score held-out data
(:meth:`ForkedStep.forward_chunks`): each takes whole chunks of it in turn
and writes its outputs into shared memory, so every chunk is computed
exactly as one process computes it, and the scores are the same bits.

The pipes carry little: a command is a slice's length, weight and kind
(``COMMAND``: a training step, or a forward pass in inference mode), a
length of 0 tells the worker to leave; a reply is ``b"d"``
(done), or ``b"e"`` and the error's text, and end-of-file means the worker
died.  Workers ignore Ctrl-C and SIGTERM, which a terminal or a job
scheduler sends to the whole process group: the training process decides
when to stop (at the end of a batch, saving a checkpoint) and then tells
them to leave; they also leave when their command pipe closes, however the
training process ended.
"""
from __future__ import annotations

import mmap
import os
import signal
import struct
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from math import prod
from typing import NoReturn

import attrs
import numpy as np
from threadpoolctl import threadpool_limits

import laminae.errors as errors
from laminae.errors import LaminaeError, TrainingError
from laminae.network.assembly import ModelParts
from laminae.randomness import is_saved_generator
from laminae.training.slices import (
    combine_slices,
    combine_states,
    refuse_uncombinable_state,
    slice_bounds,
    slice_streams,
    start_slice,
    weigh_gradients,
    weighted_slice_step,
)
from laminae.training.steps import serial_step

COMMAND = struct.Struct("<IdB")
"""A slice's length, the weight of its gradients (its share of the batch) and
what to do with it: ``STEP`` (forward and backward) or ``FORWARD`` (inference)."""
STEP, FORWARD = 0, 1
LEAVE = COMMAND.pack(0, 0.0, STEP)
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


@attrs.define
class Worker:
    """One worker process and the two pipe ends the training process keeps."""

    pid: int
    slice_number: int
    replies: int
    commands: int

    def describe(self) -> str:
        return f"worker process {self.pid} (slice {self.slice_number} of each batch)"


@attrs.frozen
class Capacity:
    """What the shared memory was laid out for: a later batch that needs more starts new workers."""

    rows: int
    x: tuple[tuple[int, ...], np.dtype]
    y: tuple[tuple[int, ...], np.dtype]
    labels: np.dtype

    def holds(self, other: Capacity) -> bool:
        return self.rows >= other.rows and (self.x, self.y, self.labels) == (other.x, other.y, other.labels)


def _slot(worker: int, what: str) -> str:
    """The name of a worker's array in the shared memory: ``x``, ``y``, ``labels``, ``result``,
    ``out`` (inference outputs) or ``grad/<block>`` (an index into ``Network.grad_blocks``)."""
    return f"{worker}/{what}"


class ForkedStep:
    """:func:`~laminae.training.steps.serial_step` split over ``workers`` slices: the
    first on the calling process, each other in a worker process; use as a
    context manager.  Any exception during a step stops the workers (the next
    step starts new ones), so no reply is ever left unread."""

    def __init__(self, parts: ModelParts, workers: int) -> None:
        self.parts, self.workers = parts, workers
        self.started: list[Worker] = []
        self._shared: SharedArrays | None = None
        self._capacity: Capacity | None = None
        self._state_names: list[str] = []

    def __enter__(self) -> ForkedStep:
        self._limits = threadpool_limits(limits=1, user_api="blas")  # inherited by the workers
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stop_workers()
        finally:
            self._limits.restore_original_limits()

    def __call__(self, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        slices, weights = slice_bounds(len(x), self.workers)
        needed = Capacity(max(part.stop - part.start for part in slices), (x.shape[1:], x.dtype),
                          (y.shape[1:], y.dtype), labels.dtype)
        if self._capacity is None or not self._capacity.holds(needed):
            refuse_uncombinable_state(self.parts.network, self.workers)  # scoring alone needs no combining
            self._start_workers(needed)
        try:
            return self._step(x, y, labels, slices, weights)
        except BaseException:
            self._stop_workers()
            raise

    def forward_chunks(self, x: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
        """Inference-mode outputs of ``x``, ``chunk`` samples at a time and in
        order, the chunks dealt out in turns: the calling process computes the
        first of every ``workers`` chunks, each worker one of the others.
        Each chunk is computed whole, as :meth:`Network.forward` computes it
        in one process, so the outputs are the same bits.  A worker's outputs
        are views of shared memory, valid until the next one is asked for.
        Workers are started here if no step has started them (nor for a
        single chunk, which one process computes)."""
        network = self.parts.network
        if len(x) <= chunk and self._capacity is None:
            if len(x):
                yield network.forward(x, False)
            return
        rows, labels = min(chunk, len(x)), np.dtype(np.int64)
        current = self._capacity or Capacity(rows, (x.shape[1:], x.dtype), ((), labels), labels)
        needed = attrs.evolve(current, rows=max(current.rows, rows), x=(x.shape[1:], x.dtype))
        if self._capacity is None or not self._capacity.holds(needed):
            self._start_workers(needed)
        try:
            self._publish()
            for first in range(0, len(x), chunk * self.workers):
                parts = [slice(start, min(start + chunk, len(x)))
                         for start in range(first, min(first + chunk * self.workers, len(x)), chunk)]
                working = list(zip(self.started, parts[1:]))
                self._send(x, None, None, [(worker, part, 0.0) for worker, part in working], FORWARD)
                outputs = [network.forward(x[parts[0]], False)]
                for worker, part in working:
                    self._collect(worker)
                    outputs.append(self._shared.arrays[_slot(worker.slice_number, "out")][: part.stop - part.start])
                yield from outputs
        except GeneratorExit:  # closed between rounds, every reply read: the workers stay
            raise
        except BaseException:
            self._stop_workers()
            raise

    def _publish(self) -> None:
        """Copy the model's parameters and layer state into shared memory, where the workers take them."""
        shared, network = self._shared.arrays, self.parts.network
        for index, block in enumerate(network.param_blocks):
            np.copyto(shared[f"param/{index}"], block)
        if self._state_names:
            for name, value in network.state_dict().items():
                put_state(shared[f"state/{name}"], value)

    def _send(self, x, y, labels, working: list[tuple[Worker, slice, float]], kind: int) -> None:
        """Give each worker its slice of the arrays (those not None) and its command."""
        shared = self._shared.arrays
        for worker, part, weight in working:
            count = part.stop - part.start
            for key, data in (("x", x), ("y", y), ("labels", labels)):
                if data is not None:
                    shared[_slot(worker.slice_number, key)][:count] = data[part]
            try:
                os.write(worker.commands, COMMAND.pack(count, weight, kind))
            except BrokenPipeError:  # it died since the last command
                self._fail(worker, b"")

    def _collect(self, worker: Worker) -> None:
        """Wait for ``worker`` to be done; raise what went wrong there."""
        reply = os.read(worker.replies, MESSAGE_BYTES)
        if reply != b"d":
            self._fail(worker, reply)

    def _step(self, x, y, labels, slices: list[slice], weights: list[float]) -> tuple[float, int]:
        shared, network = self._shared.arrays, self.parts.network
        self._publish()
        working = list(zip(self.started, slices[1:], weights[1:]))
        self._send(x, y, labels, working, STEP)
        first = slices[0]
        results = [weighted_slice_step(network, self.parts.loss, x[first], y[first], labels[first], weights[0])]
        for worker, _, _ in working:
            self._collect(worker)
            loss, correct = shared[_slot(worker.slice_number, "result")]
            results.append((float(loss), int(correct)))
        other_grads = [
            [shared[_slot(worker.slice_number, f"grad/{index}")] for index in range(len(network.grad_blocks))]
            for worker, _, _ in working
        ]
        if self._state_names:
            state = network.state_dict()
            other_states = [
                {name: get_state(shared[_slot(worker.slice_number, f"state/{name}")], state[name]) for name in self._state_names}
                for worker, _, _ in working
            ]
            combine_states(network, [state, *other_states], weights)
        return combine_slices(network.grad_blocks, other_grads, weights, results)

    def _fail(self, worker: Worker, reply: bytes) -> NoReturn:
        """Raise what went wrong in ``worker``: its error, or its death (no reply)."""
        if reply:
            _raise_reply(worker, reply[1:].decode(errors="replace"))
        raise TrainingError(f"{worker.describe()} died: {_exit_reason(worker.pid)}")

    def _start_workers(self, capacity: Capacity) -> None:
        self._stop_workers()
        network = self.parts.network
        layout = {f"param/{index}": (p.shape, p.dtype) for index, p in enumerate(network.param_blocks)}
        state = {name: np.asarray(value) for name, value in network.state_dict().items()}
        self._state_names = list(state)
        layout.update((f"state/{name}", state_layout(value)) for name, value in state.items())
        for number in range(2, self.workers + 1):
            layout[_slot(number, "x")] = ((capacity.rows, *capacity.x[0]), capacity.x[1])
            layout[_slot(number, "y")] = ((capacity.rows, *capacity.y[0]), capacity.y[1])
            layout[_slot(number, "labels")] = ((capacity.rows,), capacity.labels)
            layout[_slot(number, "result")] = ((2,), np.dtype(np.float64))
            layout[_slot(number, "out")] = ((capacity.rows, *network.output_shape), network.dtype)
            layout.update((_slot(number, f"grad/{i}"), (g.shape, g.dtype)) for i, g in enumerate(network.grad_blocks))
            layout.update((_slot(number, f"state/{name}"), state_layout(v)) for name, v in state.items())
        try:
            self._shared, self._capacity = SharedArrays(layout), capacity
            for number in range(2, self.workers + 1):
                self.started.append(self._fork(number))
        except OSError as exc:  # no memory, a process limit, a sandbox that forbids fork
            self._stop_workers()
            raise TrainingError(f"cannot start a worker process ({exc.strerror or exc}); use threads = 1") from exc

    def _fork(self, number: int) -> Worker:
        """Start the worker for slice ``number`` (2, 3, ...); it never returns from here."""
        ends: list[int] = []
        try:
            ends += os.pipe()  # commands: read by the worker, written here
            ends += os.pipe()  # replies: written by the worker, read here
            filters = list(warnings.filters)
            with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads (the BLAS's) alive
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            for end in ends:
                os.close(end)
            raise
        commands_read, commands_write, replies_read, replies_write = ends
        if pid == 0:
            status = 1
            try:
                warnings.filters[:] = filters
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                for end in (commands_write, replies_read, *(e for w in self.started for e in (w.commands, w.replies))):
                    os.close(end)  # the other workers' pipes too: this worker has no business with them
                _serve(self.parts, self._shared.arrays, number, commands_read, replies_write)
                status = 0
            finally:
                os._exit(status)
        os.close(commands_read)
        os.close(replies_write)
        return Worker(pid, number, replies_read, commands_write)

    def _stop_workers(self) -> None:
        """Tell every worker to leave, close the pipes and reap the workers."""
        started, self.started = self.started, []
        for worker in started:
            try:
                os.write(worker.commands, LEAVE)
            except OSError:  # gone already
                pass
        for worker in started:
            os.close(worker.commands)
            os.close(worker.replies)
        for worker in started:
            _reap(worker.pid)
        if self._shared is not None:
            self._shared.close()
        self._shared, self._capacity = None, None


BYTES_ROOM = 4096
"""Bytes a saved generator (:func:`laminae.randomness.is_saved_generator`),
whose length varies with the numbers in it, may grow by in shared memory."""


def state_layout(value: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
    """The shared-memory slot for one layer-state array: its own shape, or for
    bytes room for their length (8 bytes) and up to ``BYTES_ROOM`` more than now."""
    if is_saved_generator(value):
        return (8 + value.size + BYTES_ROOM,), np.dtype(np.uint8)
    return value.shape, value.dtype


def put_state(slot: np.ndarray, value: np.ndarray) -> None:
    """Copy a layer-state array into its slot (see :func:`state_layout`)."""
    if not is_saved_generator(value):
        np.copyto(slot, value)
        return
    if value.size > slot.size - 8:
        raise TrainingError(f"a layer's saved state grew to {value.size:,} bytes, more than training in slices has room for")
    slot[:8] = np.frombuffer(struct.pack("<Q", value.size), np.uint8)
    slot[8 : 8 + value.size] = value


def get_state(slot: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The array :func:`put_state` left in ``slot``, for a state shaped like ``like``."""
    if not is_saved_generator(like):
        return slot
    (size,) = struct.unpack("<Q", slot[:8].tobytes())
    return slot[8 : 8 + size]


def _serve(parts: ModelParts, shared: dict[str, np.ndarray], number: int, commands: int, replies: int) -> None:
    """A worker's loop: one slice per command, until told to leave or the command pipe closes."""
    network = parts.network
    grads_out = [shared[_slot(number, f"grad/{index}")] for index in range(len(network.grad_blocks))]
    start = network.state_dict()  # for each state's kind: bytes or a fixed array
    state_names = list(start)
    streams = slice_streams(network)
    while True:
        command = os.read(commands, COMMAND.size)
        if len(command) < COMMAND.size:
            return
        count, weight, kind = COMMAND.unpack(command)
        if count == 0:
            return
        for index, block in enumerate(network.param_blocks):
            np.copyto(block, shared[f"param/{index}"])
        try:
            if state_names:  # the state the step starts from, copied: a layer may keep what it is given
                network.load_state_dict({name: get_state(shared[f"state/{name}"], start[name]).copy() for name in state_names})
            if kind == FORWARD:
                np.copyto(shared[_slot(number, "out")][:count], network.forward(shared[_slot(number, "x")][:count], False))
                os.write(replies, b"d")
                continue
            if state_names:
                start_slice(streams, number - 1)
            x, y, labels = (shared[_slot(number, key)][:count] for key in ("x", "y", "labels"))
            loss, correct = serial_step(network, parts.loss, x, y, labels)
            weigh_gradients(network.grad_blocks, weight, out=grads_out)
            if state_names:
                for name, value in network.state_dict().items():
                    put_state(shared[_slot(number, f"state/{name}")], value)
        except Exception as exc:  # noqa: BLE001 - reported to the training process, which raises it
            os.write(replies, (b"e" + _error_text(exc).encode())[:MESSAGE_BYTES])
            continue
        shared[_slot(number, "result")][:] = (loss, correct)
        os.write(replies, b"d")


def _error_text(exc: Exception) -> str:
    """A worker's exception as its reply: ``"<Laminae error class>|<message>|<file:line>"``
    for Laminae's own (a plugin's exception, located by the network), ``"|<type>: <message>|<file:line>"``
    otherwise.  The traceback cannot cross the process boundary, so it says where at least."""
    located = isinstance(exc, LaminaeError)
    origin = exc.__cause__ if located and exc.__cause__ is not None else exc
    frame = traceback.extract_tb(origin.__traceback__)[-1]
    message = str(exc) if located else f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__ if located else ''}|{message}|{frame.filename}:{frame.lineno}"


def _raise_reply(worker: Worker, reply: str) -> NoReturn:
    """Raise in the training process what :func:`_error_text` reported from ``worker``."""
    kind, _, rest = reply.partition("|")
    message, _, where = rest.rpartition("|")
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, LaminaeError):
        raise cls(f"{message} (in {worker.describe()}, raised at {where})")
    raise TrainingError(f"in {worker.describe()}: {message} (raised at {where})")


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
