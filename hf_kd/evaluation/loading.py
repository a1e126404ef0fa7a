"""Loading a saved zoo model for evaluation, indexing and mining: the one loader the commands and the stages
below them share."""

from __future__ import annotations

import sys

from ..files import naming_weight_files

__all__ = ["INFERENCE_DTYPES", "load_model"]

INFERENCE_DTYPES = ("float32", "bfloat16")
"""Weight precisions a model can be loaded in for inference: bfloat16 halves the weights' memory and, on a CPU with
bfloat16 matrix units (AMX, AVX-512 BF16), runs the products at several times the float32 rate; scores and vectors
are handed back in float32 either way."""


def load_model(model_dir: str, device: str | None = None, dtype: str = "float32"):
    """Loads a saved zoo model and its tokenizer, on `device` (CUDA when available by default), in eval mode, with
    its weights in `dtype` (one of [`INFERENCE_DTYPES`])."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import hf_kd  # noqa: F401  (registers the zoo architectures with AutoModel)

    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "bfloat16" and torch.device(device).type == "cpu":
        from ..hardware import cpu_bf16_flags

        if not cpu_bf16_flags():
            print("hf-kd: this CPU has no bfloat16 matrix units (amx_bf16, avx512_bf16): bfloat16 will be slower "
                  "than float32 here", file=sys.stderr)  # fmt: skip
    with naming_weight_files(model_dir):
        model = AutoModel.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model.to(device).eval(), tokenizer
