"""Ranking metrics of the paper (MRR@10, nDCG@10, Recall@100/1000, MAP) as an `evaluate` metric module.

Load it by path, without network access:

```python
import evaluate
ir_metrics = evaluate.load("hf_kd/evaluation/ir_metrics")
```

The module is self-contained (it is copied into the `evaluate` modules cache when loaded) and depends only on
`evaluate`, `datasets` and `pytrec_eval`.
"""

from __future__ import annotations

import warnings

import datasets
import evaluate
import pytrec_eval

METRIC_NAMES = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000", "MAP")

# trec_eval measure -> reported name. `relevance_level` (the threshold) binarises recall and MAP; nDCG uses
# the grades themselves as gains and is not affected by it.
_TREC_EVAL_MEASURES = {
    "ndcg_cut_10": "nDCG@10",
    "recall_100": "Recall@100",
    "recall_1000": "Recall@1000",
    "map": "MAP",
}

_DESCRIPTION = """\
Ranking metrics computed with trec_eval (through pytrec_eval) for a run against relevance judgements (qrels):

- MRR@10: reciprocal rank of the first passage with grade >= `rel_threshold` within the top 10, 0 if none.
  Candidates are ordered by descending score, ties broken by ascending passage id, as ir-measures orders them
  for `RR(rel=t)@10` (trec_eval, used for the other metrics, breaks ties by descending passage id).
- nDCG@10: trec_eval's `ndcg_cut_10` with the grades as gains (ir-measures' `nDCG@10`).
- Recall@100, Recall@1000: trec_eval's `recall_100` / `recall_1000`, passages with grade >= `rel_threshold`
  count as relevant (ir-measures' `R(rel=t)@100`, `R(rel=t)@1000`).
- MAP: trec_eval's `map` binarised at `rel_threshold` (ir-measures' `AP(rel=t)`).

Use `rel_threshold=2` for graded TREC-DL qrels (grades 0-3, the TREC-DL convention) and `rel_threshold=1` for
binary qrels such as BEIR's.

Which queries count: the means are taken over every query of the qrels. A query judged in the qrels but absent
from the run (or with no candidates) scores 0 on every metric, as with `trec_eval -c` and ir-measures; a query of
the run that the qrels do not judge is left out. Both cases are reported with their counts in a `UserWarning`
and in the output (`num_queries_missing_from_run`, `num_run_queries_without_qrels`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: a list of runs. Each run is a dict of three aligned lists, one entry per retrieved passage:
        `query_id` (str), `doc_id` (str) and `score` (float, higher is better). Several runs (e.g. shards with
        different queries, added with `add_batch`) are merged into one; a (query, passage) pair may appear once.
    references: a list of qrels, one per run, each a dict of aligned lists `query_id` (str), `doc_id` (str) and
        `relevance` (int grade). They are merged like the runs.
    rel_threshold: the smallest grade that counts as relevant for MRR@10, Recall and MAP (default 2).
Returns:
    `MRR@10`, `nDCG@10`, `Recall@100`, `Recall@1000`, `MAP` (float): means over the queries of the qrels.
    `per_query` (dict): query id -> {metric name -> value}, for every query of the qrels.
    `num_queries` (int): queries in the qrels, the denominator of the means.
    `num_queries_missing_from_run` (int): judged queries without candidates in the run (scored 0).
    `num_run_queries_without_qrels` (int): queries of the run that are not judged (ignored).
    `rel_threshold` (int): the threshold used.
Examples:
    >>> ir_metrics = evaluate.load("hf_kd/evaluation/ir_metrics")
    >>> run = {"query_id": ["q1", "q1"], "doc_id": ["d1", "d2"], "score": [2.0, 1.0]}
    >>> qrels = {"query_id": ["q1"], "doc_id": ["d2"], "relevance": [2]}
    >>> result = ir_metrics.compute(predictions=[run], references=[qrels], rel_threshold=2)
    >>> result["MRR@10"]
    0.5
"""

_CITATION = """\
@inproceedings{VanGysel2018pytreceval,
  title={Pytrec\\_eval: An Extremely Fast Python Interface to trec\\_eval},
  author={Van Gysel, Christophe and de Rijke, Maarten},
  booktitle={SIGIR},
  year={2018},
}
"""


def _merge_runs(predictions: list[dict]) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for row in predictions:
        if not len(row["query_id"]) == len(row["doc_id"]) == len(row["score"]):
            raise ValueError("predictions: `query_id`, `doc_id` and `score` must have the same length")
        for qid, doc_id, score in zip(row["query_id"], row["doc_id"], row["score"]):
            candidates = run.setdefault(qid, {})
            if doc_id in candidates:
                raise ValueError(f"predictions: passage {doc_id!r} appears twice for query {qid!r}")
            candidates[doc_id] = float(score)
    return run


def _merge_qrels(references: list[dict]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for row in references:
        if not len(row["query_id"]) == len(row["doc_id"]) == len(row["relevance"]):
            raise ValueError("references: `query_id`, `doc_id` and `relevance` must have the same length")
        for qid, doc_id, grade in zip(row["query_id"], row["doc_id"], row["relevance"]):
            judged = qrels.setdefault(qid, {})
            if doc_id in judged:
                raise ValueError(f"references: passage {doc_id!r} is judged twice for query {qid!r}")
            judged[doc_id] = int(grade)
    return qrels


def reciprocal_rank(
    candidates: dict[str, float], judged: dict[str, int], rel_threshold: int, cutoff: int = 10
) -> float:
    """Reciprocal rank of the first relevant passage in the top `cutoff` (ties: ascending passage id)."""
    ranked = sorted(candidates.items(), key=lambda item: (-item[1], item[0]))[:cutoff]
    for rank, (doc_id, _) in enumerate(ranked, start=1):
        if judged.get(doc_id, 0) >= rel_threshold:
            return 1.0 / rank
    return 0.0


def compute_ir_metrics(
    run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], rel_threshold: int = 2
) -> dict:
    """Computes the metrics of this module on dict-of-dict inputs; see the module description."""
    if not any(run.values()):
        raise ValueError("the run is empty: it has no (query, passage) entries to evaluate")
    if not qrels:
        raise ValueError("the qrels are empty: there are no judged queries to evaluate on")
    if not any(grade >= rel_threshold for judged in qrels.values() for grade in judged.values()):
        warnings.warn(
            f"no judgement reaches rel_threshold={rel_threshold}: MRR@10, Recall and MAP are 0 for every query "
            "(binary qrels such as BEIR's need rel_threshold=1)",
            stacklevel=2,
        )

    judged_run = {qid: candidates for qid, candidates in run.items() if qid in qrels and candidates}
    num_missing = sum(1 for qid in qrels if qid not in judged_run)
    num_unjudged = sum(1 for qid in run if qid not in qrels)
    if num_missing:
        warnings.warn(
            f"{num_missing} of {len(qrels)} judged queries have no candidates in the run; they score 0 on "
            "every metric and stay in the means",
            stacklevel=2,
        )
    if num_unjudged:
        warnings.warn(
            f"{num_unjudged} of {len(run)} queries of the run have no judgements in the qrels; they are ignored",
            stacklevel=2,
        )

    evaluator = pytrec_eval.RelevanceEvaluator(
        {qid: qrels[qid] for qid in judged_run},
        {"ndcg_cut.10", "recall.100,1000", "map"},
        relevance_level=rel_threshold,
    )
    trec_eval_results = evaluator.evaluate(judged_run)

    per_query: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        values = dict.fromkeys(METRIC_NAMES, 0.0)
        if qid in judged_run:
            values["MRR@10"] = reciprocal_rank(judged_run[qid], judged, rel_threshold)
            for measure, value in trec_eval_results.get(qid, {}).items():
                values[_TREC_EVAL_MEASURES[measure]] = float(value)
        per_query[qid] = values

    result: dict = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in METRIC_NAMES}
    result.update(
        per_query=per_query,
        num_queries=len(qrels),
        num_queries_missing_from_run=num_missing,
        num_run_queries_without_qrels=num_unjudged,
        rel_threshold=rel_threshold,
    )
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IrMetrics(evaluate.Metric):
    """MRR@10, nDCG@10, Recall@100, Recall@1000 and MAP of a TREC-style run, per query and mean."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "query_id": datasets.List(datasets.Value("string")),
                        "doc_id": datasets.List(datasets.Value("string")),
                        "score": datasets.List(datasets.Value("float64")),
                    },
                    "references": {
                        "query_id": datasets.List(datasets.Value("string")),
                        "doc_id": datasets.List(datasets.Value("string")),
                        "relevance": datasets.List(datasets.Value("int64")),
                    },
                }
            ),
            codebase_urls=["https://github.com/cvangysel/pytrec_eval"],
            reference_urls=["https://github.com/usnistgov/trec_eval", "https://ir-measur.es"],
        )

    def _compute(self, predictions: list[dict], references: list[dict], rel_threshold: int = 2) -> dict:
        return compute_ir_metrics(_merge_runs(predictions), _merge_qrels(references), rel_threshold)
