"""The contracts every plugin meets, written as structural protocols.

A third-party class satisfies them by having the right attributes and
methods; nothing of ours needs to be subclassed or imported.  The
hyperparameters of a layer, loss, optimizer, initializer or data set are its
``attrs`` init fields, which is what lets a TOML table map onto it key for key.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from math import prod
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

from laminae.contracts import parameter_names_problem
from laminae.errors import LaminaeError, PluginError, SpecError
from laminae.memory import available_bytes

Shape = tuple[int, ...]
"""The shape of one sample: the batch axis is always implied."""


@runtime_checkable
class Layer(Protocol):
    """One differentiable stage of a network.

    ``build`` runs once, before any data is seen: it receives one sample's
    input shape, allocates the parameters, with a gradient array in ``grads``
    under each name of ``params``, and returns one sample's output shape (or
    raises :class:`laminae.ShapeError`).  ``backward`` may use only
    what this layer's own ``forward`` cached, and writes the gradients of its
    parameters into ``grads`` under the same names as ``params``.

    ``backward`` writes into the arrays of ``grads`` in place, every element
    of them: the network and the optimizer hold those very arrays, and a new
    array bound under a name is never seen.  After ``build`` the network
    may move both dicts' arrays into its flat arenas (:mod:`laminae.arena`),
    leaving views under the same names: read them through the dicts at
    every call.  Arrays the layer keeps a reference of its own to are left
    where they are.

    A layer that keeps state which is not a parameter but decides later
    numbers (a dropout's random generator, a batch norm's running averages)
    may also have ``state_dict()`` and ``load_state_dict(state)``, as an
    optimizer does: a flat dict of numeric arrays, saved in checkpoints so
    that a resumed run continues exactly, and checked on load against a
    fresh layer's ``state_dict()``.  :func:`laminae.randomness.rng_to_array`
    stores a generator.  To train in slices (``threads`` above 1) such a
    layer also needs ``combine_states(states, weights) -> state``: after
    every step it gets each slice's ``state_dict()`` (its own first) and
    each slice's share of the batch, and returns the state to load (running
    averages: their weighted mean).  A layer whose state is a random stream
    also has ``to_slice(index)``: called on slice ``index``'s copy (from 1)
    once it holds the step's starting state, it makes that copy draw from
    a stream of its own that never meets the others (the built-in dropout
    jumps its generator ``index`` times 2**127 draws ahead); its
    ``combine_states`` then keeps the first slice's state.

    A layer may also have ``absorb(previous) -> bool``, called once when a
    network is built: True means it takes over the parameter-free
    ``previous`` layer, with the same outputs and gradients bit for bit, and
    the network no longer calls ``previous`` itself.  The built-in max-pool
    takes over a layer whose class states ``commutes_with_max = True`` in its
    own body, meaning that max-pooling its output gives the same numbers as
    running it on the max-pooled input, gradients included (the ReLU states
    it).  The pool then runs that layer's own ``forward`` on the pooled
    output and its ``backward`` on the incoming gradient, so no plugin
    imports another.  A subclass is not taken over unless it states the
    marker again.  The other way round, ``absorb_next(following) -> bool``
    takes over the parameter-free layer right after this one: the built-in
    affine applies a layer whose class states ``computes_relu = True``
    (``max(x, 0)``, gradient where ``x > 0``) to its own output buffer in
    place, and masks the incoming gradient before its own backward.  An
    ``absorb`` wins over an ``absorb_next`` for the same layer.  Building
    binds a layer object to its network (its place in it, what it
    absorbed): a layer object serves the network that built it last.

    A layer may contain layers (a residual block, branches, a block used
    many times): its ``build`` builds each with ``ctx.build(spec,
    input_shape, name)`` (a registered type as a table, or a layer object),
    which places it in the network's tree under this layer (``"3.1"`` for
    child ``"1"`` of layer 3), and :class:`laminae.Chain` runs a list of
    them in order.  Such a layer calls its children's ``forward``,
    ``backward`` and ``onnx`` itself and keeps only its own parameters and
    state in its own dicts: the network finds every layer of the tree,
    gathers their parameters under dotted names (``"3.1.W"``), moves them
    into its arenas and saves their state.

    A layer that can be exported to ONNX (``laminae export``) has
    ``onnx(graph, x) -> str``: ``x`` names its input tensor (the batch axis,
    then the shape ``build`` got), and it adds to ``graph``, a
    :class:`laminae.OnnxGraph`, the nodes that compute what ``forward``
    computes in inference, and returns the name of their output (``x``
    itself for a layer that changes nothing then, as dropout).  It adds
    only its own work: a layer it absorbed adds its own nodes.  A model
    with a layer that has none cannot be exported.
    """

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape: ...

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray: ...

    def backward(self, dout: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Loss(Protocol):
    """Scores a batch of network outputs against targets.

    ``forward`` returns the mean loss over the batch; ``backward`` returns its
    gradient with respect to the outputs that ``forward`` last saw.

    A loss may also have ``probabilities(output)``, rows summing to 1, which
    ``Model.predict_proba`` returns instead of the softmax of the outputs;
    an exported model computes them with the loss's ``onnx(graph, x) -> str``,
    written as a layer's is (see :class:`Layer`), and without one only the
    outputs themselves (``laminae export --logits``) can be exported.
    """

    def forward(self, output: np.ndarray, target: np.ndarray) -> float: ...

    def backward(self) -> np.ndarray: ...


@runtime_checkable
class Optimizer(Protocol):
    """Updates parameters in place from their gradients.

    ``params`` and ``grads`` map stable names (``"3.W"``) to arrays; the same
    dicts are passed at every step.  The state (momentum buffers, step
    counters) is a flat dict of arrays so that a checkpoint can store it
    without pickling.  A state array that belongs to one parameter is named
    ``"<anything>/<parameter>"`` (``"velocity/3.W"``) and has its shape: that
    is how a checkpoint is checked against its model before it is loaded.
    """

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class Initializer(Protocol):
    """Draws the initial values of one parameter array."""

    def __call__(
        self, shape: Shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any
    ) -> np.ndarray: ...


@runtime_checkable
class Dataset(Protocol):
    """Loads a labelled image data set as float32 NCHW images in [0, 1].

    ``load`` receives the root folders to search, in order (``--data-dir``,
    ``$LAMINAE_DATA``, the per-user cache); each holds one sub-folder per data
    set.  It returns the train and test splits, or raises a one-line
    :class:`laminae.DataError` naming where it looked.  Subclassing
    :class:`laminae.data.ImageDataset` does the search: its ``read_folder``
    gets the data set's own folder under each root in turn, and raises
    ``FileNotFoundError`` to have the next root tried.

    A data set may also name its classes with an optional attribute
    ``class_names``: a tuple of strings, one per class, in label order
    (Fashion-MNIST's ``("T-shirt/top", "Trouser", ...)``).  ``laminae
    report`` labels its confusion matrix and mistakes with them; without
    it, classes go by their numbers.  (It is not a member of this protocol,
    which would make it required.)
    """

    def load(self, roots: list[Any]) -> Any: ...


class Creates(Protocol):
    """What a :class:`BuildContext` needs of a :class:`laminae.Registry`: making a
    registered class from ``"name"`` or ``{"type": name, **fields}``.  (Named
    structurally because the registry, which checks plugins against the
    protocols here, sits above this module.)"""

    def create(self, kind: str, spec: str | Mapping[str, Any]) -> Any: ...


DRAW_BYTES = 8
"""Bytes per element an initializer may hold while drawing (numpy's generators
draw float64), on top of the parameter and its gradient."""


@runtime_checkable
class Transform(Protocol):
    """Changes a whole training batch at random: data augmentation.

    ``__call__(x, rng)`` gets a batch (N, C, H, W) and the run's augmentation
    generator, and returns a batch of the same shape and dtype, drawing every
    random number from ``rng`` (so a resumed run draws the same), vectorised
    over the batch, and never writing into ``x``.  Transforms apply only
    while training: evaluation and prediction never see them.
    """

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@runtime_checkable
class Schedule(Protocol):
    """The learning rate at one step of training, for any optimizer with ``lr``.

    ``__call__(lr, step, steps_per_epoch, epochs)`` gets the optimizer's
    configured ``lr``, the step about to be taken (from 0, counted over the
    whole run) and the run's shape, and returns the rate for that step, a
    finite number, 0 or more.  It keeps no state: a resumed run asks for the
    same steps and gets the same rates.
    """

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float: ...


@runtime_checkable
class Logger(Protocol):
    """Hears a training run's events: tracking, dashboards, notifications.

    ``__call__(event)`` gets each event of :mod:`laminae.events` as it
    happens (:class:`~laminae.events.RunStarted`, ``EpochEnded``,
    ``BestSaved``, ``RunEnded``) and ignores the kinds it has no use for,
    and the kinds added later.  Its constructor only keeps its fields:
    every spec is validated by constructing its parts, so a logger connects,
    opens files and imports its library when the run starts.

    A logger never costs a run.  Anything it raises is one warning line
    naming it, and the run goes on without it, with the same numbers.  The
    one exception is a :class:`laminae.LaminaeError` raised at
    ``RunStarted``, before the first batch: a setting that cannot work (a
    missing package, say) refuses the run in one line, while nothing is lost.
    """

    def __call__(self, event: Any) -> None: ...


def shape_returned(declared: object, label: str) -> Shape:
    """What a layer's ``build`` returned, as a shape: a tuple (or list) of
    positive ints, else a one-line PluginError naming the layer (``label``)."""
    if isinstance(declared, (tuple, list)) and declared and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in declared
    ):
        return tuple(int(n) for n in declared)
    raise PluginError(
        f"{label}: build must return one sample's output shape, a tuple of positive integers, but returned {declared!r}"
    )


@attrs.define(eq=False)
class Node:
    """One layer at its place in a network's tree, as :meth:`BuildContext.build` made it."""

    path: str
    """Where it sits: ``"3"`` for a network's layer 3, ``"3.1.0"`` for child ``"0"``
    of child ``"1"`` of layer 3.  Its parameters are saved as ``"<path>.<name>"``."""
    layer: Any
    type: str
    """The registered name it was made from (``"conv"``), or its class's name."""
    input_shape: Shape
    output_shape: Shape = ()
    plugin: str | None = None
    """The plugin that registered its type, for messages."""

    def label(self, *, plugin: bool = False) -> str:
        """``"layer 3.1.0 (conv)"``, as every message about one layer begins; with
        ``plugin``, ``"layer 3.1.0 (conv, from plugin 'laminae.plugins.conv')"``."""
        if plugin and self.plugin:
            return f"layer {self.path} ({self.type}, from plugin {self.plugin!r})"
        return f"layer {self.path} ({self.type})"

    depth: int = 0
    """How many layers contain it: 0 for a network's own layers."""


@attrs.define(eq=False)
class BuildContext:
    """Handed to ``Layer.build``: the random stream, the float type, and the
    initializers known to the registry.

    Layers name their initializer as data (``"he"`` or
    ``{type = "normal", std = 0.01}``), so they need the registry to turn that
    name into an object; the context carries it so that layers never import
    one another or a global.
    """

    rng: np.random.Generator
    dtype: np.dtype = attrs.field(default=np.dtype(np.float32), converter=np.dtype)
    registry: Creates | None = None
    input_grad: bool = True
    """Whether ``backward`` must return the gradient of the input.  A network's
    first layer gets False: its input is the data, so a layer may skip that
    work (for a conv, a GEMM and the col2im) and return None."""
    reserved: list[int] = attrs.field(factory=lambda: [0], repr=False)
    """Bytes the network's parameters drawn so far take, shared by every layer's
    context (``attrs.evolve`` keeps the list): each parameter is held against
    the memory available before it is drawn, so a spec asking for more is
    refused in one line instead of swapping or being killed."""

    path: str = ""
    """The place of the layer being built (``"3"``, ``"3.1"``); ``""`` for a network itself."""
    nodes: list[Node] = attrs.field(factory=list, repr=False)
    """Every layer built so far, parents before their children: the network's
    tree, shared by every layer's context as ``reserved`` is."""

    def build(self, layer: Any, input_shape: Shape, name: str | int, *, input_grad: bool = True) -> Node:
        """Make and build one layer as a child of the layer being built, and
        return its :class:`Node` (``node.layer``, ``node.output_shape``).

        ``layer`` is a registered type (``"relu"``, ``{"type": "conv",
        "filters": 8, "size": 3}``) or a layer object.  ``name`` is its place
        among its parent's children (its index in a list, say): the node's
        path is the parent's path, a dot, and ``name``.  A mistake in it or
        anywhere below it is one line naming the innermost layer:
        ``layer 3.1.0 (conv): ...``.  ``input_grad`` says whether the parent
        needs the gradient of the child's input (true but for a network's
        first layer)."""
        path = f"{self.path}.{name}" if self.path else str(name)
        depth = next((node.depth + 1 for node in reversed(self.nodes) if node.path == self.path), 0)
        if isinstance(layer, (str, Mapping)):
            table = {"type": layer} if isinstance(layer, str) else layer
            kind = table.get("type")
            node = Node(path, None, kind if isinstance(kind, str) else "?", tuple(input_shape), depth=depth)
            node.plugin = self._owner(node.type)
            with _in_layer(node):
                node.layer = self._registry("layer").create("layers", table)
        else:
            node = Node(path, layer, _type_name(layer, self.registry), tuple(input_shape), depth=depth)
            node.plugin = self._owner(node.type)
        self.nodes.append(node)
        with _in_layer(node):
            declared = node.layer.build(tuple(input_shape), attrs.evolve(self, path=path, input_grad=input_grad))
        node.output_shape = shape_returned(declared, node.label(plugin=True))
        problem = parameter_names_problem(node.layer)
        if problem is not None:
            error = PluginError(f"{node.label(plugin=True)}: {problem}")
            error.layer_path = node.path
            raise error
        return node

    def _registry(self, what: str) -> Creates:
        if self.registry is None:
            raise PluginError(
                f"{what} types are named, but this BuildContext has no registry to look them up"
                " (pass registry=laminae.make_registry())"
            )
        return self.registry

    def _owner(self, name: str) -> str | None:
        owners = getattr(self.registry, "owners", None)
        return owners.get(("layers", name)) if isinstance(owners, Mapping) else None

    def initialize(self, init: Any, shape: Shape, fan_in: int, fan_out: int) -> np.ndarray:
        """Draw a parameter array of ``shape`` with the initializer ``init``.

        ``init`` is a registered name, a table ``{"type": name, **fields}``,
        or any callable meeting the :class:`laminae.Initializer` protocol.
        """
        need = prod(shape) * (DRAW_BYTES + 2 * self.dtype.itemsize)
        self.reserved[0] += need
        available = available_bytes()
        if self.reserved[0] > available:
            raise SpecError(
                f"its parameters need {self.reserved[0]:,} bytes to draw (a {tuple(shape)} array here),"
                f" more than the {available:,} bytes of memory available"
            )
        if isinstance(init, (str, Mapping)):
            init = self._registry(f"initializer {init!r} is named, but").create("initializers", init)
        values = init(tuple(shape), fan_in, fan_out, self.rng, self.dtype)
        return np.ascontiguousarray(values, dtype=self.dtype)


class _in_layer:  # noqa: N801 - used as a statement, like contextlib's
    """``with _in_layer(node):`` puts ``"layer 3.1.0 (conv)"`` in front of a
    Laminae error raised in the block, and a note saying so on any other
    exception, unless a layer inside it (a child's build) already did: the
    innermost layer is the one named."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        if not isinstance(exc, Exception) or getattr(exc, "layer_path", None) is not None:
            return False  # nothing raised, or an inner layer's own build named itself
        if isinstance(exc, LaminaeError):
            located = exc.located(self.node.label())
            located.layer_path = self.node.path
            raise located from exc
        if too_big(exc):  # the spec's sizes, not the plugin: the assembly says so in one line
            if not any(note.startswith("(raised in layer ") for note in getattr(exc, "__notes__", ())):
                exc.add_note(f"(raised in {self.node.label()})")
            return False
        error = PluginError.raised_in(self.node.label(plugin=True), "build", exc)
        error.layer_path = self.node.path
        raise error from exc


NUMPY_TOO_BIG = ("array is too big", "Maximum allowed dimension exceeded")
"""How numpy says an array is beyond any memory, when it does not say MemoryError."""


def too_big(exc: BaseException) -> bool:
    """An allocation that a spec's sizes made impossible: the spec's fault, not the layer's."""
    return isinstance(exc, MemoryError) or (isinstance(exc, ValueError) and str(exc).startswith(NUMPY_TOO_BIG))


def _type_name(layer: Any, registry: Any) -> str:
    """The name ``layer``'s class is registered under (:meth:`laminae.Registry.name_of`),
    else its class name in lower case."""
    name_of = getattr(registry, "name_of", None)
    return (name_of("layers", type(layer)) if name_of is not None else None) or type(layer).__name__.lower()
