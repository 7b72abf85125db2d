"""Small timing helpers shared by the benchmark scripts (medians of repeated runs, one process)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, warmup: int = 2, iters: int = 10) -> float:
    """Median wall time of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(calls: dict[str, Callable[[], object]], rounds: int, iters: int = 1) -> dict[str, list[float]]:
    """Per runtime, one median of ``iters`` calls per round, over ``rounds`` rounds that run every runtime in turn.

    Each round starts one runtime later than the last, so none always runs right after the
    same other one (measured here: always timing B after A made B 6% slower than A in a
    fixed order and 2% faster in a rotating one). Every call is warmed up three times first
    (TorchScript's profiling executor optimizes the graph after its first runs).
    """
    for call in calls.values():
        median_seconds(call, warmup=3, iters=1)
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(median_seconds(calls[name], warmup=0, iters=iters))
    return samples


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def machine() -> str:
    """A one-line description of the machine for the tables."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
