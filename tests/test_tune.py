"""``laminae tune`` on the bundled MNIST sample: workers, resuming, pruning, failed trials, bad tables."""
from __future__ import annotations

import os
import re
import socket
import sys
import textwrap
import tomllib
from pathlib import Path

import optuna
import pytest

import laminae
from laminae.errors import LaminaeError
from laminae.cli import main
from laminae.tuning import tune
from laminae.tuning.paths import check_path, value_at, with_values
from laminae.tuning.study import read_model
from laminae.tuning.table import read_tune_table
from laminae.tuning.report import table
from laminae.tuning.trials import Objective, StopFlag, StudySetup
from laminae.tuning.workers import fail_orphans
from tests.tune_helpers import SMALL, counted_trials, epochs_logged, journal, logged_test_accuracies, trials_of, tune_command, write_model

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_share_the_journal_and_a_second_run_resumes(tmp_path):
    model, out = write_model(tmp_path), tmp_path / "study"
    first = tune_command(model, "small", "--workers", 2, "--out", out, "--quiet")
    assert first.returncode == 0, first.stderr
    trials = counted_trials(trials_of(journal(out)), 6)
    states = [t.state.name for t in trials]
    assert sorted(t.number for t in trials) == list(range(6))
    assert states.count("COMPLETE") + states.count("PRUNED") == 6 and states.count("COMPLETE") >= 2
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    for trial in trials:  # each trial trained once, in its own run directory, never on the test set
        run_dir = out / "trials" / f"{trial.number:04d}"
        assert epochs_logged(run_dir) == list(range(1, trial.user_attrs["epochs"] + 1))
        assert (run_dir / "model.npz").exists()
        assert set(logged_test_accuracies(run_dir)) == {""}
        assert trial.user_attrs["epochs"] == (2 if trial.state.name == "COMPLETE" else max(trial.intermediate_values))
    lines = first.stdout.splitlines()
    assert sum(bool(re.match(r"trial \d+ (complete|pruned) \(\d/6\): val_accuracy ", line)) for line in lines) == 6
    assert any(line.startswith("test accuracy of best trial") for line in lines)

    best = out / "best.toml"
    assert "# The best trial" in best.read_text()
    trained = laminae.from_toml(best, "small")
    assert trained.spec["layers"][0]["units"] == optuna.load_study(study_name="small", storage=journal(out)).best_params["layers.0.units"]
    assert main(["train", str(best), "small", "--epochs", "1", "--out", str(tmp_path / "best-run"), "--quiet"]) == 0

    again = tune_command(model, "small", "--out", out, "--quiet")
    assert again.returncode == 0 and "already has its 6 trials" in again.stdout
    more = tune_command(model, "small", "--trials", 8, "--out", out, "--quiet")
    assert more.returncode == 0, more.stderr
    resumed = counted_trials(trials_of(journal(out)), 6)  # a surplus trial of the first run keeps its number
    assert len(resumed) == 8 and [t.number for t in resumed[:6]] == list(range(6))
    assert [t.params for t in resumed[:6]] == [t.params for t in trials]

    listed = tune_command(model, "small", "--out", out, "--list")
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["trial", "state", "val_accuracy"] and len(rows) == 9
    values = [float(row.split()[2]) for row in rows[1:] if row.split()[1] == "complete"]
    assert values == sorted(values, reverse=True)


def test_one_python_call_prunes_records_failures_and_tunes_a_plugin_key(tmp_path):
    """laminae-extras' spatial dropout ``rate`` is searched like a built-in key; a kernel
    larger than its input fails that trial, in one line, and the study goes on."""
    doc = tomllib.loads(SMALL.replace('{ type = "relu" },', '{ type = "relu" },\n  { type = "spatial_dropout", rate = 0.1 },'))
    doc["models"]["small"]["layers"].insert(0, {"type": "conv", "filters": 2, "size": 3})
    doc["models"]["small"]["tune"].update(trials=8, sampler="random", startup_trials=1, baseline=True)
    doc["models"]["small"]["tune"]["space"] = {
        "optimizer.lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
        "layers.3.rate": {"type": "float", "low": 0.0, "high": 0.5},
        "layers.0.size": {"type": "choice", "choices": [3, 40]},
    }
    lines: list[str] = []
    result = tune(doc, "small", out=tmp_path / "study", show=lines.append, bar=False)
    trials = trials_of(journal(tmp_path / "study"))
    states = [t.state.name for t in trials]
    assert len(trials) == result.trials == 8 and states[0] == "COMPLETE"
    assert trials[0].params == {"optimizer.lr": 0.1, "layers.3.rate": 0.1, "layers.0.size": 3}  # the baseline
    assert "PRUNED" in states and "FAIL" in states
    for trial in trials:
        if trial.state.name == "FAIL":
            assert trial.params["layers.0.size"] == 40
            assert trial.user_attrs["error"].startswith("<dict>: model 'small', layer 0 (conv): ")
            assert "\n" not in trial.user_attrs["error"]
    assert {t.params["layers.3.rate"] for t in trials} != {0.1}
    assert result.best_trial is not None and 0 < result.test_accuracy <= 1
    assert sum(line.startswith(f"trial {t.number} ") for line in lines for t in trials) == 8


BAD_TABLES = [
    ('space."optimizer.lrr" = { type = "float", low = 0.01, high = 0.1 }',
     "space 'optimizer.lrr': 'optimizer' (sgd) has no key 'lrr'; did you mean 'lr'?"),
    ('space."layers.7.units" = { type = "int", low = 1, high = 9 }',
     "space 'layers.7.units': 'layers' has 3 entries (0 to 2), not '7'"),
    ('space."optimizer.lr" = { type = "float", low = 0.5, high = 0.1 }',
     "space 'optimizer.lr': 'low' 0.5 is above 'high' 0.1"),
    ('sampler = "tpee"\nspace."optimizer.lr" = { type = "float", low = 0.01, high = 0.1 }',
     "'sampler' must be one of 'tpe', 'random', 'grid', got 'tpee' (str)"),
    ('pruner = "mediun"\nspace."optimizer.lr" = { type = "float", low = 0.01, high = 0.1 }',
     "'pruner' must be one of 'median', 'halving', 'none', got 'mediun' (str)"),
    ('trails = 3\nspace."optimizer.lr" = { type = "float", low = 0.01, high = 0.1 }',
     "unknown key 'trails'; did you mean 'trials'?"),
    ('metric = "test_accuracy"\nspace."optimizer.lr" = { type = "float", low = 0.01, high = 0.1 }',
     "'metric' must be one of 'val_accuracy', 'val_loss', got 'test_accuracy' (str)"),
    ('space."optimizer.lr" = { type = "floot", low = 0.01, high = 0.1 }',
     "space 'optimizer.lr': 'type' must be one of 'float', 'int', 'choice', got 'floot'"),
    ('space."train.batch_size" = { type = "choice", choices = [] }',
     "space 'train.batch_size': 'choices' must be a non-empty list"),
    ('baseline = true\nspace."optimizer.lr" = { type = "float", low = 0.2, high = 0.3 }',
     "space 'optimizer.lr': the model's own value 0.1 lies outside the space"),
    ('sampler = "grid"\nspace."optimizer.lr" = { type = "float", low = 0.2, high = 0.3 }',
     "space 'optimizer.lr': the grid sampler needs a 'step'"),
    ("trials = 3", "missing required key 'space'"),
    ('grace_seconds = 5\nspace."optimizer.lr" = { type = "float", low = 0.01, high = 0.1 }',
     "'grace_seconds' 5 must be above 'heartbeat_seconds' 10 (a live worker's trial would be failed between its beats)"),
]


@pytest.mark.parametrize(("table", "expected"), BAD_TABLES, ids=[e.split(":")[0][:30] for _t, e in BAD_TABLES])
def test_a_bad_tune_table_is_one_line_naming_file_model_and_key(capsys, tmp_path, table, expected):
    model = write_model(tmp_path, SMALL.split("[models.small.tune]")[0] + "[models.small.tune]\n" + table + "\n")
    assert main(["tune", str(model), "small", "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"laminae tune: error: {model}: model 'small', tune")
    assert expected in err[0]
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(("table", "expected"), BAD_TABLES, ids=[e.split(":")[0][:30] for _t, e in BAD_TABLES])
def test_check_reads_a_tune_table_as_tune_does_without_optuna(capsys, monkeypatch, tmp_path, table, expected):
    model = write_model(tmp_path, SMALL.split("[models.small.tune]")[0] + "[models.small.tune]\n" + table + "\n")
    assert main(["tune", str(model), "small", "--out", str(tmp_path / "study")]) == 2
    tuned = capsys.readouterr().err.splitlines()
    monkeypatch.setitem(sys.modules, "optuna", None)  # checking a file needs no laminae[tune]
    assert main(["check", str(model)]) == 2
    checked = capsys.readouterr().err.splitlines()
    assert [line.replace("laminae check:", "laminae tune:", 1) for line in checked] == tuned


def test_a_model_without_a_tune_table_says_how_to_add_one(capsys):
    assert main(["tune", str(ROOT / "models.toml"), "quickstart"]) == 2
    assert "model 'quickstart' has no tune table: add [models.quickstart.tune]" in capsys.readouterr().err


def test_without_optuna_the_command_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", str(write_model(tmp_path)), "small"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "laminae tune: error: laminae tune needs optuna: pip install 'laminae[tune]'"
    ]


def test_lenet_carries_a_valid_tune_table_that_stays_out_of_its_spec(registry):
    name, spec, table = read_model(ROOT / "models.toml", "lenet", registry)
    assert set(table.space) == {"optimizer.lr", "optimizer.momentum", "train.batch_size"}
    assert table.baseline and table.metric == "val_accuracy" and table.direction == "maximize"
    assert "tune" not in spec and "tune" not in laminae.from_toml(ROOT / "models.toml", "lenet", registry=registry).spec


def test_dotted_paths_reach_defaults_and_refuse_what_is_not_there(registry):
    spec = laminae.from_toml(ROOT / "models.toml", "lenet", registry=registry).spec
    assert value_at(spec, "layers.0.filters", registry) == 6
    assert value_at(spec, "layers.0.stride", registry) == 1  # not written in the file: the conv's default
    assert value_at(spec, "layers.2.stride", registry) == 2  # a default computed from the pool's own size
    assert with_values(spec, {"layers.0.stride": 2, "optimizer.lr": 0.1})["layers"][0]["stride"] == 2
    assert spec["layers"][0].get("stride") is None  # the spec itself is not changed
    with pytest.raises(laminae.SpecError, match=r"^layer 1 \(relu\) has no key 'units'"):
        check_path(spec, "layers.1.units", registry)
    with pytest.raises(laminae.SpecError, match=r"^'optimizer.lr' is a single value"):
        check_path(spec, "optimizer.lr.x", registry)
    with pytest.raises(laminae.SpecError, match=r"^the model has no key 'input'"):
        check_path(spec, "input.0", registry)


def test_dotted_paths_reach_every_kind_of_component_by_its_own_class(registry):
    """Each kind is found where the registry's spec keys put it: a schedule's,
    a transform's and a logger's keys are their classes' fields, defaults too."""
    spec = laminae.from_toml(ROOT / "models.toml", "mnist_best", registry=registry, train_overrides={
        "log": [{"type": "tensorboard"}, {"type": "mlflow", "experiment": "digits"}],
    }).spec
    assert value_at(spec, "optimizer.schedule.warmup_epochs", registry) == 1
    assert value_at(spec, "train.augment.0.pixels", registry) == 2
    assert value_at(spec, "train.log.0.flush_secs", registry) == 1.0  # the tensorboard logger's default
    assert value_at(spec, "train.log.1.experiment", registry) == "digits"
    assert with_values(spec, {"train.log.0.flush_secs": 5.0})["train"]["log"][0]["flush_secs"] == 5.0
    with pytest.raises(laminae.SpecError, match=r"^'train.log.0' \(tensorboard\) has no key 'flush'; did you mean"):
        check_path(spec, "train.log.0.flush", registry)


def test_ctrl_c_after_a_trials_last_batch_stops_the_study_after_that_trial(tmp_path):
    """The signal lands inside the trial's training but after its last batch
    (here from a logger, at the last epoch's end): the trial is whole and
    counts, and no further trial starts.  It used to vanish, and the study ran on."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "ctrl_c.py").write_text(textwrap.dedent('''
        import os, signal
        import attrs
        from laminae import hookimpl
        from laminae.events import EpochEnded

        @attrs.define
        class CtrlCAtTheEnd:
            def __call__(self, event):
                if isinstance(event, EpochEnded) and event.epoch == 2:
                    os.kill(os.getpid(), signal.SIGINT)

        @hookimpl
        def register_loggers(register):
            register("ctrl_c_at_the_end", CtrlCAtTheEnd)
    '''))
    registry = laminae.make_registry(plugins_dir=tmp_path / "plugins", autoload=False)
    result = tune(write_model(tmp_path), "small", out=tmp_path / "study", registry=registry, show=lambda line: None,
                  bar=False, log=["ctrl_c_at_the_end"])
    assert result.interrupted
    assert [t.state.name for t in trials_of(journal(tmp_path / "study"))] == ["COMPLETE"]


def test_a_trial_left_running_by_a_dead_worker_is_marked_failed(tmp_path):
    """The journal has no heartbeat: the next run fails the trials of this
    machine's processes that are gone, so they do not hold their slot for ever."""
    registry = laminae.make_registry(autoload=False)
    name, spec, table = read_model(write_model(tmp_path), "small", registry)
    study = optuna.create_study(study_name="small", storage=journal(tmp_path), direction="maximize")
    trial = study.ask()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead}")
    alive = study.ask()
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    setup = StudySetup(name, "small.toml", spec, table, registry, None, None, tmp_path)
    assert fail_orphans(study, setup) == ["trial 0 failed: its worker process is gone (killed in an earlier run)"]
    assert [t.state.name for t in trials_of(journal(tmp_path))] == ["FAIL", "RUNNING"]


def test_a_trial_begun_after_the_study_is_full_is_surplus_and_not_counted(tmp_path):
    """Two machines may each ask for a trial when the study holds all but one:
    the later finds the study full, records itself as surplus and stops the
    study, without training, and the listing leaves it out."""
    registry = laminae.make_registry(autoload=False)
    name, spec, table_ = read_model(write_model(tmp_path), "small", registry)
    study = optuna.create_study(study_name="small", storage=journal(tmp_path), direction="maximize")
    for _ in range(table_.trials):  # the other machine's trials, still running
        study.ask()
    setup = StudySetup(name, "small.toml", spec, table_, registry, None, None, tmp_path)
    with StopFlag() as stop:  # as run_worker calls it, had it looked just before the other machine's last ask
        study.optimize(Objective(setup, study, stop), n_trials=3, catch=(LaminaeError,))
    trials = trials_of(journal(tmp_path))
    assert len(trials) == 7 and trials[6].state.name == "FAIL"  # one surplus trial, then the study stopped
    assert [t.number for t in counted_trials(trials, table_.trials)] == list(range(6))
    assert trials[6].user_attrs == {"surplus": True} and not (tmp_path / "trials").exists()
    assert [row.split()[0] for row in table(study, "val_accuracy").splitlines()[1:]] == [str(n) for n in range(6)]


def test_the_tune_table_docs_teach_is_lenets(registry):
    from tests.doc_blocks import blocks

    (documented,) = [b.text for b in blocks((ROOT / "docs" / "tuning.md").read_text()) if b.lang == "toml"]
    _name, spec, table = read_model(ROOT / "models.toml", "lenet", registry)
    raw = tomllib.loads(documented)["models"]["lenet"]["tune"]
    assert read_tune_table(raw, spec, registry, "docs/tuning.md: model 'lenet'") == table


def test_a_study_searches_keys_inside_a_block(tmp_path):
    """Dotted paths go through a residual block to its inner layers; a value that
    breaks the block's shapes fails that trial in one line naming the block."""
    doc = tomllib.loads(SMALL)
    model = doc["models"]["small"]
    model["layers"] = [
        {"type": "conv", "filters": 4, "size": 3, "pad": 1},
        {"type": "residual", "layers": [{"type": "conv", "filters": 4, "size": 3, "pad": 1}, {"type": "batchnorm"}]},
        {"type": "relu"},
        {"type": "pool", "size": 4},
        {"type": "affine", "units": 10},
    ]
    model["tune"].update(trials=4, sampler="random", startup_trials=4, baseline=True)
    model["tune"]["space"] = {
        "layers.1.layers.0.size": {"type": "choice", "choices": [3, 5]},
        "layers.1.layers.1.momentum": {"type": "float", "low": 0.05, "high": 0.5},
    }
    result = tune(doc, "small", out=tmp_path / "study", show=lambda line: None, bar=False)
    trials = trials_of(journal(tmp_path / "study"))
    assert trials[0].params == {"layers.1.layers.0.size": 3, "layers.1.layers.1.momentum": 0.1}  # the baseline
    assert len({t.params["layers.1.layers.1.momentum"] for t in trials}) == 4
    assert {t.params["layers.1.layers.0.size"] for t in trials} == {3, 5}
    for trial in trials:
        if trial.params["layers.1.layers.0.size"] == 5:  # pad 1 shrinks the image: the add cannot fit
            assert trial.state.name == "FAIL"
            assert trial.user_attrs["error"].startswith("<dict>: model 'small', layer 1 (residual): its layers give shape")
        else:
            assert trial.state.name == "COMPLETE"
    assert result.best_trial is not None


def test_the_command_opens_the_study_once_and_each_worker_process_its_own(tmp_path, monkeypatch):
    """The orphan clean-up, the watcher and the report use the study the command
    opened (the failing of a dead worker's trial is given it too); the forked
    workers open theirs (what they count is in their own memory, unseen here)."""
    opened = []

    def counting(open_it):
        def open_and_count(*args, **kwargs):
            opened.append(open_it.__name__)
            return open_it(*args, **kwargs)

        return open_and_count

    monkeypatch.setattr(optuna, "create_study", counting(optuna.create_study))
    monkeypatch.setattr(optuna, "load_study", counting(optuna.load_study))
    doc = tomllib.loads(SMALL)
    doc["models"]["small"]["tune"].update(trials=2, epochs=1)
    result = tune(doc, "small", out=tmp_path / "study", workers=2, show=lambda line: None, bar=False)
    assert opened == ["create_study"]
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials_of(journal(tmp_path / "study"))}
    assert result.trials == 2 and str(os.getpid()) not in workers
