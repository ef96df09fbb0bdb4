"""A conformance kit that plugin authors call from their own tests.

``check_layer(Tanh(), (3, 5))`` builds the layer in float64 and float32 and
checks what every layer must get right: gradients that match central
differences for the input and every parameter, an inferred output shape that
matches the real one, float32 in giving float32 out, an input left untouched,
and parameters that depend on the seed alone.  A failure raises
:class:`ConformanceError` (an ``AssertionError``) naming the layer, the check
and the numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from laminae.context import BuildContext
from laminae.protocols import Layer, Loss


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


def _build(layer: Any, input_shape: tuple[int, ...], dtype: Any, seed: int, registry: Any) -> tuple[Any, tuple]:
    fresh = attrs.evolve(layer)
    ctx = BuildContext(rng=np.random.default_rng(seed), dtype=dtype, registry=registry)
    return fresh, tuple(fresh.build(tuple(input_shape), ctx))


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

    first, _ = _build(layer, input_shape, np.float64, seed, registry)
    second, _ = _build(layer, input_shape, np.float64, seed, registry)
    for pname in first.params:
        if not np.array_equal(first.params[pname], second.params[pname]):
            _fail(subject, "same seed, same parameters", f"two builds with seed {seed} differ in {pname!r}")


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
