"""The machine's float32 GEMM peak, the GEMMs of one training step, and
the time those GEMMs take alone.

FLOPs over peak says how much of the hardware a conv network's step uses;
the GEMMs' time alone says how much of a step is matrix products at all,
and so what the rest of the step costs.  Everything is measured in the
same process as the step, so it sees the same BLAS, thread count and (on a
shared machine) the same neighbours.
"""
from __future__ import annotations

import time
from math import prod

import numpy as np

import laminae_models as lm
from laminae.plugins.gemm.skinny import PIECE_WORK, piece_count

GEMM_LAYERS = ("conv", "affine")


def gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of one ``size``-square float32 ``np.matmul``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    best = _best_seconds(lambda: np.matmul(a, b, out=out), repeats)
    return 2.0 * size**3 / best


def step_gemms(network, batch: int) -> list[tuple[int, int, int]]:
    """``(M, K, N)`` of every GEMM one forward+backward step of ``network`` needs.

    The forward product and the two backward ones (weight and input
    gradient) of every conv and affine layer, those inside composite layers
    (a residual block's paths) included, except the input gradient of a
    layer with no parameters before it, which no step needs: what is listed
    is the work the step must do, so skipping useless work shows up as a
    higher fraction of peak.
    """
    shapes: list[tuple[int, int, int]] = []
    _chain_gemms(network.chain.nodes, batch, False, shapes)
    return shapes


def _chain_gemms(nodes, batch: int, trained_below: bool, shapes: list) -> bool:
    """Add the GEMMs of ``nodes`` (layers in order) to ``shapes``; whether any
    layer up to their output has parameters."""
    for node in nodes:
        inner = lm.inner_paths(node)
        if inner is not None:
            below = [_chain_gemms(path, batch, trained_below, shapes) for path in inner[1]]
            trained_below = any(below)
            continue
        if node.type not in GEMM_LAYERS:
            trained_below |= bool(node.layer.params)
            continue
        shape_in, shape_out = node.input_shape, node.output_shape
        if node.type == "conv":
            k = node.layer.size
            m, kk, n = shape_out[0], shape_in[0] * k * k, batch * prod(shape_out[1:])
        else:
            m, kk, n = batch, prod(shape_in), shape_out[0]
        dweights, dinput = ((kk, m, n), (m, n, kk)) if node.type == "affine" else ((m, n, kk), (kk, m, n))
        shapes += [(m, kk, n), dweights] + ([dinput] if trained_below else [])
        trained_below = True
    return trained_below


def step_flops(network, batch: int) -> int:
    """GEMM FLOPs (2*M*N*K each) of one forward+backward step of ``network``."""
    return sum(2 * m * k * n for m, k, n in step_gemms(network, batch))


def gemm_seconds(shapes: list[tuple[int, int, int]], matmul=None, repeats: int = 20) -> float:
    """Seconds the GEMMs ``shapes`` take alone on float32 operands: the floor
    under a step that does nothing else.  Each shape is timed as the best
    of ``repeats`` runs of its fastest form: by default numpy's np.matmul,
    plain or cut into stacked pieces along a long side (the conv layer's
    trick for skinny products, see ``laminae.plugins.gemm.skinny``), so that the
    floor is one Laminae could reach; or ``matmul(a, b, out)``, such as
    PyTorch's (:func:`torch_matmul`), plain."""
    rng = np.random.default_rng(0)
    total = 0.0
    for m, k, n in shapes:
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
        forms = [lambda out=np.empty((m, n), np.float32): matmul(a, b, out)] if matmul else _numpy_forms(a, b)
        total += min(_best_seconds(form, repeats) for form in forms)
    return total


def _numpy_forms(a: np.ndarray, b: np.ndarray) -> list:
    """Ways numpy can compute ``a @ b``: plain, and stacked pieces along ``n``
    or along ``k`` (summed) when the product is long enough to cut, as many
    as the conv layer's own :func:`~laminae.plugins.gemm.skinny.piece_count` would cut."""
    (m, k), n = a.shape, b.shape[1]
    out = np.empty((m, n), np.float32)
    forms = [lambda: np.matmul(a, b, out=out)]
    along_n, along_k = piece_count(m * k, n, m * k, PIECE_WORK), piece_count(m * n, k, m * n, PIECE_WORK)
    if along_n > 1:
        by_n = np.empty((along_n, m, n // along_n), np.float32)
        b_pieces_n = b.reshape(k, along_n, -1).transpose(1, 0, 2)
        forms.append(lambda: np.matmul(a, b_pieces_n, out=by_n))
    if along_k > 1:
        partial = np.empty((along_k, m, n), np.float32)
        a_pieces, b_pieces = a.reshape(m, along_k, -1).transpose(1, 0, 2), b.reshape(along_k, -1, n)
        forms.append(lambda: np.sum(np.matmul(a_pieces, b_pieces, out=partial), axis=0, out=out))
    return forms


def _best_seconds(run, repeats: int) -> float:
    run()  # the first call pays for page faults and waking the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def torch_matmul():
    """PyTorch's ``mm`` on numpy operands (shared memory, no copies)."""
    import torch

    return lambda a, b, out: torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
