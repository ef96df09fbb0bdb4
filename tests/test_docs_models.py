"""docs/models.md stays true: its model files build, and it names every built-in type."""
import tomllib
from pathlib import Path

import pytest

from laminae.network import assemble_document
from laminae.fields import hyperparameters, key_of
from laminae.registry import BUILTIN_PLUGINS
from tests.doc_blocks import blocks

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
TOML_BLOCKS = [block for block in blocks(PAGE.read_text()) if block.lang == "toml"]


def test_the_page_has_model_files():
    assert sum("[models." in block.text for block in TOML_BLOCKS) >= 3


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda block: f"line {block.line}")
def test_every_toml_block_parses_and_every_model_file_builds(block, registry):
    doc = tomllib.loads(block.text)
    if "models" not in doc:
        return
    models = assemble_document(doc, registry=registry, source=f"{PAGE.name}:{block.line}")
    assert models and all(model.network.layers for model in models.values())


@pytest.mark.parametrize("kind", ["layers", "losses", "optimizers", "initializers", "datasets", "transforms", "schedules", "loggers"])
def test_every_builtin_type_is_documented(registry, kind):
    page = PAGE.read_text()
    builtin = [name for name in registry.names(kind) if registry.owner(kind, name) in BUILTIN_PLUGINS]
    assert builtin
    missing = [name for name in builtin if f"`{name}`" not in page]
    assert not missing, f"docs/models.md does not describe the built-in {kind}: {missing}"


@pytest.mark.parametrize("kind", ["layers", "losses", "optimizers", "initializers", "transforms", "schedules", "loggers"])
def test_every_key_of_a_builtin_type_is_documented(registry, kind):
    page = PAGE.read_text()
    keys = {key_of(f) for name in registry.names(kind) if registry.owner(kind, name) in BUILTIN_PLUGINS
            for f in hyperparameters(registry.get(kind, name))}
    assert not [key for key in keys if f"`{key}`" not in page]
