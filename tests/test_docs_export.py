"""docs/export.md is followed as a reader would: its commands and Python run in
order, in one empty folder, and print what the page says."""
from __future__ import annotations

from pathlib import Path

from tests.doc_blocks import blocks, commands
from tests.test_docs_plugins import run_command

PAGE = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def test_the_page_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = 0
    for block in blocks(PAGE.read_text(encoding="utf-8")):
        if block.lang == "console":
            for command in commands(block, ".")[0]:
                run_command(command, tmp_path)
                steps += 1
        elif block.lang == "python":
            exec(compile(block.text, f"{PAGE}:{block.line}", "exec"), {"__name__": f"docs_line_{block.line}"})
            steps += 1
    assert steps == 4
    assert (tmp_path / "quickstart.onnx").is_file()
