"""The inspecting commands: check, summary, layers, plugins; one-line errors and exit status 2."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from laminae.cli import main

MODELS_TOML = Path(__file__).resolve().parents[1] / "models.toml"
BAD_KEY = """\
[models.cnn]
input = [1, 28, 28]
layers = [{ type = "conv", filter = 30, size = 5 }, { type = "affine", units = 10 }]
loss = { type = "softmax_cross_entropy" }
optimizer = { type = "sgd" }
"""


@pytest.fixture(autouse=True)
def builtin_plugins_only(monkeypatch):
    """Whatever else is installed in this environment stays out of these outputs."""
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("LAMINAE_STRICT_PLUGINS", raising=False)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, command):
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"laminae {command}: error: ")


def test_check_prints_one_line_per_model(capsys):
    code, out, err = run(capsys, "check", MODELS_TOML)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == ["two_layer", "dnn", "simple_cnn", "sigmoid_net", "lenet", "mnist_best",
                                                  "fashion_best", "mnist_resnet", "fashion_resnet", "quickstart"]
    assert "ok  simple_cnn      6 layers, 433,890 params, (1, 28, 28) -> (10,)" in lines
    assert "ok  fashion_resnet  1 layers (29 with those inside blocks), 181,994 params, (1, 28, 28) -> (10,)" in lines


def test_check_reports_the_first_error_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.toml").write_text(BAD_KEY)
    code, out, err = run(capsys, "check", "bad.toml")
    assert_one_line_error(code, err, "check")
    assert err.startswith(
        "laminae check: error: bad.toml: model 'cnn', layer 0 (conv): unknown key 'filter'; did you mean 'filters'?"
    )
    assert out == ""


def test_check_of_a_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "check", tmp_path / "absent.toml")
    assert_one_line_error(code, err, "check")
    assert err.strip().endswith("absent.toml: no such file")


def test_check_of_a_toml_syntax_error_names_line_and_column(capsys, tmp_path):
    (tmp_path / "m.toml").write_text("[models.a]\ninput = = 3\n")
    code, _, err = run(capsys, "check", tmp_path / "m.toml")
    assert_one_line_error(code, err, "check")
    assert "invalid TOML" in err and "(at line 2, column 9)" in err


def test_summary_shows_layers_loss_optimizer_and_train(capsys):
    code, out, err = run(capsys, "summary", MODELS_TOML, "simple_cnn")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "model simple_cnn: conv(30, 5x5)-relu-maxpool(2)-affine(100)-relu-affine(10)"
    assert "total params: 433,890 (float32)" in out
    assert "\nloss: softmax_cross_entropy\n" in out
    assert "\noptimizer: sgd (lr = 0.1)\n" in out
    assert 'train: dataset = "mnist", epochs = 5, batch_size = 100, seed = 0, validation = 0' in out


def test_summary_of_an_unknown_model_suggests(capsys):
    code, _, err = run(capsys, "summary", MODELS_TOML, "lenett")
    assert_one_line_error(code, err, "summary")
    assert "no model 'lenett'; did you mean 'lenet'?" in err


def test_layers_lists_every_builtin_type_with_keys_and_doc(capsys):
    code, out, _ = run(capsys, "layers")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "affine", "batchnorm", "branches", "conv", "dropout", "flatten", "flip_average", "global_avg_pool", "pool",
        "relu", "repeat", "residual", "sequential", "sigmoid",
    ]
    affine = out.splitlines()[0]
    assert 'units=required, bias=true, init="he"  # Fully connected layer' in affine


def test_layers_with_a_type_shows_its_fields(capsys):
    code, out, _ = run(capsys, "layers", "conv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("conv (layer, from laminae.plugins.conv): Square-kernel convolution")
    assert "  filters  required  output channels" in lines
    assert "  stride   1         step between windows" in lines
    assert any(line.startswith('  init     "he"') and "initializer" in line for line in lines)


def test_layers_of_another_kind(capsys):
    code, out, _ = run(capsys, "layers", "--kind", "initializers", "normal")
    assert code == 0
    assert "  std   0.01  standard deviation" in out.splitlines()


def test_layers_with_an_unknown_type_suggests(capsys):
    code, _, err = run(capsys, "layers", "cnv")
    assert_one_line_error(code, err, "layers")
    assert "unknown layer type 'cnv'; did you mean 'conv'? (installed: affine, batchnorm, branches, conv," in err


def test_plugins_prints_one_stable_line_per_plugin(capsys, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "badpkg.py").write_text("raise ImportError('x')\n")
    code, out, _ = run(capsys, "plugins", "--plugins-dir", plugins, "--block", "laminae.plugins.sgd")
    assert code == 0
    lines = out.splitlines()
    assert "laminae.plugins.affine 0.1.0 built-in ok: layer:affine" in lines
    assert "laminae.plugins.activations 0.1.0 built-in ok: layer:relu, layer:sigmoid" in lines
    assert "laminae.plugins.sgd 0.1.0 built-in blocked: blocked by --block" in lines
    assert f"badpkg local plugins dir {plugins} failed: import failed: ImportError: x" in lines


@pytest.mark.parametrize("command", ["check", "summary", "layers", "plugins"])
def test_help_shows_an_example(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  laminae " + command in out


def test_console_script_exits_2_without_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_KEY)
    script = shutil.which("laminae", path=str(Path(sys.executable).parent)) or shutil.which("laminae")
    assert script is not None, "the laminae console script is not installed"
    result = subprocess.run([script, "check", "bad.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "bad.toml: model 'cnn', layer 0 (conv): unknown key 'filter'" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", MODELS_TOML, "quickstart", "--epochs", "abc"], "laminae train: error: argument --epochs: invalid int value: 'abc'"),
        (["layers", "--kind", "foo"], "laminae layers: error: argument --kind: invalid choice: 'foo'"),
        (["predict", "run"], "laminae predict: error: the following arguments are required: IMAGE"),
        ([], "laminae: error: the following arguments are required: COMMAND"),
    ],
)
def test_command_line_mistakes_are_one_line_too(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(message), err
    assert err.rstrip().endswith("--help)")
