"""Hostile data files (issues 13 and 22): small crafted files that declare, or
unpack to, far more than they honestly hold, read in a process limited to
1 GiB of address space, or, where that limit would itself tell Laminae how
little memory there is, watched and killed past 1 GiB resident.  Each must
end in Laminae's own one line naming the file, never in a MemoryError, a
kill or a traceback.

The bombs unpack to 1.5 GiB (those of issue 22 to 3.2 GB), more than the
limit, so reading one whole would fail; they are built in milliseconds by
repeating one compressed MiB of filler (deflate allows this after a full
flush), with honest checksums (which take about a second per 3 GB).
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from laminae.errors import DataError
from laminae.persistence.checkpoint import META_MAX_BYTES
from laminae.plugins.data_files import mnist_pickle
from laminae.plugins.data_files.gzipped import open_data
from laminae.plugins.data_files.idx import read_idx
from laminae.safe_npz import escaped, load_npz
from tests.training_helpers import tiny_model

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE = 2**30
"""The readers run under this much address space: numpy and Laminae take
about 150 MB of it, and every bomb here needs more than all of it."""
BOMB_BYTES = 3 * 2**29
"""What each bomb unpacks to: 1.5 GiB."""
MIB = 2**20
IDX_IMAGES, IDX_LABELS = 2051, 2049
WATCHDOG_RSS = 2**30
"""A process whose resident memory passes this is killed: the 1 GB watchdog of issue 22."""
PEAK_RSS_MAX = 128 * MIB
"""A refusal costs about 35 MB (50 MB through the CLI): the interpreter,
numpy and a few MiB of reading.  A reader that decompressed up to its
256 MiB limit before refusing would exceed this."""


# --- crafting -----------------------------------------------------------------


def deflate_bomb(prefix: bytes, filler: int, count: int) -> tuple[bytes, int]:
    """Raw deflate of ``prefix`` then ``count`` bytes ``filler``, and its crc32."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = bytes([filler]) * MIB
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    mibs, rest = divmod(count, MIB)
    tail = compressor.compress(chunk[:rest]) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(mibs):
        crc = zlib.crc32(chunk, crc)
    return head + block * mibs + tail, zlib.crc32(chunk[:rest], crc)


def gzip_bomb(prefix: bytes, filler: int = 0, count: int = BOMB_BYTES) -> bytes:
    data, crc = deflate_bomb(prefix, filler, count)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + data + struct.pack("<II", crc, (len(prefix) + count) % 2**32)


def zip_bomb(
    name: str,
    prefix: bytes,
    count: int = BOMB_BYTES,
    file_size: int | None = None,
    others: Mapping[str, bytes] | None = None,
) -> bytes:
    """A zip of the members ``others`` (stored) and ``name``: ``prefix`` and
    ``count`` zeros, deflated, whose directory says it unpacks to ``file_size``
    (by default the truth)."""
    data, crc = deflate_bomb(prefix, 0, count)
    members = [(other, zipfile.ZIP_STORED, zlib.crc32(content), content, len(content))
               for other, content in (others or {}).items() if other != name]
    members.append((name, zipfile.ZIP_DEFLATED, crc, data, len(prefix) + count if file_size is None else file_size))
    locals_, centrals = b"", b""
    for member, method, checksum, content, size in members:
        encoded = member.encode()
        fields = (20, 0, method, 0, 0x21, checksum, len(content), size, len(encoded))
        central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, len(locals_))
        centrals += central + encoded
        locals_ += struct.pack("<4s5H3IHH", b"PK\x03\x04", *fields, 0) + encoded + content
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(centrals), len(locals_), 0)
    return locals_ + centrals + end


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def small_npz(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def idx_header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def idx_gz(magic: int, array: np.ndarray) -> bytes:
    return gzip.compress(idx_header(magic, *array.shape) + array.tobytes())


class Undeclared:
    """Pickles as numpy's ``_reconstruct(ndarray, shape, dtype)`` with no state
    after it: an array of ``shape`` whose data is nowhere in the file."""

    reconstruct = np.zeros(1).__reduce__()[0]

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape, self.dtype = shape, dtype

    def __reduce__(self):
        return (self.reconstruct, (np.ndarray, self.shape, self.dtype))


NDARRAY_CALL = (  # numpy.ndarray((2500000, 784), 'f4'): 7.8 GB asked for in 46 bytes
    b"\x80\x02cnumpy\nndarray\nq\x00J\xa0%&\x00M\x10\x03\x86q\x01X\x02\x00\x00\x00f4q\x02\x86q\x03Rq\x04."
)
BINSTRING_OF_2_GIB = b"\x80\x02T\xff\xff\xff\x7f"  # protocol 2, then a string declaring 2**31 - 1 bytes


# Each case: the file's path under a data root (or a checkpoint), how to craft
# it, and the words of the one-line error.
IDX_TRAIN_IMAGES = "mnist/train-images-idx3-ubyte.gz"
BOMB_IMAGES = BOMB_BYTES // 784  # as many 28x28 images as 1.5 GiB holds
CASES = {
    "idx-declares-gigabytes": (
        IDX_TRAIN_IMAGES,
        lambda: gzip_bomb(idx_header(IDX_IMAGES, BOMB_IMAGES, 28, 28)),
        f"header ({BOMB_IMAGES} x 28 x 28) declares {16 + BOMB_IMAGES * 784:,} bytes,"
        " more than the 268,435,456 accepted for a data file",
    ),
    "idx-trailing-gigabytes": (
        IDX_TRAIN_IMAGES,
        lambda: gzip_bomb(idx_header(IDX_IMAGES, 30, 28, 28)),
        "has trailing bytes: more than 23536, but its header (30 x 28 x 28) says 23536",
    ),
    "pickle-ndarray-call": (
        "mnist/mnist.pkl.gz",
        lambda: gzip.compress(NDARRAY_CALL),
        "not a valid pickle of numpy arrays (numpy.ndarray(...) called directly:"
        " an array without its data is refused)",
    ),
    "pickle-arrays-without-data": (
        "mnist/mnist.pkl.gz",
        lambda: gzip.compress(pickle.dumps(((Undeclared((50000, 784), "f4"), Undeclared((50000,), "<i8")),) * 3, 2)),
        "not a valid pickle of numpy arrays (an array of shape (50000, 784) declared without its data is refused)",
    ),
    "pickle-string-of-gigabytes": (
        "mnist/mnist.pkl.gz",
        lambda: gzip_bomb(BINSTRING_OF_2_GIB),
        "holds or declares more than 268,435,456 bytes (decompressed), the most accepted for a data file",
    ),
    "pickle-of-a-billion-lists": (
        "mnist/mnist.pkl.gz",
        lambda: gzip_bomb(b"\x80\x02(", filler=ord("]")),
        "not a pickle of a few numpy arrays (more than 10,000 operations)",
    ),
    "npz-header-declares-terabytes": (
        "mnist/mnist.npz",
        lambda: small_npz("x_train.npy", npy_header((10**12,)) + bytes(80)),
        "member 'x_train.npy': corrupt: its header (1000000000000 float64) needs 8,000,000,000,128 bytes,"
        " but the archive says it holds 208",
    ),
    "npz-bomb-as-its-header-says": (
        "mnist/mnist.npz",
        lambda: zip_bomb("x_train.npy", npy_header((BOMB_BYTES // 8,))),
        f"member 'x_train.npy': too large to load: its header ({BOMB_BYTES // 8} float64)"
        f" needs {BOMB_BYTES:,} bytes, more than the {ADDRESS_SPACE:,} bytes left of the memory available",
    ),
    "npz-entry-larger-than-its-header": (
        "mnist/mnist.npz",
        lambda: zip_bomb("x_train.npy", npy_header((10,))),
        f"member 'x_train.npy': corrupt: its header (10 float64) needs 208 bytes,"
        f" but the archive says it holds {128 + BOMB_BYTES:,}",
    ),
    "npz-entry-larger-than-its-directory": (
        "mnist/mnist.npz",
        lambda: zip_bomb("x_train.npy", npy_header((10,)), file_size=208),
        "not a valid .npz archive or corrupt (Bad CRC-32 for file 'x_train.npy')",
    ),
    "npz-name-that-clears-the-screen": (
        "mnist/mnist.npz",
        lambda: small_npz("\x1b[2J\rx_train.npy", npy_header((1,)) + bytes(8)),
        r"not a valid .npz archive (member '\x1b[2J\rx_train.npy' has control characters in its name)",
    ),
}


@functools.cache
def crafted(case: str) -> bytes:
    return CASES[case][1]()


def write_case(root: Path, case: str) -> Path:
    """The crafted file of ``case`` under ``root``; an IDX bomb gets its three
    honest companions, so that nothing but the bomb is wrong."""
    relative = CASES[case][0]
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if relative == IDX_TRAIN_IMAGES:
        for stem, magic, shape in (
            ("train-labels-idx1-ubyte", IDX_LABELS, (30,)),
            ("t10k-images-idx3-ubyte", IDX_IMAGES, (10, 28, 28)),
            ("t10k-labels-idx1-ubyte", IDX_LABELS, (10,)),
        ):
            (path.parent / f"{stem}.gz").write_bytes(idx_gz(magic, np.zeros(shape, np.uint8)))
    path.write_bytes(crafted(case))
    return path


# --- running under the limit --------------------------------------------------


LIMITED = """
import atexit, resource, sys
LIMIT, PEAK = int(sys.argv.pop(1)), sys.argv.pop(1)
if LIMIT:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

def report_peak():  # this process's own high-water mark, since it was exec'd
    with open("/proc/self/status") as status, open(PEAK, "w") as peak:
        peak.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))

atexit.register(report_peak)
"""
"""Run first in every limited process: the limit (none if 0), then a record
of its peak resident memory on the way out."""

AS_THE_CLI = "import runpy\nrunpy.run_module('laminae', run_name='__main__', alter_sys=True)\n"
"""What ``python -m laminae`` runs, after the limit."""


def run_limited(
    script: str, args: list[str], tmp_path: Path, address_space: int | None = ADDRESS_SPACE
) -> tuple[int, str, str, int]:
    """Run ``script`` with ``args`` under the ``address_space`` limit (None: none,
    so Laminae sees all the machine's memory as available), killed if its
    resident memory passes ``WATCHDOG_RSS``: exit status, stdout, stderr, and
    the process's peak resident memory in bytes."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "LAMINAE_DATA": str(tmp_path / "no-data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    peak, out, err = tmp_path / "peak-kib", tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", LIMITED + script, str(address_space or 0), str(peak), *args],
            stdout=stdout, stderr=stderr, cwd=ROOT, env=env,
        )
        seen = watch(process, timeout=60)
    return process.returncode, out.read_text(), err.read_text(), int(peak.read_text()) * 1024 if peak.exists() else seen


def watch(process: subprocess.Popen, timeout: float) -> int:
    """Wait for ``process``, killing it once its resident memory passes
    ``WATCHDOG_RSS`` or it outlives ``timeout`` seconds; the most resident memory seen."""
    seen, deadline = 0, time.monotonic() + timeout
    while process.poll() is None:
        seen = max(seen, resident_bytes(process.pid))
        if seen > WATCHDOG_RSS or time.monotonic() > deadline:
            process.kill()
            process.wait()
            break
        time.sleep(0.005)  # filling memory at 2 GB/s, a process gains 10 MB between looks
    return seen


def resident_bytes(pid: int) -> int:
    """The process's resident memory now (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


READERS = {
    "mnist/train-images-idx3-ubyte.gz": (
        "from laminae.plugins.data_files.idx import read_idx as read\n"
        "arguments = (2051,)\n"
    ),
    "mnist/mnist.pkl.gz": (
        "from laminae.plugins.data_files.mnist_pickle import read_mnist_pickle as read\n"
        "arguments = ()\n"
    ),
    "mnist/mnist.npz": (
        "from laminae.errors import DataError\n"
        "from laminae.safe_npz import load_npz\n"
        "def read(path):\n"
        "    return load_npz(path, error=DataError, name=str(path))\n"
        "arguments = ()\n"
    ),
}
"""How to call the reader of each kind of file, importing nothing else."""

READ_AND_REPORT = """
import sys
from pathlib import Path
from laminae.errors import LaminaeError
{reader}
try:
    read(Path(sys.argv[1]), *arguments)
except LaminaeError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
print("read without complaint")
"""


def assert_one_line(status: int, stdout: str, stderr: str, peak: int, words: str, path: Path) -> None:
    assert "Traceback" not in stderr and "MemoryError" not in stderr, stderr
    assert status == 2, (status, f"peak resident memory {peak / MIB:.0f} MiB", stdout, stderr)
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert words in stderr and str(path) in stderr, stderr
    assert "\x1b" not in stderr and "\r" not in stderr
    assert 0 < peak < PEAK_RSS_MAX, f"peak resident memory {peak / MIB:.0f} MiB"


@pytest.mark.parametrize("case", CASES)
def test_the_reader_refuses_in_one_line_within_bounded_memory(tmp_path, case):
    path = write_case(tmp_path / "data", case)
    script = READ_AND_REPORT.format(reader=READERS[CASES[case][0]])
    status, stdout, stderr, peak = run_limited(script, [str(path)], tmp_path)
    assert_one_line(status, stdout, stderr, peak, CASES[case][2], path)


@pytest.mark.parametrize(
    "case",
    ["idx-declares-gigabytes", "idx-trailing-gigabytes", "pickle-ndarray-call", "pickle-string-of-gigabytes"],
)
def test_training_on_a_crafted_data_set_is_one_line(tmp_path, case):
    path = write_case(tmp_path / "data", case)
    command = ["train", "models.toml", "two_layer", "--dataset", "mnist",
               "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "1"]
    status, stdout, stderr, peak = run_limited(AS_THE_CLI, command, tmp_path)
    assert_one_line(status, stdout, stderr, peak, CASES[case][2], path)


CHECKPOINTS = {
    "header-declares-terabytes": (
        lambda: small_npz("param/0.W.npy", npy_header((10**12,)) + bytes(80)),
        "member 'param/0.W.npy': corrupt: its header"
        " (1000000000000 float64) needs 8,000,000,000,128 bytes, but the archive says it holds 208",
    ),
    "name-that-clears-the-screen": (
        lambda: small_npz("param/\x1b[2J\r0.W.npy", npy_header((1,)) + bytes(8)),
        r"not a Laminae checkpoint (member 'param/\x1b[2J\r0.W.npy' has control characters in its name)",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_evaluating_a_crafted_checkpoint_is_one_line(tmp_path, case):
    craft, words = CHECKPOINTS[case]
    path = tmp_path / "model.npz"
    path.write_bytes(craft())
    status, stdout, stderr, peak = run_limited(AS_THE_CLI, ["eval", str(path)], tmp_path)
    assert_one_line(status, stdout, stderr, peak, words, path)


# --- bombs whose header and directory agree (issue 22) ------------------------
# Run with no address-space limit, as a user would: the memory available is
# then all the machine's, and only the watchdog stands between a bomb and it.


CHECKPOINT_BOMB_BYTES = 3_200_000_000
"""The checkpoint bombs of issue 22: 3.2 GB of zeros, in 3 MB of zip."""
CHECKPOINT_BOMBS = {
    "param/0.W": (
        npy_header((CHECKPOINT_BOMB_BYTES // 8,)),
        f"member 'param/0.W.npy': too large to load: its header ({CHECKPOINT_BOMB_BYTES // 8} float64) needs"
        f" {CHECKPOINT_BOMB_BYTES:,} bytes, expected at most 512 for layer 0 (affine): parameter 'W' (16x8 float32)",
    ),
    "meta": (
        npy_header((CHECKPOINT_BOMB_BYTES,), "|u1"),
        f"member 'meta.npy': too large to load: its header ({CHECKPOINT_BOMB_BYTES} uint8) needs"
        f" {CHECKPOINT_BOMB_BYTES:,} bytes, expected at most {META_MAX_BYTES:,} for a checkpoint's metadata",
    ),
}
"""The member of a small model's checkpoint that holds the bomb, its header, and the words refusing it."""
DATA_BOMB_IMAGES = 3_954_082
"""28x28 images in the data bomb's ``x_train``: 3.1 GB."""


@pytest.fixture(scope="module")
def checkpoint_bomb(tmp_path_factory, registry):
    """``checkpoint_bomb(member)``: the bytes of a small model's checkpoint whose
    ``member`` (a key of ``CHECKPOINT_BOMBS``) is a bomb, honest in all else."""
    path = tiny_model(registry).save(tmp_path_factory.mktemp("honest") / "model.npz", registry=registry)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    return functools.cache(
        lambda member: zip_bomb(f"{member}.npy", CHECKPOINT_BOMBS[member][0], CHECKPOINT_BOMB_BYTES, others=members)
    )


LOAD = READ_AND_REPORT.format(reader="from laminae import load as read\narguments = ()\n")
"""``laminae.load`` on the file, its refusal printed as the CLI would."""
COMMANDS = {
    "eval": lambda path: (AS_THE_CLI, ["eval", str(path)]),
    "predict": lambda path: (AS_THE_CLI, ["predict", str(path), str(path.parent / "sample.npy")]),
    "train-resume": lambda path: (AS_THE_CLI, ["train", "--resume", str(path.parent)]),
    "laminae.load": lambda path: (LOAD, [str(path)]),
}
"""How each command is given the checkpoint ``path`` (in a run directory, beside a sample)."""


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("member", CHECKPOINT_BOMBS)
def test_a_checkpoint_bomb_is_refused_unread_by_every_command(tmp_path, checkpoint_bomb, member, command):
    path = tmp_path / "run" / "model.npz"
    path.parent.mkdir()
    path.write_bytes(checkpoint_bomb(member))
    np.save(path.parent / "sample.npy", np.zeros((1, 4, 4), np.float32))
    script, args = COMMANDS[command](path)
    status, stdout, stderr, peak = run_limited(script, args, tmp_path, address_space=None)
    assert_one_line(status, stdout, stderr, peak, CHECKPOINT_BOMBS[member][1], path)


def test_evaluating_on_a_keras_npz_bomb_is_one_line(tmp_path, registry):
    checkpoint = tiny_model(registry).save(tmp_path / "model.npz", registry=registry)
    path = tmp_path / "data" / "mnist" / "mnist.npz"
    path.parent.mkdir(parents=True)
    images = DATA_BOMB_IMAGES * 28 * 28
    path.write_bytes(zip_bomb("x_train.npy", npy_header((DATA_BOMB_IMAGES, 28, 28), "|u1"), images))
    command = ["eval", str(checkpoint), "--dataset", "mnist", "--data-dir", str(tmp_path / "data")]
    status, stdout, stderr, peak = run_limited(AS_THE_CLI, command, tmp_path, address_space=None)
    words = (
        f"member 'x_train.npy': too large to load: its header ({DATA_BOMB_IMAGES}x28x28 uint8) needs {images:,}"
        " bytes, more than the 268,435,456 bytes left of the 268,435,456 accepted for a data file"
    )
    assert_one_line(status, stdout, stderr, peak, words, path)


# --- the same checks, in process ----------------------------------------------


def test_a_bomb_is_refused_by_the_limit_the_caller_gives(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, a=np.zeros(1000), b=np.zeros(1000))
    assert load_npz(path, error=DataError, name="data.npz", max_bytes=16000)["b"].shape == (1000,)
    with pytest.raises(DataError, match=r"^data.npz: member 'b.npy': too large to load: its header \(1000 float64\)"
                       r" needs 8,000 bytes, more than the 0 bytes left of the limit given$"):
        load_npz(path, error=DataError, name="data.npz", max_bytes=8000)


def test_honest_arrays_come_back_whatever_their_layout(tmp_path):
    arrays = {
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "big_endian": np.arange(5, dtype=">i4"),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3)),
        "record": np.array([(1, 2.0)], dtype=[("a", "<i2"), ("b", "<f8")]),
        "text": np.array(["ab", "c"]),
    }
    path = tmp_path / "layouts.npz"
    np.savez_compressed(path, **arrays)
    loaded = load_npz(path, error=DataError, name="layouts.npz")
    assert loaded.keys() == arrays.keys()
    for key, array in arrays.items():
        assert loaded[key].dtype == np.asarray(array).dtype and loaded[key].shape == np.shape(array)
        np.testing.assert_array_equal(loaded[key], array)


def test_running_out_of_memory_is_one_line_naming_the_file(tmp_path, monkeypatch):
    idx = tmp_path / "labels.gz"
    idx.write_bytes(idx_gz(IDX_LABELS, np.zeros(30, np.uint8)))
    npz = tmp_path / "data.npz"
    np.savez(npz, a=np.zeros(30))
    pkl = tmp_path / "mnist.pkl.gz"
    pkl.write_bytes(gzip.compress(pickle.dumps(np.zeros(3))))

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np, "empty", out_of_memory)
    monkeypatch.setattr(mnist_pickle.ArrayUnpickler, "load", out_of_memory)
    with pytest.raises(DataError, match=f"^{pkl}: not enough memory to unpickle it$"):
        mnist_pickle.read_mnist_pickle(pkl)
    with pytest.raises(DataError, match=f"^{idx}: not enough memory to read it$"):
        read_idx(idx, IDX_LABELS)
    with pytest.raises(DataError, match=f"^{npz}: not enough memory to load it$"):
        load_npz(npz, error=DataError, name=str(npz))


def test_text_from_a_file_is_shown_escaped():
    assert escaped("x_train\x1b[2J\r\u202e.npy ok") == "x_train\\x1b[2J\\r\\u202e.npy ok"


def test_a_data_stream_reads_to_its_end_within_its_budget(tmp_path):
    path = tmp_path / "data.gz"
    path.write_bytes(gzip.compress(bytes(100)))
    with open_data(path, max_bytes=100) as stream:
        assert stream.read(10) == bytes(10) and stream.read() == bytes(90) and stream.at_end()
    with open_data(path, max_bytes=99) as stream, pytest.raises(DataError, match="more than 99 bytes"):
        stream.read()
