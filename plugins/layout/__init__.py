"""Memory-layout helpers for the ``conv`` layer: its arrays are shaped NCHW but
stored batch-innermost (batch_last).  Helpers, not plugins: no hooks here."""
