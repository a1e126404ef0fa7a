"""ColBERT: late interaction over per-token vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .configuration_colbert import ColBERTConfig
from .modeling_ranking import (
    EncodedBatch,
    SplitRankingModel,
    build_backbone,
    maxsim_scores,
    special_token_id,
    tokenize_texts,
)


class ColBERTModel(SplitRankingModel):
    """ColBERT: `score(q, p) = sum_i max_j E(q)_i . E(p)_j` with `E` the projected token vectors.

    Queries are `[CLS] q [SEP]` followed by `query_augmentation_tokens` [MASK] tokens; passages `[CLS] p [SEP]`.
    The cached passage representation is one `compression_dim` vector per passage token.
    """

    config_class = ColBERTConfig

    def __init__(self, config: ColBERTConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.compressor = nn.Linear(config.hidden_size, config.compression_dim)
        self.post_init()

    def tokenize_queries(self, tokenizer, queries: Sequence[str]) -> list[list[int]]:
        cls_id, sep_id = special_token_id(tokenizer, "cls"), special_token_id(tokenizer, "sep")
        augmentation = [special_token_id(tokenizer, "mask")] * self.config.query_augmentation_tokens
        return [
            [cls_id, *ids, sep_id, *augmentation]
            for ids in tokenize_texts(tokenizer, queries, self.config.max_query_length)
        ]

    def tokenize_passages(self, tokenizer, passages: Sequence[str]) -> list[list[int]]:
        cls_id, sep_id = special_token_id(tokenizer, "cls"), special_token_id(tokenizer, "sep")
        return [[cls_id, *ids, sep_id] for ids in tokenize_texts(tokenizer, passages, self.config.max_passage_length)]

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = self.compressor(hidden)
        if self.config.normalize_embeddings:
            vectors = nn.functional.normalize(vectors, dim=-1)
        vectors = vectors * attention_mask.unsqueeze(-1).to(vectors.dtype)
        return EncodedBatch(vectors, attention_mask)

    encode_query_tensors = _encode
    encode_passage_tensors = _encode

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        return maxsim_scores(queries.embeddings, queries.mask, passages.embeddings, passages.mask)


__all__ = ["ColBERTModel"]
