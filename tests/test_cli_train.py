"""The train, eval, predict and plot commands, on the bundled MNIST sample."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae.cli import main
from laminae.plugins.losses import SoftmaxCrossEntropy
from tests.training_helpers import params_equal

ROOT = Path(__file__).resolve().parents[1]
MODELS = str(ROOT / "models.toml")
FINAL_LINE = re.compile(r"^test accuracy: (\d\.\d{4}) \((\d+)/1000\)$")


def laminae_cli(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short quickstart run shared by the eval, predict and plot tests."""
    path = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["train", MODELS, "quickstart", "--epochs", "1", "--out", str(path), "--quiet"]) == 0
    return path


def test_train_writes_the_run_directory_and_ends_with_the_accuracy(capsys, tmp_path):
    code, out, err = laminae_cli(capsys, "train", MODELS, "quickstart", "--epochs", "1", "--batch-size", "128",
                                 "--out", tmp_path / "run")
    assert code == 0
    assert FINAL_LINE.match(out[-1]), out
    assert any(line.startswith("epoch 1/1: train loss") for line in out)
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"model.npz", "metrics.csv", "spec.json", ".lock"}
    model = laminae.load(tmp_path / "run")
    assert model.train_config.epochs == 1 and model.train_config.batch_size == 128
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 2


def test_quiet_prints_only_the_accuracy(run_dir, capsys, tmp_path):
    code, out, err = laminae_cli(capsys, "train", MODELS, "quickstart", "--epochs", "1", "--quiet",
                                 "--out", tmp_path / "run")
    assert code == 0 and len(out) == 1 and FINAL_LINE.match(out[0]) and err == []


def test_a_validation_split_is_held_out_and_recorded(capsys, tmp_path):
    toml = tmp_path / "models.toml"
    toml.write_text(
        "[models.small]\n"
        "input = [1, 28, 28]\n"
        'layers = [{ type = "affine", units = 16 }, { type = "relu" }, { type = "affine", units = 10 }]\n'
        'loss = { type = "softmax_cross_entropy" }\n'
        'optimizer = { type = "sgd", lr = 0.05 }\n'
        'train = { dataset = "mnist-sample", epochs = 1, batch_size = 64, validation = 500 }\n'
    )
    code, out, _ = laminae_cli(capsys, "train", toml, "small", "--out", tmp_path / "run", "--quiet")
    assert code == 0 and FINAL_LINE.match(out[-1])
    header, row = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert header.split(",")[4] == "val_accuracy" and row.split(",")[4] != ""


def test_eval_prints_the_test_loss_and_accuracy(run_dir, capsys):
    code, out, _ = laminae_cli(capsys, "eval", run_dir / "model.npz")
    assert code == 0
    assert re.match(r"^test loss: \d+\.\d{4}$", out[0]) and FINAL_LINE.match(out[1])


def test_predict_classifies_npy_arrays_and_png_images(run_dir, capsys, tmp_path):
    image = pytest.importorskip("PIL.Image")
    test = laminae.make_registry(autoload=False).create("datasets", "mnist-sample").load([]).test
    np.save(tmp_path / "digit.npy", test.x[0])
    image.fromarray((test.x[1, 0] * 255).round().astype(np.uint8), mode="L").save(tmp_path / "digit.png")
    code, out, _ = laminae_cli(capsys, "predict", run_dir, tmp_path / "digit.npy", tmp_path / "digit.png")
    assert code == 0 and len(out) == 2
    expected = laminae.load(run_dir).predict(test.x[:2])
    for line, path, label in zip(out, ("digit.npy", "digit.png"), expected):
        assert re.match(rf"^{re.escape(str(tmp_path / path))}: {label} \((0|1)\.\d{{4}}\)$", line), line


def test_plot_draws_a_png(run_dir, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = laminae_cli(capsys, "plot", run_dir, "--out", tmp_path / "curves.png")
    assert code == 0 and out == [str(tmp_path / "curves.png")]
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib_says_which_extra_to_install(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = laminae_cli(capsys, "plot", run_dir)
    assert code == 2 and err == ["laminae plot: error: plotting needs matplotlib: pip install 'laminae[plot]'"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "missing.npz"], "missing.npz: no such file"),
        (["train", MODELS, "no_such_model"], "no model 'no_such_model'"),
        (["train", MODELS], "models.toml: several models, name one of: two_layer, dnn,"),
        (["train"], "give a built-in model's NAME, or a TOML FILE and a model NAME"),
        (["train", MODELS, "quickstart", "--dataset", "mnist-smaple"], "unknown data set type 'mnist-smaple'"),
        (["plot", "no-such-run"], "metrics.csv: no such file"),
        (["train", MODELS, "quickstart", "--out", "a-file"], "a-file: cannot be used as a run directory (File exists)"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    code, out, err = laminae_cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_predict_refuses_an_array_of_the_wrong_shape(run_dir, capsys, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5), np.float32))
    code, _, err = laminae_cli(capsys, "predict", run_dir, tmp_path / "wrong.npy")
    assert code == 2 and err == [f"laminae predict: error: {tmp_path / 'wrong.npy'}: has shape (5, 5),"
                                 " but the model expects (1, 28, 28)"]


def test_an_interrupted_train_resumes_to_the_same_weights(capsys, tmp_path, monkeypatch):
    common = [MODELS, "quickstart", "--epochs", "2", "--batch-size", "256"]
    assert main(["train", *common, "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    whole_accuracy = capsys.readouterr().out.splitlines()[-1]

    real_forward = SoftmaxCrossEntropy.forward
    calls = []

    def interrupting_forward(self, output, target):
        calls.append(1)
        if len(calls) == 25:  # epoch 2 of 20 batches each, batch 5
            import signal

            signal.raise_signal(signal.SIGINT)
        return real_forward(self, output, target)

    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", interrupting_forward)
    code, out, _ = laminae_cli(capsys, "train", *common, "--out", tmp_path / "cut", "--quiet")
    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", real_forward)
    assert code == 130
    assert out[-1] == f"resume with: laminae train --resume {tmp_path / 'cut'}"
    assert "interrupted (SIGINT) at epoch 2, batch 4;" in out[0]

    code, out, _ = laminae_cli(capsys, "train", "--resume", tmp_path / "cut", "--quiet")
    assert code == 0 and out == [whole_accuracy]
    assert params_equal(laminae.load(tmp_path / "cut").network, laminae.load(tmp_path / "whole").network)


def test_quickstart_end_to_end_through_the_console_script(tmp_path):
    """What CI runs: the installed ``laminae`` command, the real model entry, no network."""
    script = Path(sys.executable).with_name("laminae")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "laminae"]
    done = subprocess.run(
        [*command, "train", MODELS, "quickstart", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    match = FINAL_LINE.match(done.stdout.splitlines()[-1])
    assert match and float(match.group(1)) >= 0.85, done.stdout


def test_labels_the_model_cannot_output_name_the_file_and_model(capsys, tmp_path):
    models = tmp_path / "m.toml"
    models.write_text(
        'schema = 1\n[models.small]\ninput = [1, 28, 28]\nlayers = [{ type = "affine", units = 5 }]\n'
        'loss = { type = "softmax_cross_entropy" }\noptimizer = { type = "sgd" }\n'
        '[models.small.train]\ndataset = "mnist-sample"\n'
    )
    code, _, err = laminae_cli(capsys, "train", models, "small", "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err == [
        f"laminae train: error: {models}: model 'small': training data:"
        " label 5 at index 0 is outside the model's 5 classes (0..4)"
    ]


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_resume_refuses_a_number_of_epochs_below_one(run_dir, capsys, tmp_path, epochs):
    code, _, err = laminae_cli(capsys, "train", "--resume", run_dir, "--epochs", epochs, "--quiet")
    assert code == 2 and err == [
        f"laminae train: error: {run_dir / 'model.npz'}: model 'quickstart':"
        f" cannot train: 'epochs' must be at least 1, got {epochs}"
    ]


def test_plot_of_a_run_without_a_finished_epoch(capsys, tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,train_loss,train_accuracy,val_accuracy,test_accuracy,seconds\n")
    code, _, err = laminae_cli(capsys, "plot", tmp_path)
    assert code == 2 and err == [
        f"laminae plot: error: {tmp_path / 'metrics.csv'}: no finished epoch yet, nothing to plot"
    ]
    assert not (tmp_path / "curves.png").exists()
