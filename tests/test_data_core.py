"""laminae.data: the split types, holding out a validation set, the data roots, the folder search."""
from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest

from laminae import DataError, PluginError
from laminae.data import DATA_ENV, DatasetSplits, ImageDataset, Split, data_roots, hold_out, make_split
from tests.dataset_helpers import Squares, write_squares


def split(n: int) -> Split:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2) / (n * 4)
    return Split(x, np.arange(n, dtype=np.int64) % 3)


def test_split_refuses_what_the_rest_of_laminae_cannot_use():
    with pytest.raises(ValueError, match="float32 NCHW"):
        Split(np.zeros((2, 2, 2)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="int64 of length 2"):
        Split(np.zeros((2, 1, 2, 2), np.float32), np.zeros(3, np.int64))


def test_hold_out_is_seeded_disjoint_and_keeps_order():
    whole = split(50)
    train, validation = hold_out(whole, 10, seed=7)
    assert (len(train), len(validation)) == (40, 10)
    ids = lambda s: (s.x[:, 0, 0, 0] * 200).round().astype(int) // 4  # noqa: E731
    assert sorted(np.concatenate([ids(train), ids(validation)])) == list(range(50))
    assert np.all(np.diff(ids(train)) > 0) and np.all(np.diff(ids(validation)) > 0)
    again, _ = hold_out(whole, 10, seed=7)
    other, _ = hold_out(whole, 10, seed=8)
    np.testing.assert_array_equal(train.x, again.x)
    assert not np.array_equal(train.x, other.x)


def test_holding_out_too_much_names_the_source():
    splits = DatasetSplits(split(5), split(2), 3, "toy from /data/toy")
    assert splits.hold_out(0, seed=0) is splits
    with pytest.raises(DataError, match=r"^toy from /data/toy: cannot hold out 5 validation samples from 5"):
        splits.hold_out(5, seed=0)


def test_make_split_scales_bytes_and_checks_floats():
    images = np.array([[[0, 255]], [[51, 102]]], dtype=np.uint8)
    s = make_split(images, np.array([1, 2], np.uint8), 3, "f")
    assert s.x.shape == (2, 1, 1, 2) and s.x.dtype == np.float32 and s.y.dtype == np.int64
    np.testing.assert_allclose(s.x.ravel(), [0, 1, 0.2, 0.4])
    with pytest.raises(DataError, match=r"^img.npy: pixel values must lie in \[0, 1\]"):
        make_split(images.astype(np.float64), np.array([1, 2]), 3, "img.npy")
    with pytest.raises(DataError, match="^lab: expected a 1-D array of integer labels"):
        make_split(images, np.array([1.0, 2.0]), 3, "img", "lab")
    with pytest.raises(DataError, match=r"^lab: label -1 at index 0 is outside 0\.\.2"):
        make_split(images, np.array([-1, 2]), 3, "img", "lab")


def test_data_roots_order(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    cache = data_roots()
    assert len(cache) == 1 and "laminae" in str(cache[0])
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert data_roots(tmp_path / "given") == [tmp_path / "given", tmp_path / "env", cache[0]]
    assert data_roots(str(tmp_path / "env")) == [tmp_path / "env", cache[0]]
    monkeypatch.setenv(DATA_ENV, "~/somewhere")
    assert data_roots()[0] == Path.home() / "somewhere"


# --- ImageDataset: its own folder under each root ----------------------------


def test_read_folder_gets_the_data_sets_folder_under_each_root_in_order(tmp_path):
    seen = []

    @attrs.define
    class Watched(Squares):
        def read_folder(self, folder):
            seen.append(folder)
            return super().read_folder(folder)

    write_squares(tmp_path / "b")
    write_squares(tmp_path / "c")
    splits = Watched().load([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert seen == [tmp_path / "a" / "squares", tmp_path / "b" / "squares"]
    assert splits.source == f"squares from {tmp_path / 'b' / 'squares' / 'squares.npz'}"
    assert (len(splits.train), len(splits.test), splits.sample_shape) == (12, 6, (1, 4, 4))


def test_a_corrupt_file_stops_the_search(tmp_path):
    """DataError means the files are there but wrong: the next root is not tried."""
    (tmp_path / "a" / "squares").mkdir(parents=True)
    (tmp_path / "a" / "squares" / "squares.npz").write_bytes(b"not an archive")
    write_squares(tmp_path / "b")

    @attrs.define
    class Strict(Squares):
        def read_folder(self, folder):
            path = folder / "squares.npz"
            if path.is_file() and path.read_bytes()[:2] != b"PK":
                raise DataError(f"{path}: not an npz archive")
            return super().read_folder(folder)

    with pytest.raises(DataError) as caught:
        Strict().load([tmp_path / "a", tmp_path / "b"])
    assert str(caught.value) == f"{tmp_path / 'a' / 'squares' / 'squares.npz'}: not an npz archive"


def test_no_root_with_the_data_is_one_line_naming_every_folder(tmp_path):
    with pytest.raises(DataError) as caught:
        Squares().load([tmp_path / "a", tmp_path / "b"])
    assert str(caught.value) == (
        f"squares: not found (no squares.npz); looked in {tmp_path / 'a' / 'squares'}, {tmp_path / 'b' / 'squares'};"
        " put the files in one of those folders, or pass --data-dir DIR or set LAMINAE_DATA=DIR with them in DIR/squares/"
    )
    with pytest.raises(DataError, match=r"^squares: not found \(no data folders to search\); looked in no data folders;"):
        Squares().load([])


def test_not_found_may_fetch_the_files(tmp_path):
    @attrs.define
    class Fetching(Squares):
        def not_found(self, folders, reason):
            write_squares(folders[0].parent)
            return self.read_folder(folders[0])

    assert len(Fetching().load([tmp_path / "a", tmp_path / "b"]).train) == 12
    assert (tmp_path / "a" / "squares" / "squares.npz").is_file()


def test_a_data_set_without_a_folder_says_what_to_write():
    @attrs.define
    class Nameless(ImageDataset):
        pass

    with pytest.raises(PluginError) as caught:
        Nameless().load([])
    assert str(caught.value) == (
        "data set Nameless names no folder: set folder = '...' in its class and write read_folder(folder),"
        " or override read(roots)"
    )


def test_a_data_set_that_overrides_read_still_gets_every_root(tmp_path):
    """The API before folders: read(roots) with all the roots, which a data set without files uses."""

    @attrs.define
    class Generated(ImageDataset):
        def read(self, roots):
            assert roots == [tmp_path / "a", tmp_path / "b"]
            return DatasetSplits(split(4), split(2), 3, "generated")

    assert Generated().load([tmp_path / "a", str(tmp_path / "b")]).source == "generated"
