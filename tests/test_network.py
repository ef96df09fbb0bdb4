"""Building networks from Python: shape inference, parameter names, summary, fusion."""
import copy

import numpy as np
import pytest

import laminae
from laminae.plugins.activations import ReLU
from laminae.plugins.affine import Affine
from laminae.plugins.conv import Conv
from laminae.plugins.pool import Pool
from laminae.testing import check_layer


def layers(registry, *specs):
    return [registry.create("layers", spec) for spec in specs]


def classic_cnn(registry):
    return layers(
        registry,
        {"type": "conv", "filters": 30, "size": 5},
        "relu",
        {"type": "pool", "size": 2, "stride": 2},
        {"type": "affine", "units": 100},
        "relu",
        {"type": "affine", "units": 10},
    )


def test_classic_cnn_infers_every_shape(registry):
    net = laminae.Network(classic_cnn(registry), input_shape=(1, 28, 28), registry=registry)
    assert net.shapes == [(30, 24, 24), (30, 24, 24), (30, 12, 12), (100,), (100,), (10,)]
    assert net.params["3.W"].shape == (4320, 100)
    summary = net.summary()
    affine_row = next(line for line in summary.splitlines() if line.startswith("3 "))
    assert affine_row.split()[:3] == ["3", "affine", "4,320"]
    assert f"total params: {30*25 + 30 + 4320*100 + 100 + 100*10 + 10:,} (float32)" in summary
    assert summary.splitlines()[-2:] == [
        "layer 1 (relu) runs inside layer 2 (pool)",
        "layer 4 (relu) runs inside layer 3 (affine)",
    ]
    out = net.forward(np.zeros((2, 1, 28, 28), np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32


def test_params_and_grads_share_stable_names(registry):
    net = laminae.Network(layers(registry, {"type": "affine", "units": 5}, "relu", {"type": "affine", "units": 3}), (4,), registry=registry)
    assert list(net.params) == ["0.W", "0.b", "2.W", "2.b"]
    assert list(net.grads) == list(net.params)
    assert net.params["0.W"] is net.layers[0].params["W"]
    net.forward(np.ones((2, 4)), training=True)
    net.backward(np.ones((2, 3), np.float32))
    assert net.grads["2.b"].tolist() == [2.0, 2.0, 2.0]


def test_same_seed_same_parameters(registry):
    def build(seed):
        return laminae.Network(classic_cnn(registry), (1, 28, 28), seed=seed, registry=registry)

    a, b, c = build(1), build(1), build(2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["0.W"], c.params["0.W"])


def test_shape_that_cannot_fit_names_layer_and_shapes(registry):
    with pytest.raises(laminae.ShapeError) as info:
        laminae.Network(layers(registry, {"type": "affine", "units": 10}, {"type": "conv", "filters": 2, "size": 3}), (1, 28, 28), registry=registry)
    message = str(info.value)
    assert message.startswith("layer 1 (conv): ")
    assert "(10,)" in message and "\n" not in message


def test_predict_batches_in_inference_mode(registry):
    net = laminae.Network(layers(registry, {"type": "affine", "units": 3}), (4,), registry=registry)
    x = np.random.default_rng(0).standard_normal((25, 4)).astype(np.float32)
    np.testing.assert_allclose(net.predict(x, batch_size=7), net.forward(x), rtol=1e-6)


def test_inference_chunks_fit_their_activations_in_a_few_megabytes(registry):
    conv = laminae.Network(layers(registry, {"type": "conv", "filters": 30, "size": 5}, {"type": "relu"}),
                           (1, 28, 28), registry=registry)
    per_sample = 4 * (784 + 2 * 30 * 24 * 24)  # input, conv output, ReLU output
    assert conv.inference_batch() == 8 * 2**20 // per_sample == 59
    dense = laminae.Network(layers(registry, {"type": "affine", "units": 10}), (784,), registry=registry)
    assert dense.inference_batch() == 1000  # the most a chunk holds
    huge = laminae.Network(layers(registry, {"type": "relu"}), (3, 512, 512), registry=registry)
    assert huge.inference_batch() == 32  # the least


def test_predicting_in_default_chunks_matches_one_pass(registry):
    net = laminae.Network(layers(registry, {"type": "conv", "filters": 30, "size": 5}, {"type": "relu"}),
                          (1, 28, 28), registry=registry)
    x = np.random.default_rng(0).standard_normal((130, 1, 28, 28)).astype(np.float32)
    assert net.inference_batch() < 130  # so that the default really chunks
    np.testing.assert_allclose(net.predict(x), net.forward(x), rtol=1e-5, atol=1e-5)  # BLAS blocking differs by batch


def test_layer_from_outside_module_through_the_same_hook():
    from tests.fixtures import outside_plugin

    registry = laminae.make_registry(plugins=[outside_plugin], autoload=False)
    assert registry.owner("layers", "square") == "tests.fixtures.outside_plugin"
    net = laminae.Network(
        [registry.create("layers", {"type": "affine", "units": 3}), registry.create("layers", "square")],
        (2,),
        registry=registry,
    )
    assert net.names == ["affine", "square"]
    out = net.forward(np.ones((1, 2)))
    np.testing.assert_allclose(out, (np.ones((1, 2)) @ net.params["0.W"]) ** 2, rtol=1e-6)
    check_layer(outside_plugin.Square(), (3,), name="square")


def test_third_party_layer_satisfies_protocol_without_subclassing():
    from tests.fixtures import outside_plugin

    assert isinstance(outside_plugin.Square(), laminae.Layer)
    assert laminae.Layer not in type(outside_plugin.Square()).__mro__


def fused_and_plain(layers, input_shape):
    """The same network twice, with and without letting layers absorb their predecessors."""
    return tuple(
        laminae.Network(copy.deepcopy(layers), input_shape, seed=0, input_grad=True, fuse=fuse) for fuse in (True, False)
    )


@pytest.mark.parametrize(
    ("pool", "input_shape"),
    [
        ({"size": 2}, (2, 10, 10)),  # 2x2 tiles: the pairwise path
        ({"size": 2}, (2, 9, 9)),  # windows that do not tile
        ({"size": 3, "stride": 2}, (1, 11, 8)),  # overlapping windows
        ({"size": 3}, (3, 8, 8)),
    ],
)
def test_a_max_pool_absorbs_the_relu_before_it_bit_for_bit(pool, input_shape):
    layers = [Conv(filters=4, size=3), ReLU(), Pool(**pool), Affine(units=3)]
    fused, plain = fused_and_plain(layers, input_shape)
    assert (fused.absorbed, plain.absorbed) == ([1], [])
    rng = np.random.default_rng(0)
    for _ in range(3):  # a few SGD steps: the weights stay equal too
        x = rng.standard_normal((6, *input_shape)).astype(np.float32)
        x[0] = -1  # a sample whose windows are all negative: zero gradients through the ReLU
        out_fused, out_plain = fused.forward(x, True), plain.forward(x, True)
        dout = rng.standard_normal(out_fused.shape).astype(np.float32)
        dx_fused, dx_plain = fused.backward(dout), plain.backward(dout)
        assert np.array_equal(out_fused, out_plain) and np.array_equal(dx_fused, dx_plain)
        for name, grad in plain.grads.items():
            assert np.array_equal(fused.grads[name], grad), name
            fused.params[name] -= 0.1 * fused.grads[name]
            plain.params[name] -= 0.1 * grad


@pytest.mark.parametrize("input_shape", [(12,), (2, 5, 5)])
def test_an_affine_layer_absorbs_the_relu_after_it_bit_for_bit(input_shape):
    layers = [Affine(units=7), ReLU(), Affine(units=5), ReLU(), Affine(units=3)]
    fused, plain = fused_and_plain(layers, input_shape)
    assert (fused.absorbed_by, plain.absorbed) == ({1: 0, 3: 2}, [])
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((6, *input_shape)).astype(np.float32)
        x[0] = 0  # exact zeros: the mask and the product must agree on them
        out_fused, out_plain = fused.forward(x, True), plain.forward(x, True)
        dout = rng.standard_normal(out_fused.shape).astype(np.float32)
        dx_fused, dx_plain = fused.backward(dout), plain.backward(dout)
        assert np.array_equal(out_fused, out_plain) and np.array_equal(dx_fused, dx_plain)
        assert np.array_equal(np.signbit(out_fused), np.signbit(out_plain))
        for name, grad in plain.grads.items():
            assert np.array_equal(fused.grads[name], grad), name
            fused.params[name] -= 0.1 * fused.grads[name]
            plain.params[name] -= 0.1 * grad
    assert np.array_equal(fused.forward(x), plain.forward(x))  # inference too


class LeakyRelu(ReLU):
    """A subclass may compute something else: it is never absorbed."""


class ScaledAffine(Affine):
    """A subclass that replaces forward: it does not know to apply a ReLU."""

    def forward(self, x, training):
        return super().forward(x, training) * 2


@pytest.mark.parametrize(
    ("layers", "absorbed"),
    [
        ([ReLU(), Pool(size=2, mode="avg")], []),  # an average does not commute with a ReLU
        ([LeakyRelu(), Pool(size=2)], []),
        ([ReLU(), ReLU(), Pool(size=2)], [1]),
        ([ReLU(), Pool(size=2), ReLU(), Pool(size=2)], [0, 2]),
        ([Affine(units=4), LeakyRelu()], []),
        ([ScaledAffine(units=4), ReLU()], []),
        ([Affine(units=4), ReLU(), ReLU()], [1]),
    ],
)
def test_only_what_can_be_computed_exactly_is_absorbed(layers, absorbed):
    assert laminae.Network(layers, (1, 8, 8)).absorbed == absorbed
