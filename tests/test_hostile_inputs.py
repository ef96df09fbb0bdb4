"""Hostile and oversized inputs to the commands: each gets one line and exit
status 2, in a process whose address space is limited to 1 GB, far below
what the input would need if it were believed."""
from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2**30
LIMITED = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}));"
    " from laminae.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_laminae(*argv, cwd: Path, limit: int = LIMIT, timeout: float = 120) -> subprocess.CompletedProcess:
    """``laminae ARGV`` in a fresh process limited to ``limit`` bytes of address space."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAE_")} | {"LAMINAE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    code = LIMITED.format(limit=limit)
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess, command: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"laminae {command}: error: ")
    return result.stderr.strip().removeprefix(f"laminae {command}: error: ")


MODEL = """\
[models.{name}]
input = [1, 28, 28]
layers = [{{ type = "affine", units = {units} }}, {{ type = "affine", units = 10 }}]
loss = "softmax_cross_entropy"
optimizer = "sgd"
train = {{ dataset = "mnist-sample", epochs = 1, threads = {threads} }}
"""


def model_file(tmp_path: Path, name: str = "m", units: int = 16, threads: int = 1, text: str | None = None) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text if text is not None else MODEL.format(name=name, units=units, threads=threads))
    return path


def test_a_model_too_big_for_memory_is_refused_before_any_allocation(tmp_path):
    path = model_file(tmp_path, units=3_000_000)
    message = one_line(run_laminae("check", path, cwd=tmp_path), "check")
    assert message.startswith(f"{path}: model 'm', layer 0 (affine): its parameters need 37,632,000,000 bytes to draw")
    assert message.endswith("bytes of memory available")


@pytest.mark.parametrize("where", ["toml", "flag"])
def test_threads_are_capped(tmp_path, where):
    from laminae.validators import MAX_THREADS

    path = model_file(tmp_path, threads=1000 if where == "toml" else 1)
    flags = ["--threads", "1000"] if where == "flag" else []
    message = one_line(run_laminae("train", path, "m", *flags, "--out", tmp_path / "run", cwd=tmp_path), "train")
    assert message.endswith(f"'threads' must be at most {MAX_THREADS} (this machine's CPU cores, or 4), got 1000")


def test_a_resumed_checkpoint_cannot_ask_for_a_thousand_workers(tmp_path):
    import laminae
    from laminae.persistence import checkpoint

    model = laminae.from_toml(model_file(tmp_path), "m")
    x, y = np.zeros((64, 1, 28, 28), np.float32), np.arange(64) % 10
    model.fit(x, y, epochs=1, progress=False, run_dir=tmp_path / "run")
    saved = tmp_path / "run" / "model.npz"
    with np.load(saved) as archive:
        arrays = dict(archive)
    meta = __import__("json").loads(arrays["meta"].tobytes())
    meta["training"]["threads"] = 1000
    arrays["meta"] = np.frombuffer(__import__("json").dumps(meta).encode(), np.uint8)
    np.savez(saved, **arrays)
    message = one_line(run_laminae("train", "--resume", tmp_path / "run", cwd=tmp_path), "train")
    assert "'threads' must be at most" in message and "got 1000" in message
    assert checkpoint.CHECKPOINT_FILE == "model.npz"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "a" + ".0" * 31 + ": tables or arrays nested more than 32 deep"),
        ("[models.m]\nx = " + "{ a = " * 400 + "1" + " }" * 400 + "\n",
         "model 'm', x" + ".a" * 29 + ": tables or arrays nested more than 32 deep"),
        ("[models.m]\nx = " + "{ a = " * 40 + "1" + " }" * 40 + "\n",
         "model 'm', x" + ".a" * 29 + ": tables or arrays nested more than 32 deep"),
        ("a = " + "[" * 100_000 + "\n", "invalid TOML: Unclosed array (opened at line 1, column 5)"),
    ],
    ids=["arrays-100000-deep", "tables-400-deep", "tables-40-deep", "arrays-100000-deep-never-closed"],
)
def test_deeply_nested_toml_is_one_line(tmp_path, text, reason):
    path = model_file(tmp_path, text=text)
    assert one_line(run_laminae("check", path, cwd=tmp_path), "check") == f"{path}: {reason}"


def test_checkpoint_metadata_nested_deep_is_one_line(tmp_path):
    meta = '{"format": "laminae.checkpoint", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "deep.npz"
    np.savez(path, meta=np.frombuffer(meta.encode(), np.uint8))
    message = one_line(run_laminae("eval", path, cwd=tmp_path), "eval")
    assert message == f"{path}: corrupt checkpoint (its 'meta' entry nests deeper than Python can parse)"


def test_a_long_model_chain_and_many_models_are_checked_in_linear_time(tmp_path):
    lines = []
    for i in range(2999):
        lines += [f"[models.m{i}]", f'extends = "m{i + 1}"']
    lines += [MODEL.format(name="m2999", units=2, threads=1)]
    path = model_file(tmp_path, text="\n".join(lines))
    started = time.perf_counter()
    result = run_laminae("check", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nok  ") == 2999 and time.perf_counter() - started < 20  # was 55 s, quadratic


def test_a_very_long_model_name_gets_a_safe_run_directory(tmp_path):
    name = "n" * 300
    path = model_file(tmp_path, name=name)
    result = run_laminae("train", path, name, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("n" * 64 + "-") and len(run.name) < 100


def test_member_names_from_a_checkpoint_are_shown_escaped(tmp_path):
    import laminae

    model = laminae.from_toml(model_file(tmp_path), "m")
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    np.savez(tmp_path / "digit.npz", **arrays, **{"param/².W": np.zeros(3, np.float32)})
    message = one_line(run_laminae("eval", tmp_path / "digit.npz", cwd=tmp_path), "eval")
    assert message.endswith("layer '²' (not in the model): unexpected parameter 'W'")  # '²'.isdigit() is True
    np.savez(path, **arrays, **{"param/\x1b[2J\r1.W": np.zeros(3, np.float32)})
    message = one_line(run_laminae("eval", path, cwd=tmp_path), "eval")
    assert "\x1b" not in message and "\r" not in message
    assert message == (
        f"{path}: not a Laminae checkpoint (member 'param/\\x1b[2J\\r1.W.npy' has control characters in its name)"
    )


def test_a_second_run_writing_the_same_directory_is_refused(tmp_path):
    import laminae

    model = laminae.from_toml(model_file(tmp_path), "m")
    (tmp_path / "run").mkdir()
    fd = os.open(tmp_path / "run" / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in another process holds it
    try:
        with pytest.raises(laminae.TrainingError, match=r"another run \(process 4242\) is writing this run directory"):
            model.fit(np.zeros((8, 1, 28, 28), np.float32), np.arange(8), progress=False, run_dir=tmp_path / "run")
    finally:
        os.close(fd)
    # the kernel dropped the lock with its holder: the next run goes ahead
    model.fit(np.zeros((8, 1, 28, 28), np.float32), np.arange(8), progress=False, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "model.npz").exists()


def test_two_commands_at_once_on_one_run_directory(tmp_path):
    path = model_file(tmp_path, text=MODEL.format(name="m", units=16, threads=1).replace("epochs = 1", "epochs = 50"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAE_")}
    first = subprocess.Popen([sys.executable, "-m", "laminae", "train", str(path), "m", "--quiet", "--out", "run"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_laminae("train", path, "m", "--quiet", "--out", "run", cwd=tmp_path)
        assert one_line(second, "train").startswith(f"{path}: model 'm': run: another run (process {first.pid})")
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)


def test_temporary_files_of_a_killed_run_are_cleaned_up(tmp_path):
    import laminae

    run = tmp_path / "run"
    run.mkdir()
    for left in (".model.npz.abc123.tmp", ".spec.json.x.tmp"):
        (run / left).write_bytes(b"half a file")
    model = laminae.from_toml(model_file(tmp_path), "m")
    model.fit(np.zeros((8, 1, 28, 28), np.float32), np.arange(8), progress=False, run_dir=run)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_a_model_with_nan_weights_is_refused_by_eval_and_predict(tmp_path):
    import laminae

    model = laminae.from_toml(model_file(tmp_path), "m")
    model.network.params["0.W"][0, 0] = np.nan
    path = model.save(tmp_path / "nan.npz")
    expected = f"{path}: model 'm': the model's outputs are not finite"
    assert one_line(run_laminae("eval", path, cwd=tmp_path), "eval").startswith(expected)
    image = tmp_path / "digit.npy"
    np.save(image, np.full((28, 28), 0.5, np.float32))
    assert one_line(run_laminae("predict", path, image, cwd=tmp_path), "predict").startswith(expected)


def test_a_huge_npy_header_given_to_predict_is_refused_unread(tmp_path):
    import laminae

    path = laminae.from_toml(model_file(tmp_path), "m").save(tmp_path / "m.npz")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    huge = tmp_path / "huge.npy"
    huge.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 16)
    message = one_line(run_laminae("predict", path, huge, cwd=tmp_path), "predict")
    assert message == f"{huge}: has shape (1000000000000,), but the model expects (1, 28, 28)"


def test_a_huge_png_given_to_predict_is_refused_undecoded(tmp_path):
    import laminae
    from PIL import Image

    path = laminae.from_toml(model_file(tmp_path), "m").save(tmp_path / "m.npz")
    big = tmp_path / "big.png"
    Image.new("1", (30000, 30000)).save(big)  # 110 KB that decode to 900 million pixels
    message = one_line(run_laminae("predict", path, big, cwd=tmp_path), "predict")
    assert message.startswith(f"{big}: not a readable image (Image size (900000000 pixels) exceeds limit")
    small = tmp_path / "small.png"
    Image.new("L", (56, 56)).save(small)
    assert one_line(run_laminae("predict", path, small, cwd=tmp_path), "predict") == (
        f"{small}: is 56x56 pixels, but the model expects 28x28"
    )


def test_sigkill_at_any_moment_leaves_a_whole_checkpoint_and_a_resumable_run(tmp_path):
    """Killed without warning, mid-epoch or mid-write, over and over: the
    checkpoint is always the last whole one, and the run always resumes."""
    import laminae

    path = model_file(tmp_path, text=MODEL.format(name="m", units=16, threads=1).replace("epochs = 1", "epochs = 400"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAE_")}
    checkpoint = tmp_path / "run" / "model.npz"
    argv = ["train", str(path), "m", "--quiet", "--batch-size", "500", "--out", "run"]
    rng = np.random.default_rng(0)
    for attempt in range(5):
        if attempt:
            argv = ["train", "--resume", "run", "--quiet"]
        process = subprocess.Popen([sys.executable, "-m", "laminae", *argv], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        process.kill()
        process.wait(30)
        saved = laminae.load(checkpoint)  # whole: a CheckpointError here would fail the test
        assert saved.name == "m"
    _, state = laminae.load_training(tmp_path / "run")
    assert state.epoch > 0


def test_check_lets_each_model_go_before_building_the_next(tmp_path):
    """Sixty models of 4M parameters each: 2.9 GB if check kept them alive, in a
    process allowed 1 GB."""
    text = "".join(MODEL.format(name=f"m{i}", units=5000, threads=1) for i in range(60))
    path = model_file(tmp_path, text=text)
    result = run_laminae("check", path, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok  m") == 60
