"""Training on several threads: each takes a slice of every mini-batch."""
from __future__ import annotations

import warnings

import attrs
import numpy as np
import pytest
import threadpoolctl

import laminae
from tests.training_helpers import LossSpy, Noise, params_equal, tiny_data, tiny_model


def conv_spec(**train) -> dict:
    return {
        "name": "tiny_cnn",
        "input": [1, 6, 6],
        "layers": [
            {"type": "conv", "filters": 4, "size": 3},
            {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "affine", "units": 3},
        ],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 2, "batch_size": 16, "seed": 0, **train},
    }


def conv_data(samples: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, samples)
    x = rng.random((samples, 1, 6, 6), dtype=np.float32) * 0.5
    x[np.arange(samples), 0, 2 * y, 1:4] += 0.5
    return x, y


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_train_like_one_thread(registry, threads):
    x, y = conv_data()
    one, many = (laminae.build(conv_spec(threads=n), registry=registry) for n in (1, threads))
    serial = one.fit(x, y, progress=False).history
    parallel = many.fit(x, y, progress=False).history
    for name, param in one.network.params.items():
        np.testing.assert_allclose(many.network.params[name], param, rtol=1e-4, atol=1e-5)
    assert [m.train_accuracy for m in parallel] == [m.train_accuracy for m in serial]
    assert [m.train_loss for m in parallel] == pytest.approx([m.train_loss for m in serial], rel=1e-5)


def test_the_same_seed_gives_the_same_weights_on_threads(registry):
    x, y = conv_data()
    first, second = (laminae.build(conv_spec(threads=2), registry=registry) for _ in range(2))
    first.fit(x, y, progress=False)
    second.fit(x, y, progress=False)
    assert params_equal(first.network, second.network)


def test_a_batch_smaller_than_the_thread_count(registry):
    x, y = tiny_data(samples=91)
    one, two = tiny_model(registry), tiny_model(registry)
    one.fit(x, y, batch_size=45, progress=False)  # the last batch holds one sample
    two.fit(x, y, batch_size=45, threads=2, progress=False)
    for name, param in one.network.params.items():
        np.testing.assert_allclose(two.network.params[name], param, rtol=1e-5, atol=1e-6)


def test_the_blas_thread_count_is_restored(registry):
    before = [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]
    x, y = tiny_data()
    tiny_model(registry).fit(x, y, threads=2, progress=False)
    assert [pool["num_threads"] for pool in threadpoolctl.threadpool_info()] == before


def test_resuming_on_threads_matches_an_uninterrupted_run(registry, tmp_path):
    x, y = conv_data()
    reference = laminae.build(conv_spec(threads=2), registry=registry)
    reference.fit(x, y, progress=False)
    model = laminae.build(conv_spec(threads=2), registry=registry)
    model.loss = LossSpy(model.loss, at=9)  # epoch 2, batch 3
    stopped = model.fit(x, y, progress=False)
    assert stopped.interrupted and stopped.state.threads == 2
    with pytest.raises(laminae.TrainingError, match="cannot resume with threads 1: the run used 2"):
        model.fit(x, y, threads=1, resume=stopped.state, progress=False)
    model.fit(x, y, resume=stopped.state, progress=False)
    assert params_equal(model.network, reference.network)


class NoisePlugin:
    @laminae.hookimpl
    def register_layers(self, register):
        register("noise", Noise)


def test_a_layer_with_state_of_its_own_needs_one_thread():
    registry = laminae.make_registry(plugins=[NoisePlugin()], autoload=False, strict=True)
    spec = conv_spec(threads=2)
    spec["layers"].insert(1, {"type": "noise"})
    model = laminae.build(spec, registry=registry)
    x, y = conv_data()
    with pytest.raises(laminae.TrainingError, match=r"^cannot train on 2 threads: layer 1 \(noise, from plugin 'NoisePlugin'\) keeps state of its own and has no combine_states method; use threads = 1$"):
        model.fit(x, y, progress=False)
    held_x, held_y = conv_data(2500)  # three chunks: scoring in two processes needs no combining
    assert model.evaluate(held_x, held_y) == model.evaluate(held_x, held_y, threads=1)


def test_threads_from_the_command_line(capsys, tmp_path):
    from laminae.cli import main
    from tests.test_cli_train import MODELS

    args = ["train", MODELS, "quickstart", "--epochs", "1", "--threads", "2", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("test accuracy: 0.")
    assert laminae.load(tmp_path / "run").spec["train"]["threads"] == 2


def test_an_exploding_run_on_threads_prints_no_numpy_warnings(registry):
    x, y = conv_data()
    spec = conv_spec(threads=2)
    spec["optimizer"]["lr"] = 1e38
    model = laminae.build(spec, registry=registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning from either thread would fail here
        with pytest.raises(laminae.TrainingError, match="the loss became"):
            model.fit(x * 1e3, y, progress=False)


def test_replicas_compute_in_the_models_own_dtype(registry):
    x, y = conv_data()
    models = []
    for threads in (1, 2):
        spec = conv_spec(threads=threads)
        built = laminae.build(spec, registry=registry)
        network = laminae.Network(built.network.layers, spec["input"], dtype="float64", registry=registry)
        models.append(attrs.evolve(built, network=network))
    for model in models:
        model.fit(x.astype(np.float64), y, progress=False)
    for name, param in models[0].network.params.items():
        assert param.dtype == np.float64
        np.testing.assert_allclose(models[1].network.params[name], param, rtol=1e-12, atol=1e-13)
