"""segserve.engines: which backend and precision a machine gets, decided from the machine, never a constant."""

from __future__ import annotations

import pytest

from segserve import engines
from segserve.engines import Engine, EngineUnavailable, choose


@pytest.mark.parametrize(
    ("backend", "precision", "parity", "openvino", "bf16", "expected"),
    [
        # auto on a CPU without native bfloat16: OpenVINO in float32, whatever the parity record says
        ("auto", "auto", True, True, False, ("openvino", "f32")),
        ("auto", "auto", None, True, False, ("openvino", "f32")),
        # native bfloat16: only for a model that passed parity on this kind of machine
        ("auto", "auto", True, True, True, ("openvino", "bf16")),
        ("auto", "auto", False, True, True, ("openvino", "f32")),
        ("auto", "auto", None, True, True, ("openvino", "f32")),
        # no OpenVINO: ONNX Runtime, float32
        ("auto", "auto", True, False, True, ("onnxruntime", "f32")),
        ("onnxruntime", "auto", True, True, True, ("onnxruntime", "f32")),
        ("tensorflow", "auto", True, True, True, ("tensorflow", "f32")),
        # float32 asked for
        ("openvino", "f32", True, True, True, ("openvino", "f32")),
        # bfloat16 asked for where it can run and parity was never checked here: honoured
        ("openvino", "bf16", None, True, True, ("openvino", "bf16")),
    ],
)
def test_choice(backend, precision, parity, openvino, bf16, expected):
    engine = choose(backend, precision, parity, has_openvino=openvino, has_bf16=bf16)
    assert (engine.backend, engine.precision) == expected and engine.reason


@pytest.mark.parametrize(
    ("backend", "precision", "parity", "openvino", "bf16", "message"),
    [
        ("openvino", "auto", None, False, False, "openvino package is not installed"),
        ("onnxruntime", "bf16", None, True, True, "needs the openvino backend"),
        ("auto", "bf16", True, True, False, "no native bfloat16"),
        ("auto", "bf16", False, True, True, "failed bfloat16 parity"),
    ],
)
def test_what_cannot_be_honoured_is_refused(backend, precision, parity, openvino, bf16, message):
    with pytest.raises(EngineUnavailable, match=message):
        choose(backend, precision, parity, has_openvino=openvino, has_bf16=bf16)


def test_cpu_flags_and_machine_kind(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    flags = engines.cpu_flags(cpuinfo)
    assert {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= flags
    assert engines.machine_kind(flags).endswith(":amx_bf16+avx512_bf16+avx512f+avx2")
    assert engines.machine_kind(frozenset({"avx2"})).endswith(":avx2")
    assert engines.machine_kind(frozenset()).endswith(":baseline")
    assert engines.cpu_flags(tmp_path / "missing") == frozenset()


def test_this_machine_is_described_from_what_it_has():
    """The detected answer follows the CPU: bfloat16 exactly when OpenVINO's CPU plugin lists BF16."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert engines.native_bf16() == ("BF16" in capabilities)
    engine = choose("auto", "auto", True)
    assert engine == Engine("openvino", "bf16" if "BF16" in capabilities else "f32", engine.reason)


def _cgroup(tmp_path, proc: str, files: dict[str, str]):
    """A fake cgroup hierarchy under tmp_path/cg and a /proc/self/cgroup of ``proc``."""
    root = tmp_path / "cg"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


@pytest.mark.parametrize(
    ("proc", "files", "quota"),
    [
        # cgroup v2, a container limited to 4 CPUs (its cgroup is the namespace's root)
        ("0::/\n", {"cpu.max": "400000 100000\n"}, 4.0),
        # v2 without a limit
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),
        # v2, the process's own cgroup below the root is limited more than the root
        ("0::/kubepods/pod1\n", {"cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n"}, 1.5),
        # cgroup v1 (cpu,cpuacct hierarchy), 2 CPUs
        (
            "4:memory:/x\n3:cpu,cpuacct:/\n",
            {"cpu,cpuacct/cpu.cfs_quota_us": "200000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            2.0,
        ),
        # v1 without a limit (-1)
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        # nothing readable
        ("", {}, None),
        ("0::/\n", {"cpu.max": "garbage\n"}, None),
    ],
)
def test_the_cgroup_cpu_quota_is_read_from_v1_or_v2(tmp_path, proc, files, quota):
    root, proc_cgroup = _cgroup(tmp_path, proc, files)
    assert engines.cgroup_cpu_quota(root, proc_cgroup) == quota


def test_usable_cpus_are_the_affinity_capped_by_the_quota_rounded_down(tmp_path, monkeypatch):
    monkeypatch.setattr(engines.os, "sched_getaffinity", lambda _pid: set(range(64)))
    root, proc_cgroup = _cgroup(tmp_path, "0::/\n", {"cpu.max": "400000 100000\n"})
    assert engines.usable_cpus(root, proc_cgroup) == 4  # a 64-core node, a limit of 4
    (root / "cpu.max").write_text("250000 100000\n")
    assert engines.usable_cpus(root, proc_cgroup) == 2
    (root / "cpu.max").write_text("50000 100000\n")
    assert engines.usable_cpus(root, proc_cgroup) == 1  # half a CPU still gets a thread
    (root / "cpu.max").write_text("max 100000\n")
    assert engines.usable_cpus(root, proc_cgroup) == 64
    monkeypatch.setattr(engines.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert engines.usable_cpus(root, proc_cgroup) == 2  # pinned to two CPUs (taskset, cpuset)
