"""The ``mnist``, ``fashion-mnist`` and ``mnist-sample`` data sets: 28x28
grey images of ten classes, loaded as float32 in [0, 1] with integer labels.

A data set's ``read_folder(folder)`` decodes the files in its folder of one
data root (``FileNotFoundError`` when they are not there, so the next root is
tried) and hands the arrays to :func:`laminae.data.make_split`, which checks
them (shapes, label range) and scales the pixels.  MNIST and Fashion-MNIST
share everything but their folder and mirrors: four IDX files, found in the
first data root that has them all, or downloaded into the first root (their
``not_found``).  MNIST is also accepted in the two other forms people already
have on disk (Keras' ``mnist.npz``, the classic ``mnist.pkl.gz``), so nobody
has to download it again.  The file
formats and the downloader are in :mod:`laminae.plugins.data_files`.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import attrs

from laminae.data import DatasetSplits, ImageDataset, make_split
from laminae.errors import DataError
from laminae.hookspecs import hookimpl
from laminae.plugins.data_files.download import fetch, mirror_list, mirror_urls
from laminae.plugins.data_files.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from laminae.plugins.data_files.keras_npz import read_keras_layout
from laminae.plugins.data_files.mnist_pickle import read_mnist_pickle
from laminae.validators import boolean

IMAGE_SHAPE = (28, 28)
CLASSES = 10
PARTS = {"train": "train", "test": "t10k"}
"""Each split and the prefix of its IDX files."""


def idx_stem(part: str, kind: str) -> str:
    """``idx_stem("test", "images")`` is ``"t10k-images-idx3-ubyte"``."""
    return f"{PARTS[part]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


IDX_STEMS = tuple(idx_stem(part, kind) for part in PARTS for kind in ("images", "labels"))


@attrs.define
class IdxDataset(ImageDataset):
    """A data set distributed as the four MNIST-style IDX files, gzipped or not.

    ``download = false`` turns downloading off, for machines that must never
    reach the network; ``mirrors`` replaces the base URLs (a local copy).
    """

    folder: ClassVar[str]
    title: ClassVar[str]
    md5: ClassVar[dict[str, str]]
    """The md5 of each official ``.gz`` file, by IDX stem."""
    default_mirrors: ClassVar[tuple[str, ...]]
    other_files: ClassVar[tuple[str, ...]] = ()
    """Other files ``read_folder`` accepts, listed when nothing is found."""

    download: bool = attrs.field(default=True, validator=boolean, kw_only=True)
    mirrors: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda self: self.default_mirrors, takes_self=True),
        converter=mirror_list,
        validator=mirror_urls,
        kw_only=True,
    )

    def read_folder(self, folder: Path) -> DatasetSplits:
        """The data set from the four IDX files in ``folder``; ``FileNotFoundError`` if one is missing."""
        paths = {stem: _find(folder, stem) for stem in IDX_STEMS}
        missing = [stem for stem, path in paths.items() if path is None]
        if missing:
            raise FileNotFoundError(f"no {missing[0]}[.gz] in {folder}")
        train, test = (
            make_split(
                read_idx(paths[idx_stem(part, "images")], IMAGES_MAGIC),
                read_idx(paths[idx_stem(part, "labels")], LABELS_MAGIC),
                CLASSES,
                paths[idx_stem(part, "images")],
                paths[idx_stem(part, "labels")],
                IMAGE_SHAPE,
            )
            for part in PARTS
        )
        return DatasetSplits(train, test, CLASSES, f"{self.title} from {folder} (IDX)")

    def not_found(self, folders: list[Path], reason: str) -> DatasetSplits:
        """Download the missing files into the first folder, unless downloading is off."""
        if not folders:
            raise DataError(f"{self.folder}: no data folders to search")
        if not self.download:
            raise DataError(f"{self.title}: files not found and download = false; {self._how_to_supply(folders)}")
        target = folders[0]
        try:
            for stem in IDX_STEMS:
                if _find(target, stem) is None:
                    fetch(f"{stem}.gz", self.md5[stem], target, self.mirrors)
        except DataError as err:
            raise DataError(f"{err.message}; {self._how_to_supply(folders)}") from None
        return self.read_folder(target)

    def _how_to_supply(self, folders: list[Path]) -> str:
        wanted = ", ".join(f"{stem}[.gz]" for stem in IDX_STEMS)
        if self.other_files:
            wanted += f" (or {' or '.join(self.other_files)})"
        return (
            f"looked for {wanted} in {', '.join(map(str, folders))}; put the files in one of those folders,"
            f" or pass --data-dir DIR or set LAMINAE_DATA=DIR with them in DIR/{self.folder}/;"
            f" they can be downloaded from {self.mirrors[0]}"
        )


def _find(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``: as decompressed by the user, else as downloaded."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


@attrs.define
class Mnist(IdxDataset):
    """The MNIST handwritten digits (LeCun, Cortes, Burges): 60,000 + 10,000."""

    folder = "mnist"
    title = "MNIST"
    md5 = {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    default_mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    other_files = ("mnist.npz", "mnist.pkl.gz")

    def read_folder(self, folder: Path) -> DatasetSplits:
        try:
            return super().read_folder(folder)
        except FileNotFoundError:
            pass
        keras = folder / "mnist.npz"
        if keras.is_file():
            train, test = read_keras_layout(str(keras), str(keras), CLASSES, IMAGE_SHAPE)
            return DatasetSplits(train, test, CLASSES, f"{self.title} from {keras}")
        pickled = folder / "mnist.pkl.gz"
        if pickled.is_file():
            (train_x, train_y), (test_x, test_y) = read_mnist_pickle(pickled)
            train = make_split(train_x, train_y, CLASSES, f"{pickled} [train+valid]")
            test = make_split(test_x, test_y, CLASSES, f"{pickled} [test]")
            return DatasetSplits(train, test, CLASSES, f"{self.title} from {pickled}")
        raise FileNotFoundError(f"no IDX files, mnist.npz or mnist.pkl.gz in {folder}")


@attrs.define
class FashionMnist(IdxDataset):
    """Fashion-MNIST (Zalando Research, MIT licence): ten kinds of clothing, 60,000 + 10,000."""

    folder = "fashion-mnist"
    title = "Fashion-MNIST"
    md5 = {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    default_mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    class_names = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )
    """The labels' names, as Zalando's README lists them."""


SAMPLE_FILE = "mnist_sample.npz"
"""In :mod:`laminae.plugins.data_files`; ``tools/make_mnist_sample.py`` regenerates it."""


@attrs.define
class MnistSample(ImageDataset):
    """5,000 training and 1,000 test MNIST digits shipped inside the package:
    the first of each split, as uint8, so that the quickstart, the examples
    and the tests run with no files and no network.  Ignores the data roots."""

    def read(self, roots: list[Path]) -> DatasetSplits:
        resource = files("laminae.plugins.data_files") / SAMPLE_FILE
        try:
            with resource.open("rb") as stream:
                train, test = read_keras_layout(stream, str(resource), CLASSES, IMAGE_SHAPE)
        except OSError as exc:
            reason = exc.strerror or exc
            raise DataError(f"{resource}: cannot read the bundled sample ({reason}); reinstall laminae") from None
        return DatasetSplits(train, test, CLASSES, "MNIST sample (5,000 + 1,000 digits, bundled)")


@hookimpl
def register_datasets(register):
    register("mnist", Mnist)
    register("fashion-mnist", FashionMnist)
    register("mnist-sample", MnistSample)
