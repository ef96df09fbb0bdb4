"""The classic tutorial code, as the baseline "times faster" is measured against.

Written the way "Deep Learning from Scratch" (common/layers.py, common/util.py)
writes it: float64, im2col and col2im looping over the filter offsets, one
class per layer with forward/backward, a dict of parameters and plain SGD or
momentum.  It is kept deliberately un-optimised so the figure stays honest;
do not speed it up.  Only numpy is imported, so tests can use it as a
reference too.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Sigmoid:
    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + (H + 2 * self.pad - FH) // self.stride
        out_w = 1 + (W + 2 * self.pad - FW) // self.stride
        col = im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        self.x, self.col, self.col_W = x, col, col_W
        return out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class Pooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = 1 + (H - self.pool_h) // self.stride
        out_w = 1 + (W - self.pool_w) // self.stride
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        return out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size))
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


class SoftmaxWithLoss:
    def forward(self, x, t):
        self.t, self.y = t, softmax(x)
        batch_size = self.y.shape[0]
        return -np.sum(np.log(self.y[np.arange(batch_size), t] + 1e-7)) / batch_size

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


class QuadraticLoss:
    """Nielsen's cost, 0.5 * ||y - t||^2 averaged over the mini-batch."""

    def forward(self, x, t):
        self.diff = x - np.eye(x.shape[1])[t]
        return 0.5 * np.sum(self.diff**2) / x.shape[0]

    def backward(self, dout=1):
        return self.diff / self.diff.shape[0]


class Momentum:
    """The book's common/optimizer.py Momentum (plain SGD when momentum is 0),
    with weight decay on every parameter as Laminae and PyTorch apply it."""

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        self.lr, self.momentum, self.weight_decay, self.v = lr, momentum, weight_decay, None

    def update(self, params, grads):
        if self.weight_decay:
            grads = {key: grads[key] + self.weight_decay * params[key] for key in params}
        if not self.momentum:
            for key in params:
                params[key] -= self.lr * grads[key]
            return
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class TutorialNet:
    """The book's MultiLayerNet: an ordered dict of layers and a last layer."""

    def __init__(self, layers, last_layer, optimizer):
        self.layers, self.last_layer, self.optimizer = OrderedDict(layers), last_layer, optimizer
        self.params = {}
        for name, layer in self.layers.items():
            if hasattr(layer, "W"):
                self.params[f"W{name}"], self.params[f"b{name}"] = layer.W, layer.b

    def loss(self, x, t):
        for layer in self.layers.values():
            x = layer.forward(x)
        return self.last_layer.forward(x, t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for name, layer in self.layers.items():
            if hasattr(layer, "W"):
                grads[f"W{name}"], grads[f"b{name}"] = layer.dW, layer.db
        return grads

    def train(self, x, t, batch_size, rng):
        """One pass over ``x`` in shuffled mini-batches, like the book's Trainer."""
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            self.optimizer.update(self.params, self.gradient(x[batch], t[batch]))


def from_layers(layers, loss, sgd):
    """A TutorialNet from ``(type, fields, params)`` triples (float64 copies of
    the parameters), so it trains exactly the network it is compared with."""
    built = []
    for index, (kind, fields, params) in enumerate(layers):
        W = np.array(params["W"], np.float64) if "W" in params else None
        b = np.array(params["b"], np.float64) if "b" in params else (None if W is None else np.zeros(W.shape[0 if W.ndim == 4 else 1]))
        if kind == "flatten":
            continue  # the book's Affine flattens its input itself
        if kind == "affine":
            layer = Affine(W, b)
        elif kind == "conv":
            layer = Convolution(W, b, fields["stride"], fields["pad"])
        elif kind == "pool" and fields.get("mode", "max") == "max":
            layer = Pooling(fields["size"], fields["size"], fields["stride"])
        elif kind == "relu":
            layer = Relu()
        elif kind == "sigmoid":
            layer = Sigmoid()
        else:
            raise NotImplementedError(f"no tutorial layer for {kind!r}")
        built.append((str(index), layer))
    last = {"softmax_cross_entropy": SoftmaxWithLoss, "quadratic": QuadraticLoss}[loss]()
    if sgd.get("nesterov"):
        raise NotImplementedError("the book has no Nesterov momentum")
    return TutorialNet(built, last, Momentum(sgd["lr"], sgd.get("momentum", 0.0), sgd.get("weight_decay", 0.0)))
