"""Vectorised helpers for transforms: per-sample operations on a whole batch at once."""
