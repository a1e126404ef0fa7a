"""Evaluation of zoo models the way the paper did it.

- `metrics`: MRR@10, nDCG@10, Recall@100/1000 and MAP from the `evaluate` module in `ir_metrics/` (trec_eval
  through pytrec_eval), per query and mean.
- `rerank`: re-ranking the candidates of a first-stage run, with cached passage representations where the
  architecture allows.
- `rerank_set`: [`RerankSet`], a re-ranking evaluation set (queries, passages, first-stage run, qrels), the one
  the trainer's dev evaluation and the reproduction use.
- `bm25`: a BM25 first stage (bm25s): an index built once, saved and loaded memory-mapped, searched per query.
- `dense`: BERT_DOT encoding and faiss indexes (exact, HNSW, IVF-PQ), dense retrieval.
- `indexing`: building an index as a resumable job (`hf-kd index`): encoded shards keyed by a fingerprint, one
  build per output folder, the index folder written whole or not at all.
- `reports`: the evaluation report (`metrics.json`), one typed shape written by `hf-kd evaluate`, `hf-kd retrieve`
  and `hf-kd reproduce` and read by the model cards and `hf-kd benchmark`; `records`: the copy an evaluation
  leaves in the checkpoint it evaluated.
- `latency` and `report`: query latency of re-ranking, the efficiency table and the efficiency-effectiveness plot.
- `significance`: paired tests of per-query differences between reports (t-test, permutation; Holm), their
  table and plot (`hf-kd compare`).
- `commands`: the `hf-kd evaluate`, `bm25`, `index`, `retrieve`, `benchmark` and `compare` subcommands.

Names are imported from their submodules on first use, so that `import hf_kd.evaluation` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "METRIC_NAMES": "metrics",
    "compute_metrics": "metrics",
    "evaluate_run": "metrics",
    "load_ir_metrics": "metrics",
    "INFERENCE_DTYPES": "loading",
    "load_model": "loading",
    "rerank": "rerank",
    "bm25_search": "bm25",
    "BM25Index": "bm25",
    "DenseIndex": "dense",
    "dense_retrieve": "dense",
    "encode_texts": "dense",
    "index_factory_string": "dense",
    "IndexBuildResult": "indexing",
    "build_dense_index": "indexing",
    "LatencyResult": "latency",
    "latency_candidates": "latency",
    "measure_rerank_latency": "latency",
    "timed_while_busy": "latency",
    "RerankSet": "rerank_set",
    "EvaluationReport": "reports",
    "read_reports": "reports",
    "write_reports": "reports",
    "PairedComparison": "significance",
    "compare_reports": "significance",
    "paired_test": "significance",
    "EfficiencyRow": "report",
    "efficiency_markdown": "report",
    "join_efficiency": "report",
    "machine_load_note": "report",
    "plot_efficiency": "report",
    "write_efficiency_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
