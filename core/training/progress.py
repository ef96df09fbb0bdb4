"""The progress bar shown while an epoch trains, with its running loss and accuracy."""
from __future__ import annotations

import sys

from tqdm import tqdm

REFRESH_EVERY = 16
"""Batches between postfix updates: formatting numbers every batch would cost more than tiny batches."""


class ProgressBar:
    """A tqdm bar on stderr for one epoch, starting at ``done`` when resuming mid-epoch."""

    def __init__(self, epoch: int, epochs: int, batches: int, done: int = 0) -> None:
        self._bar = tqdm(
            total=batches, initial=done, desc=f"epoch {epoch}/{epochs}", unit="batch", file=sys.stderr,
            leave=True, dynamic_ncols=True,
        )
        self._countdown = 0
        self._last = (float("nan"), float("nan"))

    def step(self, loss: float, accuracy: float) -> None:
        self._bar.update()
        self._last = (loss, accuracy)
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = REFRESH_EVERY
            self._show(refresh=False)

    def close(self) -> None:
        """Show the epoch's final figures, so the bar left on screen is its summary."""
        self._show(refresh=True)
        self._bar.close()

    def _show(self, refresh: bool) -> None:
        loss, accuracy = self._last
        self._bar.set_postfix_str(f"loss {loss:.4f}, accuracy {accuracy:.4f}", refresh=refresh)
