"""Which precision training runs in when the user does not say: bfloat16 autocast on processors with bfloat16
matrix units (Intel AMX, AVX-512 BF16), float32 elsewhere.

On a CPU with AMX, bfloat16 matrix products run at several times the float32 rate; the Trainer's autocast keeps
float32 master weights, optimizer state and loss, so only the forward and backward products are rounded. On a CPU
without those units bfloat16 is emulated and slower than float32, so there the default stays float32.
"""

from __future__ import annotations

import sys

from ..hardware import BF16_CPU_FLAGS, cpu_bf16_flags

__all__ = ["BF16_CPU_FLAGS", "cpu_bf16_flags", "default_bf16"]


def default_bf16(on_cuda: bool, announce: bool = True) -> tuple[bool, str]:
    """`(bf16, why)`: the precision a training run takes when neither `bf16` nor `fp16` was given.

    On a GPU float32 stays the default (choose `--bf16 true` or `--fp16 true` there); on a CPU, bfloat16 where the
    processor reports one of [`BF16_CPU_FLAGS`], float32 elsewhere, with one line on stderr saying so.
    """
    if on_cuda:
        return False, "float32 (a GPU: pass --bf16 true or --fp16 true for mixed precision)"
    flags = cpu_bf16_flags()
    if flags:
        return True, f"bfloat16 autocast (the CPU reports {', '.join(flags)}; --bf16 false for float32)"
    why = "float32 (the CPU has no bfloat16 matrix units: no amx_bf16 or avx512_bf16)"
    if announce:
        print(f"hf-kd: training in {why}", file=sys.stderr)
    return False, why
