"""Every built-in layer and loss against the conformance kit, in float64."""
import numpy as np
import pytest

import laminae
from laminae.plugins.affine import weight_gradient
from laminae.plugins.reference import loops as ref
from laminae.testing import ConformanceError, check_layer, check_loss

LAYER_CASES = [
    ("affine", {"units": 4}, (5,)),
    ("affine", {"units": 3, "bias": False}, (2, 3, 2)),
    ("affine", {"units": 3, "init": {"type": "normal", "std": 0.5}}, (4,)),
    ("relu", {}, (2, 3, 4)),
    ("sigmoid", {}, (7,)),
    ("flatten", {}, (2, 3, 4)),
    ("conv", {"filters": 3, "size": 3}, (2, 6, 5)),
    ("conv", {"filters": 2, "size": 3, "stride": 2, "pad": 1}, (3, 7, 6)),
    ("pool", {"size": 2}, (2, 4, 6)),
    ("pool", {"size": 3, "stride": 2, "mode": "avg"}, (2, 7, 5)),
    ("pool", {"size": 2, "stride": 1, "mode": "max"}, (1, 5, 4)),
]


@pytest.mark.parametrize("type_name, options, input_shape", LAYER_CASES)
def test_builtin_layer_conforms(registry, type_name, options, input_shape):
    layer = registry.create("layers", {"type": type_name, **options})
    check_layer(layer, input_shape, registry=registry, name=type_name)


@pytest.mark.parametrize(
    "options, input_shape",
    [({"type": "affine", "units": 3}, (2, 2, 2)), ({"type": "affine", "units": 2, "bias": False}, (5,))],
)
def test_affine_matches_loop_reference(registry, options, input_shape):
    rng = np.random.default_rng(14)
    layer = registry.create("layers", options)
    layer.build(input_shape, laminae.BuildContext(rng=rng, dtype=np.float64, registry=registry))
    if "b" in layer.params:
        layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape)
    x = rng.standard_normal((3, *input_shape))
    out = layer.forward(x, True)
    np.testing.assert_allclose(out, ref.affine_forward(x, layer.params["W"], layer.params.get("b")), rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx_ref, dw_ref, db_ref = ref.affine_backward(x, layer.params["W"], dout)
    np.testing.assert_allclose(layer.backward(dout), dx_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-12, atol=1e-15)
    if "b" in layer.grads:
        np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("type_name", ["relu", "sigmoid"])
def test_activations_match_loop_reference(registry, type_name):
    rng = np.random.default_rng(15)
    layer = registry.create("layers", type_name)
    layer.build((2, 3), laminae.BuildContext(rng=rng, dtype=np.float64, registry=registry))
    x = rng.standard_normal((4, 2, 3)) * 5
    forward, backward = getattr(ref, f"{type_name}_forward"), getattr(ref, f"{type_name}_backward")
    np.testing.assert_allclose(layer.forward(x, True), forward(x), rtol=1e-12, atol=1e-15)
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dout), backward(x, dout), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("type_name", ["softmax_cross_entropy", "quadratic"])
def test_builtin_loss_conforms(registry, type_name):
    check_loss(registry.create("losses", type_name), name=type_name)


def test_kit_catches_a_wrong_gradient(registry):
    """The kit must be able to fail: a ReLU whose backward forgets its mask."""
    relu_cls = registry.get("layers", "relu")

    class LeakyBackward(relu_cls):
        def backward(self, dout):
            return dout

    with pytest.raises(ConformanceError, match=r"layer broken: input gradient \(float64, training\): analytic"):
        check_layer(LeakyBackward(), (6,), name="broken")


def test_kit_catches_a_wrong_shape(registry):
    flatten_cls = registry.get("layers", "flatten")

    class Liar(flatten_cls):
        def build(self, input_shape, ctx):
            super().build(input_shape, ctx)
            return (1,)

    with pytest.raises(ConformanceError, match=r"inferred shape: build\(\) said \(1,\) per sample but forward gave \(6,\)"):
        check_layer(Liar(), (2, 3), name="liar")


def test_kit_catches_float64_leak(registry):
    sigmoid_cls = registry.get("layers", "sigmoid")

    class Upcaster(sigmoid_cls):
        def forward(self, x, training):
            return super().forward(x.astype(np.float64), training)

    with pytest.raises(ConformanceError, match="float32 stays float32"):
        check_layer(Upcaster(), (3,), name="upcaster")


def test_softmax_cross_entropy_is_stable_for_huge_logits(registry):
    loss = registry.create("losses", "softmax_cross_entropy")
    logits = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    assert loss.forward(logits, np.array([0])) == pytest.approx(0.0, abs=1e-6)
    assert loss.forward(logits, np.array([2])) == pytest.approx(2000.0, rel=1e-6)
    assert np.all(np.isfinite(loss.backward()))


def test_sigmoid_does_not_overflow(registry):
    layer = registry.create("layers", "sigmoid")
    out = layer.forward(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32), False)
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_hyperparameters_are_refused(registry, value):
    from laminae.errors import SpecError

    with pytest.raises(SpecError, match="'lr' must be finite"):
        registry.create("optimizers", {"type": "sgd", "lr": value})


def test_plugin_that_registers_nothing_is_failed():
    import types

    import laminae

    registry = laminae.make_registry(plugins=[types.ModuleType("empty")], autoload=False)
    info = next(p for p in registry.plugins if p.name == "empty")
    assert (info.status, info.reason) == ("failed", "registers nothing (no laminae hook in it registered a class)")


def test_sgd_decay_follows_the_inverse_time_schedule_and_resumes(registry):
    """Step t moves by lr / (1 + decay * t); the count survives a state round trip."""
    sgd = registry.create("optimizers", {"type": "sgd", "lr": 0.5, "decay": 1.0})
    params, grads = {"w": np.zeros(1)}, {"w": np.ones(1)}
    sgd.step(params, grads)
    sgd.step(params, grads)
    np.testing.assert_allclose(params["w"], [-(0.5 + 0.25)])
    resumed = registry.create("optimizers", {"type": "sgd", "lr": 0.5, "decay": 1.0})
    resumed.load_state_dict(sgd.state_dict())
    resumed.step(params, grads)
    np.testing.assert_allclose(params["w"], [-(0.5 + 0.25 + 0.5 / 3)])


def test_sgd_passes_the_optimizer_kit(registry):
    from laminae.testing import check_optimizer

    for options in ({}, {"momentum": 0.9, "nesterov": True, "decay": 0.01, "weight_decay": 1e-4}):
        check_optimizer(registry.create("optimizers", {"type": "sgd", "lr": 0.05, **options}), name="sgd")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_one_sample_weight_gradient_is_the_gemms_to_the_bit(dtype):
    rng = np.random.default_rng(5)
    x, dout = rng.standard_normal((1, 784)).astype(dtype), rng.standard_normal((1, 300)).astype(dtype)
    fast, gemm = np.empty((784, 300), dtype), np.empty((784, 300), dtype)
    weight_gradient(x, dout, out=fast)
    np.matmul(x.T, dout, out=gemm)
    assert np.array_equal(fast, gemm)


@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_label_smoothing_conforms_and_matches_its_formula(registry, targets):
    """The loss against ``-mean(sum(t * log p))`` with ``t`` built in full,
    and its gradient by the kit's finite differences."""
    loss = registry.create("losses", {"type": "softmax_cross_entropy", "smoothing": 0.2})
    check_loss(loss, name="softmax_cross_entropy")
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((6, 4)) * 3, rng.integers(0, 4, 6)
    t = np.eye(4)[labels] * 0.8 + 0.2 / 4
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    given = labels if targets == "labels" else np.eye(4)[labels]
    assert loss.forward(logits, given) == pytest.approx(-(t * log_p).sum(axis=1).mean(), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (np.exp(log_p) - t) / 6, rtol=1e-12, atol=1e-15)


def test_label_smoothing_agrees_with_pytorch(registry):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((8, 10)) * 4, rng.integers(0, 10, 8)
    loss = registry.create("losses", {"type": "softmax_cross_entropy", "smoothing": 0.1})
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels), label_smoothing=0.1)
    t_loss.backward()
    assert loss.forward(logits, labels) == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), t_logits.grad.numpy(), rtol=1e-12, atol=1e-15)
