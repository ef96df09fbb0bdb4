"""A reader that stops early (``laminae models | head -1``) ends any command
quietly: no traceback, no "Exception ignored", exit status 141 (128 + SIGPIPE,
what a shell reports for a tool that SIGPIPE killed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from laminae.cli import READER_GONE

MODELS_TOML = Path(__file__).resolve().parents[1] / "models.toml"
LAMINAE = shutil.which("laminae", path=str(Path(sys.executable).parent))
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINAE_", "PYTHONUNBUFFERED"))}
ENV["LAMINAE_DISABLE_PLUGIN_AUTOLOAD"] = "1"


def with_reader_gone(argv: list[str], stream: str, cwd: Path, env: dict[str, str] = ENV) -> tuple[int, str]:
    """``laminae ARGV`` run with ``stream`` a pipe whose reading end is closed
    before the command writes a byte: its exit status and what it wrote to
    the other stream."""
    assert LAMINAE is not None, "the laminae console script is not installed"
    process = subprocess.Popen([LAMINAE, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    closed, read = (process.stdout, process.stderr) if stream == "stdout" else (process.stderr, process.stdout)
    closed.close()
    written = read.read().decode()
    return process.wait(timeout=60), written


def test_the_status_is_the_one_a_shell_gives_a_tool_killed_by_sigpipe():
    shell = subprocess.run(["bash", "-c", "yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}"], capture_output=True, text=True)
    assert int(shell.stdout) == READER_GONE == 141


@pytest.mark.parametrize(
    "argv",
    [
        ["models"],
        ["summary", "lenet"],
        ["check", str(MODELS_TOML)],
        ["layers", "conv"],
        ["plugins"],
        ["--help"],
        ["train", "quickstart", "--epochs", "1"],
    ],
    ids=lambda argv: " ".join(Path(a).name for a in argv),
)
def test_a_closed_stdout_ends_the_command_quietly(tmp_path, argv):
    """Output to a pipe is buffered: the reader is found gone at the last flush,
    which used to print "Exception ignored ... BrokenPipeError" and exit 120."""
    assert with_reader_gone(argv, "stdout", tmp_path) == (READER_GONE, "")
    assert not (tmp_path / "runs").exists()  # train stopped at its first line, before training


@pytest.mark.parametrize("argv", [["models"], ["check", str(MODELS_TOML)]], ids=["models", "check"])
def test_a_closed_unbuffered_stdout_ends_the_command_quietly(tmp_path, argv):
    """Unbuffered, the first ``print`` finds the reader gone, inside the command:
    the traceback ``laminae summary lenet | head`` used to end in."""
    env = ENV | {"PYTHONUNBUFFERED": "1"}
    assert with_reader_gone(argv, "stdout", tmp_path, env) == (READER_GONE, "")


def test_a_closed_stderr_ends_an_error_quietly(tmp_path):
    """Errors and warnings go to stderr, which a pipe may carry too (``2>&1 | head``);
    the progress bar goes there only on a terminal."""
    (tmp_path / "bad.toml").write_text("[models.a]\ninput = = 3\n")
    assert with_reader_gone(["check", "bad.toml"], "stderr", tmp_path) == (READER_GONE, "")
