"""The PyTorch twin of a built Laminae network, trained the same way.

The twin is translated from the Laminae network itself (layer types, their
fields, the shapes the build inferred) and starts from the same weights, so
every architecture in models.toml is written once, and a mismatch in the
translation shows up as a different loss rather than as a silently unfair
timing.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _module(kind: str, layer, shape_in: tuple[int, ...]) -> list[nn.Module]:
    if kind == "affine":
        linear = nn.Linear(int(np.prod(shape_in)), layer.units, bias=layer.bias)
        return ([nn.Flatten()] if len(shape_in) > 1 else []) + [linear]
    if kind == "conv":
        return [nn.Conv2d(shape_in[0], layer.filters, layer.size, layer.stride, layer.pad, bias=layer.bias)]
    if kind == "pool":
        pool = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
        return [pool(layer.size, layer.stride)]
    if kind == "flatten":
        return [nn.Flatten()]
    if kind == "relu":
        return [nn.ReLU()]
    if kind == "sigmoid":
        return [nn.Sigmoid()]
    raise NotImplementedError(f"no PyTorch translation for layer {kind!r}")


def from_network(network) -> nn.Sequential:
    """``nn.Sequential`` equivalent to ``network``, with its current weights (float32)."""
    modules = []
    in_shapes = [network.input_shape, *network.shapes[:-1]]
    for kind, layer, shape_in in zip(network.names, network.layers, in_shapes):
        translated = _module(kind, layer, shape_in)
        weighted = translated[-1]
        if "W" in layer.params:
            w = layer.params["W"]
            weighted.weight.data = torch.tensor(w.T if w.ndim == 2 else w, dtype=torch.float32).contiguous()
        if "b" in layer.params:
            weighted.bias.data = torch.tensor(layer.params["b"], dtype=torch.float32)
        modules += translated
    return nn.Sequential(*modules)


class QuadraticLoss(nn.Module):
    """Nielsen's cost as Laminae's ``quadratic`` defines it: 0.5 * sum of squares / N."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(target, output.shape[1]).to(output.dtype)
        return 0.5 * ((output - one_hot) ** 2).sum() / len(output)


LOSSES = {"softmax_cross_entropy": nn.CrossEntropyLoss, "quadratic": QuadraticLoss}


class TorchTrainer:
    """Trains the twin in shuffled mini-batches, as ``Model.fit`` does."""

    def __init__(self, network, loss: str, sgd: dict, seed: int = 0) -> None:
        self.model = from_network(network)
        self.loss = LOSSES[loss]()
        self.optimizer = torch.optim.SGD(self.model.parameters(), **sgd)
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def train(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        order = torch.randperm(len(xs), generator=self.generator)
        for start in range(0, len(xs) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            self.step(xs[batch], ys[batch])
