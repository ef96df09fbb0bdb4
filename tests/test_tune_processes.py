"""``laminae tune --workers 2`` as real processes: Ctrl-C, a worker killed mid-trial, plugin keys.

Trials that must still be running when the test acts train for many
epochs; the test acts once each has finished one, and stops them.
"""
from __future__ import annotations

import os
import signal

import optuna

import laminae
from laminae.tuning.storage import counted
from tests.tune_helpers import (
    SMALL,
    epochs_logged,
    journal,
    trials_in_training,
    trials_of,
    tune_command,
    tune_process,
    wait_for,
    with_tune,
    write_model,
)


def test_ctrl_c_across_two_workers_interrupts_their_trials_and_exits_130(tmp_path):
    """SIGINT to the command's process group, as a terminal sends it: the command passes
    it on, each worker stops after its batch, and its trial is interrupted, not counted."""
    model, out = write_model(tmp_path, with_tune(trials=4, epochs=1000, pruner='"none"')), tmp_path / "study"
    with tune_process(model, "small", "--workers", 2, "--out", out, "--quiet") as command:
        running = wait_for(lambda: trials_in_training(out, 2), "two trials in training", command)
        os.killpg(command.pid, signal.SIGINT)
        stdout, stderr = command.communicate(timeout=60)
    assert command.returncode == 130, stderr
    assert stderr == ""
    assert "interrupted: 0 of 4 trials finished; run the same command to resume" in stdout.splitlines()
    trials = trials_of(journal(out))
    assert [t.number for t in trials] == running == [0, 1]
    for trial in trials:
        assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"]
        assert 1 <= len(epochs_logged(out / "trials" / f"{trial.number:04d}")) < 1000  # stopped mid-training
    assert counted(optuna.load_study(study_name="small", storage=journal(out))) == 0  # the next run trains 4
    listed = tune_command(model, "small", "--out", out, "--list").stdout.splitlines()
    assert sorted(row.split()[:2] for row in listed[1:]) == [["0", "interrupted"], ["1", "interrupted"]]


def test_a_worker_killed_mid_trial_fails_its_trial_at_once_and_the_others_finish(tmp_path):
    """SIGKILL leaves no clean-up to the worker: the command sees it die, fails its
    trial with the reason in one line while the other worker trains on, and the
    study ends with its trials."""
    model, out = write_model(tmp_path, with_tune(trials=3, epochs=25, pruner='"none"')), tmp_path / "study"
    with tune_process(model, "small", "--workers", 2, "--out", out, "--quiet") as command:
        victim, survivor = wait_for(lambda: trials_in_training(out, 2), "two trials in training", command)
        pid = int(next(t for t in trials_of(journal(out)) if t.number == victim).user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 0, stderr
    trials = {t.number: t for t in trials_of(journal(out))}
    assert sorted(trials) == [0, 1, 2]
    killed = trials[victim]
    assert killed.state.name == "FAIL" and killed.user_attrs["error"] == "its worker process was killed by SIGKILL"
    assert [trials[n].state.name for n in sorted(trials) if n != victim] == ["COMPLETE", "COMPLETE"]
    assert killed.datetime_complete < trials[survivor].datetime_complete  # failed while the other still trained
    about_it = [line for line in stdout.splitlines() if line.startswith(f"trial {victim} ")]
    assert about_it == [f"trial {victim} failed (1/3): its worker process was killed by SIGKILL"]
    assert "test accuracy of best trial" in stdout


EXTRAS_MODEL = SMALL.replace(
    'optimizer = { type = "sgd", lr = 0.1 }',
    'optimizer = { type = "sgd", lr = 0.1, schedule = { type = "cosine_restarts", period = 1.0 } }',
).replace(
    'train = { dataset = "mnist-sample", epochs = 2, batch_size = 64, seed = 0 }',
    'train = { dataset = "mnist-sample", epochs = 2, batch_size = 64, seed = 0, augment = [{ type = "gaussian_noise", std = 0.1 }] }',
)
EXTRAS_SPACE = """\
space."optimizer.schedule.period" = { type = "float", low = 0.25, high = 2.0 }
space."train.augment.0.std" = { type = "float", low = 0.01, high = 0.3 }
"""


def test_two_workers_tune_a_schedule_and_a_transform_of_an_installed_plugin_package(tmp_path):
    """laminae-extras, installed as a package, registers cosine_restarts and gaussian_noise
    through its entry point; their keys are searched like built-in ones."""
    registry = laminae.make_registry()
    assert registry.owner("schedules", "cosine_restarts") == registry.owner("transforms", "gaussian_noise") == "extras"
    text = with_tune(EXTRAS_MODEL.split("space.")[0], trials=4, epochs=1, pruner='"none"', sampler='"random"') + EXTRAS_SPACE
    model, out = write_model(tmp_path, text), tmp_path / "study"
    result = tune_command(model, "small", "--workers", 2, "--out", out, "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    trials = trials_of(journal(out))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    for trial in trials:  # each trial trained with its own values
        spec = laminae.load(trial.user_attrs["run_dir"]).spec
        assert spec["optimizer"]["schedule"] == {"type": "cosine_restarts", "period": trial.params["optimizer.schedule.period"]}
        assert spec["train"]["augment"] == [{"type": "gaussian_noise", "std": trial.params["train.augment.0.std"]}]
    assert len({t.params["train.augment.0.std"] for t in trials}) == 4
    best = optuna.load_study(study_name="small", storage=journal(out)).best_params
    assert set(best) == {"optimizer.schedule.period", "train.augment.0.std"}
    spec = laminae.from_toml(out / "best.toml", "small").spec
    assert spec["optimizer"]["schedule"]["period"] == best["optimizer.schedule.period"]
    assert spec["train"]["augment"][0]["std"] == best["train.augment.0.std"]
