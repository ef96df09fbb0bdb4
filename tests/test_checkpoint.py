"""Checkpoints: one .npz, no pickles, atomic writes, one-line errors per layer."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import laminae
from laminae.persistence import checkpoint
from laminae.training import TrainingState
from tests.training_helpers import params_equal, tiny_data, tiny_model, tiny_spec


@pytest.fixture
def trained(registry):
    x, y = tiny_data()
    model = tiny_model(registry)
    model.fit(x, y, epochs=1, progress=False)
    return model, x


def test_save_and_load_give_the_same_predictions_and_optimizer_state(registry, trained, tmp_path):
    model, x = trained
    model.save(tmp_path / "model.npz", registry=registry)
    loaded = laminae.load(tmp_path / "model.npz", registry=registry)
    assert params_equal(loaded.network, model.network)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.spec == model.spec and loaded.name == model.name
    before, after = model.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert before.keys() == after.keys() and len(before) == 5
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_loading_copies_into_the_networks_own_arrays(registry, trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model.npz", registry=registry)
    loaded = laminae.load(tmp_path, registry=registry)  # a run directory works too
    for index, layer in enumerate(loaded.network.layers):
        for name, array in layer.params.items():
            assert loaded.network.params[f"{index}.{name}"] is array


def test_the_file_holds_plain_arrays_and_a_json_entry(registry, trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model.npz", registry=registry)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {
            "meta", "param/0.W", "param/0.b", "param/2.W", "param/2.b",
            "optim/velocity/0.W", "optim/velocity/0.b", "optim/velocity/2.W", "optim/velocity/2.b", "optim/steps",
        }
        assert archive["meta"].dtype == np.uint8
        meta = json.loads(archive["meta"].tobytes())
    assert meta["laminae_version"] == laminae.__version__
    assert meta["spec"] == model.spec
    assert meta["plugins"]["layers:affine"] == {"plugin": "laminae.plugins.affine", "version": laminae.__version__}
    assert meta["plugins"]["initializers:he"]["plugin"] == "laminae.plugins.initializers"
    assert meta["plugins"]["datasets:mnist-sample"]["plugin"] == "laminae.plugins.mnist"


def test_a_pickled_object_array_is_refused(registry, tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.frombuffer(b"{}", np.uint8), payload=np.array([{"x": 1}], dtype=object))
    with pytest.raises(laminae.CheckpointError, match=f"^{path}: holds pickled Python objects, which are refused$"):
        laminae.load(path, registry=registry)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a zip at all", "not a Laminae checkpoint (not an .npz archive)"),
        (b"PK\x03\x04 but truncated", "not a Laminae checkpoint or corrupt"),
        (None, "not a Laminae checkpoint (no 'meta' entry)"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error(registry, tmp_path, content, reason):
    path = tmp_path / "model.npz"
    if content is None:
        np.savez(path, weights=np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message.startswith(f"{path}: {reason}") and "\n" not in caught.value.message


def test_a_missing_file_is_a_one_line_error(registry, tmp_path):
    with pytest.raises(laminae.CheckpointError, match="nothing.npz: no such file"):
        laminae.load(tmp_path / "nothing.npz", registry=registry)


def test_missing_unexpected_and_misshapen_arrays_are_reported_per_layer(registry, trained, tmp_path):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path, registry=registry)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["param/0.W"] = np.zeros((10, 5), np.float32)
    del arrays["param/2.b"]
    arrays["param/2.gamma"] = np.ones(3, np.float32)
    np.savez(path, **arrays)
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message == (
        f"{path}: layer 0 (affine): parameter 'W' has shape (10, 5), expected (16, 8);"
        " layer 2 (affine): parameter 'b' is missing; layer 2 (affine): unexpected parameter 'gamma'"
    )


def test_a_failed_write_leaves_the_previous_checkpoint_whole(registry, trained, tmp_path, monkeypatch):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path, registry=registry)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        model.save(path, registry=registry)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_checkpoint_needs_no_toml_file(registry, tmp_path):
    spec = tiny_spec()
    model = laminae.build(spec, registry=registry)
    model.save(tmp_path / "model.npz", registry=registry)
    assert params_equal(laminae.load(tmp_path / "model.npz", registry=registry).network, model.network)


def test_an_unknown_type_names_the_plugin_that_wrote_it(registry, trained, tmp_path):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path, registry=registry)
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes())
    meta["spec"]["layers"][1]["type"] = "swish"
    meta["plugins"]["layers:swish"] = {"plugin": "fancy-layers", "version": "2.1"}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(laminae.CheckpointError, match="'swish' from plugin 'fancy-layers' 2.1"):
        laminae.load(path, registry=registry)


def rewrite(path, change) -> None:
    """Apply ``change(arrays, meta)`` to the checkpoint at ``path``, as a hand-edited file would."""
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].tobytes())
    change(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


def saved_run(registry, tmp_path):
    x, y = tiny_data()
    model = tiny_model(registry)
    model.fit(x, y, epochs=1, progress=False, run_dir=tmp_path, registry=registry)
    return tmp_path / "model.npz"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.update(epoch=-1), r"corrupt training position \('epoch' must be at least 0, got -1\)"),
        (lambda t: t.update(batch_size="16"), r"corrupt training position \('batch_size' must be an integer"),
        (lambda t: t.update(rng_state={"bit_generator": "seed"}), r"corrupt training position \(unknown random generator 'seed'\)"),
        (lambda t: t["rng_state"].update(state="x"), r"corrupt training position \(a PCG64 state that does not fit it"),
        (
            lambda t: t["rng_state"]["state"].update(state=-1),
            r"corrupt training position \(a PCG64 state that does not fit it \(OverflowError",
        ),
        (lambda t: t.update(turbo=True), r"corrupt training position \(unknown key 'turbo'\)"),
        (lambda t: t.pop("samples"), r"corrupt training position \(.*samples"),
        (lambda t: t.update(batch=99), r"corrupt training position \(batch 99 of an epoch that has fewer\)"),
    ],
)
def test_a_corrupt_training_position_is_a_one_line_error(registry, tmp_path, edit, reason):
    path = saved_run(registry, tmp_path)
    rewrite(path, lambda arrays, meta: edit(meta["training"]))
    training = checkpoint.read(path, registry=registry).training
    with pytest.raises(laminae.CheckpointError, match=f"^{path}: {reason}") as caught:
        TrainingState.from_json(training, str(path))
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda a: a.update({"optim/velocity/0.W": np.zeros((3, 3), np.float32)}),
            "optimizer state 'velocity/0.W' has shape (3, 3), expected (16, 8)",
        ),
        (
            lambda a: a.update({"optim/velocity/7.W": np.zeros(3, np.float32)}),
            "optimizer state 'velocity/7.W' is for parameter '7.W', which the model does not have",
        ),
        (lambda a: a.update({"optim/steps": np.array("many")}), "optimizer state 'steps' holds <U4, not numbers"),
        (
            lambda a: a.update({"optim/velocity/0.b": np.zeros(8, np.int32)}),
            "optimizer state 'velocity/0.b' holds int32, not floating-point numbers",
        ),
        (
            lambda a: a.update({"optim/velocity/0.b": np.zeros(8, np.float64)}),
            "member 'optim/velocity/0.b.npy': too large to load: its header (8 float64) needs 64 bytes,"
            " expected at most 32 for the state of layer 0 (affine): parameter 'b' (8 float32)",
        ),
        (
            lambda a: a.update({"param/2.W": np.zeros((8, 3, 2), np.float32)}),
            "member 'param/2.W.npy': too large to load: its header (8x3x2 float32) needs 192 bytes,"
            " expected at most 96 for layer 2 (affine): parameter 'W' (8x3 float32)",
        ),
        (
            lambda a: a.update({"optim/steps": np.zeros(2**14 + 1)}),
            "member 'optim/steps.npy': too large to load: its header (16385 float64) needs 131,080 bytes,"
            " expected at most 65,536 for optimizer state that is not a parameter's",
        ),
        (lambda a: a.update({"optim/steps": np.array(-3)}), "'steps' must be a non-negative integer"),
        (lambda a: a.update({"optim/momentum/0.W": np.zeros((16, 8), np.float32)}), "unknown SGD state 'momentum/0.W'"),
        (lambda a: a.update({"layer/1.rng": np.zeros(3, np.uint8)}), "layer 1 (relu): unexpected state 'rng'"),
        (lambda a: a.update({"layer/9.rng": np.zeros(3, np.uint8)}), "layer 9 (not in the model): unexpected state 'rng'"),
        (
            lambda a: a.update({"param/0.b": np.array(["x"] * 8)}),
            "layer 0 (affine): parameter 'b' holds <U1, not floating-point numbers",
        ),
    ],
)
def test_arrays_that_cannot_be_used_are_refused_before_loading(registry, tmp_path, edit, reason):
    path = saved_run(registry, tmp_path)
    rewrite(path, lambda arrays, meta: edit(arrays))
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message.startswith(f"{path}: ") and reason in caught.value.message, caught.value.message


def test_a_saved_generator_may_vary_in_length_but_not_without_bound(registry, tmp_path):
    spec = tiny_spec()
    spec["layers"][1] = {"type": "dropout", "rate": 0.5}
    path = laminae.build(spec, registry=registry).save(tmp_path / "model.npz", registry=registry)
    rng = json.loads(checkpoint.read(path, registry=registry).parts.network.state_dict()["1.rng"].tobytes())
    rng["state"]["state"] = 1  # a shorter saved generator, as honest as the drawn one
    shorter = json.dumps(rng).encode()
    rewrite(path, lambda arrays, meta: arrays.update({"layer/1.rng": np.frombuffer(shorter, np.uint8)}))
    assert laminae.load(path, registry=registry).network.state_dict()["1.rng"].tobytes() == shorter
    padded = (json.dumps(rng) + " " * 2**16).encode()  # still valid JSON, and the same generator
    rewrite(path, lambda arrays, meta: arrays.update({"layer/1.rng": np.frombuffer(padded, np.uint8)}))
    with pytest.raises(laminae.CheckpointError) as caught:
        laminae.load(path, registry=registry)
    assert caught.value.message == (
        f"{path}: member 'layer/1.rng.npy': too large to load: its header ({len(padded)} uint8) needs"
        f" {len(padded):,} bytes, expected at most 65,536 for layer 1 (dropout): state 'rng' (a saved generator)"
    )


@pytest.mark.parametrize("plugins", [["a", "list"], {"layers:swish": "not a table"}, "text"])
def test_a_malformed_plugins_entry_does_not_hide_the_real_error(registry, trained, tmp_path, plugins):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path, registry=registry)

    def change(arrays, meta):
        meta["spec"]["layers"][1]["type"] = "swish"
        meta["plugins"] = plugins

    rewrite(path, change)
    with pytest.raises(laminae.CheckpointError, match="unknown layer type 'swish'"):
        laminae.load(path, registry=registry)


def test_written_files_get_the_usual_permissions_not_the_temporary_files(tmp_path):
    """mkstemp makes owner-only files; a checkpoint or an exported model must be
    readable as any new file is (0o666 less the umask)."""
    from laminae.atomic import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.bin", lambda file: file.write(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644
