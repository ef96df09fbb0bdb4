"""Layers made of layers: declared blocks, residual connections, branches, repeats.

Each composite is held to the conformance kit like any layer; a network of
them names its parameters by path, keeps them in its arenas, saves and
loads them, reports a mistake by the innermost layer's path, exports to
ONNX and is tuned by dotted paths into its blocks.
"""
from __future__ import annotations

import attrs
import numpy as np
import pytest

import laminae
from laminae.buffers import memory_order
from laminae.network.probe import probe
from laminae.plugins.activations import ReLU
from laminae.plugins.batchnorm import BatchNorm
from laminae.plugins.blocks import Branches, Repeat, Residual, Sequential
from laminae.plugins.conv import Conv
from laminae.testing import ConformanceError, check_layer
from laminae.tuning.paths import check_path, value_at
from tests.training_helpers import LossSpy, onnx_probabilities, params_equal

CONV = {"type": "conv", "filters": 4, "size": 3, "pad": 1}

NET_LAYERS = """\
  { type = "conv", filters = 4, size = 3, pad = 1 },
  { type = "relu" },
  { type = "stage", filters = 6, stride = 2 },
  { type = "branches", branches = [[{ type = "conv", filters = 2, size = 1 }], []] },
  { type = "global_avg_pool" },
  { type = "affine", units = 3 },
"""
TRAINING = """\
loss = "softmax_cross_entropy"
optimizer = { type = "sgd", lr = 0.05, momentum = 0.9 }
train = { dataset = "mnist-sample", epochs = 2, batch_size = 16, seed = 0 }
"""

BLOCKS = """
schema = 1

[blocks.basic]
description = "two 3x3 convolutions around a ReLU, the input added back"
args = { filters = 4, stride = 1 }
layer = { type = "residual", layers = [
  { type = "conv", filters = "$filters", size = 3, stride = "$stride", pad = 1, bias = false },
  { type = "batchnorm" },
  { type = "relu" },
  { type = "conv", filters = "$filters", size = 3, pad = 1, bias = false },
  { type = "batchnorm" },
], shortcut = [{ type = "conv", filters = "$filters", size = 1, stride = "$stride" }] }

[blocks.stage]
args = { filters = 4, stride = 1 }
layers = [
  { type = "basic", filters = "$filters", stride = "$stride" },
  { type = "relu" },
]

[models.net]
input = [1, 8, 8]
layers = [
""" + NET_LAYERS + """]
""" + TRAINING + """
[models.flipped]
input = [1, 8, 8]
layers = [{ type = "flip_average", layers = [
""" + NET_LAYERS + """] }]
""" + TRAINING

EXPANDED_STAGE = {
    "type": "sequential",
    "layers": [
        {
            "type": "residual",
            "layers": [
                {"type": "conv", "filters": 6, "size": 3, "stride": 2, "pad": 1, "bias": False},
                {"type": "batchnorm"},
                {"type": "relu"},
                {"type": "conv", "filters": 6, "size": 3, "pad": 1, "bias": False},
                {"type": "batchnorm"},
            ],
            "shortcut": [{"type": "conv", "filters": 6, "size": 1, "stride": 2}],
        },
        {"type": "relu"},
    ],
}


@pytest.fixture()
def models_file(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(BLOCKS)
    return path


def test_a_declared_block_expands_with_the_values_of_its_use(models_file, registry):
    model = laminae.from_toml(models_file, "net", registry=registry)
    assert model.spec["layers"][2] == EXPANDED_STAGE


def test_the_tree_names_every_inner_layer_and_parameter(models_file, registry):
    network = laminae.from_toml(models_file, "net", registry=registry).network
    assert list(network.nodes) == [
        "0", "1", "2", "2.0", "2.0.0", "2.0.1", "2.0.2", "2.0.3", "2.0.4", "2.0.shortcut.0", "2.1",
        "3", "3.0.0", "4", "5",
    ]
    assert network.nodes["2.0.3"].input_shape == (6, 4, 4)
    assert "2.0.1.gamma" in network.params and "2.0.shortcut.0.W" in network.params
    assert set(network.state_dict()) == {
        "2.0.1.running_mean", "2.0.1.running_var", "2.0.4.running_mean", "2.0.4.running_var",
    }
    summary = network.summary()
    lines = {line.split()[0]: line for line in summary.splitlines()[3:-2]}
    assert lines["2.0.shortcut.0"].index("conv") == lines["2.0.0"].index("conv") > lines["2"].index("sequential")
    assert f"total params: {network.num_params:,}" in summary
    # a composite's count is its subtree's
    row = next(line for line in summary.splitlines() if line.startswith("2   "))
    inner = sum(p.size for name, p in network.params.items() if name.startswith("2."))
    assert row.endswith(f"{inner:,}")


def test_the_arenas_hold_every_nested_parameter(models_file, registry):
    network = laminae.from_toml(models_file, "net", registry=registry).network
    assert network.param_arena.size == network.num_params
    assert len(network.param_blocks) == 1
    for name, array in network.params.items():
        assert np.shares_memory(array, network.param_arena), name
        assert np.shares_memory(network.grads[name], network.grad_arena), name


def test_the_whole_network_passes_a_numerical_gradient_check(models_file, registry):
    model = laminae.from_toml(models_file, "net", registry=registry, dtype="float64")
    network = model.network
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, 8, 8))
    weights = rng.standard_normal((4, 3))
    state = {k: v.copy() for k, v in network.state_dict().items()}

    def loss() -> float:
        network.load_state_dict({k: v.copy() for k, v in state.items()})
        return float(np.sum(network.forward(x, True) * weights))

    loss()
    network.backward(weights)
    for name in ["0.W", "2.0.0.W", "2.0.1.gamma", "2.0.4.beta", "2.0.shortcut.0.b", "3.0.0.W", "5.W"]:
        param, grad = network.params[name], network.grads[name].copy()
        index = tuple(i // 2 for i in param.shape)
        saved = param[index]
        param[index] = saved + 1e-6
        up = loss()
        param[index] = saved - 1e-6
        down = loss()
        param[index] = saved
        assert grad[index] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8), name


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Residual(layers=[CONV, {"type": "relu"}, CONV]), (4, 5, 5)),
        (Residual(layers=[CONV, {"type": "batchnorm"}], shortcut=[{"type": "conv", "filters": 4, "size": 1}]), (2, 5, 5)),
        (Residual(layers=[Conv(filters=3, size=3, pad=1, stride=2), ReLU()], shortcut=[Conv(filters=3, size=1, stride=2)]), (2, 6, 6)),
        (Branches(branches=[[{"type": "affine", "units": 3}], [{"type": "affine", "units": 2}, {"type": "sigmoid"}], []]), (4,)),
        (Branches(branches=[[{"type": "affine", "units": 3}], [{"type": "affine", "units": 3}, "sigmoid"]], merge="add"), (4,)),
        (Sequential(layers=[{"type": "affine", "units": 4}, {"type": "batchnorm"}, "relu"]), (5,)),
        (Repeat(layers=[{"type": "affine", "units": 4}, {"type": "sigmoid"}], times=3), (4,)),
    ],
    ids=["residual", "projection", "objects", "concat", "add", "sequential", "repeat"],
)
def test_every_composite_passes_the_conformance_kit(layer, shape, registry):
    check_layer(layer, shape, registry=registry)


def test_the_kit_sees_a_broken_layer_inside_a_composite(registry):
    @attrs.define(eq=False)
    class Forgetful:
        """Never writes its weight gradient."""

        params: dict = attrs.field(init=False, factory=dict)
        grads: dict = attrs.field(init=False, factory=dict)

        def build(self, shape, ctx):
            self.params = {"w": np.ones(shape, ctx.dtype)}
            self.grads = {"w": np.zeros(shape, ctx.dtype)}
            return tuple(shape)

        def forward(self, x, training):
            return x * self.params["w"]

        def backward(self, dout):
            return dout * self.params["w"]

    with pytest.raises(ConformanceError, match=r"'0\.w'"):
        check_layer(Residual(layers=[Forgetful()]), (3,), registry=registry)


def test_a_block_from_layer_objects_is_the_network_the_table_gives(registry):
    table = {
        "input": [2, 6, 6],
        "layers": [
            {"type": "residual", "layers": [CONV, {"type": "batchnorm"}, {"type": "relu"}],
             "shortcut": [{"type": "conv", "filters": 4, "size": 1}]},
            {"type": "global_avg_pool"},
            {"type": "affine", "units": 3},
        ],
        "loss": "softmax_cross_entropy",
        "optimizer": "sgd",
    }
    from_tables = laminae.build(table, registry=registry).network
    objects = [
        Residual(layers=[Conv(filters=4, size=3, pad=1), BatchNorm(), ReLU()], shortcut=[Conv(filters=4, size=1)]),
        registry.create("layers", "global_avg_pool"),
        registry.create("layers", {"type": "affine", "units": 3}),
    ]
    from_objects = laminae.Network(objects, (2, 6, 6), registry=registry)
    assert from_objects.params.keys() == from_tables.params.keys()
    for name in from_tables.params:
        assert from_objects.params[name].tobytes() == from_tables.params[name].tobytes(), name
    assert [node.type for node in from_objects.nodes.values()] == [node.type for node in from_tables.nodes.values()]


def test_a_mistake_inside_a_block_names_the_innermost_layer(tmp_path, registry):
    text = BLOCKS.replace('{ type = "conv", filters = "$filters", size = 3, pad = 1, bias = false }',
                          '{ type = "conv", filterz = "$filters", size = 3, pad = 1, bias = false }')
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(laminae.SpecError) as caught:
        laminae.from_toml(path, "net", registry=registry)
    assert caught.value.message == (
        f"{path}: model 'net', layer 2.0.3 (conv): unknown key 'filterz'; did you mean 'filters'?"
        " (allowed: filters, size, stride, pad, bias, init)"
    )


def test_a_residual_whose_shapes_differ_says_to_add_a_shortcut(registry):
    spec = {
        "input": [2, 6, 6],
        "layers": [{"type": "residual", "layers": [CONV]}, {"type": "affine", "units": 2}],
        "loss": "softmax_cross_entropy",
        "optimizer": "sgd",
    }
    with pytest.raises(laminae.ShapeError) as caught:
        laminae.build(spec, registry=registry)
    assert caught.value.message == (
        "<dict>: model 'model', layer 0 (residual): its layers give shape (4, 6, 6) but its input is (2, 6, 6):"
        " add a 'shortcut' (a 1x1 conv with the same stride, say) to match them"
    )


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('type = "stage", filters = 6', 'type = "stage", filterz = 6',
         "layer 2 (stage): block 'stage' has no arg 'filterz'; did you mean 'filters'? (args: filters, stride)"),
        ('stride = "$stride", pad = 1', 'stride = "$strid", pad = 1',
         "layer 2 (stage): block 'basic' uses '$strid', which is not one of its args; did you mean 'stride'?"
         " (args: filters, stride)"),
        ('type = "stage", filters = 6, stride = 2', 'type = "stage", filters = 6, stride = "2"',
         "layer 2.0.0 (conv): 'stride' must be an integer, got '2' (str)"),
    ],
)
def test_a_wrong_use_of_a_block_is_one_line(tmp_path, registry, old, new, message):
    path = tmp_path / "models.toml"
    path.write_text(BLOCKS.replace(old, new))
    with pytest.raises(laminae.SpecError) as caught:
        laminae.from_toml(path, "net", registry=registry)
    assert caught.value.message == f"{path}: model 'net', {message}"


def test_a_block_that_uses_itself_is_refused(tmp_path, registry):
    path = tmp_path / "models.toml"
    path.write_text(BLOCKS.replace('{ type = "relu" },\n]', '{ type = "stage" },\n]'))
    with pytest.raises(laminae.SpecError, match=r"layer 2 \(stage\): block uses itself: stage -> stage$"):
        laminae.from_toml(path, "net", registry=registry)


def test_blocks_that_multiply_cannot_ask_for_billions_of_layers(tmp_path, registry):
    lines = ["schema = 1", '[blocks.b0]', 'layer = { type = "relu" }']
    for level in range(1, 40):
        lines += [f"[blocks.b{level}]", f'layers = [{{ type = "b{level - 1}" }}, {{ type = "b{level - 1}" }}]']
    lines += ["[models.m]", "input = [4]", 'layers = [{ type = "b39" }]', 'loss = "softmax_cross_entropy"', 'optimizer = "sgd"']
    path = tmp_path / "bomb.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(laminae.SpecError, match=r"its blocks expand to more than 100,000 layers$"):
        laminae.from_toml(path, "m", registry=registry)


def test_a_block_may_not_take_the_name_of_a_layer_type(tmp_path, registry):
    path = tmp_path / "models.toml"
    path.write_text(BLOCKS.replace("[blocks.stage]", "[blocks.conv]").replace('type = "stage"', 'type = "conv"'))
    with pytest.raises(laminae.SpecError, match=r"block 'conv': a registered layer type has this name"):
        laminae.from_toml(path, "net", registry=registry)


def test_check_names_a_broken_layer_deep_inside_a_block(registry):
    @attrs.define(eq=False)
    class Shrinks:
        """Declares its input shape but returns one feature less."""

        params: dict = attrs.field(init=False, factory=dict)
        grads: dict = attrs.field(init=False, factory=dict)

        def build(self, shape, ctx):
            return tuple(shape)

        def forward(self, x, training):
            return x[:, :-1]

        def backward(self, dout):
            return dout

    network = laminae.Network(
        [Sequential(layers=[{"type": "affine", "units": 4}, Residual(layers=[Shrinks()])]), registry.create("layers", {"type": "affine", "units": 2})],
        (3,),
        registry=registry,
    )
    with pytest.raises(laminae.PluginError) as caught:
        probe(network, training=True)
    assert caught.value.message == "layer 0.1.0 (shrinks): forward returned shape (2, 3) for 2 samples of shape (4,)"


def test_a_nested_checkpoint_round_trips_with_its_state(models_file, registry, tmp_path):
    model = laminae.from_toml(models_file, "net", registry=registry)
    x = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    y = np.arange(32) % 3
    model.fit(x, y, epochs=1, progress=False)
    path = model.save(tmp_path / "net.npz")
    with np.load(path) as archive:
        assert "param/2.0.shortcut.0.W" in archive.files and "layer/2.0.1.running_var" in archive.files
    again = laminae.load(path, registry=registry)
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))


def test_a_stored_parameter_of_a_missing_inner_layer_is_named(models_file, registry, tmp_path):
    path = laminae.from_toml(models_file, "net", registry=registry).save(tmp_path / "net.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["param/2.0.9.W"] = np.zeros(3, np.float32)
    np.savez(path, **arrays)
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message == f"{path}: layer 2.0 (residual): unexpected parameter '9.W'"


@pytest.mark.parametrize("name", ["net", "flipped"])
def test_onnx_runs_blocks_as_the_network_does(name, models_file, registry, tmp_path):
    model = laminae.from_toml(models_file, name, registry=registry)
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    model.fit(x, np.arange(40) % 3, epochs=1, progress=False)  # running statistics away from their start
    np.testing.assert_allclose(onnx_probabilities(model, x, tmp_path), model.predict_proba(x), atol=1e-5)


def test_tune_paths_reach_inside_blocks(models_file, registry):
    spec = laminae.from_toml(models_file, "net", registry=registry).spec
    check_path(spec, "layers.2.layers.0.layers.0.filters", registry)
    assert value_at(spec, "layers.2.layers.0.layers.1.momentum", registry) == 0.1  # a default
    check_path(spec, "layers.3.branches.0.0.size", registry)
    with pytest.raises(laminae.SpecError, match=r"has no key 'filterz'; did you mean 'filters'\?"):
        check_path(spec, "layers.2.layers.0.layers.0.filterz", registry)
    flipped = laminae.from_toml(models_file, "flipped", registry=registry).spec
    assert value_at(flipped, "layers.0.shift", registry) == 0  # flip_average's own key, a default
    assert value_at(flipped, "layers.0.layers.2.layers.0.layers.0.filters", registry) == 6
    check_path(flipped, "layers.0.layers.3.branches.0.0.size", registry)


@pytest.mark.parametrize("name", ["net", "flipped"])
def test_training_in_two_slices_resumes_bit_for_bit_with_nested_batch_norm(name, models_file, registry, tmp_path):
    """The same run, interrupted by SIGINT mid-epoch and resumed, on one core and on two."""
    rng = np.random.default_rng(1)
    x = rng.random((96, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 96)
    for threads in (1, 2):
        build = lambda: laminae.from_toml(models_file, name, registry=registry, train_overrides={"threads": threads})  # noqa: E731
        reference = build()
        reference.fit(x, y, progress=False, run_dir=tmp_path / f"ref{threads}")
        stopped = build()
        stopped.loss = LossSpy(stopped.loss, at=9)  # epoch 2, batch 3
        assert stopped.fit(x, y, progress=False, run_dir=tmp_path / f"run{threads}").interrupted
        resumed, state = laminae.load_training(tmp_path / f"run{threads}", registry=registry)
        resumed.fit(x, y, progress=False, run_dir=tmp_path / f"run{threads}", resume=state)
        assert params_equal(resumed.network, reference.network), threads
        a, b = resumed.network.state_dict(), reference.network.state_dict()
        assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a), threads


def test_summary_shows_the_tree(models_file, capsys):
    from laminae.cli import main

    assert main(["summary", str(models_file), "net"]) == 0
    out = capsys.readouterr().out
    assert "model net\n" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["2.0.shortcut.0", "conv", "256", "(6,", "4,", "4)", "30"] in rows
    assert ["3.0.0", "conv", "96", "(2,", "4,", "4)", "14"] in rows
    assert main(["summary", str(models_file), "flipped"]) == 0  # the same tree, one level down
    flipped = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["0.2.0.shortcut.0", "conv", "256", "(6,", "4,", "4)", "30"] in flipped
    total = sum(p.size for p in laminae.from_toml(models_file, "net").network.params.values())
    assert ["0", "flip_average", "64", "(3,)", str(total)] in flipped  # a composite's count is its subtree's


def test_laminae_build_takes_layer_objects_and_gives_the_toml_network(models_file, registry):
    """The Python way to the TOML's network: layer objects (or a document dict
    with its blocks) in ``laminae.build`` give the same spec and parameters."""
    from_file = laminae.from_toml(models_file, "net", registry=registry)
    basic = Residual(
        layers=[Conv(filters=6, size=3, stride=2, pad=1, bias=False), BatchNorm(), ReLU(), Conv(filters=6, size=3, pad=1, bias=False), BatchNorm()],
        shortcut=[Conv(filters=6, size=1, stride=2)],
    )
    spec = {
        **{key: from_file.spec[key] for key in ("input", "loss", "optimizer", "train")},
        "name": "net",
        "layers": [
            Conv(filters=4, size=3, pad=1), ReLU(), Sequential(layers=[basic, ReLU()]),
            Branches(branches=[[Conv(filters=2, size=1)], []]),
            registry.create("layers", "global_avg_pool"), registry.create("layers", {"type": "affine", "units": 3}),
        ],
    }
    from_objects = laminae.build(spec, registry=registry)
    assert from_objects.spec["layers"] == from_file.spec["layers"]
    assert all(from_objects.network.params[k].tobytes() == v.tobytes() for k, v in from_file.network.params.items())
    import tomllib

    document = laminae.build(tomllib.loads(BLOCKS), registry=registry, name="net")
    assert document.spec == from_file.spec


@pytest.mark.parametrize(
    "layer",
    [
        Residual(layers=[CONV, {"type": "batchnorm"}]),
        Branches(branches=[[CONV], [CONV, {"type": "relu"}]], merge="add"),
    ],
    ids=["residual", "branches"],
)
def test_a_sum_of_paths_keeps_the_memory_order_of_its_inputs(layer, registry):
    """A conv hands on batch-innermost arrays; the sum must too, each way, or
    every later layer walks it against its grain (a third of a ResNet step)."""
    layer.build((4, 6, 6), laminae.BuildContext(rng=np.random.default_rng(0), dtype=np.float32, registry=registry))
    x = np.random.default_rng(1).standard_normal((8, 4, 6, 6)).astype(np.float32)
    out = layer.forward(x, True)
    assert memory_order(out) == (1, 2, 3, 0)
    dout = np.ascontiguousarray(out.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)  # the same order as out
    assert memory_order(layer.backward(dout)) == (1, 2, 3, 0)
