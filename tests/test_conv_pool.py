"""conv and pool against the loop reference, central differences and their contracts."""
from __future__ import annotations

import numpy as np
import pytest

import laminae
from laminae import testing
from laminae.plugins import conv as conv_module
from laminae.plugins import pool as pool_module
from laminae.plugins.activations import ReLU
from laminae.plugins.conv import Conv
from laminae.plugins.gemm import skinny
from laminae.buffers import Recycler
from laminae.plugins.pool import Pool
from laminae.testing import check_layer

from laminae.plugins.reference import loops as ref


def small_normal(shape, fan_in, fan_out, rng, dtype):
    """An initializer that needs no registry, so these tests stand alone."""
    return rng.normal(0.0, 0.5, shape).astype(dtype)


def build(layer, input_shape, dtype=np.float64, seed=0, registry=None):
    ctx = laminae.BuildContext(rng=np.random.default_rng(seed), dtype=dtype, registry=registry)
    return layer.build(tuple(input_shape), ctx)


def make_conv(filters, size, **kwargs):
    return Conv(filters=filters, size=size, init=small_normal, **kwargs)


def random_bias(layer, rng):
    if "b" in layer.params:
        layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape)


# (batch, (C, H, W), filters, size, stride, pad, bias)
CONV_CASES = [
    (2, (1, 5, 5), 2, 3, 1, 0, True),
    (2, (3, 7, 9), 4, 3, 2, 1, True),  # non-square, stride and pad together
    (1, (2, 6, 5), 3, 2, 3, 2, False),  # stride > size: pixels no window sees
    (2, (2, 4, 4), 2, 5, 1, 2, True),  # kernel larger than the unpadded input
    (3, (2, 4, 6), 3, 1, 1, 0, True),  # 1x1 kernel
    (2, (2, 3, 4), 2, 2, 1, 3, True),  # pad wider than the kernel: all-padding windows
    (2, (16, 6, 6), 8, 3, 1, 1, True),  # 8 x 145 weights: the dW product with its sides swapped
]

# (batch, (C, H, W), size, stride)
POOL_CASES = [
    (2, (3, 6, 8), 2, 2),  # tiles exactly: the write-once backward
    (2, (2, 9, 6), 3, 3),  # tiles exactly with a 3x3 window
    (2, (2, 7, 5), 2, 2),  # stride == size but an odd edge is left over
    (2, (2, 7, 9), 3, 2),  # overlapping windows
    (1, (3, 7, 7), 2, 3),  # gaps between windows
    (2, (1, 4, 5), 1, 1),  # identity
]


@pytest.mark.parametrize("batch, shape, filters, size, stride, pad, bias", CONV_CASES)
def test_conv_matches_loop_reference(batch, shape, filters, size, stride, pad, bias):
    rng = np.random.default_rng(1)
    layer = make_conv(filters, size, stride=stride, pad=pad, bias=bias)
    out_shape = build(layer, shape)
    random_bias(layer, rng)
    x = rng.standard_normal((batch, *shape))
    b = layer.params.get("b")

    out = layer.forward(x, True)
    expected = ref.conv_forward(x, layer.params["W"], b, stride, pad)
    assert out.shape == (batch, *out_shape) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)

    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dx_ref, dw_ref, db_ref = ref.conv_backward(x, layer.params["W"], stride, pad, dout)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-10, atol=1e-12)
    else:
        assert set(layer.params) == set(layer.grads) == {"W"}


@pytest.mark.parametrize("batch, shape, filters, size, stride, pad, bias", CONV_CASES)
def test_conv_split_gemms_match_loop_reference(monkeypatch, batch, shape, filters, size, stride, pad, bias):
    """The stacked-matmul GEMMs that small convs use on big batches, forced on small shapes."""
    used = []

    def split(small, length, limit, work):
        used.append(next(pieces for pieces in (3, 2, 1) if length % pieces == 0))
        return used[-1]

    monkeypatch.setattr(skinny, "piece_count", split)
    rng = np.random.default_rng(12)
    layer = make_conv(filters, size, stride=stride, pad=pad, bias=bias)
    build(layer, shape)
    random_bias(layer, rng)
    x = rng.standard_normal((batch, *shape))
    out = layer.forward(x, True)
    expected = ref.conv_forward(x, layer.params["W"], layer.params.get("b"), stride, pad)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dx_ref, dw_ref, db_ref = ref.conv_backward(x, layer.params["W"], stride, pad, dout)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-10, atol=1e-12)
    assert len(used) == 2 and max(used) > 1


def test_conv_splits_only_skinny_gemms():
    assert skinny.piece_count(6 * 26, 50176, 512, 500_000) == 16
    assert skinny.piece_count(30 * 26, 57600, 512, 500_000) == 1
    assert skinny.piece_count(30 * 26, 57600, 1024, 500_000) > 1
    assert skinny.piece_count(16 * 151, 6400, 1024, 500_000) == 1
    assert skinny.piece_count(6, 10, 512, 500_000) == 1
    assert skinny.piece_count(6, 10, 512, 1) == 10  # never more pieces than columns


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("batch, shape, size, stride", POOL_CASES)
def test_pool_matches_loop_reference(batch, shape, size, stride, mode):
    rng = np.random.default_rng(2)
    layer = Pool(size=size, stride=stride, mode=mode)
    out_shape = build(layer, shape)
    assert layer.params == {} and layer.grads == {}
    x = rng.standard_normal((batch, *shape))

    out = layer.forward(x, True)
    assert out.shape == (batch, *out_shape)
    np.testing.assert_allclose(out, ref.pool_forward(x, size, stride, mode), rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        layer.backward(dout), ref.pool_backward(x, size, stride, mode, dout), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("batch, shape, size, stride", POOL_CASES)
def test_max_pool_sends_ties_to_the_first_maximum(batch, shape, size, stride):
    """ReLU outputs are full of equal zeros; the gradient must go to one of them only."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (batch, *shape)).astype(np.float64)
    layer = Pool(size=size, stride=stride)
    build(layer, shape)
    out = layer.forward(x, False)  # inference forward: backward must still route correctly
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(layer.backward(dout), ref.pool_backward(x, size, stride, "max", dout))


def numerical_gradient(loss, array, eps=1e-6):
    """Central differences of ``loss()`` at every entry of ``array`` (the kit's, over all indices)."""
    return testing.numerical_gradient(loss, array, list(np.ndindex(array.shape)), eps).reshape(array.shape)


def assert_gradients(layer, x, seed=4):
    """Backward's gradients for the input and every parameter equal central differences of sum(out * w)."""
    weights = np.random.default_rng(seed).standard_normal(layer.forward(x, True).shape)

    def loss():
        return float(np.sum(layer.forward(x, True) * weights))

    layer.forward(x, True)
    analytic = {"x": layer.backward(weights.copy()), **{k: g.copy() for k, g in layer.grads.items()}}
    arrays = {"x": x, **layer.params}
    assert set(analytic) == set(arrays)
    for name, array in arrays.items():
        np.testing.assert_allclose(analytic[name], numerical_gradient(loss, array), rtol=1e-6, atol=1e-8,
                                   err_msg=f"gradient of {name}")


@pytest.mark.parametrize("shape, kwargs", [
    ((2, 5, 6), dict(filters=3, size=3, stride=2, pad=1)),
    ((1, 4, 4), dict(filters=2, size=2, bias=False)),
])
def test_conv_numerical_gradient(shape, kwargs):
    rng = np.random.default_rng(5)
    layer = make_conv(**kwargs)
    build(layer, shape)
    random_bias(layer, rng)
    assert_gradients(layer, rng.standard_normal((2, *shape)))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2)])
def test_pool_numerical_gradient(mode, size, stride):
    layer = Pool(size=size, stride=stride, mode=mode)
    build(layer, (2, 5, 6))
    assert_gradients(layer, np.random.default_rng(6).standard_normal((2, 2, 5, 6)))


LAYERS = [
    (lambda: make_conv(3, 3, stride=2, pad=1), (2, 7, 6)),
    (lambda: Pool(size=2), (3, 6, 8)),
    (lambda: Pool(size=3, stride=2, mode="avg"), (3, 7, 8)),
]


@pytest.mark.parametrize("make, shape", LAYERS)
def test_float32_stays_float32(make, shape):
    layer = make()
    build(layer, shape, np.float32)
    x = np.random.default_rng(7).standard_normal((4, *shape)).astype(np.float32)
    out = layer.forward(x, True)
    dx = layer.backward(np.ones_like(out))
    assert out.dtype == dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in (*layer.params.values(), *layer.grads.values()))


def test_float32_conv_is_accurate_and_casts_float64_input_down():
    rng = np.random.default_rng(11)
    layer = make_conv(3, 3, stride=2, pad=1)
    build(layer, (2, 7, 6), np.float32)
    random_bias(layer, rng)
    x = rng.standard_normal((3, 2, 7, 6))
    expected = ref.conv_forward(x, layer.params["W"], layer.params["b"], 2, 1)
    for given in (x.astype(np.float32), x):
        out = layer.forward(given, True)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make, shape", LAYERS)
def test_inputs_are_not_modified(make, shape):
    rng = np.random.default_rng(8)
    layer = make()
    build(layer, shape)
    x = rng.standard_normal((2, *shape))
    x_before = x.copy()
    out = layer.forward(x, True)
    dout = rng.standard_normal(out.shape)
    dout_before = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dout, dout_before)


@pytest.mark.parametrize("make, shape", LAYERS)
def test_changing_batch_size_between_calls(make, shape):
    """Buffers are reused for one batch shape and replaced for another, never mixed up."""
    rng = np.random.default_rng(9)
    layer, fresh = make(), make()
    build(layer, shape)
    build(fresh, shape)
    batches = [rng.standard_normal((n, *shape)) for n in (3, 3, 1, 3)]
    results = []
    for x in batches:
        out = layer.forward(x, True)
        results.append((out, layer.backward(np.ones_like(out))))
    for x, (out, dx) in zip(batches, results):
        np.testing.assert_array_equal(fresh.forward(x, True), out)
        np.testing.assert_array_equal(fresh.backward(np.ones_like(out)), dx)


@pytest.mark.parametrize("make, shape", [*LAYERS, (lambda: ReLU(), (3, 6, 8))])
def test_returned_arrays_are_never_reused_while_referenced(make, shape):
    """Outputs and input gradients come from a Recycler: memory is handed out
    again only once nothing refers to it, views included."""
    rng = np.random.default_rng(13)
    layer = make()
    build(layer, shape)
    held = []
    for step in range(4):
        x = rng.standard_normal((2, *shape))
        out = layer.forward(x, True)
        dx = layer.backward(np.ones_like(out))
        held.append((out[:1], dx.T, out.copy(), dx.copy()))  # views keep the memory referenced
        del out, dx
    for view_out, view_dx, copy_out, copy_dx in held:
        np.testing.assert_array_equal(view_out, copy_out[:1])
        np.testing.assert_array_equal(view_dx, copy_dx.T)


def test_recycler_reuses_only_unreferenced_memory():
    recycler = Recycler()
    first = recycler.empty((3, 4), np.float32)
    second = recycler.empty((3, 4), np.float32)
    assert not np.shares_memory(first, second)
    view = first.T
    del first
    third = recycler.empty((4, 3), np.float32)  # the first block is still seen through the view
    assert not np.shares_memory(third, view) and not np.shares_memory(third, second)
    address = second.__array_interface__["data"][0]
    del second
    again = recycler.empty((2, 6), np.float32, order=(1, 0))  # same bytes, any shape and order
    assert again.__array_interface__["data"][0] == address
    assert again.shape == (2, 6) and again.strides == (4, 8)


def test_col2im_adds_with_a_buffer_no_longer_than_its_rows_and_restores_numpys(monkeypatch):
    """The shortened ufunc buffer is a speed setting only: the gradient still
    matches the loop reference, and numpy's own setting comes back."""
    rng = np.random.default_rng(11)
    layer = make_conv(3, 3)
    build(layer, (2, 10, 10))
    x = rng.standard_normal((8, 2, 10, 10))
    dout = rng.standard_normal(layer.forward(x, True).shape)
    sizes = []
    real = np.setbufsize
    monkeypatch.setattr(np, "setbufsize", lambda size: sizes.append(size) or real(size))
    previous = real(4096)
    try:
        dx = layer.backward(dout)
        assert np.getbufsize() == 4096
    finally:
        real(previous)
    assert sizes == [64, 4096]  # rows of OW * N = 8 * 8 numbers, then numpy's setting back
    np.testing.assert_allclose(dx, ref.conv_backward(x, layer.params["W"], 1, 0, dout)[0], rtol=1e-10, atol=1e-12)


def test_col2im_restores_numpys_buffer_size_when_an_add_fails():
    from laminae.plugins.windows.im2col import col2im

    cols = np.ones((1, 1, 4, 1, 3, 16))
    dx = np.zeros((4, 1, 3, 15))  # one column short: the add cannot broadcast
    every = slice(None)
    before = np.getbufsize()
    with pytest.raises(ValueError):
        col2im(cols, dx, [((0, 0, every, every, every, every), (every, every, every, every))])
    assert np.getbufsize() == before


@pytest.mark.parametrize(
    "array, run",
    [
        (np.zeros((3, 4, 5)), 60),
        (np.zeros((3, 4, 5))[:, 1:3], 10),
        (np.zeros((3, 4, 5))[:, :, ::2], 1),
        (np.zeros((3, 4, 5)).transpose(2, 0, 1), 60),
        (np.zeros((6, 1, 7))[::2], 7),
    ],
)
def test_contiguous_run_counts_the_innermost_stretch(array, run):
    from laminae.plugins.windows.im2col import _contiguous_run

    assert _contiguous_run(array.shape, array.strides, array.itemsize) == run


def test_conv_reuses_its_column_buffer():
    layer = make_conv(2, 3)
    build(layer, (1, 6, 6))
    x = np.random.default_rng(10).standard_normal((4, 1, 6, 6))
    layer.forward(x, True)
    cols = layer._cols
    layer.forward(x, True)
    assert layer._cols is cols


def test_conv_output_and_parameter_shapes():
    layer = make_conv(4, 3, stride=2, pad=1)
    assert build(layer, (2, 7, 9)) == (4, 4, 5)
    assert layer.params["W"].shape == (4, 2, 3, 3) and layer.params["b"].shape == (4,)
    assert layer.params["W"].dtype == np.float64


def test_pool_stride_defaults_to_size():
    assert Pool(size=3).stride == 3
    assert Pool(size=3, stride=1).stride == 1
    assert Pool().size == Pool().stride == 2


@pytest.mark.parametrize("make, shape, words", [
    (lambda: make_conv(2, 3), (784,), ["(channels, height, width)", "(784,)"]),
    (lambda: make_conv(2, 5), (1, 3, 3), ["5x5", "pad 0", "(1, 3, 3)"]),
    (lambda: make_conv(2, 5, pad=1), (1, 9, 2), ["5x5", "pad 1", "(1, 9, 2)"]),
    (lambda: Pool(size=2), (4, 5), ["(channels, height, width)", "(4, 5)"]),
    (lambda: Pool(size=4), (2, 3, 8), ["4x4", "(2, 3, 8)"]),
])
def test_shape_errors_name_both_shapes(make, shape, words):
    with pytest.raises(laminae.ShapeError) as info:
        build(make(), shape)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("make, error, field", [
    (lambda: Conv(filters=0, size=3), ValueError, "filters"),
    (lambda: Conv(filters=True, size=3), TypeError, "filters"),
    (lambda: Conv(filters=2.0, size=3), TypeError, "filters"),
    (lambda: Conv(filters=2, size=0), ValueError, "size"),
    (lambda: Conv(filters=2, size=3, stride=0), ValueError, "stride"),
    (lambda: Conv(filters=2, size=3, pad=-1), ValueError, "pad"),
    (lambda: Conv(filters=2, size=3, bias=1), TypeError, "bias"),
    (lambda: Pool(size=0), ValueError, "size"),
    (lambda: Pool(stride=False), TypeError, "stride"),
    (lambda: Pool(mode="median"), ValueError, "mode"),
])
def test_validators_name_the_field(make, error, field):
    with pytest.raises(error, match=f"'{field}'"):
        make()


def test_both_layers_are_registered():
    registered = {}
    conv_module.register_layers(register=registered.__setitem__)
    pool_module.register_layers(register=registered.__setitem__)
    assert registered == {"conv": Conv, "pool": Pool}


def test_default_he_init_draws_from_the_registry(registry):
    layer = Conv(filters=8, size=3)
    build(layer, (4, 5, 5), registry=registry)
    weights = layer.params["W"]
    assert weights.shape == (8, 4, 3, 3)
    assert 0.5 < weights.std() / np.sqrt(2 / (4 * 9)) < 1.5


@pytest.mark.parametrize("layer, shape", [
    (Conv(filters=3, size=3, stride=2, pad=1), (2, 7, 6)),
    (Conv(filters=2, size=2, bias=False), (1, 4, 5)),
    (Pool(size=2), (2, 4, 6)),
    (Pool(size=3, stride=2), (2, 7, 5)),
    (Pool(size=2, mode="avg"), (2, 5, 4)),
])
def test_conformance_kit(layer, shape, registry):
    check_layer(layer, shape, registry=registry)


def test_col2im_of_an_empty_batch_adds_nothing():
    from laminae.plugins.windows.geometry import kernel_offsets
    from laminae.plugins.windows.im2col import col2im

    dx = np.zeros((0, 2, 5, 5))
    col2im(np.zeros((3, 3, 0, 2, 3, 3)), dx, kernel_offsets((5, 5), (3, 3), 3, 1, 0))
    assert dx.shape == (0, 2, 5, 5)
