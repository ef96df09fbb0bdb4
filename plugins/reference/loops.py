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


def _channel_indexes(shape: tuple[int, ...]) -> dict[int, list[tuple[int, ...]]]:
    """Every index of an ``(N, C, ...)`` array, grouped by its channel (axis 1)."""
    groups: dict[int, list[tuple[int, ...]]] = {}
    for index in np.ndindex(shape):
        groups.setdefault(index[1], []).append(index)
    return groups


def batchnorm_statistics(x):
    """Each channel's mean and biased variance over the batch (and the pixels),
    ``x`` shaped ``(N, C)`` or ``(N, C, H, W)``: two ``(C,)`` arrays."""
    x = np.asarray(x, np.float64)
    mean, var = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for c, indexes in _channel_indexes(x.shape).items():
        mean[c] = sum(x[i] for i in indexes) / len(indexes)
        var[c] = sum((x[i] - mean[c]) ** 2 for i in indexes) / len(indexes)
    return mean, var


def batchnorm_forward(x, gamma, beta, eps: float, mean=None, var=None) -> np.ndarray:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel: with the batch's
    statistics (training), or with ``mean`` and ``var`` given (the running ones,
    inference)."""
    x = np.asarray(x, np.float64)
    if mean is None:
        mean, var = batchnorm_statistics(x)
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        c = index[1]
        out[index] = gamma[c] * (x[index] - mean[c]) / math.sqrt(var[c] + eps) + beta[c]
    return out


def batchnorm_backward(x, gamma, eps: float, dout, mean=None, var=None):
    """Gradients ``(dx, dgamma, dbeta)`` of ``sum(batchnorm_forward(x, ...) * dout)``.

    With the batch's statistics every output of a channel depends on every
    input of it, so ``dx`` sums the whole Jacobian:  d xhat_j / d x_i =
    ((i == j) - 1/m) / std - xhat_i * xhat_j / (m * std), m values per
    channel.  With ``mean`` and ``var`` given (inference) they are constants."""
    x = np.asarray(x, np.float64)
    training = mean is None
    if training:
        mean, var = batchnorm_statistics(x)
    dx, dgamma, dbeta = np.zeros(x.shape), np.zeros(len(gamma)), np.zeros(len(gamma))
    for c, indexes in _channel_indexes(x.shape).items():
        std, m = math.sqrt(var[c] + eps), len(indexes)
        xhat = {i: (x[i] - mean[c]) / std for i in indexes}
        for j in indexes:
            dbeta[c] += dout[j]
            dgamma[c] += dout[j] * xhat[j]
        for i in indexes:
            if not training:
                dx[i] = dout[i] * gamma[c] / std
                continue
            for j in indexes:
                dxhat_j = ((i == j) - 1 / m) / std - xhat[i] * xhat[j] / (m * std)
                dx[i] += dout[j] * gamma[c] * dxhat_j
    return dx, dgamma, dbeta


def global_avg_pool_forward(x) -> np.ndarray:
    """``out[n, c]``: the mean of the pixels of channel ``c`` of sample ``n``."""
    x = np.asarray(x, np.float64)
    n_, c_, h, w_ = x.shape
    out = np.zeros((n_, c_))
    for n in range(n_):
        for c in range(c_):
            total = 0.0
            for y in range(h):
                for x_ in range(w_):
                    total += x[n, c, y, x_]
            out[n, c] = total / (h * w_)
    return out


def global_avg_pool_backward(x, dout) -> np.ndarray:
    """Gradient of ``sum(global_avg_pool_forward(x) * dout)``: every pixel of a
    channel gets ``dout[n, c] / (H * W)``."""
    n_, c_, h, w_ = np.shape(x)
    dx = np.zeros((n_, c_, h, w_))
    for n in range(n_):
        for c in range(c_):
            for y in range(h):
                for x_ in range(w_):
                    dx[n, c, y, x_] = dout[n, c] / (h * w_)
    return dx
