"""One error family, so the CLI can turn every user mistake into one line.

Every message is a single line.  Where an error happens deep inside a build
(a layer's shape check, a plugin's own validator), the code that knows the
location (file, model, layer) adds it on the way out with :meth:`located`,
so the innermost code only has to describe the problem itself.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """Any exception's message folded onto one line (its type name if it has none)."""
    text = " ".join(str(exc).split())
    if with_type and text:
        return f"{type(exc).__name__}: {text}"
    return text or type(exc).__name__


CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""Characters a terminal acts on (escape sequences, carriage returns): a name
read from a file may hold them, and ``\x1b[2J`` would clear the screen."""


class LaminaeError(Exception):
    """A mistake in what the user gave us: exit status 2, no traceback.

    The message is one line, with any control character shown escaped."""

    def __init__(self, message: str) -> None:
        line = " ".join(str(message).split("\n"))
        super().__init__(CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), line))

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


class blamed_on:  # noqa: N801 - used as a statement, like contextlib's
    """``with blamed_on(what, method):`` turns any exception but Laminae's own,
    raised in the block, into :meth:`PluginError.raised_in` ``(what, method, exc)``.
    ``what`` may be a callable, asked only on failure (naming a plugin takes a
    registry look-up).  The two calls made every batch (the loss, the
    optimizer's step) use :func:`blame` in a plain ``try`` instead: entering
    and leaving this cost about 1 us, 2% of sigmoid_net's 57 us step, and a
    ``try`` costs nothing until something raises."""

    __slots__ = ("what", "method")

    def __init__(self, what: str | Callable[[], str], method: str) -> None:
        self.what, self.method = what, method

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        if exc is None or isinstance(exc, LaminaeError) or not isinstance(exc, Exception):
            return False
        raise blame(exc, self.what, self.method)


def blame(exc: Exception, what: str | Callable[[], str], method: str) -> Exception:
    """What to raise for ``exc`` caught around a plugin's ``method`` (see
    :class:`blamed_on`): Laminae's own errors as they are, anything else located."""
    if isinstance(exc, LaminaeError):
        return exc
    return PluginError.raised_in(what() if callable(what) else what, method, exc)


class ShapeError(LaminaeError):
    """A layer whose input shape does not fit."""


class PluginError(LaminaeError):
    """A plugin that failed to load, an unknown registered name, or an exception
    raised inside a plugin's method (its traceback is the ``__cause__``)."""

    @classmethod
    def raised_in(cls, what: str, method: str, exc: BaseException) -> PluginError:
        """``exc``, raised in ``what``'s ``method``, as one line that says where:
        ``layer 1 (gelu, from plugin 'mine'): backward raised ValueError: ...``."""
        error = cls(f"{what}: {method} raised {one_line(exc, with_type=True)}")
        error.__cause__ = exc
        return error


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
