"""Two ``laminae tune`` processes, as two machines would, share one study on a real PostgreSQL server.

pgserver ships PostgreSQL's binaries as a wheel (the test extra installs
it), so no system package is needed.  Run as root (CI, containers),
PostgreSQL refuses to start; pgserver then creates a system user
``pgserver`` (with ``useradd``) and runs the server as that user.
"""
from __future__ import annotations

import subprocess

import optuna
import pgserver
import pytest

from tests.tune_helpers import LAMINAE, write_model


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
    trials = optuna.load_study(study_name="small", storage=postgres_url).get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(20))  # one study, no trial number twice
    assert all(t.state.name == "COMPLETE" for t in trials)
    ran = {name: sorted(int(p.name) for p in (tmp_path / name / "trials").glob("*")) for name in ("machine-a", "machine-b")}
    assert sorted(ran["machine-a"] + ran["machine-b"]) == list(range(20))  # the count is the sum of both
    assert ran["machine-a"] and ran["machine-b"]  # and both took part
    assert {t.user_attrs["run_dir"].split("/trials/")[0].rsplit("/", 1)[1] for t in trials} == {"machine-a", "machine-b"}
