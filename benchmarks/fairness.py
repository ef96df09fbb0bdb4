"""What every framework in a benchmark gets alike, stated once.

Import this module before numpy, PyTorch or JAX: it fixes the cores first.

- **The same cores.**  ``--threads T`` (default 2) is read from the command
  line here, before any framework starts its thread pools.  The process may
  then run on T CPUs only (``os.sched_setaffinity``): that is the one limit
  JAX obeys (XLA sizes its pool from the CPUs it may use; its flags did not
  limit this version).  numpy's BLAS is told T through its environment
  variables, PyTorch through ``torch.set_num_threads(T)``.
- **Turns, best kept.**  The frameworks take turns within each round, and
  run.py's rounds go through every network before the next round starts,
  so a slow spell on a shared machine (minutes long, on this virtual
  machine) hits all frameworks alike and costs each network a round rather
  than all of its rounds; the best round of each is kept, because noise only
  ever makes a run slower.
- **The same allocator settings**: glibc's malloc keeps large buffers in its
  heap instead of mapping fresh pages for each one and returning them at
  ``free``.  A framework that allocates its temporaries at every step (JAX,
  PyTorch) otherwise pays page faults for them at every step: measured here,
  JAX's simple_cnn fell from 20,000 to 7,500 samples/s between batch 64 and
  128, and PyTorch's halved at 512.
- **A settle pause** before each timed run: the previous framework's worker
  threads (PyTorch's OpenMP pool, OpenBLAS's) spin for a while after their
  last task and would otherwise take a core from the next one.
- **The same work.**  Every twin is translated from the built Laminae network
  (same layers, initial weights and batch-norm averages, loss and SGD
  settings), trains the same number of mini-batches of the same data, and is
  checked on the first batch's loss, in training and in inference mode,
  before anything is timed.  No framework augments the batches (Laminae's
  ``train.augment`` is left out); a learning-rate schedule, which Laminae
  follows and the twins do not, changes the step size, not the work.  Each
  framework's data is put once, untimed, where it would keep it: numpy
  arrays for Laminae and PyTorch (which shares their memory), device arrays
  in JAX's own layout for JAX.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import time
from typing import Callable


def _threads_flag() -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=2)
    return pre.parse_known_args()[0].threads


THREADS = _threads_flag()
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere JAX may use every core
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])


def _keep_large_buffers_in_the_heap() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if hasattr(libc, "mallopt"):  # glibc: M_MMAP_MAX = 0 (never mmap), M_TRIM_THRESHOLD = 2 GiB (rarely trim)
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 2**31 - 1)


_keep_large_buffers_in_the_heap()
SETTLE_SECONDS = 0.5


def cpus() -> int:
    """How many CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def best_seconds(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Each run's best time over ``rounds`` rounds, the runs taking turns within each round."""
    return best_seconds_by_group({None: runs}, rounds)[None]


def best_seconds_by_group(groups: dict, rounds: int) -> dict:
    """``{group: {run: best seconds}}`` for ``{group: {run: callable}}``: every
    round times each group's runs in turn, group after group, so that a slow
    spell of the machine (minutes, on a shared virtual machine) costs each
    group a round or two rather than all the rounds of one group."""
    best = {group: dict.fromkeys(runs, float("inf")) for group, runs in groups.items()}
    for _ in range(rounds):
        for group, runs in groups.items():
            for name, run in runs.items():
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                run()
                best[group][name] = min(best[group][name], time.perf_counter() - start)
    return best
