"""The fastest step numpy can take: a hand-fused twin of each fully connected
network, timed in turns with Laminae and JAX.

    python benchmarks/floor.py [--networks dnn,sigmoid_net,two_layer] [--data-dir ../shared/data]

The twin (fused_numpy.py) is what no framework can beat with numpy calls
alone: every buffer allocated once, the bias, activation and loss written
into the products' own outputs, the parameters in one flat array updated
by two calls, no Python between the calls but the calls.  Where JAX is faster
than this twin, no rearrangement of numpy calls in Laminae can catch up;
only fused kernels could.  Same data, batches, initial weights and SGD as
run.py (whose fairness rules apply: fairness.py).
"""
from __future__ import annotations

import argparse
import sys

import fairness  # first: it fixes the cores and BLAS threads before numpy starts its pool

import numpy as np  # noqa: E402

import laminae_models as lm  # noqa: E402
import run  # noqa: E402
from fused_numpy import FusedMLP, first_step_difference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="dnn,sigmoid_net,two_layer", help="comma-separated models.toml names")
    parser.add_argument("--samples", type=int, default=12800, help="training samples per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best is kept (default 5)")
    parser.add_argument("--threads", type=int, default=fairness.THREADS, help="cores for every framework (default 2)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: the bundled 5,000-digit sample)")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX out")
    args = parser.parse_args()
    args.no_torch = True
    x_all, y_all, source = run.load_data(args.data_dir)
    print(f"data: {source}")
    jax_twin, _ = run.import_twins(args)
    specs = lm.load_specs()
    lines = [("network", "batch", "Laminae", "fused", "JAX", "L/fused", "fused/JAX")]
    for name in args.networks.split(","):
        spec = specs[name]
        batch = spec["train"]["batch_size"]
        count = -(-args.samples // batch) * batch
        x, y = x_all[:count], y_all[:count]
        contenders = run.Contenders(spec, x, y, batch, jax_twin, None, tutorial=False)
        loss, sgd = lm.hyperparameters(spec)
        if set(sgd) != {"lr"}:
            raise SystemExit(f"{name}: the fused twin knows plain SGD only, not {sorted(sgd)}")
        difference = first_step_difference(spec, x, y, batch)
        if difference > 1e-5:
            raise SystemExit(f"{name}: the fused twin's first step differs from Laminae's by {difference:.3g}")
        fused = FusedMLP(contenders.model.network, lm.plain_loss(loss), sgd["lr"], batch)
        contenders.runs["fused"] = lambda: fused.train(x, y, np.random.default_rng(0))
        seconds = contenders.best_seconds(args.rounds)
        steps = count // batch
        us = {k: s / steps * 1e6 for k, s in seconds.items()}
        lines.append((name, str(batch), f"{us['laminae']:,.1f}", f"{us['fused']:,.1f}",
                      f"{us['jax']:,.1f}" if "jax" in us else "-",
                      f"{us['fused'] / us['laminae']:.2f}x",
                      f"{us['jax'] / us['fused']:.2f}x" if "jax" in us else "-"))
        print(f"({name} done)", file=sys.stderr)
    run.print_columns(lines)
    print("us per training step (fused: the hand-fused numpy twin), best of the rounds; L/fused and fused/JAX: throughput ratios"
          " (above 1: the first is faster)")


if __name__ == "__main__":
    main()
