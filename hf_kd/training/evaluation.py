"""Validation during training: re-ranking a dev set ([`RerankSet`], the evaluation set of `hf_kd.evaluation`) and
scoring it against its qrels, so the trainer depends on one function, `evaluate_reranking`.
"""

from __future__ import annotations

from ..evaluation.metrics import compute_metrics
from ..evaluation.rerank_set import RerankSet

__all__ = ["RerankDevSet", "evaluate_reranking"]

RerankDevSet = RerankSet
"""The trainer's name for [`RerankSet`] (the same class)."""


def evaluate_reranking(model, tokenizer, dev_set: RerankSet, batch_size: int = 64) -> dict[str, float]:
    """Re-ranks the dev run's top-k with `model` and returns MRR@10, nDCG@10, Recall@100, Recall@1000 and MAP."""
    reranked = dev_set.rerank(model, tokenizer, batch_size=batch_size)
    return compute_metrics(reranked, dev_set.qrels, rel_threshold=dev_set.rel_threshold)
