"""The data types and policies that every data set plugin shares.

A data set plugin only decodes its files; this module decides what the rest
of Laminae may rely on afterwards (float32 NCHW images in [0, 1], int64
labels inside the classes), where data is looked for, and how a validation
split is held out, so that two plugins never disagree on any of it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import platformdirs

from laminae.errors import DataError, PluginError, one_line

DATA_ENV = "LAMINAE_DATA"
"""The environment variable naming a data root, searched after ``--data-dir``."""


def _check_split(split: Split, _attribute: attrs.Attribute, _value: object) -> None:
    # Only the cheap invariants: a plugin that breaks them has a bug, which
    # make_split would have reported as a DataError had it been used.
    if split.x.dtype != np.float32 or split.x.ndim != 4:
        raise ValueError(f"Split.x must be float32 NCHW, got {split.x.dtype} {split.x.shape}")
    if split.y.dtype != np.int64 or split.y.ndim != 1 or len(split.y) != len(split.x):
        raise ValueError(f"Split.y must be int64 of length {len(split.x)}, got {split.y.dtype} {split.y.shape}")


@attrs.frozen(eq=False)
class Split:
    """Images ``x`` (float32, N x C x H x W, in [0, 1]) and their labels ``y`` (int64, N)."""

    x: np.ndarray
    y: np.ndarray = attrs.field(validator=_check_split)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], self.y[indices])


@attrs.frozen(eq=False)
class DatasetSplits:
    """What ``Dataset.load`` returns.

    ``source`` says in words what was loaded from where ("MNIST from
    /data/mnist (IDX)"), for logs and for the location in error messages.
    ``validation`` is None until :meth:`hold_out` sets one aside.
    """

    train: Split
    test: Split
    classes: int
    source: str
    validation: Split | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def hold_out(self, count: int, seed: int) -> DatasetSplits:
        """Move ``count`` random training samples into ``validation`` (0: unchanged)."""
        if count == 0:
            return self
        try:
            train, validation = hold_out(self.train, count, seed)
        except DataError as err:
            raise err.located(self.source) from None
        return attrs.evolve(self, train=train, validation=validation)


def hold_out(split: Split, count: int, seed: int) -> tuple[Split, Split]:
    """Split off ``count`` samples, drawn with ``seed``, as a validation set.

    Both parts keep the original order, so that the same seed always selects
    the same samples and a run can be repeated exactly.
    """
    if not 0 < count < len(split):
        raise DataError(
            f"cannot hold out {count} validation samples from {len(split)} training samples"
            f" (need 1 to {len(split) - 1})"
        )
    chosen = np.zeros(len(split), dtype=bool)
    chosen[np.random.default_rng(seed).choice(len(split), size=count, replace=False)] = True
    return split.take(np.flatnonzero(~chosen)), split.take(np.flatnonzero(chosen))


def make_split(
    images: np.ndarray,
    labels: np.ndarray,
    classes: int,
    images_file: str | os.PathLike,
    labels_file: str | os.PathLike | None = None,
    image_shape: tuple[int, int] | None = None,
) -> Split:
    """Check decoded arrays and turn them into a :class:`Split`.

    Every format ends here, so a file that decodes but makes no sense (more
    labels than images, a label 12 in a ten-class set, pixels outside [0, 1])
    fails the same way whichever plugin read it: a one-line DataError naming
    the file.  ``images`` are N x H x W or N x C x H x W, uint8 (divided by
    255) or float already in [0, 1].
    """
    labels_file = images_file if labels_file is None else labels_file
    if images.ndim not in (3, 4):
        raise DataError(f"{images_file}: expected images as N x H x W, got an array of shape {images.shape}")
    if image_shape is not None and tuple(images.shape[-2:]) != tuple(image_shape):
        h, w = image_shape
        raise DataError(f"{images_file}: expected {h}x{w} images, got {images.shape[-2]}x{images.shape[-1]}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_file}: expected a 1-D array of integer labels, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file}")
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if outside.size:
        i = int(outside[0])
        raise DataError(f"{labels_file}: label {labels[i]} at index {i} is outside 0..{classes - 1}")
    if images.ndim == 3:
        images = images[:, None]
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        x /= 255
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{images_file}: pixel values must lie in [0, 1]")
    else:
        raise DataError(f"{images_file}: expected uint8 or float images, got {images.dtype}")
    return Split(x, labels.astype(np.int64))


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders to search for data, in order: ``data_dir``, ``$LAMINAE_DATA``,
    the per-user cache.

    Each holds one sub-folder per data set (``mnist/``, ``fashion-mnist/``).
    The first is also where missing files are downloaded to, so a user who
    names a folder gets the files there rather than in a hidden cache.
    """
    candidates = [data_dir, os.environ.get(DATA_ENV) or None, platformdirs.user_cache_dir("laminae")]
    roots: list[Path] = []
    for candidate in candidates:
        if candidate is not None:
            root = Path(candidate).expanduser()
            if root not in roots:
                roots.append(root)
    return roots


@attrs.define
class ImageDataset:
    """A convenient base for data set plugins (the protocol needs none).

    A subclass names its ``folder`` and writes ``read_folder(folder)``;
    :meth:`load` then calls it for ``root / folder`` under each data root in
    order, and the first folder that has the data wins:

    * ``read_folder`` raises ``FileNotFoundError`` when its files are not in
      that folder: not found here, try the next root;
    * it raises :class:`laminae.DataError` for a file that is there but
      wrong (corrupt, inconsistent): that stops the search, since a broken
      file must not be silently passed over for another copy.

    When no root has the data, :meth:`not_found` is called, which raises a
    one-line DataError naming the folders (override it to fetch the files).
    A data set that reads no data folder (generated, or shipped inside its
    package) overrides :meth:`read` instead.  Holding out a validation split
    is left to the caller (:meth:`DatasetSplits.hold_out`), which owns the
    ``validation`` and ``seed`` settings of a training run.
    """

    folder: ClassVar[str | None] = None
    """This data set's sub-folder in every data root (``"mnist"``); by
    convention the name it is registered under."""
    class_names: ClassVar[tuple[str, ...] | None] = None
    """The name of each class, in label order, or None for their numbers
    (see :class:`laminae.Dataset`)."""

    def load(self, roots: Sequence[str | os.PathLike] | None = None) -> DatasetSplits:
        """Read the data set from the first of ``roots`` that has it (default: :func:`data_roots`)."""
        return self.read(data_roots() if roots is None else [Path(root) for root in roots])

    def read(self, roots: list[Path]) -> DatasetSplits:
        """``read_folder(root / folder)`` for each root in turn, until one has the data."""
        if self.folder is None:
            raise PluginError(
                f"data set {type(self).__name__} names no folder: set folder = '...' in its class"
                " and write read_folder(folder), or override read(roots)"
            )
        folders = [root / self.folder for root in roots]
        reasons = []
        for folder in folders:
            try:
                return self.read_folder(folder)
            except FileNotFoundError as missing:
                reasons.append(_missing(missing))
        return self.not_found(folders, reasons[0] if reasons else "no data folders to search")

    def read_folder(self, folder: Path) -> DatasetSplits:
        """The data set from ``folder``; ``FileNotFoundError`` if its files are not there."""
        raise PluginError(f"data set {type(self).__name__} names a folder but has no read_folder(folder) method")

    def not_found(self, folders: list[Path], reason: str) -> DatasetSplits:
        """No folder had the data (``reason`` says what the first one lacked): a one-line DataError."""
        where = ", ".join(map(str, folders)) or "no data folders"
        raise DataError(
            f"{self.folder}: not found ({reason}); looked in {where}; put the files in one of those folders,"
            f" or pass --data-dir DIR or set {DATA_ENV}=DIR with them in DIR/{self.folder}/"
        )


def _missing(error: FileNotFoundError) -> str:
    """What a ``FileNotFoundError`` says is missing, in a few words."""
    if error.filename is not None:
        return f"no {Path(error.filename).name}"
    return one_line(error)
