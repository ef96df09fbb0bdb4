"""What check_optimizer cannot see: Lion's steps are signs, all of size lr."""
import numpy as np

from laminae_extras import Lion


def test_every_weight_moves_by_exactly_lr():
    w = np.array([5.0, -1.0, 0.25])
    params, grads = {"w": w.copy()}, {"w": np.array([1e-6, -30.0, 2.0])}
    Lion(lr=0.01).step(params, grads)
    np.testing.assert_allclose(params["w"], w - 0.01 * np.sign(grads["w"]))


def test_the_momentum_can_outvote_the_gradient():
    params, grads = {"w": np.zeros(1)}, {"w": np.ones(1)}
    lion = Lion(lr=0.1, beta1=0.9, beta2=0.5)
    lion.step(params, grads)  # m = 0.5
    grads["w"][...] = -2.0  # sign(0.9 * 0.5 + 0.1 * -2) = sign(0.25) = +1
    lion.step(params, grads)
    np.testing.assert_allclose(params["w"], [-0.2])


def test_weight_decay_is_decoupled():
    params, grads = {"w": np.array([2.0])}, {"w": np.array([0.0])}
    Lion(lr=0.1, weight_decay=0.5).step(params, grads)
    np.testing.assert_allclose(params["w"], [2.0 * (1 - 0.1 * 0.5)])  # sign(0) = 0: the decay alone
