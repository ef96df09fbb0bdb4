"""The registry: built-ins through the hooks, broken plugins isolated, duplicates refused."""
import types

import attrs
import pytest

import laminae


def plugin(name, **hooks):
    """A plugin object with the given hook functions, as a third party would write them."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, laminae.hookimpl(function))
    return module


@attrs.define
class Identity:
    params: dict = attrs.field(init=False, factory=dict)
    grads: dict = attrs.field(init=False, factory=dict)

    def build(self, input_shape, ctx):
        return input_shape

    def forward(self, x, training):
        return x

    def backward(self, dout):
        return dout


def status(registry, name):
    info = next(p for p in registry.plugins if p.name == name)
    return info.status, info.reason


def test_builtins_register_through_the_hooks(registry):
    assert {"affine", "relu", "sigmoid", "conv", "pool", "flatten"} <= set(registry.names("layers"))
    assert registry.names("losses") == ["quadratic", "softmax_cross_entropy"]
    assert registry.names("optimizers") == ["adam", "adamw", "sgd"]
    assert registry.names("initializers") == ["he", "normal", "xavier", "zeros"]
    assert registry.owner("layers", "affine") == "laminae.plugins.affine"
    assert all(p.status == "ok" and p.source == "built-in" for p in registry.plugins)


def test_each_registry_is_independent():
    extra = plugin("extra", register_layers=lambda register: register("identity", Identity))
    with_extra = laminae.make_registry(plugins=[extra], autoload=False)
    without = laminae.make_registry(autoload=False)
    assert "identity" in with_extra.names("layers")
    assert "identity" not in without.names("layers")


def test_unknown_type_suggests_and_lists(registry):
    with pytest.raises(laminae.PluginError, match=r"unknown layer type 'afine'; did you mean 'affine'\? \(installed: affine, batchnorm, branches, conv, dropout, flatten, flip_average, global_avg_pool, pool, relu, repeat, residual, sequential, sigmoid\)"):
        registry.get("layers", "afine")


def test_duplicate_name_names_both_plugins():
    first = plugin("first_pkg", register_layers=lambda register: register("identity", Identity))
    second = plugin("second_pkg", register_layers=lambda register: register("identity", Identity))
    registry = laminae.make_registry(plugins=[first, second], autoload=False)
    assert status(registry, "first_pkg") == ("ok", "")
    assert status(registry, "second_pkg") == ("failed", "layer 'identity' is already registered by plugin 'first_pkg'")
    assert registry.owner("layers", "identity") == "first_pkg"


def test_duplicate_of_a_builtin_is_refused():
    clash = plugin("clash", register_layers=lambda register: register("relu", Identity))
    registry = laminae.make_registry(plugins=[clash], autoload=False)
    assert status(registry, "clash") == ("failed", "layer 'relu' is already registered by plugin 'laminae.plugins.activations'")


def test_hook_that_raises_is_isolated_and_rolled_back():
    def register_layers(register):
        register("half", Identity)
        raise RuntimeError("boom")

    registry = laminae.make_registry(plugins=[plugin("broken", register_layers=register_layers)], autoload=False)
    assert status(registry, "broken") == ("failed", "hook register_layers raised RuntimeError: boom")
    assert "half" not in registry.names("layers")
    assert "affine" in registry.names("layers")


def test_registering_something_that_is_not_a_layer():
    class NoBackward:
        def build(self, input_shape, ctx):
            return input_shape

    bad_cls = attrs.define(NoBackward)
    registry = laminae.make_registry(
        plugins=[
            plugin("not_attrs", register_layers=lambda register: register("plain", type("Plain", (), {}))),
            plugin("no_backward", register_layers=lambda register: register("nb", bad_cls)),
            plugin("instance", register_layers=lambda register: register("inst", Identity())),
        ],
        autoload=False,
    )
    assert status(registry, "not_attrs")[1].startswith("registered layer 'plain' as Plain, which is not an attrs class")
    assert status(registry, "no_backward") == ("failed", "registered layer 'nb' as NoBackward, which has no forward, backward method")
    assert status(registry, "instance")[1].startswith("registered layer 'inst' as Identity(")


@attrs.define
class Uncallable:
    """A method, but no ``__call__``: what a transform, a schedule and an initializer are called by."""

    def apply(self, *args):
        return args[0]


@attrs.define
class CalledThroughItsBase(Uncallable):
    def __call__(self, *args):
        return args[0]


@attrs.define
class InheritsCall(CalledThroughItsBase):
    pass


@pytest.mark.parametrize(("kind", "word"), [("transforms", "transform"), ("schedules", "schedule"),
                                            ("initializers", "initializer")])
def test_a_class_without_the_call_its_protocol_requires_is_refused(kind, word):
    registry = laminae.make_registry(
        plugins=[
            plugin("uncallable", **{f"register_{kind}": lambda register: register("still", Uncallable)}),
            plugin("inherited", **{f"register_{kind}": lambda register: register("moving", InheritsCall)}),
        ],
        autoload=False,
    )
    assert status(registry, "uncallable") == ("failed", f"registered {word} 'still' as Uncallable, which has no __call__ method")
    assert status(registry, "inherited") == ("ok", "")


def test_strict_mode_makes_failure_fatal(monkeypatch):
    broken = plugin("broken", register_layers=lambda register: 1 / 0)
    monkeypatch.setenv("LAMINAE_STRICT_PLUGINS", "1")
    with pytest.raises(laminae.PluginError, match=r"plugin 'broken' failed: hook register_layers raised ZeroDivisionError: division by zero"):
        laminae.make_registry(plugins=[broken], autoload=False)


def test_blocked_plugin_is_listed_but_not_loaded():
    extra = plugin("extra", register_layers=lambda register: register("identity", Identity))
    registry = laminae.make_registry(plugins=[extra], autoload=False, block=["extra"])
    assert status(registry, "extra") == ("blocked", "blocked by --block")
    assert "identity" not in registry.names("layers")


def test_plugins_dir_loads_loose_files(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import laminae\n"
        "from tests.test_registry import Identity\n"
        "@laminae.hookimpl\n"
        "def register_layers(register):\n"
        "    register('mine', Identity)\n"
    )
    (tmp_path / "bad.py").write_text("raise ImportError('no numpy here')\n")
    registry = laminae.make_registry(plugins_dir=tmp_path, autoload=False)
    assert status(registry, "mine") == ("ok", "")
    assert status(registry, "bad") == ("failed", "import failed: ImportError: no numpy here")
    assert registry.plugins[-1].source == f"plugins dir {tmp_path}"


def test_importing_laminae_does_no_plugin_work():
    import subprocess
    import sys

    code = "import sys, laminae; print(any(m.startswith('laminae.plugins.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
