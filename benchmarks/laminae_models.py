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
NETWORKS = ("dnn", "two_layer", "simple_cnn", "sigmoid_net", "lenet", "fashion_resnet")
"""run.py's default rows: the five classic networks and a small ResNet (composite
layers, batch norm) on Fashion-MNIST."""


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


def without_augmentation(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without ``train.augment``: the twins train on the batches as they
    are, so Laminae does too (a flip and a crop per batch are data work, not the
    training step the table compares)."""
    return {**spec, "train": {key: value for key, value in spec.get("train", {}).items() if key != "augment"}}


def train(model, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
    """One epoch over ``x`` through ``Model.fit``: shuffling, batching, step."""
    model.fit(x, y, epochs=1, batch_size=batch_size, seed=seed, progress=False)


SGD_OPTIONS = ("lr", "momentum", "nesterov", "weight_decay")
"""Laminae's SGD fields, which ``torch.optim.SGD`` spells the same way.  ``decay``
and ``schedule`` (learning-rate schedules, which Laminae applies at every step)
are left out: the twins keep ``lr`` throughout, since the rate changes the step
size, not the work."""


def hyperparameters(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(loss table, SGD options)``: what the twins copy.  The loss table is the
    spec's (``{"type": "softmax_cross_entropy", "smoothing": 0.1}``)."""
    optimizer = spec["optimizer"]
    if optimizer["type"] != "sgd":
        raise NotImplementedError(f"the twins only know SGD, not {optimizer['type']!r}")
    return dict(spec["loss"]), {key: optimizer[key] for key in SGD_OPTIONS if key in optimizer}


def loss_options(loss: dict[str, Any]) -> dict[str, Any]:
    """A loss table's options, its type left out: the keyword arguments a twin's loss takes."""
    return {key: value for key, value in loss.items() if key != "type"}


def plain_loss(loss: dict[str, Any]) -> str:
    """The type of a loss table with no option (what the tutorial and fused twins know)."""
    if loss_options(loss):
        raise NotImplementedError(f"this twin knows no loss options, got {loss}")
    return loss["type"]


def layer_fields(network) -> list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]:
    """``(type, fields, params)`` of every layer, for the tutorial twin."""
    return [
        (kind, {k: getattr(layer, k) for k in ("stride", "pad", "size", "mode") if hasattr(layer, k)}, layer.params)
        for kind, layer in zip(network.names, network.layers)
    ]


def inner_paths(node) -> tuple[str | None, list[list[Any]]] | None:
    """How a composite layer runs the layers inside it: ``(merge, paths)``, each
    path the :class:`laminae.protocols.Node` list of a chain it runs in order (an
    empty one is the input itself), and ``merge`` how their outputs combine:
    ``"add"``, ``"concat"`` (along the channel axis) or None (one path, a
    sequence).  None for a leaf layer.  A residual block's paths are its main
    path and its shortcut; a repeat's one path holds its ``times`` copies of its
    layers in a row; a flip_average trains as its one path."""
    layer = node.layer
    if node.type == "residual":
        return "add", [layer._main.nodes, layer._side.nodes if layer._side is not None else []]
    if node.type == "branches":
        return layer.merge, [chain.nodes for chain in layer._chains]
    if node.type in ("sequential", "repeat", "flip_average"):  # flip_average trains as its layers
        return None, [layer._chain.nodes]
    return None


def single_view_scores(network, x: np.ndarray) -> np.ndarray:
    """Inference-mode outputs, with a flip_average around the network run on
    ``x`` alone, as the twins predict (they are timed training, which is the
    same either way)."""
    if network.names == ["flip_average"]:
        return network.layers[0]._chain.forward(x, False)
    return network.forward(x)


def training_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """The loss of one training-mode forward pass on ``x`` (batch norm with the
    batch's statistics), the network left as it was: its state (running
    averages) restored, and its dropout layers off for the pass, since no twin
    draws Laminae's masks."""
    network = model.network
    saved = network.state_dict()
    dropouts = [node.layer for node in network.nodes.values() if node.type == "dropout"]
    rates = [layer.rate for layer in dropouts]
    try:
        for layer in dropouts:
            layer.rate = 0.0
        return float(model.loss.forward(network.forward(x, training=True), y))
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
        network.load_state_dict(saved)
