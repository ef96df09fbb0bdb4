"""Two ``laminae tune`` processes, as two machines would, share one study on a real PostgreSQL server.

pgserver ships PostgreSQL's binaries as a wheel (the test extra installs
it), so no system package is needed.  Run as root (CI, containers),
PostgreSQL refuses to start; pgserver then creates a system user
``pgserver`` (with ``useradd``) and runs the server as that user.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import optuna
import pgserver
import pytest

from tests.tune_helpers import LAMINAE, counted_trials, trials_in_training, trials_of, tune_command, tune_process, wait_for, with_tune, write_model

BEATING = {"heartbeat_seconds": 1, "grace_seconds": 3, "pruner": '"none"'}
"""A heartbeat every second, and a trial failed 3 s after its last: the tests wait seconds, not the default 30."""


@pytest.fixture
def postgres_url(tmp_path):
    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


def test_two_processes_on_one_postgres_url_share_one_study(tmp_path, postgres_url):
    model = write_model(tmp_path)
    # Twenty trials, so that neither machine can finish the study before the other has started.
    text = model.read_text().replace("trials = 6", "trials = 20").replace('pruner = "median"', 'pruner = "none"')
    model.write_text(text)
    machines = [
        subprocess.Popen(
            [*LAMINAE, "tune", str(model), "small", "--storage", postgres_url, "--out", str(tmp_path / name), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("machine-a", "machine-b")
    ]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    for machine, (out, err) in zip(machines, outputs):
        assert machine.returncode == 0, err
    kept = counted_trials(trials_of(postgres_url), 20)
    assert sorted(t.number for t in kept) == list(range(20))  # one study, no trial number twice
    assert all(t.state.name == "COMPLETE" for t in kept)
    ran = {name: sorted(int(p.name) for p in (tmp_path / name / "trials").glob("*")) for name in ("machine-a", "machine-b")}
    assert sorted(ran["machine-a"] + ran["machine-b"]) == list(range(20))  # the count is the sum of both
    assert ran["machine-a"] and ran["machine-b"]  # and both took part
    assert {t.user_attrs["run_dir"].split("/trials/")[0].rsplit("/", 1)[1] for t in kept} == {"machine-a", "machine-b"}


@contextlib.contextmanager
def in_training(model, url, out) -> Iterator[subprocess.Popen]:
    """``laminae tune`` on ``url``, once its first trial has trained an epoch."""
    with tune_process(model, "small", "--storage", url, "--out", out, "--quiet") as command:
        wait_for(lambda: trials_in_training(out, 1), "trial in training", command)
        yield command


def kill(command: subprocess.Popen) -> datetime.datetime:
    """SIGKILL, which leaves no clean-up to anyone; the time of the kill."""
    os.killpg(command.pid, signal.SIGKILL)
    killed = datetime.datetime.now()
    command.wait(timeout=10)
    return killed


def test_the_heartbeat_of_another_machine_fails_a_killed_machines_trial(tmp_path, postgres_url):
    """Machine A is killed mid-trial; machine B, running trials all along, fails A's
    trial by Optuna's heartbeat sweep once A has been silent for the grace period."""
    slow = write_model(tmp_path, with_tune(trials=2, epochs=1000, **BEATING), "slow.toml")
    fast = write_model(tmp_path, with_tune(trials=10000, epochs=1, **BEATING), "fast.toml")
    with in_training(slow, postgres_url, tmp_path / "machine-a") as machine_a:
        with in_training(fast, postgres_url, tmp_path / "machine-b") as machine_b:
            study = optuna.load_study(study_name="small", storage=postgres_url)
            wait_for(lambda: study.get_trials(states=[optuna.trial.TrialState.COMPLETE]), "trial of B complete", machine_b)
            killed = kill(machine_a)
            wait_for(lambda: study.get_trials(states=[optuna.trial.TrialState.FAIL]), "failed trial", machine_b, timeout=30)
            os.killpg(machine_b.pid, signal.SIGINT)
            stdout, stderr = machine_b.communicate(timeout=60)
    assert machine_b.returncode == 130 and stderr == ""
    lost = study.get_trials()[0]
    assert lost.state.name == "FAIL" and lost.user_attrs["run_dir"].endswith("machine-a/trials/0000")
    assert (lost.datetime_complete - killed).total_seconds() >= 3 - 1  # silent for the grace, less at most one beat
    assert re.fullmatch(r"trial 0 failed \(\d+/10000\): .*", next(line for line in stdout.splitlines() if line.startswith("trial 0 ")))


def test_a_trial_left_running_in_a_full_study_is_failed_by_the_next_run(tmp_path, postgres_url):
    """A killed machine's trial fills the study: no worker starts another trial to
    sweep it, so the next command sweeps it before running any."""
    model = write_model(tmp_path, with_tune(trials=1, epochs=1000, **BEATING))
    with in_training(model, postgres_url, tmp_path / "machine-a") as machine_a:
        killed = kill(machine_a)
    study = optuna.load_study(study_name="small", storage=postgres_url)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    time.sleep(max(0.0, 3 + 1 - (datetime.datetime.now() - killed).total_seconds()))
    again = tune_command(model, "small", "--storage", postgres_url, "--out", tmp_path / "machine-b", "--quiet")
    assert again.returncode == 0 and again.stderr == ""
    lines = again.stdout.splitlines()
    assert lines[0] == "trial 0 failed: its worker went silent for over 3 s (no heartbeat)"
    assert "already has its 1 trials" in lines[1]
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]
