"""Batching teacher-score rows into model inputs, tokenised with the model's own conventions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchEncoding

__all__ = ["CachingTokenizer", "RankingCollator"]


class CachingTokenizer:
    """A tokenizer wrapper that remembers the token ids of every text it has tokenised.

    Calls on a list of strings without padding or tensors (how the models' `prepare_inputs` tokenise) are answered
    per text from a least-recently-used cache keyed by (text, call arguments); only unseen texts reach the wrapped
    tokenizer, in one batched call. Every other call and attribute (`pad_token_id`, `cls_token_id`, ...) goes to the
    wrapped tokenizer unchanged, so the ids are exactly those the tokenizer gives.

    Args:
        tokenizer: the wrapped tokenizer.
        max_entries (`int`, *optional*, defaults to 1_000_000): texts kept; the least recently used are dropped.
    """

    _UNCACHEABLE = ("return_tensors", "padding", "return_overflowing_tokens", "return_offsets_mapping")

    def __init__(self, tokenizer, max_entries: int = 1_000_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self.cache: OrderedDict[tuple, dict[str, list[int]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer":  # not set yet (during unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def _cacheable(self, text: Any, kwargs: dict[str, Any]) -> bool:
        if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
            return False
        if kwargs.get("text_pair") is not None or any(kwargs.get(k) for k in self._UNCACHEABLE):
            return False
        return all(isinstance(v, (bool, int, float, str, type(None))) for v in kwargs.values())

    def __call__(self, text: Any = None, **kwargs: Any) -> BatchEncoding:
        if self.max_entries <= 0 or not self._cacheable(text, kwargs):
            return self.tokenizer(text, **kwargs)
        options = tuple(sorted(kwargs.items()))
        keys = [(t, options) for t in text]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            encoded = self.tokenizer([t for t, _ in missing], **kwargs)
            for i, key in enumerate(missing):
                self.cache[key] = {name: values[i] for name, values in encoded.items()}
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = []
        for key in keys:
            self.cache.move_to_end(key)
            rows.append(self.cache[key])
        while len(self.cache) > self.max_entries:
            self.cache.popitem(last=False)
        return BatchEncoding({name: [row[name] for row in rows] for name in rows[0]})


class RankingCollator:
    """Turns rows of a teacher-score dataset into the inputs of a ranking model plus teacher labels.

    Each row is a query with its passages: `positive, negative` (triples) or `passages` (n-way, positive first).
    The passages of a batch are tokenised and padded by `model.prepare_inputs` (the architecture's own conventions,
    per-batch padding); token ids are cached per text so later epochs do not tokenise again.

    Returned keys: the model's inputs; `group_size`, the passages per query (1+N); and `labels` when the rows carry
    teacher scores: (batch, 1+N) raw scores from `pos_score, neg_score` or `scores`, or (batch,) from `margin`.

    Args:
        model: a ranking model (anything with `prepare_inputs(queries, passages, tokenizer)`).
        tokenizer: the model's tokenizer.
        cache_size (`int`, *optional*, defaults to 1_000_000): texts whose token ids are cached; 0 disables it.
    """

    def __init__(self, model, tokenizer, cache_size: int = 1_000_000):
        self.model = model
        self.tokenizer = CachingTokenizer(tokenizer, max_entries=cache_size)

    @staticmethod
    def _passages_and_label(row: dict[str, Any]) -> tuple[list[str], list[float] | float | None]:
        if "passages" in row:
            return list(row["passages"]), row.get("scores")
        passages = [row["positive"], row["negative"]]
        if "pos_score" in row:
            return passages, [row["pos_score"], row["neg_score"]]
        return passages, row.get("margin")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        queries, passages, labels = [], [], []
        group_size = None
        for index, row in enumerate(rows):
            row_passages, label = self._passages_and_label(row)
            if group_size is None:
                group_size = len(row_passages)
            if len(row_passages) != group_size or len(row_passages) < 2:
                raise ValueError(
                    f"row {index} of the batch has {len(row_passages)} passages, expected {group_size} like the "
                    "first row and at least 2: every query needs one positive and the same number N >= 1 of negatives"
                )
            if isinstance(label, list) and len(label) != len(row_passages):
                raise ValueError(
                    f"row {index} of the batch has {len(row_passages)} passages but {len(label)} teacher scores"
                )
            queries.append(row["query"])
            passages.extend(row_passages)
            labels.append(label)
        batch: dict[str, Any] = dict(self.model.prepare_inputs(queries, passages, self.tokenizer))
        batch["group_size"] = group_size
        if all(label is not None for label in labels):
            batch["labels"] = torch.tensor(labels, dtype=torch.float32)
        return batch
