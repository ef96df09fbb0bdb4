"""``mnist-sample``: real MNIST digits shipped inside the package.

The first 5,000 training and first 1,000 test images of MNIST, as uint8, so
that the quickstart, the examples and the tests run with no files and no
network.  ``tools/make_mnist_sample.py`` regenerates ``mnist_sample.npz``.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import attrs

from laminae.data import DatasetSplits, ImageDataset
from laminae.errors import DataError
from laminae.plugins.data_files.keras_npz import read_keras_layout

SAMPLE_FILE = "mnist_sample.npz"


@attrs.define
class MnistSample(ImageDataset):
    """5,000 training and 1,000 test MNIST digits; ignores the data roots."""

    def read(self, roots: list[Path]) -> DatasetSplits:
        resource = files("laminae.plugins.data_files") / SAMPLE_FILE
        try:
            with resource.open("rb") as stream:
                train, test = read_keras_layout(stream, str(resource), 10, (28, 28))
        except OSError as exc:
            reason = exc.strerror or exc
            raise DataError(f"{resource}: cannot read the bundled sample ({reason}); reinstall laminae") from None
        return DatasetSplits(train, test, 10, "MNIST sample (5,000 + 1,000 digits, bundled)")
