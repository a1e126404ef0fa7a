"""A re-ranking evaluation set: the one class the trainer's dev evaluation and the reproduction evaluate with."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import read_collection_tsv, read_qrels, read_queries_tsv, read_run
from .metrics import evaluate_run
from .reports import EvaluationReport
from .rerank import rerank, top_candidates

__all__ = ["RerankSet"]


@dataclass
class RerankSet:
    """The first-stage candidates of some queries, the texts they need and their judgements.

    Attributes:
        queries: query id -> text.
        collection: passage id -> text (at least every candidate).
        run: query id -> {passage id -> first-stage score}.
        qrels: query id -> {passage id -> grade}.
        top_k: candidates re-ranked per query.
        rel_threshold: smallest grade counted as relevant by MRR@10, Recall and MAP (2 for TREC-DL, 1 for binary
            qrels).
        name: what reports call the set (e.g. `dl20-dev`).
        run_file, qrels_file: the files the run and the judgements were read from, when they were.
    """

    queries: dict[str, str]
    collection: dict[str, str]
    run: dict[str, dict[str, float]]
    qrels: dict[str, dict[str, int]]
    top_k: int = 100
    rel_threshold: int = 2
    name: str = "dev"
    run_file: str | None = None
    qrels_file: str | None = None

    @classmethod
    def from_files(
        cls,
        queries: str,
        collection: str,
        run: str,
        qrels: str,
        top_k: int = 100,
        rel_threshold: int = 2,
        name: str = "dev",
    ) -> RerankSet:
        """Reads `qid<TAB>text` queries, `pid<TAB>text` passages, a TREC run and TREC qrels."""
        return cls(
            queries=read_queries_tsv(queries),
            collection=read_collection_tsv(collection),
            run=read_run(run),
            qrels=read_qrels(qrels),
            top_k=top_k,
            rel_threshold=rel_threshold,
            name=name,
            run_file=str(run),
            qrels_file=str(qrels),
        )

    def candidates(self) -> dict[str, list[str]]:
        """Query id -> the `top_k` first-stage passage ids, best first."""
        return top_candidates(self.run, self.top_k)

    def first_stage(self) -> dict[str, dict[str, float]]:
        """The first-stage run itself, cut to the candidates that are re-ranked."""
        return {qid: {pid: self.run[qid][pid] for pid in pids} for qid, pids in self.candidates().items()}

    def rerank(
        self,
        model,
        tokenizer,
        batch_size: int = 64,
        cache_passages: bool = True,
        show_progress: bool = False,
        max_batch_tokens: int | None = None,
        model_name: str | None = None,
    ) -> dict[str, dict[str, float]]:
        """The candidates re-scored by a zoo `model` (see [`rerank`]); with `show_progress`, the bars name this set
        and `model_name` ("Re-ranking dl20-dev with bert_dot-T1", one step per query)."""
        return rerank(
            model,
            tokenizer,
            self.queries,
            self.collection,
            self.run,
            top_k=self.top_k,
            batch_size=batch_size,
            cache_passages=cache_passages,
            show_progress=show_progress,
            max_batch_tokens=max_batch_tokens,
            label=self.name if model_name is None else f"{self.name} with {model_name}",
        )

    def evaluate(self, run: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
        """The mean metrics of a run over this set's judged queries, and each query's nDCG@10 (for paired
        significance tests)."""
        result = evaluate_run(run, self.qrels, rel_threshold=self.rel_threshold)
        per_query = {qid: values["nDCG@10"] for qid, values in result.pop("per_query").items()}
        return {name: float(value) for name, value in result.items()}, per_query

    def report(self, run: dict[str, dict[str, float]], **report_fields) -> EvaluationReport:
        """The evaluation report of a re-ranking `run` of this set (per-query values included), with the other
        fields (`name`, `model`, `architecture`...) given by name."""
        return EvaluationReport.from_evaluate_run(
            evaluate_run(run, self.qrels, rel_threshold=self.rel_threshold),
            dataset=self.name,
            qrels=self.qrels_file,
            retrieval="rerank",
            run=self.run_file,
            top_k=self.top_k,
            rel_threshold=self.rel_threshold,
            **report_fields,
        )

    def metrics(self, run: dict[str, dict[str, float]]) -> dict[str, float]:
        return self.evaluate(run)[0]
