"""What this machine's CPU is: its model name, the instruction-set flags that decide which kernels are fast, the
cores this process may use, and torch's own view of it. Facts only; the choices they lead to (precision, threads)
are `llmforge.models.cpu`'s.

Every manifest records `machine()` (artifacts.py), so a number in a run directory names the CPU it came from. The
machines this project runs on differ from day to day (an AVX2-only EPYC, an AMX Xeon, an EPYC with avx512_bf16),
and the same setting is fast on one and slow on another. This module sits below artifacts.py in the layers and
imports nothing of llmforge; torch is imported only when asked for its capability.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The flags that change which kernels are fast: AVX2 (the baseline), AVX-512, VNNI (int8 dot products),
# avx512_bf16 (bf16 dot products in AVX-512 registers), AMX (bf16/int8 tile matrix units, Intel Sapphire Rapids+).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Cpu:
    model: str  # "AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+", ...
    flags: frozenset[str]  # those of FLAGS the CPU reports
    cores: int  # usable by this process (its affinity mask), not the machine's total
    torch_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512, ...

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def describe(self) -> dict[str, Any]:
        return {"cpu": self.model, "cpu_flags": sorted(self.flags), "usable_cores": self.cores,
                "torch_cpu_capability": self.torch_capability}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, the FLAGS present) from /proc/cpuinfo's text; the first processor's block speaks for all.

    x86 names its flags `flags`, arm64 `Features` (none of FLAGS, so an empty set)."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if model and flags:
                break
            continue
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split()) & frozenset(FLAGS)
    return model, flags


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: the affinity mask (`taskset`, cpusets) or os.cpu_count, capped by a cgroup v2
    CPU quota (`cpu.max`: what Kubernetes' CPU limit and `docker run --cpus` set), rounded up: a pod limited to
    4 CPUs on a 64-core node gets 4 threads, not 64 that the quota would throttle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup / "cpu.max")
    return max(1, min(cores, quota) if quota else cores)


def cpu_quota(path: Path) -> int | None:
    """The CPUs a cgroup v2 `cpu.max` file ("QUOTA PERIOD", or "max PERIOD" for none) allows, rounded up."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return -(-int(quota) // int(period))


def torch_capability() -> str | None:
    """torch's CPU kernel level (DEFAULT, AVX2, AVX512, ...); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.backends.cpu.get_cpu_capability())


@functools.lru_cache(maxsize=1)
def detect() -> Cpu:
    """This machine's CPU (read once per process: /proc/cpuinfo where there is one, platform elsewhere)."""
    path = Path("/proc/cpuinfo")
    try:
        model, flags = parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, flags = "", frozenset()
    return Cpu(model=model or platform.processor() or platform.machine(), flags=flags, cores=usable_cores(),
               torch_capability=torch_capability())


def machine() -> dict[str, Any]:
    """The manifest's `machine` entry: architecture, CPU model, the flags that matter, usable cores, torch's view."""
    return {"arch": platform.machine(), **detect().describe()}
