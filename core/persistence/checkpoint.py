"""One ``.npz`` file that holds everything needed to use or resume a model.

Arrays are stored under stable names (``param/3.W``, ``optim/velocity/3.W``)
next to one JSON entry, ``meta``, kept as uint8 bytes: the resolved spec (so
no TOML file is needed to rebuild the model), where training stands, and the
versions of Laminae and of the plugins that provide the model's types.
Nothing is pickled, and nothing read is unpickled: a checkpoint may come
from anyone, and unpickling runs their code.  Nor is a size the file
declares believed: ``meta`` is read first, within :data:`META_MAX_BYTES`;
the model its spec builds says how large every other array may be, and an
array declaring more is refused before its data is decompressed.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from laminae.errors import CheckpointError, LaminaeError
from laminae.network.assembly import ModelParts, assemble
from laminae.network.network import Network
from laminae.network.spec import named_types
from laminae.atomic import atomic_write
from laminae.randomness import is_saved_generator
from laminae.registry import Registry, make_registry
from laminae.safe_npz import NpyHeader, NpzArchive, open_npz, shape_and_dtype

CHECKPOINT_FILE = "model.npz"
"""The checkpoint's name inside a run directory."""
FORMAT = "laminae.checkpoint"
FORMAT_VERSION = 1
META = "meta"
PARAM = "param/"
OPTIM = "optim/"
LAYER = "layer/"
"""Layer state that is not a parameter (a dropout's generator): ``layer/3.rng``."""
META_MAX_BYTES = 2**22
"""The most ``meta`` may hold: 4 MiB.  The catalogue's largest, mnist_resnet's
after an epoch of training, holds 3,407 bytes; this is 1,200 times that, room
for a spec of some 30,000 layer tables, while parsing 4 MiB of the costliest
JSON (``[[],[],...]``) takes 90 MB."""
UNSIZED_STATE_MAX_BYTES = 2**16
"""The most a state array that no parameter sizes may hold: a saved generator
(about 150 bytes of JSON), an optimizer's step count (8)."""


@attrs.frozen(eq=False)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model's parts, and where its training stopped (None if never trained)."""

    parts: ModelParts
    training: dict[str, Any] | None
    path: Path


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or the checkpoint inside it when it is a run directory."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save(
    parts: ModelParts,
    path: str | os.PathLike,
    *,
    training: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write the model's ``parts`` (and the training position) atomically to ``path``."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "laminae_version": version("laminae"),
        "plugins": plugin_versions(parts.spec, registry),
        "name": parts.name,
        "spec": parts.spec,
        "training": None if training is None else dict(training),
    }
    arrays = {PARAM + name: array for name, array in parts.network.params.items()}
    arrays.update((OPTIM + name, array) for name, array in parts.optimizer.state_dict().items())
    arrays.update((LAYER + name, array) for name, array in parts.network.state_dict().items())
    arrays[META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda file: np.savez(file, **arrays))
    return path


def plugin_versions(spec: Mapping[str, Any], registry: Registry | None = None) -> dict[str, dict[str, str]]:
    """``{"layer:conv": {"plugin": ..., "version": ...}}`` for every type the spec names."""
    registry = registry or make_registry()
    versions = {p.name: p.version for p in registry.plugins}
    found: dict[str, dict[str, str]] = {}
    for kind, name in named_types(spec, registry):
        owner = registry.owners.get((kind, name))
        if owner is not None:
            found[f"{kind}:{name}"] = {"plugin": owner, "version": versions.get(owner, "?")}
    return found


def read(path: str | os.PathLike, *, registry: Registry | None = None) -> Checkpoint:
    """Rebuild the model from the stored spec, then copy the stored arrays into it.

    Every array is checked against the model, by its header, before any
    array's data is read: each may hold what the model's own array of that
    name holds (:func:`array_budgets`), no more.
    """
    path = checkpoint_path(path)
    with open_npz(path, error=CheckpointError, name=str(path), kind="a Laminae checkpoint") as archive:
        meta = _read_meta(archive, path)
        try:
            parts = assemble(meta["spec"], registry=registry, source=str(path), name=meta.get("name"))
        except LaminaeError as err:
            raise CheckpointError(f"{err.message}{_needed_plugins(meta, err)}") from None
        budgets = array_budgets(parts.network, archive.headers)
        for key, budget in budgets.items():
            archive.check_size(key, *budget)
        _check_arrays(parts.network, archive.headers, path)
        arrays = {key: archive.read(key, *budget) for key, budget in budgets.items()}
    for name, array in _part(arrays, PARAM).items():
        parts.network.params[name][...] = array
    try:
        parts.network.load_state_dict(_part(arrays, LAYER))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        parts.optimizer.load_state_dict(_part(arrays, OPTIM))
    except LaminaeError as err:
        raise CheckpointError(f"{path}: optimizer state: {err.message}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not fit the optimizer: {exc}") from None
    return Checkpoint(parts, meta.get("training"), path)


def array_budgets(network: Network, keys: Iterable[str]) -> dict[str, tuple[int, str]]:
    """The most bytes each stored array of ``keys`` that ``network`` has may
    hold, and what for (a phrase for the message refusing more).  A
    parameter, and an optimizer's state for one, holds what the parameter
    does; a layer's state what the freshly built layer's does, but for a
    saved generator, whose length varies."""
    fresh = network.state_dict()
    budgets = {key: _budget(network, fresh, key) for key in keys}
    return {key: budget for key, budget in budgets.items() if budget is not None}


def _budget(network: Network, fresh: Mapping[str, np.ndarray], key: str) -> tuple[int, str] | None:
    if key.startswith(PARAM):
        return _size_of(network, network.params, key.removeprefix(PARAM), "parameter")
    if key.startswith(OPTIM):
        _, slash, param = key.removeprefix(OPTIM).rpartition("/")
        if not slash:
            return UNSIZED_STATE_MAX_BYTES, "for optimizer state that is not a parameter's"
        return _size_of(network, network.params, param, "parameter", "the state of ")
    name = key.removeprefix(LAYER)
    if not key.startswith(LAYER) or name not in fresh:
        return None
    if is_saved_generator(fresh[name]):
        path, own = network.split_name(name)
        return UNSIZED_STATE_MAX_BYTES, f"for {network.layer_label(path)}: state {own!r} (a saved generator)"
    return _size_of(network, fresh, name, "state")


def _size_of(
    network: Network, arrays: Mapping[str, np.ndarray], name: str, what: str, whose: str = ""
) -> tuple[int, str] | None:
    """``arrays[name]``'s bytes, and what it is (``for layer 0 (affine): parameter 'W' (16x8 float32)``)."""
    if name not in arrays:
        return None
    array = arrays[name]
    path, own = network.split_name(name)
    described = shape_and_dtype(array.shape, array.dtype)
    return array.nbytes, f"for {whose}{network.layer_label(path)}: {what} {own!r} ({described})"


def _check_arrays(network: Network, headers: Mapping[str, NpyHeader], path: Path) -> None:
    """Refuse, in one line of every problem, the stored arrays (as their headers
    declare them) that cannot fill ``network`` and its optimizer."""
    unexpected = [k for k in headers if k != META and not k.startswith((PARAM, OPTIM, LAYER))]
    problems = [f"unexpected array {k!r}" for k in unexpected]
    problems += parameter_problems(network, _part(headers, PARAM))
    problems += layer_state_problems(network, _part(headers, LAYER))
    problems += optimizer_state_problems(network, _part(headers, OPTIM))
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))


def _part(stored: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``stored`` under ``prefix``, by their names without it."""
    return {k.removeprefix(prefix): v for k, v in stored.items() if k.startswith(prefix)}


def parameter_problems(network: Network, stored: Mapping[str, NpyHeader]) -> list[str]:
    """What keeps the arrays ``stored`` (as their headers declare them) from
    filling ``network``, one phrase per layer and parameter."""
    problems = []
    for name in sorted(stored.keys() | network.params.keys(), key=_param_order):
        path, param = network.split_name(name)
        where = network.layer_label(path)
        if name not in network.params:
            problems.append(f"{where}: unexpected parameter {param!r}")
        elif name not in stored:
            problems.append(f"{where}: parameter {param!r} is missing")
        elif stored[name].shape != network.params[name].shape:
            problems.append(
                f"{where}: parameter {param!r} has shape {stored[name].shape}, expected {network.params[name].shape}"
            )
        elif not np.issubdtype(stored[name].dtype, np.floating):
            problems.append(f"{where}: parameter {param!r} holds {stored[name].dtype}, not floating-point numbers")
    return problems


def layer_state_problems(network: Network, stored: Mapping[str, NpyHeader]) -> list[str]:
    """What keeps ``stored`` (headers) from being the layers' state, held against what the
    freshly built layers' own ``state_dict()`` holds: names, dtypes and shapes,
    but for bytes (a 1-D uint8 array, such as a generator stored with
    :func:`laminae.randomness.rng_to_array`), whose length may vary."""
    expected = network.state_dict()
    problems = []
    for name in sorted(stored.keys() | expected.keys(), key=_param_order):
        path, key = network.split_name(name)
        where = network.layer_label(path)
        if name not in expected:
            problems.append(f"{where}: unexpected state {key!r}")
        elif name not in stored:
            problems.append(f"{where}: state {key!r} is missing")
        elif stored[name].dtype != expected[name].dtype:
            problems.append(f"{where}: state {key!r} holds {stored[name].dtype}, expected {expected[name].dtype}")
        elif stored[name].shape != expected[name].shape and not (
            is_saved_generator(stored[name]) and is_saved_generator(expected[name])
        ):
            problems.append(f"{where}: state {key!r} has shape {stored[name].shape}, expected {expected[name].shape}")
    return problems


def optimizer_state_problems(network: Network, state: Mapping[str, NpyHeader]) -> list[str]:
    """What makes a stored optimizer state (its arrays' headers) unusable by ``network``.

    By the Optimizer protocol's convention, a state array named
    ``"<anything>/<parameter>"`` (``velocity/3.W``) belongs to that parameter
    and has its shape (and, like it, floating-point numbers), so any
    optimizer's state is checked here, before its own ``load_state_dict``
    could fail mid-step.
    """
    problems = []
    for key in sorted(state):
        array = state[key]
        _, slash, param = key.rpartition("/")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            problems.append(f"optimizer state {key!r} holds {array.dtype}, not numbers")
        elif slash and param not in network.params:
            problems.append(f"optimizer state {key!r} is for parameter {param!r}, which the model does not have")
        elif slash and array.shape != network.params[param].shape:
            problems.append(
                f"optimizer state {key!r} has shape {array.shape}, expected {network.params[param].shape}"
            )
        elif slash and not np.issubdtype(array.dtype, np.floating):
            problems.append(f"optimizer state {key!r} holds {array.dtype}, not floating-point numbers")
    return problems


def _param_order(name: str) -> tuple[tuple[int, ...], str]:
    """Stored names in the network's order: by each number of the path, then the rest."""
    numbers = []
    for part in name.split("."):
        if not (part.isascii() and part.isdigit()):
            break
        numbers.append(int(part))
    return (tuple(numbers) if numbers else (-1,), name)


def _read_meta(archive: NpzArchive, path: Path) -> dict[str, Any]:
    """The decoded ``meta``, read within :data:`META_MAX_BYTES`, or a one-line CheckpointError naming the file."""
    header = archive.headers.get(META)
    if header is None or header.dtype != np.uint8 or header.ndim != 1:
        raise CheckpointError(f"{path}: not a Laminae checkpoint (no '{META}' entry)")
    raw = archive.read(META, META_MAX_BYTES, "for a checkpoint's metadata")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: corrupt checkpoint (its '{META}' entry is not valid JSON)") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint (its '{META}' entry nests deeper than Python can parse)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("spec"), dict):
        raise CheckpointError(f"{path}: not a Laminae checkpoint (its '{META}' entry is not one)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')!r} is not supported"
            f" (this Laminae reads format {FORMAT_VERSION})"
        )
    return meta


def _needed_plugins(meta: Mapping[str, Any], err: LaminaeError) -> str:
    """Which plugin (and version) wrote the types the rebuild could not find."""
    plugins = meta.get("plugins")
    needed = [
        f"{key.partition(':')[2]!r} from plugin {info.get('plugin')!r} {info.get('version')}"
        for key, info in (plugins.items() if isinstance(plugins, Mapping) else ())
        if isinstance(key, str) and isinstance(info, Mapping) and f"'{key.partition(':')[2]}'" in err.message
    ]
    return f" (the checkpoint was written with {', '.join(needed)})" if needed else ""
