"""Refusing data that does not fit a model, before a batch fails deep inside a layer.

Training and evaluation both call these first, so a wrong sample shape, a
label outside the model's classes or one-hot rows of the wrong width is one
line naming what was wrong, not an IndexError from a loss.
"""
from __future__ import annotations

import numpy as np

from laminae.errors import DataError
from laminae.network.network import Network


def check_data(network: Network, x: np.ndarray, y: np.ndarray, what: str) -> None:
    """Samples of the network's input shape, as many labels as samples, and labels it can output."""
    expected = network.input_shape
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{what}: samples and labels must be numpy arrays")
    if x.ndim < 1 or tuple(x.shape[1:]) != expected:
        raise DataError(f"{what}: samples have shape {tuple(x.shape[1:])}, but the model expects {expected}")
    if len(y) != len(x):
        raise DataError(f"{what}: {len(y)} labels for {len(x)} samples")
    if len(x) == 0:
        raise DataError(f"{what}: no samples")
    check_labels(network, y, what)


def check_labels(network: Network, y: np.ndarray, what: str) -> None:
    """Integer labels inside the network's classes, or one-hot rows as wide as its output."""
    output = network.output_shape
    if len(output) != 1:
        raise DataError(f"{what}: the model's output has shape {output}; a classifier needs one score per class")
    classes = output[0]
    if y.ndim == 2:
        if y.shape[1] != classes:
            raise DataError(f"{what}: one-hot labels have {y.shape[1]} columns, but the model outputs {classes} classes")
        if not np.issubdtype(y.dtype, np.floating) and not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{what}: one-hot labels must be numbers, got {y.dtype}")
        return
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers (N,) or one-hot rows (N, classes), got {y.dtype} {y.shape}")
    outside = np.flatnonzero((y < 0) | (y >= classes))
    if outside.size:
        i = int(outside[0])
        raise DataError(f"{what}: label {y[i]} at index {i} is outside the model's {classes} classes (0..{classes - 1})")
