"""The benchmarked networks, as the models.toml specs define them, built and
trained through Laminae's own path (``laminae.build``, ``Model.fit``).

Nothing here restates an architecture: the specs are read from the project's
models.toml, so a change to a model there changes what is benchmarked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from laminae.registry import make_registry
from laminae.network.spec import read_toml, resolve_document

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ("dnn", "two_layer", "simple_cnn", "sigmoid_net", "lenet")


def models_toml() -> Path:
    """The project's models.toml: at the root, else the first one in the tree."""
    if (ROOT / "models.toml").is_file():
        return ROOT / "models.toml"
    found = sorted(p for p in ROOT.rglob("models.toml") if ".git" not in p.parts and "tests" not in p.parts)
    if not found:
        raise SystemExit(f"no models.toml under {ROOT}")
    return found[0]


def load_specs(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every model of models.toml, resolved (defaults filled in) by Laminae itself."""
    path = path or models_toml()
    return resolve_document(read_toml(path), make_registry(), str(path))


def train(model, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
    """One epoch over ``x`` through ``Model.fit``: shuffling, batching, step."""
    model.fit(x, y, epochs=1, batch_size=batch_size, seed=seed, progress=False)


SGD_OPTIONS = ("lr", "momentum", "nesterov", "weight_decay")
"""Laminae's SGD fields, which ``torch.optim.SGD`` spells the same way.  ``decay``
(a learning-rate schedule) is left out: it changes the step size, not the work."""


def hyperparameters(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(loss type, SGD options)``: what the PyTorch and tutorial twins copy."""
    optimizer = spec["optimizer"]
    if optimizer["type"] != "sgd":
        raise NotImplementedError(f"the twins only know SGD, not {optimizer['type']!r}")
    return spec["loss"]["type"], {key: optimizer[key] for key in SGD_OPTIONS if key in optimizer}


def layer_fields(network) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
    """``(type, fields, params)`` of every layer, for the tutorial twin."""
    return [
        (kind, {k: getattr(layer, k) for k in ("stride", "pad", "size", "mode") if hasattr(layer, k)}, layer.params)
        for kind, layer in zip(network.names, network.layers)
    ]
