"""A stack of layers with shapes inferred eagerly and parameters under stable names."""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from math import prod

import attrs
import numpy as np

from laminae.arena import arena_views, flat_groups, movable
from laminae.errors import LaminaeError, PluginError, location, one_line
from laminae.protocols import BuildContext, Layer, Shape
from laminae.registry import Registry, make_registry


INFERENCE_BYTES = 8 * 2**20
"""The activations one inference chunk may hold: about what this class of
machine keeps in cache (2 MB of L2 per core, a shared L3)."""


class Network:
    """Layers in order, built for one sample's ``input_shape`` before any data is seen.

    Building walks the layers once: each reports its output shape and
    allocates its parameters, so a shape that cannot fit fails here, naming
    the layer, rather than on the first batch.  ``params`` and ``grads`` map
    ``"<index>.<name>"`` to the layers' own arrays, which everything (the
    optimizer, checkpoints) updates in place.  Training never needs the
    gradient of the data itself, so unless ``input_grad`` is set the first
    layer is told it may skip computing it.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape: Sequence[int],
        *,
        seed: int = 0,
        dtype: str | np.dtype = "float32",
        registry: Registry | None = None,
        names: Sequence[str] | None = None,
        input_grad: bool = False,
        fuse: bool = True,
    ) -> None:
        self.layers = list(layers)
        self.input_shape: Shape = tuple(int(n) for n in input_shape)
        self.dtype = np.dtype(dtype)
        self.registry = registry if registry is not None else make_registry()
        self.names = list(names) if names is not None else [_type_name(layer, self.registry) for layer in self.layers]
        ctx = BuildContext(rng=np.random.default_rng(seed), dtype=self.dtype, registry=self.registry)
        self.shapes: list[Shape] = []
        shape = self.input_shape
        for index, layer in enumerate(self.layers):
            with location(self.layer_label(index)):
                layer_ctx = attrs.evolve(ctx, input_grad=input_grad or index > 0)
                declared = layer.build(shape, layer_ctx)
            shape = self._checked_shape(index, declared)
            self.shapes.append(shape)
        self.param_arena, self.grad_arena = self._move_into_arenas()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for index, layer in enumerate(self.layers):
            for name, array in layer.params.items():
                self.params[f"{index}.{name}"] = array
                self.grads[f"{index}.{name}"] = layer.grads[name]
        groups = flat_groups(self.params, self.grads)
        self.param_blocks = [group.param for group in groups]
        self.grad_blocks = [group.grad for group in groups]
        """Every parameter (gradient) once, in as few flat arrays as the arenas
        allow: what data-parallel slices copy, weigh and add up, one pass each."""
        self.absorbed_by: dict[int, int] = _absorb(self.layers) if fuse else {}
        """``{absorbed: absorbing}``: the layers whose work a neighbour does (see :func:`_absorb`)."""
        self.absorbed = sorted(self.absorbed_by)
        self.running = [(index, layer) for index, layer in enumerate(self.layers) if index not in self.absorbed]
        """``(index, layer)`` of the layers forward and backward run, in order."""
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
            for layer in self.layers
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

    def _checked_shape(self, index: int, declared: object) -> Shape:
        """What ``build`` returned, as a shape: a tuple (or list) of positive ints, else a one-line error."""
        if isinstance(declared, (tuple, list)) and declared and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in declared
        ):
            return tuple(int(n) for n in declared)
        raise PluginError(
            f"{self.layer_label(index, plugin=True)}: build must return one sample's output shape,"
            f" a tuple of positive integers, but returned {declared!r}"
        )

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1] if self.shapes else self.input_shape

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The layers' outputs in turn; an exception inside a layer comes out as one
        :class:`~laminae.PluginError` naming the layer and its plugin."""
        x = np.asarray(x, dtype=self.dtype)
        index = -1
        try:
            for index, layer in self.running:
                x = layer.forward(x, training)
        except LaminaeError:
            raise
        except Exception as exc:
            raise self.plugin_failure(index, "forward", exc) from exc
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient of the input, or None when the
        network was built without ``input_grad`` and its first layer skipped it."""
        index = -1
        try:
            for index, layer in reversed(self.running):
                dout = layer.backward(dout)
        except LaminaeError:
            raise
        except Exception as exc:
            raise self.plugin_failure(index, "backward", exc) from exc
        return dout

    def plugin_failure(self, index: int, method: str, exc: BaseException) -> PluginError:
        """``exc``, raised in layer ``index``'s ``method``, as the one-line error that locates it."""
        return PluginError.raised_in(self.layer_label(index, plugin=True), method, exc)

    def state_dict(self) -> dict[str, np.ndarray]:
        """What layers keep besides parameters (a dropout's generator), under
        ``"<index>.<key>"``: saved in checkpoints so that a resumed run draws
        the same numbers as one never stopped."""
        state: dict[str, np.ndarray] = {}
        for index in self.stateful_layers():
            state.update((f"{index}.{key}", np.asarray(value)) for key, value in self.layers[index].state_dict().items())
        return state

    def stateful_layers(self) -> list[int]:
        """Indexes of the layers that keep state besides parameters (``state_dict``)."""
        return [index for index, layer in enumerate(self.layers) if hasattr(layer, "state_dict")]

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Hand each layer its part of ``state``; ValueError naming the layer if it cannot be used."""
        parts: dict[int, dict[str, np.ndarray]] = {}
        for name, array in state.items():
            index, _, key = name.partition(".")
            layer = self.layers[int(index)] if self.has_layer(index) else None
            if not hasattr(layer, "load_state_dict"):
                raise ValueError(f"{self.layer_label(index)}: unexpected state {key!r}")
            parts.setdefault(int(index), {})[key] = array
        for index, layer in enumerate(self.layers):
            load = getattr(layer, "load_state_dict", None)
            if load is not None:
                try:
                    load(parts.get(index, {}))
                except (KeyError, ValueError, TypeError) as exc:
                    reason = one_line(exc, with_type=isinstance(exc, KeyError))
                    raise ValueError(f"{self.layer_label(index)}: state: {reason}") from None

    def has_layer(self, index: str) -> bool:
        """Whether ``index`` (text from a stored name, such as ``"3"`` of ``"3.W"``)
        names one of the layers: ASCII digits only, since ``int`` also reads
        ``"٣"`` and ``"²".isdigit()`` is true."""
        return index.isascii() and index.isdigit() and int(index) < len(self.layers)

    def layer_label(self, index: int | str, *, plugin: bool = False) -> str:
        """``"layer 3 (dropout)"``, as every message about one layer begins; with
        ``plugin``, ``"layer 3 (dropout, from plugin 'laminae_extras')"``.  ``index``
        may also be the text before the dot of a stored name (``"3"`` of ``"3.W"``)."""
        index = str(index)
        if not self.has_layer(index):
            shown = index if index.isascii() and index.isdigit() else repr(index)  # text from a file, escaped
            return f"layer {shown} (not in the model)"
        name = self.names[int(index)]
        owner = self.registry.owners.get(("layers", name)) if plugin else None
        return f"layer {index} ({name}, from plugin {owner!r})" if owner else f"layer {index} ({name})"

    def inference_batch(self) -> int:
        """Samples per chunk when predicting or evaluating: as many as keep the
        chunk's input and every layer's output within ``INFERENCE_BYTES``,
        from 32 to 1000.  Chunks that stay in cache ran the 10,000 MNIST test
        digits faster than chunks of 1000 (measured: simple_cnn in chunks of 52,
        0.57 -> 0.40 s; lenet in chunks of 136, 0.42 -> 0.21 s; dnn stays at
        1000); results never depend on it."""
        sizes = [prod(self.input_shape), *(prod(shape) for shape in self.shapes)]
        return max(32, min(1000, INFERENCE_BYTES // (self.dtype.itemsize * sum(sizes))))

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs for ``x`` in inference mode, a chunk at a time (default
        :meth:`inference_batch`) to bound memory."""
        batch_size = batch_size or self.inference_batch()
        chunks = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks) if chunks else np.empty((0, *self.output_shape), self.dtype)

    def summary(self) -> str:
        """A table of every layer's input size, output shape and parameter count."""
        rows = [("#", "type", "inputs", "output shape", "params")]
        rows.append(("", "input", "", _shape_text(self.input_shape), ""))
        in_shapes = [self.input_shape, *self.shapes[:-1]]
        for index, layer in enumerate(self.layers):
            count = sum(p.size for p in layer.params.values())
            rows.append(
                (str(index), self.names[index], f"{prod(in_shapes[index]):,}", _shape_text(self.shapes[index]), f"{count:,}")
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


def _absorb(layers: list[Layer]) -> dict[int, int]:
    """Let layers take over a parameter-free neighbour's work where they offer
    to: ``{absorbed index: absorbing index}``.

    A layer with ``absorb(previous) -> bool`` may compute ``previous``'s
    function itself, when it can do so more cheaply and exactly (bit for bit
    the same outputs and gradients): a max-pool takes the ReLU before it on
    its four times smaller output, since max and ReLU commute.  Then a layer
    with ``absorb_next(following) -> bool`` may take over the layer after it
    (one no ``absorb`` took): an affine layer applies the ReLU after it in
    its own output buffer.  The absorbed layer is skipped by forward and
    backward; it has no parameters, so nothing else changes.
    """
    absorbed: dict[int, int] = {}
    for index in range(1, len(layers)):
        previous = layers[index - 1]
        absorb = getattr(layers[index], "absorb", None)
        if absorb is not None and not previous.params and absorb(previous):
            absorbed[index - 1] = index
    for index in range(len(layers) - 1):
        following = layers[index + 1]
        if index in absorbed or index + 1 in absorbed or following.params:
            continue
        absorb_next = getattr(layers[index], "absorb_next", None)
        if absorb_next is not None and absorb_next(following):
            absorbed[index + 1] = index
    return absorbed


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _type_name(layer: Layer, registry: Registry | None) -> str:
    if registry is not None:
        name = registry.name_of("layers", type(layer))
        if name is not None:
            return name
    return type(layer).__name__.lower()
