"""One error family, so the CLI can turn every user mistake into one line.

Every message is a single line.  Where an error happens deep inside a build
(a layer's shape check, a plugin's own validator), the code that knows the
location (file, model, layer) adds it on the way out with :meth:`located`,
so the innermost code only has to describe the problem itself.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """Any exception's message folded onto one line (its type name if it has none)."""
    text = " ".join(str(exc).split())
    if with_type and text:
        return f"{type(exc).__name__}: {text}"
    return text or type(exc).__name__


class LaminaeError(Exception):
    """A mistake in what the user gave us: exit status 2, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")))

    @property
    def message(self) -> str:
        return str(self.args[0])

    def located(self, where: str, sep: str = ": ") -> LaminaeError:
        """The same kind of error with ``where`` put in front, chained to the original.

        ``sep=", "`` joins locations that read as one phrase:
        ``models.toml: model 'cnn', layer 3 (conv): ...``.
        """
        err = type(self).__new__(type(self))
        LaminaeError.__init__(err, f"{where}{sep}{self.message}")
        err.__cause__ = self.__cause__
        return err


@contextmanager
def location(where: str, sep: str = ": ") -> Iterator[None]:
    """Name the place of any error raised inside the block.

    Our own errors get ``where`` as a prefix.  Anything else is a plugin's
    own exception: it is neither swallowed nor replaced, it only gains a
    note saying where it happened.
    """
    try:
        yield
    except LaminaeError as err:
        raise err.located(where, sep) from err
    except Exception as exc:
        exc.add_note(f"(raised in {where})")
        raise


class SpecError(LaminaeError):
    """A model specification (TOML or dict) that cannot be built."""


class ShapeError(LaminaeError):
    """A layer whose input shape does not fit."""


class PluginError(LaminaeError):
    """A plugin that failed to load, or an unknown registered name."""


class DataError(LaminaeError):
    """A data file that is missing, corrupt or inconsistent."""


class CheckpointError(LaminaeError):
    """A checkpoint that is missing, corrupt or does not match its model."""


class TrainingError(LaminaeError):
    """Training that cannot go on (a loss that became NaN, say)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'filters'?"`` or an empty string when nothing is close:
    the suggestion every error that lists choices ends with."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""
