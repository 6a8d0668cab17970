"""Memory this process may really use: the cgroup limit and the kernel's available memory, not the host's RAM.

Inside a Docker or Kubernetes memory limit (or a systemd slice) the physical RAM a process can query is the host's:
on a 256 GB host with an 8 GB limit, planning against 256 GB ends with the kernel's OOM killer, which leaves no
message and no checkpoint. So a plan counts the smallest of:

* ``MemAvailable`` from ``/proc/meminfo``: what the kernel can hand out without swapping, net of what this and
  every other process already hold (the model already loaded included);
* the headroom under the memory limit of this process's cgroup and of each of its ancestors (a limit may sit on a
  parent slice): ``memory.max - memory.current`` on cgroup v2, ``memory.limit_in_bytes - memory.usage_in_bytes``
  on v1, where ``max`` and v1's huge "no limit" value mean none.

Processes that share the machine (``LOCAL_WORLD_SIZE`` ranks of one job on one host) plan with an equal share
each: they draw on the same memory at the same time. Without ``/proc`` (macOS) the physical memory is the fallback.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit value (9223372036854771712); anything this large is.
NO_LIMIT = 2**60


def _read_bytes(path: Path) -> int | None:
    """A cgroup file's byte count; None when absent, unreadable or unlimited."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= NO_LIMIT else value


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each parent up to ``base``; in a container the path may not exist under the mount (the
    mount's root is then the container's own cgroup)."""
    parts = [p for p in rel.strip("/").split("/") if p]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_memory(root: Path | None = None, proc_cgroup: Path | None = None) -> tuple[int, int] | None:
    """(limit, usage) in bytes of the tightest cgroup memory limit over this process's cgroup and its ancestors
    (v1 or v2), the one with the least headroom; None when no limit is set or cgroups are not there."""
    root = root or CGROUP_ROOT
    try:
        lines = (proc_cgroup or PROC_CGROUP).read_text().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and controllers == "":  # v2: the one unified hierarchy
            base, names = root, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            base, names = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for folder in _ancestors(base, path):
            limit = _read_bytes(folder / names[0])
            if limit is not None:
                found.append((limit, _read_bytes(folder / names[1]) or 0))
    return min(found, key=lambda lu: lu[0] - lu[1]) if found else None


def mem_available(meminfo: Path | None = None) -> int | None:
    """``MemAvailable`` in bytes, or None without ``/proc/meminfo``."""
    try:
        for line in (meminfo or MEMINFO).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def local_processes() -> int:
    """Processes of this job on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate), at least 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def size_text(n: int) -> str:
    """Bytes for a message: GB from one GB up, else MB."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:,.1f} MB"


def usable_memory(processes: int | None = None) -> tuple[int | None, str]:
    """Bytes this process may still take and what they are, for a message (see the module docstring).

    Args:
        processes: How many processes share the machine's memory (default: :func:`local_processes`); the
            result is one process's equal share.

    Returns:
        (bytes or None when nothing is known, a description such as "the 3.2 GB left under the cgroup's 8.0 GB
        limit, shared by 2 processes").
    """
    known = []
    available = mem_available()
    if available is not None:
        known.append((available, f"the {size_text(available)} of memory available"))
    cgroup = cgroup_memory()
    if cgroup is not None:
        limit, usage = cgroup
        left = max(0, limit - usage)
        known.append((left, f"the {size_text(left)} left under the cgroup's {size_text(limit)} memory limit"))
    if not known:
        physical = _physical()
        if physical is None:
            return None, "memory"
        known.append((physical, f"the {size_text(physical)} of memory"))
    amount, what = min(known)
    n = local_processes() if processes is None else max(1, processes)
    if n > 1:
        amount //= n
        what += f", shared by {n} processes on this machine"
    return amount, what
