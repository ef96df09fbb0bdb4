"""Whatever a spec holds, building it either works or raises a LaminaeError, never anything else.

The specs start as the real models of models.toml, shrunk so each builds in
milliseconds, and are then mutated: keys dropped and renamed, values replaced
by random TOML values of random types, layers shuffled, dropped and repeated.
Ints come from the edges (0, negatives, 64-bit extremes, sizes no machine can
allocate) rather than the middle, where a "valid" huge layer would merely be
slow to allocate rather than wrong.
"""
import copy
import datetime
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminae
from laminae.network.spec import layer_tables, model_tables

MODELS_TOML = Path(__file__).resolve().parents[1] / "models.toml"
SIZE_KEYS = {"units": 8, "filters": 3}


def _shrunk(model: dict) -> dict:
    model = copy.deepcopy(model)
    model["input"] = [1, 12, 12]
    for layer in layer_tables(model["layers"]):  # inner layers of blocks too
        for key, most in SIZE_KEYS.items():
            if key in layer:
                layer[key] = min(layer[key], most)
    return model


BASES = [_shrunk(m) for m in model_tables(tomllib.loads(MODELS_TOML.read_text()), str(MODELS_TOML)).values()]
"""Every model of models.toml as a table of its own: its blocks expanded where used."""

edge_ints = st.sampled_from([0, -1, -5, 1, 2, 3, 5, 2**40, 2**62, 2**63 - 1, -(2**63)]) | st.integers(-3, 12)
scalars = (
    edge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=8)
    | st.sampled_from(["he", "normal", "relu", "affine", "conv", "pool", "sgd", "quadratic", "mnist", "zeros", "max", "avg"])
    | st.dates()
    | st.datetimes()
    | st.times()
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "units", "std", "size", "x"]), inner, max_size=3),
    max_leaves=6,
)
key_names = st.sampled_from(["type", "units", "size", "filters", "stride", "pad", "init", "lr", "std", "epochs", "seed", "input", "layers", "extends", "name"]) | st.text(max_size=6)


def _paths(value, prefix=()):
    """Every (container, key) pair reachable in a spec, for picking a place to mutate."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append((value, key))
        found.extend(_paths(item))
    return found


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "rename", "replace", "replace", "int", "int", "shuffle", "repeat", "add"]))
        places = _paths(spec)
        numbers = [(c, k) for c, k in places if isinstance(c[k], int | float) and not isinstance(c[k], bool)]
        container, key = draw(st.sampled_from(numbers if op == "int" and numbers else places))
        if op == "int":
            container[key] = draw(edge_ints)
        elif op == "drop":
            del container[key]
        elif op == "rename" and isinstance(container, dict):
            container[draw(key_names)] = container.pop(key)
        elif op == "replace":
            container[key] = draw(toml_values)
        elif op == "add" and isinstance(container, dict):
            container[draw(key_names)] = draw(toml_values)
        elif isinstance(spec.get("layers"), list):
            layers = spec["layers"]
            if op == "shuffle":
                spec["layers"] = draw(st.permutations(layers))
            elif layers:
                layers.insert(draw(st.integers(0, len(layers))), copy.deepcopy(draw(st.sampled_from(layers))))
    return spec


@pytest.fixture(scope="module")
def full_registry():
    return laminae.make_registry(autoload=False)


def test_every_shrunk_base_builds(full_registry):
    for spec in BASES:
        assert laminae.build(spec, registry=full_registry).network.num_params > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=mutated_specs())
def test_mutated_specs_build_or_raise_a_laminae_error(full_registry, spec):
    try:
        model = laminae.build(spec, registry=full_registry)
    except laminae.LaminaeError as err:
        assert "\n" not in str(err)
    else:
        assert model.spec["layers"] and model.network.layers


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["schema", "models", "model", "x"]), toml_values | st.dictionaries(st.text(max_size=4), toml_values, max_size=2), max_size=3))
def test_random_documents_build_or_raise_a_laminae_error(full_registry, doc):
    try:
        laminae.build(doc, registry=full_registry, name="m")
    except laminae.LaminaeError as err:
        assert "\n" not in str(err)


@settings(max_examples=50, deadline=None)
@given(when=st.dates() | st.datetimes() | st.times())
def test_dates_never_reach_a_resolved_spec(full_registry, when):
    spec = copy.deepcopy(BASES[0])
    spec["description"] = when
    with pytest.raises(laminae.SpecError):
        laminae.build(spec, registry=full_registry)
    assert isinstance(when, (datetime.date, datetime.time))
