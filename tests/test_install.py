"""A regular (non-editable) install works on its own: the wheel carries both
import packages, the embedded sample data and the catalogue of built-in
models, and needs no checkout."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.xdist_group("builds-in-the-checkout")  # pip writes build/ and *.egg-info there
def test_wheel_install_trains_the_quickstart_outside_the_checkout(tmp_path):
    """From an empty folder, by the quickstart's bare name: no models.toml anywhere near."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import laminae, laminae.plugins; from laminae.network.catalogue import catalogue_path;"
        " print(laminae.__file__); print(catalogue_path())"
    )
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=work, capture_output=True, text=True)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout, where.stderr
    packaged = Path(where.stdout.splitlines()[1])
    assert packaged.read_text() == (ROOT / "models.toml").read_text()  # the one source, copied at build time
    listed = subprocess.run([str(venv / "bin" / "laminae"), "models"], cwd=work, capture_output=True, text=True)
    assert listed.returncode == 0 and "quickstart" in listed.stdout, listed.stderr
    run = subprocess.run(
        [str(venv / "bin" / "laminae"), "train", "quickstart", "--epochs", "1", "--quiet", "--out", "run"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    assert float(last.split()[2]) > 0.8
    assert sorted(p.name for p in work.iterdir()) == ["run"]
