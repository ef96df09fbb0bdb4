"""docs/plugins.md is followed as a reader would: every block is written, run or built.

The conventions are explained in an HTML comment at the top of the page and
implemented in :mod:`tests.doc_blocks`.  Each step of the page becomes one
test, which first lays out the files the page has created up to that point.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest

import laminae
from laminae import hookspecs
from laminae.network import assemble_document
from tests.doc_blocks import Block, Command, blocks, commands, matches

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "docs" / "examples"
PACKAGE = "laminae-extras"
BLOCKS = blocks(DOC.read_text(encoding="utf-8"))
FILES = [b for b in BLOCKS if b.file]


def _steps() -> list:
    """Each runnable step, with how many file blocks precede it, as a pytest param."""
    steps = []
    cwd, files = ".", 0
    for block in BLOCKS:
        if block.file:
            files += 1
        elif block.lang == "python":
            steps.append(pytest.param(files, block, id=f"line {block.line}"))
        elif block.lang == "console":
            found, cwd = commands(block, cwd)
            steps.extend(pytest.param(files, c, id=f"line {c.line}: {' '.join(c.argv)}") for c in found)
    return steps


STEPS = _steps()


def lay_out(root: Path, count: int) -> None:
    """Write the first ``count`` file blocks under ``root``, as the reader has by then."""
    for block in FILES[:count]:
        path = root / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")


def test_every_hook_is_documented():
    text = DOC.read_text(encoding="utf-8")
    specs = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, f"{hookspecs.PROJECT}_spec")]
    assert len(specs) == 8
    missing = [name for name in specs if f"`{name}(register)`" not in text]
    assert not missing, f"docs/plugins.md does not document the hooks {missing}"


@pytest.mark.parametrize("block", FILES, ids=lambda b: b.file)
def test_file_block(block):
    if block.file.endswith(".py"):
        compile(block.text, f"{DOC}:{block.line}", "exec")
    if block.file.startswith(f"{PACKAGE}/"):
        assert block.text == (EXAMPLES / block.file).read_text(encoding="utf-8"), (
            f"docs/plugins.md:{block.line} differs from docs/examples/{block.file}"
        )


def test_the_tutorial_builds_the_whole_example_package():
    shown = {b.file for b in FILES if b.file.startswith(f"{PACKAGE}/")}
    skip = ("__pycache__", ".egg-info", ".pytest_cache")
    built = EXAMPLES / PACKAGE / "build"  # a strict editable install's links (pip's editable_mode=strict)
    actual = {
        path.relative_to(EXAMPLES).as_posix()
        for path in (EXAMPLES / PACKAGE).rglob("*")
        if path.is_file() and not any(part.endswith(skip) for part in path.parts) and built not in path.parents
    }
    assert shown == actual


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "toml"], ids=lambda b: f"line {b.line}")
def test_toml_block(block, tmp_path):
    doc = tomllib.loads(block.text)
    if "models" in doc:
        import laminae_extras

        lay_out(tmp_path, len(FILES))
        registry = laminae.make_registry(plugins=[laminae_extras], plugins_dir=tmp_path / "my_plugins", autoload=False)
        assert assemble_document(doc, registry=registry, source=f"docs/plugins.md:{block.line}")
    elif block.file and block.file.endswith("pyproject.toml"):
        assert doc["project"]["entry-points"]["laminae"] == {"extras": "laminae_extras"}


@pytest.mark.parametrize("count, step", STEPS)
def test_step(count, step, tmp_path, monkeypatch):
    lay_out(tmp_path, count)
    if isinstance(step, Block):
        monkeypatch.chdir(tmp_path)
        exec(compile(step.text, f"{DOC}:{step.line}", "exec"), {"__name__": f"docs_line_{step.line}"})
    else:
        run_command(step, tmp_path)


def run_command(command: Command, root: Path) -> None:
    where = f"docs/plugins.md:{command.line}: {' '.join(command.argv)}"
    cwd = root / command.cwd
    program, *args = command.argv
    if program in ("mkdir", "cd"):
        (root / command.cwd).mkdir(parents=True, exist_ok=True)
        return
    if program == "pip":
        # The test command installs the example package, which the page's files equal.
        assert args == ["install", "-e", "."], where
        dist = distribution(PACKAGE)
        version = tomllib.loads((cwd / "pyproject.toml").read_text())["project"]["version"]
        assert dist.version == version, where
        assert any(ep.group == "laminae" and ep.name == "extras" for ep in dist.entry_points), where
        return
    if program == "laminae":
        argv = [sys.executable, "-m", "laminae", *args]
    elif program == "python":
        argv = [sys.executable, *args]
    else:
        pytest.fail(f"{where}: tests/test_docs_plugins.py does not know how to check {program!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAE_")} | command.env
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert matches(command.expected, output), f"{where}: expected\n" + "\n".join(command.expected) + f"\ngot\n{output}"
