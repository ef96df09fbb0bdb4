"""Augmentation transforms, learning-rate schedules and early stopping."""
from __future__ import annotations

import csv

import attrs
import numpy as np
import pytest

import laminae
from laminae.cli import main
from laminae.plugins.schedules import Cosine, InverseTime, OneCycle, Step
from laminae.plugins.transforms import Crop, Cutout, Flip, Shift
from laminae.testing import ConformanceError, cases, check_schedule, check_transform, uncovered
from tests.test_registry import plugin
from tests.training_helpers import LossSpy, params_equal

TRANSFORMS = [Shift(pixels=2), Crop(pad=3), Flip(p=0.5), Cutout(size=6, p=0.8)]


def batch(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 1, 12, 12), dtype=np.float32)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: type(t).__name__)
def test_a_transform_keeps_shape_and_dtype_leaves_its_input_and_follows_its_generator(transform):
    x = batch()
    before = x.copy()
    out = transform(x, np.random.default_rng(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.array_equal(x, before)
    assert np.array_equal(out, transform(x, np.random.default_rng(5)))
    assert not np.array_equal(out, x)  # it did something to some image
    assert not np.array_equal(out, transform(x, np.random.default_rng(6)))


def test_shift_moves_whole_images_and_fills_with_zeros():
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 1
    seen = set()
    for seed in range(200):
        out = Shift(pixels=1)(x, np.random.default_rng(seed))
        (r, c) = np.argwhere(out[0, 0] == 1)[0]
        assert out.sum() == 1
        seen.add((r - 2, c - 2))
    assert seen == {(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}


def test_flip_mirrors_and_cutout_zeroes_a_square():
    x = batch(64)
    flipped = Flip(p=1.0)(x, np.random.default_rng(0))
    assert np.array_equal(flipped, x[..., ::-1])
    assert np.array_equal(Flip(p=0.0)(x, np.random.default_rng(0)), x)
    cut = Cutout(size=4, p=1.0)(x + 1, np.random.default_rng(0))
    zeros = (cut == 0).reshape(64, -1).sum(axis=1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at most to 2x2 at a corner


def test_schedules_give_their_rates():
    step = Step(every=2, gamma=0.5)
    assert [step(0.1, s, 10, 6) for s in (0, 19, 20, 45)] == [0.1, 0.1, 0.05, 0.025]
    cosine = Cosine(warmup_epochs=1, floor=0.1)
    assert cosine(1.0, 0, 10, 5) == pytest.approx(0.1) and cosine(1.0, 9, 10, 5) == pytest.approx(1.0)
    assert cosine(1.0, 10, 10, 5) == pytest.approx(1.0) and cosine(1.0, 30, 10, 5) == pytest.approx(0.55)
    cycle = OneCycle(rise=0.25, div=10, final_div=100)
    assert cycle(1.0, 0, 10, 4) == pytest.approx(0.1) and cycle(1.0, 10, 10, 4) == pytest.approx(1.0)
    assert cycle(1.0, 40, 10, 4) == pytest.approx(0.01)
    assert InverseTime(decay=0.5)(1.0, 4, 10, 1) == pytest.approx(1 / 3)


def spec(**train):
    return {
        "name": "tiny_cnn",
        "input": [1, 12, 12],
        "layers": [{"type": "conv", "filters": 4, "size": 3}, {"type": "relu"}, {"type": "pool"},
                   {"type": "affine", "units": 3}],
        "loss": "softmax_cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9,
                      "schedule": {"type": "cosine", "warmup_epochs": 1}},
        "train": {"epochs": 3, "batch_size": 16, "seed": 3, "augment": [{"type": "shift", "pixels": 2},
                                                                        {"type": "cutout", "size": 4}], **train},
    }


def data(n=96):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 12, 12), dtype=np.float32) * 0.3
    x[np.arange(n), 0, 3 + 3 * y, 3:9] += 0.7
    return x, y


@pytest.mark.parametrize("threads", [1, 2])
def test_resuming_with_augmentation_and_a_schedule_is_bit_for_bit(registry, tmp_path, threads):
    x, y = data()
    reference = laminae.build(spec(threads=threads), registry=registry)
    reference.fit(x, y, progress=False, run_dir=tmp_path / "reference")
    stopped = laminae.build(spec(threads=threads), registry=registry)
    stopped.loss = LossSpy(stopped.loss, at=9)  # epoch 2, batch 3
    assert stopped.fit(x, y, progress=False, run_dir=tmp_path / "run").interrupted
    model, state = laminae.load_training(tmp_path / "run", registry=registry)
    model.fit(x, y, progress=False, run_dir=tmp_path / "run", resume=state)
    assert params_equal(model.network, reference.network)
    strip = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "run" / "metrics.csv") == strip(tmp_path / "reference" / "metrics.csv")


def test_the_learning_rate_of_each_epoch_is_recorded(registry, tmp_path):
    x, y = data()
    laminae.build(spec(), registry=registry).fit(x, y, progress=False, run_dir=tmp_path)
    with open(tmp_path / "metrics.csv") as file:
        rates = [float(row["lr"]) for row in csv.DictReader(file)]
    steps = 6  # 96 samples in batches of 16
    expected = [Cosine(warmup_epochs=1)(0.1, (e + 1) * steps - 1, steps, 3) for e in range(3)]
    assert rates == pytest.approx(expected, rel=1e-5)
    assert rates[0] > rates[1] > rates[2]


def test_plot_draws_the_learning_rate(registry, tmp_path):
    from matplotlib.figure import Figure

    from laminae.reporting.figures import draw_curves
    from laminae.training.metrics import read_log

    x, y = data()
    laminae.build(spec(), registry=registry).fit(x, y, progress=False, run_dir=tmp_path)
    figure = Figure()
    draw_curves(figure, {"run": read_log(tmp_path / "metrics.csv")})
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy", "learning rate"]


def test_inverse_time_schedule_is_sgd_decay_bit_for_bit(registry):
    x, y = data()
    with_decay = {**spec(), "optimizer": {"type": "sgd", "lr": 0.1, "decay": 0.01}}
    with_decay["train"] = {**with_decay["train"], "augment": []}
    scheduled = {**with_decay, "optimizer": {"type": "sgd", "lr": 0.1,
                                             "schedule": {"type": "inverse_time", "decay": 0.01}}}
    a, b = laminae.build(with_decay, registry=registry), laminae.build(scheduled, registry=registry)
    a.fit(x, y, progress=False)
    b.fit(x, y, progress=False)
    assert params_equal(a.network, b.network)


@attrs.define(eq=False)
class Counting:
    """Counts the batches it sees (a transform must never reach evaluation)."""

    calls: list = attrs.field(factory=list)

    def __call__(self, x, rng):
        self.calls.append(len(x))
        return x


def test_transforms_are_off_in_evaluation_and_prediction(tmp_path):
    extra = plugin("counting", register_transforms=lambda register: register("counting", Counting))
    registry = laminae.make_registry(plugins=[extra], autoload=False)
    model = laminae.build({**spec(), "train": {"epochs": 1, "batch_size": 16, "augment": ["counting"]}},
                          registry=registry)
    (counter,) = model.transforms
    x, y = data()
    model.fit(x, y, progress=False, validation_data=(x, y), test_data=(x, y))
    assert counter.calls == [16] * 6  # the six training batches, no evaluation chunk
    model.evaluate(x, y)
    model.predict(x)
    model.predict_proba(x)
    assert counter.calls == [16] * 6


def test_early_stopping_keeps_the_best_and_the_last_checkpoint(registry, tmp_path):
    x, y = data()
    frozen = {**spec(validation=32, patience=2, epochs=20), "optimizer": {"type": "sgd", "lr": 1e-12}}
    model = laminae.build(frozen, registry=registry)
    result = model.fit(x[32:], y[32:], validation_data=(x[:32], y[:32]), progress=False, run_dir=tmp_path)
    assert result.stopped_early and not result.interrupted
    assert len(result.history) == 3 and result.state.best_epoch == 1  # nothing better after epoch 1
    assert (tmp_path / "best.npz").exists() and (tmp_path / "model.npz").exists()
    _, state = laminae.load_training(tmp_path / "best.npz", registry=registry)
    assert state.epoch == 1
    _, state = laminae.load_training(tmp_path, registry=registry)
    assert state.finished  # a resume has nothing left to do


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('augment = [{ type = "rotate" }]', "train: augment 0 (rotate): unknown transform type 'rotate'"),
        ('augment = [{ type = "shift", pixels = 0 }]', "train: augment 0 (shift): 'pixels' must be at least 1, got 0"),
        ("patience = 3", "train: 'patience' watches the validation split: set 'validation' (samples held out) too"),
        ('monitor = "loss"', "train: 'monitor' must be one of 'val_accuracy', 'val_loss', got 'loss' (str)"),
    ],
)
def test_a_bad_train_table_is_one_line(capsys, tmp_path, edit, message):
    path = tmp_path / "m.toml"
    path.write_text(
        "[models.m]\ninput = [4]\nlayers = [{ type = \"affine\", units = 2 }]\nloss = \"softmax_cross_entropy\"\n"
        f"optimizer = \"sgd\"\ntrain = {{ {edit} }}\n"
    )
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"laminae check: error: {path}: model 'm', {message}")


def test_a_schedule_needs_an_optimizer_with_lr(capsys, tmp_path):
    @attrs.define(eq=False)
    class NoRate:
        def step(self, params, grads):
            pass

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    extra = plugin("norate", register_optimizers=lambda register: register("norate", NoRate))
    registry = laminae.make_registry(plugins=[extra], autoload=False)
    doc = {**spec(), "optimizer": {"type": "norate", "schedule": "cosine"}}
    with pytest.raises(laminae.SpecError, match=(
        r"^<dict>: model 'tiny_cnn', optimizer, schedule: optimizer 'norate' has no 'lr' key for a schedule to set$"
    )):
        laminae.build(doc, registry=registry)


BUILTIN_TRANSFORMS = cases("transforms", {
    "shift": [{"pixels": 1}, {"pixels": 3}],
    "crop": [{"pad": 2}],
    "flip": [{}],
    "cutout": [{"size": 4}, {"size": 3, "p": 0.5}],
})
BUILTIN_SCHEDULES = cases("schedules", {
    "step": [{}, {"every": 1, "gamma": 0.5}],
    "cosine": [{}, {"warmup_epochs": 1.5, "floor": 0.05}],
    "one_cycle": [{}],
    "inverse_time": [{"decay": 0.01}],
})


@pytest.mark.parametrize("case", BUILTIN_TRANSFORMS + BUILTIN_SCHEDULES)
def test_every_builtin_transform_and_schedule_passes_the_conformance_kit(case, registry):
    case.check(registry)


def test_the_kit_covers_every_builtin_transform_and_schedule(registry):
    assert uncovered(registry, "laminae.plugins.transforms", BUILTIN_TRANSFORMS) == []
    assert uncovered(registry, "laminae.plugins.schedules", BUILTIN_SCHEDULES) == []


@attrs.define(eq=False)
class Sloppy:
    """Writes into its input and draws from numpy's global generator."""

    def __call__(self, x, rng):
        x += np.random.random(x.shape).astype(x.dtype)
        return x


@attrs.define(eq=False)
class Leaky:
    """Remembers a step count between calls."""

    calls: int = 0

    def __call__(self, lr, step, steps_per_epoch, epochs):
        self.calls += 1
        return lr / self.calls


def test_the_kit_catches_a_broken_transform_and_schedule():
    with pytest.raises(ConformanceError, match="transform Sloppy: input unchanged: it wrote into the batch"):
        check_transform(Sloppy())
    with pytest.raises(ConformanceError, match="schedule Leaky: no state: asking for the same steps again"):
        check_schedule(Leaky())


@attrs.define(eq=False)
class Widen:
    """Returns a float64 batch whatever it is given."""

    def __call__(self, x, rng):
        return x.astype(np.float64)


@attrs.define(eq=False)
class Falling:
    """Falls below zero at step 3."""

    def __call__(self, lr, step, steps_per_epoch, epochs):
        return lr * (1 - step / 3) - 1e-9


def test_the_kit_holds_transforms_and_schedules_to_the_contracts_training_does():
    with pytest.raises(ConformanceError) as caught:
        check_transform(Widen())
    assert str(caught.value) == (
        "transform Widen: shape and dtype kept: returned a float64 batch of shape (16, 2, 10, 12)"
        " for a float32 batch of shape (16, 2, 10, 12): a transform keeps both"
    )
    with pytest.raises(ConformanceError) as caught:
        check_schedule(Falling())
    assert str(caught.value) == (
        "schedule Falling: finite rates: gave -1e-09 for step 3 of 35 (7 per epoch, lr 0.1):"
        " a rate must be a finite number, 0 or more"
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_fit_names_the_transform_that_broke_the_batch_before_any_step(threads):
    extra = plugin("widening", register_transforms=lambda register: register("widen", Widen))
    registry = laminae.make_registry(plugins=[extra], autoload=False)
    model = laminae.build(spec(threads=threads, augment=["flip", "widen"]), registry=registry)
    before = {name: array.copy() for name, array in model.network.params.items()}
    x, y = data()
    with pytest.raises(laminae.PluginError) as caught:
        model.fit(x, y, progress=False)
    assert str(caught.value) == (
        "transform 'widen' (train.augment 1, from plugin 'widening'): returned a float64 batch of shape (16, 1, 12, 12)"
        " for a float32 batch of shape (16, 1, 12, 12): a transform keeps both"
    )
    assert all(np.array_equal(before[name], array) for name, array in model.network.params.items())


@pytest.mark.parametrize("rate", [-0.1, float("nan"), float("inf"), "0.1"])
def test_fit_refuses_a_schedule_rate_that_is_not_a_finite_number_before_any_step(rate):
    @attrs.define(eq=False)
    class Fixed:
        def __call__(self, lr, step, steps_per_epoch, epochs):
            return lr if step < 7 else rate

    extra = plugin("fixed", register_schedules=lambda register: register("fixed", Fixed))
    registry = laminae.make_registry(plugins=[extra], autoload=False)
    model = laminae.build({**spec(), "optimizer": {"type": "sgd", "lr": 0.1, "schedule": "fixed"}}, registry=registry)
    before = {name: array.copy() for name, array in model.network.params.items()}
    x, y = data()
    with pytest.raises(laminae.PluginError) as caught:
        model.fit(x, y, progress=False)
    assert str(caught.value) == (
        f"schedule 'fixed' (optimizer.schedule, from plugin 'fixed'): gave {rate!r} for step 7 of 18"
        " (6 per epoch, lr 0.1): a rate must be a finite number, 0 or more"
    )
    assert all(np.array_equal(before[name], array) for name, array in model.network.params.items())
