"""flip_average: training is its layers' own; inference averages an image's
scores with its mirror's, with a gradient to match, and exports to ONNX."""
from __future__ import annotations

import numpy as np
import pytest

import laminae
from laminae.plugins.flip_average import FlipAverage
from laminae.testing import check_layer
from tests.training_helpers import onnx_probabilities

CONV = {"type": "conv", "filters": 3, "size": 3, "pad": 1}
INNER = [CONV, {"type": "batchnorm"}, {"type": "relu"}, {"type": "affine", "units": 4}]


def spec(layers: list, input_shape=(2, 5, 6)) -> dict:
    return {"input": list(input_shape), "layers": layers, "loss": "softmax_cross_entropy", "optimizer": "sgd"}


def pair(registry, dtype="float64", shift=0):
    """The same layers bare and wrapped, with the same parameters drawn."""
    bare = laminae.build(spec(INNER), registry=registry, dtype=dtype)
    wrapped = laminae.build(spec([{"type": "flip_average", "layers": INNER, "shift": shift}]), registry=registry, dtype=dtype)
    for name, param in bare.network.params.items():
        assert wrapped.network.params[f"0.{name}"].tobytes() == param.tobytes(), name
    return bare, wrapped


@pytest.mark.parametrize("shift", [0, 1])  # 2 would zero whole 3x3 windows: a ReLU at its kink, no gradient to check
@pytest.mark.parametrize("layers", [INNER, [CONV, {"type": "relu"}, CONV]], ids=["to-scores", "to-images"])
def test_passes_the_conformance_kit(layers, shift, registry):
    check_layer(FlipAverage(layers=layers, shift=shift), (2, 5, 6), registry=registry)


def test_inference_is_the_mean_of_the_image_and_its_mirror(registry):
    bare, wrapped = pair(registry)
    x = np.random.default_rng(0).random((7, 2, 5, 6))
    expected = (bare.network.forward(x) + bare.network.forward(x[..., ::-1].copy())) / 2
    np.testing.assert_allclose(wrapped.network.forward(x), expected, rtol=1e-13, atol=1e-13)
    assert not np.allclose(bare.network.forward(x), expected)  # the mirror does change the scores


def moved(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved ``dy`` rows down and ``dx`` columns right, zeros filling in: by rolling and masking."""
    out = np.roll(x, (dy, dx), axis=(2, 3))
    rows, cols = np.arange(x.shape[2]), np.arange(x.shape[3])
    keep = ((rows - dy >= 0) & (rows - dy < len(rows)))[:, None] & ((cols - dx >= 0) & (cols - dx < len(cols)))[None, :]
    return out * keep


@pytest.mark.parametrize("shift", [1, 2])
def test_a_shift_adds_the_views_moved_each_way(shift, registry):
    bare, wrapped = pair(registry, shift=shift)
    x = np.random.default_rng(5).random((7, 2, 5, 6))
    images = [x, x[..., ::-1]]
    moves = [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    expected = sum(bare.network.forward(moved(image, dy, dx)) for dy, dx in moves for image in images) / 10
    np.testing.assert_allclose(wrapped.network.forward(x), expected, rtol=1e-12, atol=1e-13)
    two = pair(registry)[1].network.forward(x)
    assert not np.allclose(wrapped.network.forward(x), two)  # the moved views do count


def test_a_shift_that_leaves_the_frame_is_one_line(registry):
    with pytest.raises(laminae.ShapeError) as caught:
        laminae.build(spec([{"type": "flip_average", "layers": INNER, "shift": 5}]), registry=registry)
    assert caught.value.message == (
        "<dict>: model 'model', layer 0 (flip_average): shift 5 moves a 5x6 image out of its frame"
    )
    with pytest.raises(laminae.SpecError, match=r"layer 0 \(flip_average\): 'shift' must be at least 0, got -1"):
        laminae.build(spec([{"type": "flip_average", "layers": INNER, "shift": -1}]), registry=registry)


def test_training_is_bit_for_bit_the_bare_layers(registry):
    bare, wrapped = pair(registry, dtype="float32")
    rng = np.random.default_rng(1)
    x, y = rng.random((48, 2, 5, 6), dtype=np.float32), rng.integers(0, 4, 48)
    for model in (bare, wrapped):
        model.fit(x, y, epochs=2, batch_size=16, seed=3, progress=False)
    assert wrapped.network.param_arena.tobytes() == bare.network.param_arena.tobytes()
    state = wrapped.network.state_dict()
    for name, value in bare.network.state_dict().items():  # batch-norm statistics too
        assert state[f"0.{name}"].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("shift", [0, 1])
def test_the_inference_gradient_matches_finite_differences(shift, registry):
    network = laminae.Network([FlipAverage(layers=INNER, shift=shift)], (2, 5, 6), dtype="float64", registry=registry,
                              input_grad=True)
    rng = np.random.default_rng(2)
    x = rng.random((3, 2, 5, 6))
    weights = rng.standard_normal((3, 4))
    layer = network.layers[0]
    layer.forward(x, False)
    dx = layer.backward(weights)
    for index in [(0, 0, 1, 0), (1, 1, 4, 5), (2, 0, 2, 3)]:
        up, down = x.copy(), x.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric = (np.sum(layer.forward(up, False) * weights) - np.sum(layer.forward(down, False) * weights)) / 2e-6
        assert dx[index] == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    name = "0.0.W"  # the conv's kernels: their gradient is the mean of the views'
    layer.forward(x, False)
    layer.backward(weights)
    analytic = network.grads[name].copy()
    param = network.params[name]
    for index in [(0, 0, 1, 2), (2, 1, 0, 0)]:
        keep = param[index]
        param[index] = keep + 1e-6
        up = np.sum(layer.forward(x, False) * weights)
        param[index] = keep - 1e-6
        down = np.sum(layer.forward(x, False) * weights)
        param[index] = keep
        assert analytic[index] == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9)


def test_images_only_in_one_line(registry):
    with pytest.raises(laminae.ShapeError) as caught:
        laminae.build(spec([{"type": "flip_average", "layers": [{"type": "affine", "units": 3}]}], (5,)), registry=registry)
    assert caught.value.message == (
        "<dict>: model 'model', layer 0 (flip_average): mirrors images, so it needs (channels, height, width)"
        " input, got (5,)"
    )


def test_inference_chunks_count_the_layers_inside(registry):
    bare, wrapped = pair(registry, dtype="float32")
    big = laminae.build(spec(INNER, (2, 64, 64)), registry=registry)
    big_wrapped = laminae.build(spec([{"type": "flip_average", "layers": INNER}], (2, 64, 64)), registry=registry)
    assert big_wrapped.network.inference_batch() == big.network.inference_batch() < 1000
    assert wrapped.network.inference_batch() == bare.network.inference_batch()


@pytest.mark.parametrize("shift", [0, 1])
def test_onnx_runs_the_views_as_predict_proba_does(shift, registry, tmp_path):
    _, wrapped = pair(registry, dtype="float32", shift=shift)
    x = np.random.default_rng(4).random((40, 2, 5, 6), dtype=np.float32)
    wrapped.fit(x, np.arange(40) % 4, epochs=1, progress=False)  # running statistics away from their start
    got = onnx_probabilities(wrapped, x, tmp_path)
    np.testing.assert_allclose(got, wrapped.predict_proba(x), atol=1e-6)
    bare_scores = wrapped.network.layers[0]._chain.forward(x, False)
    assert not np.allclose(got, np.exp(bare_scores) / np.exp(bare_scores).sum(1, keepdims=True), atol=1e-4)
