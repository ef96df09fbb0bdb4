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
            "dropout": [({"rate": 0.5}, (4, 6)), ({"rate": 0.0}, (5,))],
        }
    ),
    *cases("optimizers", {"adam": [{"lr": 0.05}, {"lr": 0.02, "beta1": 0.5, "beta2": 0.9}]}),
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


@pytest.mark.parametrize("options, message", [({"alpha": 1.5}, "'alpha' must be less than 1"), ({"rate": True}, "'rate' must be a number")])
def test_bad_hyperparameters_are_refused(options, message):
    type_name = "leaky_relu" if "alpha" in options else "dropout"
    with pytest.raises(laminae.SpecError, match=message):
        REGISTRY.create("layers", {"type": type_name, **options})
