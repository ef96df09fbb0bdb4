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

    def build(self, input_shape, ctx):
        return (input_shape[0] * self.times,)

    def forward(self, x, training):
        return np.tile(x, self.times)

    def backward(self, dout):
        return dout.reshape(len(dout), self.times, -1).sum(axis=1)


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


@laminae.hookimpl
def register_layers(register):
    register("repeat", Repeat)


@laminae.hookimpl
def register_optimizers(register):
    register("rmsprop", RMSprop)
'''


def model_file(tmp_path, layer: str, extra: str = "") -> str:
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(f"""\
        [models.m]
        input = [4]
        layers = [{layer}, {{ type = "affine", units = 3 }}]
        loss = "softmax_cross_entropy"
        optimizer = "sgd"
        {extra}
    """))
    return str(path)


@pytest.fixture
def plugins_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "repeat_plugin.py").write_text(REPEAT)
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
    path = model_file(tmp_path, f'{{ type = "repeat", times = {value} }}')
    err = one_line_error(capsys, "check", path, "--plugins-dir", plugins_dir)
    assert err == f"laminae check: error: {path}: model 'm', layer 0 (repeat): {reason}"


def test_a_literal_annotation_is_a_list_of_choices(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "repeat", mode = "zip" }')
    err = one_line_error(capsys, "check", path, "--plugins-dir", plugins_dir)
    assert err.endswith("layer 0 (repeat): 'mode' must be one of 'tile', 'interleave', got 'zip' (str)")


def test_a_well_typed_annotated_field_builds(capsys, tmp_path, plugins_dir):
    path = model_file(tmp_path, '{ type = "repeat", times = 3, mode = "interleave" }')
    assert main(["check", path, "--plugins-dir", plugins_dir]) == 0
    assert "(4,) -> (3,)" in capsys.readouterr().out


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
    x = np.random.default_rng(0).random((8, 4))
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
