"""A regular (non-editable) install works on its own: the wheel carries both
import packages and the embedded sample data, and needs no checkout."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_trains_the_quickstart_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "work"
    work.mkdir()
    (work / "models.toml").write_text((ROOT / "models.toml").read_text())
    code = "import laminae, laminae.plugins; print(laminae.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=work, capture_output=True, text=True)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout, where.stderr
    run = subprocess.run(
        [str(venv / "bin" / "laminae"), "train", "models.toml", "quickstart", "--epochs", "1", "--quiet", "--out", "run"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    assert float(last.split()[2]) > 0.8
