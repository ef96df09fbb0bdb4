"""The catalogue of built-in models: ``laminae models``, ``--copy``, and bare names
wherever a command takes FILE NAME."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

import laminae
from laminae.cli import main
from laminae.network import catalogue as catalogue_module

ROOT = Path(__file__).resolve().parents[1]
MODELS_TOML = ROOT / "models.toml"
DOC = tomllib.loads(MODELS_TOML.read_text())


@pytest.fixture(autouse=True)
def builtin_plugins_only(monkeypatch, tmp_path):
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)  # an empty folder: no models.toml to fall back on


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, command, message):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"laminae {command}: error: {message}\n"


def test_models_lists_every_model_with_its_description_and_accuracy(capsys):
    code, out, err = run(capsys, "models")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(DOC["models"])
    for line, table in zip(lines, DOC["models"].values()):
        assert line.endswith(f"  {table['description']}")
        assert f"{100 * table['accuracy']:.2f}% ({table['train']['dataset']})" in line


@pytest.mark.parametrize("name", list(DOC["models"]))
def test_a_copy_builds_the_same_model_and_is_never_overwritten(name, capsys, registry):
    code, out, err = run(capsys, "models", "--copy", name)
    assert (code, out, err) == (0, f"wrote {name}.toml\n", "")
    copy = laminae.from_toml(f"{name}.toml", name, registry=registry)
    original = laminae.from_toml(MODELS_TOML, name, registry=registry)
    assert copy.spec == original.spec
    assert copy.network.summary() == original.network.summary()
    copied = tomllib.loads(Path(f"{name}.toml").read_text())["models"][name]
    assert "accuracy" not in copied and copied.get("tune") == DOC["models"][name].get("tune")

    Path(f"{name}.toml").write_text("mine")
    code, out, err = run(capsys, "models", "--copy", name, f"{name}.toml")
    assert_one_line_error(code, err, "models", f"{name}.toml: already exists, and is never overwritten: give another FILE")
    assert Path(f"{name}.toml").read_text() == "mine"


def test_a_copy_stands_alone_with_what_it_extends_merged_in(capsys, monkeypatch, tmp_path, registry):
    catalogue = tmp_path / "catalogue.toml"
    catalogue.write_text(
        MODELS_TOML.read_text()
        + '\n[models.wide]\nextends = "lenet"\ndescription = "wider"\n'
        + 'optimizer = { type = "sgd", lr = 0.01 }\n[models.wide.train]\nepochs = 3\n'
    )
    monkeypatch.setattr(catalogue_module, "catalogue_path", lambda: catalogue)
    assert run(capsys, "models", "--copy", "wide", "mine.toml")[0] == 0
    copied = tomllib.loads(Path("mine.toml").read_text())["models"]["wide"]
    assert "extends" not in copied and copied["layers"] == DOC["models"]["lenet"]["layers"]
    assert copied["optimizer"] == {**DOC["models"]["lenet"]["optimizer"], "lr": 0.01}  # tables merge
    assert copied["train"] == {**DOC["models"]["lenet"]["train"], "epochs": 3}
    assert laminae.from_toml("mine.toml", "wide", registry=registry).spec == laminae.from_toml(catalogue, "wide", registry=registry).spec


def test_bare_names_work_where_a_file_and_a_name_do(capsys):
    code, out, err = run(capsys, "summary", "simple_cnn")
    assert (code, err) == (0, "")
    assert out == run(capsys, "summary", MODELS_TOML, "simple_cnn")[1]
    code, out, err = run(capsys, "check", "lenet")
    assert (code, err) == (0, "") and out.split()[:2] == ["ok", "lenet"] and out.count("\n") == 1
    code, out, err = run(capsys, "train", "quickstart", "--epochs", "1", "--quiet")
    assert (code, err) == (0, "") and out.startswith("test accuracy: ")
    (run_dir,) = os.listdir("runs")
    assert run_dir.startswith("quickstart-")


@pytest.mark.parametrize("command", ["train", "summary", "check", "tune"])
def test_an_unknown_bare_name_is_one_line_with_a_suggestion(capsys, command):
    code, out, err = run(capsys, command, "lenett")
    assert_one_line_error(
        code, err, command, "lenett: no such file, and no built-in model 'lenett'; did you mean 'lenet'? (laminae models lists them)"
    )


def test_a_file_of_that_name_comes_first(capsys):
    Path("quickstart").write_text(
        '[models.quickstart]\ninput = [4]\nlayers = [{ type = "affine", units = 3 }]\nloss = "quadratic"\noptimizer = "sgd"\n'
    )
    code, out, err = run(capsys, "summary", "quickstart")
    assert (code, err) == (0, "") and "total params: 15 (float32)" in out


def test_copy_of_an_unknown_model_and_a_file_without_copy(capsys):
    code, out, err = run(capsys, "models", "--copy", "lenett")
    assert_one_line_error(code, err, "models", f"no built-in model 'lenett'; did you mean 'lenet'? (models: {', '.join(DOC['models'])})")
    code, out, err = run(capsys, "models", "mine.toml")
    assert_one_line_error(code, err, "models", "FILE (mine.toml) is where --copy NAME writes: give --copy NAME too")
    assert os.listdir() == []


@pytest.mark.parametrize("value", [1.5, -0.1, "99%", True])
def test_accuracy_is_a_number_from_0_to_1(value, registry):
    table = {**DOC["models"]["quickstart"], "accuracy": value}
    with pytest.raises(laminae.SpecError, match=r"^<dict>: model 'q': 'accuracy' must be a number from 0 to 1"):
        laminae.build(table, name="q", registry=registry)
