"""Where the windows of a conv or pool layer lie.

A ``size x size`` window moves ``stride`` pixels at a time over an image
with ``pad`` zeros around it.  Rather than loop over windows, the layers
loop over the ``size * size`` kernel offsets: for one offset ``(ky, kx)``,
the pixel it sees in every window is one strided slice of the input,
``x[:, :, ky::stride, kx::stride]`` (cut to the windows that exist).  So
a whole batch moves in one numpy call per offset, and the Python overhead
does not grow with the batch or the image.

Padding is never materialised: each offset's slices cover only the output
positions whose input pixel lies inside the image.
"""
from __future__ import annotations

from laminae.errors import ShapeError


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
        raise ShapeError(f"expects a (channels, height, width) input, got {shape}")
    _, height, width = shape
    if min(height, width) + 2 * pad < size:
        raise ShapeError(f"{what} {size}x{size} with pad {pad} does not fit input {shape}")
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
