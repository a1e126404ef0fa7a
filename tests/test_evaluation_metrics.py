"""The `ir_metrics` evaluate module against ir-measures, and the bm25s first stage, on the shared data."""

from __future__ import annotations

import math

import evaluate
import ir_measures
import numpy as np
import pytest
from ir_measures import AP, RR, R, nDCG

from hf_kd.data.errors import DataFormatError
from hf_kd.data.ir_files import read_beir, read_qrels, read_run
from hf_kd.evaluation.bm25 import BM25Index, bm25_search
from hf_kd.evaluation.metrics import IR_METRICS_PATH, METRIC_NAMES, compute_metrics, evaluate_run

DL20_RUNS = [
    "bm25.top100.trec",
    "bm25_rm3.top100.trec",
    "d_bert_kd_tasb.top100.trec",
    "open_ai_ada2.top100.trec",
    "splade_p_p_ensemble_distil.top100.trec",
]


def ir_measures_per_query(run, qrels, rel: int) -> dict[str, dict[str, float]]:
    """ir-measures' values under our metric names: query id -> {name -> value}."""
    measures = {
        RR(rel=rel) @ 10: "MRR@10",
        nDCG @ 10: "nDCG@10",
        R(rel=rel) @ 100: "Recall@100",
        R(rel=rel) @ 1000: "Recall@1000",
        AP(rel=rel): "MAP",
    }
    per_query: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(list(measures), qrels, run):
        per_query.setdefault(metric.query_id, {})[measures[metric.measure]] = metric.value
    return per_query


def assert_equal_to_ir_measures(run, qrels, rel: int) -> dict:
    result = evaluate_run(run, qrels, rel_threshold=rel)
    reference = ir_measures_per_query(run, qrels, rel)
    assert set(result["per_query"]) == set(reference) == set(qrels)
    for qid, values in reference.items():
        for name, value in values.items():
            assert result["per_query"][qid][name] == pytest.approx(value, abs=1e-6), (qid, name)
    for name in METRIC_NAMES:
        mean = sum(values[name] for values in reference.values()) / len(reference)
        assert result[name] == pytest.approx(mean, abs=1e-6), name
    return result


@pytest.fixture(scope="module")
def dl20_qrels(shared_data):
    return read_qrels(shared_data / "msmarco-dl20" / "qrels.txt")


@pytest.mark.parametrize("run_name", DL20_RUNS)
def test_dl20_runs_equal_ir_measures(shared_data, dl20_qrels, run_name):
    run = read_run(shared_data / "msmarco-dl20" / "runs" / run_name)
    assert_equal_to_ir_measures(run, dl20_qrels, rel=2)


def test_dl20_known_figures(shared_data, dl20_qrels):
    runs = shared_data / "msmarco-dl20" / "runs"
    assert compute_metrics(read_run(runs / "bm25.top100.trec"), dl20_qrels)["nDCG@10"] == pytest.approx(
        0.4796, abs=5e-5
    )
    assert compute_metrics(read_run(runs / "d_bert_kd_tasb.top100.trec"), dl20_qrels)["nDCG@10"] == pytest.approx(
        0.6854, abs=5e-5
    )
    splade = compute_metrics(read_run(runs / "splade_p_p_ensemble_distil.top100.trec"), dl20_qrels)
    assert splade["nDCG@10"] == pytest.approx(0.7197, abs=5e-5)
    # top-100 runs: nothing beyond rank 100 to find
    assert splade["Recall@100"] == splade["Recall@1000"]


def test_ci_dl20_run_equals_ir_measures(ci_data):
    qrels = read_qrels(ci_data / "msmarco-dl20" / "qrels.txt")
    run = read_run(ci_data / "msmarco-dl20" / "runs" / "bm25.top30.trec")
    result = assert_equal_to_ir_measures(run, qrels, rel=2)
    assert result["num_queries"] == 10 and result["num_queries_missing_from_run"] == 0


@pytest.fixture(scope="module")
def scifact_test(shared_data):
    return read_beir(shared_data / "scifact", "test")


def test_scifact_bm25_run_is_sane_and_equals_ir_measures(scifact_test):
    run = bm25_search(scifact_test.corpus, scifact_test.queries, k=1000, show_progress=False)
    assert len(run) == 300
    assert all(0 < len(candidates) <= 1000 for candidates in run.values())
    result = assert_equal_to_ir_measures(run, scifact_test.qrels, rel=1)
    # published zero-shot BM25 on SciFact test: about 0.665
    assert 0.64 < result["nDCG@10"] < 0.69
    assert result["Recall@100"] > 0.85


def test_ci_scifact_bm25_run_is_sane_and_equals_ir_measures(ci_data):
    data = read_beir(ci_data / "scifact-small", "test")
    run = bm25_search(data.corpus, data.queries, k=100, show_progress=False)
    result = assert_equal_to_ir_measures(run, data.qrels, rel=1)
    assert result["nDCG@10"] > 0.5
    assert result["MRR@10"] > 0.5


def test_bm25_keeps_only_matching_documents_and_caps_k():
    corpus = {"d1": "neural ranking with bert", "d2": "cooking pasta at home", "d3": "bert models rank passages"}
    run = bm25_search(corpus, {"q": "bert ranking", "none": "zebra"}, k=10, show_progress=False)
    assert set(run["q"]) == {"d1", "d3"}
    assert run["q"]["d1"] > run["q"]["d3"] > 0
    assert run["none"] == {}
    with pytest.raises(ValueError, match="k must be >= 1"):
        bm25_search(corpus, {"q": "bert"}, k=0)


def test_a_saved_bm25_index_loads_memory_mapped_and_searches_as_built(ci_data, tmp_path):
    data = read_beir(ci_data / "scifact-small", "test")
    built = BM25Index.build(data.corpus, k1=0.9, b=0.4, show_progress=False)
    built.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert isinstance(loaded.retriever.scores["data"], np.memmap)  # on disk, shared by the processes that load it
    assert len(loaded) == len(data.corpus) and loaded.config == {
        "k1": 0.9,
        "b": 0.4,
        "stopwords": "en",
        "stemmer": None,
    }
    run = loaded.search(data.queries, k=20, show_progress=False)
    assert run == built.search(data.queries, k=20, show_progress=False)
    assert run == bm25_search(data.corpus, data.queries, k=20, k1=0.9, b=0.4, show_progress=False)
    assert sum(map(len, run.values())) > 10 * len(run)
    with pytest.raises(ValueError, match="built with a stemmer cannot be saved"):
        BM25Index.build(data.corpus, stemmer=str.lower, show_progress=False).save(tmp_path / "stemmed")


def test_hand_computed_values():
    qrels = {"q1": {"d1": 0, "d2": 3, "d3": 1, "d9": 2}}
    run = {"q1": {"d1": 4.0, "d2": 3.0, "d3": 2.0, "d4": 1.0}}
    metrics = compute_metrics(run, qrels, rel_threshold=2)
    assert metrics["MRR@10"] == pytest.approx(1 / 2)
    dcg = 3 / math.log2(3) + 1 / math.log2(4)
    ideal = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert metrics["nDCG@10"] == pytest.approx(dcg / ideal)
    assert metrics["Recall@100"] == pytest.approx(1 / 2)  # d2 of {d2, d9}
    assert metrics["MAP"] == pytest.approx((1 / 2) / 2)
    # a lower threshold makes d3 relevant too
    assert compute_metrics(run, qrels, rel_threshold=1)["Recall@1000"] == pytest.approx(2 / 3)


def test_mrr_breaks_score_ties_by_ascending_passage_id():
    qrels = {"q1": {"b": 2}}
    assert compute_metrics({"q1": {"a": 1.0, "b": 1.0}}, qrels)["MRR@10"] == 0.5
    assert compute_metrics({"q1": {"c": 1.0, "b": 1.0}}, qrels)["MRR@10"] == 1.0


def test_judged_queries_missing_from_run_score_zero_with_a_warning(shared_data, dl20_qrels):
    run = read_run(shared_data / "msmarco-dl20" / "runs" / "bm25.top100.trec")
    dropped = sorted(run)[:4]
    partial = {qid: candidates for qid, candidates in run.items() if qid not in dropped}
    with pytest.warns(UserWarning, match="4 of 54 judged queries have no candidates in the run"):
        result = assert_equal_to_ir_measures(partial, dl20_qrels, rel=2)
    assert result["num_queries"] == 54
    assert result["num_queries_missing_from_run"] == 4
    assert all(result["per_query"][qid]["nDCG@10"] == 0.0 for qid in dropped)
    full = compute_metrics(run, dl20_qrels)
    lost = sum(evaluate_run(run, dl20_qrels)["per_query"][qid]["nDCG@10"] for qid in dropped) / 54
    assert result["nDCG@10"] == pytest.approx(full["nDCG@10"] - lost, abs=1e-12)


def test_run_queries_without_qrels_are_ignored_with_a_warning(ci_data):
    qrels = read_qrels(ci_data / "msmarco-dl20" / "qrels.txt")
    run = read_run(ci_data / "msmarco-dl20" / "runs" / "bm25.top30.trec")
    extended = {**run, "unjudged-1": {"x": 1.0}, "unjudged-2": {"y": 2.0}}
    with pytest.warns(UserWarning, match="2 of 12 queries of the run have no judgements"):
        result = evaluate_run(extended, qrels)
    assert result["num_run_queries_without_qrels"] == 2
    assert "unjudged-1" not in result["per_query"]
    assert result["nDCG@10"] == pytest.approx(compute_metrics(run, qrels)["nDCG@10"], abs=1e-12)


def test_threshold_above_every_grade_warns():
    with pytest.warns(UserWarning, match="no judgement reaches rel_threshold=2"):
        metrics = compute_metrics({"q": {"d": 1.0}}, {"q": {"d": 1}}, rel_threshold=2)
    assert metrics["MRR@10"] == 0.0 and metrics["nDCG@10"] == 1.0


def test_empty_run_and_empty_qrels_are_errors():
    with pytest.raises(ValueError, match="the run is empty"):
        compute_metrics({}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="the run is empty"):
        compute_metrics({"q": {}}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="the qrels are empty"):
        compute_metrics({"q": {"d": 1.0}}, {})


def test_malformed_trec_line_names_file_and_line(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 2.5 tag\nq1 Q0 d2 2 tag\n")
    with pytest.raises(DataFormatError, match=r"run\.trec, line 2: expected 6 .* columns"):
        read_run(path)


def test_module_loads_by_folder_and_file_path_and_merges_batches():
    run = {"query_id": ["q1", "q1", "q2"], "doc_id": ["a", "b", "c"], "score": [2.0, 1.0, 5.0]}
    qrels = {"query_id": ["q1", "q2"], "doc_id": ["b", "c"], "relevance": [2, 3]}
    by_folder = evaluate.load(str(IR_METRICS_PATH), keep_in_memory=True)
    by_file = evaluate.load(str(IR_METRICS_PATH / "ir_metrics.py"), keep_in_memory=True)
    whole = by_folder.compute(predictions=[run], references=[qrels])
    assert whole["MRR@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert whole["per_query"]["q2"]["nDCG@10"] == 1.0
    # the same run added in two shards
    by_file.add_batch(
        predictions=[{"query_id": ["q1", "q1"], "doc_id": ["a", "b"], "score": [2.0, 1.0]}],
        references=[{"query_id": ["q1"], "doc_id": ["b"], "relevance": [2]}],
    )
    sharded = by_file.compute(
        predictions=[{"query_id": ["q2"], "doc_id": ["c"], "score": [5.0]}],
        references=[{"query_id": ["q2"], "doc_id": ["c"], "relevance": [3]}],
    )
    assert {name: sharded[name] for name in METRIC_NAMES} == {name: whole[name] for name in METRIC_NAMES}
    with pytest.raises(ValueError, match="appears twice for query 'q1'"):
        by_folder.compute(predictions=[run, run], references=[qrels, {"query_id": [], "doc_id": [], "relevance": []}])
