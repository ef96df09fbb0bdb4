"""Ctrl-C and SIGTERM ask training to stop at the end of the current batch.

Stopping between batches leaves parameters, optimizer state and shuffle
position consistent, so the checkpoint written then resumes bit for bit.  A
second signal means "now": it raises KeyboardInterrupt as Python would.
Handlers can only be installed from the main thread; elsewhere (a worker
thread, a notebook kernel's executor) signals keep their usual behaviour.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class handling:  # noqa: N801 - a context manager used as a statement
    """``handler`` for SIGINT and SIGTERM inside the block, the previous handlers
    put back after it; outside the main thread, nothing is installed."""

    def __init__(self, handler: Callable[[int, Any], None]) -> None:
        self.handler = handler
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self.handler) for signum in STOP_SIGNALS}

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            # None means a handler installed outside Python, which cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous = {}


class GracefulStop(handling):
    """A context manager whose ``requested`` turns true on the first signal.

    ``agreed``: processes training together (MPI) must all stop after the
    same batch, whichever of them a signal reached first and whenever, so a
    signal only sets ``signal_name``, and the step they all take together
    sets ``requested`` on every one of them (:meth:`agree`) from the first
    process's ``signal_name``."""

    def __init__(self, agreed: bool = False) -> None:
        super().__init__(self.request)
        self.agreed = agreed
        self.requested = False
        self.signal_name = ""

    def request(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.signal_name:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.requested = not self.agreed

    def agree(self, signum: int) -> None:
        """Stop after this batch if ``signum`` is a signal's number (0: go on)."""
        if signum:
            self.requested, self.signal_name = True, signal.Signals(signum).name

    @property
    def signal_number(self) -> int:
        """The signal received so far (0: none)."""
        return int(signal.Signals[self.signal_name]) if self.signal_name else 0

    def __enter__(self) -> GracefulStop:
        super().__enter__()
        return self
