"""The default worker count: CPU affinity capped by a cgroup quota (v2 cpu.max, v1 CFS), at least 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geolb.cpus import cgroup_quota, quota_v1, quota_v2, usable_cpus


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),
        ("100000 100000\n", 1.0),
        ("150000 100000\n", 1.5),
        ("50000 100000\n", 0.5),
        ("200000\n", 2.0),  # period left out: the kernel's default 100 ms
        ("", None),
        ("garbage here\n", None),
        ("0 100000\n", None),
    ],
)
def test_quota_v2(text: str, cpus: float | None) -> None:
    assert quota_v2(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1\n", "100000\n", None), ("300000\n", "100000\n", 3.0), ("x", "100000", None), ("1", "0", None)]
)
def test_quota_v1(quota: str, period: str, cpus: float | None) -> None:
    assert quota_v1(quota, period) == cpus


def fake_root(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(proc_cgroup)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_v2_quota_on_the_process_cgroup(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/docker/abc\n", {"docker/abc/cpu.max": "100000 100000\n", "cpu.max": "max 100000\n"})
    assert cgroup_quota(root) == 1.0
    assert usable_cpus(root) == 1


def test_v2_quota_on_a_parent_counts(tmp_path: Path) -> None:
    files = {"kubepods/pod1/cpu.max": "250000 100000\n", "kubepods/pod1/c1/cpu.max": "max 100000\n"}
    root = fake_root(tmp_path, "0::/kubepods/pod1/c1\n", files)
    assert cgroup_quota(root) == 2.5
    assert usable_cpus(root) == min(3, len(os.sched_getaffinity(0)))


def test_v1_cfs_quota(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_quota(root) == 0.5
    assert usable_cpus(root) == 1  # a fraction of a CPU still gets one worker


def test_no_quota_is_the_affinity(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_quota(root) is None
    assert usable_cpus(root) == len(os.sched_getaffinity(0))
    assert cgroup_quota(tmp_path / "nowhere") is None
