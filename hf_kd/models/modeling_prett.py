"""PreTT: separate lower layers for query and passage, joint upper layers."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask

from .configuration_prett import PreTTConfig
from .first_token import first_token_layer_output, supports_first_token_layer
from .modeling_ranking import EncodedBatch, SplitRankingModel, backbone_supports_token_types, build_backbone
from .ranking_functions import segment_mean_cosine, special_token_id, tokenize_texts


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The list of layers of a BERT-style (`encoder.layer`) or DistilBERT-style (`transformer.layer`) encoder."""
    for container in ("encoder", "transformer"):
        layers = getattr(getattr(backbone, container, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(
        f"PreTT needs a backbone whose layers can be addressed one by one (BERT, DistilBERT, MiniLM, ELECTRA); "
        f"{type(backbone).__name__} has none"
    )


class PreTTModel(SplitRankingModel):
    """PreTT: layers `0..k-1` run on `[CLS] q [SEP]` and `p [SEP]` separately, layers `k..n-1` on their
    concatenation; the CLS vector -> Linear(hidden, 1, bias=False) (plus, with `mean_cosine_score`, the cosine of
    the mean query and passage token vectors, the head starting at zero).

    The cached passage representation is the passage's hidden states after layer k. With
    `passage_positions="after_query"` (the paper's released PreTTR) a passage's positions start right after each
    query's own tokens, so its lower layers run at scoring time and the cached representation is its token ids
    (shape (n, L, 1)).
    """

    config_class = PreTTConfig
    scores_pairs_jointly = True

    def __init__(self, config: PreTTConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.classifier = nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "classifier", None) and self.config.mean_cosine_score:
            init.zeros_(module.weight)

    def tokenize_queries(self, tokenizer, queries: Sequence[str]) -> list[list[int]]:
        cls_id, sep_id = special_token_id(tokenizer, "cls"), special_token_id(tokenizer, "sep")
        return [[cls_id, *ids, sep_id] for ids in tokenize_texts(tokenizer, queries, self.config.max_query_length)]

    def tokenize_passages(self, tokenizer, passages: Sequence[str]) -> list[list[int]]:
        sep_id = special_token_id(tokenizer, "sep")
        return [[*ids, sep_id] for ids in tokenize_texts(tokenizer, passages, self.config.max_passage_length)]

    def _embed(self, input_ids: torch.Tensor, token_type: int, position_offset: int | torch.Tensor) -> torch.Tensor:
        """Embeddings with positions `offset + j`; `position_offset` is one int or one offset per row, shape (n,)."""
        embeddings = self.backbone.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        offsets = torch.as_tensor(position_offset, device=input_ids.device).reshape(-1, 1)
        kwargs = {"input_ids": input_ids, "position_ids": (positions + offsets).expand_as(input_ids)}
        if (
            backbone_supports_token_types(self.backbone)
            and "token_type_ids" in inspect.signature(embeddings.forward).parameters
        ):
            kwargs["token_type_ids"] = torch.full_like(input_ids, token_type)
        hidden = embeddings(**kwargs)
        project = getattr(self.backbone, "embeddings_project", None)  # ELECTRA's embeddings narrower than its layers
        return hidden if project is None else project(hidden)

    def _run_layers(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int, first_token_only: bool = False
    ) -> torch.Tensor:
        """Layers `start..stop-1`; with `first_token_only` the last of them computes position 0 alone (where the
        layer allows it), so the result is (n, 1, H) when it does."""
        mask = create_bidirectional_mask(
            config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        layers = transformer_layers(self.backbone)[start:stop]
        for i, layer in enumerate(layers):
            if first_token_only and i == len(layers) - 1 and supports_first_token_layer(layer, self.backbone.config):
                return first_token_layer_output(layer, hidden, mask)
            output = layer(hidden, mask)
            hidden = output[0] if isinstance(output, tuple) else output
        return hidden

    def _encode_lower(
        self, input_ids, attention_mask, token_type: int, position_offset: int | torch.Tensor
    ) -> EncodedBatch:
        hidden = self._embed(input_ids, token_type, position_offset)
        hidden = self._run_layers(hidden, attention_mask, 0, self.config.split_layer)
        return EncodedBatch(hidden, attention_mask)

    def encode_query_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        return self._encode_lower(input_ids, attention_mask, token_type=0, position_offset=0)

    def encode_passage_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        if self.config.passage_positions == "after_query":
            return EncodedBatch(input_ids.unsqueeze(-1), attention_mask)  # lower layers run once the query is known
        return self._encode_lower(
            input_ids, attention_mask, token_type=1, position_offset=self.config.passage_position_offset
        )

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        if not passages.embeddings.is_floating_point():  # token ids: positions continue after each query's tokens
            query_lengths = queries.mask.sum(dim=1)
            passages = self._encode_lower(passages.embeddings.squeeze(-1), passages.mask, 1, query_lengths)
        hidden = torch.cat([queries.embeddings, passages.embeddings.to(queries.embeddings.dtype)], dim=1)
        mask = torch.cat([queries.mask, passages.mask], dim=1)
        num_layers = len(transformer_layers(self.backbone))
        # in evaluation the head reads the CLS vector alone, so the last layer computes position 0 only (exact)
        first_token_only = not self.training and not self.config.mean_cosine_score
        hidden = self._run_layers(hidden, mask, self.config.split_layer, num_layers, first_token_only)
        scores = self.classifier(hidden[:, 0]).squeeze(-1)
        if self.config.mean_cosine_score:
            query_mask = torch.cat([queries.mask, torch.zeros_like(passages.mask)], dim=1)
            passage_mask = torch.cat([torch.zeros_like(queries.mask), passages.mask], dim=1)
            scores = scores + segment_mean_cosine(hidden, query_mask, passage_mask)
        return scores


__all__ = ["PreTTModel", "transformer_layers"]
