"""The fixed cost of a training step: microseconds per step at small batches,
this tree against an older commit, in turns.

    python benchmarks/overhead.py [--baseline REV] [--networks dnn:1,sigmoid_net:10] [--profile]

At batch 1 no arithmetic hides what a step costs besides its arithmetic
(calls, lookups, allocations): that is what this measures.  Each
measurement is a fresh process that trains ``--samples`` samples through
``Model.fit`` after a warm-up; the baseline's ``core/`` and ``plugins/``
(and its models.toml) are taken from git (``git archive``) and imported
in place of the installed package.  The two take turns for ``--rounds``
rounds, and the best of each is kept, as in run.py.  ``--profile`` adds
the current tree's functions by own time per step (cProfile, which slows
every call alike, so read the shares, not the sums).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(models: Path, name: str, batch: int, samples: int, data_dir: str | None, profile: bool) -> dict:
    """One network's µs per step at ``batch`` (best of three fits), in this process."""
    import laminae
    from laminae.registry import make_registry

    registry = make_registry()
    source = {"type": "mnist", "download": False} if data_dir else {"type": "mnist-sample"}
    train = registry.create("datasets", source).load([data_dir] if data_dir else []).train
    x, y = train.x[:samples], train.y[:samples]
    model = laminae.from_toml(models, name)
    model.fit(x[: 20 * batch], y[: 20 * batch], epochs=1, batch_size=batch, seed=0, progress=False)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=batch, seed=0, progress=False)
        best = min(best, time.perf_counter() - started)
    result = {"us_per_step": best / (len(x) // batch) * 1e6}
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        model.fit(x, y, epochs=1, batch_size=batch, seed=0, progress=False)
        profiler.disable()
        stats = pstats.Stats(profiler)
        steps = len(x) // batch
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:15]
        result["profile"] = [
            (f"{Path(file).name}:{line}({func})", calls / steps, own / steps * 1e6) for (file, line, func), (_, calls, own, _, _) in rows
        ]
    return result


def baseline_tree(rev: str, into: Path) -> tuple[Path, Path]:
    """``rev``'s package laid out for import from ``into``, and its models.toml."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "core", "plugins", "models.toml"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "core").rename(into / "laminae")
    (into / "plugins").rename(into / "laminae" / "plugins")
    return into, into / "models.toml"


def run_worker(site: Path | None, models: Path, name: str, batch: int, args) -> dict:
    env = None
    if site is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, __file__, "--worker", "--models", str(models), "--networks", f"{name}:{batch}",
               "--samples", str(args.samples)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.profile and site is None:
        command.append("--profile")
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git revision to compare against (default: none)")
    parser.add_argument("--networks", default="dnn:1,sigmoid_net:1,two_layer:1,dnn:32,sigmoid_net:10,two_layer:100",
                        help="comma-separated NAME:BATCH (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=3200, help="samples per timed fit (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best is kept (default 5)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: the bundled sample)")
    parser.add_argument("--profile", action="store_true", help="print the current tree's top functions per step")
    parser.add_argument("--models", type=Path, default=ROOT / "models.toml", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    wanted = [(item.split(":")[0], int(item.split(":")[1])) for item in args.networks.split(",")]
    if args.worker:
        name, batch = wanted[0]
        print(json.dumps(measure(args.models, name, batch, args.samples, args.data_dir, args.profile)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"current": (None, args.models)}
        if args.baseline:
            trees = {args.baseline: baseline_tree(args.baseline, Path(scratch)), **trees}
        best = {(label, item): float("inf") for label in trees for item in wanted}
        profiles = {}
        for _ in range(args.rounds):
            for item in wanted:
                for label, (site, models) in trees.items():
                    result = run_worker(site, models, *item, args)
                    best[label, item] = min(best[label, item], result["us_per_step"])
                    if "profile" in result:
                        profiles[item] = result["profile"]
    labels = list(trees)
    print(f"us per training step through Model.fit, best of {args.rounds} alternating rounds of {args.samples} samples")
    header = f"{'network':12s} {'batch':>5s}" + "".join(f" {label:>12s}" for label in labels)
    print(header + (f" {'ratio':>7s}" if len(labels) == 2 else ""))
    for item in wanted:
        values = [best[label, item] for label in labels]
        line = f"{item[0]:12s} {item[1]:5d}" + "".join(f" {value:12,.1f}" for value in values)
        print(line + (f" {values[0] / values[1]:6.2f}x" if len(values) == 2 else ""))
    for (name, batch), rows in profiles.items():
        print(f"\n{name}, batch {batch}: own time per step under cProfile (calls per step, us per step)")
        for where, calls, own in rows:
            print(f"  {own:8.1f} us  {calls:5.1f}x  {where}")


if __name__ == "__main__":
    main()
