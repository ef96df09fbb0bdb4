"""How cost grows with the batch size: Laminae, JAX and PyTorch, in one process.

    python benchmarks/sweep.py [--networks dnn,simple_cnn] [--batch-sizes 8,16,...,512] [--out sweep.png]

Each point trains the same number of samples (``--samples``) in each framework,
which take turns as in run.py (the same fairness rules: fairness.py); the best
of ``--rounds`` is kept.  The throughput table is printed, and the curves are
drawn on a log-scaled batch axis into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import fairness  # first: it fixes the cores and BLAS threads before numpy starts its pool

import laminae_models as lm  # noqa: E402
import run  # noqa: E402

BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
NAMES = {"laminae": "Laminae", **run.PEERS}


def sweep_network(name: str, spec: dict, x, y, batch_sizes, args, jax_twin, torch_twin) -> dict[int, dict[str, float]]:
    """``{batch: {framework: samples/s}}`` for one network."""
    rates = {}
    for batch in batch_sizes:
        batches = max(1, min(args.samples // batch, len(x) // batch))
        point = {**spec, "train": {**spec["train"], "batch_size": batch}}
        contenders = run.Contenders(point, x[: batches * batch], y[: batches * batch], batch,
                                    jax_twin, torch_twin, tutorial=False)
        contenders.check_losses(f"{name} batch {batch}")
        seconds = contenders.best_seconds(args.rounds)
        rates[batch] = {k: batches * batch / s for k, s in seconds.items()}
        print(f"({name} batch {batch} done)", file=sys.stderr)
    return rates


def print_sweep(results: dict[str, dict[int, dict[str, float]]]) -> None:
    frameworks = [k for k in NAMES if any(k in rate for by_batch in results.values() for rate in by_batch.values())]
    lines = [("network", "batch", *(f"{NAMES[k]}/s" for k in frameworks), "L/best")]
    for name, by_batch in results.items():
        for batch, rate in by_batch.items():
            lines.append((name, str(batch), *(run.per_second(rate.get(k)) for k in frameworks),
                          run.ratio(rate["laminae"], run.best_peer(rate))))
    run.print_columns(lines)
    print("samples/s; L/best: Laminae's throughput over the faster of JAX and PyTorch")


def plot(results: dict[str, dict[int, dict[str, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, by_batch) in zip(axes[0], results.items()):
        batches = list(by_batch)
        for key, label in NAMES.items():
            if key in by_batch[batches[0]]:
                ax.plot(batches, [by_batch[b][key] / 1000 for b in batches], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_ylim(bottom=0)
        ax.set(title=name, xlabel="batch size", ylabel="thousand samples/s")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="dnn,simple_cnn", help="comma-separated models.toml names")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated (default 8 to 512, doubling)")
    parser.add_argument("--samples", type=int, default=8192,
                        help="training samples per timed run, rounded down to whole batches (default 8192)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best is kept (default 3)")
    parser.add_argument("--threads", type=int, default=fairness.THREADS, help="cores for every framework (default 2)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: the bundled 5,000-digit sample)")
    parser.add_argument("--models", type=Path, help="models.toml to read (default: the project's)")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX out")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sweep.png", help="the plot (PNG)")
    args = parser.parse_args(argv)

    specs = lm.load_specs(args.models)
    x, y, source = run.load_data(args.data_dir)
    print(f"data: {source}")
    jax_twin, torch_twin = run.import_twins(args)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"best of {args.rounds} alternating rounds of {args.samples} samples at each point\n")
    results = {name: sweep_network(name, specs[name], x, y, batch_sizes, args, jax_twin, torch_twin)
               for name in args.networks.split(",")}
    print_sweep(results)
    try:
        plot(results, args.out, f"{args.threads} threads, {args.samples} samples a point, best of {args.rounds}")
    except ImportError:
        print("matplotlib not installed (pip install '.[bench]'): no plot")
    else:
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
