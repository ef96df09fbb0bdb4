"""A conformance kit that plugin authors call from their own tests.

``check_layer(Tanh(), (3, 5))`` builds the layer in float64 and float32 and
checks what every layer must get right: gradients that match central
differences for the input and every parameter, in training and in inference
mode, written into ``grads`` in place, an inferred output shape that matches
the real one, float32 in giving float32 out, an input left untouched,
parameters that depend on the seed alone, and a state that survives a round
trip.  ``check_loss``, ``check_optimizer``, ``check_initializer``,
``check_transform``, ``check_schedule`` and ``check_dataset`` do the same
for the other kinds; where :mod:`laminae.contracts` has the check, it is
the one ``laminae check`` and training run.  A failure raises
:class:`ConformanceError` (an ``AssertionError``) naming the plugin class,
the check and the numbers.

The ``*_cases`` helpers turn a table of registered names and options into
``pytest.param`` objects, so that one parametrised test checks every class a
plugin provides, each under its own test id.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from laminae.data import DatasetSplits
from laminae.errors import DataError, did_you_mean, one_line
from laminae.contracts import (
    batch_problem,
    gradient_problem,
    output_problem,
    parameter_names_problem,
    poison_gradients,
    rates_problem,
)
from laminae.protocols import BuildContext, Dataset, Initializer, Layer, Loss, Node, Optimizer, Schedule, Transform
from laminae.registry import ENTRY_POINT_GROUP


class ConformanceError(AssertionError):
    """A plugin that breaks the contract its protocol describes."""


def _fail(subject: str, check: str, detail: str) -> None:
    raise ConformanceError(f"{subject}: {check}: {detail}")


def numerical_gradient(f: Callable[[], float], array: np.ndarray, indices: Sequence[tuple], eps: float) -> np.ndarray:
    """Central differences of ``f`` with respect to ``array`` at ``indices``, perturbing in place."""
    grads = np.empty(len(indices))
    for k, index in enumerate(indices):
        saved = array[index]
        array[index] = saved + eps
        plus = f()
        array[index] = saved - eps
        minus = f()
        array[index] = saved
        grads[k] = (plus - minus) / (2 * eps)
    return grads


def _sample_indices(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> list[tuple]:
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= count else rng.choice(size, count, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def _compare(subject: str, check: str, analytic: np.ndarray, numeric: np.ndarray, rtol: float, atol: float) -> None:
    error = np.abs(analytic - numeric)
    bound = atol + rtol * np.abs(numeric)
    if not np.all(error <= bound):
        worst = int(np.argmax(error - bound))
        _fail(
            subject,
            check,
            f"analytic {analytic[worst]:.8g} vs numerical {numeric[worst]:.8g}"
            f" (max abs error {error.max():.3g}, tolerance {atol:g} + {rtol:g}*|numerical|)",
        )


def _build(
    layer: Any, input_shape: tuple[int, ...], dtype: Any, seed: int, registry: Any, input_grad: bool = True
) -> tuple[Any, tuple]:
    """A fresh copy of ``layer`` built for ``input_shape``; a layer that
    contains layers comes back as a :class:`_Subtree`, so that every check
    covers its inner layers' parameters and state too."""
    fresh = copy.deepcopy(layer)
    ctx = BuildContext(rng=np.random.default_rng(seed), dtype=dtype, registry=registry, input_grad=input_grad)
    shape = tuple(fresh.build(tuple(input_shape), ctx))
    if not ctx.nodes:
        return fresh, shape
    nodes = [Node("", fresh, type(fresh).__name__, tuple(input_shape), shape), *ctx.nodes]
    stateful = any(hasattr(node.layer, "state_dict") for node in nodes)
    return (_StatefulSubtree if stateful else _Subtree)(nodes), shape


class _Subtree:
    """A layer that contains layers, with them, seen by the checks as one layer:
    ``params`` and ``grads`` hold every layer's arrays under ``"<path>.<name>"``,
    as a network names them (the outer layer's own under their bare names)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.layer = nodes[0].layer

    def _gathered(self, what: str) -> dict[str, np.ndarray]:
        return {
            f"{node.path}.{name}" if node.path else name: array
            for node in self.nodes
            for name, array in getattr(node.layer, what).items()
        }

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._gathered("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._gathered("grads")

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.layer.forward(x, training)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        return self.layer.backward(dout)


class _StatefulSubtree(_Subtree):
    """A :class:`_Subtree` some of whose layers keep state: all of it as one dict."""

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            f"{node.path}.{key}" if node.path else key: value
            for node in self.nodes
            if hasattr(node.layer, "state_dict")
            for key, value in node.layer.state_dict().items()
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Each layer's keys back to it: ``"<path>.<key>"``, a key having no dot."""
        for node in self.nodes:
            if hasattr(node.layer, "load_state_dict"):
                prefix = f"{node.path}." if node.path else ""
                own = {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
                node.layer.load_state_dict({key: value for key, value in own.items() if "." not in key})


@attrs.frozen
class _Tolerances:
    max_checks: int
    eps: float
    rtol: float
    atol: float


def check_layer(
    layer: Layer,
    input_shape: Sequence[int],
    *,
    batch: int = 3,
    seed: int = 0,
    registry: Any = None,
    name: str | None = None,
    max_checks: int = 60,
    eps: float = 1e-6,
    rtol: float = 1e-4,
    atol: float = 1e-7,
) -> None:
    """Run every layer conformance check on fresh copies of ``layer`` (an attrs instance).

    Gradients are checked in inference mode, and in training mode too where a
    training forward repeats itself: a layer with ``state_dict`` gets its
    state reloaded before every forward, so dropout's masks repeat and its
    training mode is checked as well; a layer random in training without
    state is checked in inference mode only.
    """
    subject = f"layer {name or type(layer).__name__}"
    input_shape = tuple(input_shape)
    rng = np.random.default_rng(seed + 1)

    def build(dtype: Any = np.float64, input_grad: bool = True) -> tuple[Any, tuple]:
        return _build(layer, input_shape, dtype, seed, registry, input_grad)

    x = rng.standard_normal((batch, *input_shape))
    repeats, out_shape = _forward_repeats(subject, build, x)
    weights = rng.standard_normal((batch, *out_shape))
    limits = _Tolerances(max_checks, eps, rtol, atol)
    analytic = {
        training: _check_gradients(subject, build, x, weights, training, rng, limits)
        for training in (True, False)
        if repeats[training]
    }

    net32, _ = build(np.float32)
    x32 = x.astype(np.float32)
    poisoned = poison_gradients(net32)
    out32 = net32.forward(x32, False)
    _refuse(subject, "float32 stays float32", output_problem(out32, batch, out_shape, np.float32, "forward"))
    dx32 = net32.backward(np.ones_like(out32))
    _refuse(subject, "float32 stays float32", output_problem(dx32, batch, input_shape, np.float32, "backward"))
    for pname, param in net32.params.items():
        if param.dtype != np.float32:
            _fail(subject, "float32 stays float32", f"parameter {pname!r} is {param.dtype}")
    _refuse(subject, "gradients written in place (float32)", gradient_problem(net32, poisoned))

    training = True in analytic
    first_layer, _ = build(input_grad=False)
    reset = _state_reset(subject, first_layer)
    reset()
    first_layer.forward(x.copy(), training)
    skipped = first_layer.backward(weights.copy())
    if skipped is not None and skipped.shape != x.shape:
        _fail(subject, "first layer (input_grad=False)", f"backward returned {skipped.shape} for input {x.shape}")
    for pname, grad in first_layer.grads.items():
        if not np.allclose(grad, analytic[training][pname], rtol=1e-10, atol=1e-12):
            _fail(subject, "first layer (input_grad=False)", f"gradient of {pname!r} differs from a layer that computes dx")

    first, _ = build()
    second, _ = build()
    for pname in first.params:
        if not np.array_equal(first.params[pname], second.params[pname]):
            _fail(subject, "same seed, same parameters", f"two builds with seed {seed} differ in {pname!r}")
    if hasattr(first, "state_dict"):
        _check_layer_state(subject, first, second, x)


def _refuse(subject: str, check: str, problem: str | None) -> None:
    if problem is not None:
        _fail(subject, check, problem)


def _state_reset(subject: str, layer: Any) -> Callable[[], None]:
    """A function that puts ``layer``'s state (if it has one) back as it is now."""
    if not hasattr(layer, "state_dict"):
        return lambda: None
    saved = _through_npz(subject, layer.state_dict())
    return lambda: layer.load_state_dict({key: value.copy() for key, value in saved.items()})


def _forward_repeats(
    subject: str, build: Callable[[], tuple[Any, tuple]], x: np.ndarray
) -> tuple[dict[bool, bool], tuple[int, ...]]:
    """Whether a forward gives the same output twice, in each mode, and the
    output shape ``build`` declared (checked against the real one).

    In training mode the layer's state is reloaded before each forward, so
    only a layer random in training without a state_dict does not repeat.
    Inference must repeat as it stands, state and all: predicting twice
    gives the same answer.
    """
    repeats = {}
    for training in (True, False):
        net, out_shape = build()
        reset = _state_reset(subject, net) if training else lambda: None
        reset()
        out = net.forward(x.copy(), training)
        if not isinstance(out, np.ndarray) or tuple(out.shape) != (len(x), *out_shape):
            shown = tuple(out.shape[1:]) if isinstance(out, np.ndarray) else type(out).__name__
            _fail(subject, "inferred shape", f"build() said {out_shape} per sample but forward gave {shown}")
        out = out.copy()
        reset()
        repeats[training] = np.array_equal(out, net.forward(x.copy(), training))
    if not repeats[False]:
        _fail(
            subject, "inference repeats",
            "two forward(x, training=False) calls gave different outputs; inference must depend on the input,"
            " the parameters and the state alone",
        )
    return repeats, out_shape


def _check_gradients(
    subject: str,
    build: Callable[[], tuple[Any, tuple]],
    x: np.ndarray,
    weights: np.ndarray,
    training: bool,
    rng: np.random.Generator,
    limits: _Tolerances,
) -> dict[str, np.ndarray]:
    """Hold one mode's backward to central differences of ``sum(forward(x) * weights)``,
    with the gradients written in place; returns the parameters' gradients."""
    mode = "training" if training else "inference"
    net, out_shape = build()
    reset = _state_reset(subject, net)
    _refuse(subject, "parameter names", parameter_names_problem(net))
    poisoned = poison_gradients(net)
    x_before = x.copy()
    reset()
    out = net.forward(x, training)
    _refuse(subject, f"forward ({mode})", output_problem(out, len(x), out_shape, x.dtype, "forward"))
    dx = net.backward(weights.copy())
    if not np.array_equal(x, x_before):
        _fail(subject, "input unchanged", "forward or backward modified its input array")
    _refuse(subject, f"input gradient ({mode})", output_problem(dx, len(x), x.shape[1:], x.dtype, "backward"))
    dx = dx.copy()
    _refuse(subject, "parameter names", parameter_names_problem(net))
    _refuse(subject, f"gradients written in place ({mode})", gradient_problem(net, poisoned))
    analytic = {pname: grad.copy() for pname, grad in net.grads.items()}

    def loss() -> float:
        reset()
        return float(np.sum(net.forward(x, training) * weights))

    indices = _sample_indices(x.shape, limits.max_checks, rng)
    numeric = numerical_gradient(loss, x, indices, limits.eps)
    check = f"input gradient (float64, {mode})"
    _compare(subject, check, np.array([dx[i] for i in indices]), numeric, limits.rtol, limits.atol)
    for pname, param in net.params.items():
        indices = _sample_indices(param.shape, limits.max_checks, rng)
        numeric = numerical_gradient(loss, param, indices, limits.eps)
        got = np.array([analytic[pname][i] for i in indices])
        _compare(subject, f"gradient of {pname!r} (float64, {mode})", got, numeric, limits.rtol, limits.atol)
    return analytic


def _check_layer_state(subject: str, used: Any, fresh: Any, x: np.ndarray) -> None:
    """A fresh copy loaded with ``used``'s saved state infers what ``used`` infers
    and takes the very next training step ``used`` takes."""
    used.forward(x.copy(), True)
    fresh.load_state_dict(_through_npz(subject, used.state_dict()))
    for training in (False, True):
        expected = np.array(used.forward(x.copy(), training), copy=True)
        got = fresh.forward(x.copy(), training)
        if not np.array_equal(expected, got):
            _fail(
                subject, "state round-trip",
                f"forward(x, training={training}) after load_state_dict differs"
                f" (max abs difference {np.max(np.abs(expected - got)):.3g})",
            )


def check_loss(
    loss: Loss,
    classes: int = 4,
    *,
    batch: int = 5,
    seed: int = 0,
    name: str | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> None:
    """Check a loss's gradient in float64 for integer and one-hot targets."""
    subject = f"loss {name or type(loss).__name__}"
    rng = np.random.default_rng(seed)
    output = rng.standard_normal((batch, classes))
    labels = rng.integers(0, classes, batch)
    for kind, target in (("integer labels", labels), ("one-hot targets", np.eye(classes)[labels])):
        loss.forward(output, target)
        analytic = loss.backward()
        if analytic.shape != output.shape:
            _fail(subject, f"gradient shape ({kind})", f"backward gave {analytic.shape} for output {output.shape}")
        indices = _sample_indices(output.shape, output.size, rng)
        numeric = numerical_gradient(lambda: loss.forward(output, target), output, indices, eps)
        _compare(subject, f"gradient ({kind}, float64)", np.array([analytic[i] for i in indices]), numeric, rtol, atol)
    out32 = loss.forward(output.astype(np.float32), labels)
    grad32 = loss.backward()
    if not np.isfinite(out32) or grad32.dtype != np.float32:
        _fail(subject, "float32 stays float32", f"float32 output gave loss {out32} and a {grad32.dtype} gradient")


@attrs.frozen(eq=False)
class Quadratic:
    """``f(w) = 0.5 * ||A w - b||^2`` summed over a few named parameters.

    Its Hessian's eigenvalues lie in [1, 4], so any sound optimizer with a
    sensible learning rate makes clear progress in a few hundred steps, and
    a failure to descend points at the optimizer rather than the problem.
    """

    matrices: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def make(cls, seed: int) -> Quadratic:
        rng = np.random.default_rng(seed)
        shapes = {"0.W": (3, 2), "0.b": (2,), "2.W": (4,)}
        matrices, targets = {}, {}
        for pname, shape in shapes.items():
            n = int(np.prod(shape))
            q, _ = np.linalg.qr(rng.standard_normal((n, n)))
            matrices[pname] = q * np.linspace(1.0, 2.0, n)
            targets[pname] = rng.standard_normal(n)
        return cls(matrices, targets, shapes)

    def start(self, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        return {pname: np.zeros(shape, dtype=dtype) for pname, shape in self.shapes.items()}

    def value(self, params: dict[str, np.ndarray]) -> float:
        residuals = (self.matrices[k] @ params[k].ravel() - self.targets[k] for k in self.shapes)
        return float(sum(0.5 * r @ r for r in residuals))

    def gradients(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Write the gradients into ``grads`` in place, as a network's backward pass does."""
        for k, a in self.matrices.items():
            residual = a @ params[k].ravel().astype(np.float64) - self.targets[k]
            grads[k][...] = (a.T @ residual).reshape(self.shapes[k])


def _fresh(obj: Any) -> Any:
    """A new instance with the same hyperparameters and none of the state."""
    return attrs.evolve(obj)


def _run(optimizer: Optimizer, problem: Quadratic, params: dict[str, np.ndarray], steps: int) -> None:
    grads = {k: np.zeros_like(p) for k, p in params.items()}
    for _ in range(steps):
        problem.gradients(params, grads)
        optimizer.step(params, grads)


def _through_npz(subject: str, state: Any) -> dict[str, np.ndarray]:
    """The state as a checkpoint would give it back: flat, string keys, arrays, no pickles."""
    if not isinstance(state, dict):
        _fail(subject, "state is a flat dict of arrays", f"state_dict() returned {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str):
            _fail(subject, "state is a flat dict of arrays", f"key {key!r} is a {type(key).__name__}, not a str")
        if not isinstance(value, np.ndarray) or value.dtype == object:
            shown = "an object array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            _fail(subject, "state is a flat dict of arrays", f"key {key!r} holds {shown}, not a numeric array")
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def check_optimizer(
    optimizer: Optimizer,
    *,
    steps: int = 200,
    factor: float = 10.0,
    seed: int = 0,
    name: str | None = None,
) -> None:
    """Check that fresh copies of ``optimizer`` (an attrs instance) descend and can be resumed.

    Descent: ``steps`` steps on a small quadratic must cut the loss by
    ``factor``; give the optimizer a learning rate that suits a problem of
    curvature 1 to 4 (``Adam(lr=0.05)``, ``SGD(lr=0.05)``).  In place: the
    float32 parameter arrays must be updated, not replaced, since the
    network holds them.  Resuming: after some steps, ``state_dict`` saved through
    ``np.savez`` and loaded into a new instance must give bit-for-bit the same
    next steps as the original, which is what makes a checkpoint resume exact.
    """
    subject = f"optimizer {name or type(optimizer).__name__}"
    problem = Quadratic.make(seed)

    descending = _fresh(optimizer)
    params = problem.start()
    before = problem.value(params)
    _run(descending, problem, params, steps)
    after = problem.value(params)
    if not after * factor <= before:
        _fail(
            subject,
            "descends on a quadratic",
            f"loss went from {before:.6g} to {after:.6g} in {steps} steps (needs to fall by a factor of {factor:g})",
        )

    in_place = _fresh(optimizer)
    params32 = problem.start(np.float32)
    originals = dict(params32)
    _run(in_place, problem, params32, 2)
    for pname, array in originals.items():
        if params32[pname] is not array:
            _fail(subject, "updates in place", f"parameter {pname!r} was replaced by a new array instead of updated")

    original = _fresh(optimizer)
    params = problem.start()
    _run(original, problem, params, steps // 4 + 1)
    resumed = _fresh(optimizer)
    resumed.load_state_dict(_through_npz(subject, original.state_dict()))
    twin = {k: v.copy() for k, v in params.items()}
    for step in range(1, 6):
        _run(original, problem, params, 1)
        _run(resumed, problem, twin, 1)
        for pname in params:
            if not np.array_equal(params[pname], twin[pname]):
                diff = float(np.max(np.abs(params[pname] - twin[pname])))
                _fail(
                    subject,
                    "state round-trip",
                    f"step {step} after load_state_dict differs in {pname!r} (max abs difference {diff:.3g});"
                    " state_dict() must hold everything the next step depends on",
                )


def check_initializer(
    initializer: Initializer,
    *,
    seed: int = 0,
    name: str | None = None,
) -> None:
    """Check that an initializer fills dense and convolution shapes with finite
    values drawn from the generator it is given and from nothing else."""
    subject = f"initializer {name or type(initializer).__name__}"
    for shape, fan_in, fan_out in (((6, 4), 6, 4), ((3, 2, 3, 3), 18, 27)):
        for dtype in (np.float32, np.float64):
            first = np.asarray(initializer(shape, fan_in, fan_out, np.random.default_rng(seed), np.dtype(dtype)))
            if first.shape != shape:
                _fail(subject, "shape", f"asked for {shape}, got {first.shape}")
            if not np.all(np.isfinite(first)):
                _fail(subject, "finite values", f"{int(np.sum(~np.isfinite(first)))} of {first.size} values are not finite")
            again = np.asarray(initializer(shape, fan_in, fan_out, np.random.default_rng(seed), np.dtype(dtype)))
            if not np.array_equal(first, again):
                _fail(subject, "same seed, same values", f"two draws of {shape} from generators seeded {seed} differ")


def check_transform(transform: Transform, *, seed: int = 0, name: str | None = None) -> None:
    """Check that a transform keeps a batch's shape and dtype (float32 and float64),
    never writes into its input, draws from the generator it is given and from
    nothing else (the same generator state, the same output), and changes
    something: a transform that never does is a configuration mistake."""
    subject = f"transform {name or type(transform).__name__}"
    changed = False
    for dtype in (np.float32, np.float64):
        x = np.random.default_rng(seed + 1).random((16, 2, 10, 12)).astype(dtype)
        before = x.copy()
        first = transform(x, np.random.default_rng(seed))
        _refuse(subject, "shape and dtype kept", batch_problem(first, x))
        if not np.array_equal(x, before):
            _fail(subject, "input unchanged", "it wrote into the batch it was given")
        if not np.array_equal(first, transform(x, np.random.default_rng(seed))):
            _fail(subject, "same generator, same output", f"two calls with generators seeded {seed} differ")
        changed = changed or not np.array_equal(first, x)
    if not changed:
        _fail(subject, "changes the batch", "16 images came back unchanged in both float types")


def check_schedule(schedule: Schedule, *, name: str | None = None) -> None:
    """Check that a schedule gives a finite, non-negative rate for every step of a
    run, the same rate each time it is asked (it keeps no state), and never
    more than a hundred times the configured ``lr``."""
    subject = f"schedule {name or type(schedule).__name__}"
    lr, steps_per_epoch, epochs = 0.1, 7, 5
    _refuse(subject, "finite rates", rates_problem(schedule, lr, steps_per_epoch, epochs))
    rates = [schedule(lr, step, steps_per_epoch, epochs) for step in range(steps_per_epoch * epochs)]
    for step, rate in enumerate(rates):
        if rate > 100 * lr:
            _fail(subject, "bounded rates", f"step {step} gave {rate:g} for lr {lr:g}")
    again = [schedule(lr, step, steps_per_epoch, epochs) for step in reversed(range(steps_per_epoch * epochs))]
    if again[::-1] != rates:
        _fail(subject, "no state", "asking for the same steps again, in another order, gave other rates")


def check_dataset(dataset: Dataset, roots: Sequence[str | os.PathLike], *, name: str | None = None) -> None:
    """Check what a data set loads from ``roots`` and what it does where its files are not.

    The splits: a :class:`laminae.data.DatasetSplits` whose train and test
    images are float32 N x C x H x W in [0, 1], of one sample shape, with as
    many int64 labels inside ``0 .. classes - 1``, neither split empty.  The
    search: an empty data root put first is passed over, and a load from
    only an empty root raises a one-line :class:`laminae.DataError` naming
    where it looked (a data set that reads no files may load anyway).  Give
    a data set that downloads its files with downloading off.
    """
    subject = f"data set {name or type(dataset).__name__}"
    roots = [Path(root) for root in roots]
    splits = dataset.load(roots)
    _check_splits(subject, "splits", splits)
    with tempfile.TemporaryDirectory(prefix="laminae-empty-root-") as empty:
        _check_passed_over(subject, dataset, splits, [Path(empty), *roots])
        _check_missing_files(subject, dataset, empty)


def _check_splits(subject: str, check: str, splits: Any) -> None:
    if not isinstance(splits, DatasetSplits):
        _fail(subject, check, f"load() returned {type(splits).__name__}, not a laminae.data.DatasetSplits")
    classes = splits.classes
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        _fail(subject, check, f"classes is {classes!r}, not a positive int")
    if not isinstance(splits.source, str) or not splits.source.strip():
        _fail(subject, check, f"source is {splits.source!r}: say in words what was loaded from where")
    for part in ("train", "test"):
        _refuse(subject, check, _split_problem(part, getattr(splits, part), classes, splits.train.x.shape[1:]))


def _split_problem(part: str, split: Any, classes: int, sample_shape: tuple[int, ...]) -> str | None:
    x, y = np.asarray(split.x), np.asarray(split.y)
    if x.dtype != np.float32 or x.ndim != 4:
        return f"{part} images are {x.dtype} {x.shape}, not float32 N x C x H x W"
    if len(x) == 0:
        return f"the {part} split is empty"
    if x.shape[1:] != sample_shape:
        return f"{part} images are {x.shape[1:]}, train images {sample_shape}"
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        return f"{part} pixel values lie in [{x.min():g}, {x.max():g}], not in [0, 1]"
    if y.dtype != np.int64 or y.shape != (len(x),):
        return f"{part} labels are {y.dtype} {y.shape}, not int64 ({len(x)},)"
    if y.min() < 0 or y.max() >= classes:
        return f"{part} labels lie in {y.min()}..{y.max()}, outside 0..{classes - 1}"
    return None


def _check_passed_over(subject: str, dataset: Any, splits: Any, roots: list[Path]) -> None:
    check = "an empty root is passed over"
    try:
        again = dataset.load(roots)
    except DataError as err:
        _fail(
            subject, check,
            f"load() raised DataError: {err}; raise FileNotFoundError where the files are not, so that the next root is tried",
        )
    _check_splits(subject, check, again)
    for part in ("train", "test"):
        if not np.array_equal(getattr(splits, part).y, getattr(again, part).y):
            _fail(subject, check, f"with {roots[0]} put first the {part} split differs")


def _check_missing_files(subject: str, dataset: Any, empty: str) -> None:
    check = "missing files"
    try:
        found = dataset.load([Path(empty)])
    except DataError as err:
        if empty not in str(err):
            _fail(subject, check, f"the DataError does not say where it looked ({empty}): {err}")
        return
    except Exception as exc:
        _fail(
            subject, check,
            f"load() from an empty root raised {one_line(exc, with_type=True)}; raise laminae.DataError,"
            " one line naming where it looked",
        )
    _check_splits(subject, f"{check} (loaded anyway)", found)


@attrs.frozen
class Case:
    """One registered class to check, with the options a TOML table would give it.

    Creating it through the registry also checks that the options are
    accepted as hyperparameters, exactly as the TOML builder would pass them.
    """

    kind: str
    type_name: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    input_shape: tuple[int, ...] | None = None
    """A layer's input shape (one sample)."""
    roots: tuple[Path, ...] = attrs.field(default=(), converter=lambda roots: tuple(Path(r) for r in roots))
    """The data roots a data set is loaded from."""

    @property
    def id(self) -> str:
        parts = [self.type_name, *(f"{key}={value}" for key, value in self.options.items())]
        if self.input_shape is not None:
            parts.append("x".join(str(n) for n in self.input_shape))
        return "-".join(parts)

    def check(self, registry: Any) -> None:
        """Create the class from ``registry`` and run the check for its kind."""
        obj = registry.create(self.kind, {"type": self.type_name, **self.options})
        if self.kind == "layers":
            check_layer(obj, self.input_shape, registry=registry, name=self.type_name)
        elif self.kind == "datasets":
            check_dataset(obj, self.roots, name=self.type_name)
        else:
            CHECKS[self.kind](obj, name=self.type_name)


CHECKS: dict[str, Callable[..., None]] = {
    "layers": check_layer,
    "losses": check_loss,
    "optimizers": check_optimizer,
    "initializers": check_initializer,
    "datasets": check_dataset,
    "transforms": check_transform,
    "schedules": check_schedule,
}
"""The check for each kind of registration that has one."""


def _params(cases: list[Case]) -> list[Any]:
    import pytest  # only plugin tests need pytest; laminae itself does not

    return [pytest.param(case, id=case.id) for case in cases]


def layer_cases(table: Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[int]]]]) -> list[Any]:
    """``pytest.param`` objects for ``{"type": [(options, input_shape), ...]}``."""
    return _params([Case("layers", t, opts, tuple(shape)) for t, rows in table.items() for opts, shape in rows])


def dataset_cases(table: Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[str | os.PathLike]]]]) -> list[Any]:
    """``pytest.param`` objects for ``{"type": [(options, roots), ...]}``: each data set
    loaded from ``roots`` (a folder of small test files, say)."""
    return _params([Case("datasets", t, opts, roots=roots) for t, rows in table.items() for opts, roots in rows])


def cases(kind: str, table: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Any]:
    """``pytest.param`` objects for ``{"type": [options, ...]}`` of a kind other than layers and data sets."""
    if kind not in CHECKS or kind in ("layers", "datasets"):
        raise ValueError(
            f"cases() takes 'losses', 'optimizers', 'initializers', 'transforms' or 'schedules', not {kind!r};"
            " use layer_cases() or dataset_cases()"
        )
    return _params([Case(kind, t, opts) for t, rows in table.items() for opts in rows])


def uncovered(registry: Any, plugin: str, params: Sequence[Any]) -> list[str]:
    """What ``plugin`` registers, as ``"layers:tanh"``, that no case in ``params`` checks.

    Asserting that this is empty keeps a new class from shipping untested.
    ``plugin`` is the name ``laminae plugins`` shows (an entry point's name,
    ``extras``) or the name the registry loaded it under (the module of
    ``make_registry(plugins=[laminae_extras])``, ``laminae_extras``): either
    finds it, whichever way the registry was made.  A name the registry does
    not know, or a plugin that failed to load, is a ``ValueError``: a test
    of nothing must not pass.
    """
    aliases = _plugin_aliases(plugin)
    info = next((p for p in registry.plugins if p.name in aliases), None)
    if info is None:
        known = [p.name for p in registry.plugins]
        raise ValueError(
            f"uncovered: no plugin {plugin!r} in this registry{did_you_mean(plugin, known)}"
            f" (plugins: {', '.join(known) or 'none'})"
        )
    if not info.ok:
        raise ValueError(
            f"uncovered: plugin {info.name!r} was not loaded ({info.status}: {info.reason}), so none of it can be checked"
        )
    checked = {(p.values[0].kind, p.values[0].type_name) for p in params}
    provided = [key for key, owner in registry.owners.items() if owner == info.name and key[0] in CHECKS]
    return sorted(f"{kind}:{name}" for kind, name in provided if (kind, name) not in checked)


def _plugin_aliases(plugin: str) -> set[str]:
    """``plugin`` and the other name of the same entry point plugin: its entry
    point's name (``extras``) and the module it names (``laminae_extras``)."""
    aliases = {plugin}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if plugin in (point.name, point.value, point.module):
            aliases |= {point.name, point.value, point.module}
    return aliases
