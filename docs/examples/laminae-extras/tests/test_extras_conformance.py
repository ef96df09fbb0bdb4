"""Every class laminae-extras registers, through Laminae's conformance kit."""
import pytest

import laminae
import laminae_extras
from laminae.testing import cases, check_layer, layer_cases, uncovered

REGISTRY = laminae.make_registry(plugins=[laminae_extras], autoload=False)
PLUGIN = "laminae_extras"

CASES = [
    *layer_cases(
        {
            "tanh": [({}, (3, 5))],
            "leaky_relu": [({}, (7,)), ({"alpha": 0.2}, (2, 3, 3))],
            "spatial_dropout": [({"rate": 0.5}, (4, 3, 3)), ({"rate": 0.3}, (6,)), ({"rate": 0.0}, (5,))],
            "squeeze_excite": [({}, (4, 3, 3)), ({"ratio": 1}, (2, 2, 5))],
        }
    ),
    *cases("optimizers", {"lion": [{"lr": 0.02}, {"lr": 0.01, "beta1": 0.5, "beta2": 0.9, "weight_decay": 0.1}]}),
    *cases("initializers", {"uniform": [{}, {"limit": 0.1}]}),
    *cases("transforms", {"gaussian_noise": [{}, {"std": 0.3}]}),
    *cases("schedules", {"cosine_restarts": [{}, {"period": 2.5}]}),
]


@pytest.mark.parametrize("case", CASES)
def test_conforms(case):
    case.check(REGISTRY)


def test_every_registration_has_a_case():
    assert uncovered(REGISTRY, PLUGIN, CASES) == []


def test_one_liner():
    check_layer(laminae_extras.Tanh(), (3, 5))


@pytest.mark.parametrize("kind, options, message", [
    ("layers", {"type": "leaky_relu", "alpha": 1.5}, "'alpha' must be less than 1"),
    ("layers", {"type": "spatial_dropout", "rate": True}, "'rate' must be a number"),
    ("optimizers", {"type": "lion", "beta2": 1}, "'beta2' must be less than 1"),
])
def test_bad_hyperparameters_are_refused(kind, options, message):
    with pytest.raises(laminae.SpecError, match=message):
        REGISTRY.create(kind, options)
