"""Window arithmetic shared by ``conv`` and ``pool``: output sizes, shape
checks, and the per-kernel-offset strided copies (im2col) and adds (col2im).

Both directions loop over the ``size * size`` kernel offsets only; each step
moves one strided block for the whole batch at once, so the Python overhead
does not grow with the batch or the image.  Padding is never materialised:
each offset touches only the output positions whose input pixel lies inside
the image, so the padded border of a column buffer stays at the zeros it was
allocated with, and col2im never writes into a border it would have to crop.
"""
from __future__ import annotations

import functools

import numpy as np

import laminae


def output_size(length: int, size: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis."""
    return (length + 2 * pad - size) // stride + 1


def window_output_hw(
    input_shape: tuple[int, ...], size: int, stride: int, pad: int, what: str
) -> tuple[int, int]:
    """``(OH, OW)`` for windows over a ``(C, H, W)`` sample, or a one-line
    ShapeError naming the input shape and the window that does not fit it."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise laminae.ShapeError(f"expects a (channels, height, width) input, got {shape}")
    _, height, width = shape
    if min(height, width) + 2 * pad < size:
        raise laminae.ShapeError(f"{what} {size}x{size} with pad {pad} does not fit input {shape}")
    return output_size(height, size, stride, pad), output_size(width, size, stride, pad)


def _span(offset: int, stride: int, pad: int, n_out: int, n_in: int) -> tuple[slice, slice]:
    """The output positions along one axis whose input pixel, for this kernel
    offset, falls inside the unpadded image; and those input pixels."""
    first = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    stop = min(n_out, (n_in - 1 + pad - offset) // stride + 1)
    if stop <= first:
        return slice(0, 0), slice(0, 0)
    start = first * stride + offset - pad
    return slice(first, stop), slice(start, start + (stop - first - 1) * stride + 1, stride)


Window = tuple[tuple, tuple]
"""One kernel offset: an index into the ``(k, k, N, C, OH, OW)`` columns and
the matching strided index into the ``(N, C, H, W)`` input."""


def kernel_offsets(
    input_hw: tuple[int, int], output_hw: tuple[int, int], size: int, stride: int, pad: int
) -> list[Window]:
    """Every kernel offset's pair of indexes, computed once per build so that
    the per-call loops do nothing but move data."""
    every = slice(None)
    rows = [_span(ky, stride, pad, output_hw[0], input_hw[0]) for ky in range(size)]
    columns = [_span(kx, stride, pad, output_hw[1], input_hw[1]) for kx in range(size)]
    return [
        ((ky, kx, every, every, oy, ox), (every, every, iy, ix))
        for ky, (oy, iy) in enumerate(rows)
        for kx, (ox, ix) in enumerate(columns)
    ]


def im2col(x: np.ndarray, cols: np.ndarray, offsets: list[Window]) -> None:
    """Copy every window of ``x`` into ``cols``, a (possibly transposed) view
    shaped (k, k, N, C, OH, OW) whose padding positions are already zero:
    one strided block copy per kernel offset, cast to the buffer's dtype."""
    for col_index, x_index in offsets:
        cols[col_index] = x[x_index]


def col2im(cols: np.ndarray, dx: np.ndarray, offsets: list[Window]) -> None:
    """Add every window of ``cols`` (k, k, N, C, OH, OW) back onto the
    zero-initialised ``dx`` (N, C, H, W): the transpose of :func:`im2col`.

    numpy walks strided operands through a buffer of 8192 numbers, copying
    them in and out, unless the buffer is no longer than the stretches the
    operands are contiguous over; these adds run with the buffer cut to
    that length (their ``OW*N`` numbers a row in a conv's batch-innermost
    layout): lenet's second conv's col2im 0.40 -> 0.21 ms (measured)."""
    pairs = [(dx[x_index], cols[col_index]) for col_index, x_index in offsets if cols[col_index].size]
    if not pairs:
        return
    run = min(_contiguous_run(a.shape, a.strides, a.itemsize) for pair in pairs for a in pair)
    previous = np.getbufsize()
    shorter = run // 16 * 16  # numpy wants a multiple of 16
    np.setbufsize(shorter if 16 <= shorter < previous else previous)  # per thread: a context variable
    try:
        for target, source in pairs:
            target += source
    finally:
        np.setbufsize(previous)


@functools.lru_cache(maxsize=1024)
def _contiguous_run(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    """How many elements an array's innermost axes hold in one contiguous stretch."""
    run = 1
    for length, stride in sorted(zip(shape, strides), key=lambda axis: abs(axis[1])):
        if length == 1:
            continue
        if stride != run * itemsize:
            break
        run *= length
    return run

