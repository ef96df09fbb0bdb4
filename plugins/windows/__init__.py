"""Sliding-window helpers for the ``conv`` and ``pool`` layers: where the
windows lie, and copying them into columns and back (im2col, col2im).
Helpers, not plugins: no hooks here."""
