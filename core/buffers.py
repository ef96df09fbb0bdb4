"""Buffers for layers' hot paths: scratch reused between calls, and fresh
arrays that reuse memory nobody refers to any more.

A conv network's step hands megabytes of new arrays from layer to layer;
allocating them afresh each time made the allocator return the pages to the
system and fault them in again.  These helpers keep that memory alive
without ever letting a caller see an array change under it.  They are
public so that third-party layers can use them too.
"""
from __future__ import annotations

import functools
import sys
import threading
from math import prod

import numpy as np


def scratch(buffer: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``buffer`` when it already has this shape and dtype, else a fresh zeroed
    one: layers keep their column buffers across calls of the same batch shape."""
    if buffer is not None and buffer.shape == shape and buffer.dtype == dtype:
        return buffer
    return np.zeros(shape, dtype)


# The layout helpers below run several times per layer and step, on a
# handful of distinct shapes: cached, they cost a dict lookup (measured: a
# third of a lenet step's fixed overhead went to sorting strides).


@functools.lru_cache(maxsize=1024)
def _axes_by_stride(shape: tuple[int, ...], strides: tuple[int, ...], every: bool) -> tuple[int, ...]:
    axes = range(len(shape)) if every else [axis for axis in range(len(shape)) if shape[axis] > 1]
    return tuple(sorted(axes, key=lambda axis: -strides[axis]))


@functools.lru_cache(maxsize=1024)
def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    """The transpose that turns an array stored in ``order`` back into its logical axes."""
    return tuple(sorted(range(len(order)), key=order.__getitem__))


def _order(array: np.ndarray) -> tuple[int, ...]:
    """The axes (of length > 1) from the largest stride to the smallest."""
    return _axes_by_stride(array.shape, array.strides, False)


def memory_order(array: np.ndarray) -> tuple[int, ...]:
    """Every axis, from the largest stride to the smallest: enough to make
    arrays in ``array``'s order later (:meth:`Recycler.empty`) without
    keeping ``array`` alive."""
    return _axes_by_stride(array.shape, array.strides, True)


def scratch_like(buffer: np.ndarray | None, like: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``buffer`` when it has ``like``'s shape, memory order and this dtype,
    else a fresh uninitialised one in ``like``'s order: element-wise scratch
    (masks, indices) that matches the arrays it is combined with."""
    if (
        buffer is not None
        and buffer.shape == like.shape
        and buffer.dtype == dtype
        and _order(buffer) == _order(like)
    ):
        return buffer
    return np.empty_like(like, dtype=dtype)


_PROBE = [object()]
"""An object only a list refers to: the reference count such an object shows."""


def _unreferenced(arrays: list[np.ndarray], index: int) -> bool:
    """True when ``arrays`` holds the only reference to ``arrays[index]``.
    Every view of an array refers to it (numpy points a view's ``base`` at
    the array that owns the memory), so then nothing can see its memory.
    Never true on an interpreter without reference counts."""
    if not hasattr(sys, "getrefcount"):
        return False
    return sys.getrefcount(arrays[index]) <= sys.getrefcount(_PROBE[0])


SMALL_BYTES = 128 * 1024
"""glibc's default threshold for serving a block from fresh pages (``mmap``)
rather than from its heap: below it, a fresh array costs no page faults."""


class Recycler:
    """Fresh arrays for layers to return, reusing the memory of dead ones.

    Each step of a conv network returns megabytes of new arrays from every
    conv, ReLU and pool, and freeing and allocating them made the allocator
    give the pages back to the system and fault them in again (measured: a
    simple_cnn step took 11 ms instead of 15 with malloc tuned to keep its
    memory, and 11-12 ms with Recyclers).  A Recycler keeps the last few blocks it handed out and reuses
    one only when its own list holds the last reference to it (every view
    of an array refers to the block that owns its memory), so an array
    anyone can still see is never written again: to a caller every array is
    fresh.  Blocks are matched by size in bytes, whatever the shape, the
    most recently used free one first.  Uninitialised, like ``np.empty``; a
    lock makes the check-and-take safe across threads.  Each layer has its
    own (sharing one across layers measured no faster, within this
    machine's noise), so the blocks live as long as the network does.
    Blocks under :data:`SMALL_BYTES` are not kept at all: the allocator
    hands those out from its heap without a page fault, faster than the
    check for a free block (a sigmoid_net step at batch 10 took 59.6 us
    with its four small outputs recycled, 55.9 without).
    """

    __slots__ = ("_blocks", "_keep", "_lock")

    def __init__(self, keep: int = 2) -> None:
        self._blocks: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def empty(
        self, shape: tuple[int, ...], dtype: np.dtype, order: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """A ``shape`` array laid out in ``order`` (see :func:`memory_order`;
        default C order), made or reused."""
        dtype = np.dtype(dtype)
        stored = tuple(shape[axis] for axis in order) if order is not None else tuple(shape)
        size = prod(stored) * dtype.itemsize
        if dtype.hasobject or size < SMALL_BYTES:  # no raw memory to reuse, or not worth it
            array = np.empty(stored, dtype)
            return array if order is None else array.transpose(_inverse(tuple(order)))
        with self._lock:
            blocks = self._blocks
            for index in range(len(blocks) - 1, -1, -1):
                if blocks[index].size == size and _unreferenced(blocks, index):
                    block = blocks.pop(index)
                    break
            else:
                block = np.empty(size, np.uint8)
            blocks.append(block)
            del blocks[: -self._keep]
        array = block.view(dtype).reshape(stored)
        return array if order is None else array.transpose(_inverse(tuple(order)))

    def __reduce__(self) -> tuple:
        """Copies and pickles start empty (and get their own lock)."""
        return (Recycler, (self._keep,))
