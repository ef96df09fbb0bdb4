"""The README's commands and examples are the ones that work."""
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import laminae
from tests.doc_blocks import blocks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fenced(lang):
    return [b.text for b in blocks(README) if b.lang == lang]


def test_ci_runs_exactly_the_readme_test_command():
    """Its last line is the README's command; before it, only the install of the
    browser that the report's test drives, which the README mentions."""
    test_command = next(text.strip() for text in fenced("bash") if "pytest" in text)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    *setup, last = ci_lines
    assert last == test_command
    assert setup == [
        "if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then",
        "  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
        "fi",
    ]
    assert "apt-get install chromium chromium-driver" in README


def test_readme_install_command_runs_the_quickstart():
    install = fenced("bash")[0].strip()
    assert install.endswith("laminae train models.toml quickstart") and "pip install -e ." in install


def test_readme_toml_example_builds(registry):
    for text in fenced("toml"):
        doc = tomllib.loads(text)
        for name in doc["models"]:
            model = laminae.build(doc, name=name, registry=registry)
            assert model.network.output_shape == (10,)


def test_readme_python_example_runs(tmp_path):
    shutil.copy(ROOT / "models.toml", tmp_path)
    (code,) = fenced("python")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "total params: 101,770 (float32)" in result.stdout
    loss, accuracy = eval(result.stdout.strip().splitlines()[-1])
    assert 0.5 < accuracy <= 1 and loss > 0
    assert (tmp_path / "quickstart.npz").exists()
