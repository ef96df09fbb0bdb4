"""The cost of a training step on MPI processes, against ``threads = 2`` on this machine,
the bytes a step exchanges, and a model of a step's time on many machines.

    python benchmarks/mpi_step.py [--networks lenet,mnist_best] [--steps 40] [--rounds 3]
    python benchmarks/mpi_step.py --model [--bandwidth 10,1] [--latency 50]

The first times a step (forward, backward, combining the slices and the
optimizer's update) of each network at its own batch size, on the bundled
MNIST sample, four ways, in turns, each in a process of its own, the best
round kept: one process alone (``threads = 1``), ``threads = 2`` (a forked
worker), and ``mpiexec -n 1`` and ``-n 2`` (``mpiexec -n 1`` trains as one
process alone does: one slice, no messages).  It prints a table with the
bytes one step sends: in the binomial tree every process but the first
sends its gradient arena once, and the first broadcasts the sum back,
``2 (N - 1)`` arena-sized messages in all, at most ``ceil(log2 N)`` of them
received by any process in the reduction.

``--model`` prints, for every network of the catalogue, the step's time on
N machines predicted by

    t(N) = t(1) / N + 2 ceil(log2 N) (latency + arena bytes / bandwidth)

(perfect division of the compute; a reduce and a broadcast of ceil(log2 N)
rounds each), with t(1), the one-process step, measured here first.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("threads = 1", "threads = 2", "mpiexec -n 1", "mpiexec -n 2")


def time_steps(name: str, steps: int, threads: int) -> dict:
    """Seconds per step of ``name`` (best of three runs of ``steps`` steps, after a
    warm-up), in this process: on MPI processes when mpiexec started it; the
    result as the JSON printed by rank 0."""
    import laminae
    from laminae.network.catalogue import model_file
    from laminae.training import loop
    from laminae.training.mpi import launched_world
    from laminae.training.signals import GracefulStop
    from laminae.training.state import TrainingState

    registry = laminae.make_registry(autoload=False)
    model = laminae.from_toml(*model_file(name, None), registry=registry, train_overrides={"threads": threads})
    batch = model.train_config.batch_size
    train = registry.create("datasets", "mnist-sample").load([]).train
    world = launched_world()
    state = TrainingState(epochs=1, batch_size=batch, seed=0, samples=len(train), threads=threads)
    params, grads = model.network.params, model.network.grads
    best = math.inf
    with loop._stepper(model, state, registry, world, GracefulStop(agreed=world is not None)) as step:
        for run in range(4):
            started = time.perf_counter()
            for index in range(steps):
                at = (index * batch) % (len(train) - batch)
                x, y = train.x[at : at + batch], train.y[at : at + batch]
                step(x, y, y)
                model.optimizer.step(params, grads)
            if run:  # the first is the warm-up: workers forked, caches filled
                best = min(best, (time.perf_counter() - started) / steps)
    arena = sum(block.nbytes for block in model.network.grad_blocks)
    return {"network": name, "batch": batch, "step_s": best, "arena_bytes": arena}


def exchanged(arena: int, processes: int) -> int:
    """Bytes one step sends between ``processes``: the tree's N - 1 arenas up
    (with 24 bytes of loss, hits and stop each), and N - 1 arenas down."""
    return (processes - 1) * (2 * arena + 24)


def run_way(way: str, name: str, steps: int) -> dict:
    """One measurement in a process of its own."""
    script = [sys.executable, __file__, "--one", name, "--steps", str(steps)]
    if way.startswith("threads"):
        command = [*script, "--threads", way[-1]]
    else:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("no mpiexec: pip install 'laminae[mpi]'")
        command = [mpiexec, "-n", way[-1], *script]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def compare(networks: list[str], steps: int, rounds: int) -> None:
    best: dict[tuple[str, str], dict] = {}
    for _ in range(rounds):
        for name in networks:
            for way in WAYS:
                figures = run_way(way, name, steps)
                if (name, way) not in best or figures["step_s"] < best[name, way]["step_s"]:
                    best[name, way] = figures
    print(f"ms per step (best of {rounds} rounds of {steps} steps, each the best of 3), {os.cpu_count()} cores")
    print("| network | batch | " + " | ".join(WAYS) + " | arena | bytes a step, 2 processes |")
    print("| --- | ---: | " + " | ".join("---:" for _ in WAYS) + " | ---: | ---: |")
    for name in networks:
        first = best[name, WAYS[0]]
        times = " | ".join(f"{best[name, way]['step_s'] * 1e3:.2f}" for way in WAYS)
        print(f"| {name} | {first['batch']} | {times} | {first['arena_bytes']:,} | {exchanged(first['arena_bytes'], 2):,} |")


def model_table(bandwidths_gbit: list[float], latency_us: float, counts: list[int], steps: int) -> None:
    from laminae.network.catalogue import catalogue

    print(f"predicted ms per step on N machines, latency {latency_us:g} us; t(1) measured here ({steps} steps)")
    header = " | ".join(f"N={n} @ {b:g} Gb/s" for b in bandwidths_gbit for n in counts)
    print(f"| network | arena | t(1) | {header} |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in bandwidths_gbit for _ in counts) + " |")
    for name in catalogue():
        figures = run_way("threads = 1", name, steps)
        t1, arena = figures["step_s"], figures["arena_bytes"]
        cells = []
        for gbit in bandwidths_gbit:
            for n in counts:
                rounds = math.ceil(math.log2(n))
                cells.append(f"{(t1 / n + 2 * rounds * (latency_us * 1e-6 + arena * 8 / (gbit * 1e9))) * 1e3:.2f}")
        print(f"| {name} | {arena / 2**20:.2f} MiB | {t1 * 1e3:.2f} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="lenet,mnist_best")
    parser.add_argument("--steps", type=int, default=40, help="steps a timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", action="store_true", help="the time model for the catalogue's networks")
    parser.add_argument("--bandwidth", default="10,1", help="Gb/s, comma-separated (--model)")
    parser.add_argument("--latency", type=float, default=50, help="us (--model)")
    parser.add_argument("--machines", default="2,4,8,16", help="N, comma-separated (--model)")
    parser.add_argument("--one", metavar="NETWORK", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        figures = time_steps(args.one, args.steps, args.threads)
        if os.environ.get("PMI_RANK", "0") == "0":
            print(json.dumps(figures))
        return
    if args.model:
        model_table([float(b) for b in args.bandwidth.split(",")], args.latency,
                    [int(n) for n in args.machines.split(",")], args.steps)
        return
    compare(args.networks.split(","), args.steps, args.rounds)


if __name__ == "__main__":
    main()
