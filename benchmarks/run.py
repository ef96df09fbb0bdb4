"""Laminae against JAX, PyTorch and the classic tutorial code, in one process.

    python benchmarks/run.py [--samples N | --batches N] [--networks dnn,simple_cnn] [--data-dir ../shared/data]

Each network trains the same number of mini-batches in each framework, the
frameworks taking turns for several rounds; the best round of each is kept.
What every framework gets alike is stated once, in fairness.py.  See
benchmarks/README.md for what the columns mean.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import fairness  # first: it fixes the cores and BLAS threads before numpy starts its pool

import numpy as np  # noqa: E402

import gemm_peak  # noqa: E402
import laminae  # noqa: E402
import laminae_models as lm  # noqa: E402
import tutorial_numpy  # noqa: E402

THREADS = fairness.THREADS
TARGETS = {"dnn": 2.0, "simple_cnn": 2.0}
"""Laminae/PyTorch throughput each network should reach; every other: 1.0."""
BEST_TARGET, TUTORIAL_TARGET, PEAK_TARGET, RSS_TARGET_MB = 1.0, 10.0, 0.40, 1536
"""``BEST_TARGET``: Laminae's throughput over the faster of JAX and PyTorch, on every network."""
PEERS = {"jax": "JAX", "torch": "PyTorch"}
"""The compiled frameworks Laminae is ranked against (``L/best``), by run name."""


def load_data(data_dir: str | None, full: bool = True, dataset: str = "mnist") -> tuple[np.ndarray, np.ndarray, str]:
    """``dataset``'s training images (``mnist``, ``fashion-mnist``) from ``data_dir``,
    else the bundled MNIST sample, else noise."""
    from laminae.registry import make_registry

    registry = make_registry()
    full = full and dataset != "mnist-sample"
    attempts = [(dataset, {"download": False}, [data_dir])] if data_dir and full else []
    attempts.append(("mnist-sample", {}, []))
    for name, options, roots in attempts:
        try:
            splits = registry.create("datasets", {"type": name, **options}).load(roots)
            return splits.train.x, splits.train.y, splits.source
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next source
            print(f"({name} unavailable: {exc})", file=sys.stderr)
    rng = np.random.default_rng(0)
    return rng.random((5000, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 5000), f"random data (no {dataset} found)"


class Contenders:
    """One network in each framework, all from the same spec and initial weights.

    ``jax_twin``, ``torch_twin``: the modules ``jax_models`` and ``torch_models``,
    or None to leave that framework out; ``tutorial``: include the tutorial code."""

    def __init__(self, spec: dict, x: np.ndarray, y: np.ndarray, batch: int,
                 jax_twin=None, torch_twin=None, tutorial: bool = True) -> None:
        self.batch, self.x, self.y = batch, x, y
        self.model = laminae.build(lm.without_augmentation(spec))
        loss, sgd = lm.hyperparameters(spec)
        self.runs = {"laminae": lambda: lm.train(self.model, x, y, batch, seed=0)}
        if jax_twin is not None:
            self.jax = jax_twin.JaxTrainer(self.model.network, loss, sgd)
            jax_data = self.jax.to_device(x, y)
            self.runs["jax"] = lambda: self.jax.train(jax_data, batch)
        if torch_twin is not None:
            self.torch = torch_twin.TorchTrainer(self.model.network, loss, sgd)
            self.runs["torch"] = lambda: self.torch.train(x, y, batch)
        self.tutorial = None
        if tutorial:
            try:
                self.tutorial = tutorial_numpy.from_layers(lm.layer_fields(self.model.network), lm.plain_loss(loss), sgd)
            except (NotImplementedError, KeyError):
                pass
            else:
                x64, rng = x.astype(np.float64), np.random.default_rng(0)
                self.runs["tutorial"] = lambda: self.tutorial.train(x64, y, batch, rng)

    def initial_losses(self, training: bool = True) -> dict[str, float]:
        """Each twin's loss on the first batch before training, in training mode
        (batch norm with the batch's statistics; dropout off) or not: equal if
        the translation is right."""
        xb, yb = self.x[: self.batch], self.y[: self.batch]
        if training:
            out = {"laminae": lm.training_loss(self.model, xb, yb)}
        else:
            out = {"laminae": self.model.loss.forward(lm.single_view_scores(self.model.network, xb), yb)}
        if "jax" in self.runs:
            out["jax"] = self.jax.first_loss(xb, yb, training)
        if "torch" in self.runs:
            out["torch"] = self.torch.first_loss(xb, yb, training)
        if self.tutorial is not None:
            out["tutorial"] = float(self.tutorial.loss(xb.astype(np.float64), yb))
        return out

    def check_losses(self, name: str) -> None:
        """Print a WARNING if the twins disagree on the first batch's loss, in either mode."""
        for mode, training in (("training", True), ("inference", False)):
            losses = self.initial_losses(training)
            if max(losses.values()) - min(losses.values()) > 1e-3 * max(1.0, abs(losses["laminae"])):
                print(f"WARNING {name}: the twins disagree on the initial loss in {mode} mode {losses}")

    def warm_up(self) -> None:
        """One whole run of each, untimed: PyTorch takes a while to settle, JAX compiles."""
        for run in self.runs.values():
            run()

    def best_seconds(self, rounds: int) -> dict[str, float]:
        self.warm_up()
        return fairness.best_seconds(self.runs, rounds)


def import_twins(args: argparse.Namespace) -> tuple[object | None, object | None]:
    """``(jax_models, torch_models)``, each None where ``--no-jax``/``--no-torch``
    or its framework (the optional `bench` extra) is not installed; the header
    line says which."""
    twins, notes = [], []
    for flag, module, name in (("no_jax", "jax_models", "JAX"), ("no_torch", "torch_models", "PyTorch")):
        twin = None
        if not getattr(args, flag):
            try:
                twin = importlib.import_module(module)
            except ImportError:
                notes.append(f"{name} not installed (pip install '.[bench]'): no {name} column")
        twins.append(twin)
    jax_twin, torch_twin = twins
    versions = [f"numpy {np.__version__}"]
    if jax_twin is not None:
        versions.append(f"jax {jax_twin.jax.__version__} on {fairness.cpus()} CPUs")
    if torch_twin is not None:
        torch_twin.torch.set_num_threads(args.threads)
        versions.append(f"torch {torch_twin.torch.__version__}, {torch_twin.torch.get_num_threads()} threads")
    print("; ".join(versions + notes))
    return jax_twin, torch_twin


def profile_laminae(contenders: Contenders, lines: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(contenders.runs["laminae"])
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(lines)
    return text.getvalue()


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    Linux's ``VmHWM`` belongs to the process image and starts afresh at exec;
    ``ru_maxrss`` does not: a child started by a parent holding 1 GB reports
    at least 1 GB (measured here: 1140 MB against a real 274 MB), so it is
    only the fallback where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_worker(args: argparse.Namespace) -> None:
    """Child process: train one network on the full data set, then report peak RSS (MB)."""
    spec = lm.load_specs(args.models)[args.rss_worker]
    x, y, _ = load_data(args.data_dir, dataset=spec["train"]["dataset"])
    loaded = peak_rss_mb()
    start = time.perf_counter()
    lm.train(laminae.build(spec), x, y, spec["train"]["batch_size"], seed=0)
    peak = peak_rss_mb()
    # The largest worker process (a forked one counts every page it shares with this one, the data included).
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{peak:.0f} {loaded:.0f} {len(x)} {time.perf_counter() - start:.1f} {workers:.0f}")


def measure_rss(args: argparse.Namespace, network: str) -> str:
    command = [sys.executable, __file__, "--rss-worker", network, "--threads", str(args.threads)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--models", str(args.models)] if args.models else []
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"peak RSS: measurement failed: {result.stderr.strip().splitlines()[-1:]}"
    peak, loaded, samples, seconds, workers = result.stdout.split()
    total = float(peak) + float(workers)
    verdict = "meets" if total < RSS_TARGET_MB else "MISSES"
    return (f"peak RSS, Laminae {network}, one epoch of {samples} samples in its own process: {peak} MB"
            f" ({loaded} MB after loading the data; {seconds} s), plus {workers} MB in its largest worker process"
            f" (pages shared with the training process counted in both) - {verdict} the < {RSS_TARGET_MB} MB target")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=12800,
                        help="training samples per timed run, rounded up to whole batches (default 12800: long"
                             " enough that waking the thread pools after the settle pause does not count)")
    parser.add_argument("--batches", type=int, help="mini-batches per timed run (overrides --samples)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="cores for every framework: BLAS and PyTorch threads, the CPUs JAX may use (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best is kept (default 3)")
    parser.add_argument("--networks", help="comma-separated models.toml names (default: "
                        + ", ".join(lm.NETWORKS) + ", those the models file has)")
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/"
                                           " (default: the bundled 5,000-digit sample)")
    parser.add_argument("--models", type=Path, help="models.toml to read (default: the project's)")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX out")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-rss", action="store_true", help="skip the full-epoch peak-memory run")
    parser.add_argument("--profile", action="store_true", help="print the top 15 functions of each Laminae run")
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_worker:
        rss_worker(args)
        return 0

    specs = lm.load_specs(args.models)
    names = choose_networks(args.networks, specs)
    data = {}
    for dataset in dict.fromkeys(specs[name]["train"]["dataset"] for name in names):
        x, y, source = load_data(args.data_dir, dataset=dataset)
        data[dataset] = x, y
        print(f"data for {dataset}: {source}")
    jax_twin, torch_twin = import_twins(args)  # only here, so the peak-memory child never loads them
    with_torch = torch_twin is not None
    peak = gemm_peak.gemm_peak()
    per_run = f"{args.batches} batches" if args.batches else f"{args.samples} samples"
    print(f"best of {args.rounds} alternating rounds of {per_run} each\n")

    contenders, batches = {}, {}
    for name in names:
        spec = specs[name]
        x, y = data[spec["train"]["dataset"]]
        batch = spec["train"]["batch_size"]
        batches[name] = min(args.batches or -(-args.samples // batch), len(x) // batch)
        count = batches[name] * batch
        contenders[name] = Contenders(spec, x[:count], y[:count], batch, jax_twin, torch_twin)
        contenders[name].check_losses(name)
        contenders[name].warm_up()
    seconds_by_network = fairness.best_seconds_by_group(
        {name: each.runs for name, each in contenders.items()}, args.rounds
    )
    rows, floors = [], []
    for name, each in contenders.items():
        batch, network, seconds = each.batch, each.model.network, seconds_by_network[name]
        rate = {k: batches[name] * batch / s for k, s in seconds.items()}
        flops = None
        if any(node.type == "conv" for node in network.nodes.values()):
            flops = gemm_peak.step_flops(network, batch) * batches[name] / seconds["laminae"]
        rows.append((name, batch, rate, flops))
        alone = gemm_floors(network, batch, args.threads, with_torch)
        floors.append((name, batch, rate, alone, gemm_peak.step_flops(network, batch)))
        if args.profile:
            print(f"--- profile: Laminae {name}, {batches[name]} batches ---\n{profile_laminae(each)}")
        print(f"({name} done)", file=sys.stderr)

    peak_after = gemm_peak.gemm_peak()
    # A busy machine only ever lowers a measurement, so the higher peak is the truer one.
    rows = [(name, batch, rate, flops and flops / max(peak, peak_after)) for name, batch, rate, flops in rows]
    misses = [miss for name, _, rate, fraction in rows for miss in check_targets(name, rate, fraction)]
    print_table(rows)
    print_gemm_floors(floors, max(peak, peak_after))
    print(f"\nfloat32 GEMM peak (2048^3 np.matmul, best of 5, before/after): {peak / 1e9:.1f} / {peak_after / 1e9:.1f} GFLOP/s")
    if not args.no_rss:
        print(measure_rss(args, "simple_cnn"))
    print("targets missed: " + ("; ".join(misses) if misses else "none"))
    return 0


def choose_networks(networks: str | None, specs: dict) -> list[str]:
    """The networks ``--networks`` names, or by default those of ``lm.NETWORKS``
    the models file has (a note for each it lacks)."""
    if networks:
        names = networks.split(",")
        missing = [name for name in names if name not in specs]
        if missing:
            raise SystemExit(f"not in the models file: {', '.join(missing)} (it has {', '.join(specs)})")
        return names
    for name in lm.NETWORKS:
        if name not in specs:
            print(f"({name} is not in the models file: no row for it)")
    return [name for name in lm.NETWORKS if name in specs]


def check_targets(name: str, rate: dict[str, float], fraction: float | None) -> list[str]:
    misses = []
    target = TARGETS.get(name, 1.0)
    best = best_peer(rate)
    if best and rate["laminae"] < BEST_TARGET * best:
        misses.append(f"{name} {rate['laminae'] / best:.2f}x the faster of JAX and PyTorch < {BEST_TARGET}x")
    if "torch" in rate and rate["laminae"] < target * rate["torch"]:
        misses.append(f"{name} {rate['laminae'] / rate['torch']:.2f}x PyTorch < {target}x")
    if name == "simple_cnn" and "tutorial" in rate and rate["laminae"] < TUTORIAL_TARGET * rate["tutorial"]:
        misses.append(f"{name} {rate['laminae'] / rate['tutorial']:.1f}x tutorial < {TUTORIAL_TARGET}x")
    if fraction is not None and fraction < PEAK_TARGET:
        misses.append(f"{name} {fraction:.0%} of GEMM peak < {PEAK_TARGET:.0%}")
    return misses


def best_peer(rate: dict[str, float]) -> float | None:
    """The faster of JAX and PyTorch (samples/s), None if neither ran."""
    return max((rate[peer] for peer in PEERS if peer in rate), default=None)


def per_second(rate: float | None) -> str:
    return f"{rate:,.0f}" if rate else "-"


def print_table(rows: list) -> None:
    header = ("network", "batch", "Laminae/s", "JAX/s", "PyTorch/s", "L/JAX", "L/PyTorch", "L/best",
              "tutorial/s", "L/tutorial", "GEMM peak")
    lines = [header]
    for name, batch, rate, fraction in rows:
        lam, jx, tor, tut = rate["laminae"], rate.get("jax"), rate.get("torch"), rate.get("tutorial")
        lines.append((name, str(batch), per_second(lam), per_second(jx), per_second(tor), ratio(lam, jx),
                      ratio(lam, tor), ratio(lam, best_peer(rate)), per_second(tut), ratio(lam, tut),
                      f"{fraction:.0%}" if fraction else "-"))
    print_columns(lines)
    print("L/best: Laminae's throughput over the faster of JAX and PyTorch")


def print_columns(lines: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))


def gemm_floors(network, batch: int, threads: int, with_torch: bool) -> dict[str, float]:
    """Seconds one step's GEMMs take alone: in numpy with the BLAS on every
    thread (``laminae``); as ``threads`` slices of the batch side by side,
    one BLAS thread each, the way a data-parallel step runs them
    (``sliced``: the time of one slice, as if the cores shared nothing);
    and in PyTorch's BLAS (``torch``)."""
    from threadpoolctl import threadpool_limits

    shapes = gemm_peak.step_gemms(network, batch)
    alone = {"laminae": gemm_peak.gemm_seconds(shapes)}
    if threads > 1:
        with threadpool_limits(limits=1, user_api="blas"):
            alone["sliced"] = gemm_peak.gemm_seconds(gemm_peak.step_gemms(network, -(-batch // threads)))
    if with_torch:
        alone["torch"] = gemm_peak.gemm_seconds(shapes, gemm_peak.torch_matmul())
    return alone


def print_gemm_floors(floors: list, peak: float) -> None:
    """The GEMMs of one step alone: how much of each step is matrix products,
    how far PyTorch's BLAS is ahead at these shapes, and the bounds that follow
    for a step that did nothing but its GEMMs, split the faster way."""
    print("\nGEMMs alone at the shapes of one training step (float32, each product the best of 20):")
    header = ("network", "numpy us", "sliced us", "PyTorch us", "Laminae step us", "PyTorch step us",
              "share of Laminae step", "L/PyTorch bound", "GEMM peak bound")
    lines = [header]
    for name, batch, rate, alone, flops in floors:
        lam_step, tor_step = batch / rate["laminae"], batch / rate["torch"] if "torch" in rate else None
        best = min(alone["laminae"], alone.get("sliced", float("inf")))
        lines.append((name, *(f"{alone[key] * 1e6:,.0f}" if key in alone else "-" for key in ("laminae", "sliced", "torch")),
                      f"{lam_step * 1e6:,.0f}", f"{tor_step * 1e6:,.0f}" if tor_step else "-",
                      f"{best / lam_step:.0%}", ratio(tor_step, best), f"{flops / best / peak:.0%}"))
    print_columns(lines)
    print("numpy: the whole batch, BLAS on every thread; sliced: one of --threads slices of the batch on one BLAS thread,"
          "\nthe slices side by side; the share and bounds use the faster of the two (a step doing nothing but its GEMMs)")


if __name__ == "__main__":
    sys.exit(main())
