"""From TOML and dicts to models: the built-in models, extends, overrides, rebuilding from a spec."""
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae.network import assemble_document, load_models

MODELS_TOML = Path(__file__).resolve().parents[1] / "models.toml"

EXPECTED = {
    # name: (layer types, output shape, params, loss, lr, batch, epochs, dataset)
    "dnn": (["affine", "relu", "affine", "relu", "affine"], 784 * 256 + 256 + 256 * 256 + 256 + 2570, "softmax_cross_entropy", 0.1, 32, 5, "mnist"),
    "two_layer": (["affine", "relu", "affine"], 784 * 50 + 50 + 510, "softmax_cross_entropy", 0.1, 100, 17, "mnist"),
    "simple_cnn": (["conv", "relu", "pool", "affine", "relu", "affine"], 780 + 4320 * 100 + 100 + 1010, "softmax_cross_entropy", 0.1, 100, 5, "mnist"),
    "sigmoid_net": (["affine", "sigmoid", "affine", "sigmoid"], 784 * 30 + 30 + 310, "quadratic", 3.0, 10, 30, "mnist"),
    "lenet": (["conv", "relu", "pool", "conv", "relu", "pool", "affine", "relu", "affine", "relu", "affine"], 61706, "softmax_cross_entropy", 0.05, 64, 12, "mnist"),
    "quickstart": (["affine", "relu", "affine"], 784 * 128 + 128 + 1290, "softmax_cross_entropy", 0.02, 32, 5, "mnist-sample"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_models_build_as_declared(registry, name):
    types, params, loss, lr, batch, epochs, dataset = EXPECTED[name]
    model = laminae.from_toml(MODELS_TOML, name, registry=registry)
    assert model.name == name
    assert model.network.names == types
    assert model.network.input_shape == (1, 28, 28)
    assert model.network.output_shape == (10,)
    assert model.network.num_params == params
    assert model.spec["loss"] == {"type": loss}
    assert model.optimizer.lr == lr
    assert (model.train_config.batch_size, model.train_config.epochs, model.train_config.dataset) == (batch, epochs, dataset)


def test_builtin_model_details(registry):
    dnn = laminae.from_toml(MODELS_TOML, "dnn", registry=registry)
    assert dnn.network.params["0.W"].std() == pytest.approx(0.001, rel=0.05)
    sigmoid = laminae.from_toml(MODELS_TOML, "sigmoid_net", registry=registry)
    assert sigmoid.network.params["0.W"].std() == pytest.approx(1.0, rel=0.05)
    lenet = laminae.from_toml(MODELS_TOML, "lenet", registry=registry)
    assert (lenet.optimizer.momentum, lenet.optimizer.weight_decay, lenet.optimizer.decay) == (0.9, 0.0005, 0.001)
    assert lenet.network.shapes[0] == (6, 28, 28)


def test_resolved_spec_is_json_and_rebuilds_the_same_model(registry):
    for name, spec in load_models(MODELS_TOML, registry=registry).items():
        again = json.loads(json.dumps(spec))
        assert list(again) == ["name", "description", "input", "layers", "loss", "optimizer", "train", "dtype"]
        original = laminae.from_toml(MODELS_TOML, name, registry=registry)
        rebuilt = laminae.build(again, registry=registry)
        assert rebuilt.name == name and rebuilt.spec == original.spec
        assert all(np.array_equal(rebuilt.network.params[k], original.network.params[k]) for k in original.network.params)


def test_train_defaults_are_filled_in(registry):
    doc = {"models": {"m": {"input": [4], "layers": [{"type": "affine", "units": 2}], "loss": {"type": "quadratic"}, "optimizer": {"type": "sgd"}}}}
    model = laminae.build(doc, registry=registry)
    assert model.spec["train"] == {"dataset": "mnist", "epochs": 1, "batch_size": 32, "seed": 0, "validation": 0, "threads": 1,
                                   "augment": [], "patience": 0, "monitor": "val_accuracy", "log": []}
    assert model.spec["description"] == ""


EXTENDS = """
[models.base]
description = "base"
input = [4]
layers = [{ type = "affine", units = 8 }, { type = "relu" }, { type = "affine", units = 3 }]
loss = { type = "softmax_cross_entropy" }
optimizer = { type = "sgd", lr = 0.1, momentum = 0.5 }
train = { dataset = "mnist", epochs = 2, seed = 1 }

[models.child]
extends = "base"
layers = [{ type = "affine", units = 3 }]
optimizer = { lr = 0.2 }
train = { epochs = 7 }

[models.grandchild]
extends = "child"
description = "grandchild"
train = { seed = 5 }
"""


def test_extends_merges_tables_replaces_arrays_and_chains(registry):
    specs = {name: m.spec for name, m in assemble_document(tomllib.loads(EXTENDS), registry=registry).items()}
    child, grandchild = specs["child"], specs["grandchild"]
    assert "extends" not in child and "extends" not in grandchild
    assert child["layers"] == [{"type": "affine", "units": 3}]
    assert child["optimizer"] == {"type": "sgd", "lr": 0.2, "momentum": 0.5}
    assert child["train"] == {"dataset": "mnist", "epochs": 7, "batch_size": 32, "seed": 1, "validation": 0, "threads": 1,
                              "augment": [], "patience": 0, "monitor": "val_accuracy", "log": []}
    assert child["description"] == "base"
    assert grandchild["description"] == "grandchild"
    assert grandchild["train"]["epochs"] == 7 and grandchild["train"]["seed"] == 5
    assert grandchild["optimizer"]["lr"] == 0.2
    assert specs["base"]["layers"][0] == {"type": "affine", "units": 8}


def test_array_of_tables_layers_work_like_inline_ones(registry):
    inline = 'input = [4]\nlayers = [{ type = "affine", units = 3 }, { type = "relu" }]\n'
    tables = 'input = [4]\n[[models.m.layers]]\ntype = "affine"\nunits = 3\n[[models.m.layers]]\ntype = "relu"\n'
    rest = '[models.m.loss]\ntype = "quadratic"\n[models.m.optimizer]\ntype = "sgd"\n'
    a = laminae.build(tomllib.loads("[models.m]\n" + inline + rest), registry=registry)
    b = laminae.build(tomllib.loads("[models.m]\n" + tables + rest), registry=registry)
    assert a.spec == b.spec


def test_train_overrides_merge_before_the_parameters_are_drawn(registry):
    plain = laminae.from_toml(MODELS_TOML, "quickstart", registry=registry)
    seeded = laminae.from_toml(MODELS_TOML, "quickstart", registry=registry, train_overrides={"seed": 3, "epochs": 9})
    assert seeded.train_config.seed == 3 and seeded.train_config.epochs == 9
    assert seeded.spec["train"]["batch_size"] == 32
    assert seeded.network.params["0.W"].shape == plain.network.params["0.W"].shape
    assert not np.array_equal(seeded.network.params["0.W"], plain.network.params["0.W"])
    again = laminae.build(seeded.spec, registry=registry)
    assert np.array_equal(again.network.params["0.W"], seeded.network.params["0.W"])


def test_bad_train_override_is_a_located_spec_error(registry, monkeypatch):
    monkeypatch.chdir(MODELS_TOML.parent)
    with pytest.raises(laminae.SpecError, match="^models.toml: model 'quickstart', train overrides: unknown key 'epoch'; did you mean 'epochs'"):
        laminae.from_toml("models.toml", "quickstart", registry=registry, train_overrides={"epoch": 2})
    with pytest.raises(laminae.SpecError, match="train overrides: 'batch_size' must be at least 1, got 0$"):
        laminae.from_toml("models.toml", "quickstart", registry=registry, train_overrides={"batch_size": 0})


def test_build_of_a_single_model_dict_and_default_registry():
    spec = {"input": [2, 3], "layers": [{"type": "flatten"}, {"type": "affine", "units": 4, "init": "xavier"}],
            "loss": "softmax_cross_entropy", "optimizer": {"type": "sgd", "lr": 0.5}}
    model = laminae.build(spec, name="tiny")
    assert model.name == "tiny" and model.network.output_shape == (4,)
    assert model.spec["loss"] == {"type": "softmax_cross_entropy"}
    assert model.spec["layers"][1] == {"type": "affine", "units": 4, "init": "xavier"}


def test_build_of_a_document_needs_a_name_when_it_holds_several(registry):
    doc = tomllib.loads(EXTENDS)
    with pytest.raises(laminae.SpecError, match="^<dict>: several models, name one of: base, child, grandchild$"):
        laminae.build(doc, registry=registry)
    assert laminae.build(doc, registry=registry, name="child").name == "child"


def test_extends_in_a_single_model_dict_is_refused(registry):
    with pytest.raises(laminae.SpecError, match="^<dict>: model 'model': 'extends' needs the named model"):
        laminae.build({"extends": "cnn"}, registry=registry)
