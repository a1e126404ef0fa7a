"""What the processor can do, read once: the bfloat16 matrix units that make bfloat16 worth choosing on a CPU, for
training (`hf_kd.training.precision`) and inference (`hf_kd.evaluation.load_model`)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["BF16_CPU_FLAGS", "INT8_CPU_FLAGS", "cpu_bf16_flags", "processor_summary"]

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of processors with native bfloat16 matrix arithmetic."""

INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""/proc/cpuinfo flags of processors with int8 dot-product instructions (what int8 inference kernels use)."""


def _cpuinfo_line(prefix: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def processor_summary() -> dict:
    """The processor a measurement ran on, to be written beside it: model name, cores, and its bfloat16 and int8
    units (times hold for that machine only)."""
    flags = set((_cpuinfo_line("flags") or "").split())
    return {
        "model": _cpuinfo_line("model name") or platform.processor(),
        "cores": os.cpu_count(),
        "bf16_units": list(cpu_bf16_flags()),
        "int8_units": [flag for flag in INT8_CPU_FLAGS if flag in flags],
    }


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The processor's bfloat16 flags among [`BF16_CPU_FLAGS`] (empty where it has none or cannot say)."""
    if Path("/proc/cpuinfo").is_file():
        flags = set((_cpuinfo_line("flags") or "").split())
        return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)
    try:  # not Linux: ask PyTorch's own CPU detection
        import torch

        found = []
        if torch._C._cpu._is_amx_tile_supported():
            found.append("amx_bf16")
        if torch._C._cpu._is_avx512_bf16_supported():
            found.append("avx512_bf16")
        return tuple(found)
    except (AttributeError, RuntimeError):
        return ()
