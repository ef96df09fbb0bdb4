"""Sliding-window helpers for the ``conv`` and ``pool`` layers: where the
windows lie (geometry), copying them into columns and back (im2col), and
where each window's maximum is (first_maximum).  Helpers, not plugins: no
hooks here."""
