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
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """A context manager whose ``requested`` turns true on the first signal."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def request(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self.request)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            # None means a handler installed outside Python, which cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
