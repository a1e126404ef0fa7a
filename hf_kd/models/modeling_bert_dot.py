"""BERT_DOT: a bi-encoder scoring by the dot product of CLS vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from .configuration_bert_dot import BertDotConfig
from .modeling_ranking import EncodedBatch, SplitRankingModel, build_backbone
from .ranking_functions import dot_scores, special_token_id, tokenize_texts


class BertDotModel(SplitRankingModel):
    """BERT_DOT: `score(q, p) = v(q) . v(p)` with `v(x)` the CLS vector of `[CLS] x [SEP]` (or the mean of its token
    vectors), optionally compressed.

    The cached passage representation is one vector per passage.
    """

    config_class = BertDotConfig

    def __init__(self, config: BertDotConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.compressor = (
            nn.Linear(config.hidden_size, config.compression_dim) if config.compression_dim is not None else None
        )
        self.post_init()

    def _wrap(self, tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
        cls_id, sep_id = special_token_id(tokenizer, "cls"), special_token_id(tokenizer, "sep")
        return [[cls_id, *ids, sep_id] for ids in tokenize_texts(tokenizer, texts, max_length)]

    def tokenize_queries(self, tokenizer, queries: Sequence[str]) -> list[list[int]]:
        return self._wrap(tokenizer, queries, self.config.max_query_length)

    def tokenize_passages(self, tokenizer, passages: Sequence[str]) -> list[list[int]]:
        return self._wrap(tokenizer, passages, self.config.max_passage_length)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        tokens = self.embed_tokens(input_ids, attention_mask).last_hidden_state
        if self.config.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(tokens.dtype)
            vectors = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        else:
            vectors = tokens[:, 0]
        if self.config.normalize_embeddings:
            vectors = nn.functional.normalize(vectors, dim=-1)
        return EncodedBatch(vectors)

    encode_query_tensors = _encode
    encode_passage_tensors = _encode

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        return dot_scores(queries.embeddings, passages.embeddings)

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> BaseModelOutput:
        """Token vectors (compressed when configured) that pool into the BERT_DOT vector: the entry point of the
        checkpoint's sentence-transformers pipeline (Transformer -> CLS or mean pooling, dot-product similarity)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.compressor is not None:
            hidden = self.compressor(hidden)
        return BaseModelOutput(last_hidden_state=hidden)


__all__ = ["BertDotModel"]
