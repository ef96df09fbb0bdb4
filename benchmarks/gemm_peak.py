"""The machine's float32 GEMM peak, and the GEMM FLOPs of one training step.

Their ratio says how much of the hardware a conv network's step uses; the
peak is measured in the same process as the step, so both see the same
BLAS, thread count and (on a shared machine) the same neighbours.
"""
from __future__ import annotations

import time
from math import prod

import numpy as np

GEMM_LAYERS = ("conv", "affine")


def gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of one ``size``-square float32 ``np.matmul``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # first call pays for thread start-up and page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def step_flops(network, batch: int) -> int:
    """GEMM FLOPs (2*M*N*K each) of one forward+backward step of ``network``.

    Counts the forward product and the two backward ones (weight and input
    gradient) of every conv and affine layer, except the input gradient of
    a layer with no parameters before it, which no step needs: what is
    counted is the work the step must do, so skipping useless work shows up
    as a higher fraction.
    """
    total, trained_below = 0, False
    in_shapes = [network.input_shape, *network.shapes[:-1]]
    for index, (name, shape_in, shape_out) in enumerate(zip(network.names, in_shapes, network.shapes)):
        if name not in GEMM_LAYERS:
            trained_below |= bool(network.layers[index].params)
            continue
        if name == "conv":
            k = network.layers[index].size
            m, kk, n = shape_out[0], shape_in[0] * k * k, batch * prod(shape_out[1:])
        else:
            m, kk, n = batch, prod(shape_in), shape_out[0]
        total += (3 if trained_below else 2) * 2 * m * kk * n
        trained_below = True
    return total
