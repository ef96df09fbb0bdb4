"""What check_layer cannot see: dropout's training mode is random by design."""
import numpy as np

import laminae
from laminae_extras import Dropout


def built(rate, seed=0):
    layer = Dropout(rate=rate)
    layer.build((1000,), laminae.BuildContext(rng=np.random.default_rng(seed)))
    return layer


def test_inference_is_the_identity():
    x = np.ones((2, 1000), dtype=np.float32)
    assert built(0.5).forward(x, training=False) is x


def test_training_drops_about_rate_and_keeps_the_mean():
    x = np.ones((4, 1000), dtype=np.float32)
    out = built(0.3).forward(x, training=True)
    assert out.dtype == np.float32
    assert abs(np.mean(out == 0) - 0.3) < 0.03
    assert abs(out.mean() - 1.0) < 0.05


def test_backward_uses_the_forward_mask():
    layer = built(0.5)
    out = layer.forward(np.ones((2, 1000)), training=True)
    np.testing.assert_array_equal(layer.backward(np.ones((2, 1000))), out)


def test_masks_follow_the_build_seed():
    x = np.ones((2, 1000))
    assert np.array_equal(built(0.5, seed=1).forward(x, True), built(0.5, seed=1).forward(x, True))
    assert not np.array_equal(built(0.5, seed=1).forward(x, True), built(0.5, seed=2).forward(x, True))
