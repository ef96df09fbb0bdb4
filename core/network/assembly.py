"""From a spec (a parsed document, one model's table, a resolved spec) to a model's parts.

:class:`ModelParts` is what a model is made of: the network, the loss, the
optimizer and the resolved spec they were built from.  Every floor above
works with it (training, checkpoints); the ``Model`` facade at the top adds
the methods users call.

A resolved spec is the contract with checkpoints: ``assemble(parts.spec)``
rebuilds the same model, parameters included, because the parameters are
drawn from ``train.seed``.  When a whole document is given, every model in
it is validated and built (shapes are only known by building) before the
wanted one is returned, so a file either works as a whole or not at all.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from laminae.errors import SpecError, did_you_mean, location, one_line
from laminae.network.network import Network
from laminae.network.spec import (
    DTYPES,
    TOP_KEYS,
    TrainConfig,
    check_nesting,
    read_toml,
    resolve_document,
    resolve_dtype,
    resolve_model,
    with_train_overrides,
)
from laminae.protocols import Loss, Optimizer, Schedule, Transform, too_big
from laminae.registry import Registry, make_registry


@attrs.define(eq=False)
class ModelParts:
    """A built model's parts.

    ``spec`` is the fully resolved specification (``extends`` applied,
    defaults filled in) as plain JSON-able data, so a checkpoint can rebuild
    the model without the TOML file it came from.
    """

    network: Network
    loss: Loss
    optimizer: Optimizer
    spec: dict[str, Any]
    train_config: TrainConfig = attrs.field(factory=TrainConfig)
    name: str = "model"
    registry: Registry | None = attrs.field(default=None, repr=False)
    """The registry that built the parts: training on threads (where workers
    cannot be forked) builds replicas with it."""
    transforms: list[Transform] = attrs.field(factory=list, repr=False)
    """The ``train.augment`` transforms, applied to every training batch in order."""
    schedule: Schedule | None = attrs.field(default=None, repr=False)
    """Sets the optimizer's ``lr`` before every step, from :attr:`base_lr`."""
    base_lr: float | None = attrs.field(default=None, repr=False)
    """The optimizer's ``lr`` as configured, which a schedule starts from."""


def assemble(
    spec: Mapping[str, Any],
    *,
    registry: Registry | None = None,
    source: str = "<dict>",
    name: str | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    dtype: Any = None,
) -> ModelParts:
    """One model's parts from a resolved spec, a model table, or a whole document.

    A document (a dict with ``models``) needs ``name`` unless it holds one
    model.  ``train_overrides`` are TrainConfig keys merged over the model's
    ``[train]`` table before the network draws its parameters; ``dtype``
    (``"float32"`` or ``"float64"``) replaces the spec's own.
    """
    registry = registry if registry is not None else make_registry()
    if not isinstance(spec, Mapping):
        raise SpecError(f"{source}: a spec must be a table (dict), got {type(spec).__name__}")
    check_nesting(spec, source)
    if any(key in spec for key in TOP_KEYS):
        models = assemble_document(spec, registry=registry, source=source)
        model = models[pick_model(name, list(models), source)]
        if not train_overrides and dtype is None:
            return model
        resolved = model.spec
    else:
        name = _model_name(spec, name, source)
        resolved = resolve_model(name, spec, registry, source)
    resolved = with_train_overrides(resolved, train_overrides, registry, source)
    if dtype is not None:
        with location(f"{source}: model {resolved['name']!r}"):
            resolved["dtype"] = resolve_dtype(dtype)
    return assemble_resolved(resolved, registry, source)


def load_models(path: str | Path, *, registry: Registry | None = None) -> dict[str, dict[str, Any]]:
    """Each model of a file as its resolved spec (``extends`` applied, ``train`` complete)."""
    models = assemble_document(read_toml(path), registry=registry, source=str(path))
    return {name: parts.spec for name, parts in models.items()}


def assemble_document(
    doc: Mapping[str, Any], *, registry: Registry | None = None, source: str = "<dict>"
) -> dict[str, ModelParts]:
    """Every model of a parsed file, in file order; the first mistake stops it."""
    registry = registry if registry is not None else make_registry()
    resolved = resolve_document(doc, registry, source)
    return {name: assemble_resolved(spec, registry, source) for name, spec in resolved.items()}


def assemble_resolved(spec: Mapping[str, Any], registry: Registry, source: str = "<dict>") -> ModelParts:
    """The parts of a spec that :mod:`laminae.network.spec` has already validated."""
    train = TrainConfig(**spec["train"])
    where = f"{source}: model {spec['name']!r}"
    try:
        with location(where, sep=", "):
            network = Network(
                spec["layers"], spec["input"], seed=train.seed, dtype=spec.get("dtype", DTYPES[0]), registry=registry
            )
    except (MemoryError, ValueError) as exc:
        if not too_big(exc):
            raise
        raise SpecError(f"{where}, {_layer_of(exc)}: its parameters cannot be allocated: {one_line(exc)}") from exc
    optimizer_table = dict(spec["optimizer"])
    schedule = optimizer_table.pop("schedule", None)
    optimizer = registry.create("optimizers", optimizer_table)
    return ModelParts(
        network=network,
        loss=registry.create("losses", spec["loss"]),
        optimizer=optimizer,
        transforms=[registry.create("transforms", table) for table in train.augment],
        schedule=None if schedule is None else registry.create("schedules", schedule),
        base_lr=getattr(optimizer, "lr", None),
        spec=dict(spec),
        train_config=train,
        name=spec["name"],
        registry=registry,
    )


def pick_model(name: str | None, names: list[str], source: str) -> str:
    """``name`` if the file ``source`` has it; without one, the file's only model."""
    if name is None:
        if len(names) == 1:
            return names[0]
        raise SpecError(f"{source}: several models, name one of: {', '.join(names)}")
    if name not in names:
        raise SpecError(f"{source}: no model {name!r}{did_you_mean(name, names)} (models: {', '.join(names)})")
    return name


def _model_name(spec: Mapping[str, Any], name: str | None, source: str) -> str:
    """The explicit name, else the resolved spec's own ``name``, else ``"model"``."""
    if name is not None:
        return name
    stored = spec.get("name", "model")
    if not isinstance(stored, str) or not stored:
        raise SpecError(f"{source}: 'name' must be a non-empty string, got {stored!r}")
    return stored


def _layer_of(exc: BaseException) -> str:
    """``layer 3 (conv)``, from the note :class:`Network` adds to a layer's own exceptions."""
    notes = [note for note in getattr(exc, "__notes__", []) if note.startswith("(raised in layer ")]
    return notes[0].removeprefix("(raised in ").removesuffix(")") if notes else "network"
