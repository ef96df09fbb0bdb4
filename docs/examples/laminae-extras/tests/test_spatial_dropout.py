"""What check_layer cannot see: spatial dropout's training mode is random by design."""
import numpy as np

import laminae
from laminae_extras import SpatialDropout


def built(rate, shape=(1000, 2, 2), seed=0):
    layer = SpatialDropout(rate=rate)
    layer.build(shape, laminae.BuildContext(rng=np.random.default_rng(seed)))
    return layer


def test_inference_is_the_identity():
    x = np.ones((2, 1000, 2, 2), dtype=np.float32)
    assert built(0.5).forward(x, training=False) is x


def test_training_drops_whole_channels_about_rate_and_keeps_the_mean():
    x = np.ones((4, 1000, 2, 2), dtype=np.float32)
    out = built(0.3).forward(x, training=True)
    assert out.dtype == np.float32
    channels = out.reshape(4, 1000, 4)
    assert np.all(channels == channels[..., :1])  # a channel is dropped or kept whole
    assert abs(np.mean(channels[..., 0] == 0) - 0.3) < 0.03
    assert abs(out.mean() - 1.0) < 0.05


def test_features_are_dropped_one_by_one():
    x = np.ones((4, 1000), dtype=np.float32)
    out = built(0.3, shape=(1000,)).forward(x, training=True)
    assert abs(np.mean(out == 0) - 0.3) < 0.03


def test_backward_uses_the_forward_mask():
    layer = built(0.5)
    out = layer.forward(np.ones((2, 1000, 2, 2)), training=True)
    np.testing.assert_array_equal(layer.backward(np.ones((2, 1000, 2, 2))), out)


def test_masks_follow_the_build_seed():
    x = np.ones((2, 1000, 2, 2))
    assert np.array_equal(built(0.5, seed=1).forward(x, True), built(0.5, seed=1).forward(x, True))
    assert not np.array_equal(built(0.5, seed=1).forward(x, True), built(0.5, seed=2).forward(x, True))
