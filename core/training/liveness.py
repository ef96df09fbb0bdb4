"""Whether every MPI process still lives, watched over TCP beside MPI.

MPI tells neither of two failures: a process that dies leaves the others
waiting in a receive (MPICH's ``mpiexec`` then ends the job, naming a PID,
not a rank), and a machine cut off leaves them waiting for good.  So every
rank keeps one TCP connection to rank 0, and a thread at each end

- sends a heartbeat byte every :data:`HEARTBEAT_SECONDS`;
- reads the other end: a connection closed without a goodbye is a process
  that died (the kernel closes a killed process's sockets at once, before
  its launcher hears of it), and :data:`SILENCE_SECONDS` without a byte is
  a connection lost or a machine stopped;
- then says which rank in one line and ends the job (``end``, told whether
  this process spoke: MPI_Abort once the line is out).

Rank 0 watches every other rank; the others watch rank 0 only, and of them
rank 1 alone speaks of it.  A rank that fails on its own says its own line
and sends :data:`FAILING` first; one that ends sends :data:`ENDED`; neither
is then reported again.  Rank 0 finds the others by its host name, as
MPICH's launcher finds its proxies.

MPICH's launcher hears of a death too: from the close of the process's
launcher connection (``PMI_FD``), and from a child it reaps killed by a
signal.  Either way it kills every process at once, racing the line, and
prints a banner naming a PID.  So under MPICH the process the launcher
starts forks (:func:`supervise`): the child trains, and the parent, still
holding the launcher connection, waits for it and exits with its status, or
:data:`HOLD_SECONDS` after the child was killed: time for the watch to
speak and abort the job cleanly, and, should the watch be unable to, the
launcher's own cleanup still comes then.
"""
from __future__ import annotations

import atexit
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from laminae.errors import TrainingError

HEARTBEAT_SECONDS = 1.0
SILENCE_SECONDS = 10.0
"""Ten missed heartbeats: a loaded machine's thread is late by a little, never by this much."""
HOLD_SECONDS = 3.0
"""How long a supervisor outlives its killed child: the watch ends the job in
a few hundredths of a second, well within it."""
CONNECT_SECONDS = 30.0
"""How long rank 0 waits for every other rank to connect, and a rank to reach rank 0."""
HEARTBEAT, ENDED, FAILING = b".", b"E", b"F"
RANK = struct.Struct("!I")


class Liveness:
    """The watch of one process (see the module): started by :meth:`start`,
    told :meth:`failing` before a failure of its own, ended at exit."""

    def __init__(self, comm: Any, names: list[str], end: Callable[[bool], NoReturn]) -> None:
        self.comm, self.rank, self.names, self.end = comm, comm.rank, names, end
        self.peers: dict[socket.socket, int] = {}
        self.heard: dict[int, float] = {}
        self.quiet = threading.Event()  # a failure already spoken for, or the end: report nothing more
        self.selector = selectors.DefaultSelector()

    def start(self) -> None:
        """Connect every rank to rank 0 (a collective call: every rank makes it) and watch."""
        listener = socket.create_server(("", 0), backlog=len(self.names)) if self.rank == 0 else None
        host, port = self.comm.bcast(None if listener is None else (socket.gethostname(), listener.getsockname()[1]))
        try:
            if listener is not None:
                with listener:
                    self._accept(listener)
            else:
                self._connect(host, port)
        except OSError as err:
            what = (f"only {len(self.peers)} of the other {len(self.names) - 1} processes connected in"
                    f" {CONNECT_SECONDS:g} s to TCP port {port}" if listener is not None else
                    f"could not connect to rank 0 ({host}, TCP port {port}): {err}")
            raise TrainingError(f"{self.names[self.rank]}: {what}; rank 0 watches over TCP that every process"
                                " lives (see docs/distributed.md)") from None
        now = time.monotonic()
        for sock, rank in self.peers.items():
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, rank)
            self.heard[rank] = now
        atexit.register(self.close, ENDED)
        threading.Thread(target=self._watch, name="laminae-liveness", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(CONNECT_SECONDS)
        while len(self.peers) < len(self.names) - 1:
            sock, _ = listener.accept()
            sock.settimeout(CONNECT_SECONDS)
            greeting = sock.recv(RANK.size, socket.MSG_WAITALL)
            if len(greeting) < RANK.size:
                raise ConnectionError("a connection closed during its greeting")
            (rank,) = RANK.unpack(greeting)
            self.peers[sock] = rank

    def _connect(self, host: str, port: int) -> None:
        sock = socket.create_connection((host, port), timeout=CONNECT_SECONDS)
        sock.sendall(RANK.pack(self.rank))
        self.peers[sock] = 0

    def failing(self) -> None:
        """This process failed and says so itself: the others must not report it too."""
        self.close(FAILING)

    def close(self, goodbye: bytes) -> None:
        """Send ``goodbye`` to every peer and stop watching."""
        self.quiet.set()
        for sock in self.peers:
            try:
                sock.send(goodbye)
            except OSError:
                pass

    def _watch(self) -> None:
        sent = 0.0
        while not self.quiet.is_set():
            for key, _ in self.selector.select(timeout=HEARTBEAT_SECONDS):
                self._read(key.fileobj, key.data)
            now = time.monotonic()
            if now - sent >= HEARTBEAT_SECONDS:
                sent = now
                for sock in self.peers:
                    try:
                        sock.send(HEARTBEAT)
                    except OSError:  # a full buffer (a stopped peer) or a closed one: the reading side decides
                        pass
            for rank, heard in list(self.heard.items()):
                if now - heard > SILENCE_SECONDS:
                    self._report(rank, f"not heard from for {SILENCE_SECONDS:g} s (its connection lost,"
                                       " or its machine stopped)")

    def _read(self, sock: Any, rank: int) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if FAILING in data or (ENDED in data and rank == 0):  # the job ends by that rank's word
            self.quiet.set()
        if not data and not self.quiet.is_set() and rank in self.heard:
            self._report(rank, "ended without a word (killed by a signal, or out of memory?)")
        if not data or ENDED in data:
            self.selector.unregister(sock)
            self.heard.pop(rank, None)
        else:
            self.heard[rank] = time.monotonic()

    def _report(self, rank: int, what: str) -> None:
        """One line from rank 0, or from rank 1 about rank 0; then end the job."""
        if self.quiet.is_set():
            return
        self.failing()  # the others: this is spoken for, and this process's own end is no news
        speaks = self.rank in (0, 1)
        if speaks:
            print(f"laminae: error: {self.names[rank]} {what}: ending the job", file=sys.stderr, flush=True)
        self.end(speaks)


def supervise() -> None:
    """Fork under MPICH's launcher (``PMI_FD`` set; elsewhere do nothing): the
    child returns and goes on as the MPI process, the parent stays the
    launcher's child and waits for it (see the module).  The launcher signals
    a process's whole group (Ctrl-C), so the child hears it directly and the
    parent ignores it.  Called before MPI starts."""
    if not os.environ.get("PMI_FD", "").isdigit():
        return
    worker = os.fork()
    if worker == 0:
        return
    try:  # the parent: nothing but os calls, and never back into the caller's code
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for fd in (0, 1, 2):  # the launcher sees the output end when the worker's ends
            os.close(fd)
        _, status = os.waitpid(worker, 0)
        if os.WIFSIGNALED(status):
            time.sleep(HOLD_SECONDS)  # the watch ends the job; or, failing that, the launcher then does
        os._exit(os.waitstatus_to_exitcode(status) % 256)
    finally:
        os._exit(2)

