"""Loading a saved zoo model for evaluation, indexing and mining: the one loader the commands and the stages
below them share."""

from __future__ import annotations

from ..files import naming_weight_files

__all__ = ["load_model"]


def load_model(model_dir: str, device: str | None = None):
    """Loads a saved zoo model and its tokenizer, on `device` (CUDA when available by default), in eval mode."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import hf_kd  # noqa: F401  (registers the zoo architectures with AutoModel)

    with naming_weight_files(model_dir):
        model = AutoModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer
