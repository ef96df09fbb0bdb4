"""The `tensorboard` logger: what it writes, read back by TensorBoard's own reader."""
from __future__ import annotations

import json
import re
import shutil
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import attrs
import numpy as np
import pytest

import laminae
from laminae.cli import main
from laminae.events import BestSaved, EpochEnded, RunStarted
from laminae.fields import hyperparameters, key_of
from laminae.network.catalogue import catalogue_path
from laminae.plugins.tensorboard_log import SCALAR_TAGS, TensorBoard
from laminae.training.metrics import read_log
from laminae.training.splits import load_splits
from tests.doc_blocks import blocks
from tests.training_helpers import LossSpy, Recorder, models_file

ROOT = Path(__file__).resolve().parents[1]

CSV_PRECISION = {"seconds": {"abs": 1e-3}, "train_accuracy": {"abs": 1e-6}, "val_accuracy": {"abs": 1e-6},
                 "test_accuracy": {"abs": 1e-6}}
"""How closely a scalar read back matches ``metrics.csv``, which keeps accuracies to
6 decimals, seconds to 3 and the rest to 6 significant digits (``rel`` below)."""


@pytest.fixture(scope="module")
def data(registry):
    """640 training digits of the embedded sample (20 batches of quickstart's 32), 160 for validation, 500 to test."""
    splits = load_splits(registry, "mnist-sample", None)
    x, y = splits.train.x[:800], splits.train.y[:800]
    return (x[160:], y[160:]), (x[:160], y[:160]), (splits.test.x[:500], splits.test.y[:500])


@pytest.fixture
def writer_installed():
    pytest.importorskip("tensorboardX")


def quickstart(registry):
    """The built-in quickstart model, for 3 epochs, logging to TensorBoard."""
    return laminae.from_toml(catalogue_path(), "quickstart", registry=registry,
                             train_overrides={"epochs": 3, "log": ["tensorboard"]})


def read_back(folder):
    """Every point in the event files of ``folder``, as TensorBoard's own reader loads them for
    its dashboards: ``{tag: [(step, value), ...]}`` for the scalars, ``{tag: [(step, text), ...]}``
    for the text, and the reader."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.plugin_event_accumulator")
    tensor_util = pytest.importorskip("tensorboard.util.tensor_util")
    reader = accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    reader.Reload()

    def points(plugin):
        return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in reader.Tensors(tag)]
                for tag in reader.PluginTagToContent(plugin)}

    texts = {tag.removesuffix("/text_summary"): [(step, text.decode()) for step, text in series]
             for tag, series in points("text").items()}
    return points("scalars"), texts, reader


def assert_matches_metrics_csv(scalars, run_dir):
    """One point per epoch of ``metrics.csv``, at step = the epoch, equal at the file's precision."""
    rows = read_log(run_dir / "metrics.csv")
    measured = {name for row in rows for name, value in attrs.asdict(row).items()
                if name != "epoch" and value is not None}
    assert set(scalars) == {SCALAR_TAGS[name] for name in measured}
    for name in measured:
        points = scalars[SCALAR_TAGS[name]]
        assert [step for step, _ in points] == [row.epoch for row in rows], name
        expected = [pytest.approx(getattr(row, name), rel=1e-5, **CSV_PRECISION.get(name, {})) for row in rows]
        assert [value for _, value in points] == expected, name


def test_tensorboard_reads_back_every_figure_at_its_epoch_and_the_model(registry, data, tmp_path, writer_installed):
    train, validation, test = data
    model = quickstart(registry)
    recorder = Recorder()
    model.fit(*train, validation_data=validation, test_data=test, progress=False, run_dir=tmp_path / "run",
              loggers=[recorder])
    scalars, texts, reader = read_back(tmp_path / "run" / "tensorboard")

    epochs = recorder.of(EpochEnded)
    assert set(epochs[0].metrics) == set(SCALAR_TAGS)  # every figure measured: train, validation, test, lr, time
    for name, tag in SCALAR_TAGS.items():  # the figures sent, to the bit of the float32 an event keeps
        assert scalars[tag] == [(event.epoch, np.float32(event.metrics[name])) for event in epochs], tag
    assert_matches_metrics_csv(scalars, tmp_path / "run")

    start = recorder.of(RunStarted)[0]
    assert texts["model/summary"] == [(0, f"```\n{start.summary}\n```")]
    (step, spec), = texts["model/spec"]
    assert step == 0 and json.loads(spec.removeprefix("```json\n").removesuffix("\n```")) == model.spec
    assert texts["run/best"] == [
        (best.epoch, f"epoch {best.epoch}: the best val_accuracy yet, {best.value:.6g}; saved as `{best.path}`")
        for best in recorder.of(BestSaved)
    ]
    assert texts["run/status"] == [(3, "finished after 3 epochs")]

    layout = pytest.importorskip("tensorboard.plugins.custom_scalar.layout_pb2").Layout()
    (config,) = reader.Tensors("custom_scalars__config__")
    layout.ParseFromString(config.tensor_proto.string_val[0])
    charts = layout.category[0].chart
    assert [chart.title for chart in charts] == ["loss", "accuracy"]
    for chart in charts:  # each draws every split of its figure on one plot
        drawn = {tag for tag in scalars for pattern in chart.multiline.tag if re.fullmatch(pattern, tag)}
        assert drawn == {tag for tag in scalars if tag.startswith(chart.title + "/")} and len(drawn) >= 2


def test_an_interrupted_and_resumed_run_has_one_point_per_epoch(registry, data, tmp_path, monkeypatch,
                                                                writer_installed):
    train, validation, _ = data
    # tensorboardX names an event file by the second it opens: both parts open in the same one
    # here, as a run resumed right after a Ctrl-C can, and neither file may replace the other.
    monkeypatch.setattr(sys.modules["tensorboardX.event_file_writer"], "time", SimpleNamespace(time=lambda: 1.8e9))
    model = quickstart(registry)
    model.loss = LossSpy(model.loss, at=25)  # SIGINT in the second epoch (20 batches, then 1 validation batch)
    result = model.fit(*train, validation_data=validation, progress=False, run_dir=tmp_path / "run")
    assert result.interrupted

    resumed, state = laminae.load_training(tmp_path / "run", registry=registry)
    resumed.fit(*train, validation_data=validation, progress=False, run_dir=tmp_path / "run", resume=state)
    scalars, texts, _ = read_back(tmp_path / "run" / "tensorboard")
    assert_matches_metrics_csv(scalars, tmp_path / "run")
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 2  # one event file per part
    assert texts["run/status"] == [(1, "interrupted (SIGINT) after 1 epoch"), (3, "finished after 3 epochs")]
    assert [step for step, _ in texts["model/summary"]] == [0]


def test_a_run_resumed_from_an_earlier_checkpoint_drops_what_it_trains_again(registry, data, tmp_path,
                                                                             writer_installed):
    train, validation, _ = data
    run = tmp_path / "run"

    def keep_first_checkpoint(row):
        if row.epoch == 1:
            shutil.copy(run / "model.npz", tmp_path / "epoch1.npz")

    quickstart(registry).fit(*train, validation_data=validation, progress=False, run_dir=run,
                             on_epoch=keep_first_checkpoint)
    shutil.copy(tmp_path / "epoch1.npz", run / "model.npz")  # back to the end of epoch 1: 2 and 3 are trained again
    resumed, state = laminae.load_training(run, registry=registry)
    resumed.fit(*train, validation_data=validation, progress=False, run_dir=run, resume=state)
    scalars, texts, _ = read_back(run / "tensorboard")
    assert_matches_metrics_csv(scalars, run)
    assert texts["run/status"] == [(3, "finished after 3 epochs")]  # the first part's end was dropped with its epochs


def test_laminae_train_log_tensorboard_writes_only_what_it_measured(tmp_path, capsys, monkeypatch, writer_installed):
    monkeypatch.chdir(tmp_path)
    path = models_file(tmp_path, "[]")
    code = main(["train", path, "net", "--epochs", "2", "--out", "run", "--log", "tensorboard", "--quiet"])
    assert code == 0, capsys.readouterr()
    scalars, texts, _ = read_back(tmp_path / "run" / "tensorboard")
    assert "loss/validation" not in scalars  # the model holds out no validation split
    assert_matches_metrics_csv(scalars, tmp_path / "run")
    assert "affine" in texts["model/summary"][0][1]


def test_a_log_dir_from_the_model_file_is_inside_the_run_directory(tmp_path, capsys, monkeypatch, writer_installed):
    monkeypatch.chdir(tmp_path)
    path = models_file(tmp_path, '[{ type = "tensorboard", log_dir = "tb/net" }]')
    assert main(["train", path, "net", "--out", "run", "--quiet"]) == 0, capsys.readouterr()
    scalars, _, _ = read_back(tmp_path / "run" / "tb" / "net")
    assert_matches_metrics_csv(scalars, tmp_path / "run")


def test_without_tensorboardx_the_run_is_refused_in_one_line_before_its_first_batch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    code = main(["train", "quickstart", "--out", "run", "--log", "tensorboard"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip().splitlines() == [
        f"laminae train: error: {catalogue_path()}: model 'quickstart':"
        " logger 'tensorboard' (from plugin 'laminae.plugins.tensorboard_log'): writing TensorBoard logs needs"
        " tensorboardX: pip install 'laminae[tensorboard]'"
    ]
    assert not (tmp_path / "run" / "model.npz").exists()
    assert read_log(tmp_path / "run" / "metrics.csv") == []


def test_a_log_dir_that_cannot_be_written_refuses_the_run_in_one_line(tmp_path, capsys, monkeypatch, writer_installed):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file where the log folder should be")
    path = models_file(tmp_path, f'[{{ type = "tensorboard", log_dir = "{tmp_path / "taken"}" }}]')
    code = main(["train", path, "net", "--out", "run"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip().splitlines() == [
        f"laminae train: error: {path}: model 'net': logger 'tensorboard' (train.log 0, from plugin"
        f" 'laminae.plugins.tensorboard_log'): {tmp_path / 'taken'}: cannot write TensorBoard logs there"
        " (Not a directory)"
    ]
    assert not (tmp_path / "run" / "model.npz").exists()


@pytest.mark.parametrize(("table", "message"), [
    ('{ type = "tensorboard", flush_secs = 0 }', "log 0 (tensorboard): 'flush_secs' must be greater than 0, got 0"),
    ('{ type = "tensorboard", log_dir = 3 }', "log 0 (tensorboard): 'log_dir' must be a string, got 3 (int)"),
    ('{ type = "tensorboard", logdir = "tb" }', "unknown key 'logdir'; did you mean 'log_dir'?"),
])
def test_a_wrong_tensorboard_table_is_one_line_from_check(tmp_path, capsys, table, message):
    path = models_file(tmp_path, f"[{table}]")
    code = main(["check", path])
    out, err = capsys.readouterr()
    assert code == 2 and len((out + err).strip().splitlines()) <= 2
    assert message in out + err and "model 'net'" in out + err and path in out + err


def test_tracking_md_shows_every_tag_and_field_and_its_table_makes_the_logger(registry):
    page = (ROOT / "docs" / "tracking.md").read_text()
    section = page[page.index("## TensorBoard"):]
    written = [*SCALAR_TAGS.values(), "model/summary", "model/spec", "run/best", "run/status"]
    assert [tag for tag in written if f"`{tag}`" not in section] == []
    fields = [key_of(field) for field in hyperparameters(registry.get("loggers", "tensorboard"))]
    assert [key for key in fields if f"| `{key}` |" not in section] == []
    (toml,) = [block.text for block in blocks(section) if block.lang == "toml"]
    for table in tomllib.loads(toml)["models"]["lenet"]["train"]["log"]:
        assert isinstance(registry.create("loggers", table), TensorBoard)
