"""The example plugin package as a user gets it: installed, discovered, trained with.

The project's test command installs docs/examples/laminae-extras next to
Laminae, so these tests see it exactly as an installed third-party package.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ROOT / "docs" / "examples" / "laminae-extras"
EXTRAS_LINE = ("extras 0.1.0 entry point ok: layer:tanh, layer:leaky_relu, layer:spatial_dropout, layer:squeeze_excite, optimizer:lion, initializer:uniform,"
               " transform:gaussian_noise, schedule:cosine_restarts, logger:jsonl")
ACCURACY = re.compile(r"test accuracy: (\d\.\d{4}) \((\d+)/(\d+)\)")


def clean_env() -> dict[str, str]:
    """The environment without the switches that would turn entry points off."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LAMINAE_")}


def laminae(*args: str, cwd: Path = ROOT, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "laminae", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300
    )


def test_the_entry_point_is_discovered():
    done = laminae("plugins")
    assert done.returncode == 0, done.stderr
    assert EXTRAS_LINE in done.stdout.splitlines()


def test_a_model_mixing_builtin_and_extras_layers_trains(tmp_path):
    done = laminae("train", str(EXTRAS / "models.toml"), "tanh-mlp", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    match = ACCURACY.fullmatch(done.stdout.splitlines()[-1])
    assert match, done.stdout
    assert float(match.group(1)) > 0.5 and match.group(3) == "1000"


def test_a_composite_layer_from_the_package_trains_from_toml(tmp_path):
    """squeeze_excite, built from the registry's own layers inside the package,
    is found through the entry point, shown as a tree and trained."""
    summary = laminae("summary", str(EXTRAS / "models.toml"), "se-cnn")
    assert summary.returncode == 0, summary.stderr
    rows = [line.split() for line in summary.stdout.splitlines()]
    assert ["2", "squeeze_excite", "6,272", "(8,", "28,", "28)", "76"] in rows
    assert ["2.1", "affine", "8", "(4,)", "36"] in rows
    done = laminae("train", str(EXTRAS / "models.toml"), "se-cnn", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    match = ACCURACY.fullmatch(done.stdout.splitlines()[-1])
    assert match and float(match.group(1)) > 0.5, done.stdout
    with np.load(tmp_path / "run" / "model.npz") as saved:
        assert {"param/2.1.W", "param/2.3.b"} <= set(saved.files)


def test_the_packages_own_tests_pass():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXTRAS,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b\d+ passed\b", done.stdout)


@pytest.mark.xdist_group("builds-in-the-checkout")  # pip writes build/ and *.egg-info there
def test_a_fresh_virtual_environment_installs_and_lists_both(tmp_path):
    """A real venv (no system site-packages), installed from the local index, then a
    model mixing built-in and extras layers trained in it: about 30 s."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-e", str(ROOT), "-e", str(EXTRAS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    code = "import laminae, laminae_extras; print(laminae.__version__, laminae_extras.__version__)"
    imported = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    assert imported.stdout.split() == ["0.1.0", "0.1.0"], imported.stderr
    done = laminae("plugins", cwd=tmp_path, python=python)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "laminae.plugins.affine 0.1.0 built-in ok: layer:affine" in lines
    assert EXTRAS_LINE in lines
    trained = laminae(
        "train", str(EXTRAS / "models.toml"), "tanh-mlp", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"),
        cwd=tmp_path, python=python,
    )
    assert trained.returncode == 0, trained.stderr
    assert ACCURACY.fullmatch(trained.stdout.splitlines()[-1]), trained.stdout


def test_resuming_a_spatial_dropout_network_trained_by_lion_matches_an_uninterrupted_run(tmp_path):
    """Spatial dropout draws a mask every step: its generator is layer state, kept
    in the checkpoint, so a resumed run draws the masks an uninterrupted one drew;
    Lion's momentum is optimizer state, kept there too."""
    import numpy as np

    import laminae
    import laminae_extras
    from laminae.registry import make_registry
    from tests.training_helpers import LossSpy, params_equal, tiny_data, tiny_spec

    registry = make_registry(plugins=[laminae_extras], autoload=False, strict=True)
    spec = tiny_spec()
    spec["layers"].insert(2, {"type": "spatial_dropout", "rate": 0.5})
    spec["optimizer"] = {"type": "lion", "lr": 0.01, "weight_decay": 0.1}
    x, y = tiny_data()
    reference = laminae.build(spec, registry=registry)
    reference.fit(x, y, progress=False)
    model = laminae.build(spec, registry=registry)
    model.loss = LossSpy(model.loss, at=14)  # epoch 3, batch 2
    assert model.fit(x, y, progress=False, run_dir=tmp_path / "run", registry=registry).interrupted
    with np.load(tmp_path / "run" / "model.npz") as archive:
        assert archive["layer/2.rng"].dtype == np.uint8
        assert {k for k in archive.files if k.startswith("optim/")} == {f"optim/m/{name}" for name in model.network.params}

    model, state = laminae.load_training(tmp_path / "run", registry=registry)
    model.fit(x, y, progress=False, resume=state)
    assert params_equal(model.network, reference.network)

    path = tmp_path / "run" / "model.npz"
    for damage, reason in [
        (lambda a: a.update({"layer/2.rng": np.frombuffer(b"{not json", np.uint8)}), "state: .*not valid JSON"),
        (lambda a: a.pop("layer/2.rng"), "state 'rng' is missing$"),
        (lambda a: a.update({"layer/2.rng": a["layer/2.rng"].astype(np.int64)}), "state 'rng' holds int64, expected uint8$"),
        (lambda a: a.update({"layer/2.extra": np.zeros(2)}), "unexpected state 'extra'$"),
    ]:
        with np.load(path) as archive:
            arrays = dict(archive)
        damage(arrays)
        np.savez(path, **arrays)
        with pytest.raises(laminae.CheckpointError, match=f"^{path}: layer 2 \\(spatial_dropout\\): {reason}") as caught:
            laminae.load(path, registry=registry)
        assert "\n" not in caught.value.message
        model.save(path)  # whole again for the next damage
