"""The PyTorch twin of a built Laminae network, trained the same way.

The twin is translated from the Laminae network itself (layer types, their
fields, the shapes the build inferred) and starts from the same weights and
batch-norm running averages, so every architecture in models.toml is written
once, and a mismatch in the translation shows up as a different loss rather
than as a silently unfair timing.  Composite layers are translated
recursively (``laminae_models.inner_paths``): a residual block becomes
``main(x) + shortcut(x)`` (or ``+ x``), branches their outputs added or
concatenated, a sequence or repeat its layers in line.  The SGD settings are
Laminae's (momentum, Nesterov, weight decay); a learning-rate schedule is
not applied (see ``laminae_models.SGD_OPTIONS``).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

import laminae_models as lm


def _leaf(node) -> list[nn.Module]:
    """One Laminae layer as modules, its weights copied (the last module holds them)."""
    kind, layer, shape_in = node.type, node.layer, tuple(node.input_shape)
    if kind == "affine":
        linear = nn.Linear(int(np.prod(shape_in)), layer.units, bias=layer.bias)
        return ([nn.Flatten()] if len(shape_in) > 1 else []) + [_copy(linear, layer.params, weight="W", bias="b")]
    if kind == "conv":
        conv = nn.Conv2d(shape_in[0], layer.filters, layer.size, layer.stride, layer.pad, bias=layer.bias)
        return [_copy(conv, layer.params, weight="W", bias="b")]
    if kind == "batchnorm":
        norm = (nn.BatchNorm2d if len(shape_in) == 3 else nn.BatchNorm1d)(
            shape_in[0], eps=layer.eps, momentum=layer.momentum, affine=layer.affine)
        return [_copy(norm, {**layer.params, **layer.state_dict()}, weight="gamma", bias="beta",
                      running_mean="running_mean", running_var="running_var")]
    if kind == "pool":
        pool = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
        return [pool(layer.size, layer.stride)]
    if kind == "global_avg_pool":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if kind == "dropout":
        return [nn.Dropout(layer.rate)]
    if kind in SIMPLE:
        return [SIMPLE[kind]()]
    raise NotImplementedError(f"no PyTorch translation for layer {kind!r}")


SIMPLE = {"flatten": nn.Flatten, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
"""Layers with neither parameters nor fields."""


def _copy(module: nn.Module, arrays: dict, **names: str) -> nn.Module:
    """``module`` with its tensors set from Laminae's ``arrays`` (float32): ``names``
    maps the module's attribute to Laminae's name; an affine weight is transposed."""
    for attribute, name in names.items():
        if name in arrays:
            value = np.asarray(arrays[name], dtype=np.float32)
            value = value.T if attribute == "weight" and value.ndim == 2 else value
            getattr(module, attribute).data = torch.tensor(value).contiguous()
    return module


class Merge(nn.Module):
    """Paths on the same input, their outputs added (a residual block: its main
    path plus its shortcut, or the input itself) or concatenated along the channels."""

    def __init__(self, paths: list[nn.Module], merge: str) -> None:
        super().__init__()
        self.paths, self.merge = nn.ModuleList(paths), merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [path(x) for path in self.paths]
        if self.merge == "concat":
            return torch.cat(outs, dim=1)
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        return total


def _chain(nodes) -> nn.Sequential:
    """Layers in order (a network, a path of a composite; none: the input itself)."""
    modules = []
    for node in nodes:
        inner = lm.inner_paths(node)
        if inner is None:
            modules += _leaf(node)
            continue
        merge, paths = inner
        chains = [_chain(path) for path in paths]
        modules += list(chains[0]) if merge is None else [Merge(chains, merge)]
    return nn.Sequential(*modules)


def from_network(network) -> nn.Sequential:
    """``nn.Sequential`` equivalent to ``network``, with its current weights and state (float32)."""
    return _chain(network.chain.nodes)


class QuadraticLoss(nn.Module):
    """Nielsen's cost as Laminae's ``quadratic`` defines it: 0.5 * sum of squares / N."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(target, output.shape[1]).to(output.dtype)
        return 0.5 * ((output - one_hot) ** 2).sum() / len(output)


LOSSES = {
    "softmax_cross_entropy": lambda smoothing=0.0: nn.CrossEntropyLoss(label_smoothing=smoothing),
    "quadratic": QuadraticLoss,
}
"""Each loss type's module, made from the loss table's options (Laminae's keys)."""


class TorchTrainer:
    """Trains the twin in shuffled mini-batches, as ``Model.fit`` does.

    Written the way a PyTorch user after speed on a CPU would, by what was
    measured here (CPU time of a step on one thread, best of 5 rounds of 10
    steps, with the machine busy with other work: rough figures):

    - channels_last for a network of images with batch norm: fashion_resnet
      (batch 64) took 50-53 ms a step, against 69 ms in NCHW.  The classic
      conv networks stay NCHW, where channels_last was slower (simple_cnn
      20.3 ms against 18.8, lenet 7.0 against 6.8).
    - eager mode.  The one fusion of conv + batch norm + ReLU and of the
      residual add that PyTorch offers for training on a CPU is
      ``torch.compile`` (inductor; it compiles offline here, with gcc):
      fashion_resnet took 62 ms a step with it, NCHW and channels_last alike,
      64 ms with the SGD step compiled too, after 10-60 s of compiling.  The
      conv-BN folding of ``torch.fx`` and ``torch.ao`` is for inference and
      quantization only.  The foreach SGD and in-place ReLUs changed nothing
      beyond the noise (3%).
    """

    def __init__(self, network, loss: dict, sgd: dict, seed: int = 0) -> None:
        self.model = from_network(network)
        normalized = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in self.model.modules())
        images = len(network.input_shape) == 3
        self.memory_format = torch.channels_last if normalized and images else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.loss = LOSSES[loss["type"]](**lm.loss_options(loss))
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
            self.step(xs[batch].contiguous(memory_format=self.memory_format), ys[batch])

    def first_loss(self, x: np.ndarray, y: np.ndarray, training: bool = True) -> float:
        """The loss on one numpy batch, without training: in training mode (batch
        statistics; dropout off), else with the running averages.  Computed by
        a copy of the model, so the twin's running averages stay as they are."""
        module = copy.deepcopy(self.model).train(training)
        for dropout in (m for m in module.modules() if isinstance(m, nn.Dropout)):
            dropout.p = 0.0
        with torch.no_grad():
            return float(self.loss(module(torch.from_numpy(x)), torch.from_numpy(y)))
