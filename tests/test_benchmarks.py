"""The benchmark's own arithmetic: what it times must be the work a step does.

A GEMM form that computed something other than ``a @ b`` would time the
wrong work, and a wrong list of a step's products would make every
"bound" it prints meaningless; a JAX twin that computed another network
would make its column a lie; the commands themselves must run end to end.

JAX is the optional `bench` extra: the tests that need it are skipped where
it is not installed, and run it in child processes only, so this process
never imports it (nor forks with its threads running); PyTorch likewise.
"""
from __future__ import annotations

import importlib.util
import os
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "benchmarks"))  # the benchmark modules import each other by bare name, as the scripts run

import laminae  # noqa: E402
from benchmarks import laminae_models  # noqa: E402
from benchmarks.gemm_peak import _numpy_forms, step_flops, step_gemms  # noqa: E402

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed (the optional `bench` extra)")
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (the optional `bench` extra)")


def bench(*args: str, env: dict | None = None) -> str:
    """Run a benchmark command on tiny settings; its standard output."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout, result.stdout
    return result.stdout


def table_row(out: str, name: str) -> dict[str, str]:
    """One network's row of the first table, by column name."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("network")).split()
    return dict(zip(header, next(line for line in lines if line.startswith(name + " ")).split()))


@pytest.mark.parametrize("shape", [(32, 784, 256), (6, 26, 50176), (30, 57600, 26), (4, 3, 5)])
def test_every_numpy_gemm_form_computes_the_product(shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    forms = _numpy_forms(a, b)
    if m * k * n > 2_000_000:
        assert len(forms) > 1, "a long product should also be timed in stacked pieces"
    for form in forms:
        result = form()
        if result.ndim == 3 and result.shape[1:] != (m, n):  # pieces along n: (pieces, m, n / pieces)
            result = result.transpose(1, 0, 2).reshape(m, n)
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-3 * np.sqrt(k))


TRAINING = {"loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "sgd"}}


def test_step_gemms_lists_each_layers_three_products_but_the_first_input_gradient():
    layers = [{"type": "affine", "units": 256}, {"type": "relu"}, {"type": "affine", "units": 10}]
    model = laminae.build({"input": [1, 28, 28], "layers": layers, **TRAINING})
    assert step_gemms(model.network, 32) == [
        (32, 784, 256), (784, 32, 256),  # first affine: forward, dW (no input gradient)
        (32, 256, 10), (256, 32, 10), (32, 10, 256),  # second: forward, dW, dx
    ]
    assert step_flops(model.network, 32) == 2 * (2 * 32 * 784 * 256 + 3 * 32 * 256 * 10)


def test_conv_products_are_filters_by_window_weights_by_positions():
    layers = [{"type": "conv", "filters": 4, "size": 3}, {"type": "relu"}, {"type": "conv", "filters": 5, "size": 3}]
    model = laminae.build({"input": [1, 12, 12], "layers": layers, **TRAINING})
    positions_1, positions_2 = 2 * 10 * 10, 2 * 8 * 8
    assert step_gemms(model.network, 2) == [
        (4, 9, positions_1), (4, positions_1, 9),
        (5, 36, positions_2), (5, positions_2, 36), (36, 5, positions_2),
    ]


def test_step_gemms_include_the_layers_inside_composite_layers():
    layers = [
        {"type": "conv", "filters": 4, "size": 3, "pad": 1},
        {"type": "residual", "layers": [{"type": "conv", "filters": 6, "size": 3, "pad": 1}],
         "shortcut": [{"type": "conv", "filters": 6, "size": 1}]},
        {"type": "global_avg_pool"},
        {"type": "affine", "units": 10},
    ]
    model = laminae.build({"input": [1, 8, 8], "layers": layers, **TRAINING})
    positions = 2 * 8 * 8
    assert step_gemms(model.network, 2) == [
        (4, 9, positions), (4, positions, 9),  # the first conv: no input gradient
        (6, 36, positions), (6, positions, 36), (36, 6, positions),  # the residual block's main path
        (6, 4, positions), (6, positions, 4), (4, 6, positions),  # its shortcut
        (2, 6, 10), (6, 2, 10), (2, 10, 6),
    ]


def test_the_benchmark_command_prints_both_tables():
    out = bench("benchmarks/run.py", "--networks", "two_layer", "--batches", "2", "--rounds", "1",
                "--no-rss", "--no-torch", "--no-jax", "--threads", "1")
    assert "network" in out and "L/tutorial" in out
    row = table_row(out, "two_layer")
    assert row["JAX/s"] == row["PyTorch/s"] == row["L/best"] == "-"
    assert "GEMMs alone at the shapes of one training step" in out
    row = next(line for line in out.splitlines() if line.startswith("two_layer") and "%" in line)
    share, peak_bound = (float(cell.rstrip("%")) for cell in row.split() if cell.endswith("%"))
    assert 0 < share <= 100 and peak_bound > 0  # share of the Laminae step spent in its GEMMs


def test_a_missing_jax_is_one_line_and_an_empty_column(tmp_path):
    (tmp_path / "jax.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = bench("benchmarks/run.py", "--networks", "two_layer", "--batches", "1", "--rounds", "1",
                "--no-rss", "--no-torch", "--threads", "1", env=env)
    assert [line for line in out.splitlines() if "JAX not installed" in line] != []
    assert table_row(out, "two_layer")["JAX/s"] == "-"


@needs_jax
def test_the_benchmark_command_has_a_jax_column_and_ranks_laminae_against_it():
    out = bench("benchmarks/run.py", "--networks", "two_layer", "--batches", "2", "--rounds", "1",
                "--no-rss", "--no-torch", "--threads", "1")
    row = table_row(out, "two_layer")
    assert float(row["JAX/s"].replace(",", "")) > 0
    assert row["L/best"] == row["L/JAX"] != "-"  # JAX is the only peer here


def test_the_sweep_prints_its_table_and_draws_the_plot(tmp_path):
    plot = tmp_path / "sweep.png"
    out = bench("benchmarks/sweep.py", "--networks", "two_layer", "--batch-sizes", "8,16", "--samples", "32",
                "--rounds", "1", "--no-torch", "--no-jax", "--threads", "1", "--out", str(plot))
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("two_layer")] == [
        ["two_layer", "8"], ["two_layer", "16"]]
    assert plot.read_bytes().startswith(b"\x89PNG")


@needs_jax
def test_the_sweep_includes_jax():
    out = bench("benchmarks/sweep.py", "--networks", "two_layer", "--batch-sizes", "8", "--samples", "16",
                "--rounds", "1", "--no-torch", "--threads", "1", "--out", "/dev/null")
    assert "JAX/s" in out and "L/best" in out


TWIN_LOSSES = """
import json, sys
sys.path.append("benchmarks")
import numpy as np
import laminae
import laminae_models
from {module} import {trainer} as Trainer


def set_apart(network, rng):  # biases, gammas, betas, running averages unequal, so a twin mixing them up shows
    for node in network.nodes.values():
        for array in node.layer.params.values():
            if array.ndim == 1:
                array += 0.1 * rng.standard_normal(array.shape, dtype=array.dtype)
    state = network.state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            value += rng.uniform(-0.5, 0.5, value.shape).astype(value.dtype)
        elif key.endswith("running_var"):
            value *= rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
    network.load_state_dict(state)


specs, rng, out = laminae_models.load_specs(), np.random.default_rng(0), {{}}
specs.update(json.loads(sys.argv[1]))
x, y = rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)
for name in [name for name in json.loads(sys.argv[2]) if name in specs]:
    model = laminae.build(laminae_models.without_augmentation(specs[name]))
    set_apart(model.network, rng)
    loss, sgd = laminae_models.hyperparameters(specs[name])
    twin = Trainer(model.network, loss, sgd)
    out[name] = []
    for step in range(json.loads(sys.argv[3]) + 1):  # the losses before each step, in training mode, then in inference
        if step:
            model.fit(x, y, epochs=1, batch_size=len(x), seed=0, threads=1, progress=False)
            twin.train(*((twin.to_device(x, y),) if hasattr(twin, "to_device") else (x, y)), len(x))
        out[name].append([laminae_models.training_loss(model, x, y), twin.first_loss(x, y),
                          model.loss.forward(laminae_models.single_view_scores(model.network, x), y), twin.first_loss(x, y, training=False)])
print(json.dumps(out))
"""


def twin_losses(module: str, names, specs: dict | None = None, steps: int = 0) -> dict[str, list]:
    """``{network: [[Laminae, twin, Laminae, twin] before each step]}``: the losses
    on one batch of 16 random images in training mode, then in inference mode,
    before training and after each of ``steps`` steps on that batch (Laminae on
    one thread, so its batch norm sees the whole batch), computed in a child
    process; ``specs`` adds networks to the catalogue's.  The twin is made
    after Laminae's biases, batch-norm parameters and running averages are set
    apart (``set_apart``)."""
    trainer = {"jax_models": "JaxTrainer", "torch_models": "TorchTrainer"}[module]
    args = [json.dumps(value) for value in (specs or {}, list(names), steps)]
    return json.loads(bench("-c", TWIN_LOSSES.format(module=module, trainer=trainer), *args).splitlines()[-1])


def conv(filters: int, size: int = 3, stride: int = 1) -> dict:
    return {"type": "conv", "filters": filters, "size": size, "stride": stride, "pad": size // 2, "bias": False}


COMPOSITES = {
    "small_resnet": {  # a projection block, then an identity one: fashion_resnet's parts, small
        "input": [1, 28, 28],
        "layers": [
            conv(4), {"type": "batchnorm"}, {"type": "relu"}, {"type": "pool", "size": 2},
            {"type": "residual",
             "layers": [conv(8, stride=2), {"type": "batchnorm"}, {"type": "relu"}, conv(8), {"type": "batchnorm"}],
             "shortcut": [conv(8, size=1, stride=2), {"type": "batchnorm"}]},
            {"type": "relu"},
            {"type": "residual", "layers": [conv(8), {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3}]},
            {"type": "relu"}, {"type": "global_avg_pool"}, {"type": "affine", "units": 10},
        ],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005},
    },
    "branchy": {  # concatenated branches, flattened NHWC features (batch norm, a residual block), a sequence, a repeat
        "input": [1, 28, 28],
        "layers": [
            {"type": "branches", "merge": "concat", "branches": [[conv(3, size=1)], [conv(2), {"type": "relu"}]]},
            {"type": "pool", "size": 4}, {"type": "flatten"}, {"type": "batchnorm", "momentum": 0.9},
            {"type": "residual", "layers": [{"type": "affine", "units": 245}]},  # adds features in two orders
            {"type": "sequential", "layers": [{"type": "affine", "units": 12}, {"type": "relu"}]},
            {"type": "repeat", "times": 2, "layers": [{"type": "affine", "units": 12}, {"type": "sigmoid"}]},
            {"type": "residual", "layers": [{"type": "affine", "units": 12}, {"type": "batchnorm", "affine": False}]},
            {"type": "affine", "units": 10},
        ],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    },
}
"""Networks of composite layers, in the catalogue's form, for the twins' tests."""
DROPOUT = {
    "input": [1, 28, 28],
    "layers": [{"type": "affine", "units": 20}, {"type": "dropout", "rate": 0.5}, {"type": "batchnorm"},
               {"type": "affine", "units": 10}],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "sgd", "lr": 0.1},
}
CLASSIC = ["dnn", "two_layer", "simple_cnn", "sigmoid_net", "lenet"]


def assert_same_losses(steps: list[list[float]]) -> None:
    """Each step's Laminae and twin losses, in both modes, alike to float32 rounding."""
    for step, (lam_train, twin_train, lam_infer, twin_infer) in enumerate(steps):
        assert twin_train == pytest.approx(lam_train, rel=1e-5, abs=1e-6), f"step {step}, training mode"
        assert twin_infer == pytest.approx(lam_infer, rel=1e-5, abs=1e-6), f"step {step}, inference mode"


@pytest.fixture(scope="module")
def first_losses():
    """Each catalogue network's first-batch losses in Laminae and in its JAX twin, computed in a child process."""
    return twin_losses("jax_models", [*CLASSIC, "fashion_resnet"])


@needs_jax
@pytest.mark.parametrize("name", [*CLASSIC, "fashion_resnet"])
def test_the_jax_twin_computes_laminaes_first_loss(first_losses, name):
    if name not in first_losses:
        pytest.skip(f"{name} is not in models.toml yet")
    assert_same_losses(first_losses[name])


@pytest.mark.parametrize("module", [pytest.param("jax_models", marks=needs_jax),
                                    pytest.param("torch_models", marks=needs_torch)])
def test_the_twins_of_composite_layers_take_laminaes_first_steps(module):
    """Residual blocks with batch norm and global average pooling (Nesterov, weight
    decay), branches, a sequence, a repeat, batch norm on flattened features: the same
    losses before and after each of two steps, with the batch's statistics and
    with the running averages the steps moved.  With dropout (off in the
    comparison): the same first losses; training draws other masks."""
    losses = twin_losses(module, [*COMPOSITES, "dropout"], {**COMPOSITES, "dropout": DROPOUT}, steps=2)
    for name in COMPOSITES:
        assert_same_losses(losses[name])
    assert_same_losses(losses["dropout"][:1])


@pytest.mark.parametrize("name", ["dnn", "sigmoid_net"])
def test_the_fused_numpy_twin_takes_laminaes_first_step(name):
    """The floor is only a floor if it does the same work: its first SGD step
    must leave Laminae's weights (``floor.check`` raises otherwise)."""
    from benchmarks.fused_numpy import FusedMLP, first_step_difference

    spec = laminae_models.load_specs()[name]
    batch = spec["train"]["batch_size"]
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)
    assert first_step_difference(spec, x, y, batch) < 1e-5
    twin = FusedMLP(laminae.build(spec).network, spec["loss"]["type"], spec["optimizer"]["lr"], batch)
    start = twin.params.copy()
    twin.step(x, y)
    assert np.abs(twin.params - start).max() > 1e-4  # the check compares weights that did move


def test_the_floor_command_prints_laminae_beside_the_fused_twin():
    out = bench("benchmarks/floor.py", "--networks", "sigmoid_net", "--samples", "40", "--rounds", "1",
                "--no-jax", "--threads", "1")
    row = table_row(out, "sigmoid_net")
    assert float(row["Laminae"].replace(",", "")) > 0 and row["JAX"] == "-"


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba (the test extra) is not installed")
def test_the_compiled_batchnorm_command_checks_its_kernels_then_times_them():
    out = bench("benchmarks/compiled_batchnorm.py", "--samples", "128", "--rounds", "1", "--no-torch", "--threads", "1")
    difference = next(line for line in out.splitlines() if line.startswith("largest relative difference"))
    assert 0 < float(difference.rsplit(" ", 1)[1]) < 1e-5  # reordered sums: close, not the same bits
    row = table_row(out, "fashion_resnet")
    assert float(row["Laminae/s"].replace(",", "")) > 0 and float(row["compiled/s"].replace(",", "")) > 0
    assert row["PyTorch/s"] == row["compiled/PyTorch"] == "-"
    assert "with its 8 batch norms compiled" in out


def test_a_missing_numba_is_one_line(tmp_path):
    (tmp_path / "numba.py").write_text("raise ImportError('hidden by the test')\n")
    result = subprocess.run([sys.executable, "benchmarks/compiled_batchnorm.py", "--threads", "1"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert result.returncode == 1 and result.stderr.strip() == "compiled_batchnorm.py needs numba: pip install numba"


def test_the_overhead_command_compares_a_commit_with_the_tree():
    out = bench("benchmarks/overhead.py", "--baseline", "HEAD", "--networks", "sigmoid_net:10",
                "--samples", "40", "--rounds", "1")
    header, row = (line.split() for line in out.splitlines() if line.startswith(("network", "sigmoid_net")))
    assert header == ["network", "batch", "HEAD", "current", "ratio"]
    assert row[:2] == ["sigmoid_net", "10"] and float(row[2]) > 0 and float(row[3]) > 0
