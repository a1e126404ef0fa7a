"""`RerankSet`, the one re-ranking evaluation set: its candidates, its first-stage run and its metrics (ir-measures)."""

from __future__ import annotations

import ir_measures
import pytest
from ir_measures import MRR, Qrel, ScoredDoc, nDCG

from hf_kd.data import read_run
from hf_kd.evaluation.rerank_set import RerankSet
from hf_kd.training.evaluation import RerankDevSet


@pytest.fixture(scope="module")
def dev_set(ci_data) -> RerankSet:
    folder = ci_data / "msmarco-dl20"
    return RerankSet.from_files(
        folder / "queries.tsv", folder / "collection.tsv", folder / "runs" / "bm25.top30.trec", folder / "qrels.txt",
        top_k=10, name="dl20-ci",
    )  # fmt: skip


def test_candidates_are_the_top_k_of_the_run(dev_set, ci_data):
    run = read_run(ci_data / "msmarco-dl20" / "runs" / "bm25.top30.trec")
    candidates = dev_set.candidates()
    assert set(candidates) == set(run)
    for qid, pids in candidates.items():
        assert pids == sorted(run[qid], key=lambda pid: -run[qid][pid])[:10]
    first_stage = dev_set.first_stage()
    assert {qid: set(scores) for qid, scores in first_stage.items()} == {q: set(p) for q, p in candidates.items()}
    assert dev_set.name == "dl20-ci" and dev_set.run_file.endswith("bm25.top30.trec")


def test_metrics_equal_ir_measures(dev_set):
    run = dev_set.first_stage()
    metrics, per_query = dev_set.evaluate(run)
    qrels = [Qrel(q, p, g) for q, docs in dev_set.qrels.items() for p, g in docs.items()]
    scored = [ScoredDoc(q, p, s) for q, docs in run.items() for p, s in docs.items()]
    expected = ir_measures.calc_aggregate([nDCG @ 10, MRR(rel=2) @ 10], qrels, scored)
    assert metrics["nDCG@10"] == pytest.approx(expected[nDCG @ 10], abs=1e-9)
    assert metrics["MRR@10"] == pytest.approx(expected[MRR(rel=2) @ 10], abs=1e-9)
    by_query = {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], qrels, scored)}
    assert per_query == pytest.approx(by_query, abs=1e-9)


def test_the_trainer_evaluates_with_the_same_class():
    assert RerankDevSet is RerankSet
