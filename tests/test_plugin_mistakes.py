"""A plugin author's ordinary mistakes, each caught where it is made, in one line
that names the file, the model, the layer and the plugin, with exit status 2."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

import laminae
from laminae.cli import main

HEADER = """\
from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

import laminae
"""

REPEAT = HEADER + '''
@attrs.define(eq=False)
class Repeat:
    """Repeats each feature ``times`` times (no validator: the annotation is the contract)."""

    times: int = 2
    mode: Literal["tile", "interleave"] = "tile"
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)
    shape: tuple = attrs.field(init=False, default=())

    def build(self, input_shape, ctx):
        self.shape = tuple(input_shape)
        return (int(np.prod(input_shape)) * self.times,)

    def forward(self, x, training):
        return np.tile(x.reshape(len(x), -1), self.times)

    def backward(self, dout):
        return dout.reshape(len(dout), self.times, -1).sum(axis=1).reshape(len(dout), *self.shape)


@attrs.define(eq=False)
class RMSprop:
    """An optimizer, to be asked about as if it were a layer."""

    lr: float = 0.01

    def step(self, params, grads):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@attrs.define(eq=False)
class Buggy:
    """Raises where told to."""

    fails_in: Literal["nowhere", "training", "inference", "backward"] = "nowhere"
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return input_shape

    def forward(self, x, training):
        if self.fails_in == ("training" if training else "inference"):
            raise ValueError(f"{self.fails_in} forward is broken")
        return x

    def backward(self, dout):
        if self.fails_in == "backward":
            raise ZeroDivisionError("division by zero")
        return dout


@attrs.define(eq=False)
class Flaky:
    """A loss whose backward raises."""

    def forward(self, output, target):
        return 1.0

    def backward(self):
        raise KeyError("n")


@attrs.define(eq=False)
class Scale:
    """Scales each feature by a learned weight, with the mistake it is told to make."""

    mistake: Literal["none", "unfilled", "rebound", "wrong_shape", "no_shape", "no_grads"] = "none"
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)
    x: object = attrs.field(init=False, default=None)

    def build(self, input_shape, ctx):
        self.params = {"w": np.ones(input_shape, ctx.dtype)}
        self.grads = {} if self.mistake == "no_grads" else {"w": np.zeros(input_shape, ctx.dtype)}
        if self.mistake == "no_shape":
            return None
        return (5,) if self.mistake == "wrong_shape" else input_shape

    def forward(self, x, training):
        self.x = x
        return x * self.params["w"]

    def backward(self, dout):
        if self.mistake == "rebound":
            self.grads["w"] = (dout * self.x).sum(axis=0)
        elif self.mistake != "unfilled":
            self.grads["w"][...] = (dout * self.x).sum(axis=0)
        return dout * self.params["w"]


@attrs.define(eq=False)
class Bend:
    """A transform with the mistake it is told to make."""

    mistake: Literal["none", "widen", "drop_row"] = "none"

    def __call__(self, x, rng):
        if self.mistake == "widen":
            return x.astype(np.float64)
        return x[:, :, 1:] if self.mistake == "drop_row" else x[..., ::-1]


@attrs.define(eq=False)
class Sink:
    """A schedule whose rate turns negative at step ``after``."""

    after: int = 3

    def __call__(self, lr, step, steps_per_epoch, epochs):
        return lr if step < self.after else -lr


@laminae.hookimpl
def register_layers(register):
    register("tile", Repeat)
    register("buggy", Buggy)
    register("scale", Scale)


@laminae.hookimpl
def register_transforms(register):
    register("bend", Bend)


@laminae.hookimpl
def register_schedules(register):
    register("sink", Sink)


@laminae.hookimpl
def register_losses(register):
    register("flaky", Flaky)


@laminae.hookimpl
def register_optimizers(register):
    register("rmsprop", RMSprop)
'''

BROKEN = "import laminae\n\nraise ImportError('needs the missing package frobnicate')\n"
TAKES_RELU = HEADER + '''
@attrs.define(eq=False)
class MyRelu:
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return input_shape

    def forward(self, x, training):
        return x

    def backward(self, dout):
        return dout


@laminae.hookimpl
def register_layers(register):
    register("relu", MyRelu)
'''

UNCALLABLE = HEADER + '''
@attrs.define(eq=False)
class Still:
    """Meant as a transform, but it has no __call__: its instances cannot be called."""

    def apply(self, x, rng):
        return x


@laminae.hookimpl
def register_transforms(register):
    register("still", Still)
'''


def model_file(
    tmp_path, layer: str, extra: str = "", loss: str = "softmax_cross_entropy", optimizer: str = '"sgd"', train: str = ""
) -> str:
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(f"""\
        [models.m]
        input = [1, 28, 28]
        layers = [{layer}, {{ type = "affine", units = 10 }}]
        loss = "{loss}"
        optimizer = {optimizer}
        train = {{ dataset = "mnist-sample", epochs = 1, batch_size = 500{train} }}
        {extra}
    """))
    return str(path)


@pytest.fixture
def plugins_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "mistakes.py").write_text(REPEAT)
    return str(folder)


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"3"', "'times' must be an integer, got '3' (str)"),
        ("2.5", "'times' must be an integer, got 2.5 (float)"),
        ("true", "'times' must be an integer, got True (bool)"),
    ],
)
def test_an_annotated_field_without_a_validator_takes_only_its_type(capsys, tmp_path, plugins_dir, value, reason):
    path = model_file(tmp_path, f'{{ type = "tile", times = {value} }}')
    err = one_line_error(capsys, "check", path, "--plugins-dir", plugins_dir)
    assert err == f"laminae check: error: {path}: model 'm', layer 0 (tile): {reason}"


def test_a_literal_annotation_is_a_list_of_choices(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "tile", mode = "zip" }')
    err = one_line_error(capsys, "check", path, "--plugins-dir", plugins_dir)
    assert err.endswith("layer 0 (tile): 'mode' must be one of 'tile', 'interleave', got 'zip' (str)")


def test_a_well_typed_annotated_field_builds(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "tile", times = 3, mode = "interleave" }')
    assert main(["check", path, "--plugins-dir", plugins_dir]) == 0
    assert "(1, 28, 28) -> (10,)" in capsys.readouterr().out  # tried on two samples, both modes


def test_asking_for_an_optimizer_as_a_layer_points_to_its_kind(capsys, plugins_dir):
    err = one_line_error(capsys, "layers", "rmsprop", "--plugins-dir", plugins_dir)
    assert err == (
        "laminae layers: error: 'rmsprop' is not a layer but a registered optimizer:"
        " laminae layers --kind optimizers rmsprop"
    )
    assert main(["layers", "--kind", "optimizers", "rmsprop", "--plugins-dir", plugins_dir]) == 0


def test_a_model_file_naming_an_optimizer_as_a_layer_says_what_it_is(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "rmsprop" }')
    err = one_line_error(capsys, "check", path, "--plugins-dir", plugins_dir)
    assert err.endswith("'rmsprop' is a registered optimizer, not a layer")


def test_a_model_declares_float64_in_toml(capsys, tmp_path):
    path = model_file(tmp_path, '{ type = "relu" }', 'dtype = "float64"')
    model = laminae.from_toml(path, "m")
    assert model.network.dtype == np.float64 and model.spec["dtype"] == "float64"
    assert all(p.dtype == np.float64 for p in model.network.params.values())
    x = np.random.default_rng(0).random((8, 1, 28, 28))
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, progress=False)
    assert laminae.build(model.spec).network.dtype == np.float64  # the resolved spec keeps it


def test_build_and_from_toml_take_a_dtype(tmp_path):
    path = model_file(tmp_path, '{ type = "relu" }')
    assert laminae.from_toml(path, "m").network.dtype == np.float32
    model = laminae.from_toml(path, "m", dtype="float64")
    assert model.network.dtype == np.float64
    saved = laminae.load(model.save(tmp_path / "m.npz"))
    assert saved.network.dtype == np.float64
    assert laminae.build(model.spec, dtype="float32").network.dtype == np.float32


def test_an_unsupported_dtype_is_one_line(capsys, tmp_path):
    path = model_file(tmp_path, '{ type = "relu" }', 'dtype = "float16"')
    err = one_line_error(capsys, "check", path)
    assert err == f"laminae check: error: {path}: model 'm': 'dtype' must be one of 'float32', 'float64', got 'float16' (str)"


@pytest.mark.parametrize(
    ("fails_in", "message"),
    [
        ("training", "forward raised ValueError: training forward is broken"),
        ("backward", "backward raised ZeroDivisionError: division by zero"),
        ("inference", "forward raised ValueError: inference forward is broken"),  # in the end-of-epoch evaluation
    ],
)
def test_an_exception_in_a_layer_names_the_model_the_layer_and_the_plugin(capsys, tmp_path, plugins_dir, fails_in, message):
    path = model_file(tmp_path, f'{{ type = "buggy", fails_in = "{fails_in}" }}')
    err = one_line_error(capsys, "train", path, "m", "--plugins-dir", plugins_dir, "--quiet", "--out", tmp_path / "run")
    assert err == f"laminae train: error: {path}: model 'm': layer 0 (buggy, from plugin 'mistakes'): {message}"


def test_an_exception_in_a_loss_or_an_optimizer_is_located_too(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "relu" }', loss="flaky")
    err = one_line_error(capsys, "train", path, "m", "--plugins-dir", plugins_dir, "--quiet", "--out", tmp_path / "run")
    assert err == (
        f"laminae train: error: {path}: model 'm': loss 'flaky' (from plugin 'mistakes'):"
        " forward or backward raised KeyError: 'n'"
    )


def test_fit_raises_laminae_own_error_with_the_original_as_its_cause(tmp_path, plugins_dir):
    registry = laminae.make_registry(plugins_dir=plugins_dir)
    model = laminae.from_toml(model_file(tmp_path, '{ type = "buggy", fails_in = "backward" }'), "m", registry=registry)
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(laminae.PluginError, match=r"^layer 0 \(buggy, from plugin 'mistakes'\): backward raised") as caught:
        model.fit(x, np.arange(4), progress=False)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def saved_buggy_model(tmp_path, plugins_dir) -> str:
    registry = laminae.make_registry(plugins_dir=plugins_dir)
    model = laminae.from_toml(model_file(tmp_path, '{ type = "buggy", fails_in = "inference" }'), "m", registry=registry)
    return str(model.save(tmp_path / "buggy.npz"))


def test_eval_and_predict_locate_a_plugin_exception(capsys, tmp_path, plugins_dir):
    saved = saved_buggy_model(tmp_path, plugins_dir)
    where = f"{saved}: model 'm': layer 0 (buggy, from plugin 'mistakes'): forward raised ValueError: inference forward is broken"
    assert one_line_error(capsys, "eval", saved, "--plugins-dir", plugins_dir) == f"laminae eval: error: {where}"
    image = tmp_path / "digit.npy"
    np.save(image, np.zeros((28, 28), np.float32))
    assert one_line_error(capsys, "predict", saved, image, "--plugins-dir", plugins_dir) == f"laminae predict: error: {where}"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_full_traceback_is_one_flag_away(capsys, tmp_path, plugins_dir, monkeypatch, how):
    saved = saved_buggy_model(tmp_path, plugins_dir)
    flags = ["--traceback"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv("LAMINAE_TRACEBACK", "1")
    assert main([*flags, "eval", saved, "--plugins-dir", plugins_dir]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "mistakes.py" in err
    assert 'raise ValueError(f"{self.fails_in} forward is broken")' in err  # the plugin's own line
    assert err.splitlines()[-1].startswith("laminae eval: error: ")


def test_every_failed_plugin_is_a_warning_where_models_are_built(capsys, tmp_path, plugins_dir):
    folder = tmp_path / "plugins"
    (folder / "broken.py").write_text(BROKEN)
    path = model_file(tmp_path, '{ type = "relu" }')
    assert main(["check", path, "--plugins-dir", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok  m")
    assert err == (
        "laminae check: warning: plugin 'broken' failed to load: import failed:"
        " ImportError: needs the missing package frobnicate (see laminae plugins)\n"
    )
    assert main(["layers", "--plugins-dir", str(folder)]) == 0  # listing plugins' types builds nothing: no warning
    assert capsys.readouterr().err == ""


def test_a_refused_duplicate_is_reported_where_its_name_is_used(capsys, tmp_path, plugins_dir):
    folder = tmp_path / "plugins"
    (folder / "takes_relu.py").write_text(TAKES_RELU)
    refused = (
        "laminae check: warning: layer 'relu' comes from plugin 'laminae.plugins.activations':"
        " plugin 'takes_relu', which also registers it, was not loaded (see laminae plugins)"
    )
    assert main(["check", model_file(tmp_path, '{ type = "relu" }'), "--plugins-dir", str(folder)]) == 0
    assert refused in capsys.readouterr().err.splitlines()
    assert main(["check", model_file(tmp_path, '{ type = "sigmoid" }'), "--plugins-dir", str(folder)]) == 0
    assert refused not in capsys.readouterr().err.splitlines()


MISTAKES = {
    "unfilled": "backward never wrote grads['w'] (write every element, in place)",
    "rebound": (
        "backward replaced grads['w'] with a new array instead of writing into it (grads['w'][...] = ...):"
        " the optimizer would never see it"
    ),
    "wrong_shape": "forward returned shape (2, 1, 28, 28) for 2 samples of shape (5,)",
}


@pytest.mark.parametrize("mistake", MISTAKES)
@pytest.mark.parametrize("command", ["check", "train"])
def test_check_and_train_catch_a_broken_layer_contract(capsys, tmp_path, plugins_dir, mistake, command):
    path = model_file(tmp_path, f'{{ type = "scale", mistake = "{mistake}" }}')
    argv = ["check", path] if command == "check" else ["train", path, "m", "--quiet", "--out", tmp_path / "run"]
    err = one_line_error(capsys, *argv, "--plugins-dir", plugins_dir)
    assert err == f"laminae {command}: error: {path}: model 'm': layer 0 (scale, from plugin 'mistakes'): {MISTAKES[mistake]}"
    assert not (tmp_path / "run" / "model.npz").exists()  # caught before the first batch


def test_fit_catches_a_broken_layer_contract_before_the_first_batch(tmp_path, plugins_dir):
    registry = laminae.make_registry(plugins_dir=plugins_dir)
    model = laminae.from_toml(model_file(tmp_path, '{ type = "scale", mistake = "rebound" }'), "m", registry=registry)
    before = {k: v.copy() for k, v in model.network.params.items()}
    with pytest.raises(laminae.PluginError, match=r"^layer 0 \(scale, from plugin 'mistakes'\): backward replaced"):
        model.fit(np.zeros((4, 1, 28, 28), np.float32), np.arange(4), progress=False)
    assert all(np.array_equal(before[k], v) for k, v in model.network.params.items())


def test_a_correct_layer_passes_the_probe(capsys, tmp_path, plugins_dir):
    assert main(["check", model_file(tmp_path, '{ type = "scale" }'), "--plugins-dir", plugins_dir]) == 0


def test_build_must_return_a_shape(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "scale", mistake = "no_shape" }')
    err = one_line_error(capsys, "summary", path, "m", "--plugins-dir", plugins_dir)
    assert err == (
        f"laminae summary: error: {path}: model 'm', layer 0 (scale, from plugin 'mistakes'):"
        " build must return one sample's output shape, a tuple of positive integers, but returned None"
    )


BATCH_MISTAKES = {
    "widen": "returned a float64 batch of shape ({n}, 1, 28, 28) for a float32 batch of shape ({n}, 1, 28, 28)",
    "drop_row": "returned a float32 batch of shape ({n}, 1, 27, 28) for a float32 batch of shape ({n}, 1, 28, 28)",
}


@pytest.mark.parametrize("mistake", BATCH_MISTAKES)
@pytest.mark.parametrize("command", ["check", "train"])
def test_check_and_train_name_the_transform_that_broke_the_batch(capsys, tmp_path, plugins_dir, mistake, command):
    augment = f', augment = [{{ type = "flip" }}, {{ type = "bend", mistake = "{mistake}" }}]'
    path = model_file(tmp_path, '{ type = "relu" }', train=augment)
    argv = ["check", path] if command == "check" else ["train", path, "m", "--quiet", "--out", tmp_path / "run"]
    err = one_line_error(capsys, *argv, "--plugins-dir", plugins_dir)
    problem = BATCH_MISTAKES[mistake].format(n=2 if command == "check" else 500)  # check's two samples, a batch
    assert err == (
        f"laminae {command}: error: {path}: model 'm': transform 'bend' (train.augment 1, from plugin 'mistakes'):"
        f" {problem}: a transform keeps both"
    )
    assert not (tmp_path / "run" / "model.npz").exists()


@pytest.mark.parametrize("command", ["check", "train"])
def test_check_and_train_hold_a_schedule_to_finite_non_negative_rates(capsys, tmp_path, plugins_dir, command):
    path = model_file(tmp_path, '{ type = "relu" }', optimizer='{ type = "sgd", lr = 0.1, schedule = "sink" }')
    argv = ["check", path] if command == "check" else ["train", path, "m", "--quiet", "--out", tmp_path / "run"]
    err = one_line_error(capsys, *argv, "--plugins-dir", plugins_dir)
    steps = 120 if command == "check" else 10  # check supposes 60,000 samples; mnist-sample has 5,000
    assert err == (
        f"laminae {command}: error: {path}: model 'm': schedule 'sink' (optimizer.schedule, from plugin 'mistakes'):"
        f" gave -0.1 for step 3 of {steps} ({steps} per epoch, lr 0.1): a rate must be a finite number, 0 or more"
    )
    assert not (tmp_path / "run" / "model.npz").exists()  # caught before the first batch


@pytest.mark.parametrize("command", ["check", "summary", "train"])
def test_a_layer_with_params_but_no_grads_is_one_line(capsys, tmp_path, plugins_dir, command):
    path = model_file(tmp_path, '{ type = "scale", mistake = "no_grads" }')
    argv = [command, path] + (["m", "--quiet", "--out", tmp_path / "run"] if command == "train" else [])
    err = one_line_error(capsys, *argv, "--plugins-dir", plugins_dir)
    assert err == (
        f"laminae {command}: error: {path}: model 'm', layer 0 (scale, from plugin 'mistakes'):"
        " params has 'w' but grads has no 'w': build must put a gradient array under every parameter's name"
    )


def test_a_layer_with_params_but_no_grads_inside_a_block_is_named(tmp_path, plugins_dir):
    registry = laminae.make_registry(plugins_dir=plugins_dir)
    spec = {
        "input": [4],
        "layers": [{"type": "residual", "layers": [{"type": "scale", "mistake": "no_grads"}]}],
        "loss": "softmax_cross_entropy",
        "optimizer": "sgd",
    }
    with pytest.raises(laminae.PluginError, match=(
        r"^<dict>: model 'model', layer 0\.0 \(scale, from plugin 'mistakes'\): params has 'w' but grads has no 'w'"
    )):
        laminae.build(spec, registry=registry)


def test_a_transform_class_without_call_is_refused_when_its_plugin_loads(capsys, tmp_path, plugins_dir):
    (tmp_path / "plugins" / "uncallable.py").write_text(UNCALLABLE)
    path = model_file(tmp_path, '{ type = "relu" }', train=', augment = ["still"]')
    assert main(["check", path, "--plugins-dir", plugins_dir]) == 2
    refused = "registered transform 'still' as Still, which has no __call__ method"
    assert capsys.readouterr().err.splitlines() == [
        f"laminae check: warning: plugin 'uncallable' failed to load: {refused} (see laminae plugins)",
        f"laminae check: error: {path}: model 'm', train: augment 0 (still): unknown transform type 'still'"
        f" (installed: bend, crop, cutout, flip, shift); plugins that failed to load: uncallable ({refused})",
    ]
