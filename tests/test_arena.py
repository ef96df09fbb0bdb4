"""Parameter and gradient arenas: one flat buffer each, views in the layers,
and an optimizer that updates them in a few calls with the same numbers."""
from __future__ import annotations

import attrs
import numpy as np
import pytest

import laminae
from laminae.arena import flat_groups, flat_span, pack
from laminae.plugins.activations import ReLU
from laminae.plugins.affine import Affine
from laminae.plugins.sgd import SGD

DNN = {
    "input": [1, 4, 4],
    "layers": [
        {"type": "affine", "units": 8},
        {"type": "relu"},
        {"type": "affine", "units": 3},
    ],
    "loss": "softmax_cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"batch_size": 4, "epochs": 2, "seed": 1},
}


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, n)


def test_a_network_keeps_its_parameters_and_gradients_in_one_buffer_each():
    network = laminae.build(DNN).network
    assert network.param_arena.size == network.num_params == network.grad_arena.size
    for name, param in network.params.items():
        assert np.shares_memory(param, network.param_arena), name
        assert np.shares_memory(network.grads[name], network.grad_arena), name
    assert [b.size for b in network.param_blocks] == [network.num_params]
    assert len(network.grad_blocks) == 1 and network.grad_blocks[0] is not network.param_blocks[0]
    # the values survived the move: the same seed draws the same weights as a network left unpacked
    layer = network.layers[0]
    assert layer.params["W"].base is network.param_arena


def test_pack_and_flat_span_round_trip():
    arrays = [np.ones((2, 3), np.float32), np.ones(4, np.float32), np.zeros((1, 2), np.float32)]
    flat, views = pack(arrays, np.dtype(np.float32))
    assert [v.shape for v in views] == [a.shape for a in arrays]
    assert all(np.array_equal(v, a) for v, a in zip(views, arrays))
    span = flat_span(views)
    assert span is not None and span.size == flat.size and np.shares_memory(span, flat)
    assert flat_span(views[1:]).size == 6
    assert flat_span([views[0], views[2]]) is None  # not end to end
    assert flat_span([views[1], views[0]]) is None  # out of order
    assert flat_span([arrays[0]]) is None  # owns its memory: no flat buffer behind it


def test_flat_groups_splits_where_the_arrays_stop_tiling_one_buffer():
    flat, views = pack([np.ones((2, 2), np.float32), np.ones(3, np.float32)], np.dtype(np.float32))
    gflat, gviews = pack([np.zeros((2, 2), np.float32), np.zeros(3, np.float32)], np.dtype(np.float32))
    loose = np.ones((3, 4), np.float64)[:, ::2]  # not contiguous
    params = {"a": views[0], "b": views[1], "c": loose, "d": np.ones(5, np.float32)}
    grads = {"a": gviews[0], "b": gviews[1], "c": np.zeros_like(loose), "d": np.zeros(5, np.float32)}
    groups = flat_groups(params, grads)
    assert [g.names for g in groups] == [["a", "b"], ["c"], ["d"]]
    assert groups[0].param.size == 7 and np.shares_memory(groups[0].param, flat)
    assert groups[1].param.shape == (3, 2) and groups[2].param.shape == (5,)
    parts = groups[0].unflatten(groups[0].grad)
    assert parts["a"].shape == (2, 2) and np.shares_memory(parts["a"], gviews[0])


@attrs.define(eq=False)
class KeepsItsWeights(Affine):
    """An affine layer that keeps its own reference to its weights, as a
    plugin author may: it must not be moved into the arena behind its back."""

    _weights: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape, ctx):
        shape = super().build(input_shape, ctx)
        self._weights = self.params["W"]
        return shape

    def forward(self, x, training):
        x = x.reshape(len(x), -1)
        self._x = x
        return x @ self._weights + self.params["b"]


@attrs.define(eq=False)
class Float64Weights(Affine):
    """An affine layer whose parameters are float64 in a float32 network."""

    def build(self, input_shape, ctx):
        shape = super().build(input_shape, ctx)
        self.params = {k: v.astype(np.float64) for k, v in self.params.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return shape

    def forward(self, x, training):
        x = x.reshape(len(x), -1)
        self._x = x
        return (x @ self.params["W"] + self.params["b"]).astype(np.float32)

    def backward(self, dout):
        self.grads["W"][...] = self._x.T @ dout
        self.grads["b"][...] = dout.sum(axis=0)
        return (dout @ self.params["W"].T).astype(np.float32).reshape((len(dout), *self._input_shape))


@pytest.mark.parametrize("odd_layer", [KeepsItsWeights, Float64Weights])
def test_arrays_that_cannot_move_stay_put_and_still_train(odd_layer):
    model = laminae.build(DNN)
    model.network = network = laminae.Network([odd_layer(units=8), ReLU(), Affine(units=3)], (1, 4, 4), seed=1)
    first = network.layers[0]
    assert not np.shares_memory(first.params["W"], network.param_arena)
    assert np.shares_memory(network.params["2.W"], network.param_arena)
    assert len(network.param_blocks) == (2 if odd_layer is KeepsItsWeights else 3)  # its bias moves, if float32
    x, y = data()
    before = {name: p.copy() for name, p in network.params.items()}
    losses = [epoch.train_loss for epoch in model.fit(x, y, epochs=4).history]
    assert losses[-1] < losses[0]
    if odd_layer is KeepsItsWeights:
        assert first._weights is first.params["W"]
    assert not np.array_equal(before["0.W"], network.params["0.W"])


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
        {"lr": 0.1, "weight_decay": 5e-4, "decay": 0.01},
    ],
)
def test_sgd_over_an_arena_updates_exactly_as_over_separate_arrays(options):
    rng = np.random.default_rng(3)
    shapes = [(5, 4), (4,), (4, 3), (3,)]
    separate = {f"{i}.p": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    _, packed_views = pack(list(separate.values()), np.dtype(np.float32))
    packed = dict(zip(separate, packed_views))
    grads_flat, grad_views = pack([np.zeros(s, np.float32) for s in shapes], np.dtype(np.float32))
    packed_grads = dict(zip(separate, grad_views))
    separate_grads = {k: np.zeros_like(v) for k, v in separate.items()}
    one, other = SGD(**options), SGD(**options)
    for step in range(5):
        for name in separate:
            g = rng.standard_normal(separate[name].shape).astype(np.float32)
            separate_grads[name][...] = g
            packed_grads[name][...] = g
        one.step(separate, separate_grads)
        other.step(packed, packed_grads)
        if step == 2:  # a checkpoint in between: the same per-parameter state, resumed in a fresh optimizer
            state = other.state_dict()
            assert state.keys() == one.state_dict().keys()
            assert all(np.array_equal(v, one.state_dict()[k]) for k, v in state.items())
            other = SGD(**options)
            other.load_state_dict(state)
    for name in separate:
        assert np.array_equal(separate[name], packed[name]), name
    assert np.shares_memory(packed["0.p"], packed["3.p"].base)


def test_sgd_refuses_velocity_saved_for_part_of_a_group():
    _, views = pack([np.ones(3, np.float32), np.ones(2, np.float32)], np.dtype(np.float32))
    _, grads = pack([np.ones(3, np.float32), np.ones(2, np.float32)], np.dtype(np.float32))
    sgd = SGD(lr=0.1, momentum=0.9)
    sgd.load_state_dict({"velocity/a": np.ones(3, np.float32), "steps": np.array(1)})
    with pytest.raises(ValueError, match="velocity saved for 'a' but not for 'b'"):
        sgd.step({"a": views[0], "b": views[1]}, {"a": grads[0], "b": grads[1]})
