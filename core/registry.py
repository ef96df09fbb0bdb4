"""Finds the plugins, asks each what it provides, and records who provides what.

Plugins come from four places, loaded in this order: the built-in modules
listed in :data:`BUILTIN_PLUGINS`, installed packages that declare
an entry point in the ``laminae`` group, ``*.py`` files in a ``--plugins-dir``,
and objects handed in from Python.  Each plugin is loaded and asked for its
registrations inside its own ``try``: a broken plugin is recorded as failed,
with a one-line reason, and the rest keep working (``LAMINAE_STRICT_PLUGINS=1``
makes the first failure fatal instead).  A plugin's registrations land only
if all of its hooks ran cleanly, so a failure never leaves half a plugin.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

import attrs
import pluggy

import laminae.hookspecs as hookspecs
from laminae.errors import LaminaeError, PluginError, did_you_mean, one_line
from laminae.fields import instantiate
from laminae.protocols import Dataset, Initializer, Layer, Logger, Loss, Optimizer, Schedule, Transform

@attrs.frozen
class Kind:
    """One kind of plugin.  A new kind is one hookspec (``register_<kind>`` in
    :mod:`laminae.hookspecs`), one protocol (in :mod:`laminae.protocols`) and
    one entry in :data:`KINDS`; everything else reads it from here."""

    word: str
    """One of them, in messages: ``"data set"``."""
    protocol: type
    """The contract: a registered class must have every method it declares."""
    spec_key: str | None
    """Where a model spec names one (a dotted path: ``"train.dataset"``); None
    for initializers, which layers name in fields marked ``metadata={"laminae":
    "initializer"}``."""

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods :attr:`protocol` declares (``__call__`` included), in order."""
        return tuple(
            name
            for name, value in vars(self.protocol).items()
            if callable(value) and (not name.startswith("_") or name == "__call__")
        )


KINDS: dict[str, Kind] = {
    "layers": Kind("layer", Layer, "layers"),
    "losses": Kind("loss", Loss, "loss"),
    "optimizers": Kind("optimizer", Optimizer, "optimizer"),
    "initializers": Kind("initializer", Initializer, None),
    "datasets": Kind("data set", Dataset, "train.dataset"),
    "transforms": Kind("transform", Transform, "train.augment"),
    "schedules": Kind("schedule", Schedule, "optimizer.schedule"),
    "loggers": Kind("logger", Logger, "train.log"),
}
"""Every kind of plugin, under the name its hook ends with (``register_layers``)."""

BUILTIN_PLUGINS = (
    "laminae.plugins.affine",
    "laminae.plugins.activations",
    "laminae.plugins.flatten",
    "laminae.plugins.conv",
    "laminae.plugins.pool",
    "laminae.plugins.global_pool",
    "laminae.plugins.batchnorm",
    "laminae.plugins.dropout",
    "laminae.plugins.blocks",
    "laminae.plugins.flip_average",
    "laminae.plugins.losses",
    "laminae.plugins.sgd",
    "laminae.plugins.adam",
    "laminae.plugins.initializers",
    "laminae.plugins.mnist",
    "laminae.plugins.transforms",
    "laminae.plugins.schedules",
    "laminae.plugins.tensorboard_log",
    "laminae.plugins.mlflow_log",
)
"""The built-in plugin modules, imported by name like any other plugin: the
registry knows their names, not their code, so they could live anywhere."""

ENTRY_POINT_GROUP = "laminae"


@attrs.define
class PluginInfo:
    """One line of ``laminae plugins``."""

    name: str
    version: str
    source: str
    registers: list[str] = attrs.field(factory=list)
    status: str = "ok"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Registry:
    """The registered classes of every kind, and the plugins they came from."""

    def __init__(self) -> None:
        self.classes: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
        self.owners: dict[tuple[str, str], str] = {}
        self.plugins: list[PluginInfo] = []
        self.refused: dict[tuple[str, str], list[str]] = {}
        """Names a plugin wanted but another had taken: ``(kind, name) -> [refused plugins]``."""
        self.notices: dict[str, None] = {}
        """What a caller should warn about, once each: refused names that were used."""

    def names(self, kind: str) -> list[str]:
        return sorted(self.classes[kind])

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``, or a one-line error that helps."""
        try:
            cls = self.classes[kind][name]
        except (KeyError, TypeError):
            pass
        else:
            for refused in self.refused.get((kind, name), ()):
                notice = (
                    f"{KINDS[kind].word} {name!r} comes from plugin {self.owner(kind, name)!r}: plugin {refused!r},"
                    " which also registers it, was not loaded (see laminae plugins)"
                )
                self.notices[notice] = None
            return cls
        installed = ", ".join(self.names(kind)) or "none"
        failed = [p for p in self.plugins if p.status == "failed"]
        hint = ""
        other = self.kind_of(name)
        if other is not None:
            hint = f"; {name!r} is a registered {KINDS[other].word}, not a {KINDS[kind].word}"
        if failed:
            hint += "; plugins that failed to load: " + ", ".join(f"{p.name} ({p.reason})" for p in failed)
        raise PluginError(
            f"unknown {KINDS[kind].word} type {name!r}{did_you_mean(name, self.classes[kind])}"
            f" (installed: {installed}){hint}"
        )

    def describe(self, kind: str, obj: object, where: str = "") -> str:
        """``"loss 'quadratic' (from plugin 'laminae.plugins.losses')"``: one object, for
        messages; with ``where`` (its place in the spec), ``"transform 'shift'
        (train.augment 1, from plugin 'laminae.plugins.transforms')"``."""
        name = self.name_of(kind, type(obj))
        if name is None:
            return f"{KINDS[kind].word} {type(obj).__name__}" + (f" ({where})" if where else "")
        return f"{KINDS[kind].word} {name!r} ({where + ', ' if where else ''}from plugin {self.owner(kind, name)!r})"

    def kind_of(self, name: Any) -> str | None:
        """The first kind under which ``name`` is registered, if any."""
        return next((kind for kind in KINDS if isinstance(name, str) and name in self.classes[kind]), None)

    def name_of(self, kind: str, cls: type) -> str | None:
        """The registered name of ``cls``, for messages about objects built in Python."""
        return next((name for name, c in self.classes[kind].items() if c is cls), None)

    def create(self, kind: str, spec: str | Mapping[str, Any]) -> Any:
        """Instantiate ``"name"`` or ``{"type": "name", **fields}``."""
        if isinstance(spec, str):
            spec = {"type": spec}
        options = dict(spec)
        cls = self.get(kind, options.pop("type", None))
        return instantiate(cls, options)

    def owner(self, kind: str, name: str) -> str:
        return self.owners[(kind, name)]


def make_registry(
    *,
    plugins: Iterable[Any] = (),
    plugins_dir: str | os.PathLike | None = None,
    block: Iterable[str] = (),
    autoload: bool | None = None,
    strict: bool | None = None,
) -> Registry:
    """Load every plugin and return a fresh registry.

    ``autoload`` defaults to true unless ``LAMINAE_DISABLE_PLUGIN_AUTOLOAD=1``;
    ``strict`` defaults to ``LAMINAE_STRICT_PLUGINS=1``.  Blocked plugins are
    listed but never imported.  Tests pass extra ``plugins`` (modules or
    objects with hook functions) to register them by hand.
    """
    if autoload is None:
        autoload = os.environ.get("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
    if strict is None:
        strict = os.environ.get("LAMINAE_STRICT_PLUGINS", "") not in ("", "0")
    loader = _Loader(set(block), strict)
    laminae_version = version("laminae")
    for module in BUILTIN_PLUGINS:
        loader.add(module, laminae_version, "built-in", lambda m=module: importlib.import_module(m))
    if autoload:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist_version = ep.dist.version if ep.dist is not None else "?"
            loader.add(ep.name, dist_version, "entry point", ep.load)
    if plugins_dir is not None:
        if not Path(plugins_dir).is_dir():
            raise PluginError(f"--plugins-dir {plugins_dir}: no such folder")
        for path in sorted(Path(plugins_dir).glob("*.py")):
            loader.add(path.stem, "local", f"plugins dir {plugins_dir}", lambda p=path: _import_file(p))
    for obj in plugins:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        loader.add(name, getattr(obj, "__version__", "local"), "python", lambda o=obj: o)
    return loader.registry


def _import_file(path: Path) -> Any:
    """Import a loose ``.py`` file under a private name, so it cannot shadow a real module."""
    module_name = f"laminae_plugins_dir.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module



class _Loader:
    """Loads plugins one at a time into one pluggy manager and one registry."""

    def __init__(self, block: set[str], strict: bool) -> None:
        self.block = block
        self.strict = strict
        self.registry = Registry()
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)

    def add(self, name: str, plugin_version: str, source: str, load: Callable[[], Any]) -> None:
        info = PluginInfo(name=name, version=plugin_version, source=source)
        self.registry.plugins.append(info)
        if name in self.block:
            info.status, info.reason = "blocked", "blocked by --block"
            return
        try:
            plugin = self._load(name, load)
            registrations = self._collect(name, plugin)
            if not registrations:
                raise PluginError("registers nothing (no laminae hook in it registered a class)")
            self._check_duplicates(name, registrations)
        except LaminaeError as err:
            info.status, info.reason = "failed", err.message
            if self.strict:
                raise PluginError(f"plugin {name!r} failed: {err.message}") from err
            return
        for kind, reg_name, cls in registrations:
            self.registry.classes[kind][reg_name] = cls
            self.registry.owners[(kind, reg_name)] = name
            info.registers.append(f"{KINDS[kind].word}:{reg_name}")

    def _load(self, name: str, load: Callable[[], Any]) -> Any:
        try:
            plugin = load()
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() must not end the program
            raise PluginError(f"import failed: {one_line(exc, with_type=True)}") from exc
        try:
            self.manager.register(plugin, name=name)
        except Exception as exc:
            raise PluginError(f"not a valid plugin: {one_line(exc, with_type=True)}") from exc
        return plugin

    def _collect(self, name: str, plugin: Any) -> list[tuple[str, str, type]]:
        """Run this plugin's hooks alone, so whatever goes wrong is pinned on it."""
        found: list[tuple[str, str, type]] = []
        try:
            for kind in KINDS:
                hook = getattr(self.manager.hook, f"register_{kind}")
                for impl in hook.get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(reg_name: str, cls: type, kind: str = kind) -> None:
                        _validate(kind, reg_name, cls)
                        found.append((kind, reg_name, cls))

                    try:
                        impl.function(register=register)
                    except LaminaeError:
                        raise
                    except (Exception, SystemExit) as exc:
                        raise PluginError(f"hook register_{kind} raised {one_line(exc, with_type=True)}") from exc
        except LaminaeError:
            self.manager.unregister(plugin)
            raise
        return found

    def _check_duplicates(self, name: str, registrations: list[tuple[str, str, type]]) -> None:
        taken = [(kind, reg_name) for kind, reg_name, _cls in registrations if (kind, reg_name) in self.registry.owners]
        for key in taken:
            self.registry.refused.setdefault(key, []).append(name)
        if taken:
            kind, reg_name = taken[0]
            owner = self.registry.owners[taken[0]]
            raise PluginError(f"{KINDS[kind].word} {reg_name!r} is already registered by plugin {owner!r}")


def _validate(kind: str, name: Any, cls: Any) -> None:
    """Refuse a registration that could never be built, at load time rather than mid-build."""
    if not isinstance(name, str) or not name:
        raise PluginError(f"registered a {KINDS[kind].word} under {name!r}, which is not a non-empty string")
    if not isinstance(cls, type):
        raise PluginError(f"registered {KINDS[kind].word} {name!r} as {cls!r}, which is not a class")
    if not attrs.has(cls):
        raise PluginError(
            f"registered {KINDS[kind].word} {name!r} as {cls.__name__}, which is not an attrs class"
            " (declare its hyperparameters with @attrs.define)"
        )
    missing = [m for m in KINDS[kind].methods if not callable(_defined(cls, m))]
    if missing:
        raise PluginError(
            f"registered {KINDS[kind].word} {name!r} as {cls.__name__}, which has no {', '.join(missing)} method"
        )


def _defined(cls: type, name: str) -> Any:
    """What ``cls`` or a base class defines as ``name``, or None.  Not ``getattr``:
    every class has a ``__call__``, its metaclass's, which makes instances; only
    one defined in the class or a base makes its instances callable."""
    return next((vars(base)[name] for base in cls.__mro__ if name in vars(base)), None)
