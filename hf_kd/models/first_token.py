"""The last encoder layer for the first position only: exact scores for heads that read the first token alone.

A cross-encoder head (BERT_CAT's classifier, PreTT's, `BertForSequenceClassification`'s pooler, the RoBERTa and
ELECTRA classification heads) reads the last layer's output at position 0 and nothing else. Attention in the last
layer still needs the keys and values of every position, but its query, attention output, feed-forward block and
layer norms are needed for position 0 only. Computing just that row leaves the scores equal (to float rounding) and
saves, per token, 10 of the 12 hidden x hidden products of one layer: about 14% of a six-layer encoder.

It applies to BERT-style layers (`attention.self.{query,key,value}`, `attention.output`, `feed_forward_chunk`: BERT,
MiniLM, RoBERTa, XLM-R, ELECTRA) under the `sdpa` and `eager` attention implementations; everything else runs whole.

Only torch: this file is copied with the modeling code into every checkpoint folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "can_run_last_layer_for_first_token",
    "first_token_layer_output",
    "last_layer_for_first_token",
    "supports_first_token_layer",
]

_ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def supports_first_token_layer(layer: nn.Module, config) -> bool:
    """Whether `layer` is a BERT-style encoder layer that [`first_token_layer_output`] can run."""
    heads = getattr(getattr(layer, "attention", None), "self", None)
    return (
        getattr(config, "_attn_implementation", None) in _ATTENTION_IMPLEMENTATIONS
        and not getattr(config, "is_decoder", False)
        and not getattr(layer, "add_cross_attention", False)
        and all(hasattr(heads, name) for name in ("query", "key", "value", "attention_head_size", "scaling"))
        and hasattr(layer.attention, "output")
        and hasattr(layer, "feed_forward_chunk")
    )


def first_token_layer_output(
    layer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """`layer(hidden_states, attention_mask)[:, :1]`, computed for position 0 alone.

    Args:
        layer: a BERT-style encoder layer (see [`supports_first_token_layer`]).
        hidden_states: (n, L, H) the layer's input.
        attention_mask: the mask the encoder passes its layers: None, or (n, 1, L or 1, L), boolean (True where a
            position may be attended to) or additive.

    Returns:
        `torch.Tensor`: (n, 1, H) the layer's output at position 0.
    """
    attention = layer.attention
    heads = attention.self
    n, length, _ = hidden_states.shape
    first = hidden_states[:, :1]

    def split_heads(states: torch.Tensor) -> torch.Tensor:
        return states.view(n, states.shape[1], -1, heads.attention_head_size).transpose(1, 2)

    query = split_heads(heads.query(first))
    key = split_heads(heads.key(hidden_states))
    value = split_heads(heads.value(hidden_states))
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=heads.scaling)
    context = attention.output(context.transpose(1, 2).reshape(n, 1, -1), first)
    return layer.feed_forward_chunk(context)


class _FirstTokenLayer(nn.Module):
    """Stands in for an encoder's last layer inside [`last_layer_for_first_token`]."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        return first_token_layer_output(self.layer, hidden_states, attention_mask)


def _encoder_layers(encoder_model: nn.Module) -> nn.ModuleList | None:
    layers = getattr(getattr(encoder_model, "encoder", None), "layer", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None


def can_run_last_layer_for_first_token(encoder_model: nn.Module) -> bool:
    """Whether [`last_layer_for_first_token`] applies to `encoder_model` (a transformers encoder such as
    `BertModel`, with `encoder.layer`)."""
    layers = _encoder_layers(encoder_model)
    return layers is not None and supports_first_token_layer(layers[-1], encoder_model.config)


@contextmanager
def last_layer_for_first_token(encoder_model: nn.Module) -> Iterator[bool]:
    """Inside the block, `encoder_model`'s last layer computes position 0 only, so its `last_hidden_state` is
    (n, 1, H): the first token's vector, equal to the whole model's. Yields whether it applies; where it does not,
    the model runs whole. The layer is put back on leaving the block, also on an error."""
    if not can_run_last_layer_for_first_token(encoder_model):
        yield False
        return
    layers = _encoder_layers(encoder_model)
    last = layers[-1]
    layers[-1] = _FirstTokenLayer(last)
    try:
        yield True
    finally:
        layers[-1] = last
