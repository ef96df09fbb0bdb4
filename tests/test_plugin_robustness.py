"""Broken installed plugins, faked as entry points, seen through `laminae plugins`.

Each fake fails in its own way; the test asserts the exact line a user
would read, and that the good plugins and a model build are unaffected.
"""
from __future__ import annotations

import types

import attrs
import pytest

import laminae
import laminae.registry
from laminae.cli import main
from laminae.registry import BUILTIN_PLUGINS
from tests.fixtures import outside_plugin
from tests.test_registry import plugin

BUILTIN_COUNT = len(BUILTIN_PLUGINS)


@attrs.define
class FakeEntryPoint:
    """What ``importlib.metadata.entry_points`` yields, as far as the registry looks."""

    name: str
    version: str
    target: object
    loads: int = 0

    @property
    def dist(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(version=self.version)

    def load(self) -> object:
        self.loads += 1
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def raising_hook(register):
    register("half", outside_plugin.Square)
    raise RuntimeError("boom")


FAKES = {
    "good": (outside_plugin, "good 2.0 entry point ok: layer:square"),
    "no_dep": (
        ModuleNotFoundError("No module named 'missing_dep'"),
        "no_dep 2.0 entry point failed: import failed: ModuleNotFoundError: No module named 'missing_dep'",
    ),
    "exits": (
        SystemExit(3),  # a plugin that calls sys.exit() while imported must not end the program
        "exits 2.0 entry point failed: import failed: SystemExit: 3",
    ),
    "hook_raises": (
        plugin("hook_raises", register_layers=raising_hook),
        "hook_raises 2.0 entry point failed: hook register_layers raised RuntimeError: boom",
    ),
    "bad_class": (
        plugin("bad_class", register_layers=lambda register: register("plain", type("Plain", (), {}))),
        "bad_class 2.0 entry point failed: registered layer 'plain' as Plain, which is not an attrs class"
        " (declare its hyperparameters with @attrs.define)",
    ),
    "duplicate": (
        plugin("duplicate", register_layers=lambda register: register("relu", outside_plugin.Square)),
        "duplicate 2.0 entry point failed: layer 'relu' is already registered by plugin 'laminae.plugins.activations'",
    ),
}


@pytest.fixture
def fakes(monkeypatch):
    """Replace the installed entry points with the fakes, in a clean environment."""
    points = [FakeEntryPoint(name, "2.0", target) for name, (target, _line) in FAKES.items()]
    monkeypatch.setattr(laminae.registry, "entry_points", lambda group: points if group == "laminae" else [])
    for var in ("LAMINAE_STRICT_PLUGINS", "LAMINAE_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(var, raising=False)
    return {point.name: point for point in points}


def plugins_output(capsys, *argv: str) -> tuple[int, list[str], str]:
    status = main(["plugins", *argv])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_each_failure_is_reported_and_the_rest_works(fakes, capsys):
    status, lines, _ = plugins_output(capsys)
    assert status == 0
    assert all(line.split()[3] == "ok:" for line in lines[:BUILTIN_COUNT])
    assert lines[BUILTIN_COUNT:] == [line for _target, line in FAKES.values()]


def test_a_model_builds_with_good_and_builtin_layers_despite_failures(fakes):
    spec = {
        "input": [1, 4, 4],
        "layers": [{"type": "square"}, {"type": "affine", "units": 3}, {"type": "relu"}],
        "loss": "softmax_cross_entropy",
        "optimizer": "sgd",
        "train": {"dataset": "mnist-sample"},
    }
    model = laminae.build(spec, registry=laminae.make_registry(), name="mixed")
    assert model.network.output_shape == (3,)


def test_asking_for_a_failed_plugins_layer_names_the_failure(fakes):
    with pytest.raises(laminae.PluginError, match=r"unknown layer type 'half'.*plugins that failed to load: no_dep \(import failed"):
        laminae.make_registry().get("layers", "half")


def test_disable_autoload_skips_every_entry_point(fakes, capsys, monkeypatch):
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    status, lines, _ = plugins_output(capsys)
    assert status == 0 and len(lines) == BUILTIN_COUNT
    assert all(line.startswith("laminae.plugins.") for line in lines)
    assert all(point.loads == 0 for point in fakes.values())


def test_block_lists_without_importing(fakes, capsys):
    _, lines, _ = plugins_output(capsys, "--block", "good", "--block", "no_dep")
    assert "good 2.0 entry point blocked: blocked by --block" in lines
    assert "no_dep 2.0 entry point blocked: blocked by --block" in lines
    assert fakes["good"].loads == fakes["no_dep"].loads == 0


def test_strict_mode_stops_at_the_first_failure(fakes, capsys, monkeypatch):
    monkeypatch.setenv("LAMINAE_STRICT_PLUGINS", "1")
    status, lines, err = plugins_output(capsys)
    assert status == 2 and lines == []
    assert err == (
        "laminae plugins: error: plugin 'no_dep' failed: import failed:"
        " ModuleNotFoundError: No module named 'missing_dep'\n"
    )


def test_a_plugins_dir_that_does_not_exist_is_a_one_line_error(capsys, tmp_path):
    code, out, err = plugins_output(capsys, "--plugins-dir", str(tmp_path / "nowhere"))
    assert code == 2 and err == f"laminae plugins: error: --plugins-dir {tmp_path / 'nowhere'}: no such folder\n"
