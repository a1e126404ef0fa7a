"""BERT_CAT: the concatenated-input cross-encoder (teacher and student)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn
from transformers import initialization as init

from .configuration_bert_cat import BertCatConfig
from .first_token import last_layer_for_first_token
from .modeling_ranking import RankingOutput, RankingPreTrainedModel, backbone_supports_token_types, build_backbone
from .ranking_functions import check_grouping, pad_sequences, segment_mean_cosine, special_token_id, tokenize_texts


def concatenate_pair(cls_id: int, sep_id: int, query: list[int], passage: list[int]) -> tuple[list[int], list[int]]:
    """`[CLS] q [SEP] p [SEP]` ids and their token types (0 for the query segment, 1 for the passage)."""
    ids = [cls_id, *query, sep_id, *passage, sep_id]
    types = [0] * (len(query) + 2) + [1] * (len(passage) + 1)
    return ids, types


class BertCatModel(RankingPreTrainedModel):
    """BERT_CAT: scores a (query, passage) pair jointly; nothing can be cached, so it is the slowest and strongest.

    The score is the CLS vector -> Linear(hidden, 1); with `mean_cosine_score` the cosine of the mean query-segment
    and passage-segment token vectors is added and the head starts at zero.
    """

    config_class = BertCatConfig

    def __init__(self, config: BertCatConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "classifier", None) and self.config.mean_cosine_score:
            init.zeros_(module.weight)
            init.zeros_(module.bias)

    def prepare_inputs(self, queries: Sequence[str], passages: Sequence[str], tokenizer) -> dict[str, torch.Tensor]:
        k = check_grouping(queries, passages)
        cls_id, sep_id = special_token_id(tokenizer, "cls"), special_token_id(tokenizer, "sep")
        query_ids = tokenize_texts(tokenizer, queries, self.config.max_query_length)
        passage_ids = tokenize_texts(tokenizer, passages, self.config.max_passage_length)
        pairs = [concatenate_pair(cls_id, sep_id, query_ids[i // k], p) for i, p in enumerate(passage_ids)]
        input_ids, attention_mask = pad_sequences([ids for ids, _ in pairs], tokenizer.pad_token_id or 0)
        token_type_ids, _ = pad_sequences([types for _, types in pairs], 0)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if backbone_supports_token_types(self.backbone):
            inputs["token_type_ids"] = token_type_ids
        return inputs

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> RankingOutput:
        """
        Args:
            input_ids, attention_mask, token_type_ids: (n_pairs, L) from `prepare_inputs`.
            position_ids: (n_pairs, L), optional explicit positions.

        Returns:
            `RankingOutput` with `scores` of shape (n_pairs,).
        """
        backbone_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            backbone_kwargs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            backbone_kwargs["position_ids"] = position_ids
        # in evaluation the head reads the CLS vector alone, so the last layer computes position 0 only (exact)
        first_token_only = not self.training and not self.config.mean_cosine_score
        with last_layer_for_first_token(self.backbone) if first_token_only else nullcontext():
            hidden = self.backbone(**backbone_kwargs).last_hidden_state
        scores = self.classifier(self.dropout(hidden[:, 0])).squeeze(-1)
        if self.config.mean_cosine_score:
            if token_type_ids is None:
                raise ValueError("mean_cosine_score needs token_type_ids to find the query and passage segments")
            real = attention_mask.bool()
            scores = scores + segment_mean_cosine(hidden, real & (token_type_ids == 0), real & (token_type_ids == 1))
        return RankingOutput(scores=scores)


__all__ = ["BertCatModel", "concatenate_pair"]
