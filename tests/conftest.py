from pathlib import Path

import pytest

from laminae.registry import make_registry

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def registry():
    """The built-in plugins only, so tests never depend on what else is installed."""
    return make_registry(autoload=False, strict=True)
