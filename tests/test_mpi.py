"""Training on MPI processes (``mpiexec -n N``), run for real on this machine:
the numbers of ``threads = N`` bit for bit, one writer, Ctrl-C and resuming,
a rank that raises or is killed, and ranks that loaded different data."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae.training.slices import combine_slices, reduction_rounds
from tests import mpi_helpers
from tests.mpi_helpers import train_both
from tests.training_helpers import params_equal

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401 - only whether it is there
except ImportError:
    MPIEXEC = None
if MPIEXEC is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the MPI tests: pip install -e '.[test]' installs mpi4py and mpich (mpiexec)")
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec and mpi4py here: pip install 'laminae[mpi]'")
HYDRA_CTRL_C = [f"[mpiexec@{os.uname().nodename}] Sending Ctrl-C to processes as requested\n",
                f"[mpiexec@{os.uname().nodename}] Press Ctrl-C again to force abort\n"]
"""What MPICH's mpiexec itself prints, on stdout, when it passes Ctrl-C on to the processes."""


def mpiexec(processes: int, *command: str, timeout: float = 120, hosts: list[str] = (), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, *hosts, "-n", str(processes), *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)


def two_hosts(folder: Path) -> list[str]:
    """mpiexec's arguments for a hostfile of two names for this machine, one
    process each: MPICH's launcher then starts one proxy a name, as it would
    on two machines (there over ssh; here it forks)."""
    (folder / "hosts").write_text(f"localhost:1\n{os.uname().nodename}:1\n")
    return ["-f", str(folder / "hosts")]


def state_equal(a: laminae.Network, b: laminae.Network) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)


@pytest.mark.parametrize("count, rounds", [
    (1, []),
    (2, [[(0, 1)]]),
    (3, [[(0, 1)], [(0, 2)]]),
    (5, [[(0, 1), (2, 3)], [(0, 2)], [(0, 4)]]),
    (8, [[(0, 1), (2, 3), (4, 5), (6, 7)], [(0, 2), (4, 6)], [(0, 4)]]),
])
def test_the_slices_add_up_along_a_binomial_tree(count, rounds):
    assert reduction_rounds(count) == rounds


def test_combining_slices_follows_the_tree_and_its_loss_too():
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(7).astype(np.float32)] for _ in range(4)]
    expected = (grads[0][0] + grads[1][0]) + (grads[2][0] + grads[3][0])
    weights, results = [0.25] * 4, [(1.0, 1), (2.0, 2), (3.0, 0), (4.0, 3)]
    loss, correct = combine_slices(grads[0], grads[1:], weights, results)
    assert grads[0][0].tobytes() == expected.tobytes() and (loss, correct) == (2.5, 6)


@needs_mpi
@pytest.mark.parametrize("processes, hostfile", [(2, False), (3, False), (4, False), (2, True)])
def test_mpi_processes_end_where_threads_end_bit_for_bit(tmp_path, processes, hostfile):
    """Every classic network, and one with batch norm and dropout, each with a
    last batch of two samples (with three processes one of them idles); also
    as if on two machines, named in a hostfile."""
    hosts = two_hosts(tmp_path) if hostfile else []
    result = mpiexec(processes, sys.executable, "-m", "tests.mpi_helpers", str(tmp_path / "mpi"), hosts=hosts)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr
    train_both(tmp_path / "threads", threads=processes)
    for name in mpi_helpers.NAMES:
        on_mpi, on_threads = laminae.load(tmp_path / "mpi" / name), laminae.load(tmp_path / "threads" / name)
        assert params_equal(on_mpi.network, on_threads.network), name
        assert state_equal(on_mpi.network, on_threads.network), name
        rows = [(tmp_path / run / name / "metrics.csv").read_text().splitlines()[1].split(",")[:3] for run in ("mpi", "threads")]
        assert rows[0] == rows[1]  # the loss combined along the same tree
        assert laminae.load_training(tmp_path / "mpi" / name)[1].processes == processes


STOPPING_RUN = """
import os, signal, sys, time
from laminae.cli import main
from laminae.plugins.losses import SoftmaxCrossEntropy

real_forward, calls = SoftmaxCrossEntropy.forward, []

def forward(self, output, target):
    calls.append(1)
    if len(calls) >= int(os.environ["AT_CALL"]) and os.environ["PMI_RANK"] == os.environ["AT_RANK"]:
        if len(calls) == int(os.environ["AT_CALL"]):
            with open(os.environ["MARK"], "w") as mark:
                mark.write(f"{os.getpid()} {time.time()}")
            if os.environ["WHAT"] == "kill":
                os.kill(os.getpid(), 9)
            if os.environ["WHAT"] == "freeze":  # a machine cut off: no word, no close
                os.kill(os.getpid(), signal.SIGSTOP)
            if os.environ["WHAT"] == "raise":
                raise RuntimeError("the loss broke here")
        time.sleep(0.05)  # Ctrl-C: slow down, so that the signal comes before training ends
    return real_forward(self, output, target)

SoftmaxCrossEntropy.forward = forward
sys.exit(main(sys.argv[1:]))
"""
QUICK = ["quickstart", "--epochs", "2", "--batch-size", "128", "--quiet"]
"""40 batches an epoch; the test split is scored after each epoch."""


def stopping_run(processes: int, out: Path, what: str, rank: int, at_call: int, mark: Path, hosts: list[str] = (),
                 **popen) -> subprocess.Popen:
    env = {**os.environ, "AT_CALL": str(at_call), "AT_RANK": str(rank), "WHAT": what, "MARK": str(mark)}
    return subprocess.Popen([MPIEXEC, *hosts, "-n", str(processes), sys.executable, "-c", STOPPING_RUN, "train", *QUICK,
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def wait_for(path: Path, patience: float = 60) -> None:
    deadline = time.monotonic() + patience
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@needs_mpi
def test_ctrl_c_on_mpiexec_stops_every_rank_saves_and_resumes_bit_for_bit(tmp_path, capsys):
    from laminae.cli import main

    cut = stopping_run(2, tmp_path / "cut", "stop", rank=0, at_call=45, mark=tmp_path / "mark")  # epoch 2
    wait_for(tmp_path / "mark")
    cut.send_signal(signal.SIGINT)
    out, err = cut.communicate(timeout=60)
    assert cut.returncode == 130 and err == "", err
    hydra, ours = HYDRA_CTRL_C, "".join(line for line in out.splitlines(keepends=True) if line not in HYDRA_CTRL_C)
    assert len(out.splitlines()) - len(ours.splitlines()) == len(hydra)
    assert re.fullmatch(r"interrupted \(SIGINT\) at epoch 2, batch \d+; checkpoint saved to \S+\n"
                        r"resume with: laminae train --resume \S+\n", ours), out
    resumed = mpiexec(2, sys.executable, "-m", "laminae", "train", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert resumed.stdout.startswith("test accuracy: ")
    assert main(["train", *QUICK, "--threads", "2", "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    assert params_equal(laminae.load(tmp_path / "cut").network, laminae.load(tmp_path / "whole").network)


def gone_line(rank: int, processes: int, pid: str, what: str) -> str:
    return (fr"laminae: error: rank {rank} of {processes} \(host \S+, pid {pid}\) {what}: ending the job\n")


@needs_mpi
@pytest.mark.parametrize("processes, rank, hostfile", [(2, 1, False), (3, 0, False), (2, 0, True)])
def test_a_killed_rank_ends_the_job_with_one_line_naming_it_and_a_whole_checkpoint(tmp_path, processes, rank, hostfile,
                                                                                   capsys):
    """Rank 1 tells of rank 0, rank 0 of the others; MPICH's banner does not
    come (the launcher's child is the rank's supervisor, which exits plainly).
    The epoch-1 checkpoint resumes: on 3 processes bit for bit where
    ``threads = 3`` ends, on 3 after 2 saying that its numbers now differ."""
    from laminae.cli import main

    hosts = two_hosts(tmp_path) if hostfile else []
    killed = stopping_run(processes, tmp_path / "run", "kill", rank=rank, at_call=50, mark=tmp_path / "mark",
                          hosts=hosts)  # epoch 2
    out, err = killed.communicate(timeout=60)
    ended = time.time()
    pid, when = (tmp_path / "mark").read_text().split()
    assert killed.returncode == 2 and out == "", out
    assert re.fullmatch(gone_line(rank, processes, pid, r"ended without a word \(killed by a signal, or out of memory\?\)"),
                        err), err
    assert ended - float(when) < 10
    model, state = laminae.load_training(tmp_path / "run")
    assert (state.epoch, state.batch, state.processes) == (1, 0, processes)
    resumed = mpiexec(3, sys.executable, "-m", "laminae", "train", "--resume", str(tmp_path / "run"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert laminae.load_training(tmp_path / "run")[1].finished
    if processes == 3:
        assert resumed.stderr == ""
        assert main(["train", *QUICK, "--threads", "3", "--out", str(tmp_path / "whole")]) == 0
        capsys.readouterr()
        assert params_equal(laminae.load(tmp_path / "run").network, laminae.load(tmp_path / "whole").network)
    else:
        assert resumed.stderr == (
            "laminae: note: the run trained 2 slices of every batch, this one trains 3 (one per MPI process):"
            " its numbers from here on differ from the original run's\n"
        )


@needs_mpi
def test_a_rank_cut_off_ends_the_job_with_one_line_naming_it(tmp_path):
    """A stopped process (SIGSTOP) is what a machine cut off looks like from
    the others: no word, and no connection closed.  Rank 0 hears nothing for
    ten seconds, says which rank, and the job ends, the stopped one too."""
    started = time.monotonic()
    cut_off = stopping_run(2, tmp_path / "run", "freeze", rank=1, at_call=50, mark=tmp_path / "mark")
    out, err = cut_off.communicate(timeout=90)
    pid, _ = (tmp_path / "mark").read_text().split()
    assert cut_off.returncode == 2 and out == "", out
    assert re.fullmatch(gone_line(1, 2, pid, r"not heard from for 10 s \(its connection lost, or its machine stopped\)"),
                        err), err
    assert time.monotonic() - started < 40
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace"):
        assert time.monotonic() < deadline, "the stopped process outlived the job"
        time.sleep(0.1)
    assert laminae.load_training(tmp_path / "run")[1].epoch == 1


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_one_line_naming_it(tmp_path):
    started = time.monotonic()
    failing = stopping_run(3, tmp_path / "run", "raise", rank=2, at_call=10, mark=tmp_path / "mark")
    out, err = failing.communicate(timeout=60)
    assert failing.returncode == 2 and out == ""
    assert re.fullmatch(r"laminae train: error: rank 2 of 3 \(host \S+\): \S+models\.toml: model 'quickstart':"
                        r" loss 'softmax_cross_entropy' \(from plugin '\S+'\): forward or backward raised RuntimeError:"
                        r" the loss broke here\n", err), err
    assert time.monotonic() - started < 60


def idx_folder(folder: Path, seed: int) -> Path:
    """A tiny MNIST in IDX files: 64 training and 32 test digits drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    (folder / "mnist").mkdir(parents=True)
    for part, count in (("train", 64), ("t10k", 32)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        (folder / "mnist" / f"{part}-images-idx3-ubyte").write_bytes(
            np.array([2051, count, 28, 28], ">u4").tobytes() + images.tobytes())
        (folder / "mnist" / f"{part}-labels-idx1-ubyte").write_bytes(np.array([2049, count], ">u4").tobytes() + labels.tobytes())
    return folder


@needs_mpi
def test_ranks_that_loaded_different_data_stop_with_one_line(tmp_path):
    same, other = idx_folder(tmp_path / "a", seed=0), idx_folder(tmp_path / "b", seed=1)
    train = [sys.executable, "-m", "laminae", "train", "quickstart", "--dataset", "mnist", "--epochs", "1", "--quiet",
             "--out", str(tmp_path / "run"), "--data-dir"]
    result = subprocess.run([MPIEXEC, "-n", "2", *train, str(same), ":", "-n", "1", *train, str(other)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(r"laminae train: error: \S+: model 'quickstart': the training data on rank 2 of 3"
                        r" \(host \S+\) differ from rank 0's \(host \S+\): sha256 \w{12} against \w{12}\n",
                        result.stderr), result.stderr
