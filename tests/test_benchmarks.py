"""The benchmark's own arithmetic: what it times must be the work a step does.

A GEMM form that computed something other than ``a @ b`` would time the
wrong work, and a wrong list of a step's products would make every
"bound" it prints meaningless; the command itself must run end to end.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import laminae
from benchmarks.gemm_peak import _numpy_forms, step_flops, step_gemms

ROOT = Path(__file__).resolve().parent.parent


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


def test_the_benchmark_command_prints_both_tables():
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--networks", "two_layer", "--batches", "2", "--rounds", "1",
         "--no-rss", "--no-torch", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "network" in out and "L/tutorial" in out
    assert "GEMMs alone at the shapes of one training step" in out
    row = next(line for line in out.splitlines() if line.startswith("two_layer") and "%" in line)
    share, peak_bound = (float(cell.rstrip("%")) for cell in row.split() if cell.endswith("%"))
    assert 0 < share <= 100 and peak_bound > 0  # share of the Laminae step spent in its GEMMs
