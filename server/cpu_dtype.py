"""Whether this CPU computes bfloat16 natively, and what to tell the user when it does not.

vLLM's CPU kernels take a fast bfloat16 path on AVX512-BF16 or AMX-BF16; on a CPU with neither
(AVX2-only x86, e.g. AMD Zen 3) bfloat16 still works, through conversions. Measured with the
cpu-bench profile's model on a 2-vCPU AMD EPYC (Zen 3, AVX2): a 4-frame question (2943 prompt
tokens, 32 answer tokens) took 12-13 s at float32 and 43-48 s at bfloat16, ~3.6x longer.
The profiles keep bfloat16 (the path the hardware they are tuned for takes, half the bytes);
the launcher says when float32 would be faster here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BF16_FLAGS", "bf16_advice", "cpu_flags", "this_cpu_flags"]

# /proc/cpuinfo flags of the instructions vLLM's CPU bfloat16 kernels use.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> frozenset[str] | None:
    """The flags of the first processor in ``cpuinfo`` text; None when it lists none (not
    x86 Linux: nothing is known, so nothing is advised)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def bf16_advice(device: str, dtype: str, flags: frozenset[str] | None) -> str | None:
    """One line for the user when a CPU engine runs bfloat16 without native bfloat16, else None."""
    if device != "cpu" or dtype != "bfloat16" or flags is None or flags & BF16_FLAGS:
        return None
    return ("this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16), so the engine runs "
            "it by conversion: measured ~3.6x slower than float32 on such a CPU. For speed: "
            "--set dtype=float32 (twice the weight and KV-cache memory)")


def this_cpu_flags() -> frozenset[str] | None:
    """This machine's CPU flags (Linux), or None."""
    try:
        return cpu_flags(CPUINFO.read_text(errors="replace"))
    except OSError:
        return None
