"""Batch normalization, dropout and global average pooling: the conformance kit,
the loop references in every memory layout, their state, their errors,
PyTorch's numbers, and their ONNX export."""
from __future__ import annotations

import numpy as np
import pytest

import laminae
from laminae.buffers import memory_order
from laminae.plugins.batchnorm import channel_views
from laminae.plugins.reference import loops as ref
from laminae.testing import ConformanceError, check_layer, layer_cases, uncovered

LAYER_CASES = layer_cases({
    "batchnorm": [
        ({}, (5,)),
        ({"affine": False}, (4,)),
        ({}, (2, 3, 4)),
        ({"affine": False, "momentum": 0.5}, (3, 2, 2)),
        ({"eps": 0.01, "momentum": 1}, (2, 1, 3)),
    ],
    "dropout": [({}, (6,)), ({"rate": 0.2}, (2, 3, 4)), ({"rate": 0}, (5,))],
    "global_avg_pool": [({}, (3, 4, 5)), ({}, (2, 1, 1))],
})
PLUGINS = ["laminae.plugins.batchnorm", "laminae.plugins.dropout", "laminae.plugins.global_pool"]


def built(registry, spec, input_shape, dtype=np.float64, seed=0):
    layer = registry.create("layers", spec)
    ctx = laminae.BuildContext(rng=np.random.default_rng(seed), dtype=dtype, registry=registry)
    layer.build(tuple(input_shape), ctx)
    return layer


def batch_last(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, H, W) as a conv gives it: the same numbers stored (C, H, W, N)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def conv_output(registry, rng, batch=4, channels=3, dtype=np.float64):
    """A real conv's output: (batch, channels, 4, 3), stored batch-last."""
    conv = built(registry, {"type": "conv", "filters": channels, "size": 2}, (2, 5, 4), dtype)
    out = conv.forward(rng.standard_normal((batch, 2, 5, 4)).astype(dtype), True)
    assert not out.flags.c_contiguous and out.transpose(1, 2, 3, 0).flags.c_contiguous
    return out


def laid_out_as(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` stored in ``x``'s memory order."""
    array = np.empty_like(x)
    array[...] = values
    assert memory_order(array) == memory_order(x)
    return array


def laid_out_otherwise(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` stored in another memory order than ``x``'s: the layer then
    meets arrays of two layouts at once."""
    array = np.ascontiguousarray(values) if x.flags.f_contiguous else np.asfortranarray(values)
    assert memory_order(array) != memory_order(x)
    return array


def random_affine(layer, rng):
    layer.params["gamma"][...] = rng.uniform(0.5, 2, layer.params["gamma"].shape)
    layer.params["beta"][...] = rng.standard_normal(layer.params["beta"].shape)


# --- the conformance kit -----------------------------------------------------------------------


@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_conforms(registry, case):
    case.check(registry)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_layer_of_the_plugins_is_checked(registry, plugin):
    assert uncovered(registry, plugin, LAYER_CASES) == []


def test_kit_catches_a_batch_norm_that_forgets_the_batch_statistics(registry):
    """The training-mode check has teeth: a backward that treats the batch's
    mean and variance as constants (inference's gradient) is caught."""
    cls = registry.get("layers", "batchnorm")

    class ConstantStatistics(cls):
        def backward(self, dout):
            super().backward(dout)
            return dout * (self.params["gamma"] * self._inv_std)

    with pytest.raises(ConformanceError, match=r"layer bad: input gradient \(float64, training\): analytic"):
        check_layer(ConstantStatistics(), (4,), name="bad")


# --- batch normalization against the loops ----------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", ["features", "features batch-last", "nchw", "conv output"])
def test_batchnorm_matches_loop_reference(registry, layout, affine):
    rng = np.random.default_rng(3)
    if layout == "conv output":
        x = conv_output(registry, rng)
    elif layout == "nchw":
        x = rng.standard_normal((4, 3, 2, 3)) * 2 + 1
    else:
        x = rng.standard_normal((5, 4)) * 3 - 1
        x = np.asfortranarray(x) if layout == "features batch-last" else x
    layer = built(registry, {"type": "batchnorm", "affine": affine}, x.shape[1:])
    if affine:
        random_affine(layer, rng)
    gamma = layer.params.get("gamma", np.ones(x.shape[1]))
    beta = layer.params.get("beta", np.zeros(x.shape[1]))

    out = layer.forward(x, True)
    np.testing.assert_allclose(out, ref.batchnorm_forward(x, gamma, beta, 1e-5), rtol=1e-12, atol=1e-12)
    assert memory_order(out) == memory_order(x)
    for dout in (laid_out_as(x, rng.standard_normal(x.shape)), laid_out_otherwise(x, rng.standard_normal(x.shape))):
        dx_ref, dgamma_ref, dbeta_ref = ref.batchnorm_backward(x, gamma, 1e-5, dout)
        dx = layer.backward(dout)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
        assert memory_order(dx) == memory_order(x)
        if affine:
            np.testing.assert_allclose(layer.grads["gamma"], dgamma_ref, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(layer.grads["beta"], dbeta_ref, rtol=1e-12, atol=1e-12)

    mean, var = layer.state_dict()["running_mean"], layer.state_dict()["running_var"]
    inferred = layer.forward(x, False)
    np.testing.assert_allclose(inferred, ref.batchnorm_forward(x, gamma, beta, 1e-5, mean, var), rtol=1e-12, atol=1e-12)
    assert memory_order(inferred) == memory_order(x)
    dout = rng.standard_normal(x.shape)
    dx_ref, dgamma_ref, dbeta_ref = ref.batchnorm_backward(x, gamma, 1e-5, dout, mean, var)
    np.testing.assert_allclose(layer.backward(dout), dx_ref, rtol=1e-12, atol=1e-12)
    if affine:
        np.testing.assert_allclose(layer.grads["gamma"], dgamma_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.grads["beta"], dbeta_ref, rtol=1e-12, atol=1e-12)


def test_channel_views_reach_a_conv_output_without_a_copy(registry):
    """The fast path is taken where the memory allows it: one contiguous row per
    channel, viewing the very memory of the batch, and never for a C-order one."""
    x = conv_output(registry, np.random.default_rng(4), batch=5, channels=3)
    (view,), axes, column = channel_views(x)
    assert view.shape == (3, 5 * 4 * 3) and view.flags.c_contiguous and np.shares_memory(view, x)
    assert axes == (1,) and column == (-1, 1)
    np.testing.assert_array_equal(view[1], x[:, 1].transpose(1, 2, 0).ravel())
    (same,), axes, column = channel_views(np.ascontiguousarray(x))
    assert same.shape == x.shape and axes == (0, 2, 3) and column == (-1, 1, 1)
    (rows, other), axes, _ = channel_views(x, np.ascontiguousarray(x))  # mixed orders: both as they are
    assert rows.shape == other.shape == x.shape and axes == (0, 2, 3)


def test_batchnorm_float32_stays_float32_on_a_conv_output(registry):
    rng = np.random.default_rng(5)
    x = conv_output(registry, rng, dtype=np.float32)
    layer = built(registry, "batchnorm", x.shape[1:], np.float32)
    out = layer.forward(x, True)
    assert out.dtype == np.float32 and memory_order(out) == memory_order(x)
    np.testing.assert_allclose(out, ref.batchnorm_forward(x, np.ones(3), np.zeros(3), 1e-5), rtol=1e-4, atol=1e-5)
    dx = layer.backward(batch_last(np.ones_like(np.ascontiguousarray(x))))
    assert dx.dtype == np.float32 and memory_order(dx) == memory_order(x)
    assert all(a.dtype == np.float32 for a in (*layer.grads.values(), *layer.state_dict().values()))


# --- running statistics and state --------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_running_statistics_follow_pytorchs_rule(registry, momentum):
    """running = (1 - momentum) * running + momentum * batch statistic, the
    variance unbiased (m / (m - 1)); inference uses them, training does not."""
    rng = np.random.default_rng(6)
    layer = built(registry, {"type": "batchnorm", "momentum": momentum}, (2, 3, 2))
    mean, var = np.zeros(2), np.ones(2)
    for step in range(3):
        x = rng.standard_normal((4, 2, 3, 2)) * (step + 1) + step
        layer.forward(x, True)
        batch_mean, batch_var = ref.batchnorm_statistics(x)
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * batch_var * 24 / 23
        state = layer.state_dict()
        np.testing.assert_allclose(state["running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(state["running_var"], var, rtol=1e-12)
    x = rng.standard_normal((3, 2, 3, 2))
    expected = ref.batchnorm_forward(x, np.ones(2), np.zeros(2), 1e-5, mean, var)
    np.testing.assert_allclose(layer.forward(x, False), expected, rtol=1e-12)
    np.testing.assert_allclose(layer.state_dict()["running_mean"], mean, rtol=1e-12)  # inference moved nothing
    training = layer.forward(x, True)
    batch_statistics = ref.batchnorm_forward(x, np.ones(2), np.zeros(2), 1e-5)
    np.testing.assert_allclose(training, batch_statistics, rtol=1e-12, atol=1e-12)
    assert np.abs(training - expected).max() > 0.1


def test_combine_states_is_the_weighted_mean_of_the_slices(registry):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10, 3)).astype(np.float32) * 2 + 1
    halves = [built(registry, "batchnorm", (3,), np.float32) for _ in range(2)]
    halves[0].forward(x[:4], True)
    halves[1].forward(x[4:], True)
    states = [half.state_dict() for half in halves]
    combined = halves[0].combine_states(states, [0.4, 0.6])
    assert set(combined) == {"running_mean", "running_var"}
    for name in combined:
        assert combined[name].dtype == np.float32
        np.testing.assert_allclose(combined[name], 0.4 * states[0][name] + 0.6 * states[1][name], rtol=1e-6)
    whole = built(registry, "batchnorm", (3,), np.float32)
    whole.forward(x, True)  # the mean is linear in the slices: the same as one pass over the batch
    np.testing.assert_allclose(combined["running_mean"], whole.state_dict()["running_mean"], rtol=1e-5, atol=1e-7)
    halves[0].load_state_dict(combined)
    np.testing.assert_array_equal(halves[0].state_dict()["running_var"], combined["running_var"])


def test_a_network_with_batch_norm_trains_on_two_threads(registry):
    spec = {
        "input": [1, 6, 6],
        "layers": [
            {"type": "conv", "filters": 3, "size": 3}, {"type": "batchnorm"}, {"type": "relu"},
            {"type": "global_avg_pool"}, {"type": "affine", "units": 2},
        ],
        "loss": "softmax_cross_entropy", "optimizer": "sgd", "train": {"threads": 2, "batch_size": 16},
    }
    rng = np.random.default_rng(8)
    x, y = rng.random((32, 1, 6, 6), dtype=np.float32), rng.integers(0, 2, 32)
    sliced = laminae.build(spec, registry=registry)
    before = sliced.network.state_dict()
    sliced.fit(x, y, epochs=1, progress=False)
    after = sliced.network.state_dict()
    assert set(after) == {"1.running_mean", "1.running_var"}
    assert not np.allclose(after["1.running_mean"], before["1.running_mean"], atol=1e-3)
    assert after["1.running_var"].dtype == np.float32 and np.all(after["1.running_var"] > 0)
    # the mean is linear in the slices: combined, it is the whole batch's, as on one thread
    whole = laminae.build(spec, registry=registry, train_overrides={"threads": 1})
    whole.fit(x, y, epochs=1, progress=False)
    one_thread = whole.network.state_dict()["1.running_mean"]
    np.testing.assert_allclose(after["1.running_mean"], one_thread, rtol=1e-4, atol=1e-6)


def test_batchnorm_state_round_trips_and_is_checked(registry, tmp_path):
    rng = np.random.default_rng(9)
    used = built(registry, "batchnorm", (4,))
    used.forward(rng.standard_normal((6, 4)) + 3, True)
    state = used.state_dict()
    state["running_mean"][...] = 0  # a copy: the layer's own are untouched
    assert not np.array_equal(used.state_dict()["running_mean"], state["running_mean"])
    np.savez(tmp_path / "state.npz", **used.state_dict())
    fresh = built(registry, "batchnorm", (4,))
    with np.load(tmp_path / "state.npz") as saved:
        fresh.load_state_dict(dict(saved))
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(fresh.forward(x, False), used.forward(x, False))

    good = used.state_dict()
    for bad, message in [
        ({"running_mean": good["running_mean"]}, r"^state 'running_var' is missing$"),
        ({**good, "extra": np.zeros(4)}, r"^unexpected state 'extra' \(a batchnorm keeps running_mean, running_var\)$"),
        ({**good, "running_mean": np.zeros(3)}, r"^state 'running_mean' is float64 \(3,\), expected float64 \(4,\)$"),
        ({**good, "running_var": -np.ones(4)}, r"^state 'running_var' holds negative variances$"),
        ({**good, "running_mean": np.full(4, np.nan)}, r"^state 'running_mean' holds non-finite values$"),
    ]:
        with pytest.raises(ValueError, match=message):
            fresh.load_state_dict(bad)
    np.testing.assert_array_equal(fresh.state_dict()["running_mean"], good["running_mean"])  # nothing half-loaded


def test_batchnorm_refuses_to_train_on_one_value_per_channel(registry):
    layer = built(registry, "batchnorm", (3,))
    with pytest.raises(ValueError, match=r"^batch normalization needs more than one value per channel to train"):
        layer.forward(np.ones((1, 3)), True)
    assert layer.forward(np.ones((1, 3)), False).shape == (1, 3)  # inference needs no batch
    assert built(registry, "batchnorm", (3, 2, 1)).forward(np.ones((1, 3, 2, 1)), True).shape == (1, 3, 2, 1)


# --- dropout -------------------------------------------------------------------------------------


def expected_mask(seed: int, x: np.ndarray, rate: float) -> np.ndarray:
    """The mask a dropout built first from ``seed`` draws for ``x``: float32
    uniforms from its spawned generator, laid out in ``x``'s memory order."""
    order = memory_order(x)
    draws = np.random.default_rng(seed).spawn(1)[0].random(tuple(x.shape[a] for a in order), dtype=np.float32)
    keep = draws.transpose(np.argsort(order)) >= np.float32(rate)
    return keep.astype(x.dtype) * x.dtype.type(1 / (1 - rate))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["c-order", "conv output"])
def test_dropout_masks_come_from_the_seed_in_memory_order(registry, dtype, layout):
    rng = np.random.default_rng(10)
    if layout == "conv output":
        x = conv_output(registry, rng, dtype=dtype)
    else:
        x = rng.standard_normal((5, 7)).astype(dtype)
    layer = built(registry, {"type": "dropout", "rate": 0.3}, x.shape[1:], dtype, seed=11)
    mask = expected_mask(11, x, 0.3)
    out = layer.forward(x, True)
    assert out.dtype == dtype and memory_order(out) == memory_order(x)
    np.testing.assert_array_equal(out, x * mask)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, dout * mask)
    assert dx.dtype == dtype
    assert not np.array_equal(layer.forward(x, True), out)  # the next step draws a new mask


def test_dropout_resumes_its_masks_from_the_state(registry):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    first = built(registry, "dropout", (6,), np.float32, seed=3)
    first.forward(x, True)
    state = first.state_dict()
    assert set(state) == {"rng"} and state["rng"].dtype == np.uint8
    following = [first.forward(x, True).copy() for _ in range(2)]
    resumed = built(registry, "dropout", (6,), np.float32, seed=99)
    resumed.load_state_dict(state)
    assert all(np.array_equal(resumed.forward(x, True), expected) for expected in following)
    first_output = x * expected_mask(3, x, 0.5)
    np.testing.assert_array_equal(built(registry, "dropout", (6,), np.float32, seed=3).forward(x, True), first_output)
    assert not np.array_equal(built(registry, "dropout", (6,), np.float32, seed=4).forward(x, True), first_output)
    with pytest.raises(ValueError, match=r"^state 'rng' is missing$"):
        resumed.load_state_dict({})
    with pytest.raises(ValueError, match=r"^unexpected state 'mask'"):
        resumed.load_state_dict({**state, "mask": np.zeros(3)})
    with pytest.raises(ValueError, match=r"^a saved generator is a 1-D uint8 array"):
        resumed.load_state_dict({"rng": np.zeros(3)})


def test_dropout_rate_is_observed_on_a_large_batch(registry):
    layer = built(registry, {"type": "dropout", "rate": 0.3}, (500,), np.float32)
    out = layer.forward(np.ones((2000, 500), np.float32), True)
    zeros = float(np.mean(out == 0))
    assert abs(zeros - 0.3) < 0.003  # 10^6 draws: the standard deviation is 4.6e-4
    assert set(np.unique(out).tolist()) == {0.0, float(np.float32(1 / 0.7))}
    assert abs(float(out.mean(dtype=np.float64)) - 1) < 0.005


def test_dropout_is_the_identity_in_inference(registry):
    layer = built(registry, {"type": "dropout", "rate": 0.9}, (4,))
    x = np.random.default_rng(13).standard_normal((3, 4))
    state = layer.state_dict()["rng"]
    assert layer.forward(x, False) is x
    dout = np.ones((3, 4))
    assert layer.backward(dout) is dout
    np.testing.assert_array_equal(layer.state_dict()["rng"], state)  # nothing drawn
    assert not np.array_equal(layer.forward(x, True), x)


# --- global average pooling ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "conv output"])
def test_global_avg_pool_matches_loop_reference(registry, layout):
    rng = np.random.default_rng(14)
    x = conv_output(registry, rng) if layout == "conv output" else rng.standard_normal((3, 2, 4, 5))
    layer = built(registry, "global_avg_pool", x.shape[1:])
    out = layer.forward(x, True)
    np.testing.assert_allclose(out, ref.global_avg_pool_forward(x), rtol=1e-12, atol=1e-15)
    # a batch-last input gives a batch-innermost output, a C-order one a C-order output
    assert out.flags.f_contiguous if layout == "conv output" else out.flags.c_contiguous
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, ref.global_avg_pool_backward(x, dout), rtol=1e-12, atol=1e-15)
    assert memory_order(dx) == memory_order(x)
    np.testing.assert_allclose(layer.forward(x, False), out, rtol=0, atol=0)


# --- hyperparameters and shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "dropout", "rate": 1}, "'rate' must be less than 1, got 1"),
        ({"type": "dropout", "rate": -0.1}, "'rate' must be at least 0, got -0.1"),
        ({"type": "dropout", "rate": "half"}, "'rate' must be a number, got 'half' (str)"),
        ({"type": "batchnorm", "momentum": 2}, "'momentum' must be at most 1, got 2"),
        ({"type": "batchnorm", "momentum": -1}, "'momentum' must be at least 0, got -1"),
        ({"type": "batchnorm", "eps": 0}, "'eps' must be greater than 0, got 0"),
        ({"type": "batchnorm", "affine": 1}, "'affine' must be true or false, got 1 (int)"),
        ({"type": "global_avg_pool", "size": 2}, "unknown key 'size' (allowed: none)"),
    ],
)
def test_bad_hyperparameters_are_one_clear_line(registry, spec, message):
    with pytest.raises(laminae.SpecError) as caught:
        registry.create("layers", spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_global_avg_pool_refuses_features_in_one_line(registry):
    spec = {
        "input": [10], "layers": [{"type": "affine", "units": 4}, {"type": "global_avg_pool"}],
        "loss": "softmax_cross_entropy", "optimizer": "sgd",
    }
    with pytest.raises(laminae.ShapeError) as caught:
        laminae.build(spec, registry=registry)
    assert str(caught.value) == (
        "<dict>: model 'model', layer 1 (global_avg_pool): expects a (channels, height, width) input, got (4,)"
    )


# --- PyTorch's numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["features", "nchw", "conv output"])
def test_batchnorm_and_pooling_agree_with_pytorch(registry, layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    shape = (6, 4) if layout == "features" else (5, 3, 4, 3)
    torch_bn = (torch.nn.BatchNorm1d if layout == "features" else torch.nn.BatchNorm2d)(shape[1], momentum=0.2).double()
    layer = built(registry, {"type": "batchnorm", "momentum": 0.2}, shape[1:])
    random_affine(layer, rng)
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(layer.params["gamma"]))
        torch_bn.bias.copy_(torch.from_numpy(layer.params["beta"]))
    for step in range(3):
        x = rng.standard_normal(shape) * (1 + step) - step
        x = batch_last(x) if layout == "conv output" else x
        dout = rng.standard_normal(shape)
        tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
        torch_bn.train()
        torch_bn.zero_grad()
        t_out = torch_bn(tx)
        t_out.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(layer.forward(x, True), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.grads["gamma"], torch_bn.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads["beta"], torch_bn.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    state = layer.state_dict()
    np.testing.assert_allclose(state["running_mean"], torch_bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(state["running_var"], torch_bn.running_var.numpy(), rtol=1e-12)
    torch_bn.eval()
    x = rng.standard_normal(shape)
    with torch.no_grad():
        expected = torch_bn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(layer.forward(x, False), expected, rtol=1e-10, atol=1e-12)

    if layout == "features":
        return
    pool = built(registry, "global_avg_pool", shape[1:])
    x = batch_last(x) if layout == "conv output" else x
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    t_out = torch.nn.AdaptiveAvgPool2d(1)(tx).flatten(1)
    dout = rng.standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(pool.forward(x, True), t_out.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pool.backward(dout), tx.grad.numpy(), rtol=1e-12, atol=1e-15)


# --- ONNX export -----------------------------------------------------------------------------------

CONV_NET = [
    {"type": "conv", "filters": 4, "size": 3, "pad": 1},
    {"type": "batchnorm", "eps": 1e-3},
    {"type": "relu"},
    {"type": "global_avg_pool"},
    {"type": "affine", "units": 10},
]


def dense_net(affine: bool) -> list[dict]:
    return [
        {"type": "affine", "units": 16},
        {"type": "batchnorm", "affine": affine, "momentum": 0.5, "eps": 0.01},
        {"type": "dropout", "rate": 0.3},
        {"type": "affine", "units": 10},
    ]


@pytest.mark.parametrize(
    "layers, ops",
    [
        (CONV_NET, ["Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]),
        (dense_net(True), ["Flatten", "Gemm", "BatchNormalization", "Gemm"]),
        (dense_net(False), ["Flatten", "Gemm", "BatchNormalization", "Gemm"]),
    ],
    ids=["conv-batchnorm-relu-gap-affine", "affine-batchnorm-dropout-affine", "affine-batchnorm(affine=false)-dropout"],
)
def test_exported_model_answers_as_predict_proba(registry, tmp_path, layers, ops):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    spec = {
        "input": [1, 8, 8], "layers": layers, "loss": "softmax_cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.5}, "train": {"batch_size": 32},
    }
    rng = np.random.default_rng(16)
    x, y = rng.random((32, 1, 8, 8), dtype=np.float32) * 2, rng.integers(0, 10, 32)
    model = laminae.build(spec, registry=registry)
    model.fit(x, y, epochs=1, progress=False)  # one step: running averages away from 0 and 1
    state = model.network.state_dict()
    index = [layer["type"] for layer in layers].index("batchnorm")
    assert np.abs(state[f"{index}.running_mean"]).max() > 1e-3
    assert np.abs(state[f"{index}.running_var"] - 1).max() > 1e-3

    path = model.export_onnx(tmp_path / "model.onnx")
    exported = onnx.load(path)
    assert [node.op_type for node in exported.graph.node] == [*ops, "Softmax", "Identity"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = rng.random((20, 1, 8, 8), dtype=np.float32) * 2
    probabilities = session.run(["probabilities"], {"images": test})[0]
    expected = model.predict_proba(test)
    assert probabilities.shape == expected.shape == (20, 10)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    # the inference path, not the batch's statistics: one image alone answers the same
    np.testing.assert_allclose(session.run(["probabilities"], {"images": test[:1]})[0], expected[:1], rtol=0, atol=1e-5)


def test_a_checkpoint_keeps_both_states(registry, tmp_path):
    spec = {
        "input": [6], "layers": dense_net(True), "loss": "softmax_cross_entropy", "optimizer": "sgd",
        "train": {"batch_size": 8},
    }
    rng = np.random.default_rng(17)
    model = laminae.build(spec, registry=registry)
    model.fit(rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 10, 16), epochs=1, progress=False)
    loaded = laminae.load(model.save(tmp_path / "model.npz"), registry=registry)
    saved, restored = model.network.state_dict(), loaded.network.state_dict()
    assert set(saved) == set(restored) == {"1.running_mean", "1.running_var", "2.rng"}
    assert all(np.array_equal(saved[name], restored[name]) for name in saved)
    test = rng.standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))


@pytest.mark.parametrize("shape, first", [((2, 6, 6), {"type": "conv", "filters": 3, "size": 3}), ((5,), {"type": "affine", "units": 4})])
def test_a_relu_run_inside_batchnorm_gives_the_same_bits(registry, shape, first):
    """absorb_next: the ReLU after a batchnorm runs in its output buffer; the
    numbers, gradients and running averages are those of the two layers apart."""
    layers = [first, {"type": "batchnorm"}, {"type": "relu"}, {"type": "affine", "units": 3}]
    fused = laminae.Network(layers, shape, registry=registry, input_grad=True)
    apart = laminae.Network(layers, shape, registry=registry, input_grad=True, fuse=False)
    assert fused.absorbed_by == {2: 1} and apart.absorbed_by == {}
    x = np.random.default_rng(0).standard_normal((6, *shape)).astype(np.float32)
    for training in (True, False):
        out = [net.forward(x, training) for net in (fused, apart)]
        assert out[0].tobytes() == out[1].tobytes()
        dx = [net.backward(np.ones_like(out[0])) for net in (fused, apart)]
        assert dx[0].tobytes() == dx[1].tobytes()
        assert all(fused.grads[k].tobytes() == apart.grads[k].tobytes() for k in fused.grads)
    assert all(fused.state_dict()[k].tobytes() == v.tobytes() for k, v in apart.state_dict().items())


def dropout_spec(threads: int) -> dict:
    return {
        "input": [1, 4, 4],
        "layers": [{"type": "affine", "units": 16}, {"type": "relu"}, {"type": "dropout", "rate": 0.4}, {"type": "affine", "units": 3}],
        "loss": "softmax_cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"dataset": "mnist-sample", "epochs": 3, "batch_size": 16, "threads": threads},
    }


def test_each_slice_draws_its_own_dropout_masks(registry):
    """to_slice(k) moves a copy to the k-th stream; 0 leaves it where it was."""
    layers = [laminae.Network([{"type": "dropout", "rate": 0.5}], (64,), registry=registry).layers[0] for _ in range(3)]
    state = layers[0].state_dict()
    for layer in layers[1:]:
        layer.load_state_dict(state)
    layers[2].to_slice(1)
    x = np.ones((4, 64), np.float32)
    masks = [layer.forward(x, True).copy() for layer in layers]
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    combined = layers[0].combine_states([layer.state_dict() for layer in layers], [0.4, 0.3, 0.3])
    assert combined["rng"].tobytes() == layers[0].state_dict()["rng"].tobytes()


def test_dropout_trains_in_slices_and_resumes_bit_for_bit(registry, tmp_path, monkeypatch):
    from laminae.training import loop
    from tests.training_helpers import LossSpy, params_equal, tiny_data

    x, y = tiny_data()
    reference = laminae.build(dropout_spec(2), registry=registry)
    reference.fit(x, y, progress=False, run_dir=tmp_path / "reference")
    stopped = laminae.build(dropout_spec(2), registry=registry)
    stopped.loss = LossSpy(stopped.loss, at=9)  # epoch 2, batch 3
    assert stopped.fit(x, y, progress=False, run_dir=tmp_path / "run").interrupted
    resumed, state = laminae.load_training(tmp_path / "run", registry=registry)
    resumed.fit(x, y, progress=False, run_dir=tmp_path / "run", resume=state)
    assert params_equal(resumed.network, reference.network)
    assert resumed.network.state_dict()["2.rng"].tobytes() == reference.network.state_dict()["2.rng"].tobytes()

    monkeypatch.setattr(loop, "forking_works", lambda: False)  # threads instead of worker processes: the same bits
    threaded = laminae.build(dropout_spec(2), registry=registry)
    threaded.fit(x, y, progress=False)
    assert params_equal(threaded.network, reference.network)
    one = laminae.build(dropout_spec(1), registry=registry)
    one.fit(x, y, progress=False)
    assert not params_equal(one.network, reference.network)  # the slices drew other masks than one stream
