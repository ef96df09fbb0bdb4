"""The training loop: reproducibility, interruption and resumption, the NaN guard."""
from __future__ import annotations

import csv
import os
import signal
import threading
import warnings

import numpy as np
import pytest

import laminae
from tests.training_helpers import LossSpy, params_equal, tiny_data, tiny_model


def test_same_seed_gives_the_same_weights_to_the_bit(registry):
    x, y = tiny_data()
    first, second = tiny_model(registry), tiny_model(registry)
    first.fit(x, y, progress=False)
    second.fit(x, y, progress=False)
    assert params_equal(first.network, second.network)


def test_a_different_seed_gives_different_weights(registry):
    x, y = tiny_data()
    first, second = tiny_model(registry, seed=0), tiny_model(registry, seed=1)
    first.fit(x, y, progress=False)
    second.fit(x, y, progress=False)
    assert not params_equal(first.network, second.network)


def test_the_shuffle_seed_alone_changes_the_result(registry):
    x, y = tiny_data()
    first, second = tiny_model(registry), tiny_model(registry)
    first.fit(x, y, progress=False, seed=0)
    second.fit(x, y, progress=False, seed=5)
    assert not params_equal(first.network, second.network)


def test_the_final_partial_batch_is_used(registry):
    x, y = tiny_data(samples=90)  # batches of 16: five full ones and one of 10
    model = tiny_model(registry)
    model.loss = spy = LossSpy(model.loss)
    result = model.fit(x, y, epochs=2, progress=False)
    assert spy.calls == 2 * 6
    assert [m.epoch for m in result.history] == [1, 2]


def test_training_learns_and_reports_metrics(registry, tmp_path):
    x, y = tiny_data(samples=300)
    model = tiny_model(registry)
    result = model.fit(x[:200], y[:200], epochs=5, validation_data=(x[200:250], y[200:250]),
                       test_data=(x[250:], y[250:]), progress=False, run_dir=tmp_path)
    last = result.history[-1]
    assert last.train_accuracy > 0.8 and last.val_accuracy > 0.8 and last.test_accuracy > 0.8
    loss, accuracy = model.evaluate(x[250:], y[250:])
    assert accuracy == last.test_accuracy and loss > 0
    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.csv", "model.npz", "best.npz", "spec.json", ".lock"}


def test_predict_gives_int64_labels_and_probabilities(registry):
    x, y = tiny_data()
    model = tiny_model(registry)
    model.fit(x, y, progress=False)
    labels = model.predict(x)
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    probabilities = model.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).all()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_batch_and_resuming_matches_an_uninterrupted_run(registry, signum):
    x, y = tiny_data()
    reference = tiny_model(registry)
    reference_result = reference.fit(x, y, progress=False)
    model = tiny_model(registry)
    real_loss = model.loss
    model.loss = LossSpy(real_loss, at=9, signum=signum)  # epoch 2, batch 3
    stopped = model.fit(x, y, progress=False)
    assert stopped.interrupted and stopped.stopped_by == signal.Signals(signum).name
    assert (stopped.state.epoch, stopped.state.batch) == (1, 3)
    assert [m.epoch for m in stopped.history] == [1]
    model.loss = real_loss
    resumed = model.fit(x, y, progress=False, resume=stopped.state)
    assert not resumed.interrupted
    assert params_equal(model.network, reference.network)
    assert resumed.history[-1].train_loss == reference_result.history[-1].train_loss


def test_a_signal_after_the_last_batch_finishes_the_run_and_is_reported(registry):
    """Training is whole, so not interrupted; the signal is not lost either: a
    caller running fit after fit (``laminae tune``) learns it was asked to stop."""
    x, y = tiny_data()
    model = tiny_model(registry)
    last = model.train_config.epochs

    def at_the_end(row):
        if row.epoch == last:
            os.kill(os.getpid(), signal.SIGINT)

    result = model.fit(x, y, progress=False, on_epoch=at_the_end)
    assert not result.interrupted and result.stopped_by == "" and result.state.finished
    assert result.late_signal == "SIGINT" and [m.epoch for m in result.history] == list(range(1, last + 1))
    assert model.fit(x, y, progress=False).late_signal == ""


def test_resuming_from_the_checkpoint_matches_an_uninterrupted_run(registry, tmp_path):
    x, y = tiny_data()
    reference = tiny_model(registry)
    reference.fit(x, y, progress=False, run_dir=tmp_path / "reference")
    model = tiny_model(registry)
    model.loss = LossSpy(model.loss, at=14)  # epoch 3, batch 2
    assert model.fit(x, y, progress=False, run_dir=tmp_path / "run").interrupted

    model, state = laminae.load_training(tmp_path / "run", registry=registry)
    resumed = model.fit(x, y, progress=False, run_dir=tmp_path / "run", resume=state)
    assert not resumed.interrupted
    assert params_equal(model.network, reference.network)
    final = laminae.load(tmp_path / "run", registry=registry)
    assert params_equal(final.network, reference.network)
    strip = lambda path: [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "run" / "metrics.csv") == strip(tmp_path / "reference" / "metrics.csv")


def test_signal_handlers_are_restored(registry):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    x, y = tiny_data()
    tiny_model(registry).fit(x, y, epochs=1, progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_training_in_a_worker_thread_leaves_signals_alone(registry):
    x, y = tiny_data()
    model = tiny_model(registry)
    errors = []
    thread = threading.Thread(target=lambda: _capture(errors, model.fit, x, y, epochs=1, progress=False))
    thread.start()
    thread.join()
    assert errors == []


def _capture(errors, function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except Exception as exc:  # pragma: no cover - reported by the assertion
        errors.append(exc)


def test_a_nan_loss_names_the_epoch_and_batch_and_keeps_the_last_good_checkpoint(registry, tmp_path):
    x, y = tiny_data()
    tiny_model(registry).fit(x, y, epochs=1, progress=False, run_dir=tmp_path)
    good = (tmp_path / "model.npz").read_bytes()
    model, state = laminae.load_training(tmp_path, registry=registry)
    model.loss = LossSpy(model.loss, at=4, nan=True)
    with pytest.raises(laminae.TrainingError) as caught:
        model.fit(x, y, epochs=3, progress=False, run_dir=tmp_path, resume=state)
    message = caught.value.message
    assert "loss became nan at epoch 2, batch 4 of 6" in message
    assert f"the last good checkpoint is {tmp_path / 'model.npz'}" in message and "\n" not in message
    assert (tmp_path / "model.npz").read_bytes() == good


def test_an_exploding_learning_rate_stops_training(registry):
    x, y = tiny_data()
    model = tiny_model(registry, lr=1e20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings would print ahead of the one-line error
        with pytest.raises(laminae.TrainingError, match=r"the loss became (nan|inf) at epoch \d+, batch \d+ of 6"):
            model.fit(x, y, epochs=50, progress=False)
    assert all(np.isfinite(p).all() for p in model.network.params.values())


def test_data_that_does_not_fit_the_model_is_a_one_line_error(registry):
    x, y = tiny_data()
    with pytest.raises(laminae.DataError, match=r"samples have shape \(1, 5, 5\), but the model expects \(1, 4, 4\)"):
        tiny_model(registry).fit(np.zeros((4, 1, 5, 5), np.float32), y[:4], progress=False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 8}, "cannot resume with batch_size 8: the run used 16"),
        ({"epochs": 0}, "'epochs' must be at least 1, got 0"),
    ],
)
def test_resuming_with_other_settings_is_refused(registry, settings, message):
    x, y = tiny_data()
    model = tiny_model(registry)
    model.loss = LossSpy(model.loss, at=2)
    state = model.fit(x, y, progress=False).state
    with pytest.raises(laminae.TrainingError, match=message):
        model.fit(x, y, resume=state, progress=False, **settings)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full(90, 3), r"training data: label 3 at index 0 is outside the model's 3 classes \(0..2\)"),
        (np.full(90, -1), r"label -1 at index 0 is outside"),
        (np.zeros(90, np.float32), r"labels must be integers \(N,\) or one-hot rows \(N, classes\), got float32 \(90,\)"),
        (np.eye(4, dtype=np.float32)[np.zeros(90, int)], "one-hot labels have 4 columns, but the model outputs 3 classes"),
    ],
)
def test_labels_that_do_not_fit_the_output_are_a_one_line_error(registry, labels, message):
    x, _ = tiny_data()
    with pytest.raises(laminae.DataError, match=message):
        tiny_model(registry).fit(x, labels, progress=False)
    with pytest.raises(laminae.DataError, match=message.replace("training data", "evaluation data")):
        tiny_model(registry).evaluate(x, labels)


def test_one_hot_labels_train_like_integer_labels(registry):
    x, y = tiny_data()
    by_label, by_row = tiny_model(registry), tiny_model(registry)
    by_label.fit(x, y, epochs=1, progress=False)
    by_row.fit(x, np.eye(3, dtype=np.float32)[y], epochs=1, progress=False)
    assert params_equal(by_label.network, by_row.network)


def test_evaluating_nothing_is_a_one_line_error(registry):
    with pytest.raises(laminae.DataError, match="evaluation data: no samples"):
        tiny_model(registry).evaluate(np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "'epochs' must be at least 1, got 0"),
        ({"epochs": -2}, "'epochs' must be at least 1, got -2"),
        ({"batch_size": 0}, "'batch_size' must be at least 1, got 0"),
        ({"batch_size": 2.5}, "'batch_size' must be an integer, got 2.5"),
        ({"seed": -1}, "'seed' must be at least 0, got -1"),
    ],
)
def test_fit_refuses_settings_that_would_train_nothing(registry, settings, message):
    x, y = tiny_data()
    model = tiny_model(registry)
    before = {name: p.copy() for name, p in model.network.params.items()}
    with pytest.raises(laminae.TrainingError, match=f"cannot train: {message}"):
        model.fit(x, y, progress=False, **settings)
    assert all(np.array_equal(before[name], p) for name, p in model.network.params.items())

