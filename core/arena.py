"""Arenas: many parameter (or gradient) arrays laid end to end in one flat buffer.

A network's parameters are a handful of arrays, from a 10-element bias to
a 784 x 256 weight matrix.  An optimizer that updates them one by one makes
a numpy call per array and step; with them laid end to end in one buffer, it
makes one call over all of them, and data-parallel slices add up their
gradients in one pass.  A :class:`~laminae.Network` lays out its parameters
and gradients this way when it is built (:func:`arena_views`, each array
copied in and let go in turn), leaving each layer's ``params`` and
``grads`` entries as views into the arenas, so layers read and write them
as before.  :func:`flat_groups` is how an optimizer finds
the arenas again from the ``params`` and ``grads`` dicts it is given: it
needs no arena of its own, and arrays outside any arena still work.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from math import prod

import attrs
import numpy as np

_PROBE = {"probe": object()}
"""An object only a dict refers to: the reference count such an entry shows."""


def movable(arrays: Mapping[str, np.ndarray], name: str, dtype: np.dtype) -> bool:
    """Whether ``arrays[name]`` may move into an arena of ``dtype``: nothing but
    ``arrays`` refers to it, and it is a C-contiguous array of that dtype
    that owns its memory.  A layer that kept a reference of its own (an
    attribute, a view of the array) would go on reading the old array after
    the move, so its arrays stay where they are.  Never true on an
    interpreter without reference counts."""
    if not hasattr(sys, "getrefcount") or sys.getrefcount(arrays[name]) > sys.getrefcount(_PROBE["probe"]):
        return False
    array = arrays[name]
    return isinstance(array, np.ndarray) and array.dtype == dtype and array.flags.owndata and array.flags.c_contiguous


def arena_views(shapes: Sequence[tuple[int, ...]], dtype: np.dtype) -> tuple[np.ndarray, list[np.ndarray]]:
    """A flat buffer for arrays of ``shapes`` end to end (uninitialised: its
    pages are taken as they are written), and a view of it shaped like each."""
    sizes = [prod(shape) for shape in shapes]
    flat = np.empty(sum(sizes), dtype)
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(flat[start : start + size].reshape(shape))
        start += size
    return flat, views


def pack(arrays: Sequence[np.ndarray], dtype: np.dtype) -> tuple[np.ndarray, list[np.ndarray]]:
    """A flat buffer holding copies of ``arrays`` end to end, and a view of it
    shaped like each one."""
    flat, views = arena_views([array.shape for array in arrays], dtype)
    for view, array in zip(views, arrays):
        view[...] = array
    return flat, views


def flat_span(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The one flat array that ``arrays`` tile end to end in this order, or
    None when they do not."""
    if not arrays or _base(arrays[0]) is None or not all(_follows(a, b) for a, b in zip(arrays, arrays[1:])):
        return None
    base = _base(arrays[0])
    itemsize = base.dtype.itemsize
    start = (_address(arrays[0]) - _address(base)) // itemsize
    return base[start : start + sum(array.size for array in arrays)]


def _base(array: np.ndarray) -> np.ndarray | None:
    """The 1-D contiguous buffer ``array`` is a contiguous view of, or None."""
    base = array.base
    if isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous and array.flags.c_contiguous:
        return base
    return None


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _follows(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether ``after`` starts in the same flat buffer right where ``before`` ends."""
    base = _base(before)
    return (
        base is not None
        and _base(after) is base
        and after.dtype == before.dtype
        and _address(after) == _address(before) + before.nbytes
    )


@attrs.define(eq=False)
class Group:
    """Parameters that an optimizer may treat as one array: ``names[i]``
    occupies ``slices[i]`` of ``param`` and ``grad``, which are 1-D, except
    for a lone array that is not contiguous (then ``slices`` is
    ``[slice(None)]`` and both keep its shape)."""

    names: list[str]
    param: np.ndarray
    grad: np.ndarray
    slices: list[slice]
    shapes: list[tuple[int, ...]]

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """``flat`` (an array shaped like ``param``: an optimizer's state for
        the group) as a view per parameter, shaped like the parameter."""
        return {name: flat[part].reshape(shape) for name, part, shape in zip(self.names, self.slices, self.shapes)}


def flat_groups(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> list[Group]:
    """``params`` (and their ``grads``) in order, as the fewest flat groups:
    each run of arrays that tile one buffer end to end, in both dicts alike,
    is one group; any other array is a group of its own (a 1-D view of it
    when it is contiguous, else the array as it is).  Linear in the number of
    arrays, but not free: cache it against the dicts' arrays, once per run."""
    runs: list[list[str]] = []
    for name in params:
        last = runs[-1][-1] if runs else None
        if last is not None and _follows(params[last], params[name]) and _follows(grads[last], grads[name]):
            runs[-1].append(name)
        else:
            runs.append([name])
    groups = []
    for run in runs:
        param = flat_span([params[name] for name in run])
        grad = flat_span([grads[name] for name in run])
        if param is None or grad is None:  # one array of its own
            array, gradient = params[run[0]], grads[run[0]]
            flat = array.flags.c_contiguous and gradient.flags.c_contiguous
            param, grad = (array.reshape(-1), gradient.reshape(-1)) if flat else (array, gradient)
            groups.append(Group(run, param, grad, [slice(None)], [array.shape]))
            continue
        bounds, offset = [], 0
        for name in run:
            bounds.append(slice(offset, offset + params[name].size))
            offset += params[name].size
        groups.append(Group(run, param, grad, bounds, [params[name].shape for name in run]))
    return groups
