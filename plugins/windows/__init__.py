"""Sliding-window helpers for the ``conv`` and ``pool`` layers: where the
windows lie (geometry), and copying them into columns and back (im2col).
Helpers, not plugins: no hooks here."""
