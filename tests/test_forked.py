"""Training slices in forked worker processes (Linux): the same numbers as
threads, errors that name the worker, and no process left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import pytest

import laminae
from laminae.training import forked, loop
from tests.test_parallel import conv_data, conv_spec
from tests.training_helpers import params_equal

pytestmark = pytest.mark.skipif(not forked.forking_works(), reason="workers are forked only on Linux")
TRAINING_PROCESS = os.getpid()
ROOT = Path(__file__).resolve().parent.parent


def no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_workers_give_the_numbers_threads_give_bit_for_bit(registry, monkeypatch):
    x, y = conv_data()
    models = [laminae.build(conv_spec(threads=3), registry=registry) for _ in range(2)]
    histories = [models[0].fit(x, y, progress=False).history]
    monkeypatch.setattr(loop, "forking_works", lambda: False)  # replicas on threads instead
    histories.append(models[1].fit(x, y, progress=False).history)
    assert params_equal(models[0].network, models[1].network)
    assert [m.train_loss for m in histories[0]] == [m.train_loss for m in histories[1]]
    assert no_children_left()


@pytest.mark.parametrize("extra", [[], [{"type": "batchnorm"}]], ids=["plain", "batchnorm"])
def test_workers_score_held_out_data_to_the_bits_one_process_gives(registry, monkeypatch, extra):
    """Between epochs the worker scores every other chunk of the validation
    and test sets, with the parameters and batch-norm averages of the epoch's
    end: the figures equal those of Model.evaluate in one process."""
    commands, starts = [], []
    send, start = forked.ForkedStep._send, forked.ForkedStep._start_workers
    monkeypatch.setattr(forked.ForkedStep, "_send", lambda self, x, y, labels, working, kind: (
        commands.extend(kind for _ in working), send(self, x, y, labels, working, kind)))
    monkeypatch.setattr(forked.ForkedStep, "_start_workers", lambda self, capacity: (
        starts.append(capacity), start(self, capacity)))
    spec = conv_spec(threads=2)
    spec["layers"][1:1] = extra
    model = laminae.build(spec, registry=registry)
    x, y = conv_data()
    held_x, held_y = conv_data(2500)
    assert model.network.inference_batch() == 1000  # validation: three chunks, test: two
    serial = []
    history = model.fit(
        x, y, validation_data=(held_x, held_y), test_data=(held_x[:1500], held_y[:1500]), progress=False,
        on_epoch=lambda row: serial.append(
            (model.evaluate(held_x, held_y, threads=1), model.evaluate(held_x[:1500], held_y[:1500], threads=1)[1])
        ),
    ).history
    assert [((row.val_loss, row.val_accuracy), row.test_accuracy) for row in history] == serial
    assert commands.count(forked.FORWARD) == 2 * 2  # per epoch: validation's second chunk and test's
    assert len(starts) == 2 and starts[1].rows == 1000  # the workers grew once for 1000-sample chunks, then stayed
    assert no_children_left()


def test_the_first_batch_starts_the_workers_and_the_end_of_training_stops_them(registry, monkeypatch):
    started = []
    real = forked.ForkedStep._start_workers

    def spy(self, capacity):
        real(self, capacity)
        started.append([worker.pid for worker in self.started])

    monkeypatch.setattr(forked.ForkedStep, "_start_workers", spy)
    x, y = conv_data()
    laminae.build(conv_spec(threads=2), registry=registry).fit(x, y, progress=False)
    assert len(started) == 1 and len(started[0]) == 1  # one worker, started once for two epochs
    assert no_children_left()


FAILING = {"now": False}


@attrs.define(eq=False)
class Troublemaker:
    """Passes its input through, except that in a worker process it raises,
    dies or dawdles (``worker``), and in the training process it raises
    while ``FAILING["now"]``."""

    worker: str = "raise"
    only_scoring: bool = False  # in a worker, misbehave only in inference mode
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return tuple(input_shape)

    def forward(self, x, training):
        if os.getpid() == TRAINING_PROCESS:
            if FAILING["now"]:
                raise RuntimeError("the training process's own slice failed")
        elif self.only_scoring and training:
            pass
        elif self.worker == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.worker == "raise":
            raise RuntimeError("broken in a worker")
        else:
            time.sleep(0.1)
        return x

    def backward(self, dout):
        return dout


class TroublemakerPlugin:
    @laminae.hookimpl
    def register_layers(self, register):
        register("troublemaker", Troublemaker)


def spec_with_troublemaker(worker: str) -> dict:
    spec = conv_spec(threads=2)
    spec["layers"].insert(1, {"type": "troublemaker", "worker": worker})
    return spec


@pytest.mark.parametrize(
    "worker, error, message",
    [
        ("raise", laminae.PluginError,
         r"^layer 1 \(troublemaker, from plugin 'TroublemakerPlugin'\): forward raised RuntimeError:"
         r" broken in a worker \(in worker process \d+ \(slice 2 of each batch\), raised at .*test_forked\.py:\d+\)$"),
        ("die", laminae.TrainingError, r"^worker process \d+ \(slice 2 of each batch\) died: killed by SIGKILL$"),
    ],
)
def test_a_failing_worker_stops_training_with_one_line(worker, error, message):
    registry = laminae.make_registry(plugins=[TroublemakerPlugin()], autoload=True)
    model = laminae.build(spec_with_troublemaker(worker), registry=registry)
    x, y = conv_data()
    with pytest.raises(error, match=message):
        model.fit(x, y, progress=False)
    assert no_children_left()


def test_evaluate_scores_in_worker_processes_to_the_bits_of_one(registry, monkeypatch):
    commands = []
    send = forked.ForkedStep._send
    monkeypatch.setattr(forked.ForkedStep, "_send", lambda self, x, y, labels, working, kind: (
        commands.extend(kind for _ in working), send(self, x, y, labels, working, kind)))
    spec = conv_spec(threads=2)
    spec["layers"].insert(1, {"type": "batchnorm"})
    model = laminae.build(spec, registry=registry)
    model.fit(*conv_data(), progress=False)
    held_x, held_y = conv_data(4500)
    one = model.evaluate(held_x, held_y, threads=1)
    assert commands.count(forked.FORWARD) == 0
    assert model.evaluate(held_x, held_y) == one  # train.threads: 2 processes, five chunks
    assert commands.count(forked.FORWARD) == 2
    assert model.evaluate(held_x, held_y, threads=3) == one
    assert commands.count(forked.FORWARD) == 2 + 3
    assert model.evaluate(held_x[:900], held_y[:900]) == model.evaluate(held_x[:900], held_y[:900], threads=1)
    assert commands.count(forked.FORWARD) == 5  # one chunk: no worker started
    assert no_children_left()


@pytest.mark.parametrize("threads, message", [
    (0, "must be at least 1, got 0"),
    (-1, "must be at least 1, got -1"),
    (1.5, r"must be an integer, got 1\.5 \(float\)"),
    (True, r"must be an integer, got True \(bool\)"),
    ("2", r"must be an integer, got '2' \(str\)"),
    (1000, r"must be at most \d+ \(this machine's CPU cores, or 4\), got 1000"),
])
def test_evaluate_refuses_a_thread_count_train_would_refuse(threads, message):
    model = laminae.build(conv_spec())
    with pytest.raises(laminae.TrainingError, match=rf"^cannot evaluate: 'threads' {message}$"):
        model.evaluate(*conv_data(10), threads=threads)


def test_a_worker_failing_while_scoring_stops_training_with_one_line():
    registry = laminae.make_registry(plugins=[TroublemakerPlugin()], autoload=True)
    spec = conv_spec(threads=2)
    spec["layers"].insert(1, {"type": "troublemaker", "only_scoring": True})
    model = laminae.build(spec, registry=registry)
    x, y = conv_data()
    message = (r"^layer 1 \(troublemaker, from plugin 'TroublemakerPlugin'\): forward raised RuntimeError:"
               r" broken in a worker \(in worker process \d+ \(slice 2 of each batch\), raised at .*test_forked\.py:\d+\)$")
    with pytest.raises(laminae.PluginError, match=message):
        model.fit(x, y, validation_data=conv_data(2500), progress=False)
    assert no_children_left()


EXPLODING_RUN = """
import laminae
from tests.test_parallel import conv_data, conv_spec
spec = conv_spec(threads=2)
spec["optimizer"]["lr"] = 1e38
x, y = conv_data()
try:
    laminae.build(spec).fit(x * 1e3, y, progress=False)
except laminae.TrainingError as error:
    print(error)
"""


def test_workers_print_no_numpy_warnings_either():
    """In a process of its own: under pytest a worker's warnings would be
    recorded by the warning capture it inherits, never printed."""
    result = subprocess.run([sys.executable, "-c", EXPLODING_RUN], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.stdout.startswith("the loss became") and result.stderr == ""


def test_a_larger_batch_later_restarts_the_workers_with_room_for_it(registry):
    x, y = conv_data()
    model = laminae.build(conv_spec(threads=2), registry=registry)
    with forked.ForkedStep(model, 2) as step:
        step(x[:4], y[:4], y[:4])
        first = [worker.pid for worker in step.started]
        loss, correct = step(x[:40], y[:40], y[:40])
        assert [worker.pid for worker in step.started] != first and np.isfinite(loss) and 0 <= correct <= 40
    assert no_children_left()


STOP_RUN = """
import os, signal, sys
from laminae.cli import main
from laminae.plugins.losses import SoftmaxCrossEntropy

training_process, real_forward, calls = os.getpid(), SoftmaxCrossEntropy.forward, []

def forward(self, output, target):
    if os.getpid() == training_process:
        calls.append(1)
        if len(calls) == 25:  # epoch 2, batch 5: as a terminal's Ctrl-C or a job scheduler, to the whole group
            os.killpg(0, getattr(signal, os.environ["STOP_SIGNAL"]))
    return real_forward(self, output, target)

SoftmaxCrossEntropy.forward = forward
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_to_the_process_group_stops_training_cleanly(tmp_path, signal_name, status):
    """The workers get it too and ignore it; the training process finishes the
    batch, saves and says how to resume, and the resumed run ends where an
    uninterrupted one does."""
    from tests.test_cli_train import MODELS

    common = [MODELS, "quickstart", "--epochs", "2", "--batch-size", "256", "--threads", "2", "--quiet"]
    run = [sys.executable, "-c", STOP_RUN, "train", *common, "--out", str(tmp_path / "cut")]
    cut = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True,
                         check=False, env={**os.environ, "STOP_SIGNAL": signal_name})
    assert cut.returncode == status, cut.stderr
    assert f"interrupted ({signal_name}) at epoch 2, batch 4;" in cut.stdout and cut.stderr == ""
    whole = [sys.executable, "-m", "laminae", "train", *common, "--out", str(tmp_path / "whole")]
    resumed = [sys.executable, "-m", "laminae", "train", "--resume", str(tmp_path / "cut"), "--quiet"]
    for command in (whole, resumed):
        assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300, check=False).returncode == 0
    assert params_equal(laminae.load(tmp_path / "cut").network, laminae.load(tmp_path / "whole").network)


def test_a_worker_that_cannot_be_started_is_a_one_line_error(registry, monkeypatch):
    def refuse():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    x, y = conv_data()
    with pytest.raises(laminae.TrainingError,
                       match=r"^cannot start a worker process \(Resource temporarily unavailable\); use threads = 1$"):
        laminae.build(conv_spec(threads=2), registry=registry).fit(x, y, progress=False)
    assert no_children_left()


def test_a_worker_gone_between_batches_is_a_one_line_error(registry):
    x, y = conv_data()
    model = laminae.build(conv_spec(threads=2), registry=registry)
    with forked.ForkedStep(model, 2) as step:
        step(x[:16], y[:16], y[:16])
        os.kill(step.started[0].pid, signal.SIGKILL)
        os.waitpid(step.started[0].pid, 0)  # so that it is surely gone before the next batch is handed out
        with pytest.raises(laminae.TrainingError, match=r"^worker process \d+ \(slice 2 of each batch\) died: "):
            step(x[:16], y[:16], y[:16])
    assert no_children_left()


def test_a_step_that_failed_in_the_training_process_leaves_no_stale_reply():
    """The next step starts new workers: without that it would read the abandoned
    slice's reply and combine that slice's gradients."""
    registry = laminae.make_registry(plugins=[TroublemakerPlugin()], autoload=True)
    spec = spec_with_troublemaker("sleep")
    x, y = conv_data()
    reference, model = laminae.build(spec, registry=registry), laminae.build(spec, registry=registry)
    with forked.ForkedStep(reference, 2) as step:
        expected = step(x[:16], y[:16], y[:16])
    with forked.ForkedStep(model, 2) as step:
        FAILING["now"] = True
        try:
            with pytest.raises(laminae.PluginError, match="forward raised RuntimeError: the training process.s own slice failed"):
                step(x[32:48], y[32:48], y[32:48])
        finally:
            FAILING["now"] = False
        assert step.started == [] and no_children_left()
        assert step(x[:16], y[:16], y[:16]) == expected
    for name, grad in reference.network.grads.items():
        np.testing.assert_array_equal(model.network.grads[name], grad)


def test_a_second_step_forked_meanwhile_does_not_keep_the_first_ones_workers_alive(registry):
    """Its worker inherits the first step's pipe ends; the first step's workers are told to leave."""
    x, y = conv_data()
    first, second = (laminae.build(conv_spec(threads=2), registry=registry) for _ in range(2))
    later = forked.ForkedStep(second, 2).__enter__()
    try:
        with forked.ForkedStep(first, 2) as step:
            step(x[:16], y[:16], y[:16])
            later(x[:16], y[:16], y[:16])
            leaving = time.monotonic()
        assert time.monotonic() - leaving < 2  # not the 10 s after which a worker is killed
    finally:
        later.__exit__(None, None, None)
    assert no_children_left()
