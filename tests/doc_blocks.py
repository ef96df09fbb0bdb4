"""Reads the fenced blocks of a Markdown page and the conventions that make them testable.

``<!-- file: PATH -->`` on the line before a fence makes the block the whole
of PATH; in a ``console`` block, ``$ `` starts a command and the lines after
it are its expected output, where a line ``...`` stands for any lines and
``...`` inside a line for any text.  Kept apart from the tests so that any
page can be checked the same way.
"""
from __future__ import annotations

import posixpath
import re
import shlex

import attrs

FILE_COMMENT = re.compile(r"<!-- file: (\S+) -->")


@attrs.frozen
class Block:
    line: int
    lang: str
    text: str
    file: str | None


@attrs.frozen
class Command:
    """One ``$`` line, with the folder it runs in (relative to the tutorial's root)."""

    line: int
    cwd: str
    env: dict[str, str]
    argv: list[str]
    expected: list[str]


def blocks(markdown: str) -> list[Block]:
    found, lines = [], markdown.splitlines()
    index = 0
    while index < len(lines):
        fence = lines[index]
        if not fence.startswith("```"):
            index += 1
            continue
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = FILE_COMMENT.fullmatch(previous.strip())
        end = lines.index("```", index + 1)
        text = "".join(line + "\n" for line in lines[index + 1 : end])
        found.append(Block(index + 1, fence[3:].strip(), text, marker.group(1) if marker else None))
        index = end + 1
    return found


def commands(block: Block, cwd: str) -> tuple[list[Command], str]:
    """The commands of a console block, and the folder the block leaves the reader in."""
    found: list[Command] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            words = shlex.split(line[2:])
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words[0] == "cd":
                cwd = posixpath.normpath(posixpath.join(cwd, words[1]))
            found.append(Command(block.line + 1 + offset, cwd, env, words, []))
        elif found:
            found[-1].expected.append(line)
    return found, cwd


def matches(expected: list[str], output: str) -> bool:
    """Whether ``output`` fits ``expected`` line for line, ``...`` being a wildcard."""
    pattern = ""
    for line in expected:
        if line == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += ".*".join(re.escape(part) for part in line.split("...")) + r"\n"
    return re.fullmatch(pattern, output if output.endswith("\n") or not output else output + "\n") is not None
