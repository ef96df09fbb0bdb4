"""Where a training run stands, in a form a checkpoint stores as JSON."""
from __future__ import annotations

from typing import Any

import attrs

import laminae.training.batches as batches
from laminae.errors import CheckpointError, one_line
from laminae.randomness import rng_from_state
from laminae.validators import non_negative_int, non_negative_number, number, positive_int, thread_count


def _rng_state(_state: TrainingState, _attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        rng_from_state(value)


@attrs.define
class TrainingState:
    """Where a run stands: finished epochs, batches done in the next one, and the
    shuffle generator's state at that epoch's start, plus the running sums of
    the unfinished epoch so its metrics come out as if never interrupted.

    ``epochs``, ``batch_size``, ``seed`` and ``samples`` are the run's settings,
    kept so that a resumed run cannot silently train differently.  Every field
    is validated, on creation and on assignment: a state read from a
    checkpoint someone edited must fail here, not as a traceback mid-epoch.
    """

    epochs: int = attrs.field(validator=positive_int)
    batch_size: int = attrs.field(validator=positive_int)
    seed: int = attrs.field(validator=non_negative_int)
    samples: int = attrs.field(validator=positive_int)
    epoch: int = attrs.field(default=0, validator=non_negative_int)
    batch: int = attrs.field(default=0, validator=non_negative_int)
    rng_state: dict[str, Any] | None = attrs.field(default=None, validator=_rng_state)
    loss_sum: float = attrs.field(default=0.0, validator=non_negative_number)
    correct: int = attrs.field(default=0, validator=non_negative_int)
    seen: int = attrs.field(default=0, validator=non_negative_int)
    seconds: float = attrs.field(default=0.0, validator=non_negative_number)
    threads: int = attrs.field(default=1, validator=thread_count)
    """Slices of every batch trained side by side on this machine."""
    processes: int = attrs.field(default=1, validator=positive_int)
    """MPI processes the run trains on (``mpiexec -n``), each one slice of every
    batch (``threads`` is then 1); see :attr:`slices`."""
    augment_state: dict[str, Any] | None = attrs.field(default=None, validator=_rng_state)
    """The augmentation generator's state after the last batch done."""
    best: float | None = attrs.field(default=None, validator=attrs.validators.optional(number()))
    """The best monitored validation figure so far (``train.monitor``)."""
    best_epoch: int = attrs.field(default=0, validator=non_negative_int)
    """The epoch that reached :attr:`best` (0: none yet)."""

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    @property
    def slices(self) -> int:
        """How many slices every batch is cut into: what decides the numbers, on
        threads or on MPI processes alike."""
        return self.threads * self.processes

    def to_json(self) -> dict[str, Any]:
        """The fields, ``processes`` only when above 1: a run on one machine
        writes what Laminae before MPI reads."""
        data = attrs.asdict(self)
        if self.processes == 1:
            del data["processes"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "checkpoint") -> TrainingState:
        """The state saved by :meth:`to_json`, or a one-line CheckpointError naming ``where``."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: corrupt training position (not a table)")
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{where}: corrupt training position (unknown key {unknown[0]!r})")
        try:
            state = cls(**data)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: corrupt training position ({one_line(exc)})") from None
        if state.batch > batches.batch_count(state.samples, state.batch_size) or state.seen > state.samples:
            raise CheckpointError(f"{where}: corrupt training position (batch {state.batch} of an epoch that has fewer)")
        return state
