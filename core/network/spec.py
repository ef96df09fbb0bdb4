"""The model file schema: from TOML text to validated, resolved, JSON-able specs.

Everything a user can get wrong in a file is found here, before a single
parameter is allocated, and reported as one line that names the file, the
model, the layer and the key.  The key sets are fixed: a table's ``type``
picks a registered class and its other keys are that class's attrs init
fields, so no key can make Laminae import or run code.  Shapes are the one
thing checked later, by building the network (see :mod:`laminae.network.assembly`).
"""
from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from laminae.errors import SpecError, did_you_mean, location
from laminae.fields import default_of, hyperparameters, instantiate, key_of
from laminae.network.toml_brackets import first_unclosed, line_and_column, offset_of, without_values_deeper_than
from laminae.registry import KINDS, Registry
from laminae.validators import non_negative_int, one_of, positive_int, thread_count

SCHEMA_VERSION = 1
"""The only ``schema`` this version reads; a file without ``schema`` is read as 1."""

TOP_KEYS = ("schema", "blocks", "models")
MODEL_KEYS = ("description", "extends", "input", "layers", "loss", "optimizer", "train", "dtype", "tune", "accuracy")
"""``tune`` is the search space of ``laminae tune`` (read by laminae.tuning), and
``accuracy`` the test accuracy measured for ``laminae models`` to show; both are
accepted here and never reach the resolved spec."""
REQUIRED_MODEL_KEYS = ("input", "layers", "loss", "optimizer")
RESOLVED_KEYS = ("name", "description", "input", "layers", "loss", "optimizer", "train", "dtype")
DTYPES = ("float32", "float64")
"""The float types a model may compute in: float32 by default, float64 for
gradient checks and comparisons against a float64 reference."""
"""The keys of a resolved spec: what checkpoints store and ``build`` accepts back."""

INITIALIZER = "initializer"
"""The ``metadata={"laminae": ...}`` value that marks a field holding an initializer."""


@attrs.define
class TrainConfig:
    """The ``[models.NAME.train]`` table; command-line flags override it key for key."""

    dataset: str = attrs.field(default="mnist", validator=attrs.validators.instance_of(str))
    epochs: int = attrs.field(default=1, validator=positive_int)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    validation: int = attrs.field(default=0, validator=non_negative_int)
    threads: int = attrs.field(default=1, validator=thread_count)
    augment: list = attrs.field(factory=list, validator=attrs.validators.instance_of(list))
    """Transform tables (``{ type = "shift", pixels = 2 }``), applied in order to every training batch."""
    patience: int = attrs.field(default=0, validator=non_negative_int)
    """Stop after this many epochs without a better ``monitor`` on the validation split (0: never)."""
    monitor: str = attrs.field(default="val_accuracy", validator=one_of("val_accuracy", "val_loss"))
    """The validation figure that decides the best epoch: its checkpoint is kept as ``best.npz``."""
    log: list = attrs.field(factory=list, validator=attrs.validators.instance_of(list))
    """Logger tables (``{ type = "tensorboard" }``), each sent the run's events (:mod:`laminae.events`)."""


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
"""A key TOML writes without quotes."""
MAX_FILE_BYTES = 16 * 2**20
"""The largest model file read: models.toml's classic networks take 4 KB, and
tens of thousands of models fit in a few MB."""
MAX_NESTING = 32
"""How deep tables and arrays may nest in a file or spec.  The deepest a
model needs is six (models, NAME, layers, a layer, its init table, a value).
tomllib nests by recursion: 331 inline tables (497 arrays) exhaust Python's
default 1000 frames (3.11), so a file that does is parsed again with its
values nested past this depth cut out, for :func:`check_nesting` to name
the key (see :mod:`laminae.network.toml_brackets`)."""
NOTICED_AT = re.compile(r"\(at line (\d+), column (\d+)\)$")
"""Where tomllib's message says it noticed its mistake; "(at end of document)" otherwise."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed file, or a one-line SpecError naming the path (and line and column)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MB, more than a model file holds")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from exc
    try:
        doc = _parsed(text, path)
    except RecursionError:
        doc = _parsed(without_values_deeper_than(text, MAX_NESTING), path)
    check_nesting(doc, str(path))
    return doc


def _parsed(text: str, path: Path) -> dict[str, Any]:
    """``text`` parsed, or its mistake as one line.  tomllib notices an array or
    inline table never closed only at the next key or the file's end; one
    opened before where tomllib noticed its mistake is named where it opened."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        noticed = NOTICED_AT.search(str(exc))
        before = offset_of(text, int(noticed[1]), int(noticed[2])) if noticed else len(text)
        unclosed = first_unclosed(text, before)
        if unclosed is None:
            raise SpecError(f"{path}: invalid TOML: {exc}") from exc
        kind, start = unclosed
        line, column = line_and_column(text, start)
        raise SpecError(f"{path}: invalid TOML: Unclosed {kind} (opened at line {line}, column {column})") from exc


def check_nesting(value: Any, where: str) -> None:
    """A one-line SpecError naming the first table or array, in file order,
    nested deeper than :data:`MAX_NESTING`: its model and dotted key path
    (walked without recursion, so any depth is measured safely)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, keys = stack.pop()
        if len(keys) >= MAX_NESTING:
            raise SpecError(f"{where}: {_key_path(keys)}: tables or arrays nested more than {MAX_NESTING} deep")
        children = item.items() if isinstance(item, Mapping) else enumerate(item)
        stack.extend(
            (child, (*keys, key)) for key, child in reversed(list(children)) if isinstance(child, (Mapping, list, tuple))
        )


def _key_path(keys: tuple[str | int, ...]) -> str:
    """``model 'b', train.x`` (a model's table, in a document) or ``a.0.x``:
    keys as TOML writes them, array items by their index."""
    if keys[:1] == ("models",) and len(keys) > 2:
        return f"model {keys[1]!r}, {_key_path(keys[2:])}"
    return ".".join(str(key) if BARE_KEY.fullmatch(str(key)) else json.dumps(key, ensure_ascii=False) for key in keys)


def resolve_document(doc: Mapping[str, Any], registry: Registry, source: str) -> dict[str, dict[str, Any]]:
    """Every model of a parsed file, resolved and validated, in file order.

    All models are checked before the caller builds any, so a mistake in
    the last model of a file is reported even when the first is wanted.
    """
    merged = model_tables(doc, source, registry)
    return {name: resolve_model(name, raw, registry, source) for name, raw in merged.items()}


def model_tables(doc: Mapping[str, Any], source: str, registry: Registry | None = None) -> dict[str, dict[str, Any]]:
    """Every model's table of a parsed file as written, ``extends`` applied and
    declared blocks expanded, its keys checked but its values not yet: what
    a self-contained copy of one model holds.  With a ``registry``, a block
    named like a registered layer type is refused."""
    models = _models_table(doc, source)
    blocks = _blocks_table(doc, source)
    for name in blocks:
        if registry is not None and name in registry.classes["layers"]:
            raise SpecError(
                f"{source}: block {name!r}: a registered layer type has this name"
                f" (from plugin {registry.owner('layers', name)!r}); call the block something else"
            )
    for name, raw in models.items():
        with location(f"{source}: model {name!r}"):
            check_keys(raw, MODEL_KEYS)
    merged = _apply_extends(models, source)
    for name, raw in merged.items():
        if blocks and isinstance(raw.get("layers"), list):
            raw["layers"] = _expand_blocks(raw["layers"], blocks, f"{source}: model {name!r}")
    return merged


BLOCK_KEYS = ("description", "args", "layer", "layers")
MAX_EXPANDED = 100_000
"""The most layer tables a model's blocks may expand to: a ResNet-152 has a
few hundred, and blocks that each use the next twice would otherwise let a
small file ask for billions."""


def _blocks_table(doc: Mapping[str, Any], source: str) -> dict[str, Mapping[str, Any]]:
    """The ``[blocks.NAME]`` tables, checked: each has ``layer`` (one layer
    table) or ``layers`` (a list of them), and ``args``, the values a use may
    set, with their defaults.  Inside, ``"$name"`` stands for an arg's value."""
    blocks = doc.get("blocks", {})
    with location(source):
        if not isinstance(blocks, Mapping):
            raise SpecError(f"'blocks' must be a table of [blocks.NAME] tables, got {_shown(blocks)}")
    for name, block in blocks.items():
        with location(f"{source}: block {name!r}"):
            if not isinstance(block, Mapping):
                raise SpecError(f"must be a table, got {_shown(block)}")
            check_keys(block, BLOCK_KEYS)
            if ("layer" in block) == ("layers" in block):
                raise SpecError("give it 'layer' (one layer table) or 'layers' (a list of them), not both or neither")
            if "layer" in block and not isinstance(block["layer"], Mapping):
                raise SpecError(f"'layer' must be a layer table, got {_shown(block['layer'])}")
            if "layers" in block and not (isinstance(block["layers"], list) and block["layers"]):
                raise SpecError(f"'layers' must be a non-empty list of layer tables, got {_shown(block['layers'])}")
            if not isinstance(block.get("args", {}), Mapping):
                raise SpecError(f"'args' must be a table of the values a use may set, got {_shown(block['args'])}")
    return dict(blocks)


def _expand_blocks(layers: list, blocks: Mapping[str, Mapping[str, Any]], where: str) -> list:
    """``layers`` with every use of a declared block (``{ type = "basic",
    filters = 32 }``) replaced by the block's own layer table, its
    ``"$name"`` values set from the use or the block's ``args``; a block of
    several layers becomes one ``sequential`` layer.  Uses inside blocks
    expand too; a block that uses itself is refused."""
    count = [0]
    out = []
    for index, item in enumerate(layers):
        kind = item.get("type") if isinstance(item, Mapping) else None
        with location(f"{where}, layer {index}" + (f" ({kind})" if isinstance(kind, str) else "")):
            out.append(_expanded(item, blocks, (), count))
    return out


def _expanded(item: Any, blocks: Mapping[str, Mapping[str, Any]], using: tuple[str, ...], count: list[int]) -> Any:
    """One layer item (a table, or a list of them, as a branch is) with its blocks expanded."""
    if isinstance(item, list):
        return [_expanded(entry, blocks, using, count) for entry in item]
    if not isinstance(item, Mapping):
        return item
    count[0] += 1
    if count[0] > MAX_EXPANDED:
        raise SpecError(f"its blocks expand to more than {MAX_EXPANDED:,} layers")
    name = item.get("type")
    if not (isinstance(name, str) and name in blocks):
        return {key: _expanded(value, blocks, using, count) if isinstance(value, list) else value for key, value in item.items()}
    if name in using:
        raise SpecError("block uses itself: " + " -> ".join([*using[using.index(name):], name]))
    block = blocks[name]
    args = dict(block.get("args", {}))
    given = {key: value for key, value in item.items() if key != "type"}
    for key in given:
        if key not in args:
            listed = ", ".join(args) or "none"
            raise SpecError(f"block {name!r} has no arg {key!r}{did_you_mean(key, args)} (args: {listed})")
    body = block["layer"] if "layer" in block else {"type": "sequential", "layers": block["layers"]}
    body = _substituted(copy.deepcopy(body), {**args, **given}, name)
    return _expanded(body, blocks, (*using, name), count)


def _substituted(value: Any, args: Mapping[str, Any], block: str) -> Any:
    """``value`` with every ``"$name"`` string replaced by ``args[name]``."""
    if isinstance(value, Mapping):
        return {key: _substituted(item, args, block) for key, item in value.items()}
    if isinstance(value, list):
        return [_substituted(item, args, block) for item in value]
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in args:
            listed = ", ".join(args) or "none"
            raise SpecError(f"block {block!r} uses {value!r}, which is not one of its args{did_you_mean(name, args)} (args: {listed})")
        return copy.deepcopy(args[name])
    return value


def resolve_model(
    name: str, raw: Mapping[str, Any], registry: Registry, source: str = "<dict>"
) -> dict[str, Any]:
    """One model's table (``extends`` already applied) as a validated resolved spec."""
    where = f"{source}: model {name!r}"
    if isinstance(raw.get("layers"), list):
        with location(where):
            raw = {**raw, "layers": [layer_table(layer, registry) for layer in raw["layers"]]}
    with location(where):
        description, input_shape, layers = _model_outline(raw)
    resolved_layers = []
    for index, layer in enumerate(layers):
        kind = layer.get("type")
        named = f" ({kind})" if isinstance(kind, str) else ""
        resolved_layers.append(_component(registry, "layers", layer, f"{where}, layer {index}{named}"))
    parts = {}
    for key, kind in (("loss", "losses"), ("optimizer", "optimizers")):
        with location(where):
            table = dict(_table(raw[key], key))
        schedule = table.pop("schedule", None) if key == "optimizer" else None
        parts[key] = _component(registry, kind, table, f"{where}, {key}")
        if schedule is not None:  # any optimizer with an 'lr' takes one: not a field of its own
            parts[key]["schedule"] = _schedule(registry, schedule, f"{where}, {key}, schedule")
            _needs_lr(registry, table["type"], f"{where}, {key}, schedule")
    with location(where):
        dtype = resolve_dtype(raw.get("dtype", DTYPES[0]))
    with location(f"{where}, train"):
        train = raw.get("train", {})
        if not isinstance(train, Mapping):
            raise SpecError(f"must be a table, got {_shown(train)}")
        train = resolve_train(train, registry)
    return {
        "name": name,
        "description": description,
        "input": list(input_shape),
        "layers": resolved_layers,
        **parts,
        "train": train,
        "dtype": dtype,
    }


def _model_outline(raw: Mapping[str, Any]) -> tuple[str, tuple[int, ...], list[Mapping[str, Any]]]:
    """The model-level keys checked: its description, input shape and list of layer tables."""
    check_keys(raw, (*MODEL_KEYS, "name"))
    if "extends" in raw:
        raise SpecError("'extends' needs the named model in the same file or document")
    for key in REQUIRED_MODEL_KEYS:
        if key not in raw:
            raise SpecError(f"missing required key {key!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"'description' must be a string, got {_shown(description)}")
    layers = raw["layers"]
    if not isinstance(layers, list) or not all(isinstance(layer, Mapping) for layer in layers):
        raise SpecError(f"'layers' must be a list of tables, got {_shown(layers)}")
    if not layers:
        raise SpecError("'layers' is empty: a model needs at least one layer")
    accuracy = raw.get("accuracy", 0)
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not 0 <= accuracy <= 1:
        raise SpecError(f"'accuracy' must be a number from 0 to 1 (a measured test accuracy), got {_shown(accuracy)}")
    return description, _input_shape(raw["input"]), layers


def resolve_train(table: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    """A ``[train]`` table as every TrainConfig field, defaults filled in; its
    ``augment`` and ``log`` lists validated item by item, like layers."""
    config = instantiate(TrainConfig, table)
    registry.get("datasets", config.dataset)
    augment = _component_list(registry, "transforms", config.augment, "augment")
    log = _component_list(registry, "loggers", config.log, "log")
    if config.patience and not config.validation:
        raise SpecError("'patience' watches the validation split: set 'validation' (samples held out) too")
    return {**attrs.asdict(config), "augment": augment, "log": log}


def _component_list(registry: Registry, kind: str, items: list, key: str) -> list[dict[str, Any]]:
    """A ``train`` list of components (``augment``, ``log``), each a table or a bare
    name, validated one by one and named by place: ``augment 1 (crop)``."""
    checked = []
    for index, item in enumerate(items):
        with location(f"{key} {index}"):
            item = _table(item, key)
        kind_name = item.get("type")
        named = f" ({kind_name})" if isinstance(kind_name, str) else ""
        checked.append(_component(registry, kind, item, f"{key} {index}{named}"))
    return checked


def _schedule(registry: Registry, value: Any, where: str) -> dict[str, Any]:
    with location(where):
        table = _table(value, "schedule")
    return _component(registry, "schedules", table, where)


def _needs_lr(registry: Registry, optimizer: str, where: str) -> None:
    """A schedule sets the optimizer's ``lr`` before every step: the optimizer must have one."""
    if "lr" not in [key_of(f) for f in hyperparameters(registry.get("optimizers", optimizer))]:
        raise SpecError(f"{where}: optimizer {optimizer!r} has no 'lr' key for a schedule to set")


def resolve_dtype(value: Any) -> str:
    """``"float32"`` or ``"float64"`` (a numpy dtype object is taken too), or a one-line SpecError."""
    name = value if isinstance(value, str) else getattr(value, "name", getattr(value, "__name__", value))
    if name not in DTYPES:
        listed = ", ".join(repr(d) for d in DTYPES)
        raise SpecError(f"'dtype' must be one of {listed}, got {_shown(value)}")
    return name


def with_train_overrides(
    spec: Mapping[str, Any], overrides: Mapping[str, Any] | None, registry: Registry, source: str = "<dict>"
) -> dict[str, Any]:
    """A resolved spec whose ``train`` has ``overrides`` (from command-line flags) merged over it."""
    spec = copy.deepcopy(dict(spec))
    if overrides:
        with location(f"{source}: model {spec['name']!r}, train overrides"):
            spec["train"] = resolve_train({**spec["train"], **overrides}, registry)
    return spec


def check_keys(table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """A one-line SpecError for the first key outside ``allowed``, with a suggestion."""
    for key in table:
        if key not in allowed:
            raise SpecError(f"unknown key {key!r}{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})")


def named_types(spec: Mapping[str, Any], registry: Registry) -> list[tuple[str, str]]:
    """Every ``(kind, registered name)`` a resolved spec uses, in spec order.

    Each kind says where a spec names one (:attr:`laminae.registry.Kind.spec_key`);
    initializers are named by the layer fields marked as taking one, or by
    those fields' defaults.
    """
    found: list[tuple[str, str]] = []
    named: list[tuple[str, Any]] = []
    for kind, info in KINDS.items():
        if info.spec_key is None:
            continue
        value: Any = spec
        for part in info.spec_key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        items = layer_tables(value) if kind == "layers" and isinstance(value, list) else value
        named += [(kind, item) for item in (items if isinstance(items, list) else [items])]
    for layer in layer_tables(spec.get("layers", [])):
        cls = registry.classes["layers"].get(layer.get("type"))
        for field in hyperparameters(cls) if cls is not None else ():
            if field.metadata.get("laminae") == INITIALIZER:
                named.append(("initializers", layer.get(key_of(field), field.default)))
    found = [(kind, item.get("type") if isinstance(item, Mapping) else item) for kind, item in named]
    return [(kind, name) for kind, name in found if isinstance(name, str)]


def layer_table(layer: Any, registry: Registry) -> Any:
    """A layer object built in Python (``Residual(layers=[Conv(...), ...])``) as
    the table a model file would write for it: its registered type and the
    fields that differ from their defaults, layers inside it as tables too.
    Tables and anything else are returned as they are."""
    if isinstance(layer, (Mapping, str)) or not attrs.has(type(layer)):
        return layer
    name = registry.name_of("layers", type(layer))
    if name is None:
        raise SpecError(
            f"a {type(layer).__name__} object is not of a registered layer type: register its class,"
            " or build a laminae.Network from layer objects"
        )
    table: dict[str, Any] = {"type": name}
    for field in hyperparameters(type(layer)):
        value = getattr(layer, field.name)
        default = default_of(field)
        if default is attrs.NOTHING or value != default:
            table[key_of(field)] = _tables_inside(value, registry)
    return table


def _tables_inside(value: Any, registry: Registry) -> Any:
    if isinstance(value, list):
        return [_tables_inside(item, registry) for item in value]
    return layer_table(value, registry)


def layer_tables(layers: list) -> list[Mapping[str, Any]]:
    """Every layer table of a list of layers, inner layers of composites
    included (tables in a layer's lists, or in lists of lists, as a
    branch block holds them), parents first."""
    found: list[Mapping[str, Any]] = []
    stack = [item for item in reversed(layers)]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, Mapping):
            found.append(item)
            stack.extend(reversed([value for value in item.values() if isinstance(value, list)]))
    return found


def initializer_keys(cls: type) -> list[str]:
    """The keys of ``cls`` that take an initializer (a name or a table)."""
    return [key_of(f) for f in hyperparameters(cls) if f.metadata.get("laminae") == INITIALIZER]


def toml_text(value: Any) -> str:
    """``value`` as it would be written in a model file, for listings and summaries."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_text(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    return repr(value)


def model_file_text(name: str, table: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """A model file holding one model, ``[models.NAME]``, written by tomlkit.

    A table that holds tables (the model's, a tune table's ``space``) gets a
    header of its own; any other is written inline, and the layers as one
    inline table per line, as models.toml writes them.
    """
    import tomlkit  # 30 ms to import: only the commands that write a file pay for it

    doc = tomlkit.document()
    for line in comments:
        doc.add(tomlkit.comment(line))
    doc["schema"] = SCHEMA_VERSION
    models = tomlkit.table(is_super_table=True)
    models[name] = _toml_item(tomlkit, table)
    doc["models"] = models
    return tomlkit.dumps(doc)


def _toml_item(tomlkit: Any, value: Any, inline: bool = False) -> Any:
    if isinstance(value, Mapping):
        if inline or not _holds_tables(value):
            table = tomlkit.inline_table()
            table.update({key: _toml_item(tomlkit, item, inline=True) for key, item in value.items()})
            return table
        table = tomlkit.table()
        for key, item in sorted(value.items(), key=lambda pair: _holds_tables(pair[1])):
            table[key] = _toml_item(tomlkit, item)  # a header table's own keys before its sub-tables
        return table
    if isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
        array = tomlkit.array()
        array.extend(_toml_item(tomlkit, item, inline=True) for item in value)
        return array.multiline(not inline)
    return value


def _holds_tables(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(item, Mapping) for item in value.values())


def _models_table(doc: Mapping[str, Any], source: str) -> dict[str, Mapping[str, Any]]:
    with location(source):
        check_keys(doc, TOP_KEYS)
        schema = doc.get("schema", SCHEMA_VERSION)
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise SpecError(f"unsupported schema {schema!r}: this version of Laminae reads schema = {SCHEMA_VERSION}")
        models = doc.get("models")
        if models is None:
            raise SpecError("no models: add a [models.NAME] table")
        if not isinstance(models, Mapping) or not models:
            raise SpecError(f"'models' must be a table of [models.NAME] tables, got {_shown(models)}")
        for name, table in models.items():
            if not isinstance(table, Mapping):
                raise SpecError(f"model {name!r} must be a table, got {_shown(table)}")
    return dict(models)


def _apply_extends(models: Mapping[str, Mapping[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    """Every model with its ``extends`` chain merged in (tables merge, arrays
    replace), in file order.  Each model is merged once, over its parent as
    already merged, so a chain of any length costs time linear in its length."""
    merged: dict[str, dict[str, Any]] = {}
    for name in models:
        chain: list[str] = []
        on_chain: set[str] = set()
        current = name
        while current not in merged and "extends" in models[current]:
            parent = models[current]["extends"]
            chain.append(current)
            on_chain.add(current)
            with location(f"{source}: model {current!r}"):
                if not isinstance(parent, str):
                    raise SpecError(f"'extends' must be a model name, got {_shown(parent)}")
                if parent in on_chain:
                    raise SpecError("extends loops: " + " -> ".join([*chain[chain.index(parent):], parent]))
                if parent not in models:
                    raise SpecError(
                        f"extends names a missing model {parent!r}{did_you_mean(parent, models)}"
                        f" (models: {', '.join(models)})"
                    )
            current = parent
        if current not in merged:
            merged[current] = copy.deepcopy(dict(models[current]))
        for child in reversed(chain):
            own = {key: value for key, value in models[child].items() if key != "extends"}
            merged[child] = _merge(merged[models[child]["extends"]], own)
    return {name: merged[name] for name in models}


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: tables merge key by key, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _component(registry: Registry, kind: str, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate ``{type = ..., **fields}`` by instantiating it; return it as plain data."""
    options = dict(table)
    with location(where):
        if "type" not in options:
            raise SpecError(f"missing required key 'type' (installed: {', '.join(registry.names(kind)) or 'none'})")
        cls = registry.get(kind, options.pop("type"))
        _check_plain(options)
    for key in initializer_keys(cls):
        if key in options:
            with location(f"{where}, {key}"):
                _check_initializer(registry, options[key])
    with location(where):
        instantiate(cls, options)
    return copy.deepcopy(dict(table))


def _check_initializer(registry: Registry, init: Any) -> None:
    if not isinstance(init, (str, Mapping)):
        raise SpecError(f"an initializer is a name or a table with 'type', got {_shown(init)}")
    registry.create("initializers", init)


def _check_plain(value: Any, key: str | None = None) -> None:
    """Refuse TOML dates and times: a resolved spec must survive JSON in a checkpoint."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_plain(v, k)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, key)
    elif not isinstance(value, (str, int, float, bool)):
        raise SpecError(f"{key!r} cannot be a {type(value).__name__} (use a string, number, boolean, array or table)")


def _table(value: Any, key: str) -> Mapping[str, Any]:
    """A table, or a bare name as shorthand for ``{type = name}``."""
    if isinstance(value, str):
        return {"type": value}
    if not isinstance(value, Mapping):
        raise SpecError(f"{key!r} must be a table, got {_shown(value)}")
    return value


def _input_shape(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    ):
        raise SpecError(f"'input' must be a non-empty list of positive integers (one sample's shape), got {_shown(value)}")
    return tuple(value)


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
