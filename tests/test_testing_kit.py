"""The kit's optimizer and initializer checks, and its parametrisation helpers: each check can fail."""
from __future__ import annotations

import attrs
import numpy as np
import pytest

from laminae.plugins.initializers import He
from laminae.plugins.sgd import SGD
from laminae.testing import (
    Case,
    ConformanceError,
    cases,
    check_initializer,
    check_layer,
    check_optimizer,
    layer_cases,
    uncovered,
)
from tests.training_helpers import Noise


@pytest.mark.parametrize("optimizer", [SGD(), SGD(lr=0.05, momentum=0.9), SGD(lr=0.05, momentum=0.5, nesterov=True)])
def test_sgd_passes(optimizer):
    check_optimizer(optimizer)


@attrs.define(eq=False)
class Stuck(SGD):
    def step(self, params, grads):
        pass


@attrs.define(eq=False)
class Forgetful(SGD):
    """Momentum that is not saved, so a resumed run takes different steps."""

    def state_dict(self):
        return {}


@attrs.define(eq=False)
class Replacing(SGD):
    def step(self, params, grads):
        for name in params:
            params[name] = params[name] - self.lr * grads[name]


@attrs.define(eq=False)
class Pickly(SGD):
    def state_dict(self):
        return {"history": np.array([[1.0], "x"], dtype=object)}


@attrs.define(eq=False)
class Counter(SGD):
    def state_dict(self):
        return {"step": 3}


def test_an_optimizer_that_does_not_descend_fails():
    with pytest.raises(
        ConformanceError,
        match=r"^optimizer stuck: descends on a quadratic: loss went from 8\.78036 to 8\.78036 in 200 steps"
        r" \(needs to fall by a factor of 10\)$",
    ):
        check_optimizer(Stuck(), name="stuck")


def test_a_state_that_does_not_round_trip_fails():
    with pytest.raises(
        ConformanceError,
        match=r"^optimizer Forgetful: state round-trip: step 1 after load_state_dict differs in '0\.W'"
        r" \(max abs difference [\d.e-]+\); state_dict\(\) must hold everything the next step depends on$",
    ):
        check_optimizer(Forgetful(lr=0.05, momentum=0.9))


def test_replacing_the_parameter_arrays_fails():
    with pytest.raises(ConformanceError, match=r"updates in place: parameter '0\.W' was replaced by a new array"):
        check_optimizer(Replacing(lr=0.05))


@pytest.mark.parametrize(
    "optimizer, detail",
    [(Pickly(), "key 'history' holds an object array"), (Counter(), "key 'step' holds a int, not a numeric array")],
)
def test_a_state_that_is_not_flat_arrays_fails(optimizer, detail):
    with pytest.raises(ConformanceError, match=f"state is a flat dict of arrays: {detail}"):
        check_optimizer(optimizer)


def test_builtin_initializers_pass(registry):
    for name in registry.names("initializers"):
        check_initializer(registry.create("initializers", name), name=name)


@attrs.define
class GlobalRandom:
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return np.random.standard_normal(shape).astype(dtype)


@attrs.define
class Flat:
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return rng.standard_normal(int(np.prod(shape))).astype(dtype)


@attrs.define
class Infinite(He):
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return super().__call__(shape, fan_in, fan_out, rng, dtype) / 0


@pytest.mark.parametrize(
    "initializer, message",
    [
        (GlobalRandom(), r"same seed, same values: two draws of \(6, 4\) from generators seeded 0 differ"),
        (Flat(), r"shape: asked for \(6, 4\), got \(24,\)"),
        (Infinite(), r"finite values: 24 of 24 values are not finite"),
    ],
)
def test_a_broken_initializer_fails(initializer, message):
    with pytest.raises(ConformanceError, match=f"^initializer {type(initializer).__name__}: {message}$"):
        with np.errstate(divide="ignore", invalid="ignore"):
            check_initializer(initializer)


TABLE = layer_cases({"affine": [({"units": 3}, (4,)), ({"units": 2, "bias": False}, (2, 3))], "relu": [({}, (5,))]})


@pytest.mark.parametrize("case", TABLE)
def test_layer_cases_check_through_the_registry(case, registry):
    case.check(registry)


def test_case_ids_read_like_the_table():
    assert [p.id for p in TABLE] == ["affine-units=3-4", "affine-units=2-bias=False-2x3", "relu-5"]
    assert [p.id for p in cases("optimizers", {"sgd": [{}, {"lr": 0.1}]})] == ["sgd", "sgd-lr=0.1"]


def test_a_case_with_bad_options_fails_like_a_toml_file(registry):
    with pytest.raises(Exception, match=r"unknown key 'unit'; did you mean 'units'\?"):
        Case("layers", "affine", {"unit": 3}, (4,)).check(registry)


def test_cases_refuses_layers():
    with pytest.raises(ValueError, match="use layer_cases"):
        cases("layers", {"relu": [{}]})


def test_uncovered_lists_what_a_plugin_registers_but_no_case_checks(registry):
    assert uncovered(registry, "laminae.plugins.activations", TABLE) == ["layers:sigmoid"]
    assert uncovered(registry, "laminae.plugins.mnist", TABLE) == []


class ForgetfulNoise(Noise):
    def load_state_dict(self, state):
        pass


def test_a_layer_state_that_restores_passes():
    check_layer(Noise(), (4,))


def test_a_layer_state_that_does_not_restore_fails():
    with pytest.raises(ConformanceError, match=r"^layer ForgetfulNoise: state round-trip: forward after load_state_dict differs"):
        check_layer(ForgetfulNoise(), (4,))
