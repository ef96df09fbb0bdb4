"""The built-in Adam and AdamW: PyTorch's numbers, a flat update over the
arenas, a state that checkpoints and resumes to the bit, one-line errors."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import laminae
from laminae.arena import flat_groups, pack
from laminae.plugins.adam import Adam, AdamW
from laminae.testing import cases, check_optimizer
from tests.training_helpers import LossSpy, params_equal, tiny_data, tiny_spec

SHAPES = [(5, 4), (4,), (3, 4, 2), (3,)]
OPTIONS = [
    (Adam, {}),
    (Adam, {"lr": 0.01, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6, "weight_decay": 0.1}),
    (AdamW, {}),
    (AdamW, {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "weight_decay": 0.3}),
]
IDS = ["adam", "adam-l2", "adamw", "adamw-decay"]


def problem(dtype=np.float64, *, packed: bool, seed: int = 0):
    """Parameters of SHAPES and their gradients: laid end to end in one buffer
    each, as a network's arenas are, or as separate arrays."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    names = [f"{i}.p" for i in range(len(SHAPES))]
    if packed:
        _, params = pack(values, np.dtype(dtype))
        _, grads = pack([np.zeros(shape, dtype) for shape in SHAPES], np.dtype(dtype))
    else:
        params, grads = values, [np.zeros(shape, dtype) for shape in SHAPES]
    return dict(zip(names, params)), dict(zip(names, grads))


def gradients(steps: int, dtype=np.float64, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def run(optimizer, params, grads, draws, lrs=None) -> None:
    for step, draw in enumerate(draws):
        for grad, g in zip(grads.values(), draw):
            grad[...] = g
        if lrs is not None:
            optimizer.lr = lrs[step]
        optimizer.step(params, grads)


@pytest.mark.parametrize(
    "case",
    cases(
        "optimizers",
        {
            "adam": [{"lr": 0.05}, {"lr": 0.05, "beta1": 0.5, "beta2": 0.9, "weight_decay": 0.01}],
            "adamw": [{"lr": 0.05}, {"lr": 0.05, "weight_decay": 0.1, "eps": 1e-6}],
        },
    ),
)
def test_conforms(case, registry):
    case.check(registry)


def test_one_liners():
    check_optimizer(Adam(lr=0.05))
    check_optimizer(AdamW(lr=0.05))


def test_defaults_are_pytorchs():
    assert (Adam().lr, Adam().beta1, Adam().beta2, Adam().eps, Adam().weight_decay) == (0.001, 0.9, 0.999, 1e-8, 0.0)
    assert (AdamW().lr, AdamW().weight_decay) == (0.001, 0.01)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beta1": 1.0}, "'beta1' must be less than 1, got 1.0"),
        ({"beta2": -0.1}, "'beta2' must be at least 0, got -0.1"),
        ({"lr": 0}, "'lr' must be greater than 0, got 0"),
        ({"lr": True}, "'lr' must be a number, got True (bool)"),
        ({"eps": 0.0}, "'eps' must be greater than 0, got 0.0"),
        ({"weight_decay": -1}, "'weight_decay' must be at least 0, got -1"),
        ({"betas": [0.9, 0.99]}, "unknown key 'betas'; did you mean 'beta2'? (allowed: lr, beta1, beta2, eps, weight_decay)"),
    ],
)
@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_bad_fields_are_one_line_errors(registry, kind, options, message):
    with pytest.raises(laminae.SpecError) as caught:
        registry.create("optimizers", {"type": kind, **options})
    assert str(caught.value) == message


def test_every_field_is_documented():
    import attrs

    for cls in (Adam, AdamW):
        assert all(field.metadata.get("doc") for field in attrs.fields(cls) if field.init), cls


@pytest.mark.parametrize("cls, options", OPTIONS, ids=IDS)
def test_the_arena_and_separate_arrays_give_the_same_numbers(cls, options):
    """One call per flat buffer, or one per array: the same bits, the same state."""
    flat_params, flat_grads = problem(np.float32, packed=True)
    loose_params, loose_grads = problem(np.float32, packed=False)
    flat, loose = cls(**options), cls(**options)
    draws = gradients(12, np.float32)
    run(flat, flat_params, flat_grads, draws)
    run(loose, loose_params, loose_grads, draws)
    for name in flat_params:
        assert flat_params[name].dtype == np.float32
        assert np.array_equal(flat_params[name], loose_params[name]), name
    flat_state, loose_state = flat.state_dict(), loose.state_dict()
    assert flat_state.keys() == loose_state.keys()
    assert all(np.array_equal(flat_state[key], loose_state[key]) for key in flat_state)
    assert len(flat_groups(flat_params, flat_grads)) == 1 and len(flat_groups(loose_params, loose_grads)) == len(SHAPES)


def test_a_parameter_that_is_not_contiguous_is_updated_too():
    """An array outside any arena, not even contiguous: a group of its own, in its own shape."""
    base = np.random.default_rng(0).standard_normal((4, 6))
    strided, dense = {"w": base[:, ::2]}, {"w": base[:, ::2].copy()}
    rng = np.random.default_rng(2)
    draws = [rng.standard_normal((4, 3)) for _ in range(5)]
    for params in (strided, dense):
        optimizer, grad = AdamW(lr=0.1), np.zeros((4, 3))
        for draw in draws:
            grad[...] = draw
            optimizer.step(params, {"w": grad})
    assert np.array_equal(strided["w"], dense["w"])
    assert np.shares_memory(strided["w"], base) and not np.array_equal(strided["w"], dense["w"] * 0)


@pytest.mark.parametrize("cls, options", OPTIONS, ids=IDS)
def test_the_state_names_each_moment_after_its_parameter(cls, options):
    params, grads = problem(packed=True)
    optimizer = cls(**options)
    fresh = optimizer.state_dict()
    assert list(fresh) == ["steps"] and fresh["steps"].dtype == np.int64 and fresh["steps"].shape == ()
    run(optimizer, params, grads, gradients(3))
    state = optimizer.state_dict()
    assert set(state) == {"steps"} | {f"{kind}/{name}" for kind in ("m", "v") for name in params}
    assert int(state["steps"]) == 3
    for name, param in params.items():
        assert state[f"m/{name}"].shape == state[f"v/{name}"].shape == param.shape
    kept = {key: value.copy() for key, value in state.items()}
    run(optimizer, params, grads, gradients(1))
    assert all(np.array_equal(state[key], kept[key]) for key in state)  # copies, not the moments themselves


@pytest.mark.parametrize("cls, options", OPTIONS, ids=IDS)
@pytest.mark.parametrize("packed", [True, False], ids=["arena", "arrays"])
def test_a_resumed_optimizer_continues_bit_for_bit(cls, options, packed, tmp_path):
    """Stopped after 7 steps, saved through np.savez, loaded into a new instance
    whose parameters lie elsewhere: the next steps give the same bits."""
    draws = gradients(15)
    lrs = [options.get("lr", 0.001) * (1 + math.cos(math.pi * step / 15)) / 2 for step in range(15)]
    reference, reference_grads = problem(packed=packed)
    run(cls(**options), reference, reference_grads, draws, lrs)

    params, grads = problem(packed=packed)
    first = cls(**options)
    run(first, params, grads, draws[:7], lrs[:7])
    np.savez(tmp_path / "state.npz", **first.state_dict())
    resumed = cls(**options)
    with np.load(tmp_path / "state.npz") as archive:
        resumed.load_state_dict(dict(archive))
    saved = first.state_dict()
    assert all(np.array_equal(value, saved[key]) for key, value in resumed.state_dict().items())
    elsewhere, elsewhere_grads = problem(packed=not packed)  # regrouped, the moments copied in
    for name, param in params.items():
        elsewhere[name][...] = param
    run(resumed, elsewhere, elsewhere_grads, draws[7:], lrs[7:])
    assert all(np.array_equal(elsewhere[name], reference[name]) for name in reference)


def reference_adam(shapes_params, draws, lrs, *, beta1, beta2, eps, weight_decay, decoupled):
    """The update as the module docstring writes it, one array at a time."""
    params = {name: p.copy() for name, p in shapes_params.items()}
    m = {name: np.zeros_like(p) for name, p in params.items()}
    v = {name: np.zeros_like(p) for name, p in params.items()}
    for t, (draw, lr) in enumerate(zip(draws, lrs), start=1):
        for (name, p), g in zip(params.items(), draw):
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
            m[name] = beta1 * m[name] + (1 - beta1) * g
            v[name] = beta2 * v[name] + (1 - beta2) * g * g
            p -= (lr / (1 - beta1**t)) * m[name] / (np.sqrt(v[name]) / np.sqrt(1 - beta2**t) + eps)
    return params


@pytest.mark.parametrize("cls, options", OPTIONS, ids=IDS)
def test_a_learning_rate_set_between_steps_is_used(cls, options):
    """A schedule sets ``lr`` before every step: each step uses the rate it finds."""
    draws = gradients(20)
    lrs = list(np.geomspace(0.1, 1e-4, 20))
    params, grads = problem(packed=True)
    start = {name: p.copy() for name, p in params.items()}
    optimizer = cls(**options)
    run(optimizer, params, grads, draws, lrs)
    fields = {"beta1": optimizer.beta1, "beta2": optimizer.beta2, "eps": optimizer.eps, "weight_decay": optimizer.weight_decay}
    expected = reference_adam(start, draws, lrs, decoupled=cls is AdamW, **fields)
    for name in params:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_weight_decay_is_an_l2_term_for_adam_and_decoupled_for_adamw(cls):
    """Adam with weight_decay takes exactly the steps plain Adam takes on the
    gradient plus weight_decay * w; AdamW, those plain Adam takes from weights
    first scaled by 1 - lr * weight_decay, its moments never seeing the decay."""
    params, grads = problem(packed=True)
    twin, twin_grads = problem(packed=True)
    decayed, plain = cls(lr=0.01, weight_decay=0.2), Adam(lr=0.01)
    for draw in gradients(10):
        for name, g in zip(params, draw):
            grads[name][...] = g
            if cls is Adam:
                twin_grads[name][...] = g + 0.2 * twin[name]
            else:
                twin_grads[name][...] = g
                twin[name] *= 1 - 0.01 * 0.2
        decayed.step(params, grads)
        plain.step(twin, twin_grads)
    assert all(np.array_equal(params[name], twin[name]) for name in params)
    if cls is AdamW:
        assert all(np.array_equal(decayed.state_dict()[k], plain.state_dict()[k]) for k in plain.state_dict())


def test_without_gradients_adamw_shrinks_geometrically_and_adam_steps_by_lr():
    """The difference that matters: with a zero gradient AdamW's weights shrink by
    the factor 1 - lr * weight_decay per step, whatever their size, while Adam
    normalises its L2 term like any gradient and moves each weight by about lr."""
    w = np.array([100.0, 1.0, -0.5])
    zero = np.zeros(3)
    adamw, adam = {"w": w.copy()}, {"w": w.copy()}
    shrinking, stepping = AdamW(lr=0.01, weight_decay=0.5), Adam(lr=0.01, weight_decay=0.5)
    for _ in range(10):
        shrinking.step(adamw, {"w": zero})
        stepping.step(adam, {"w": zero})
    np.testing.assert_allclose(adamw["w"], w * (1 - 0.01 * 0.5) ** 10, rtol=1e-14)
    np.testing.assert_allclose(w - adam["w"], 10 * 0.01 * np.sign(w), rtol=1e-2)


def test_a_step_allocates_nothing():
    """Every buffer is made at the first step; later steps write into them."""
    rng = np.random.default_rng(0)
    _, views = pack([rng.standard_normal(200_000).astype(np.float32), np.zeros(10, np.float32)], np.dtype(np.float32))
    _, grad_views = pack([rng.standard_normal(200_000).astype(np.float32), np.ones(10, np.float32)], np.dtype(np.float32))
    params, grads = dict(zip("ab", views)), dict(zip("ab", grad_views))
    for optimizer in (Adam(weight_decay=0.1), AdamW()):
        optimizer.step(params, grads)
        tracemalloc.start()
        try:
            for _ in range(3):
                optimizer.step(params, grads)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 50_000, f"{type(optimizer).__name__}: a step allocated {peak} bytes"


@pytest.mark.parametrize(
    "state, message",
    [
        ({"steps": np.array(-1)}, r"^'steps' must be a non-negative integer, got array\(-1\)$"),
        ({"steps": np.array([1, 2])}, r"^'steps' must be a non-negative integer"),
        ({"steps": np.array(1.5)}, r"^'steps' must be a non-negative integer"),
        ({"steps": np.array(1), "velocity/a": np.zeros(3)}, r"^unknown Adam state 'velocity/a'$"),
        ({"steps": np.array(1), "m": np.zeros(3)}, r"^unknown Adam state 'm'$"),
        ({"steps": np.array(1), "m/a": np.zeros(3)}, r"^Adam state 'm/a' has no 'v/a'$"),
        ({"steps": np.array(1), "v/a": np.zeros(3)}, r"^Adam state 'v/a' has no 'm/a'$"),
        ({"steps": np.array(1), "m/a": np.zeros(3, int), "v/a": np.zeros(3)}, r"^Adam state 'm/a' holds int64, not floating"),
    ],
)
def test_load_state_dict_refuses_what_it_cannot_use_in_one_line(state, message):
    with pytest.raises(ValueError, match=message):
        Adam().load_state_dict(state)


@pytest.mark.parametrize(
    "state, message",
    [
        ({"m/a": np.zeros(3), "v/a": np.zeros(3)}, "m saved for 'a' but not for 'b'"),
        ({"m/a": np.zeros(3), "v/a": np.zeros(3), "m/b": np.zeros(3), "v/b": np.zeros(3)}, r"m for 'b' has shape \(3,\), expected \(2,\)"),
    ],
)
@pytest.mark.parametrize("packed", [True, False], ids=["arena", "arrays"])
def test_a_state_that_does_not_fit_the_parameters_is_refused_at_the_next_step(state, message, packed):
    values = [np.ones(3), np.ones(2)]
    params = dict(zip("ab", pack(values, np.dtype(np.float64))[1] if packed else values))
    grads = {name: np.zeros_like(p) for name, p in params.items()}
    optimizer = AdamW()
    optimizer.load_state_dict({"steps": np.array(4), **state})
    with pytest.raises(ValueError, match=message):
        optimizer.step(params, grads)


def adamw_spec(**train) -> dict:
    spec = tiny_spec(**train)
    spec["optimizer"] = {"type": "adamw", "lr": 0.01, "schedule": {"type": "cosine"}}
    return spec


def test_training_stopped_and_resumed_matches_an_uninterrupted_run(registry, tmp_path):
    """Through a real checkpoint: the moments, the step count and the schedule's rate all resume."""
    x, y = tiny_data()
    reference = laminae.build(adamw_spec(), registry=registry)
    reference.fit(x, y, progress=False)
    model = laminae.build(adamw_spec(), registry=registry)
    model.loss = LossSpy(model.loss, at=14)  # epoch 3, batch 2
    assert model.fit(x, y, progress=False, run_dir=tmp_path / "run", registry=registry).interrupted
    with np.load(tmp_path / "run" / "model.npz") as archive:
        assert {k for k in archive.files if k.startswith("optim/")} == {"optim/steps"} | {
            f"optim/{kind}/{name}" for kind in ("m", "v") for name in model.network.params
        }
        assert int(archive["optim/steps"]) == 14  # the batch the signal came in finishes
    model, state = laminae.load_training(tmp_path / "run", registry=registry)
    model.fit(x, y, progress=False, resume=state)
    assert params_equal(model.network, reference.network)


def test_a_checkpoint_with_moments_for_another_model_is_refused(registry, tmp_path):
    x, y = tiny_data()
    model = laminae.build(adamw_spec(), registry=registry)
    model.fit(x, y, epochs=1, progress=False)
    path = model.save(tmp_path / "model.npz", registry=registry)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["optim/m/0.W"] = arrays["optim/m/0.W"][:3]
    np.savez(path, **arrays)
    with pytest.raises(laminae.CheckpointError, match=r"optimizer state 'm/0.W' has shape \(3, 8\), expected \(16, 8\)"):
        laminae.load(path, registry=registry)


MNIST_MLP = """
[models.mlp]
input = [1, 28, 28]
layers = [
  { type = "affine", units = 64 },
  { type = "relu" },
  { type = "affine", units = 10 },
]
loss = "softmax_cross_entropy"
optimizer = { type = "adamw", lr = 0.001, schedule = { type = "cosine" } }
train = { dataset = "mnist-sample", epochs = 3, batch_size = 32, seed = 0 }
"""


def test_a_model_file_trains_with_adamw_and_a_cosine_schedule(registry, tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MNIST_MLP)
    model = laminae.from_toml(path, "mlp", registry=registry)
    assert type(model.optimizer) is AdamW and model.optimizer.weight_decay == 0.01
    splits = registry.create("datasets", "mnist-sample").load([])
    result = model.fit(splits.train.x, splits.train.y, test_data=(splits.test.x, splits.test.y), progress=False)
    history = result.history
    assert len(history) == 3
    assert history[0].lr > history[1].lr > history[2].lr  # the cosine falls towards 0
    assert history[-1].test_accuracy > 0.88, [epoch.test_accuracy for epoch in history]


def test_pytorch_agrees_within_rounding():
    """~20 steps of torch.optim.Adam / AdamW on random float64 problems, the
    learning rate changing between steps as a schedule changes it."""
    torch = pytest.importorskip("torch")
    for seed, (cls, options) in enumerate(OPTIONS * 2):
        rng = np.random.default_rng(seed)
        draws = [[rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3) for shape in SHAPES] for _ in range(20)]
        lrs = [options.get("lr", 0.001) * (1 + math.cos(math.pi * step / 20)) / 2 + 1e-5 for step in range(20)]
        params, grads = problem(packed=seed % 2 == 0, seed=seed)
        tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params.values()]
        optimizer = cls(**options)
        twin_class = torch.optim.AdamW if cls is AdamW else torch.optim.Adam
        twin = twin_class(
            tensors, lr=optimizer.lr, betas=(optimizer.beta1, optimizer.beta2), eps=optimizer.eps,
            weight_decay=optimizer.weight_decay, foreach=False,
        )
        for draw, lr in zip(draws, lrs):
            for grad, tensor, g in zip(grads.values(), tensors, draw):
                grad[...] = g
                tensor.grad = torch.tensor(g)
            optimizer.lr = lr
            for group in twin.param_groups:
                group["lr"] = lr
            optimizer.step(params, grads)
            twin.step()
        state = optimizer.state_dict()
        for (name, param), tensor in zip(params.items(), tensors):
            theirs = twin.state[tensor]
            np.testing.assert_allclose(param, tensor.detach().numpy(), rtol=1e-12, atol=0, err_msg=f"{cls.__name__} {name}")
            np.testing.assert_allclose(state[f"m/{name}"], theirs["exp_avg"].numpy(), rtol=1e-12, atol=0)
            np.testing.assert_allclose(state[f"v/{name}"], theirs["exp_avg_sq"].numpy(), rtol=1e-12, atol=0)
            assert int(state["steps"]) == int(theirs["step"]) == 20
