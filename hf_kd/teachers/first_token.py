"""Cross-encoder teachers with their last layer computed for the first position alone, where that is exact.

Most cross-encoder heads read the first token's vector only (see `hf_kd.models.first_token`), but a teacher is any
checkpoint, and some pool every token. So the first batch a teacher scores is scored both ways, without autocast; the
shortcut is kept for the teacher's later batches only if the scores are equal (for weights in half precision: if
they differ by less than a tenth of the spread of the batch's scores).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.first_token import can_run_last_layer_for_first_token, last_layer_for_first_token

__all__ = ["FirstTokenScoring"]


class FirstTokenScoring:
    """Runs a teacher's forward passes with the last layer computed for position 0 alone, once the first batch has
    shown the scores to be the same as the whole model's.

    Args:
        model (`nn.Module`): a transformers model with a head (`base_model` is its encoder), e.g.
            `BertForSequenceClassification`.

    Attributes:
        exact (`bool` or `None`): whether the shortcut gives the model's scores (`False` also where it cannot
            apply: another layer type or attention implementation); `None` until the first batch.
    """

    rtol = 1e-4
    atol = 1e-5
    half_precision_share = 0.1

    def __init__(self, model: nn.Module):
        self.encoder = getattr(model, "base_model", None)
        applies = isinstance(self.encoder, nn.Module) and can_run_last_layer_for_first_token(self.encoder)
        self.exact: bool | None = None if applies else False

    def __call__(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`forward()`: the scores of one batch, with the shortcut where it is exact."""
        if self.exact is None:
            device_type = next(self.encoder.parameters()).device.type
            with torch.autocast(device_type=device_type, enabled=False):
                whole = forward()
                with last_layer_for_first_token(self.encoder):
                    first = forward()
            self.exact = self._equal(whole, first)
            if not torch.is_autocast_enabled(device_type):
                return first if self.exact else whole
        if not self.exact:
            return forward()
        with last_layer_for_first_token(self.encoder):
            return forward()

    def _equal(self, whole: torch.Tensor, first: torch.Tensor) -> bool:
        if whole.shape != first.shape:
            return False
        whole, first = whole.float(), first.float()
        if next(self.encoder.parameters()).dtype == torch.float32:
            return torch.allclose(first, whole, rtol=self.rtol, atol=self.atol)
        # half-precision weights round the two ways differently: their difference must be small next to how much the
        # batch's scores differ from each other (a head that pools every token differs by about that much)
        return whole.numel() > 1 and bool((first - whole).abs().max() <= self.half_precision_share * whole.std())
