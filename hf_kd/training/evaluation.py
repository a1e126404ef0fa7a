"""Validation during training: re-ranking a dev run and scoring it against qrels.

A thin adapter over `hf_kd.evaluation` (`rerank`, `compute_metrics`) and the IR file readers of `hf_kd.data`, so
the trainer depends on one function, `evaluate_reranking`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import read_collection_tsv, read_qrels, read_queries_tsv, read_run
from ..evaluation.metrics import compute_metrics
from ..evaluation.rerank import rerank

__all__ = ["RerankDevSet", "evaluate_reranking"]


@dataclass
class RerankDevSet:
    """A re-ranking dev set: the first-stage candidates of some queries and their judgements.

    Attributes:
        queries: query id -> text.
        collection: passage id -> text (at least every candidate).
        run: query id -> {passage id -> first-stage score}.
        qrels: query id -> {passage id -> grade}.
        top_k: candidates re-ranked per query.
        rel_threshold: smallest grade counted as relevant by MRR@10 (2 for TREC-DL, 1 for binary qrels).
    """

    queries: dict[str, str]
    collection: dict[str, str]
    run: dict[str, dict[str, float]]
    qrels: dict[str, dict[str, int]]
    top_k: int = 100
    rel_threshold: int = 2

    @classmethod
    def from_files(
        cls, queries: str, collection: str, run: str, qrels: str, top_k: int = 100, rel_threshold: int = 2
    ) -> RerankDevSet:
        """Reads `qid<TAB>text` queries, `pid<TAB>text` passages, a TREC run and TREC qrels."""
        return cls(
            queries=read_queries_tsv(queries),
            collection=read_collection_tsv(collection),
            run=read_run(run),
            qrels=read_qrels(qrels),
            top_k=top_k,
            rel_threshold=rel_threshold,
        )


def evaluate_reranking(model, tokenizer, dev_set: RerankDevSet, batch_size: int = 64) -> dict[str, float]:
    """Re-ranks the dev run's top-k with `model` and returns MRR@10, nDCG@10, Recall@100, Recall@1000 and MAP."""
    reranked = rerank(
        model,
        tokenizer,
        dev_set.queries,
        dev_set.collection,
        dev_set.run,
        top_k=dev_set.top_k,
        batch_size=batch_size,
        show_progress=False,
    )
    return compute_metrics(reranked, dev_set.qrels, rel_threshold=dev_set.rel_threshold)
