"""Ranking metrics for the rest of the package, computed by the `evaluate` module shipped in `ir_metrics/`."""

from __future__ import annotations

import functools
from pathlib import Path

IR_METRICS_PATH = Path(__file__).resolve().parent / "ir_metrics"
METRIC_NAMES = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000", "MAP")
PRIMARY_METRIC = "nDCG@10"

__all__ = ["IR_METRICS_PATH", "METRIC_NAMES", "compute_metrics", "evaluate_run", "load_ir_metrics"]


@functools.cache
def load_ir_metrics():
    """Loads the `ir_metrics` module from this package by path (no network), kept in memory.

    Returns:
        `evaluate.EvaluationModule`: the metric; see `ir_metrics/ir_metrics.py` for its inputs and outputs.
    """
    import evaluate  # imported here: `evaluate` is slow to import and only needed once metrics are computed

    return evaluate.load(str(IR_METRICS_PATH), keep_in_memory=True)


def _run_columns(run: dict[str, dict[str, float]]) -> dict[str, list]:
    columns: dict[str, list] = {"query_id": [], "doc_id": [], "score": []}
    for qid, candidates in run.items():
        columns["query_id"].extend([qid] * len(candidates))
        columns["doc_id"].extend(candidates)
        columns["score"].extend(float(score) for score in candidates.values())
    return columns


def _qrels_columns(qrels: dict[str, dict[str, int]]) -> dict[str, list]:
    columns: dict[str, list] = {"query_id": [], "doc_id": [], "relevance": []}
    for qid, judged in qrels.items():
        columns["query_id"].extend([qid] * len(judged))
        columns["doc_id"].extend(judged)
        columns["relevance"].extend(int(grade) for grade in judged.values())
    return columns


def evaluate_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], rel_threshold: int = 2) -> dict:
    """Evaluates a run with the `ir_metrics` module: means, per-query values and query counts.

    The means are over every query of the qrels: a judged query missing from the run scores 0 (as with
    `trec_eval -c` and ir-measures), a query of the run without judgements is ignored; both are counted in the
    result and announced by a `UserWarning`.

    Args:
        run (`dict[str, dict[str, float]]`): query id -> {passage id -> score}, higher is better.
        qrels (`dict[str, dict[str, int]]`): query id -> {passage id -> grade}.
        rel_threshold (`int`, *optional*, defaults to 2):
            Smallest grade counted as relevant by MRR@10, Recall and MAP: 2 for graded TREC-DL qrels, 1 for
            binary (BEIR) qrels. nDCG@10 uses the grades.

    Returns:
        `dict`: the metrics of `METRIC_NAMES` (means), `per_query` (query id -> {metric -> value}),
        `num_queries`, `num_queries_missing_from_run`, `num_run_queries_without_qrels` and `rel_threshold`.

    Raises:
        ValueError: if the run has no entries or the qrels are empty.
    """
    if not any(run.values()):
        raise ValueError("the run is empty: it has no (query, passage) entries to evaluate")
    if not qrels:
        raise ValueError("the qrels are empty: there are no judged queries to evaluate on")
    return load_ir_metrics().compute(
        predictions=[_run_columns(run)], references=[_qrels_columns(qrels)], rel_threshold=rel_threshold
    )


def compute_metrics(
    run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], rel_threshold: int = 2
) -> dict[str, float]:
    """MRR@10, nDCG@10, Recall@100, Recall@1000 and MAP of a run, averaged over the queries of the qrels.

    See [`evaluate_run`] for how missing and unjudged queries are counted.

    Args:
        run (`dict[str, dict[str, float]]`): query id -> {passage id -> score}, higher is better.
        qrels (`dict[str, dict[str, int]]`): query id -> {passage id -> grade}.
        rel_threshold (`int`, *optional*, defaults to 2): smallest grade counted as relevant (1 for binary qrels).

    Returns:
        `dict[str, float]`: metric name -> mean value, for the names in `METRIC_NAMES`.

    Example:
        >>> compute_metrics({"q1": {"d1": 2.0, "d2": 1.0}}, {"q1": {"d2": 3}})["MRR@10"]
        0.5
    """
    result = evaluate_run(run, qrels, rel_threshold)
    return {name: float(result[name]) for name in METRIC_NAMES}
