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
    """A context manager whose ``requested`` turns true on the first signal."""

    def __init__(self) -> None:
        super().__init__(self.request)
        self.requested = False
        self.signal_name = ""

    def request(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        super().__enter__()
        return self
