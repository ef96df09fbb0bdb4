"""How much memory a process may still take: what sizes read from a file or a
spec are held against before anything that large is allocated."""
from __future__ import annotations

import os
import resource


def available_bytes() -> int:
    """The memory this process may still allocate: the system's available memory
    (Linux's ``MemAvailable``: free pages and caches it can drop), and, under an
    address-space limit (``RLIMIT_AS``, as a job scheduler or ``ulimit -v``
    sets), what is left of that limit."""
    found = [_meminfo("MemAvailable") or _sysconf_bytes()]
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        found.append(max(0, limit - (_status("VmSize") or 0)))
    return min(found)


def _meminfo(field: str) -> int | None:
    return _kilobytes("/proc/meminfo", field)


def _status(field: str) -> int | None:
    return _kilobytes("/proc/self/status", field)


def _kilobytes(path: str, field: str) -> int | None:
    """``field``'s value in bytes from a ``/proc`` file of ``Name: N kB`` lines, or None (not Linux)."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _sysconf_bytes() -> int:
    """Free physical memory where ``/proc`` is missing (macOS), or a bound no model reaches."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62
