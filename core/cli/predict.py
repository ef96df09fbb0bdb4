"""``laminae predict CHECKPOINT IMAGE...``: classify PNG images or ``.npy`` arrays.

Images must already have the model's input size (28x28 for MNIST models);
they are read as grey levels scaled to [0, 1], the form every data set
plugin hands to training.  ``.npy`` files are read without unpickling.
"""
from __future__ import annotations

import argparse
from math import prod
from pathlib import Path

import numpy as np

from laminae.cli import plugin_options, registry_from
from laminae.errors import DataError, location, one_line
from laminae.safe_npz import HEADER_READERS

HELP = "classify PNG images or .npy arrays with a checkpoint"
EXAMPLE = "laminae predict runs/quickstart-20240101-120000 digit.png sample.npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a model.npz file, or a run directory holding one")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="a grey PNG image or a .npy array")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.model import load
    from laminae.persistence.checkpoint import checkpoint_path

    model = load(args.checkpoint, registry=registry_from(args))
    shape = model.network.input_shape
    samples = np.stack([read_sample(Path(path), shape) for path in args.images])
    with location(f"{checkpoint_path(args.checkpoint)}: model {model.name!r}"):
        probabilities = model.predict_proba(samples)
    for path, row in zip(args.images, probabilities):
        label = int(row.argmax())
        print(f"{path}: {label} ({row[label]:.4f})")
    return 0


def read_sample(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One sample of ``shape`` as float32 in [0, 1], from a PNG or a ``.npy`` file."""
    pixels = _read_npy(path, shape) if path.suffix.lower() == ".npy" else _read_image(path, shape)
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255
    elif np.issubdtype(pixels.dtype, np.floating) or np.issubdtype(pixels.dtype, np.integer):
        pixels = pixels.astype(np.float32)
    else:
        raise DataError(f"{path}: expected a numeric array, got {pixels.dtype}")
    if pixels.size != int(np.prod(shape)) or pixels.shape[-2:] != shape[-2:]:
        raise DataError(f"{path}: has shape {pixels.shape}, but the model expects {shape}")
    if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
        raise DataError(f"{path}: values must lie in [0, 1] (or be uint8 grey levels)")
    return pixels.reshape(shape)


def _read_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The array of a ``.npy`` file, its header checked against the sample ``shape``
    before any data is read: a header may declare any size."""
    try:
        with open(path, "rb") as file:
            if file.read(6) != np.lib.format.MAGIC_PREFIX:
                raise DataError(f"{path}: not a .npy array (an .npz archive or another file?)")
            file.seek(0)
            version = np.lib.format.read_magic(file)
            if version not in HEADER_READERS:
                raise DataError(f"{path}: .npy format version {version} is not supported")
            declared, _, dtype = HEADER_READERS[version](file)
            if dtype.hasobject:
                raise DataError(f"{path}: holds pickled Python objects, which are refused")
            if prod(declared) != prod(shape):
                raise DataError(f"{path}: has shape {declared}, but the model expects {shape}")
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({one_line(exc)})") from None


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A grey image of the model's height and width; its size is checked from the
    header before its pixels are decoded (an image may declare any size)."""
    from laminae.optional import require

    image_module = require("PIL.Image", "images", "reading images")
    try:
        with image_module.open(path) as image:  # reads the header only
            if image.size != (shape[-1], shape[-2]):
                width, height = image.size
                raise DataError(f"{path}: is {width}x{height} pixels, but the model expects {shape[-1]}x{shape[-2]}")
            return np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, image_module.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({one_line(exc)})") from None
