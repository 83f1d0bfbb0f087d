"""The launcher's bfloat16 advice: said on CPUs without native bfloat16, and only there.

The cpuinfo texts are real /proc/cpuinfo lines: ZEN3 is the development machine's (AMD EPYC,
AVX2, no AVX-512); SAPPHIRE_RAPIDS is an Intel Xeon 4th-gen flags line, abridged to the vector
flags; ARM is a Graviton-style block, which has "Features", not "flags"."""

from __future__ import annotations

import pytest

from vidchat.server.cpu_dtype import BF16_FLAGS, bf16_advice, cpu_flags, this_cpu_flags

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx \
fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl \
xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 \
sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp \
vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb \
sha_ni xsaveopt xsavec xgetbv1 xsaves clzero xsaveerptr wbnoinvd arat umip pku ospke vaes \
vpclmulqdq rdpid fsrm
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni \
avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid bf16 i8mm
"""


def test_flags_are_read_from_cpuinfo():
    assert "avx2" in cpu_flags(ZEN3) and not cpu_flags(ZEN3) & BF16_FLAGS
    assert cpu_flags(SAPPHIRE_RAPIDS) >= BF16_FLAGS
    assert cpu_flags(ARM) is None  # no x86 flags line: nothing known


@pytest.mark.parametrize(("device", "dtype", "cpuinfo", "advised"), [
    ("cpu", "bfloat16", ZEN3, True),
    ("cpu", "float32", ZEN3, False),  # already the fast choice
    ("cpu", "bfloat16", SAPPHIRE_RAPIDS, False),
    ("cpu", "bfloat16", ARM, False),  # unknown: say nothing rather than guess
    ("cuda", "bfloat16", ZEN3, False),  # the GPU computes, not the CPU
])
def test_advice_only_where_bfloat16_is_emulated(device, dtype, cpuinfo, advised):
    advice = bf16_advice(device, dtype, cpu_flags(cpuinfo))
    assert (advice is not None) == advised
    if advised:
        assert "--set dtype=float32" in advice and "\n" not in advice


@pytest.mark.engine
def test_the_launcher_says_it_when_this_machine_lacks_bfloat16(server):
    """The session server runs the bfloat16 CPU profile: its output has the advice exactly when
    this machine's CPU has no native bfloat16."""
    flags = this_cpu_flags()
    expected = bf16_advice("cpu", "bfloat16", flags)
    said = [line for line in server.output_file.read_text().splitlines()
            if "no native bfloat16" in line]
    assert said == ([f"vidchat: {expected}"] if expected else [])
