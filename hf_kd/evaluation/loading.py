"""Loading a saved zoo model for evaluation, indexing and mining: the one loader the commands and the stages
below them share."""

from __future__ import annotations

import sys

from ..files import naming_weight_files

__all__ = ["INFERENCE_DTYPES", "load_model"]

INFERENCE_DTYPES = ("float32", "bfloat16", "int8", "onnx-int8")
"""Weight precisions a model can be loaded in for inference: bfloat16 halves the weights' memory and, on a CPU with
bfloat16 matrix units (AMX, AVX-512 BF16), runs the products at several times the float32 rate; int8 (the `int8`
extra, torchao) quantises the weights of every linear layer to int8 per channel and the activations to int8 per
token as they come (dynamic quantisation), a quarter of the weights' memory; onnx-int8 (the `onnx` extra, BERT_DOT,
ColBERT and BERT_CAT, CPU) runs the backbone's int8 export in ONNX Runtime, whose kernels are faster than float32
on processors without int8 dot-product units, where torchao's are slower (`hf_kd.evaluation.onnx_int8`); scores and
vectors are handed back in float32 in every precision."""


def load_model(model_dir: str, device: str | None = None, dtype: str = "float32"):
    """Loads a saved zoo model and its tokenizer, on `device` (CUDA when available by default), in eval mode, with
    its weights in `dtype` (one of [`INFERENCE_DTYPES`])."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import hf_kd  # noqa: F401  (registers the zoo architectures with AutoModel)

    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "onnx-int8" and torch.device(device).type != "cpu":
        raise ValueError(f"onnx-int8 runs on the CPU (ONNX Runtime's CPU kernels), not on {device}")
    if dtype != "float32" and torch.device(device).type == "cpu":
        _warn_without_units(dtype)
    weights = torch.float32 if dtype.endswith("int8") else getattr(torch, dtype)
    with naming_weight_files(model_dir):
        model = AutoModel.from_pretrained(model_dir, dtype=weights)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = model.to(device).eval()
    if dtype == "int8":
        quantize_linear_layers_int8(model)
    elif dtype == "onnx-int8":
        from .onnx_int8 import quantize_backbone_onnx_int8

        quantize_backbone_onnx_int8(model)
    return model, tokenizer


def _warn_without_units(dtype: str) -> None:
    from ..hardware import BF16_CPU_FLAGS, INT8_CPU_FLAGS, cpu_bf16_flags, processor_summary

    if dtype == "bfloat16" and not cpu_bf16_flags():
        print(f"hf-kd: this CPU has no bfloat16 matrix units ({', '.join(BF16_CPU_FLAGS)}): bfloat16 will be slower "
              "than float32 here", file=sys.stderr)  # fmt: skip
    if dtype == "int8" and not processor_summary()["int8_units"]:
        print(f"hf-kd: this CPU has no int8 dot-product units ({', '.join(INT8_CPU_FLAGS)}): int8 will be slower "
              "than float32 here", file=sys.stderr)  # fmt: skip


def quantize_linear_layers_int8(model) -> None:
    """Quantises every `nn.Linear` of `model` in place with torchao: int8 weights per output channel, int8
    activations per token, computed as the inputs come (float32 in and out)."""
    import logging

    previous = logging.getLogger("torchao").level
    logging.getLogger("torchao").setLevel(logging.ERROR)  # its CUDA-only kernels fail to load on a CPU build, noisily
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise ImportError("int8 inference needs torchao: pip install 'hf-kd[int8]'") from None
    finally:
        logging.getLogger("torchao").setLevel(previous)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
