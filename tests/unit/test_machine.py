"""The CPU as llmforge sees it (llmforge.machine) and the choices it leads to (llmforge.models.cpu): cpuinfo parsing
for the machine kinds seen, the 'auto' rule for each, the manifest's machine entry and `llmforge doctor`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmforge.artifacts import RunDir, read_manifest
from llmforge.machine import FLAGS, Cpu, cpu_quota, detect, parse_cpuinfo, usable_cores
from llmforge.models import cpu
from llmforge.models.cpu import auto_precision, cpu_threads, precision_for

# /proc/cpuinfo blocks as the three machine kinds print them (flag lines cut to what matters plus neighbours).
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 ht syscall nx avx f16c rdrand hypervisor fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid \
rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt avx_vnni \
avx512_bf16 arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
avx512_vpopcntdq la57 rdpid cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk amx_bf16 avx512_fp16 \
amx_tile amx_int8 arch_capabilities
bogomips\t: 4000.00

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid pni pclmulqdq \
ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy abm sse4a \
misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 rdseed adx smap \
clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip rdpid
"""
# The machine these numbers were measured on (lscpu: "AMD EPYC", family 26): AVX-512 with bf16 and VNNI, no AMX.
EPYC_AVX512_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid \
tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx \
f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall \
fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq adx smap avx512ifma clflushopt clwb avx512cd \
sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 clzero xsaveerptr arat avx512vbmi umip \
avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm avx512_vp2intersect
"""
ARM64 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize(("text", "model", "flags"), [
    (XEON_AMX, "Intel(R) Xeon(R) Platinum 8480+", set(FLAGS)),
    (EPYC_AVX2, "AMD EPYC 7B12", {"avx2"}),
    (EPYC_AVX512_BF16, "AMD EPYC", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}),
    (ARM64, "", set()),
])
def test_cpuinfo_gives_the_model_and_the_flags_that_matter(text: str, model: str, flags: set[str]) -> None:
    assert parse_cpuinfo(text) == (model, frozenset(flags))


@pytest.mark.parametrize(("text", "precision"), [
    (XEON_AMX, "bf16"), (EPYC_AVX512_BF16, "bf16"), (EPYC_AVX2, "fp32"), (ARM64, "fp32"),
])
def test_auto_precision_on_a_cpu_follows_its_bf16_instructions(text: str, precision: str) -> None:
    model, flags = parse_cpuinfo(text)
    choice = auto_precision("cpu", Cpu(model, flags, cores=2))
    assert choice.name == precision and choice.reason
    assert choice.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def test_auto_precision_on_cuda_and_what_was_asked_for() -> None:
    assert auto_precision("cuda", cuda_bf16=True).name == "bf16"
    assert auto_precision("cuda", cuda_bf16=False).name == "fp16"
    assert precision_for("fp32", torch.device("cpu")).name == "fp32"
    assert precision_for("bfloat16", torch.device("cpu")).describe() == {"precision": "bf16",
                                                                         "precision_reason": "asked for"}


def test_threads_are_the_usable_cores_unless_asked() -> None:
    assert cpu_threads(cores=2) == 2
    assert cpu_threads(3, cores=2) == 3
    assert cpu_threads(cores=16, processes=4) == 4
    assert cpu_threads(cores=2, processes=4) == 1


@pytest.mark.parametrize(("cpu_max", "quota"), [("400000 100000\n", 4), ("150000 100000", 2), ("max 100000", None),
                                                ("", None), ("garbage", None), ("5 0", None)])
def test_a_cgroup_cpu_quota_caps_the_usable_cores(cpu_max: str, quota: int | None, tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert cpu_quota(tmp_path / "cpu.max") == quota
    affinity = usable_cores(tmp_path / "absent")  # no cpu.max: the affinity mask alone
    assert usable_cores(tmp_path) == (min(affinity, quota) if quota else affinity)
    (tmp_path / "cpu.max").write_text("100000 100000")  # a 1-CPU limit (Kubernetes `limits.cpu: 1`)
    assert usable_cores(tmp_path) == 1


@pytest.mark.parametrize(("text", "weights"), [(EPYC_AVX512_BF16, torch.bfloat16), (EPYC_AVX2, torch.float32)])
def test_only_inference_loads_bf16_weights_on_a_cpu(text: str, weights: torch.dtype,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.models.loader import default_dtype

    model, flags = parse_cpuinfo(text)
    monkeypatch.setattr(cpu, "detect", lambda: Cpu(model, flags, cores=2))
    device = torch.device("cpu")
    assert default_dtype("auto", device, inference=True) == weights
    assert default_dtype("auto", device) == torch.float32  # train (autocast), compress, export, eval: fp32 weights
    assert default_dtype("bfloat16", device) == torch.bfloat16


def test_this_machine_is_detected() -> None:
    found = detect()
    assert found.model and found.cores >= 1
    assert found.flags <= set(FLAGS)
    assert found.torch_capability == torch.backends.cpu.get_cpu_capability()


def test_every_manifest_names_the_machine(tmp_path: Path) -> None:
    with RunDir(tmp_path / "run", kind="eval", command="eval", config={}) as run:
        run.finish({})
    machine = read_manifest(tmp_path / "run")["machine"]
    assert machine["cpu"] == detect().model and machine["usable_cores"] == detect().cores
    assert set(machine["cpu_flags"]) == detect().flags and machine["torch_cpu_capability"]


def test_doctor_shows_the_cpu_and_what_auto_picks(capsys: pytest.CaptureFixture[str]) -> None:
    from llmforge.doctor import report
    from llmforge.ui import show_doctor

    found = report()
    assert found["devices"]["cpu"] == detect().model
    assert found["devices"]["torch_cpu_capability"] == detect().torch_capability
    from llmforge.models.loader import default_device

    assert found["auto"]["train.precision"].startswith(precision_for("auto", default_device()).name)
    show_doctor(found)
    out = capsys.readouterr().out
    assert "cpu_flags" in out and "train.precision" in out and "threads" in out
