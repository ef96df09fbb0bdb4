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

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ROOT / "docs" / "examples" / "laminae-extras"
EXTRAS_LINE = "extras 0.1.0 entry point ok: layer:tanh, layer:leaky_relu, layer:dropout, optimizer:adam, initializer:uniform"
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


def test_a_fresh_virtual_environment_installs_and_lists_both(tmp_path):
    """A real venv (no system site-packages), installed from the local index: about 25 s."""
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
