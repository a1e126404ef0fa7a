"""ColBERT: late interaction over per-token vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .configuration_colbert import ColBERTConfig
from .modeling_ranking import EncodedBatch, SplitRankingModel, build_backbone
from .ranking_functions import maxsim_scores, special_token_id, tokenize_texts


class ColBERTModel(SplitRankingModel):
    """ColBERT: `score(q, p) = sum_i max_j E(q)_i . E(p)_j` with `E` the projected token vectors.

    Queries are `[CLS] q [SEP]` followed by `query_augmentation_tokens` [MASK] tokens; passages `[CLS] p [SEP]`.
    The cached passage representation is one `compression_dim` vector per passage token.

    A saved checkpoint is also a sentence-transformers `MultiVectorEncoder` (pipeline: Transformer over
    `embed_tokens` -> [Normalize when `normalize_embeddings`] -> MultiVectorMask without skiplist; MaxSim
    similarity, or MeanMaxSim when `mean_maxsim`):

    - `encode_document(passages)[i]` equals `encode_passages(passages)` row i restricted to its real tokens
      (`[CLS]`, the passage word pieces truncated at `max_passage_length`, `[SEP]`; no token is skipped).
    - `encode_query(queries)[i]` equals `encode_queries(queries)` row i restricted to its real tokens, the
      [MASK] augmentation tokens included, for every query length.
    - `similarity_pairwise(encode_query(q), encode_document(p))` equals `score(q, p)`, and `similarity` gives
      the all-pairs matrix of the same scores (up to float rounding).

    How the queries are reproduced, and what differs:

    - The encoder's own `query_expansion` is not used. Its strategies ("fixed", "min") pad every query to one
      total length `L` with [MASK] tokens, so a query of `n` word pieces gets `L - n - 2` of them, whereas this
      model always appends exactly `query_augmentation_tokens`; the two agree only when
      `n == L - 2 - query_augmentation_tokens`. Instead the checkpoint's `sentence_bert_config.json` gives the
      tokenizer a chat template (`processor_kwargs.chat_template`, see `colbert_chat_template` in
      `sentence_transformers_layout.py`) that renders `[CLS] text [SEP]` and, when the encoder's task is "query",
      the [MASK] tokens. The [MASK] tokens are ordinary attended tokens, as here. Over-long text is truncated to
      `query_length`/`document_length` tokens and the encoder restores the template's tail (`[SEP]` and the
      [MASK] tokens), which yields the same truncation as `max_query_length`/`max_passage_length`.
    - `encode()` without a task encodes texts as documents (no [MASK] tokens). A caller-supplied prompt is
      prepended to the text before tokenisation (this model has no prompts).
    - `MultiVectorEncoder.get_embedding_dimension()` reports the backbone's hidden size: the encoder reads it from
      the model config, unaware of the projection inside `embed_tokens`. The vectors are `compression_dim` wide.
    - The chat template lives only in the sentence-transformers config: the checkpoint's tokenizer files are
      unchanged and `AutoTokenizer` gives the same tokenizer as before.
    """

    config_class = ColBERTConfig

    def __init__(self, config: ColBERTConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.compressor = nn.Linear(config.hidden_size, config.compression_dim)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "compressor", None) and self.config.compression_init == "identity":
            init.copy_(module.weight, torch.eye(self.config.compression_dim, dtype=module.weight.dtype))
            init.zeros_(module.bias)

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
        vectors = self.embed_tokens(input_ids, attention_mask).last_hidden_state
        if self.config.normalize_embeddings:
            vectors = nn.functional.normalize(vectors, dim=-1)
        vectors = vectors * attention_mask.unsqueeze(-1).to(vectors.dtype)
        return EncodedBatch(vectors, attention_mask)

    encode_query_tensors = _encode
    encode_passage_tensors = _encode

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        return maxsim_scores(
            queries.embeddings, queries.mask, passages.embeddings, passages.mask, mean=self.config.mean_maxsim
        )

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> BaseModelOutput:
        """Projected token vectors, Linear(hidden, compression_dim) of the backbone's last hidden states (before
        the optional L2 normalisation; padding positions are not zeroed): the entry point of the checkpoint's
        sentence-transformers `MultiVectorEncoder` pipeline."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return BaseModelOutput(last_hidden_state=self.compressor(hidden))


__all__ = ["ColBERTModel"]
