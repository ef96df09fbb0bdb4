"""The arrays and inline tables of TOML source text, found without parsing it.

tomllib reports a mistake where it noticed it: an array left open on line 3
is ``Invalid value (at line 5, column 1)``, at the next key.  And it nests
by recursion, so a value nested some hundreds deep exhausts Python's stack
before any limit of ours can look at it.  One scan over the brackets,
skipping strings, comments and table headers, answers both, and runs
only once tomllib has failed: 15 MB of ``[],`` take it 9 s, and tomllib
6.5 s to parse them.
"""
from __future__ import annotations

import re
from array import array

BRACKET_KINDS = {"[": "array", "{": "inline table"}

_TOKENS = re.compile(
    "|".join(
        [
            r'(?P<skip>"""(?:\\[\s\S]|[^\\])*?(?:"{3,5}|\Z)',  # a multi-line basic string
            r"'''[\s\S]*?(?:'{3,5}|\Z)",  # a multi-line literal string
            r'"(?:\\.|[^"\\\n])*"?',  # a basic string (to the line's end, unterminated)
            r"'[^'\n]*'?",  # a literal string
            r"\#[^\n]*)",  # a comment
            r"(?P<line_start>^[ \t]*\[)",  # a table header, unless inside a value
            r"(?P<open>[\[{]+)",
            r"(?P<close>[\]}]+)",
            r"(?P<newline>\n)",
        ]
    ),
    re.MULTILINE,
)

_LINE = re.compile(r"[^\n]+")
_CLOSING = bytes.maketrans(b"[{", b"]}")


def _scan(text: str, limit: int) -> tuple[array, list[tuple[int, int]]]:
    """The offsets of the arrays and inline tables never closed, and the spans
    of the values nested more than ``limit`` deep, outermost only.

    A closing bracket closes the innermost open one of its kind and leaves
    those inside it never closed.  A run of brackets is one
    step while they match: 16 MB of ``[`` then ``]`` take 0.5 s."""
    openers, starts = bytearray(), array("q")  # the open brackets, innermost last
    unclosed = array("q")
    cuts: list[tuple[int, int]] = []
    cut_from, in_header = None, False
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup
        if kind == "newline":
            in_header = False
        elif kind == "skip" or in_header:
            continue
        elif kind == "line_start" and not starts:
            in_header = True
        elif kind != "close":
            start, end = match.span()
            if kind == "line_start":  # a value's array that starts a line: only its bracket
                start = end - 1
            if cut_from is None and len(starts) + end - start > limit:
                cut_from = start + max(limit - len(starts), 0)
            openers += text[start:end].encode()
            starts.extend(range(start, end))
        else:
            closers, depth = match[0].encode(), len(starts)
            if openers[depth - len(closers) :][::-1].translate(_CLOSING) == closers:
                if cut_from is not None and depth - len(closers) <= limit:
                    cuts.append((cut_from, match.start() + depth - limit))
                    cut_from = None
                del openers[depth - len(closers) :], starts[depth - len(closers) :]
                continue
            for offset, closer in enumerate(closers, match.start()):
                while openers and _CLOSING[openers[-1]] != closer:
                    openers.pop()
                    unclosed.append(starts.pop())
                if openers:
                    openers.pop()
                    starts.pop()
                if cut_from is not None and len(starts) <= limit:
                    cuts.append((cut_from, offset + 1))
                    cut_from = None
    if cut_from is not None:
        cuts.append((cut_from, len(text)))
    unclosed.extend(starts)
    return unclosed, cuts


def first_unclosed(text: str, before: int) -> tuple[str, int] | None:
    """The kind and offset of the first array or inline table opened before
    offset ``before`` and never closed."""
    start = min((start for start in _scan(text, len(text))[0] if start < before), default=None)
    return None if start is None else (BRACKET_KINDS[text[start]], start)


def without_values_deeper_than(text: str, limit: int) -> str:
    """``text`` with every array and inline table nested more than ``limit``
    deep replaced by ``0`` and spaces, every line and column kept."""
    pieces, done = [], 0
    for cut_from, cut_to in _scan(text, limit)[1]:
        pieces += [text[done:cut_from], "0", _blanked(text[cut_from + 1 : cut_to])]
        done = cut_to
    return "".join([*pieces, text[done:]])


def _blanked(text: str) -> str:
    """``text`` as spaces, its line breaks kept."""
    return _LINE.sub(lambda line: " " * len(line[0]), text)


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of ``offset``, as tomllib counts them."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def offset_of(text: str, line: int, column: int) -> int:
    """The offset of 1-based ``line`` and ``column`` in ``text``."""
    start = 0
    for _ in range(line - 1):
        start = text.index("\n", start) + 1
    return start + column - 1
