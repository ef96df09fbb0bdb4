"""The data set plugins: every file format, every kind of broken file, downloads.

Data files are small synthetic ones written in the real layout; downloads
come from an HTTP server on 127.0.0.1, and any attempt to reach another host
fails the test, so nothing here ever touches the internet.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae import DataError
from laminae.plugins.mnist import IDX_STEMS, FashionMnist, Mnist, MnistSample, idx_stem, register_datasets
from laminae.testing import check_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COUNTS = {"train": 30, "test": 12}


# --- guards -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Refuse any connection except to this machine, and any proxy."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to reach {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def one_line_naming(excinfo, *names) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, message
    return message


# --- synthetic files ----------------------------------------------------------


def synthetic(part: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + len(part))
    images = rng.integers(0, 256, size=(COUNTS[part], 28, 28), dtype=np.uint8)
    labels = np.arange(COUNTS[part], dtype=np.uint8) % 10
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, gz: bool = True, seed: int = 0) -> dict[str, Path]:
    """The four IDX files of a tiny MNIST-like set; returns their paths by stem."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part in COUNTS:
        images, labels = synthetic(part, seed)
        for kind, array in (("images", images), ("labels", labels)):
            stem = idx_stem(part, kind)
            data = idx_bytes(array)
            path = folder / (f"{stem}.gz" if gz else stem)
            path.write_bytes(gzip.compress(data) if gz else data)
            paths[stem] = path
    return paths


def assert_synthetic(splits, seed: int = 0) -> None:
    for part, split in (("train", splits.train), ("test", splits.test)):
        images, labels = synthetic(part, seed)
        assert split.x.dtype == np.float32 and split.x.shape == (COUNTS[part], 1, 28, 28)
        assert split.y.dtype == np.int64
        np.testing.assert_array_equal(split.x[:, 0], images / np.float32(255))
        np.testing.assert_array_equal(split.y, labels)
    assert splits.classes == 10


# --- the formats --------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("cls", [Mnist, FashionMnist])
def test_idx_files_load_gzipped_or_not(tmp_path, cls, gz):
    write_idx_folder(tmp_path / cls.folder, gz=gz)
    splits = cls(download=False).load([tmp_path])
    assert_synthetic(splits)
    assert str(tmp_path / cls.folder) in splits.source


@pytest.mark.parametrize("cls", [Mnist, FashionMnist])
def test_the_idx_data_sets_pass_the_conformance_kit(tmp_path, cls):
    write_idx_folder(tmp_path / cls.folder)
    check_dataset(cls(download=False), [tmp_path], name=cls.folder)


def test_the_sample_passes_the_conformance_kit():
    check_dataset(MnistSample(), [], name="mnist-sample")


def test_first_root_holding_the_files_wins(tmp_path):
    write_idx_folder(tmp_path / "b" / "mnist", seed=1)
    write_idx_folder(tmp_path / "c" / "mnist", seed=2)
    (tmp_path / "a" / "mnist").mkdir(parents=True)
    (tmp_path / "a" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"half a data set")
    splits = Mnist(download=False).load([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert_synthetic(splits, seed=1)


def test_keras_npz(tmp_path):
    (tmp_path / "mnist").mkdir()
    (train_x, train_y), (test_x, test_y) = synthetic("train"), synthetic("test")
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    splits = Mnist(download=False).load([tmp_path])
    assert_synthetic(splits)
    assert "mnist.npz" in splits.source


def write_pickle(path: Path, protocol: int) -> None:
    """A ``mnist.pkl.gz`` as deeplearning.net made it: float [N, 784] in [0, 1), int64 labels."""
    def flat(part):
        images, labels = synthetic(part)
        return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32), labels.astype(np.int64)

    (train_x, train_y), test = flat("train"), flat("test")
    parts = ((train_x[:20], train_y[:20]), (train_x[20:], train_y[20:]), test)
    path.write_bytes(gzip.compress(pickle.dumps(parts, protocol=protocol)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_train_and_valid_make_the_training_set(tmp_path, protocol):
    (tmp_path / "mnist").mkdir()
    write_pickle(tmp_path / "mnist" / "mnist.pkl.gz", protocol)
    splits = Mnist(download=False).load([tmp_path])
    assert_synthetic(splits)
    assert "mnist.pkl.gz" in splits.source


def test_idx_is_preferred_to_the_other_formats(tmp_path):
    write_idx_folder(tmp_path / "mnist")
    (tmp_path / "mnist" / "mnist.pkl.gz").write_bytes(b"never read")
    assert "(IDX)" in Mnist(download=False).load([tmp_path]).source


def test_validation_is_held_out_on_request(tmp_path):
    write_idx_folder(tmp_path / "mnist")
    splits = Mnist(download=False).load([tmp_path]).hold_out(6, seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (24, 6, 12)
    again = Mnist(download=False).load([tmp_path]).hold_out(6, seed=3)
    np.testing.assert_array_equal(splits.validation.x, again.validation.x)


def test_hyperparameters_are_validated():
    with pytest.raises(TypeError, match="download"):
        Mnist(download="yes")
    with pytest.raises(ValueError, match="mirrors"):
        Mnist(mirrors=["ftp://example.org/"])
    assert Mnist(mirrors="http://127.0.0.1:9/").mirrors == ("http://127.0.0.1:9/",)


def test_the_plugin_registers_three_data_sets():
    registered = {}
    register_datasets(lambda name, cls: registered.setdefault(name, cls))
    assert registered == {"mnist": Mnist, "fashion-mnist": FashionMnist, "mnist-sample": MnistSample}
    for cls in registered.values():
        assert isinstance(cls(), laminae.Dataset)


# --- broken files -------------------------------------------------------------


def corrupt_gzip(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    return bytes(broken)


@pytest.mark.parametrize(
    ("stem", "damage", "words"),
    [
        ("train-images-idx3-ubyte", lambda raw, gz: b"plain text, not gzip", "not a valid gzip file"),
        ("train-images-idx3-ubyte", lambda raw, gz: gz[: len(gz) // 2], "truncated"),
        ("train-images-idx3-ubyte", lambda raw, gz: corrupt_gzip(gz), "not a valid gzip file"),
        ("t10k-images-idx3-ubyte", lambda raw, gz: gzip.compress(raw[:-100]), "truncated"),
        ("t10k-images-idx3-ubyte", lambda raw, gz: gzip.compress(raw + b"\0"), "trailing bytes"),
        ("t10k-labels-idx1-ubyte", lambda raw, gz: gzip.compress(raw[:6]), "truncated IDX header"),
        ("train-labels-idx1-ubyte", lambda raw, gz: gzip.compress(b"\0\0"), "too short"),
    ],
    ids=["not-gzip", "gzip-truncated", "gzip-corrupt", "idx-truncated", "idx-too-long", "idx-header", "idx-tiny"],
)
def test_damaged_files_give_one_line_naming_the_file(tmp_path, stem, damage, words):
    path = write_idx_folder(tmp_path / "mnist")[stem]
    gz = path.read_bytes()
    path.write_bytes(damage(gzip.decompress(gz), gz))
    with pytest.raises(DataError, match=words) as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


def test_wrong_magic(tmp_path):
    paths = write_idx_folder(tmp_path / "mnist", gz=False)
    images, labels = paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"]
    images.write_bytes(labels.read_bytes())
    with pytest.raises(DataError, match="magic number 2049, expected 2051") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, images)


def test_images_of_the_wrong_size(tmp_path):
    paths = write_idx_folder(tmp_path / "mnist", gz=False)
    path = paths["t10k-images-idx3-ubyte"]
    path.write_bytes(idx_bytes(np.zeros((COUNTS["test"], 32, 32), np.uint8)))
    with pytest.raises(DataError, match="expected 28x28 images, got 32x32") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


def test_count_mismatch_names_both_files(tmp_path):
    paths = write_idx_folder(tmp_path / "mnist", gz=False)
    labels = paths["train-labels-idx1-ubyte"]
    labels.write_bytes(idx_bytes(np.zeros(COUNTS["train"] - 1, np.uint8)))
    with pytest.raises(DataError, match="29 labels for 30 images") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, labels, paths["train-images-idx3-ubyte"])


def test_label_outside_the_classes(tmp_path):
    paths = write_idx_folder(tmp_path / "fashion-mnist", gz=False)
    labels = paths["t10k-labels-idx1-ubyte"]
    bad = np.zeros(COUNTS["test"], np.uint8)
    bad[7] = 12
    labels.write_bytes(idx_bytes(bad))
    with pytest.raises(DataError, match=r"label 12 at index 7 is outside 0\.\.9") as excinfo:
        FashionMnist(download=False).load([tmp_path])
    one_line_naming(excinfo, labels)


def test_npz_count_mismatch_and_missing_array(tmp_path):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.npz"
    images, labels = synthetic("train")
    np.savez(path, x_train=images, y_train=labels[:-1], x_test=images, y_test=labels)
    with pytest.raises(DataError, match="29 labels for 30 images") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)
    np.savez(path, x_train=images, y_train=labels)
    with pytest.raises(DataError, match="missing array") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path, "x_test")


def test_npz_with_an_object_array_is_refused(tmp_path):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.npz"
    images, labels = synthetic("train")
    objects = np.array([{"any": "object"}] * len(labels), dtype=object)
    np.savez(path, x_train=images, y_train=objects, x_test=images, y_test=labels)
    with pytest.raises(DataError, match="pickled Python objects") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"x_train,y_train\n1,2\n", "not an .npz archive"),
        (b"\x93NUMPY\x01\x00", "a single .npy array"),
    ],
)
def test_a_file_that_is_no_archive_is_not_called_a_pickle(tmp_path, content, words):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words) as excinfo:
        Mnist(download=False).load([tmp_path])
    assert "pickle" not in str(excinfo.value)
    one_line_naming(excinfo, path)


def test_archive_members_that_are_not_arrays_are_refused(tmp_path):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.npz"
    images, labels = synthetic("train")
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "not an array")
    with pytest.raises(DataError, match="member 'notes.txt' is not an .npy array") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


def test_garbage_npz(tmp_path):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 but not really a zip file")
    with pytest.raises(DataError, match="not a valid .npz") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


# --- the restricted unpickler --------------------------------------------------


def test_pickle_naming_os_system_is_refused_before_running(tmp_path):
    marker = tmp_path / "executed"
    # Protocol 0 by hand, so the global is spelled os.system on every platform.
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="refused to unpickle global os.system") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)
    assert not marker.exists()


class Exploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ((np.zeros(3), Exploit()), "refused to unpickle global builtins.eval"),
        (np.array([1, "a"], dtype=object), "object arrays are refused"),
        ({"not": "a tuple"}, r"expected a \(train, valid, test\) tuple"),
        (((np.zeros((2, 10)), np.zeros(2)),) * 3, "must be N x 784"),
    ],
    ids=["eval", "object-array", "dict", "wrong-width"],
)
def test_pickles_that_are_not_mnist(tmp_path, content, words):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(content)))
    with pytest.raises(DataError, match=words) as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


def test_truncated_pickle(tmp_path):
    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "mnist.pkl.gz"
    write_pickle(path, 4)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-50]))
    with pytest.raises(DataError, match="not a valid pickle") as excinfo:
        Mnist(download=False).load([tmp_path])
    one_line_naming(excinfo, path)


# --- downloads ----------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    short: set[str] = set()

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.short:  # the connection drops half way through the body
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local mirror serving the four gzipped IDX files, whose md5s Mnist is told."""
    served = write_idx_folder(tmp_path / "served")
    files = {path.name: path.read_bytes() for path in served.values()}
    monkeypatch.setattr(Mnist, "md5", {stem: hashlib.md5(files[f"{stem}.gz"]).hexdigest() for stem in IDX_STEMS})
    handler = type("MirrorHandler", (Handler,), {"files": files, "short": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}/mnist/"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connection refused, as with no network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_download_into_the_first_root(tmp_path, mirror):
    roots = [tmp_path / "first", tmp_path / "second"]
    splits = Mnist(mirrors=[mirror.url]).load(roots)
    assert_synthetic(splits)
    assert sorted(p.name for p in (roots[0] / "mnist").iterdir()) == sorted(f"{s}.gz" for s in IDX_STEMS)
    assert not roots[1].exists()


def test_download_only_what_is_missing_and_try_the_next_mirror(tmp_path, mirror, closed_port_url):
    paths = write_idx_folder(tmp_path / "root" / "mnist", gz=False)
    paths["t10k-labels-idx1-ubyte"].unlink()
    del mirror.RequestHandlerClass.files["train-images-idx3-ubyte.gz"]  # would 404 if asked
    splits = Mnist(mirrors=[closed_port_url, mirror.url]).load([tmp_path / "root"])
    assert_synthetic(splits)
    assert (tmp_path / "root" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_checksum_mismatch_keeps_nothing(tmp_path, mirror):
    files = mirror.RequestHandlerClass.files
    files["train-labels-idx1-ubyte.gz"] = gzip.compress(b"something else")
    with pytest.raises(DataError, match=r"md5 is \w+, expected \w+") as excinfo:
        Mnist(mirrors=[mirror.url]).load([tmp_path / "root"])
    folder = tmp_path / "root" / "mnist"
    one_line_naming(excinfo, folder / "train-labels-idx1-ubyte.gz", mirror.url, "--data-dir", "LAMINAE_DATA")
    assert sorted(p.name for p in folder.iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_interrupted_transfer_keeps_nothing(tmp_path, mirror):
    mirror.RequestHandlerClass.short = {"train-images-idx3-ubyte.gz"}
    with pytest.raises(DataError, match="transfer interrupted") as excinfo:
        Mnist(mirrors=[mirror.url]).load([tmp_path / "root"])
    folder = tmp_path / "root" / "mnist"
    one_line_naming(excinfo, folder / "train-images-idx3-ubyte.gz")
    assert list(folder.iterdir()) == []


def test_downloads_print_nothing_of_their_own(tmp_path, mirror, capfd):
    """Off a terminal a download is silent, so that a failure reads as the CLI's one line."""
    mirror.RequestHandlerClass.files["train-labels-idx1-ubyte.gz"] = b"corrupt"
    with pytest.raises(DataError):
        Mnist(mirrors=[mirror.url]).load([tmp_path / "root"])
    assert capfd.readouterr() == ("", "")


def test_no_network_says_what_was_looked_for_and_how_to_supply_it(tmp_path, closed_port_url):
    roots = [tmp_path / "given", tmp_path / "env", tmp_path / "cache"]
    with pytest.raises(DataError, match="cannot connect") as excinfo:
        Mnist(mirrors=[closed_port_url]).load(roots)
    message = one_line_naming(
        excinfo, *IDX_STEMS, "mnist.pkl.gz", *(root / "mnist" for root in roots),
        "--data-dir", "LAMINAE_DATA", closed_port_url,
    )
    assert message.count("; ") >= 2  # what failed; where it looked; how to supply
    assert not [path for root in roots for path in root.rglob("*") if path.is_file()]


def test_download_off(tmp_path):
    with pytest.raises(DataError, match="download = false") as excinfo:
        FashionMnist(download=False).load([tmp_path])
    one_line_naming(excinfo, tmp_path / "fashion-mnist", "t10k-labels-idx1-ubyte", FashionMnist.default_mirrors[0])
    assert not (tmp_path / "fashion-mnist").exists()


# --- the bundled sample and the real data ------------------------------------


def test_the_sample_needs_no_files():
    splits = MnistSample().load([]).hold_out(500, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4500, 500, 1000)
    assert splits.train.x.dtype == np.float32 and splits.train.x.shape[1:] == (1, 28, 28)
    assert 0 <= splits.train.x.min() and splits.train.x.max() <= 1
    assert set(np.unique(splits.test.y)) == set(range(10))


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_real_mnist_and_the_sample_is_its_prefix():
    splits = Mnist(download=False).load([SHARED_DATA])
    assert (len(splits.train), len(splits.test)) == (60000, 10000)
    for split in (splits.train, splits.test):
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.x.min() == 0 and split.x.max() == 1
        assert split.y.dtype == np.int64 and set(np.unique(split.y)) == set(range(10))
    sample = MnistSample().load([])
    np.testing.assert_array_equal(sample.train.x, splits.train.x[:5000])
    np.testing.assert_array_equal(sample.train.y, splits.train.y[:5000])
    np.testing.assert_array_equal(sample.test.x, splits.test.x[:1000])
    np.testing.assert_array_equal(sample.test.y, splits.test.y[:1000])


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_real_mnist_pickle_matches_the_idx_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.pkl.gz").symlink_to(SHARED_DATA / "mnist" / "mnist.pkl.gz")
    pickled = Mnist(download=False).load([tmp_path])
    sample = MnistSample().load([])
    # the pickle stores pixel / 256, the IDX files pixel bytes
    np.testing.assert_array_equal(np.rint(pickled.train.x[:5000] * 256), np.rint(sample.train.x * 255))
    np.testing.assert_array_equal(pickled.test.y[:1000], sample.test.y)
    assert (len(pickled.train), len(pickled.test)) == (60000, 10000)
