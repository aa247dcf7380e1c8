"""How many CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (v2 `cpu.max`, v1 CFS)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def quota_v2(cpu_max: str) -> float | None:
    """CPUs a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD") allows; None: no quota."""
    fields = cpu_max.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(cfs_quota_us: str, cfs_period_us: str) -> float | None:
    """CPUs a cgroup v1 CFS quota allows (`cpu.cfs_quota_us` -1: none)."""
    try:
        quota, period = int(cfs_quota_us), int(cfs_period_us)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its v1 `cpu` controller path, from /proc/self/cgroup."""
    unified = v1_cpu = None
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            unified = path
        elif "cpu" in controllers.split(","):
            v1_cpu = path
    return unified, v1_cpu


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup directory of `path` under `mount` and every parent up to the mount (a quota anywhere above counts)."""
    parts = [part for part in path.split("/") if part]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota on this process's cgroup and its parents (v2, else v1); None: no quota."""
    proc_cgroup = _read(root / "proc/self/cgroup")
    if proc_cgroup is None:
        return None
    unified, v1_cpu = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    if unified is not None:
        for directory in _ancestors(root / "sys/fs/cgroup", unified):
            text = _read(directory / "cpu.max")
            quota = quota_v2(text) if text is not None else None
            if quota is not None:
                quotas.append(quota)
    if v1_cpu is not None:
        for mount in (root / "sys/fs/cgroup/cpu,cpuacct", root / "sys/fs/cgroup/cpu"):
            for directory in _ancestors(mount, v1_cpu):
                quota_text, period_text = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
                quota = quota_v1(quota_text, period_text) if quota_text is not None and period_text is not None else None
                if quota is not None:
                    quotas.append(quota)
    return min(quotas) if quotas else None


def usable_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may run on (affinity), capped by the cgroup quota rounded up; at least 1."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        allowed = min(allowed, math.ceil(quota))
    return max(1, allowed)
