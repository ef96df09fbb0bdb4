"""The kit's checks and its parametrisation helpers: each check can fail, and says how."""
from __future__ import annotations

import re
import types

import attrs
import numpy as np
import pytest

import laminae
import laminae_extras
from laminae.data import DatasetSplits, Split
from laminae.errors import DataError
from laminae.plugins.dropout import Dropout
from laminae.plugins.initializers import He
from laminae.plugins.sgd import SGD
from laminae.testing import (
    Case,
    ConformanceError,
    cases,
    check_dataset,
    check_initializer,
    check_layer,
    check_optimizer,
    dataset_cases,
    layer_cases,
    uncovered,
)
from tests.dataset_helpers import Squares, write_squares
from tests.training_helpers import Noise


@pytest.mark.parametrize("optimizer", [SGD(), SGD(lr=0.05, momentum=0.9), SGD(lr=0.05, momentum=0.5, nesterov=True)])
def test_sgd_passes(optimizer):
    check_optimizer(optimizer)


@attrs.define(eq=False)
class Stuck(SGD):
    def step(self, params, grads):
        pass


@attrs.define(eq=False)
class Forgetful(SGD):
    """Momentum that is not saved, so a resumed run takes different steps."""

    def state_dict(self):
        return {}


@attrs.define(eq=False)
class Replacing(SGD):
    def step(self, params, grads):
        for name in params:
            params[name] = params[name] - self.lr * grads[name]


@attrs.define(eq=False)
class Pickly(SGD):
    def state_dict(self):
        return {"history": np.array([[1.0], "x"], dtype=object)}


@attrs.define(eq=False)
class Counter(SGD):
    def state_dict(self):
        return {"step": 3}


def test_an_optimizer_that_does_not_descend_fails():
    with pytest.raises(
        ConformanceError,
        match=r"^optimizer stuck: descends on a quadratic: loss went from 8\.78036 to 8\.78036 in 200 steps"
        r" \(needs to fall by a factor of 10\)$",
    ):
        check_optimizer(Stuck(), name="stuck")


def test_a_state_that_does_not_round_trip_fails():
    with pytest.raises(
        ConformanceError,
        match=r"^optimizer Forgetful: state round-trip: step 1 after load_state_dict differs in '0\.W'"
        r" \(max abs difference [\d.e-]+\); state_dict\(\) must hold everything the next step depends on$",
    ):
        check_optimizer(Forgetful(lr=0.05, momentum=0.9))


def test_replacing_the_parameter_arrays_fails():
    with pytest.raises(ConformanceError, match=r"updates in place: parameter '0\.W' was replaced by a new array"):
        check_optimizer(Replacing(lr=0.05))


@pytest.mark.parametrize(
    "optimizer, detail",
    [(Pickly(), "key 'history' holds an object array"), (Counter(), "key 'step' holds a int, not a numeric array")],
)
def test_a_state_that_is_not_flat_arrays_fails(optimizer, detail):
    with pytest.raises(ConformanceError, match=f"state is a flat dict of arrays: {detail}"):
        check_optimizer(optimizer)


def test_builtin_initializers_pass(registry):
    for name in registry.names("initializers"):
        check_initializer(registry.create("initializers", name), name=name)


@attrs.define
class GlobalRandom:
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return np.random.standard_normal(shape).astype(dtype)


@attrs.define
class Flat:
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return rng.standard_normal(int(np.prod(shape))).astype(dtype)


@attrs.define
class Infinite(He):
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return super().__call__(shape, fan_in, fan_out, rng, dtype) / 0


@pytest.mark.parametrize(
    "initializer, message",
    [
        (GlobalRandom(), r"same seed, same values: two draws of \(6, 4\) from generators seeded 0 differ"),
        (Flat(), r"shape: asked for \(6, 4\), got \(24,\)"),
        (Infinite(), r"finite values: 24 of 24 values are not finite"),
    ],
)
def test_a_broken_initializer_fails(initializer, message):
    with pytest.raises(ConformanceError, match=f"^initializer {type(initializer).__name__}: {message}$"):
        with np.errstate(divide="ignore", invalid="ignore"):
            check_initializer(initializer)


TABLE = layer_cases({"affine": [({"units": 3}, (4,)), ({"units": 2, "bias": False}, (2, 3))], "relu": [({}, (5,))]})


@pytest.mark.parametrize("case", TABLE)
def test_layer_cases_check_through_the_registry(case, registry):
    case.check(registry)


def test_case_ids_read_like_the_table():
    assert [p.id for p in TABLE] == ["affine-units=3-4", "affine-units=2-bias=False-2x3", "relu-5"]
    assert [p.id for p in cases("optimizers", {"sgd": [{}, {"lr": 0.1}]})] == ["sgd", "sgd-lr=0.1"]


def test_a_case_with_bad_options_fails_like_a_toml_file(registry):
    with pytest.raises(Exception, match=r"unknown key 'unit'; did you mean 'units'\?"):
        Case("layers", "affine", {"unit": 3}, (4,)).check(registry)


@pytest.mark.parametrize("kind", ["layers", "datasets"])
def test_cases_refuses_layers_and_data_sets(kind):
    with pytest.raises(ValueError, match=r"use layer_cases\(\) or dataset_cases\(\)$"):
        cases(kind, {"relu": [{}]})


def test_uncovered_lists_what_a_plugin_registers_but_no_case_checks(registry):
    assert uncovered(registry, "laminae.plugins.activations", TABLE) == ["layers:sigmoid"]
    assert uncovered(registry, "laminae.plugins.mnist", TABLE) == [
        "datasets:fashion-mnist", "datasets:mnist", "datasets:mnist-sample",
    ]


def test_uncovered_refuses_a_plugin_the_registry_does_not_know(registry):
    """Before, a misspelt name found nothing to cover, and the coverage test passed."""
    with pytest.raises(ValueError) as caught:
        uncovered(registry, "laminae.plugins.activation", TABLE)
    assert str(caught.value) == (
        "uncovered: no plugin 'laminae.plugins.activation' in this registry;"
        " did you mean 'laminae.plugins.activations'? (plugins: " + ", ".join(p.name for p in registry.plugins) + ")"
    )
    with pytest.raises(ValueError, match=r"^uncovered: no plugin 'wrong-name' in this registry \(plugins: laminae"):
        uncovered(registry, "wrong-name", TABLE)


def test_uncovered_refuses_a_plugin_that_did_not_load():
    registry = laminae.make_registry(plugins=[types.ModuleType("empty")], autoload=False)
    with pytest.raises(ValueError) as caught:
        uncovered(registry, "empty", [])
    assert str(caught.value) == (
        "uncovered: plugin 'empty' was not loaded (failed: registers nothing"
        " (no laminae hook in it registered a class)), so none of it can be checked"
    )


EXTRAS = ["initializers:uniform", "layers:leaky_relu", "layers:spatial_dropout", "layers:squeeze_excite", "layers:tanh", "optimizers:lion",
          "schedules:cosine_restarts", "transforms:gaussian_noise"]


@pytest.mark.parametrize("loaded", ["by hand", "from its entry point"])
@pytest.mark.parametrize("plugin", ["extras", "laminae_extras"])
def test_uncovered_takes_the_name_laminae_plugins_shows_or_the_module(loaded, plugin):
    """`laminae plugins` shows the entry point's name (extras); a registry made with
    plugins=[laminae_extras] knows the plugin by its module's name.  Either finds it."""
    if loaded == "by hand":
        registry = laminae.make_registry(plugins=[laminae_extras], autoload=False)
    else:
        registry = laminae.make_registry()
        assert any(p.name == "extras" and p.source == "entry point" for p in registry.plugins)
    assert uncovered(registry, plugin, []) == EXTRAS


class ForgetfulNoise(Noise):
    def load_state_dict(self, state):
        pass


def test_a_layer_state_that_restores_passes():
    check_layer(Noise(), (4,))


def test_a_layer_state_that_does_not_restore_fails():
    with pytest.raises(
        ConformanceError,
        match=r"^layer ForgetfulNoise: state round-trip: forward\(x, training=True\) after load_state_dict differs"
        r" \(max abs difference [\d.e+-]+\)$",
    ):
        check_layer(ForgetfulNoise(), (4,))


# --- check_layer's blind spots, closed ------------------------------------------

NUMBERS = r"analytic [-\d.e+]+ vs numerical [-\d.e+]+ \(max abs error [\d.e+-]+, tolerance 1e-07 \+ 0\.0001\*\|numerical\|\)"


@attrs.define(eq=False)
class Centre:
    """``x`` less the batch's mean in training, less a running mean in inference
    (a batch norm cut down to what the kit's checks need)."""

    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)
    _mean: np.ndarray | None = attrs.field(init=False, default=None)
    _training: bool = attrs.field(init=False, default=False)

    def build(self, input_shape, ctx):
        self._mean = np.zeros(input_shape, ctx.dtype)
        return tuple(input_shape)

    def forward(self, x, training):
        self._training = training
        if not training:
            return x - self._mean
        mean = x.mean(axis=0)
        self._mean[...] = (self._mean + mean) / 2
        return x - mean

    def backward(self, dout):
        return dout - dout.mean(axis=0) if self._training else dout

    def state_dict(self):
        return {"mean": self._mean}

    def load_state_dict(self, state):
        self._mean[...] = state["mean"]


class InferenceBackwardBug(Centre):
    def backward(self, dout):
        return dout - dout.mean(axis=0)


class ForgetfulCentre(Centre):
    def load_state_dict(self, state):
        pass


def test_a_layer_with_running_statistics_passes():
    check_layer(Centre(), (2, 3))


def test_a_wrong_inference_backward_fails():
    """Before, gradients were checked in training mode only."""
    with pytest.raises(ConformanceError, match=rf"^layer InferenceBackwardBug: input gradient \(float64, inference\): {NUMBERS}$"):
        check_layer(InferenceBackwardBug(), (2, 3))


def test_a_load_state_dict_that_does_nothing_fails():
    """Before, the round trip compared a training step, which a batch's own statistics decide."""
    with pytest.raises(
        ConformanceError,
        match=r"^layer ForgetfulCentre: state round-trip: forward\(x, training=False\) after load_state_dict differs"
        r" \(max abs difference [\d.e+-]+\)$",
    ):
        check_layer(ForgetfulCentre(), (2, 3))


@attrs.define(eq=False)
class Bias:
    """``x + b``."""

    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        self.params = {"b": ctx.rng.standard_normal(input_shape).astype(ctx.dtype)}
        self.grads = {"b": np.zeros_like(self.params["b"])}
        return tuple(input_shape)

    def forward(self, x, training):
        return x + self.params["b"]

    def backward(self, dout):
        self.grads["b"][...] = dout.sum(axis=0)
        return dout


class RebindingBias(Bias):
    def backward(self, dout):
        self.grads["b"] = dout.sum(axis=0)
        return dout


class SilentBias(Bias):
    def backward(self, dout):
        return dout


class HalfBias(Bias):
    def backward(self, dout):
        self.grads["b"][:1] = dout.sum(axis=0)[:1]
        return dout


def test_a_bias_passes():
    check_layer(Bias(), (4,))


@pytest.mark.parametrize(
    ("layer", "problem"),
    [
        (
            RebindingBias(),
            "backward replaced grads['b'] with a new array instead of writing into it (grads['b'][...] = ...):"
            " the optimizer would never see it",
        ),
        (SilentBias(), "backward never wrote grads['b'] (write every element, in place)"),
        (HalfBias(), "backward left grads['b'] partly unwritten or not finite"),
    ],
    ids=["rebound", "never written", "partly written"],
)
def test_gradients_not_written_in_place_fail(layer, problem):
    """Before, a rebound gradient passed: the kit read the new array."""
    with pytest.raises(ConformanceError) as caught:
        check_layer(layer, (4,))
    assert str(caught.value) == f"layer {type(layer).__name__}: gradients written in place (training): {problem}"


class GradlessBias(Bias):
    def build(self, input_shape, ctx):
        shape = super().build(input_shape, ctx)
        self.grads = {}
        return shape


def test_params_without_grads_fail_as_building_them_in_a_network_does(registry):
    problem = "params has 'b' but grads has no 'b': build must put a gradient array under every parameter's name"
    with pytest.raises(ConformanceError) as caught:
        check_layer(GradlessBias(), (4,))
    assert str(caught.value) == f"layer GradlessBias: parameter names: {problem}"
    with pytest.raises(laminae.PluginError) as caught:
        laminae.Network([GradlessBias()], (4,), registry=registry)
    assert str(caught.value) == f"layer 0 (gradlessbias): {problem}"


class MasklessDropout(Dropout):
    def backward(self, dout):
        return dout


def test_dropout_is_checked_in_training_mode_too():
    """Its state (the generator) is reloaded before every forward, so the masks repeat."""
    check_layer(Dropout(rate=0.5), (4, 6))
    with pytest.raises(ConformanceError, match=rf"^layer MasklessDropout: input gradient \(float64, training\): {NUMBERS}$"):
        check_layer(MasklessDropout(rate=0.5), (4, 6))


class NoisyInference(Noise):
    def forward(self, x, training):
        return super().forward(x, True)


@attrs.define(eq=False)
class UnseededNoise:
    """Adds noise while training, from a generator it cannot save."""

    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return tuple(input_shape)

    def forward(self, x, training):
        return x + np.random.default_rng().standard_normal(x.shape) if training else x

    def backward(self, dout):
        return dout


def test_a_random_training_mode_without_state_is_checked_in_inference_only():
    check_layer(UnseededNoise(), (4,))


def test_a_random_inference_fails():
    with pytest.raises(ConformanceError) as caught:
        check_layer(NoisyInference(), (4,))
    assert str(caught.value) == (
        "layer NoisyInference: inference repeats: two forward(x, training=False) calls gave different outputs;"
        " inference must depend on the input, the parameters and the state alone"
    )


# --- check_dataset ---------------------------------------------------------------


@pytest.fixture
def squares_root(tmp_path):
    write_squares(tmp_path / "data")
    return tmp_path / "data"


def test_a_data_set_read_from_its_folder_passes(squares_root):
    check_dataset(Squares(), [squares_root])


@attrs.define
class Bright(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return attrs.evolve(found, train=Split(found.train.x * 255, found.train.y))


@attrs.define
class Mislabelled(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return attrs.evolve(found, test=Split(found.test.x, found.test.y + 3))


@attrs.define
class Cropped(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return attrs.evolve(found, test=Split(found.test.x[:, :, :3, :3].copy(), found.test.y))


@attrs.define
class Float64(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return attrs.evolve(found, train=types.SimpleNamespace(x=found.train.x.astype(np.float64), y=found.train.y))


@attrs.define
class Int32Labels(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return attrs.evolve(found, train=types.SimpleNamespace(x=found.train.x, y=found.train.y.astype(np.int32)))


@attrs.define
class Tupled(Squares):
    def read_folder(self, folder):
        found = super().read_folder(folder)
        return found.train, found.test


@attrs.define
class StopsAtTheFirstRoot(Squares):
    def read_folder(self, folder):
        if not (folder / "squares.npz").is_file():
            raise DataError(f"{folder}: no squares.npz")
        return super().read_folder(folder)


@attrs.define
class EmptyWhenMissing(Squares):
    def not_found(self, folders, reason):
        empty = Split(np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
        return DatasetSplits(empty, empty, 3, "nothing")


@attrs.define
class RawMissing(Squares):
    def not_found(self, folders, reason):
        return self.read_folder(folders[0])


@attrs.define
class Vague(Squares):
    def not_found(self, folders, reason):
        raise DataError("squares: not found")


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (Bright(), "splits: train pixel values lie in [0, 255], not in [0, 1]"),
        (Mislabelled(), "splits: test labels lie in 3..5, outside 0..2"),
        (Cropped(), "splits: test images are (1, 3, 3), train images (1, 4, 4)"),
        (Float64(), "splits: train images are float64 (12, 1, 4, 4), not float32 N x C x H x W"),
        (Int32Labels(), "splits: train labels are int32 (12,), not int64 (12,)"),
        (Tupled(), "splits: load() returned tuple, not a laminae.data.DatasetSplits"),
        (EmptyWhenMissing(), "missing files (loaded anyway): the train split is empty"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_a_broken_data_set_fails(squares_root, dataset, message):
    with pytest.raises(ConformanceError) as caught:
        check_dataset(dataset, [squares_root])
    assert str(caught.value) == f"data set {type(dataset).__name__}: {message}"


def test_a_data_set_that_stops_at_a_root_without_its_files_fails(squares_root):
    with pytest.raises(ConformanceError) as caught:
        check_dataset(StopsAtTheFirstRoot(), [squares_root])
    empty = re.search(r"(/\S+laminae-empty-root-\w+)/squares", str(caught.value)).group(1)
    assert str(caught.value) == (
        f"data set StopsAtTheFirstRoot: an empty root is passed over: load() raised DataError: {empty}/squares:"
        " no squares.npz; raise FileNotFoundError where the files are not, so that the next root is tried"
    )


def test_missing_files_that_are_not_a_data_error_fail(squares_root):
    with pytest.raises(ConformanceError) as caught:
        check_dataset(RawMissing(), [squares_root])
    assert re.fullmatch(
        r"data set RawMissing: missing files: load\(\) from an empty root raised FileNotFoundError: \[Errno 2\]"
        r" No such file or directory: '\S+/squares/squares\.npz'; raise laminae\.DataError, one line naming where it looked",
        str(caught.value),
    ), caught.value


def test_a_missing_files_error_that_does_not_say_where_fails(squares_root):
    with pytest.raises(ConformanceError) as caught:
        check_dataset(Vague(), [squares_root])
    assert re.fullmatch(
        r"data set Vague: missing files: the DataError does not say where it looked \(\S+\): squares: not found",
        str(caught.value),
    ), caught.value


DATASET_TABLE = dataset_cases({"squares": [({}, ["ROOT"])]})


def test_dataset_cases_check_through_the_registry(squares_root):
    plugin = types.ModuleType("squares_plugin")
    plugin.register_datasets = laminae.hookimpl(lambda register: register("squares", Squares))
    registry = laminae.make_registry(plugins=[plugin], autoload=False)
    assert DATASET_TABLE[0].id == "squares"
    attrs.evolve(DATASET_TABLE[0].values[0], roots=[squares_root]).check(registry)
    assert uncovered(registry, "squares_plugin", DATASET_TABLE) == []
