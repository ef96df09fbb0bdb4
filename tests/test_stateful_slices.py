"""A layer with state trains in slices when it says how their states combine.

The layer is docs/plugins.md's batch normalization, taken from the page as a
reader copies it; it trains with ``threads = 2`` on the bundled MNIST sample
and resumes, after Ctrl-C, to the very bits of a run never stopped.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae.training import loop
from tests.doc_blocks import blocks
from tests.training_helpers import LossSpy, params_equal

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FILES = {b.file: b.text for b in blocks(DOC.read_text(encoding="utf-8")) if b.file}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("my_plugins")
    (folder / "batchnorm.py").write_text(FILES["my_plugins/batchnorm.py"])
    registry = laminae.make_registry(plugins_dir=folder, autoload=False)
    doc = tomllib.loads(FILES["my_plugins/batchnorm.toml"])
    splits = registry.create("datasets", "mnist-sample").load([])
    return registry, doc, splits.train.x[:1200], splits.train.y[:1200]


def state_equal(a: laminae.Network, b: laminae.Network) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)


def model(setup, threads: int = 2):
    registry, doc, _, _ = setup
    return laminae.build(doc, registry=registry, train_overrides={"threads": threads})


def test_batch_norm_trains_in_two_slices_and_resumes_bit_for_bit(setup, tmp_path):
    _, _, x, y = setup
    reference = model(setup)
    reference.fit(x, y, progress=False, run_dir=tmp_path / "reference")
    assert reference.train_config.threads == 2
    initial = model(setup).network.state_dict()
    assert not np.array_equal(reference.network.state_dict()["1.mean"], initial["1.mean"])  # the averages moved

    stopped = model(setup)
    stopped.loss = LossSpy(stopped.loss, at=31)  # epoch 2, batch 7
    assert stopped.fit(x, y, progress=False, run_dir=tmp_path / "run").interrupted
    resumed, state = laminae.load_training(tmp_path / "run", registry=setup[0])
    resumed.fit(x, y, progress=False, run_dir=tmp_path / "run", resume=state)
    assert params_equal(resumed.network, reference.network)
    assert state_equal(resumed.network, reference.network)


def test_threads_and_worker_processes_combine_states_alike(setup, monkeypatch):
    _, _, x, y = setup
    forked = model(setup)
    forked.fit(x, y, epochs=1, progress=False)
    monkeypatch.setattr(loop, "forking_works", lambda: False)
    threaded = model(setup)
    threaded.fit(x, y, epochs=1, progress=False)
    assert params_equal(forked.network, threaded.network)
    assert state_equal(forked.network, threaded.network)


def test_combined_running_mean_is_the_whole_batch_mean(setup):
    """Two slices' averages, weighted by their shares, are the average one pass
    over the whole batch would have moved to (up to float rounding)."""
    _, _, x, y = setup
    layer = model(setup, threads=1).network.layers[1]
    features = np.random.default_rng(0).standard_normal((10, *layer.params["gamma"].shape)).astype(np.float32)
    whole = model(setup, threads=1).network.layers[1]
    whole.forward(features, True)
    halves = [model(setup, threads=1).network.layers[1] for _ in range(2)]
    halves[0].forward(features[:4], True)
    halves[1].forward(features[4:], True)
    combined = layer.combine_states([h.state_dict() for h in halves], [0.4, 0.6])
    np.testing.assert_allclose(combined["mean"], whole.state_dict()["mean"], rtol=1e-5, atol=1e-7)


def test_a_layer_whose_state_cannot_combine_is_still_refused():
    import laminae_extras

    registry = laminae.make_registry(plugins=[laminae_extras], autoload=False)
    spec = {
        "input": [4], "layers": [{"type": "spatial_dropout", "rate": 0.5}, {"type": "affine", "units": 2}],
        "loss": "softmax_cross_entropy", "optimizer": "sgd", "train": {"threads": 2},
    }
    net = laminae.build(spec, registry=registry)
    with pytest.raises(laminae.TrainingError, match=(
        r"^cannot train on 2 threads: layer 0 \(spatial_dropout, from plugin 'laminae_extras'\) keeps state of its own"
        r" and has no combine_states method; use threads = 1$"
    )):
        net.fit(np.zeros((4, 4), np.float32), np.array([0, 1, 0, 1]), progress=False)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda a: a.update({"layer/1.mean": a["layer/1.mean"].astype(np.int32)}), "state 'mean' holds int32, expected float32"),
        (lambda a: a.update({"layer/1.mean": a["layer/1.mean"][:10]}), "state 'mean' has shape (10,), expected (100,)"),
        (lambda a: a.update({"layer/1.extra": np.zeros(3, np.float32)}), "unexpected state 'extra'"),
        (lambda a: a.pop("layer/1.var"), "state 'var' is missing"),
    ],
)
def test_batch_norm_state_is_checked_on_load(setup, tmp_path, damage, reason):
    registry = setup[0]
    path = model(setup).save(tmp_path / "bn.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    damage(arrays)
    np.savez(path, **arrays)
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message == f"{path}: layer 1 (feature_norm): {reason}"
