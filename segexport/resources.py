"""What this process may use and has used: CPU cores, available memory, peak resident memory.

Torch-free and cheap (reads /proc, /sys and getrusage), so planners can size worker pools
before any heavy import.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available now: MemAvailable, capped by a cgroup v2 limit; None when unknown."""
    avail: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(0, int(limit) - used)
            avail = room if avail is None else min(avail, room)
    return avail


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is bytes on macOS, KiB elsewhere)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
