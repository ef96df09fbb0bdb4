"""Direct loop implementations of the built-in layers, in float64.

Written to be obviously right rather than fast: every output element is a
sum, a max or a function of its inputs, and every gradient is accumulated
element by element, so the fast layers can be checked against them on
small shapes.  (``flatten`` is a reshape: nothing to loop over.)
"""
from __future__ import annotations

import math

import numpy as np


def affine_forward(x, w, b) -> np.ndarray:
    """``out[n, j] = b[j] + sum over i of x[n, i] * w[i, j]``, each sample of ``x`` flattened; ``b`` may be None."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    out = np.zeros((len(x), w.shape[1]))
    for n in range(len(x)):
        for j in range(w.shape[1]):
            total = 0.0 if b is None else float(b[j])
            for i in range(w.shape[0]):
                total += x[n, i] * w[i, j]
            out[n, j] = total
    return out


def affine_backward(x, w, dout):
    """Gradients ``(dx, dw, db)`` of ``sum(affine_forward(x, w, b) * dout)``; ``dx`` shaped like ``x``."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    dx, dw, db = np.zeros(flat.shape), np.zeros(w.shape), np.zeros(w.shape[1])
    for n in range(len(flat)):
        for j in range(w.shape[1]):
            g = float(dout[n, j])
            db[j] += g
            for i in range(w.shape[0]):
                dw[i, j] += flat[n, i] * g
                dx[n, i] += w[i, j] * g
    return dx.reshape(np.shape(x)), dw, db


def relu_forward(x) -> np.ndarray:
    """``max(x, 0)``, element by element."""
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        out[index] = x[index] if x[index] > 0 else 0.0
    return out


def relu_backward(x, dout) -> np.ndarray:
    """The gradient passes where the input was positive."""
    dx = np.zeros(np.shape(x))
    for index in np.ndindex(dx.shape):
        dx[index] = dout[index] if x[index] > 0 else 0.0
    return dx


def sigmoid_forward(x) -> np.ndarray:
    """``1 / (1 + exp(-x))``, element by element."""
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        out[index] = 1.0 / (1.0 + math.exp(-x[index]))
    return out


def sigmoid_backward(x, dout) -> np.ndarray:
    """``dout * s * (1 - s)`` with ``s = sigmoid(x)``."""
    s = sigmoid_forward(x)
    dx = np.zeros(s.shape)
    for index in np.ndindex(dx.shape):
        dx[index] = dout[index] * s[index] * (1.0 - s[index])
    return dx


def _padded(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _out_size(length: int, size: int, stride: int, pad: int) -> int:
    return (length + 2 * pad - size) // stride + 1


def conv_forward(x, w, b, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation of ``x`` (N, C, H, W) with ``w`` (F, C, k, k), plus ``b`` (F,) or None."""
    xp = _padded(x, pad)
    n_, c_, h, w_ = x.shape
    f_, _, k, _ = w.shape
    oh, ow = _out_size(h, k, stride, pad), _out_size(w_, k, stride, pad)
    out = np.zeros((n_, f_, oh, ow))
    for n in range(n_):
        for f in range(f_):
            for y in range(oh):
                for x_ in range(ow):
                    total = 0.0 if b is None else float(b[f])
                    for c in range(c_):
                        for ky in range(k):
                            for kx in range(k):
                                total += xp[n, c, y * stride + ky, x_ * stride + kx] * w[f, c, ky, kx]
                    out[n, f, y, x_] = total
    return out


def conv_backward(x, w, stride: int, pad: int, dout):
    """Gradients ``(dx, dw, db)`` of ``sum(conv_forward(x, w, b) * dout)``."""
    xp = _padded(x, pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    db = np.zeros(w.shape[0])
    n_, f_, oh, ow = dout.shape
    c_, k = w.shape[1], w.shape[2]
    for n in range(n_):
        for f in range(f_):
            for y in range(oh):
                for x_ in range(ow):
                    g = float(dout[n, f, y, x_])
                    db[f] += g
                    for c in range(c_):
                        for ky in range(k):
                            for kx in range(k):
                                iy, ix = y * stride + ky, x_ * stride + kx
                                dw[f, c, ky, kx] += xp[n, c, iy, ix] * g
                                dxp[n, c, iy, ix] += w[f, c, ky, kx] * g
    h, w_ = x.shape[2:]
    return dxp[:, :, pad:pad + h, pad:pad + w_], dw, db


def _window(x, n, c, y, x_, size, stride):
    return x[n, c, y * stride:y * stride + size, x_ * stride:x_ * stride + size]


def pool_forward(x, size: int, stride: int, mode: str) -> np.ndarray:
    """Max or average of every ``size x size`` window, ``stride`` apart."""
    x = np.asarray(x, np.float64)
    n_, c_, h, w_ = x.shape
    oh, ow = _out_size(h, size, stride, 0), _out_size(w_, size, stride, 0)
    out = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                for x_ in range(ow):
                    window = _window(x, n, c, y, x_, size, stride)
                    out[n, c, y, x_] = window.max() if mode == "max" else window.sum() / size**2
    return out


def pool_backward(x, size: int, stride: int, mode: str, dout) -> np.ndarray:
    """Gradient of ``sum(pool_forward(x) * dout)``; max routes each window's
    gradient to its first maximum in row-major order."""
    x = np.asarray(x, np.float64)
    dx = np.zeros_like(x)
    n_, c_, oh, ow = dout.shape
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                for x_ in range(ow):
                    g = float(dout[n, c, y, x_])
                    target = _window(dx, n, c, y, x_, size, stride)
                    if mode == "avg":
                        target += g / size**2
                        continue
                    window = _window(x, n, c, y, x_, size, stride)
                    ky, kx = np.unravel_index(np.argmax(window), window.shape)
                    target[ky, kx] += g
    return dx
