"""A conformance kit that plugin authors call from their own tests.

``check_layer(Tanh(), (3, 5))`` builds the layer in float64 and float32 and
checks what every layer must get right: gradients that match central
differences for the input and every parameter, an inferred output shape that
matches the real one, float32 in giving float32 out, an input left untouched,
and parameters that depend on the seed alone.  ``check_loss``,
``check_optimizer`` and ``check_initializer`` do the same for the other kinds.
A failure raises :class:`ConformanceError` (an ``AssertionError``) naming the
plugin class, the check and the numbers.

The ``*_cases`` helpers turn a table of registered names and options into
``pytest.param`` objects, so that one parametrised test checks every class a
plugin provides, each under its own test id.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from laminae.protocols import BuildContext
from laminae.protocols import Initializer, Layer, Loss, Optimizer


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
    fresh = attrs.evolve(layer)
    ctx = BuildContext(rng=np.random.default_rng(seed), dtype=dtype, registry=registry, input_grad=input_grad)
    return fresh, tuple(fresh.build(tuple(input_shape), ctx))


def poison_gradients(layer: Any) -> dict[str, np.ndarray]:
    """Fill the layer's gradient arrays with NaN and return them, so that after a
    backward :func:`gradient_problem` sees any the layer replaced or left unwritten."""
    for grad in layer.grads.values():
        grad.fill(np.nan)
    return dict(layer.grads)


def gradient_problem(layer: Any, poisoned: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with the gradients a backward left in ``layer.grads``, or None.

    ``backward`` must write every element of each array in ``grads`` in place:
    the network, the optimizer and the data-parallel workers hold those very
    arrays, so a new array bound under the name is never seen, and an element
    left alone keeps a stale value.
    """
    for name, array in poisoned.items():
        grad = layer.grads.get(name)
        if grad is not array:
            return (
                f"backward replaced grads[{name!r}] with a new array instead of writing into it"
                f" (grads[{name!r}][...] = ...): the optimizer would never see it"
            )
        param = layer.params[name]
        if grad.shape != param.shape or grad.dtype != param.dtype:
            return f"grads[{name!r}] is {grad.dtype} {grad.shape}, but its parameter is {param.dtype} {param.shape}"
        unwritten = np.isnan(grad)
        if unwritten.all():
            return f"backward never wrote grads[{name!r}] (write every element, in place)"
        if unwritten.any() or not np.isfinite(grad).all():
            return f"backward left grads[{name!r}] partly unwritten or not finite"
    return None


def output_problem(out: Any, batch: int, declared: tuple[int, ...], dtype: np.dtype, what: str) -> str | None:
    """What is wrong with ``what`` (``"forward"``'s output or ``"backward"``'s input
    gradient) for a batch of ``batch`` samples of shape ``declared``, or None."""
    if not isinstance(out, np.ndarray):
        return f"{what} returned {type(out).__name__}, not a numpy array"
    if out.shape[:1] != (batch,) or tuple(out.shape[1:]) != tuple(declared):
        return f"{what} returned shape {tuple(out.shape)} for {batch} samples of shape {tuple(declared)}"
    if out.dtype != dtype:
        return f"{what} returned {out.dtype} in a {np.dtype(dtype).name} network"
    return None


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
    """Run every layer conformance check on fresh copies of ``layer`` (an attrs instance)."""
    subject = f"layer {name or type(layer).__name__}"
    input_shape = tuple(input_shape)
    rng = np.random.default_rng(seed + 1)

    net64, out_shape = _build(layer, input_shape, np.float64, seed, registry)
    x = rng.standard_normal((batch, *input_shape))
    x_before = x.copy()
    out = net64.forward(x, True)
    if tuple(out.shape) != (batch, *out_shape):
        _fail(subject, "inferred shape", f"build() said {out_shape} per sample but forward gave {tuple(out.shape[1:])}")
    deterministic = np.array_equal(out, net64.forward(x, True))
    training = deterministic
    weights = rng.standard_normal(out.shape)

    def loss() -> float:
        return float(np.sum(net64.forward(x, training) * weights))

    net64.forward(x, training)
    dx = net64.backward(weights.copy())
    if not np.array_equal(x, x_before):
        _fail(subject, "input unchanged", "forward or backward modified its input array")
    if dx.shape != x.shape:
        _fail(subject, "input gradient shape", f"backward returned {dx.shape} for input {x.shape}")
    analytic_params = {k: g.copy() for k, g in net64.grads.items()}
    if set(analytic_params) != set(net64.params):
        _fail(subject, "parameter names", f"params {sorted(net64.params)} but grads {sorted(analytic_params)}")

    indices = _sample_indices(x.shape, max_checks, rng)
    numeric = numerical_gradient(loss, x, indices, eps)
    _compare(subject, "input gradient (float64)", np.array([dx[i] for i in indices]), numeric, rtol, atol)
    for pname, param in net64.params.items():
        indices = _sample_indices(param.shape, max_checks, rng)
        numeric = numerical_gradient(loss, param, indices, eps)
        analytic = np.array([analytic_params[pname][i] for i in indices])
        _compare(subject, f"gradient of {pname!r} (float64)", analytic, numeric, rtol, atol)

    net32, _ = _build(layer, input_shape, np.float32, seed, registry)
    x32 = x_before.astype(np.float32)
    out32 = net32.forward(x32, False)
    if out32.dtype != np.float32:
        _fail(subject, "float32 stays float32", f"float32 input gave {out32.dtype} output")
    dx32 = net32.backward(np.ones_like(out32))
    if dx32.dtype != np.float32:
        _fail(subject, "float32 stays float32", f"float32 input gave a {dx32.dtype} input gradient")
    for pname, param in net32.params.items():
        if param.dtype != np.float32 or net32.grads[pname].dtype != np.float32:
            _fail(subject, "float32 stays float32", f"parameter {pname!r} or its gradient is not float32")

    first_layer, _ = _build(layer, input_shape, np.float64, seed, registry, input_grad=False)
    first_layer.forward(x_before.copy(), training)
    skipped = first_layer.backward(weights.copy())
    if skipped is not None and skipped.shape != x.shape:
        _fail(subject, "first layer (input_grad=False)", f"backward returned {skipped.shape} for input {x.shape}")
    if deterministic:
        for pname, grad in first_layer.grads.items():
            if not np.allclose(grad, analytic_params[pname], rtol=1e-10, atol=1e-12):
                _fail(subject, "first layer (input_grad=False)", f"gradient of {pname!r} differs from a layer that computes dx")

    first, _ = _build(layer, input_shape, np.float64, seed, registry)
    second, _ = _build(layer, input_shape, np.float64, seed, registry)
    for pname in first.params:
        if not np.array_equal(first.params[pname], second.params[pname]):
            _fail(subject, "same seed, same parameters", f"two builds with seed {seed} differ in {pname!r}")
    if hasattr(layer, "state_dict"):
        _check_layer_state(subject, first, second, x_before)


def _check_layer_state(subject: str, used: Any, fresh: Any, x: np.ndarray) -> None:
    """A fresh copy loaded with ``used``'s saved state takes the very next step ``used`` takes."""
    used.forward(x.copy(), True)
    fresh.load_state_dict(_through_npz(subject, used.state_dict()))
    expected, got = used.forward(x.copy(), True), fresh.forward(x.copy(), True)
    if not np.array_equal(expected, got):
        _fail(
            subject, "state round-trip",
            f"forward after load_state_dict differs (max abs difference {np.max(np.abs(expected - got)):.3g})",
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
        else:
            CHECKS[self.kind](obj, name=self.type_name)


CHECKS: dict[str, Callable[..., None]] = {
    "layers": check_layer,
    "losses": check_loss,
    "optimizers": check_optimizer,
    "initializers": check_initializer,
}
"""The check for each kind of registration that has one."""


def _params(cases: list[Case]) -> list[Any]:
    import pytest  # only plugin tests need pytest; laminae itself does not

    return [pytest.param(case, id=case.id) for case in cases]


def layer_cases(table: Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[int]]]]) -> list[Any]:
    """``pytest.param`` objects for ``{"type": [(options, input_shape), ...]}``."""
    return _params([Case("layers", t, opts, tuple(shape)) for t, rows in table.items() for opts, shape in rows])


def cases(kind: str, table: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Any]:
    """``pytest.param`` objects for ``{"type": [options, ...]}`` of a kind other than layers."""
    if kind not in CHECKS or kind == "layers":
        raise ValueError(f"cases() takes 'losses', 'optimizers' or 'initializers', not {kind!r}; use layer_cases()")
    return _params([Case(kind, t, opts) for t, rows in table.items() for opts in rows])


def uncovered(registry: Any, plugin: str, params: Sequence[Any]) -> list[str]:
    """What ``plugin`` registers, as ``"layers:tanh"``, that no case in ``params`` checks.

    Asserting that this is empty keeps a new class from shipping untested.
    """
    checked = {(p.values[0].kind, p.values[0].type_name) for p in params}
    provided = [key for key, owner in registry.owners.items() if owner == plugin and key[0] in CHECKS]
    return sorted(f"{kind}:{name}" for kind, name in provided if (kind, name) not in checked)
