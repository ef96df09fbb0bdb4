"""The package's floors hold: import-linter's contracts pass, the import graph has
no cycles (through a package's ``__init__`` neither), and nothing dodges the
rules with an import inside a function.

import-linter (through grimp) reads the package from the first ``laminae`` on
the path, and an editable install hides ``laminae.plugins`` from it (plugins/
sits beside core/, not inside it).  So each check runs on a copy laid out as
installed: ``laminae/`` from core/, ``laminae/plugins/`` from plugins/.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from laminae.registry import BUILTIN_PLUGINS

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

OPTIONAL_DEPENDENCIES = {"matplotlib", "PIL", "pytest", "pooch", "requests", "optuna", "tomlkit", "jinja2"}
"""Imported inside the functions that need them: a missing extra costs one
line from :mod:`laminae.optional`, and a command that does not use them does
not pay for importing them."""


def installed_copy(tmp_path: Path) -> Path:
    """core/ and plugins/ copied as they are installed, under ``tmp_path/laminae``."""
    shutil.copytree(ROOT / "core", tmp_path / "laminae", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", tmp_path / "laminae" / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_every_import_contract_is_kept(tmp_path):
    """The independence contract lists the built-in plugins by hand: it must list
    every module the registry loads, or a new plugin would escape it."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = next(c for c in contracts if c["type"] == "independence")["modules"]
    assert sorted(independent) == sorted(BUILTIN_PLUGINS)
    result = lint_imports(installed_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout
    assert "laminae.plugins" in _modules(tmp_path)  # the contracts saw the built-in plugins


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("training/loop.py", "from laminae.model import Model", "core/ in floors"),
        ("network/network.py", "from laminae.persistence import checkpoint", "core/ in floors"),
        ("registry.py", "from laminae.network import Network", "core/ in floors"),
        ("plugins/affine.py", "import laminae", "the built-in plugins import only the plugin API"),
        ("training/forked.py", "import laminae.plugins.conv", "the core imports no built-in plugin"),
        ("plugins/pool.py", "from laminae.plugins.activations import ReLU", "no built-in plugin imports another"),
    ],
)
def test_an_import_that_breaks_a_floor_fails_the_contracts(tmp_path, module, line, contract):
    tree = installed_copy(tmp_path)
    path = tree / "laminae" / module
    path.write_text(path.read_text() + f"\n{line}  # a scratch change\n")
    result = lint_imports(tree)
    assert result.returncode == 1
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken


def _modules(tree: Path) -> dict[str, list[str]]:
    """Every module of the copied package and the modules of it that it imports
    (grimp's graph), with :func:`package_faces_imported` added."""
    script = (
        "import json, grimp\n"
        "graph = grimp.build_graph('laminae', cache_dir=None)\n"
        "print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tree, env=env, capture_output=True, text=True, check=True)
    graph = json.loads(result.stdout)
    for module, packages in package_faces_imported(tree).items():
        graph[module] = sorted({*graph[module], *packages})
    return graph


def package_faces_imported(tree: Path) -> dict[str, set[str]]:
    """The packages each module of ``tree/laminae`` names in ``from PACKAGE import
    name`` (or ``from . import name``): it takes ``name`` from the package's face,
    its ``__init__``, whatever ``name`` is.  grimp records only ``PACKAGE.name``
    when that is a submodule, and so missed ``laminae.training ->
    laminae.training.loop -> laminae.training`` while the loop imported
    ``batches`` this way."""
    root = tree / "laminae"
    packages = {".".join(("laminae", *p.parent.relative_to(root).parts)) for p in root.rglob("__init__.py")}
    found: dict[str, set[str]] = {}
    for source in root.rglob("*.py"):
        parts = source.relative_to(root).with_suffix("").parts
        module = ".".join(("laminae", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        package = module if source.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom):
                named = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if named in packages and named != module:
                    found.setdefault(module, set()).add(named)
    return found


def import_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported, [*path, imported])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_import_graph_has_no_cycles(tmp_path):
    graph = _modules(installed_copy(tmp_path))
    assert len(graph) > 50
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("module", "line", "step"),
    [
        ("training/state.py", "from laminae.training import batches", ("laminae.training.state", "laminae.training")),
        ("tuning/table.py", "from . import paths", ("laminae.tuning.table", "laminae.tuning")),
    ],
    ids=["absolute", "relative"],
)
def test_an_import_of_a_package_face_that_imports_back_is_a_cycle(tmp_path, module, line, step):
    """Each package's ``__init__`` imports the module, directly or not; grimp alone
    sees no cycle here, since the module imported is another."""
    tree = installed_copy(tmp_path)
    path = tree / "laminae" / module
    path.write_text(path.read_text() + f"\n{line}  # a scratch change\n")
    cycle = import_cycle(_modules(tree))
    assert cycle is not None and step in zip(cycle, cycle[1:]), cycle


def function_local_imports(source: Path, root: Path = ROOT) -> list[str]:
    """``file:line module`` for each import statement inside a function body."""
    found = []
    tree = ast.parse(source.read_text(), str(source))
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{source.relative_to(root)}:{node.lineno} {name}" for name in names]
    return found


def test_no_import_hides_inside_a_function_except_optional_dependencies():
    """Function-local imports are for optional dependencies and the CLI's lazy
    subcommands only; anywhere else they would dodge the contracts above."""
    sources = [p for folder in ("core", "plugins") for p in sorted((ROOT / folder).rglob("*.py"))]
    offending = [
        found
        for source in sources
        if "cli" not in source.relative_to(ROOT).parts
        for found in function_local_imports(source)
        if found.split()[-1].split(".")[0] not in OPTIONAL_DEPENDENCIES
    ]
    assert offending == []


def test_the_function_local_import_check_can_fail(tmp_path):
    scratch = tmp_path / "scratch.py"
    scratch.write_text("import numpy\n\n\ndef f():\n    from laminae.model import Model\n    return Model\n")
    assert function_local_imports(scratch, tmp_path) == ["scratch.py:5 laminae.model"]


def test_the_wheel_lists_every_subpackage():
    """setuptools installs only the packages pyproject.toml lists: a floor or
    plugin helper folder left out would work from a checkout and be missing
    from the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"laminae." + ".".join(p.parent.relative_to(ROOT / "core").parts) for p in (ROOT / "core").rglob("__init__.py")}
    found |= {".".join(("laminae", "plugins", *p.parent.relative_to(ROOT / "plugins").parts)) for p in (ROOT / "plugins").rglob("__init__.py")}
    assert {name.rstrip(".") for name in found} == listed
