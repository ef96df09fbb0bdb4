"""laminae export: every model of models.toml and of laminae-extras, trained for
one epoch on mnist-sample, answers the same under onnxruntime as in Laminae.

The models are read from the files, so a model added to either is covered
without touching this test.
"""
from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import laminae
import laminae_extras
from laminae.cli import main
from laminae.network.spec import layer_tables
from laminae.onnx_graph import OPSET

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "models.toml"
EXTRAS = ROOT / "docs" / "examples" / "laminae-extras" / "models.toml"
TOLERANCE = 1e-5
"""Largest difference allowed between a probability from onnxruntime and from ``Model.predict_proba``."""
STANDARD_OPS = {
    "Gemm", "MatMul", "Add", "Sum", "Concat", "Relu", "Sigmoid", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "Flatten", "Softmax", "Identity", "Slice", "Mul", "Pad", "Reshape", "ReduceMean",
}


def names(path: Path) -> list[str]:
    return list(tomllib.loads(path.read_text())["models"])


@pytest.fixture(scope="module")
def sample():
    return laminae.make_registry(autoload=False).create("datasets", "mnist-sample").load([])


@pytest.fixture(autouse=True)
def installed_plugins(monkeypatch):
    """The command sees laminae-extras as users do: through its entry point."""
    monkeypatch.delenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def trained(path: Path, name: str, registry, sample) -> laminae.Model:
    model = laminae.from_toml(path, name, registry=registry, train_overrides={"dataset": "mnist-sample", "epochs": 1})
    model.fit(sample.train.x, sample.train.y, progress=False)
    return model


def export(capsys, checkpoint: Path, out: Path, *flags: str) -> onnxruntime.InferenceSession:
    code = main(["export", str(checkpoint), str(out), *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith(f"wrote {out}: images (N, 1, 28, 28) -> ")
    return onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def assert_same_answers(model: laminae.Model, checkpoint: Path, tmp_path: Path, capsys, x: np.ndarray) -> float:
    """Probabilities and logits from onnxruntime against Laminae's, on every image
    of ``x``; the largest probability difference, for the record."""
    session = export(capsys, checkpoint, tmp_path / "model.onnx")
    probabilities = session.run(["probabilities"], {"images": x})[0]
    expected = model.predict_proba(x)
    assert probabilities.shape == expected.shape == (len(x), 10)
    some = x[:200]  # predicting takes ten passes of a ten-view model: the classes and logits on a fifth
    assert np.array_equal(probabilities[:200].argmax(axis=1), model.predict(some))
    difference = float(np.abs(probabilities - expected).max())
    assert difference <= TOLERANCE
    few = session.run(["probabilities"], {"images": x[:3]})[0]  # any batch size
    np.testing.assert_allclose(few, probabilities[:3], atol=TOLERANCE)

    logits = export(capsys, checkpoint, tmp_path / "logits.onnx", "--logits").run(["logits"], {"images": some})[0]
    np.testing.assert_allclose(logits, model.network.predict(some), rtol=1e-4, atol=1e-4)
    assert np.array_equal(logits.argmax(axis=1), probabilities[:200].argmax(axis=1))
    return difference


def assert_plain_standard_graph(path: Path, model: laminae.Model) -> None:
    """Standard operators only, opset and metadata as documented, and one Relu
    node per ReLU layer (a flip_average runs its views as one batch), absorbed by a pool or not."""
    exported = onnx.load(path)
    onnx.checker.check_model(exported, full_check=True)
    assert [(o.domain, o.version) for o in exported.opset_import] == [("", OPSET)]
    ops = [node.op_type for node in exported.graph.node]
    assert set(ops) <= STANDARD_OPS
    types = [layer["type"] for layer in layer_tables(model.spec["layers"])]  # inner layers of blocks too
    assert ops.count("Relu") == types.count("relu")
    assert ops.count("Conv") == types.count("conv")
    (image,) = exported.graph.input
    assert image.name == "images" and image.type.tensor_type.shape.dim[0].dim_param == "N"
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == list(model.network.input_shape)
    meta = {p.key: p.value for p in exported.metadata_props}
    assert meta["input"] == "images" and meta["input_shape"] == "[N, 1, 28, 28]"
    assert meta["classes"] == "10" and meta["model"] == model.name and meta["output"] == "probabilities"


@pytest.mark.parametrize("name", names(CATALOGUE))
def test_every_builtin_model_answers_the_same_under_onnxruntime(name, registry, sample, tmp_path, capsys):
    model = trained(CATALOGUE, name, registry, sample)
    checkpoint = model.save(tmp_path / "model.npz")
    difference = assert_same_answers(model, checkpoint, tmp_path, capsys, sample.test.x[:1000])
    assert_plain_standard_graph(tmp_path / "model.onnx", model)
    print(f"{name}: max |probability difference| {difference:.2e}")


@pytest.mark.parametrize("name", names(EXTRAS))
def test_every_extras_model_answers_the_same_under_onnxruntime(name, sample, tmp_path, capsys):
    registry = laminae.make_registry(plugins=[laminae_extras], autoload=False)
    model = trained(EXTRAS, name, registry, sample)
    checkpoint = model.save(tmp_path / "model.npz", registry=registry)
    difference = assert_same_answers(model, checkpoint, tmp_path, capsys, sample.test.x[:1000])
    print(f"{name}: max |probability difference| {difference:.2e}")


GEOMETRY = {
    "name": "geometry",
    "input": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 4, "size": 3, "stride": 2, "pad": 1, "bias": False},
        {"type": "relu"},
        {"type": "pool", "size": 3, "stride": 2},
        {"type": "conv", "filters": 5, "size": 2, "pad": 2},
        {"type": "sigmoid"},
        {"type": "pool", "size": 2, "stride": 1, "mode": "avg"},
        {"type": "flatten"},
        {"type": "affine", "units": 10, "bias": False},
    ],
    "loss": "quadratic",
    "optimizer": {"type": "sgd", "lr": 0.5},
    "train": {"dataset": "mnist-sample", "batch_size": 50},
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strides_padding_overlapping_and_average_pools_map_exactly(dtype, registry, sample, tmp_path, capsys):
    """Hyperparameters the catalogue leaves at their defaults: strides, padding,
    overlapping windows (whose max-pool absorbs a ReLU), average pools, layers
    without bias, and a float64 model exported as float32."""
    model = laminae.build({**GEOMETRY, "dtype": dtype}, registry=registry)
    assert model.network.absorbed == [1]
    model.fit(sample.train.x, sample.train.y, progress=False)
    checkpoint = model.save(tmp_path / "model.npz")
    assert_same_answers(model, checkpoint, tmp_path, capsys, sample.test.x[:200])
    ops = [node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv", "Sigmoid", "AveragePool", "Flatten", "Gemm", "Softmax", "Identity"]


PLUGINS = '''
import attrs
import numpy as np
import laminae


@attrs.define(eq=False)
class Double:
    """2x, with no onnx method."""

    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return tuple(input_shape)

    def forward(self, x, training):
        return 2 * x

    def backward(self, dout):
        return 2 * dout


@attrs.define(eq=False)
class Same(Double):
    """The identity, whose onnx nodes shrink the image."""

    def forward(self, x, training):
        return x

    def onnx(self, graph, x):
        return graph.node("MaxPool", [x], kernel_shape=[2, 2])


@attrs.define(eq=False)
class Hinge:
    """A loss with probabilities of its own, and no onnx method for them."""

    def forward(self, output, target):
        return 0.0

    def backward(self):
        return np.zeros(1)

    def probabilities(self, output):
        return np.full_like(output, 1 / output.shape[1])


@laminae.hookimpl
def register_layers(register):
    register("double", Double)
    register("same", Same)


@laminae.hookimpl
def register_losses(register):
    register("hinge", Hinge)
'''


@pytest.mark.parametrize(
    "layer, loss, message",
    [
        ("double", "softmax_cross_entropy",
         "layer 1 (double, from plugin 'mine'): cannot be exported to ONNX: its plugin gives it no onnx(graph, x) method"),
        ("same", "softmax_cross_entropy",
         "layer 1 (same, from plugin 'mine'): its ONNX nodes give shape (N, 1, 27, 27), but the layer gives (1, 28, 28)"),
        ("relu", "hinge",
         "loss 'hinge' (from plugin 'mine'): has its own probabilities but no onnx(graph, x) method for them;"
         " export the outputs as they are with --logits"),
    ],
)
def test_what_cannot_be_exported_is_one_line_and_leaves_no_file(layer, loss, message, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mine.py").write_text(PLUGINS)
    registry = laminae.make_registry(plugins_dir=plugins, autoload=False)
    spec = {
        "name": "m", "input": [1, 28, 28], "layers": [{"type": "relu"}, {"type": layer}, {"type": "affine", "units": 10}],
        "loss": loss, "optimizer": "sgd",
    }
    run = tmp_path / "run"
    checkpoint = laminae.build(spec, registry=registry).save(run / "model.npz", registry=registry)
    code = main(["export", str(run), str(run / "m.onnx"), "--plugins-dir", str(plugins)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"laminae export: error: {checkpoint}: model 'm': {message}\n"
    assert os.listdir(run) == ["model.npz"]
    if loss == "hinge":
        assert main(["export", str(run), str(run / "m.onnx"), "--plugins-dir", str(plugins), "--logits"]) == 0
        assert sorted(os.listdir(run)) == ["m.onnx", "model.npz"]


def test_without_onnx_installed_one_line_says_what_to_install(registry, tmp_path, capsys, monkeypatch):
    spec = {"name": "m", "input": [4], "layers": [{"type": "affine", "units": 3}], "loss": "quadratic", "optimizer": "sgd"}
    checkpoint = laminae.build(spec, registry=registry).save(tmp_path / "model.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an import of a missing package does
    assert main(["export", str(checkpoint), str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == "laminae export: error: exporting to ONNX needs onnx: pip install 'laminae[onnx]'\n"
    assert os.listdir(tmp_path) == ["model.npz"]
