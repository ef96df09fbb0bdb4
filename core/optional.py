"""Optional dependencies, imported only by the commands that need them.

Plotting and reading images are small corners of Laminae; a missing package
there should cost one line saying which extra to install, not a traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from laminae.errors import LaminaeError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a one-line error naming ``pip install 'laminae[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LaminaeError(f"{purpose} needs {module.split('.')[0]}: pip install 'laminae[{extra}]'") from None
