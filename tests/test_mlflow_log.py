"""The ``mlflow`` logger against a real MLflow tracking server and local stores, read back through MLflow's client.

The module starts one ``mlflow server`` (SQLite backend store, artifacts
served by the server) on a free port of 127.0.0.1, in its own process
group, and kills the group at the end.  The test extra installs the full
``mlflow`` package for it; the tests that need no MLflow at all (a missing
package, the HTTP bounds) run without it.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

import laminae
from laminae.cli import main
from laminae.plugins.mlflow_log import HTTP_DEFAULTS, RUN_FILE, bounded_http
from laminae.training.metrics import EpochMetrics
from tests.training_helpers import LossSpy, params_equal, tiny_data, tiny_model
from tests.tune_helpers import SMALL, tune_command, with_tune, write_model

SERVER_START_SECONDS = 180
"""How long the server may take to answer /health (about 15 s on a loaded two-core machine)."""


def free_port() -> int:
    """A port of 127.0.0.1 that nobody listens on (nor will, unless someone picks it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` with a SQLite store: its URL, for the module's tests."""
    pytest.importorskip("mlflow")  # CI installs it through the test extra
    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
        "--workers", "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes: starts faster
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_health(url, process, root / "server.log")
        yield url
    finally:
        stop_group(process)


def wait_for_health(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"mlflow server ended with status {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"mlflow server silent for {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and its uvicorn worker), SIGKILL to what is left after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reaps the leader once it ends, so that it no longer counts
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def client(uri: str):
    mlflow = pytest.importorskip("mlflow")
    return mlflow.MlflowClient(tracking_uri=uri)


def kept_run_ids(run_dir: Path) -> list[str]:
    return [entry["run_id"] for entry in json.loads((run_dir / RUN_FILE).read_text())["runs"]]


def histories(store, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) pairs, in step order."""
    return {key: sorted((m.step, m.value) for m in store.get_metric_history(run_id, key)) for key in keys}


def logged_rows(run_dir: Path, logged: dict[str, list[tuple[int, float]]]) -> list[list[str]]:
    """``metrics.csv``'s rows as the logged values print them, through ``metrics.csv``'s own formats."""
    rows = []
    for index, (epoch, _) in enumerate(logged["train_loss"]):
        values = {"val_accuracy": None, "test_accuracy": None} | {key: pairs[index][1] for key, pairs in logged.items()}
        rows.append(EpochMetrics(epoch=epoch, **values).row())
    return rows


def csv_rows(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    header, *rows = (run_dir / "metrics.csv").read_text().splitlines()
    return header.split(","), [row.split(",") for row in rows]


def measured(run_dir: Path) -> set[str]:
    """The metrics.csv columns that hold figures (the epoch number aside)."""
    header, rows = csv_rows(run_dir)
    return {key for position, key in enumerate(header) if key != "epoch" and rows[0][position] != ""}


def test_lenet_for_one_epoch_reads_back_through_mlflows_own_client(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # the logger's default: MLflow's own resolution
    monkeypatch.chdir(tmp_path)
    code = main(["train", "lenet", "--epochs", "1", "--dataset", "mnist-sample", "--out", "run", "--log", "mlflow",
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and "warning" not in err, err
    run_dir = tmp_path / "run"
    [run_id] = kept_run_ids(run_dir)
    store = client(server)
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert store.get_experiment(run.info.experiment_id).name == "lenet"

    spec = json.loads((run_dir / "spec.json").read_text())
    params = run.data.params
    assert params["optimizer.lr"] == str(spec["optimizer"]["lr"]) == "0.05"
    assert params["optimizer.momentum"] == "0.9" and params["train.batch_size"] == "64"
    assert params["train.dataset"] == "mnist-sample" and params["train.augment"] == "[]"
    layers = spec["layers"]
    assert [params[f"layers.{i}.type"] for i in range(len(layers))] == [layer["type"] for layer in layers]
    assert params["layers.0.filters"] == "6" and params["input.1"] == "28"
    assert not [key for key in params if key.startswith("layers.") and int(key.split(".")[1]) >= len(layers)]

    tags = run.data.tags
    assert (tags["laminae.model"], tags["laminae.dataset"]) == ("lenet", "mnist-sample")
    assert tags["laminae.status"] == "finished"
    assert tags["laminae.run_dir"] == str(run_dir.resolve()) and tags["laminae.version"] == version("laminae")
    assert tags["laminae.samples.train"] == "5000" and "laminae.onnx" not in tags

    keys = measured(run_dir)
    assert keys == {"train_loss", "train_accuracy", "test_accuracy", "lr", "seconds"}
    logged = histories(store, run_id, keys)
    assert all([step for step, _ in pairs] == [1] for pairs in logged.values()), logged  # one value, step = epoch
    header, rows = csv_rows(run_dir)
    assert logged_rows(run_dir, logged) == rows

    listed = {artifact.path for artifact in store.list_artifacts(run_id)}
    assert listed == {"model.npz", "metrics.csv", "spec.json", "model.onnx", "summary.txt"}
    downloaded = Path(store.download_artifacts(run_id, "model.npz", str(tmp_path)))
    assert downloaded.read_bytes() == (run_dir / "model.npz").read_bytes()
    summary = Path(store.download_artifacts(run_id, "summary.txt", str(tmp_path))).read_text()
    assert summary == laminae.load(run_dir).network.summary()
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.load(store.download_artifacts(run_id, "model.onnx", str(tmp_path))))


LOCAL = '''
[models.net]
input = [1, 28, 28]
layers = [{{ type = "affine", units = 10 }}]
loss = "softmax_cross_entropy"
optimizer = {{ type = "sgd", lr = 0.05 }}
train = {{ dataset = "mnist-sample", epochs = 2, batch_size = 100, log = [{log}] }}
'''


def local_model(tmp_path: Path, log: str) -> Path:
    path = tmp_path / "net.toml"
    path.write_text(textwrap.dedent(LOCAL.format(log=log)))
    return path


@pytest.mark.parametrize("store", ["sqlite", "folder"])
def test_a_local_store_and_the_loggers_fields_from_the_model_file(store, tmp_path, monkeypatch, capsys):
    """No server: MLflow's default local store (a SQLite file), and a folder store,
    which MLflow 3 keeps only for those who set MLFLOW_ALLOW_FILE_STORE."""
    pytest.importorskip("mlflow")
    if store == "folder":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    else:
        uri = f"sqlite:///{tmp_path / 'local.db'}"
    log = (f'{{ type = "mlflow", tracking_uri = "{uri}", experiment = "digits", run_name = "first",'
           ' tags = { team = "vision" }, artifacts = false }')
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(local_model(tmp_path, log)), "net", "--out", "run", "--quiet"]) == 0, capsys.readouterr()
    assert "warning" not in capsys.readouterr().err
    [run_id] = kept_run_ids(tmp_path / "run")
    local = client(uri)
    run = local.get_run(run_id)
    assert local.get_experiment(run.info.experiment_id).name == "digits"
    assert (run.info.run_name, run.info.status, run.data.tags["team"]) == ("first", "FINISHED", "vision")
    assert run.data.params["train.log.0.experiment"] == "digits"
    logged = histories(local, run_id, measured(tmp_path / "run"))
    assert all([step for step, _ in pairs] == [1, 2] for pairs in logged.values())
    assert logged_rows(tmp_path / "run", logged) == csv_rows(tmp_path / "run")[1]
    assert local.list_artifacts(run_id) == []  # artifacts = false


def test_a_new_sqlite_store_is_made_without_a_word_on_stderr(tmp_path):
    """MLflow announces at INFO that it made a SQLite store's tables (two lines
    in the middle of the run's output); the logger keeps them down for its start."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    path = local_model(tmp_path, f'{{ type = "mlflow", tracking_uri = "{uri}", artifacts = false }}')
    done = subprocess.run([sys.executable, "-m", "laminae", "train", str(path), "net", "--out", str(tmp_path / "run"),
                           "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.startswith("test accuracy:")
    assert (tmp_path / "fresh.db").is_file()


def test_a_store_mlflow_cannot_open_refuses_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    path = local_model(tmp_path, '{ type = "mlflow", tracking_uri = "nosuch://tracker" }')
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path), "net", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"laminae train: error: {path}: model 'net': logger 'mlflow' (train.log 0, from plugin"
                             " 'laminae.plugins.mlflow_log'): cannot track to 'nosuch://tracker': ")
    assert not (tmp_path / "run" / "model.npz").exists()


def test_a_deleted_experiment_refuses_the_run_in_one_line(server, registry, tmp_path):
    store = client(server)
    store.delete_experiment(store.create_experiment("gone"))
    logger = registry.create("loggers", {"type": "mlflow", "tracking_uri": server, "experiment": "gone"})
    model = tiny_model(registry)
    model.loss = spy = LossSpy(model.loss)
    with pytest.raises(laminae.LaminaeError, match=r"^logger 'mlflow' \(from plugin 'laminae.plugins.mlflow_log'\):"
                       r" experiment 'gone' of 'http://127.0.0.1:\d+' is deleted: restore it"):
        model.fit(*tiny_data(), progress=False, run_dir=tmp_path / "run", loggers=[logger])
    assert spy.calls == 0


@pytest.mark.parametrize(("log", "message"), [
    ('{ type = "mlflow", tags = { team = 3 } }', "log 0 (mlflow): 'tags.team' must be a string, got 3 (int)"),
    ('{ type = "mlflow", tags = "vision" }', "log 0 (mlflow): 'tags' must be a table of strings, got 'vision' (str)"),
    ('{ type = "mlflow", artifacts = 1 }', "log 0 (mlflow): 'artifacts' must be true or false, got 1 (int)"),
    ('{ type = "mlflow", experimnt = "x" }', "log 0 (mlflow): unknown key 'experimnt'; did you mean 'experiment'?"),
])
def test_a_wrong_mlflow_table_is_one_line_from_check_which_needs_no_mlflow(tmp_path, monkeypatch, capsys, log, message):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # checking a file only builds the logger: no import, no connection
    good = local_model(tmp_path, '{ type = "mlflow", tracking_uri = "http://127.0.0.1:9", tags = { team = "vision" } }')
    assert main(["check", str(good)]) == 0, capsys.readouterr()
    capsys.readouterr()
    bad = local_model(tmp_path, log)
    assert main(["check", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert len((out + err).strip().splitlines()) == 1 and "model 'net'" in out + err
    assert message in out + err, out + err


def test_an_interrupted_run_resumes_the_same_mlflow_run(server, registry, tmp_path, capsys):
    path = local_model(tmp_path, f'{{ type = "mlflow", tracking_uri = "{server}", experiment = "resumed" }}')
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 3"))
    model = laminae.from_toml(path, "net", registry=registry)
    model.loss = LossSpy(model.loss, at=70)  # SIGINT in the second epoch (50 batches each)
    splits = registry.create("datasets", "mnist-sample").load([])
    run_dir = tmp_path / "run"
    first = model.fit(splits.train.x, splits.train.y, test_data=(splits.test.x, splits.test.y), progress=False,
                      run_dir=run_dir)
    assert first.interrupted and len(first.history) == 1
    [run_id] = kept_run_ids(run_dir)
    store = client(server)
    killed = store.get_run(run_id)
    assert (killed.info.status, killed.data.tags["laminae.status"], killed.data.tags["laminae.reason"]) == (
        "KILLED", "interrupted", "SIGINT")
    assert [m.step for m in store.get_metric_history(run_id, "train_loss")] == [1]

    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert kept_run_ids(run_dir) == [run_id]
    finished = store.get_run(run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["laminae.resumed_at_epoch"] == "1"
    logged = histories(store, run_id, measured(run_dir))
    assert all([step for step, _ in pairs] == [1, 2, 3] for pairs in logged.values()), logged  # none twice
    assert logged_rows(run_dir, logged) == csv_rows(run_dir)[1]
    experiment = store.get_experiment_by_name("resumed").experiment_id
    assert [r.info.run_id for r in store.search_runs([experiment])] == [run_id]  # no second run


def test_a_server_that_is_down_costs_one_warning_line_and_seconds(registry, tmp_path, monkeypatch, capsys):
    """MLflow's own retries hold a run about 250 s on a closed port; the logger's, seconds."""
    pytest.importorskip("mlflow")
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    x, y = tiny_data()
    quiet, noisy = tiny_model(registry), tiny_model(registry)
    started = time.perf_counter()
    quiet.fit(x, y, progress=False)
    alone = time.perf_counter() - started
    logger = registry.create("loggers", {"type": "mlflow", "tracking_uri": f"http://127.0.0.1:{free_port()}"})
    started = time.perf_counter()
    result = noisy.fit(x, y, progress=False, run_dir=tmp_path / "run", loggers=[logger])
    delay = time.perf_counter() - started - alone
    assert len(result.history) == 3 and params_equal(quiet.network, noisy.network)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("laminae: warning: logger 'mlflow' (from plugin 'laminae.plugins.mlflow_log') failed at"
                             " the run's start: MlflowException: ")
    assert "Connection refused" in err[0] and err[0].endswith("training goes on without it")
    assert delay < 30, f"a closed port held the run {delay:.1f} s"
    assert not [name for name in HTTP_DEFAULTS if name in os.environ]  # nothing left behind


def test_the_http_bounds_hold_only_while_the_logger_calls_and_yield_to_the_users(monkeypatch):
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    with bounded_http():
        inside = {name: os.environ.get(name) for name in HTTP_DEFAULTS}
    assert inside == {**HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    assert {name: os.environ.get(name) for name in HTTP_DEFAULTS} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": None, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
    }


def test_without_mlflow_the_run_is_refused_in_one_line_saying_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if laminae[mlflow] were not installed
    path = local_model(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path), "net", "--out", "run", "--log", "mlflow"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"laminae train: error: {path}: model 'net': logger 'mlflow' (from plugin 'laminae.plugins.mlflow_log'):"
        " MLflow tracking needs mlflow: pip install 'laminae[mlflow]'"
    ]
    assert not (tmp_path / "run" / "model.npz").exists()


def test_tune_nests_each_trial_under_one_run_of_the_study(server, tmp_path, monkeypatch):
    """Two worker processes start a trial each at once: both look for the study's run, and share one."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    model = write_model(tmp_path, with_tune(SMALL, trials=2, epochs=1, pruner='"none"'))
    done = tune_command(model, "small", "--workers", 2, "--out", tmp_path / "study", "--quiet", "--log", "mlflow")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    optuna = pytest.importorskip("optuna")
    trials = optuna.load_study(study_name="small", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study" / "journal.log")))).get_trials()
    store = client(server)
    experiment = store.get_experiment_by_name("small").experiment_id
    [study] = store.search_runs([experiment], "tags.`laminae.study` = 'small'")
    assert (study.info.run_name, study.info.status) == ("small", "FINISHED")
    children = store.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{study.info.run_id}'")
    assert len(store.search_runs([experiment])) == 3  # the study and its two trials, nothing else
    by_trial = {int(run.data.tags["laminae.trial"]): run for run in children}
    assert sorted(by_trial) == [0, 1] == sorted(t.number for t in trials)
    for trial in trials:
        run = by_trial[trial.number]
        assert run.info.run_name == f"trial {trial.number}" and run.info.status == "FINISHED"
        assert run.data.tags["laminae.trial_of"] == "small"
        assert {path: run.data.params[path] for path in trial.params} == {
            path: json.dumps(value) for path, value in trial.params.items()}
        assert [m.step for m in store.get_metric_history(run.info.run_id, "train_loss")] == [1]


def test_tune_log_names_a_logger_or_is_one_line(tmp_path, capsys):
    pytest.importorskip("optuna")
    model = write_model(tmp_path)
    assert main(["tune", str(model), "small", "--out", str(tmp_path / "study"), "--log", "mlfow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"laminae tune: error: {model}: model 'small': --log: ")
    assert "did you mean 'mlflow'?" in err[0]
    assert not (tmp_path / "study").exists()
