"""How much memory a process may still take: what sizes read from a file or a
spec are held against before anything that large is allocated."""
from __future__ import annotations

import os

try:
    import resource
except ImportError:  # Windows: no address-space limit to read
    resource = None


def available_bytes() -> int:
    """The memory this process may still allocate: the system's available memory,
    and, under an address-space limit, what is left of that limit once the
    process's own address space (``VmSize``) is taken off."""
    found = [system_available_bytes()]
    limit = address_space_limit()
    if limit is not None:
        found.append(max(0, limit - (_status("VmSize") or 0)))
    return min(found)


def system_available_bytes() -> int:
    """Linux's ``MemAvailable`` (free pages and caches it can drop), else the
    free or total physical memory, else a bound no file or model reaches."""
    return _meminfo("MemAvailable") or _sysconf_bytes()


def address_space_limit() -> int | None:
    """The soft ``RLIMIT_AS`` (as a job scheduler or ``ulimit -v`` sets it), or None."""
    if resource is None:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if limit == resource.RLIM_INFINITY else limit


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
    """Free physical memory where ``/proc`` is missing, else all of it (macOS has
    no count of free pages), else a bound no model reaches."""
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            continue
    return 2**62
