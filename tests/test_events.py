"""Training events as a plugin kind: what a logger hears, and that it never costs a run."""
from __future__ import annotations

import json
import textwrap

import attrs
import numpy as np
import pytest

import laminae
from laminae.cli import main
from laminae.events import BestSaved, EpochEnded, RunEnded, RunStarted
from tests.training_helpers import LossSpy, Recorder, models_file, params_equal, tiny_data, tiny_model, tiny_spec


class Exploding:
    """Raises on every event, as a logger whose server is gone does."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event) -> None:
        self.calls += 1
        raise ConnectionError("tracking server at 127.0.0.1:9 refused the connection")


def split(x, y, n):
    return (x[n:], y[n:]), (x[:n], y[:n])


def test_a_logger_hears_the_start_every_epoch_the_best_and_the_end(registry, tmp_path):
    x, y = tiny_data(samples=300)
    (xt, yt), validation = split(x, y, 60)
    model = tiny_model(registry)
    recorder = Recorder()
    result = model.fit(xt, yt, epochs=3, validation_data=validation, test_data=validation, progress=False,
                       run_dir=tmp_path / "run", loggers=[recorder])
    events = recorder.events
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunEnded)
    start, end = events[0], events[-1]
    assert (start.model, start.dataset, start.epochs, start.resumed_from) == ("tiny", "mnist-sample", 3, None)
    assert start.samples == {"train": 240, "validation": 60, "test": 60}
    assert start.steps_per_epoch == 15 and start.run_dir == tmp_path / "run"
    assert start.spec == model.spec and "affine" in start.summary
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2, 3] and [e.step for e in epochs] == [15, 30, 45]
    for event, row in zip(epochs, result.history):
        assert event.metrics == {k: v for k, v in attrs.asdict(row).items() if k != "epoch" and v is not None}
        assert set(event.metrics) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy",
                                      "lr", "seconds"}
    bests = [e for e in events if isinstance(e, BestSaved)]
    assert bests and bests[0].epoch == 1 and all(b.path == tmp_path / "run" / "best.npz" for b in bests)
    assert [b.epoch for b in bests] == [r.epoch for r in result.history if r.epoch in {b.epoch for b in bests}]
    best_values = [b.value for b in bests]
    assert best_values == sorted(best_values) and best_values[-1] == max(r.val_accuracy for r in result.history)
    # each BestSaved follows the EpochEnded of its own epoch
    for best in bests:
        before = events[events.index(best) - 1]
        assert isinstance(before, EpochEnded) and before.epoch == best.epoch
    assert (end.status, end.epochs, end.reason) == ("finished", 3, "")
    assert end.metrics == epochs[-1].metrics
    assert set(end.files) == {"checkpoint", "best", "metrics", "spec"}
    assert all(path.is_file() for path in end.files.values())


def test_a_logger_that_raises_is_one_warning_line_and_changes_no_number(registry, tmp_path, capsys):
    x, y = tiny_data()
    quiet, noisy = tiny_model(registry), tiny_model(registry)
    quiet.fit(x, y, progress=False)
    capsys.readouterr()
    exploding = Exploding()
    result = noisy.fit(x, y, progress=False, run_dir=tmp_path / "run", loggers=[exploding])
    assert len(result.history) == 3 and not result.interrupted
    assert params_equal(quiet.network, noisy.network)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("laminae: warning: logger Exploding failed at the run's start: ConnectionError")
    assert err[0].endswith("training goes on without it")
    assert exploding.calls == 1  # dropped after its first failure


def test_an_error_at_the_start_refuses_the_run_before_its_first_batch(registry, tmp_path):
    class Refusing:
        def __call__(self, event):
            if isinstance(event, RunStarted):
                raise laminae.LaminaeError("the tracking URI 'nowhere:' names no store")

    x, y = tiny_data()
    model = tiny_model(registry)
    model.loss = spy = LossSpy(model.loss)
    recorder = Recorder()
    with pytest.raises(laminae.LaminaeError, match=r"^logger Refusing: the tracking URI 'nowhere:' names no store$"):
        model.fit(x, y, progress=False, run_dir=tmp_path / "run", loggers=[recorder, Refusing()])
    assert spy.calls == 0
    assert recorder.kinds() == ["RunStarted", "RunEnded"] and recorder.events[-1].status == "failed"


def test_interrupted_resumed_stopped_early_and_failed_runs_are_reported_as_such(registry, tmp_path):
    x, y = tiny_data(samples=300)
    (xt, yt), validation = split(x, y, 60)
    model = tiny_model(registry)
    model.loss = LossSpy(model.loss, at=20)  # SIGINT in the second epoch
    first = Recorder()
    result = model.fit(xt, yt, progress=False, run_dir=tmp_path / "run", loggers=[first])
    assert result.interrupted
    assert first.kinds() == ["RunStarted", "EpochEnded", "RunEnded"]
    assert (first.events[-1].status, first.events[-1].reason, first.events[-1].epochs) == ("interrupted", "SIGINT", 1)

    resumed, state = laminae.load_training(tmp_path / "run", registry=registry)
    second = Recorder()
    resumed.fit(xt, yt, progress=False, run_dir=tmp_path / "run", resume=state, loggers=[second])
    assert second.events[0].resumed_from == 1
    assert [e.epoch for e in second.events if isinstance(e, EpochEnded)] == [2, 3]
    assert [e.step for e in second.events if isinstance(e, EpochEnded)] == [30, 45]
    assert second.events[-1].status == "finished" and second.events[-1].epochs == 3

    patient = laminae.build(tiny_spec(lr=1e-12, epochs=6, validation=60, patience=2), registry=registry)
    third = Recorder()
    patient.fit(xt, yt, validation_data=validation, progress=False, loggers=[third])
    assert third.events[-1].status == "stopped early" and third.events[-1].epochs == 3
    assert third.events[-1].files == {}  # no run directory

    broken = tiny_model(registry)
    broken.loss = LossSpy(broken.loss, at=3, nan=True)
    fourth = Recorder()
    with pytest.raises(laminae.TrainingError):
        broken.fit(xt, yt, progress=False, loggers=[fourth])
    assert fourth.kinds() == ["RunStarted", "RunEnded"]
    assert fourth.events[-1].status == "failed" and "the loss became nan" in fourth.events[-1].reason


def test_loggers_change_no_bit_of_a_run_on_two_slices_interrupted_and_resumed(registry, tmp_path, capsys):
    x, y = tiny_data(samples=300)
    whole = tiny_model(registry)
    whole.fit(x, y, threads=2, progress=False)
    cut = tiny_model(registry)
    cut.loss = LossSpy(cut.loss, at=25)  # SIGINT in the second epoch
    first = Recorder()
    assert cut.fit(x, y, threads=2, progress=False, run_dir=tmp_path / "run", loggers=[first, Exploding()]).interrupted
    resumed, state = laminae.load_training(tmp_path / "run", registry=registry)
    second = Recorder()
    resumed.fit(x, y, progress=False, run_dir=tmp_path / "run", resume=state, loggers=[Exploding(), second])
    assert params_equal(whole.network, resumed.network)
    assert first.events[-1].status == "interrupted" and second.events[-1].status == "finished"
    assert [e.epoch for e in first.events + second.events if isinstance(e, EpochEnded)] == [1, 2, 3]
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # one warning for each part's broken logger


def test_the_end_can_export_the_model_to_onnx(registry, tmp_path):
    pytest.importorskip("onnx")
    x, y = tiny_data()
    recorder = Recorder()
    tiny_model(registry).fit(x, y, epochs=1, progress=False, loggers=[recorder])
    written = recorder.events[-1].export_onnx(tmp_path / "tiny.onnx")
    assert written == tmp_path / "tiny.onnx" and written.stat().st_size > 0


PLUGIN = textwrap.dedent('''
    import json, os
    import attrs
    from laminae import hookimpl, LaminaeError

    @attrs.define
    class JsonLines:
        """Appends each event's kind and epoch to a file."""
        path: str = attrs.field(default="events.jsonl", validator=attrs.validators.instance_of(str))
        tag: str = "a"

        def __call__(self, event):
            with open(self.path, "a") as out:
                out.write(json.dumps([self.tag, type(event).__name__, getattr(event, "epoch", None)]) + "\\n")

    @attrs.define
    class Broken:
        def __call__(self, event):
            raise RuntimeError("bug in the plugin")

    @attrs.define
    class Missing:
        def __call__(self, event):
            raise LaminaeError("needs somepackage: pip install 'laminae[some]'")

    @hookimpl
    def register_loggers(register):
        register("record", JsonLines)
        register("broken_logger", Broken)
        register("missing_logger", Missing)
''')


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_loggers.py").write_text(PLUGIN)
    return folder


def test_a_model_declares_its_loggers_in_toml_and_the_command_line_adds_one(tmp_path, plugin_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = '[{ type = "record", path = "declared.jsonl", tag = "toml" }, "record"]'
    code = main(["train", models_file(tmp_path, log), "net", "--plugins-dir", str(plugin_dir), "--out", "run",
                 "--log", "record", "--quiet"])
    assert code == 0, capsys.readouterr()
    declared = (tmp_path / "declared.jsonl").read_text().splitlines()
    assert declared == [
        '["toml", "RunStarted", null]', '["toml", "EpochEnded", 1]', '["toml", "EpochEnded", 2]',
        '["toml", "RunEnded", null]',
    ]
    # the bare name from the file and the one from --log both wrote to the default file
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 8
    assert '"log": [' in (tmp_path / "run" / "spec.json").read_text()
    capsys.readouterr()
    assert main(["summary", models_file(tmp_path, log), "net", "--plugins-dir", str(plugin_dir)]) == 0
    assert 'log = [{ type = "record", path = "declared.jsonl", tag = "toml" }, { type = "record" }]' in capsys.readouterr().out


def test_a_broken_plugin_logger_is_one_warning_naming_its_plugin(tmp_path, plugin_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", models_file(tmp_path, '["broken_logger"]'), "net", "--plugins-dir", str(plugin_dir),
                 "--out", "run", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("test accuracy:")
    assert err.strip() == (
        "laminae: warning: logger 'broken_logger' (train.log 0, from plugin 'my_loggers') failed at the run's"
        " start: RuntimeError: bug in the plugin; training goes on without it"
    )


def test_a_logger_refusing_the_run_is_one_line_and_exit_2(tmp_path, plugin_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = models_file(tmp_path, "[]")
    code = main(["train", path, "net", "--plugins-dir", str(plugin_dir), "--out", "run", "--log", "missing_logger"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (
        f"laminae train: error: {path}: model 'net': logger 'missing_logger' (from plugin 'my_loggers'):"
        " needs somepackage: pip install 'laminae[some]'"
    )
    assert not (tmp_path / "run" / "model.npz").exists()


@pytest.mark.parametrize(("log", "message"), [
    ('["recrd"]', "train: log 0 (recrd): unknown logger type 'recrd'; did you mean 'record'?"),
    ('[{ type = "record", pth = "x" }]', "log 0 (record): unknown key 'pth'; did you mean 'path'?"),
    ('[{ type = "record", path = 3 }]', "log 0 (record): "),
    ('["shift"]', "is a registered transform, not a logger"),
    ("3", "'log' must be"),
])
def test_a_wrong_logger_table_is_one_line_from_check(tmp_path, plugin_dir, capsys, log, message):
    path = models_file(tmp_path, log)
    code = main(["check", path, "--plugins-dir", str(plugin_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and len((out + err).strip().splitlines()) <= 2
    assert message in out + err and "model 'net'" in out + err


def test_a_logger_class_without_call_is_refused_when_its_plugin_loads(tmp_path):
    (tmp_path / "silent.py").write_text(textwrap.dedent('''
        import attrs
        from laminae import hookimpl

        @attrs.define
        class Silent:
            def log(self, event):
                pass

        @hookimpl
        def register_loggers(register):
            register("silent", Silent)
    '''))
    registry = laminae.make_registry(plugins_dir=tmp_path, autoload=False)
    failed = [info for info in registry.plugins if not info.ok]
    assert failed and "__call__" in failed[0].reason


def test_the_logger_docs_plugins_md_writes_runs_from_its_installed_package(tmp_path, capsys, monkeypatch):
    pytest.importorskip("laminae_extras")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "quickstart", "--epochs", "2", "--out", "run", "--log", "jsonl", "--quiet"])
    assert code == 0, capsys.readouterr()
    lines = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["start", "epoch", "epoch", "end"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [float(f"{line['train_loss']:.6g}") for line in lines[1:3]] == [float(row.split(",")[1]) for row in rows]
    assert lines[-1] == {"event": "end", "status": "finished", "epochs": 2}
