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
:class:`FlatState` keeps an optimizer's per-parameter state (a velocity,
moment estimates) laid out like those groups, and saves and loads it.
"""
from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any, TypeVar

import attrs
import numpy as np

T = TypeVar("T")

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

    def gather(self, arrays: Mapping[str, np.ndarray], what: str) -> np.ndarray:
        """The inverse of :meth:`unflatten`: ``arrays[name]`` for each of the
        group's parameters, copied into one new array shaped like ``grad``.
        A parameter missing from ``arrays``, or an array not of its
        parameter's shape, is a one-line ValueError naming ``what``."""
        flat = np.empty_like(self.grad)
        for name, part in self.unflatten(flat).items():
            if name not in arrays:
                raise ValueError(f"{what} saved for {next(iter(arrays), None)!r} but not for {name!r}")
            if np.shape(arrays[name]) != part.shape:
                raise ValueError(f"{what} for {name!r} has shape {np.shape(arrays[name])}, expected {part.shape}")
            part[...] = arrays[name]
        return flat


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


@attrs.define(eq=False)
class FlatState:
    """An optimizer's state over :func:`flat_groups`: its step count, and an
    array per parameter of each ``kind`` (``"velocity"``; ``"m"`` and
    ``"v"``) that, once stepping, is a view into one flat buffer per group
    and kind, so that the update is a few numpy calls over each buffer.

    Saved as the :class:`laminae.Optimizer` protocol names it: ``"steps"`` (a
    0-d int64) and ``"<kind>/<parameter>"``, shaped like the parameter.  At
    every step :meth:`groups` hands back the optimizer's groups, laid out
    anew when they change (the first step, a state just loaded, other
    arrays in the dicts) by the optimizer's own function, which gets its
    buffers from :meth:`take`.
    """

    owner: str
    """The optimizer's name, for messages (``"SGD"``)."""
    kinds: tuple[str, ...]
    steps: int = 0
    _kept: dict[str, dict[str, np.ndarray]] = attrs.field(init=False, repr=False)
    """Per kind, per parameter: the views :meth:`state_dict` saves."""
    _saved: dict[str, dict[str, np.ndarray]] = attrs.field(init=False, repr=False)
    """Per kind, per parameter: what the groups being laid out take in."""
    _arrays: tuple[np.ndarray, ...] = attrs.field(init=False, default=(), repr=False)
    _laid_out: list[Any] = attrs.field(init=False, factory=list, repr=False)

    def __attrs_post_init__(self) -> None:
        self._kept = {kind: {} for kind in self.kinds}
        self._saved = {kind: {} for kind in self.kinds}

    def groups(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], lay_out: Callable[[Group], T]
    ) -> list[T]:
        """``lay_out(group)`` for each of :func:`flat_groups` ``(params, grads)``:
        the optimizer's group with its buffers.  Laid out at the first call,
        after :meth:`load_state_dict`, and whenever the dicts hold other
        arrays than at the last call; else the list of the last call, so
        that a step costs a pass over the dicts, not over the arrays."""
        arrays = (*params.values(), *grads.values())
        if len(arrays) == len(self._arrays) and all(map(operator.is_, arrays, self._arrays)):
            return self._laid_out
        saved, kept = self._saved, self._kept
        self._saved, self._kept = kept, {kind: {} for kind in self.kinds}
        try:
            self._laid_out = [lay_out(group) for group in flat_groups(params, grads)]
        except BaseException:
            self._saved, self._kept = saved, kept
            raise
        self._arrays = arrays
        return self._laid_out

    def take(
        self, kind: str, group: Group, start: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray | None:
        """The flat buffer of ``kind`` for ``group`` (shaped like ``group.grad``),
        holding what was saved for its parameters; when nothing of ``kind``
        was, ``start(group.grad)`` (``np.zeros_like``), or None without
        ``start``.  Saved for some parameters but not all is a ValueError."""
        saved = self._saved[kind]
        if saved:
            flat = group.gather(saved, kind)
        elif start is None:
            return None
        else:
            flat = start(group.grad)
        self.keep(kind, group, flat)
        return flat

    def keep(self, kind: str, group: Group, flat: np.ndarray) -> None:
        """Save ``flat`` (shaped like ``group.grad``) as ``group``'s state of ``kind``
        from now on: a buffer made after :meth:`take` (SGD's first velocity)."""
        self._kept[kind].update(group.unflatten(flat))

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"{kind}/{name}": array.copy() for kind, kept in self._kept.items() for name, array in kept.items()}
        state["steps"] = np.array(self.steps, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Take ``state`` in (copies of it) for the next step, or raise a
        one-line ValueError: a ``steps`` that is not a non-negative integer,
        a name of another kind, an array not of floating-point numbers, or
        one kind saved for other parameters than another."""
        state = dict(state)
        steps = np.asarray(state.pop("steps", 0))
        if steps.shape != () or not np.issubdtype(steps.dtype, np.integer) or steps < 0:
            raise ValueError(f"'steps' must be a non-negative integer, got {steps!r}")
        loaded: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in self.kinds}
        for key, array in state.items():
            kind, slash, name = key.partition("/")
            if not slash or kind not in loaded:
                raise ValueError(f"unknown {self.owner} state {key!r}")
            if not np.issubdtype(np.asarray(array).dtype, np.floating):
                raise ValueError(f"{self.owner} state {key!r} holds {np.asarray(array).dtype}, not floating-point numbers")
            loaded[kind][name] = np.array(array)
        first = self.kinds[0]
        for kind in self.kinds[1:]:
            for name in loaded[first].keys() ^ loaded[kind].keys():
                there, missing = (first, kind) if name in loaded[first] else (kind, first)
                raise ValueError(f"{self.owner} state {there + '/' + name!r} has no {missing + '/' + name!r}")
        self.steps = int(steps)
        self._kept = loaded
        self._arrays = ()  # laid out again at the next step, taking these in
