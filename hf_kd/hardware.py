"""What the processor can do, read once: the bfloat16 matrix units that make bfloat16 worth choosing on a CPU, for
training (`hf_kd.training.precision`) and inference (`hf_kd.evaluation.load_model`)."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["BF16_CPU_FLAGS", "cpu_bf16_flags"]

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of processors with native bfloat16 matrix arithmetic."""


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The processor's bfloat16 flags among [`BF16_CPU_FLAGS`] (empty where it has none or cannot say)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)
        return ()
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
