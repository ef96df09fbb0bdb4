"""Data-parallel training across processes and machines on MPI: ``mpiexec -n N laminae train``.

Each of the N processes holds the whole model and trains one slice of every
batch: the slice, the share of the batch that weighs its gradients and the
random stream that process k gets are the ones slice k gets with
``threads = N`` on one machine (:mod:`~laminae.training.slices`).  The
slices' gradients (the network's ``grad_blocks``: its whole arena, one
buffer a dtype) are then added up along the binomial tree that
:func:`~laminae.training.slices.combine_slices` follows too
(:func:`~laminae.training.slices.reduction_rounds`), one ``Send``/``Recv``
of the arena a pair, so that process 0 ends with the very bits
``threads = N`` computes, having received at most ceil(log2 N) messages.
Process 0 then broadcasts the sum, the batch's loss and whether to stop (a
broadcast copies bits), and every process takes the same optimizer step.
MPI's own reductions (``Allreduce``) are not used: MPI promises no order of
addition, so their bits could differ from ``threads = N`` and from one MPI
library, or one run, to the next.

A layer's state (a batch norm's running averages: a few numbers) is
gathered to process 0, combined in slice order by the layer's own
``combine_states`` and broadcast.  Only process 0 writes the run
directory and speaks; the processes compare checksums of the data they
loaded and of the model they built before the first batch.  Every process
holds its BLAS to one thread, as every slice of ``threads = N`` does: one
process a core.

mpi4py is imported only here, and only when the environment says an MPI
launcher started this process (:func:`launched_world`): a plain
``laminae train`` never loads it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import socket
import struct
import sys
import termios
import time
from typing import Any, NoReturn

import attrs
import numpy as np
from threadpoolctl import threadpool_limits

from laminae.errors import TrainingError
from laminae.network.assembly import ModelParts
from laminae.optional import require
from laminae.training.liveness import Liveness, supervise
from laminae.training.signals import GracefulStop
from laminae.training.slices import (
    combine_states,
    reduction_rounds,
    refuse_uncombinable_state,
    slice_bounds,
    slice_streams,
    start_slice,
    weighted_loss,
    weighted_slice_step,
)

LAUNCHER_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
"""Set by MPICH's and Intel MPI's ``mpiexec`` (and Slurm's ``srun --mpi=pmi2``),
by PMIx launchers (``srun --mpi=pmix``, Open MPI 5) and by Open MPI: a process
without any of them was not started by an MPI launcher."""
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
"""How many processes the launcher started, where it says so."""
GRACE_SECONDS = 1.5
"""How long a process other than the first waits before reporting its own
failure: when every process fails alike (a model file missing everywhere),
the first's report ends the job before the others say the same again."""
FORWARD_SECONDS = 0.3
"""How long a failing process waits at most, its line written, for mpiexec's
proxy to read it before the process aborts the job: the proxy reads each
process's output from a pipe in its own time, and an abort that comes first
can tear the job down with the line still unread (seen once, on a loaded
machine: the job ended with status 2 and no word).  Bounded, because stderr
may be a pipe no one reads."""
TALLY = 3
"""The numbers a step sends along with the gradients: the slice's weighted
loss (a partial sum, up the tree), its correct predictions, and (down,
from process 0) the number of the signal that stops training, or 0."""


class RanksDiffer(TrainingError):
    """The processes compared what they loaded and found it differs: every
    process raises this alike, and only the first reports it."""


@attrs.frozen
class World:
    """The MPI processes training together: this one's rank, their number, its host."""

    comm: Any
    rank: int
    size: int
    host: str
    liveness: Liveness | None = None

    @property
    def leads(self) -> bool:
        """Whether this process is rank 0: the one that writes and speaks."""
        return self.rank == 0

    def name(self, rank: int | None = None, host: str | None = None, pid: int | None = None) -> str:
        rank = self.rank if rank is None else rank
        where = self.host if host is None else host
        return f"rank {rank} of {self.size} (host {where}{'' if pid is None else f', pid {pid}'})"

    def end_failed(self, line: str, status: int = 2, everywhere: bool = False) -> NoReturn:
        """End this process after a failure, and with it the whole job, so that no
        process is left waiting for a message that never comes: rank 0 says
        ``line`` at once; another rank says it after :data:`GRACE_SECONDS` (a
        failure every rank met has ended the job by then), then aborts the job
        (:func:`abort`: mpiexec then exits with ``status``).  A failure found
        ``everywhere`` alike (every rank compared the same checksums) only rank
        0 says."""
        if self.liveness is not None:  # this failure is spoken for: no other process reports it
            self.liveness.failing()
        if not self.leads:
            time.sleep(GRACE_SECONDS)
            if everywhere:
                abort(self.comm, status)
        print(line, file=sys.stderr, flush=True)
        abort(self.comm, status)

    def mpi_error(self, exc: BaseException) -> str | None:
        """What an MPI failure was (a process gone, a connection lost), or None
        when ``exc`` is no MPI error."""
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is None or not isinstance(exc, mpi.Exception):
            return None
        return " ".join(exc.Get_error_string().split())

    def share_file(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` (a checkpoint, which only rank 0's machine may hold), on every rank."""
        return self.comm.bcast(data if self.leads else None, root=0)

    def check_same(self, what: str, digest: str) -> None:
        """Raise :class:`RanksDiffer` on every rank, alike, when a rank's ``digest``
        of ``what`` differs from rank 0's; the line names that rank and its host."""
        everyone = self.comm.allgather((digest, self.host))
        first, first_host = everyone[0]
        for rank, (other, host) in enumerate(everyone):
            if other != first:
                raise RanksDiffer(
                    f"{what} on {self.name(rank, host)} differ from rank 0's (host {first_host}):"
                    f" sha256 {other[:12]} against {first[:12]}"
                )


def launched_world() -> World | None:
    """The processes this one trains with, when an MPI launcher started more than
    one; None otherwise, without importing mpi4py when no launcher started it."""
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        return None
    if any(os.environ.get(name) == "1" for name in SIZE_VARIABLES):
        return None
    return _world()


@functools.cache
def _world() -> World | None:
    """MPI started once per process (mpi4py initializes it on import)."""
    supervise()
    mpi = require("mpi4py.MPI", "mpi", "training under mpiexec")
    comm = mpi.COMM_WORLD
    started = next((os.environ[name] for name in SIZE_VARIABLES if name in os.environ), None)
    if started is not None and started.isdigit() and int(started) != comm.size:
        raise TrainingError(
            f"the launcher started {started} processes but MPI here sees {comm.size}: mpi4py is built for"
            " another MPI than this mpiexec's (see docs/distributed.md)"
        )
    if comm.size == 1:
        return None
    world = World(comm, comm.rank, comm.size, socket.gethostname())
    names = [world.name(rank, host, pid) for rank, (host, pid) in enumerate(comm.allgather((world.host, os.getpid())))]
    liveness = Liveness(comm, names, functools.partial(_abort_unheard, comm))
    liveness.start()
    return attrs.evolve(world, liveness=liveness)


def _abort_unheard(comm: Any, spoke: bool) -> NoReturn:
    """End the job after :class:`Liveness` found a process gone; one that did not
    speak first gives the one that did the time to be heard."""
    if not spoke:
        time.sleep(FORWARD_SECONDS)
    abort(comm, 2)


def abort(comm: Any, status: int) -> NoReturn:
    """``MPI_Abort`` once this process's line has left it: once mpiexec's proxy
    has read the pipe behind stderr empty (``FIONREAD``; at most
    :data:`FORWARD_SECONDS`).  MPICH's own word on the abort (a second line,
    "application called MPI_Abort") goes to /dev/null: the line said is the
    failure.  No MPI finalization: it would wait for the other processes."""
    sys.stdout.flush()
    deadline = time.monotonic() + FORWARD_SECONDS
    with contextlib.suppress(OSError):  # not a pipe, or no stderr: nothing to wait for
        while _unread(sys.stderr.fileno()) and time.monotonic() < deadline:
            time.sleep(0.005)
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    comm.Abort(status)
    os._exit(status)  # Abort does not return; should an MPI let it, still never finalize


def _unread(fd: int) -> int:
    """Bytes written to the pipe ``fd`` that its reader has not yet read."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def digest(arrays: list[np.ndarray | None]) -> str:
    """A sha256 of arrays' dtypes, shapes and bytes (None counts too)."""
    hasher = hashlib.sha256()
    for array in arrays:
        if array is None:
            hasher.update(b"none;")
            continue
        data = np.ascontiguousarray(array)
        hasher.update(f"{data.dtype.str}{data.shape};".encode())
        hasher.update(memoryview(data).cast("B"))
    return hasher.hexdigest()


def check_same_start(world: World, parts: ModelParts, data: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> None:
    """Before the first batch: every rank loaded the same data (a split at a time,
    so the line names which) and built or loaded the same model."""
    for split, arrays in data.items():
        world.check_same(f"the {split} data", digest([None, None] if arrays is None else list(arrays)))
    network = parts.network
    world.check_same("the model's parameters and layer state",
                     digest([*network.param_blocks, *network.state_dict().values()]))


class MpiStep:
    """:func:`~laminae.training.steps.serial_step` on this process's slice of every
    batch, the slices' gradients and states combined over MPI (see the module);
    ``stop`` is told after every batch whether rank 0 received a signal."""

    def __init__(self, parts: ModelParts, world: World, stop: GracefulStop) -> None:
        refuse_uncombinable_state(parts.network, world.size, on="MPI processes", instead="one MPI process")
        self.parts, self.world, self.stop = parts, world, stop
        network = parts.network
        self.stateful = bool(network.stateful_layers())
        self.streams = slice_streams(network)
        self.received = [np.empty_like(block) for block in network.grad_blocks]
        self.tally, self.received_tally = np.zeros(TALLY), np.zeros(TALLY)

    def __enter__(self) -> MpiStep:
        # One BLAS thread, as every slice of threads = N has: a GEMM split over
        # threads may add in another order, and N processes on N cores each
        # starting more threads only queue.
        self._limits = threadpool_limits(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._limits.restore_original_limits()

    def __call__(self, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        network, rank = self.parts.network, self.world.rank
        slices, weights = slice_bounds(len(x), self.world.size)
        used = len(slices)  # a batch smaller than the processes leaves the last ones idle
        if rank < used:
            if rank and self.streams:  # the step's starting state is every rank's: the last step broadcast it
                start_slice(self.streams, rank)
            part = slices[rank]
            loss, correct = weighted_slice_step(network, self.parts.loss, x[part], y[part], labels[part], weights[rank])
            self.tally[:2] = weighted_loss(weights[rank], loss), correct
            self._add_up(used)
        if self.stateful:
            self._combine_states(used, weights)
        if self.world.leads:
            self.tally[2] = self.stop.signal_number
        self._broadcast()
        self.stop.agree(int(self.tally[2]))
        return float(self.tally[0]), int(self.tally[1])

    def _add_up(self, used: int) -> None:
        """This rank's part in :func:`reduction_rounds`: receive and add, or send and be done."""
        comm, rank, blocks = self.world.comm, self.world.rank, self.parts.network.grad_blocks
        for pairs in reduction_rounds(used):
            for receiver, sender in pairs:
                if rank == receiver:
                    for block, received in zip(blocks, self.received):
                        comm.Recv(received, source=sender)
                        block += received
                    comm.Recv(self.received_tally, source=sender)
                    self.tally[:2] += self.received_tally[:2]
                elif rank == sender:
                    for block in blocks:
                        comm.Send(block, dest=receiver)
                    comm.Send(self.tally, dest=receiver)
                    return

    def _combine_states(self, used: int, weights: list[float]) -> None:
        """The slices' layer states, gathered to rank 0 in slice order, combined
        there by each layer's ``combine_states``, and broadcast back."""
        comm, network = self.world.comm, self.parts.network
        states = comm.gather(network.state_dict() if self.world.rank < used else None, root=0)
        if self.world.leads:
            combine_states(network, states[:used], weights)
        combined = comm.bcast(network.state_dict() if self.world.leads else None, root=0)
        if not self.world.leads:
            network.load_state_dict(combined)

    def _broadcast(self) -> None:
        """Rank 0's summed gradients and tally, to every rank."""
        comm = self.world.comm
        for block in self.parts.network.grad_blocks:
            comm.Bcast(block, root=0)
        comm.Bcast(self.tally, root=0)
