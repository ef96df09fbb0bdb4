"""Every kind of mistake in a model file reads as one line naming file, model, layer and key."""
import tomllib

import pytest

import laminae
from laminae.network import load_models

BASE = """\
schema = 1
[models.cnn]
description = "a small cnn"
input = [1, 28, 28]
layers = [
  { type = "conv", filters = 4, size = 5 },
  { type = "relu" },
  { type = "pool", size = 2, stride = 2 },
  { type = "affine", units = 10 },
]
loss = { type = "softmax_cross_entropy" }
optimizer = { type = "sgd", lr = 0.1 }
[models.cnn.train]
dataset = "mnist"
epochs = 2
"""


@pytest.fixture
def write(tmp_path, monkeypatch):
    """Write a models.toml into a fresh folder and refer to it by its relative name."""
    monkeypatch.chdir(tmp_path)

    def write(text, *replacements):
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new, 1)
        (tmp_path / "models.toml").write_text(text)
        return "models.toml"

    return write


def error_of(path, registry, error=laminae.SpecError):
    with pytest.raises(error) as info:
        load_models(path, registry=registry)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, laminae.LaminaeError)
    return message


def test_base_file_is_valid(write, registry):
    specs = load_models(write(BASE), registry=registry)
    assert list(specs) == ["cnn"]


MISTAKES = [
    # id, (old, new) edit of BASE, error class, the message ("..." at the end: its start)
    ("toml-syntax", ("epochs = 2", "epochs = = 2"), laminae.SpecError,
     "models.toml: invalid TOML: Invalid value (at line 15, column 10)"),
    ("unknown-type", ('type = "pool"', 'type = "pol"'), laminae.PluginError,
     "models.toml: model 'cnn', layer 2 (pol): unknown layer type 'pol'; did you mean 'pool'? (installed: affine, batchnorm, ..."),
    ("unknown-layer-key", ("filters = 4", "filter = 4"), laminae.SpecError,
     "models.toml: model 'cnn', layer 0 (conv): unknown key 'filter'; did you mean 'filters'? (allowed: filters, size, ..."),
    ("missing-layer-key", ('{ type = "affine", units = 10 }', '{ type = "affine" }'), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine): missing required key 'units'"),
    ("missing-layer-type", ('{ type = "relu" }', "{ }"), laminae.SpecError,
     "models.toml: model 'cnn', layer 1: missing required key 'type' (installed: affine, ..."),
    ("wrong-type", ("units = 10", 'units = "10"'), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine): 'units' must be an integer, got '10' (str)"),
    ("wrong-range", ("lr = 0.1", "lr = -0.1"), laminae.SpecError,
     "models.toml: model 'cnn', optimizer: 'lr' must be greater than 0, got -0.1"),
    ("wrong-train-range", ("epochs = 2", "epochs = 0"), laminae.SpecError,
     "models.toml: model 'cnn', train: 'epochs' must be at least 1, got 0"),
    ("unknown-train-key", ("epochs = 2", "epoch = 2"), laminae.SpecError,
     "models.toml: model 'cnn', train: unknown key 'epoch'; did you mean 'epochs'? ..."),
    ("unknown-dataset", ('dataset = "mnist"', 'dataset = "mnsit"'), laminae.PluginError,
     "models.toml: model 'cnn', train: unknown data set type 'mnsit'; did you mean 'mnist'? ..."),
    ("bad-init-name", ("units = 10", 'units = 10, init = "hee"'), laminae.PluginError,
     "models.toml: model 'cnn', layer 3 (affine), init: unknown initializer type 'hee'; did you mean 'he'? ..."),
    ("bad-init-key", ("units = 10", 'units = 10, init = { type = "normal", sd = 0.1 }'), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine), init: unknown key 'sd'; did you mean 'std'? ..."),
    ("init-of-wrong-type", ("units = 10", "units = 10, init = 3"), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine), init: an initializer is a name or a table with 'type', got 3 (int)"),
    ("shape-cannot-fit", ("size = 5 }", "size = 50 }"), laminae.ShapeError,
     "models.toml: model 'cnn', layer 0 (conv): kernel 50x50 with pad 0 does not fit input (1, 28, 28)"),
    ("beyond-memory", ("units = 10", "units = 1099511627776"), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine): its parameters need 10,133,099,161,585,216 bytes to draw ..."),
    ("missing-model-key", ('optimizer = { type = "sgd", lr = 0.1 }\n', ""), laminae.SpecError,
     "models.toml: model 'cnn': missing required key 'optimizer'"),
    ("unknown-model-key", ("input =", "inputs ="), laminae.SpecError,
     "models.toml: model 'cnn': unknown key 'inputs'; did you mean 'input'? (allowed: description, extends, ..."),
    ("unknown-top-level-key", ("schema = 1", "schema = 1\nmodel = 2"), laminae.SpecError,
     "models.toml: unknown key 'model'; did you mean 'models'? (allowed: schema, blocks, models)"),
    ("bad-description", ('"a small cnn"', "3"), laminae.SpecError,
     "models.toml: model 'cnn': 'description' must be a string, got 3 (int)"),
    ("toml-date", ("units = 10", "units = 1979-05-27"), laminae.SpecError,
     "models.toml: model 'cnn', layer 3 (affine): 'units' cannot be a date (use a string, number, boolean, array or table)"),
]


@pytest.mark.parametrize(("edit", "error", "expected"), [pytest.param(*m[1:], id=m[0]) for m in MISTAKES])
def test_each_mistake_names_file_model_layer_and_key(write, registry, edit, error, expected):
    message = error_of(write(BASE, edit), registry, error)
    if expected.endswith("..."):
        assert message.startswith(expected[:-3])
    else:
        assert message == expected


def test_extends_names_a_missing_model(write, registry):
    message = error_of(write(BASE + '[models.wide]\nextends = "cn"\n'), registry)
    assert message == "models.toml: model 'wide': extends names a missing model 'cn'; did you mean 'cnn'? (models: cnn, wide)"


def test_extends_loop_names_the_chain(write, registry):
    text = BASE + '[models.a]\nextends = "b"\n[models.b]\nextends = "c"\n[models.c]\nextends = "a"\n'
    message = error_of(write(text), registry)
    assert message == "models.toml: model 'c': extends loops: a -> b -> c -> a"


LAYERS_LEFT_OPEN = ('  { type = "affine", units = 10 },\n]', '  { type = "affine", units = 10 },')


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ([LAYERS_LEFT_OPEN], "Unclosed array (opened at line 5, column 10)"),
        ([('{ type = "relu" }', '{ type = "relu" ')], "Unclosed inline table (opened at line 7, column 3)"),
        (
            [LAYERS_LEFT_OPEN, ('"a small cnn"', '"a small [cnn\\"{"'), ('{ type = "relu" },', '{ type = "relu" },  # ]}')],
            "Unclosed array (opened at line 5, column 10)",
        ),
    ],
    ids=["array", "inline-table-in-an-array", "brackets-in-strings-and-comments"],
)
def test_a_bracket_never_closed_is_reported_where_it_opened(write, registry, edits, expected):
    """tomllib noticed these at line 10, column 1 (the next key) and at line 7, column 20."""
    assert error_of(write(BASE, *edits), registry) == f"models.toml: invalid TOML: {expected}"


@pytest.mark.parametrize("depth", [40, 400])
def test_a_table_nested_too_deep_is_named_by_model_and_key(write, registry, depth):
    """400 inline tables exhaust tomllib's recursion; 40 do not: the same line for both."""
    deep = "{ x = " * depth + "1" + " }" * depth
    message = error_of(write(BASE + f'[models.wide]\nextends = "cnn"\ntrain = {deep}\n'), registry)
    assert message == "models.toml: model 'wide', train" + ".x" * 29 + ": tables or arrays nested more than 32 deep"


@pytest.mark.parametrize("value", ["[1, 0, 28]", "[]", '"28x28"', "[1, 28.0, 28]", "[true]"])
def test_bad_input(write, registry, value):
    message = error_of(write(BASE, ("input = [1, 28, 28]", f"input = {value}")), registry)
    assert message == f"models.toml: model 'cnn': 'input' must be a non-empty list of positive integers (one sample's shape), got {value_repr(value)}"


def value_repr(toml_value):
    value = tomllib.loads(f"v = {toml_value}")["v"]
    return f"{value!r} ({type(value).__name__})"


def test_empty_layer_list(write, registry):
    text = BASE.replace(BASE[BASE.index("layers = [") : BASE.index("loss =")], "layers = []\n")
    message = error_of(write(text), registry)
    assert message == "models.toml: model 'cnn': 'layers' is empty: a model needs at least one layer"


def test_no_key_can_import_code(write, registry):
    message = error_of(write(BASE, ("input =", 'module = "os"\ninput =')), registry)
    assert message.startswith("models.toml: model 'cnn': unknown key 'module'")


@pytest.mark.parametrize("schema", ["2", '"1"', "0", "1.0", "true"])
def test_unsupported_schema_version(write, registry, schema):
    message = error_of(write(BASE, ("schema = 1", f"schema = {schema}")), registry)
    assert message.startswith("models.toml: unsupported schema ")
    assert message.endswith("this version of Laminae reads schema = 1")


def test_missing_schema_reads_as_version_1(write, registry):
    assert list(load_models(write(BASE, ("schema = 1\n", "")), registry=registry)) == ["cnn"]


def test_missing_file(tmp_path, registry):
    path = tmp_path / "nope.toml"
    with pytest.raises(laminae.SpecError, match="^" + str(path) + ": no such file$"):
        laminae.from_toml(path, "cnn", registry=registry)


def test_unknown_model_name(write, registry):
    with pytest.raises(laminae.SpecError) as info:
        laminae.from_toml(write(BASE), "cn", registry=registry)
    assert str(info.value) == "models.toml: no model 'cn'; did you mean 'cnn'? (models: cnn)"


def test_error_in_a_later_model_stops_the_whole_file(write, registry):
    text = BASE + '[models.broken]\nextends = "cnn"\noptimizer = { type = "sgd", lr = 0 }\n'
    with pytest.raises(laminae.SpecError, match="^models.toml: model 'broken', optimizer: 'lr' must be greater than 0"):
        laminae.from_toml(write(text), "cnn", registry=registry)


def registry_with_layer(folder, type_name: str, *methods: str):
    """A registry with one plugin, loaded from ``folder``, whose layer class has ``methods`` (source lines)."""
    folder.mkdir()
    (folder / f"{type_name}.py").write_text(
        "import attrs, laminae\n"
        "class PluginsOwnError(Exception): pass\n"
        "@attrs.define(eq=False)\n"
        "class Layer:\n"
        "    params: dict = attrs.field(init=False, factory=dict)\n"
        "    grads: dict = attrs.field(init=False, factory=dict)\n"
        + "".join(f"    {line}\n" for line in methods)
        + "    def forward(self, x, training): return x\n"
        "    def backward(self, d): return d\n"
        "@laminae.hookimpl\n"
        "def register_layers(register):\n"
        f"    register({type_name!r}, Layer)\n"
    )
    return laminae.make_registry(plugins_dir=folder, autoload=False)


def test_a_plugins_own_exception_in_build_is_one_line_with_the_original_as_its_cause(write, tmp_path):
    registry = registry_with_layer(tmp_path / "plugs", "buggy", "def build(self, shape, ctx): return 1 // 0")
    with pytest.raises(laminae.PluginError) as info:
        load_models(write(BASE, ('{ type = "relu" }', '{ type = "buggy" }')), registry=registry)
    assert info.value.message == (
        "models.toml: model 'cnn', layer 1 (buggy, from plugin 'buggy'):"
        " build raised ZeroDivisionError: integer division or modulo by zero"
    )
    cause = info.value
    while isinstance(cause, laminae.LaminaeError):
        cause = cause.__cause__
    assert isinstance(cause, ZeroDivisionError)  # its traceback: laminae --traceback


def test_a_plugins_own_exception_from_its_constructor_is_kept_and_located(write, tmp_path):
    """Validators' TypeError and ValueError are the user's mistakes; anything else is the plugin's."""
    registry = registry_with_layer(
        tmp_path / "plugs", "picky",
        "def __attrs_post_init__(self): raise PluginsOwnError('not today')",
        "def build(self, shape, ctx): return shape",
    )
    with pytest.raises(Exception, match="not today") as info:
        load_models(write(BASE, ('{ type = "relu" }', '{ type = "picky" }')), registry=registry)
    assert type(info.value).__name__ == "PluginsOwnError"
    assert any("model 'cnn'" in note and "layer 1 (picky)" in note for note in info.value.__notes__), info.value.__notes__
