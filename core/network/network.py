"""A stack of layers with shapes inferred eagerly and parameters under stable names."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod

import numpy as np

from laminae.arena import arena_views, flat_groups, movable
from laminae.chain import Chain
from laminae.errors import one_line
from laminae.protocols import BuildContext, Layer, Node, Shape
from laminae.registry import Registry, make_registry


INFERENCE_BYTES = 8 * 2**20
"""The activations one inference chunk may hold: about what this class of
machine keeps in cache (2 MB of L2 per core, a shared L3)."""


class Network:
    """Layers in order, built for one sample's ``input_shape`` before any data is seen.

    Building walks the layers once: each reports its output shape and
    allocates its parameters, so a shape that cannot fit fails here, naming
    the layer, rather than on the first batch.  A layer may contain layers
    (see :meth:`laminae.BuildContext.build`): ``nodes`` is the whole tree,
    by path (``"3"``, ``"3.1.0"``), parents before their children.
    ``params`` and ``grads`` map ``"<path>.<name>"`` to every layer's own
    arrays, which everything (the optimizer, checkpoints) updates in place.
    Training never needs the gradient of the data itself, so unless
    ``input_grad`` is set the first layer is told it may skip computing it.
    ``layers`` may be layer objects or tables (``{"type": "conv", ...}``).
    """

    def __init__(
        self,
        layers: Sequence[Layer | Mapping],
        input_shape: Sequence[int],
        *,
        seed: int = 0,
        dtype: str | np.dtype = "float32",
        registry: Registry | None = None,
        input_grad: bool = False,
        fuse: bool = True,
    ) -> None:
        self.input_shape: Shape = tuple(int(n) for n in input_shape)
        self.dtype = np.dtype(dtype)
        self.registry = registry if registry is not None else make_registry()
        ctx = BuildContext(rng=np.random.default_rng(seed), dtype=self.dtype, registry=self.registry)
        self.chain = Chain.build(layers, self.input_shape, ctx, input_grad=input_grad, fuse=fuse)
        self.nodes: dict[str, Node] = {node.path: node for node in ctx.nodes}
        """Every layer of the tree by its path, parents before their children."""
        self.layers = self.chain.layers
        self.names = [node.type for node in self.chain.nodes]
        self.shapes: list[Shape] = [node.output_shape for node in self.chain.nodes]
        self.param_arena, self.grad_arena = self._move_into_arenas()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for path, node in self.nodes.items():
            for name, array in node.layer.params.items():
                self.params[f"{path}.{name}"] = array
                self.grads[f"{path}.{name}"] = node.layer.grads[name]
        groups = flat_groups(self.params, self.grads)
        self.param_blocks = [group.param for group in groups]
        self.grad_blocks = [group.grad for group in groups]
        """Every parameter (gradient) once, in as few flat arrays as the arenas
        allow: what data-parallel slices copy, weigh and add up, one pass each."""
        self.absorbed_by: dict[int, int] = self.chain.absorbed_by
        """``{absorbed: absorbing}``: the network's own layers whose work a
        neighbour does (see :func:`laminae.chain.absorb`)."""
        self.absorbed = sorted(self.absorbed_by)
        self.running = [(index, layer) for index, layer in enumerate(self.layers) if index not in self.absorbed_by]
        """``(index, layer)`` of the network's own layers that forward and backward run, in order."""
        self.input_grad = input_grad
        self.probed = False
        """Whether :func:`~laminae.network.probe.probe` has held the layers to their
        contracts (training does once, before its first batch)."""

    def _move_into_arenas(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Lay the layers' parameters end to end in one buffer, and their
        gradients in another (see :mod:`laminae.arena`), leaving views in the
        layers' dicts; arrays that cannot move (another dtype, or a layer
        holding a reference of its own) stay where they are.  Each array is
        let go as soon as it is copied, so the move needs one array's
        memory on top of the network's, not the network's twice."""
        moving = [
            (layer, name)
            for layer in (node.layer for node in self.nodes.values())
            for name in list(layer.params)
            if isinstance(layer.grads.get(name), np.ndarray)
            and movable(layer.params, name, self.dtype)
            and movable(layer.grads, name, self.dtype)
            and layer.grads[name].shape == layer.params[name].shape
        ]
        if not moving:
            return None, None
        shapes = [layer.params[name].shape for layer, name in moving]
        param_arena, params = arena_views(shapes, self.dtype)
        grad_arena, grads = arena_views(shapes, self.dtype)
        for (layer, name), param, grad in zip(moving, params, grads):
            param[...] = layer.params[name]
            grad[...] = layer.grads[name]
            layer.params[name], layer.grads[name] = param, grad
        return param_arena, grad_arena

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1] if self.shapes else self.input_shape

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The layers' outputs in turn; an exception inside a layer comes out as one
        :class:`~laminae.PluginError` naming the layer (by its path) and its plugin."""
        return self.chain.forward(np.asarray(x, dtype=self.dtype), training)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient of the input, or None when the
        network was built without ``input_grad`` and its first layer skipped it."""
        return self.chain.backward(dout)

    def state_dict(self) -> dict[str, np.ndarray]:
        """What layers keep besides parameters (a dropout's generator, a batch
        norm's running averages), under ``"<path>.<key>"``: saved in checkpoints
        so that a resumed run draws the same numbers as one never stopped."""
        state: dict[str, np.ndarray] = {}
        for path in self.stateful_layers():
            state.update((f"{path}.{key}", np.asarray(value)) for key, value in self.nodes[path].layer.state_dict().items())
        return state

    def stateful_layers(self) -> list[str]:
        """Paths of the layers that keep state besides parameters (``state_dict``)."""
        return [path for path, node in self.nodes.items() if hasattr(node.layer, "state_dict")]

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Hand each layer its part of ``state``; ValueError naming the layer if it cannot be used."""
        parts = self.states_by_layer(state)
        for path, own in parts.items():
            if not hasattr(self.nodes[path].layer if path in self.nodes else None, "load_state_dict"):
                raise ValueError(f"{self.layer_label(path)}: unexpected state {next(iter(own))!r}")
        for path in self.stateful_layers():
            load = getattr(self.nodes[path].layer, "load_state_dict", None)
            if load is not None:
                try:
                    load(parts.get(path, {}))
                except (KeyError, ValueError, TypeError) as exc:
                    reason = one_line(exc, with_type=isinstance(exc, KeyError))
                    raise ValueError(f"{self.layer_label(path)}: state: {reason}") from None

    def states_by_layer(self, state: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """``state`` (``"<path>.<key>"`` names, as :meth:`state_dict` gives) as each
        layer's own dict, by path: what the layer's ``load_state_dict`` takes."""
        parts: dict[str, dict[str, np.ndarray]] = {}
        for name, array in state.items():
            path, key = self.split_name(name)
            parts.setdefault(path, {})[key] = array
        return parts

    def split_name(self, name: str) -> tuple[str, str]:
        """A stored name (``"3.1.0.W"``, ``"3.running_mean"``) as the path of the
        layer it belongs to and its own key: the longest path of a layer
        that begins it.  A name no layer begins splits at its first dot."""
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            path = ".".join(parts[:cut])
            if path in self.nodes:
                return path, ".".join(parts[cut:])
        path, _, key = name.partition(".")
        return path, key

    def layer_label(self, path: int | str, *, plugin: bool = False) -> str:
        """``"layer 3.1 (dropout)"``, as every message about one layer begins; with
        ``plugin``, ``"layer 3.1 (dropout, from plugin 'laminae_extras')"``.  ``path``
        may also be the text before the key of a stored name (``"3"`` of ``"3.W"``)."""
        node = self.nodes.get(str(path))
        if node is None:
            text = str(path)
            shown = text if text.isascii() and text.replace(".", "").isalnum() else repr(text)  # from a file, escaped
            return f"layer {shown} (not in the model)"
        return node.label(plugin=plugin)

    def inference_batch(self) -> int:
        """Samples per chunk when predicting or evaluating: as many as keep the
        chunk's input and every layer's output within ``INFERENCE_BYTES``,
        from 32 to 1000.  Chunks that stay in cache ran the 10,000 MNIST test
        digits faster than chunks of 1000 (measured: simple_cnn in chunks of 52,
        0.57 -> 0.40 s; lenet in chunks of 136, 0.42 -> 0.21 s; dnn stays at
        1000); results depend on it only at rounding level.  Every layer
        counts, those inside composites too (a composite's output is one of
        its inner layers')."""
        parents = {path.rpartition(".")[0] for path in self.nodes}
        leaves = [node.output_shape for path, node in self.nodes.items() if path not in parents]
        sizes = [prod(self.input_shape), *(prod(shape) for shape in leaves)]
        return max(32, min(1000, INFERENCE_BYTES // (self.dtype.itemsize * sum(sizes))))

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs for ``x`` in inference mode, a chunk at a time (default
        :meth:`inference_batch`) to bound memory."""
        batch_size = batch_size or self.inference_batch()
        chunks = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks) if chunks else np.empty((0, *self.output_shape), self.dtype)

    def summary(self) -> str:
        """A table of every layer, inner layers indented under theirs: its
        input size, output shape and parameter count (a composite's count
        is its whole subtree's)."""
        rows = [("#", "type", "inputs", "output shape", "params")]
        rows.append(("", "input", "", _shape_text(self.input_shape), ""))
        for path, node in self.nodes.items():
            count = sum(p.size for name, p in self.params.items() if name.startswith(f"{path}."))
            rows.append(
                (
                    path,
                    "  " * node.depth + node.type,
                    f"{prod(node.input_shape):,}",
                    _shape_text(node.output_shape),
                    f"{count:,}",
                )
            )
        widths = [max(len(row[col]) for row in rows) for col in range(5)]
        align = ["<", "<", ">", "<", ">"]
        lines = ["  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip() for row in rows]
        rule = "-" * len(max(lines, key=len))
        lines.insert(1, rule)
        lines += [rule, f"total params: {self.num_params:,} ({self.dtype.name})"]
        lines += [
            f"{self.layer_label(index)} runs inside {self.layer_label(self.absorbed_by[index])}"
            for index in self.absorbed
        ]
        return "\n".join(lines)


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
