"""Pieces shared by every hf-kd ranking model.

Backbone construction comes first, then the cached-representation container, the output dataclass, and the two base
classes: `RankingPreTrainedModel` (all five architectures) and `SplitRankingModel` (architectures that encode queries
and passages separately). The pure building blocks (tokenisation conventions, padding, scoring functions) are in
`ranking_functions.py`; the sentence-transformers files of a checkpoint in `sentence_transformers_layout.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_ranking import SUPPORTED_BACKBONE_TYPES, RankingConfig
from .ranking_functions import (
    check_grouping,
    check_texts,
    inverse_permutation,
    length_sorted_sub_batches,
    pad_sequences,
    real_width,
    resolve_max_batch_tokens,
    token_budget_batches,
    token_counts,
)
from .sentence_transformers_layout import file_versions, give_plain_file_modes, write_sentence_transformers_files

# --------------------------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------------------------


def build_backbone(config: RankingConfig) -> PreTrainedModel:
    """Builds the encoder from `config.backbone_config` alone (nothing is downloaded), without a pooler head."""
    backbone_config = config.backbone_config
    if backbone_config.model_type not in SUPPORTED_BACKBONE_TYPES:
        raise ValueError(
            f"backbone_config: unsupported backbone type {backbone_config.model_type!r}; "
            f"supported: {', '.join(SUPPORTED_BACKBONE_TYPES)}"
        )
    backbone = AutoModel.from_config(backbone_config)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # the rankers read token vectors; a pooler would be unused weights in every checkpoint
    return backbone


def load_backbone_state(module: nn.Module, name_or_path: str, prefix: str = "") -> None:
    """Copies the weights of a pretrained checkpoint into `module` (the ranker's backbone).

    Only the pretrained model's pooler may be left over; any missing weight is an error.
    """
    pretrained = AutoModel.from_pretrained(name_or_path)
    state = {k[len(prefix) :]: v for k, v in pretrained.state_dict().items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("pooler")]
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint {name_or_path!r} does not match the backbone: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )


def backbone_supports_token_types(backbone: nn.Module) -> bool:
    return getattr(backbone.config, "type_vocab_size", 0) > 1


# --------------------------------------------------------------------------------------------------------------------
# Cached representations and outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class EncodedBatch:
    """The representation an efficient ranker caches for a batch of texts.

    Attributes:
        embeddings: (n, D) one vector per text (BERT_DOT) or (n, L, D) one vector per token (ColBERT, TK, PreTT).
        mask: (n, L) 1 for real tokens, or None for single vectors.
        token_weights: (n, L) a weight per token (TK's query term weights), or None.
    """

    embeddings: torch.Tensor
    mask: torch.Tensor | None = None
    token_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def _with(self, embeddings: torch.Tensor, per_token) -> EncodedBatch:
        """A batch of `embeddings` whose mask and token weights are `per_token` of this batch's."""
        return EncodedBatch(
            embeddings,
            None if self.mask is None else per_token(self.mask),
            None if self.token_weights is None else per_token(self.token_weights),
        )

    def __getitem__(self, index) -> EncodedBatch:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return self._with(self.embeddings[index], lambda tokens: tokens[index])

    def to(self, device) -> EncodedBatch:
        return self._with(self.embeddings.to(device), lambda tokens: tokens.to(device))

    def expand(self, n: int) -> EncodedBatch:
        """Broadcasts a 1-row batch to n rows (a query scored against n passages)."""
        if len(self) != 1:
            raise ValueError(f"only a 1-row EncodedBatch can be expanded, this one has {len(self)} rows")
        embeddings = self.embeddings.expand(n, *self.embeddings.shape[1:])
        return self._with(embeddings, lambda tokens: tokens.expand(n, -1))

    def repeat_interleave(self, k: int) -> EncodedBatch:
        if k == 1:
            return self
        return self._with(self.embeddings.repeat_interleave(k, dim=0), lambda t: t.repeat_interleave(k, dim=0))

    def unbind(self) -> list[EncodedBatch]:
        """Splits into 1-row batches with the padding removed (what a passage cache stores)."""
        if self.mask is None:
            return [EncodedBatch(self.embeddings[i : i + 1]) for i in range(len(self))]
        lengths = [int(n) for n in self.mask.sum(dim=1).tolist()]
        return [
            self._with(self.embeddings[i : i + 1, :n], lambda tokens, i=i, n=n: tokens[i : i + 1, :n])
            for i, n in enumerate(lengths)
        ]

    @classmethod
    def cat(cls, batches: Sequence[EncodedBatch]) -> EncodedBatch:
        """Concatenates batches, right-padding token dimensions to the longest (weights of padding: 0)."""
        if not batches:
            raise ValueError("EncodedBatch.cat needs at least one batch")
        if batches[0].mask is None:
            return cls(torch.cat([b.embeddings for b in batches], dim=0))
        max_len = max(b.embeddings.shape[1] for b in batches)
        pads = [max_len - b.embeddings.shape[1] for b in batches]
        embeddings = [nn.functional.pad(b.embeddings, (0, 0, 0, pad)) for b, pad in zip(batches, pads)]
        masks = [nn.functional.pad(b.mask, (0, pad)) for b, pad in zip(batches, pads)]
        weights = None
        if batches[0].token_weights is not None:
            weights = torch.cat([nn.functional.pad(b.token_weights, (0, pad)) for b, pad in zip(batches, pads)])
        return cls(torch.cat(embeddings, dim=0), torch.cat(masks, dim=0), weights)

    def nbytes(self) -> int:
        """Bytes needed to store the real (unpadded) vectors."""
        if self.mask is None:
            return self.embeddings.numel() * self.embeddings.element_size()
        per_token = self.embeddings.shape[-1] * self.embeddings.element_size()
        return int(self.mask.sum().item()) * per_token


@dataclass
class RankingOutput(ModelOutput):
    """Output of every hf-kd ranking model.

    Attributes:
        scores: (n_pairs,) raw relevance scores, one per (query, passage) pair, in passage order (the losses in
            `hf_kd.losses` take them with the teacher's scores).
    """

    scores: torch.Tensor | None = None


def inference(method):
    """Runs a text-level method in eval mode without gradients, then restores the training mode."""

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return wrapper


# --------------------------------------------------------------------------------------------------------------------
# Base models
# --------------------------------------------------------------------------------------------------------------------


class RankingPreTrainedModel(PreTrainedModel):
    """Common behaviour of the five rankers: construction from a backbone, the scoring contract, saving."""

    config_class = RankingConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    supports_caching = False
    # parameter-name prefixes that belong to the pretrained backbone (the rest gets the "non-backbone" learning rate)
    backbone_prefixes: tuple[str, ...] = ("backbone.",)

    @classmethod
    def from_backbone(cls, name_or_path: str, **config_overrides: Any):
        """Builds the ranker around the weights of any BERT-family checkpoint (folder or Hub id).

        Args:
            name_or_path: a checkpoint with a `config.json` and weights loadable by `AutoModel`.
            config_overrides: values for this architecture's config (e.g. `max_query_length=32`).
        """
        from transformers import AutoConfig

        backbone_config = AutoConfig.from_pretrained(name_or_path)
        config = cls.config_class(
            backbone_config=backbone_config, backbone_name_or_path=str(name_or_path), **config_overrides
        )
        model = cls(config)
        model.load_backbone_weights(str(name_or_path))
        return model

    def load_backbone_weights(self, name_or_path: str) -> None:
        load_backbone_state(self.backbone, name_or_path)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, other parameters such as heads, projections and TK's kernels)."""
        backbone, other = [], []
        for name, param in self.named_parameters():
            (backbone if name.startswith(self.backbone_prefixes) else other).append(param)
        return backbone, other

    def prepare_inputs(self, queries: Sequence[str], passages: Sequence[str], tokenizer) -> dict[str, torch.Tensor]:
        """Tokenises (query, passage) groups with this architecture's conventions into `forward` inputs.

        `len(passages)` must be a multiple k of `len(queries)`; `passages[i*k:(i+1)*k]` belong to `queries[i]`.
        """
        raise NotImplementedError

    @inference
    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        tokenizer,
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
    ) -> torch.Tensor:
        """Scores aligned (query, passage) pairs: returns a float tensor with one raw score per pair, in input order.

        Pairs are batched longest first (word pieces of the query and the passage as this model truncates them), so
        that each batch pads to a length close to its own pairs', at most `batch_size` pairs and `max_batch_tokens`
        word pieces per batch (`None`: 2048 on a CPU, no cap elsewhere; 0: no cap; see
        `resolve_max_batch_tokens`). Every pair's score is that of the pair alone.
        """
        check_texts("queries", queries)
        check_texts("passages", passages)
        if len(queries) != len(passages):
            raise ValueError(
                f"queries and passages must be aligned lists of equal length, got {len(queries)} and {len(passages)}"
            )
        max_tokens = resolve_max_batch_tokens(max_batch_tokens, self.device)
        scores = torch.empty(len(queries), dtype=torch.float32)
        for rows in token_budget_batches(self.pair_lengths(queries, passages, tokenizer), batch_size, max_tokens):
            inputs = self.prepare_inputs([queries[i] for i in rows], [passages[i] for i in rows], tokenizer)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            scores[rows] = self(**inputs).scores.float().cpu()
        return scores

    def pair_lengths(self, queries: Sequence[str], passages: Sequence[str], tokenizer) -> list[int]:
        """Tokens of each pair joined as `[CLS] q [SEP] p [SEP]`, query and passage truncated as this model truncates
        them: what `score` sorts and caps batches by."""
        query_lengths = token_counts(tokenizer, queries, self.config.max_query_length)
        passage_lengths = token_counts(tokenizer, passages, self.config.max_passage_length)
        return [q + p + 3 for q, p in zip(query_lengths, passage_lengths)]

    def save_pretrained(self, save_directory, *args, tokenizer=None, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors, config with `auto_map`, the modeling code), plus the
        tokenizer when given and the sentence-transformers files where the architecture has them, so the folder is
        a complete checkpoint. Every file written gets the mode a plain `open()` gives under the user's umask
        (safetensors writes the weights through a private temporary file, mode 0o600)."""
        is_main_process = kwargs.get("is_main_process", True)
        before = file_versions(save_directory) if is_main_process else {}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        if is_main_process:
            write_sentence_transformers_files(self, save_directory)
            give_plain_file_modes(save_directory, before)
        return result


class SplitRankingModel(RankingPreTrainedModel):
    """An architecture that encodes queries and passages separately, so passage representations can be cached.

    Subclasses implement `tokenize_queries`, `tokenize_passages` (id lists), `encode_query_tensors`,
    `encode_passage_tensors` (tensors -> EncodedBatch) and `score_pairs` (aligned EncodedBatches -> scores).

    `forward` encodes a padded batch in length-sorted sub-batches, each trimmed to its own longest real token
    (`encode_padded`); the config value `min_sub_batch_size` (default 16, 0 disables
    the split) is the smallest number of rows a sub-batch gets. Scores and gradients equal those of the whole
    padded batch: every row attends to its own real tokens only.
    """

    supports_caching = True
    # whether `score_pairs` runs transformer layers over each pair's tokens (PreTT): then `score_encoded` keeps each
    # forward pass under the token cap of `score`
    scores_pairs_jointly = False

    def tokenize_queries(self, tokenizer, queries: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def tokenize_passages(self, tokenizer, passages: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def encode_query_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        raise NotImplementedError

    def encode_passage_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        raise NotImplementedError

    def score_pairs(self, queries: EncodedBatch, passages: EncodedBatch) -> torch.Tensor:
        raise NotImplementedError

    def prepare_inputs(self, queries: Sequence[str], passages: Sequence[str], tokenizer) -> dict[str, torch.Tensor]:
        check_grouping(queries, passages)
        pad_id = tokenizer.pad_token_id or 0
        query_ids, query_mask = pad_sequences(self.tokenize_queries(tokenizer, queries), pad_id)
        passage_ids, passage_mask = pad_sequences(self.tokenize_passages(tokenizer, passages), pad_id)
        return {
            "query_input_ids": query_ids,
            "query_attention_mask": query_mask,
            "passage_input_ids": passage_ids,
            "passage_attention_mask": passage_mask,
        }

    def forward(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        passage_input_ids: torch.Tensor,
        passage_attention_mask: torch.Tensor,
        **kwargs,
    ) -> RankingOutput:
        """Scores groups of passages against their queries.

        Args:
            query_input_ids, query_attention_mask: (n_queries, Lq), from `prepare_inputs`.
            passage_input_ids, passage_attention_mask: (n_queries * k, Lp); rows i*k..(i+1)*k-1 belong to query i.

        Returns:
            `RankingOutput` with `scores` of shape (n_queries * k,).
        """
        n_queries, n_passages = query_input_ids.shape[0], passage_input_ids.shape[0]
        if n_passages % n_queries != 0:
            raise ValueError(f"{n_passages} passages cannot be grouped evenly under {n_queries} queries")
        queries = self.encode_padded(self.encode_query_tensors, query_input_ids, query_attention_mask)
        passages = self.encode_padded(self.encode_passage_tensors, passage_input_ids, passage_attention_mask)
        return RankingOutput(scores=self.score_pairs(queries.repeat_interleave(n_passages // n_queries), passages))

    def encode_padded(self, encode, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedBatch:
        """`encode(input_ids, attention_mask)` of a padded batch, computed on length-sorted sub-batches (see
        `length_sorted_sub_batches`) each trimmed to its longest real token; rows come back in input order, token
        dimensions padded to the longest real token of the batch."""
        groups = length_sorted_sub_batches(attention_mask, self.config.min_sub_batch_size)
        if len(groups) == 1:
            return encode(input_ids, attention_mask)
        parts = []
        for rows in groups:
            mask = attention_mask[rows]
            width = real_width(mask)
            parts.append(encode(input_ids[rows, :width], mask[:, :width]))
        return EncodedBatch.cat(parts)[torch.argsort(torch.cat(groups))]

    def _encode_texts(self, texts, tokenizer, tokenize, encode, batch_size: int, max_batch_tokens) -> EncodedBatch:
        """Tokenises every text once, encodes them in batches of similar token length (longest first, each batch
        padded to its own longest, at most `batch_size` texts and `max_batch_tokens` tokens; see
        `token_budget_batches`), and returns the rows in the order of `texts`."""
        pad_id = tokenizer.pad_token_id or 0
        sequences = tokenize(tokenizer, texts)
        max_tokens = resolve_max_batch_tokens(max_batch_tokens, self.device)
        batches, order = [], []
        for rows in token_budget_batches([len(sequence) for sequence in sequences], batch_size, max_tokens):
            ids, mask = pad_sequences([sequences[i] for i in rows], pad_id)
            batches.append(encode(ids.to(self.device), mask.to(self.device)))
            order.extend(rows)
        encoded = EncodedBatch.cat(batches)
        return encoded[inverse_permutation(order).to(encoded.embeddings.device)]

    @inference
    def encode_queries(
        self, queries: Sequence[str], tokenizer, batch_size: int = 64, max_batch_tokens: int | None = None
    ) -> EncodedBatch:
        """The query-time representation (computed for each query when re-ranking). Batches as in `score`."""
        check_texts("queries", queries)
        return self._encode_texts(
            queries, tokenizer, self.tokenize_queries, self.encode_query_tensors, batch_size, max_batch_tokens
        )

    @inference
    def encode_passages(
        self, passages: Sequence[str], tokenizer, batch_size: int = 64, max_batch_tokens: int | None = None
    ) -> EncodedBatch:
        """The passage representation the paper caches at indexing time. Batches as in `score`."""
        check_texts("passages", passages)
        return self._encode_texts(
            passages, tokenizer, self.tokenize_passages, self.encode_passage_tensors, batch_size, max_batch_tokens
        )

    @inference
    def score_encoded(
        self, queries: EncodedBatch, passages: EncodedBatch, max_batch_tokens: int | None = None
    ) -> torch.Tensor:
        """Scores cached representations: aligned pairs, or one query broadcast against every passage.

        Where pairs run through transformer layers together (`scores_pairs_jointly`, PreTT), they do so in slices of
        at most `max_batch_tokens` padded tokens (as in `score`: `None` is 2048 on a CPU, no cap elsewhere).
        """
        if len(queries) == 1 and len(passages) != 1:
            queries = queries.expand(len(passages))
        if len(queries) != len(passages):
            raise ValueError(
                f"score_encoded needs aligned batches or a single query, got {len(queries)} queries and "
                f"{len(passages)} passages"
            )
        queries, passages = queries.to(self.device), passages.to(self.device)
        rows = len(passages)
        max_tokens = resolve_max_batch_tokens(max_batch_tokens, self.device) if self.scores_pairs_jointly else 0
        if max_tokens and queries.mask is not None and passages.mask is not None:
            rows = max(1, max_tokens // (queries.mask.shape[1] + passages.mask.shape[1]))
        slices = [slice(start, start + rows) for start in range(0, len(passages), rows)]
        return torch.cat([self.score_pairs(queries[part], passages[part]) for part in slices]).float().cpu()


__all__ = ["EncodedBatch", "RankingOutput", "RankingPreTrainedModel", "SplitRankingModel"]
