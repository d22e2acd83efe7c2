"""Which engine runs the models on this machine: the backend and its precision, chosen from the settings, the
CPU and each model's parity record, never from a constant.

- Backend ``auto``: OpenVINO where it is installed, else ONNX Runtime.
- Precision ``auto``: bfloat16 where OpenVINO runs and the CPU computes bfloat16 natively (AMX or
  AVX512_BF16: OpenVINO's CPU plugin lists BF16 among its optimisation capabilities) and the model passed
  parity on this kind of machine (``segserve.parity``); float32 otherwise. On a CPU without native bfloat16
  it would be emulated, slower than float32 (openvinotoolkit/openvino#18866).
- An explicit ``bf16`` is refused where it cannot be honoured: another backend, a CPU without native
  bfloat16, or a model that failed parity here.
- Threads of a forward pass (``SEGSERVE_MODEL_THREADS=0``): the CPUs this process may use, ``usable_cpus``,
  which is fewer than the machine's cores in a container with a CPU limit.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The CPU features a model's numbers depend on: which bfloat16 instructions run it, and the vector width.
KIND_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


class EngineUnavailable(ValueError):
    """The settings ask for an engine this machine or model cannot run; the message says why."""


@dataclass(frozen=True)
class Engine:
    """A backend at a precision, and why it was chosen."""

    backend: str
    precision: str
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.precision}"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def usable_cpus(cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> int:
    """The CPUs this process may use: those its affinity allows, or fewer where a cgroup CPU quota (a
    container's CPU limit, e.g. Kubernetes' ``limits.cpu``) allows less, rounded down; at least 1.

    ``os.cpu_count()`` counts the host's cores: under a limit of 4 on a 64-core node, a forward pass on 64
    threads is throttled by the quota every scheduling period."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> float | None:
    """The smallest CPU quota (in CPUs, quota / period) of this process's cgroup and the hierarchy's root, from
    cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None when there is none."""
    root = Path(cgroup_root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    quotas = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = path.strip().lstrip("/")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            for folder in {root / relative, root}:
                quotas.append(_read_quota(folder / "cpu.max", None))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for name in {controllers, "cpu"}:
                for folder in {root / name / relative, root / name}:
                    quotas.append(_read_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _read_quota(quota_file: Path, period_file: Path | None) -> float | None:
    """cgroup v2 (``period_file`` None): ``cpu.max`` holds "QUOTA PERIOD" or "max PERIOD"; v1: the quota
    file holds QUOTA (-1: none) and the period file PERIOD. None when unlimited, absent or unreadable."""
    try:
        if period_file is None:
            quota, period = quota_file.read_text().split()[:2]
        else:
            quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        if quota == "max" or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (its CPU plugin lists BF16)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO, or no CPU plugin: decide from the flags
        return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def machine_kind(flags: frozenset[str] | None = None) -> str:
    """The kind of machine a parity result holds for: architecture and the CPU features numbers depend on,
    e.g. ``x86_64:amx_bf16+avx512_bf16+avx512f+avx2``."""
    flags = cpu_flags() if flags is None else flags
    present = [f for f in KIND_CPU_FLAGS if f in flags]
    return f"{platform.machine()}:{'+'.join(present) or 'baseline'}"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose(
    backend: str,
    precision: str,
    parity: bool | None,
    has_openvino: bool | None = None,
    has_bf16: bool | None = None,
) -> Engine:
    """The engine for one model.

    backend, precision: the settings (``auto`` or a name). parity: whether the model passed the bfloat16
    parity gate on this kind of machine (None: never checked here). has_openvino, has_bf16: the machine's
    (default: detected). Raises EngineUnavailable for an explicit choice that cannot be honoured.
    """
    has_openvino = openvino_installed() if has_openvino is None else has_openvino
    if backend == "auto":
        backend = "openvino" if has_openvino else "onnxruntime"
    elif backend == "openvino" and not has_openvino:
        raise EngineUnavailable("SEGSERVE_BACKEND=openvino, but the openvino package is not installed")
    if precision == "f32":
        return Engine(backend, "f32", "float32 by the settings")
    if backend != "openvino":
        if precision == "bf16":
            raise EngineUnavailable(f"SEGSERVE_PRECISION=bf16 needs the openvino backend; {backend} runs float32")
        return Engine(backend, "f32", f"{backend} runs float32")
    has_bf16 = native_bf16() if has_bf16 is None else has_bf16
    if not has_bf16:
        if precision == "bf16":
            raise EngineUnavailable(
                "SEGSERVE_PRECISION=bf16, but this CPU has no native bfloat16 (AMX or AVX512_BF16); "
                "it would be slower than float32"
            )
        return Engine(backend, "f32", "no native bfloat16 on this CPU")
    if parity is False:
        if precision == "bf16":
            raise EngineUnavailable("SEGSERVE_PRECISION=bf16, but the model failed bfloat16 parity on this machine")
        return Engine(backend, "f32", "the model failed bfloat16 parity on this kind of machine")
    if parity is None:
        if precision == "bf16":
            return Engine(backend, "bf16", "bfloat16 by the settings; parity never checked on this kind of machine")
        return Engine(backend, "f32", "bfloat16 parity never checked on this machine kind (python -m training.parity)")
    return Engine(backend, "bf16", "native bfloat16, and the model passed parity on this kind of machine")
