"""hf_kd.evaluation.reports: the one shape of `metrics.json`, its round trip, the shapes of earlier versions and the
errors on malformed files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_kd.evaluation.records import record_evaluation, recorded_evaluations
from hf_kd.evaluation.reports import (
    EvaluationReport,
    keep_reports,
    kept_runs,
    read_reports,
    reports_from_json,
    write_reports,
)

METRICS = {"MRR@10": 0.8125, "nDCG@10": 0.6875, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.375}
FIRST_STAGE = {"MRR@10": 0.5, "nDCG@10": 0.4, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.25}


def rerank_report() -> EvaluationReport:
    return EvaluationReport(
        model="outputs/bert_dot",
        name="bert_dot",
        architecture="bert_dot",
        dataset="msmarco-dl20",
        qrels="data/msmarco-dl20/qrels.txt",
        retrieval="rerank",
        run="data/msmarco-dl20/runs/bm25.top100.trec",
        top_k=100,
        rel_threshold=2,
        num_queries=2,
        num_queries_missing_from_run=0,
        num_run_queries_without_qrels=1,
        metrics=dict(METRICS),
        first_stage_metrics=dict(FIRST_STAGE),
        per_query={"q1": {"nDCG@10": 0.75, "MRR@10": 1.0}, "q2": {"nDCG@10": 0.625, "MRR@10": 0.625}},
    )


def dense_report() -> EvaluationReport:
    return EvaluationReport(
        model="outputs/bert_dot",
        name="bert_dot",
        dataset="scifact",
        split="test",
        qrels="data/scifact/qrels/test.tsv",
        retrieval="dense",
        index="index/scifact",
        index_factory="HNSW8,Flat",
        index_bytes=123_456,
        num_passages=300,
        top_k=1000,
        rel_threshold=1,
        num_queries=2,
        metrics=dict(METRICS),
    )


@pytest.mark.parametrize("make", [rerank_report, dense_report])
def test_round_trip(make, tmp_path: Path):
    report = make()
    data = report.to_json()
    assert EvaluationReport.from_json(json.loads(json.dumps(data))) == report
    assert report.write(tmp_path / "metrics.json") == tmp_path / "metrics.json"
    assert EvaluationReport.read(tmp_path / "metrics.json") == report
    assert None not in data.values()  # fields without a value are left out
    assert list(data).index("metrics") > list(data).index("num_queries")  # what was evaluated, then the results


def test_rerank_and_dense_shapes():
    rerank = rerank_report().to_json()
    assert rerank["retrieval"] == "rerank" and "index" not in rerank
    assert rerank["per_query"]["q1"] == {"nDCG@10": 0.75, "MRR@10": 1.0}
    assert rerank_report().per_query_ndcg == {"q1": 0.75, "q2": 0.625}
    dense = dense_report().to_json()
    assert dense["retrieval"] == "dense" and "run" not in dense and dense["top_k"] == 1000
    assert (dense["index"], dense["index_factory"], dense["index_bytes"], dense["num_passages"]) == (
        "index/scifact",
        "HNSW8,Flat",
        123_456,
        300,
    )
    assert "per_query" not in rerank_report().to_json(per_query=False)


def test_several_reports_in_one_file(tmp_path: Path):
    reports = [rerank_report(), dense_report()]
    path = write_reports(tmp_path / "metrics.json", reports)
    assert read_reports(path) == reports
    data = json.loads(path.read_text())
    # the first evaluation's name and metrics, for tools that read one report
    assert data["name"] == "bert_dot" and data["metrics"] == METRICS and len(data["evaluations"]) == 2
    with pytest.raises(ValueError, match=r"metrics.json: holds 2 evaluation reports, expected one$"):
        EvaluationReport.read(path)


def test_from_evaluate_run_takes_the_counts_out_of_the_metrics():
    result = {**METRICS, "num_queries": 2, "num_queries_missing_from_run": 1, "num_run_queries_without_qrels": 0}
    result.update(rel_threshold=2, per_query={"q1": {"nDCG@10": 1.0}})
    report = EvaluationReport.from_evaluate_run(result, dataset="dl20-dev", run="runs/bm25.trec", top_k=10)
    assert report.metrics == METRICS and list(report.metrics) == list(METRICS)
    assert (report.num_queries, report.num_queries_missing_from_run, report.rel_threshold) == (2, 1, 2)
    assert report.retrieval == "rerank" and report.per_query == {"q1": {"nDCG@10": 1.0}}


# ---- shapes of earlier versions -----------------------------------------------------------------------------


def test_reads_the_evaluate_report_of_earlier_versions():
    old = json.loads(
        """{
        "name": "bert_dot", "model": "outputs/bert_dot", "architecture": "bert_dot",
        "run": "data/msmarco-dl20/runs/bm25.top100.trec", "qrels": "data/msmarco-dl20/qrels.txt",
        "top_k": 100, "rel_threshold": 2,
        "metrics": {"MRR@10": 0.8125, "nDCG@10": 0.6875, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.375},
        "first_stage_metrics": {"MRR@10": 0.5, "nDCG@10": 0.4, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.25},
        "num_queries": 2, "num_queries_missing_from_run": 0, "num_run_queries_without_qrels": 1,
        "per_query": {"q1": {"nDCG@10": 0.75, "MRR@10": 1.0}, "q2": {"nDCG@10": 0.625, "MRR@10": 0.625}}
        }"""
    )
    assert EvaluationReport.from_json(old) == rerank_report()  # the dataset is the qrels file's folder


def test_reads_the_dense_report_of_earlier_versions():
    old = json.loads(
        """{
        "name": "bert_dot", "model": "outputs/bert_dot", "index": "index/scifact", "index_factory": "HNSW8,Flat",
        "index_bytes": 123456, "num_passages": 300, "k": 1000, "qrels": "data/scifact/qrels/test.tsv",
        "rel_threshold": 1,
        "metrics": {"MRR@10": 0.8125, "nDCG@10": 0.6875, "Recall@100": 0.5, "Recall@1000": 0.625, "MAP": 0.375},
        "num_queries": 2
        }"""
    )
    assert EvaluationReport.from_json(old) == dense_report()  # BEIR qrels: dataset and split from the path


def test_reads_the_reproduce_checkpoint_file_of_earlier_versions(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text(
        """{
  "name": "colbert-T2",
  "evaluations": [
    {"dataset": "dl20-dev", "run": "out/data/dl20-dev.bm25.trec", "top_k": 30, "rel_threshold": 2, "num_queries": 5,
     "metrics": {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5,
                 "num_queries": 5.0, "num_queries_missing_from_run": 0.0, "num_run_queries_without_qrels": 0.0,
                 "rel_threshold": 2.0}},
    {"dataset": "scifact-test", "run": "out/data/scifact-test.bm25.trec", "top_k": 30, "rel_threshold": 1,
     "num_queries": 10,
     "metrics": {"MRR@10": 0.4, "nDCG@10": 0.45, "Recall@100": 0.9, "Recall@1000": 0.9, "MAP": 0.4,
                 "num_queries": 10.0, "num_queries_missing_from_run": 0.0, "num_run_queries_without_qrels": 0.0,
                 "rel_threshold": 1.0}}
  ],
  "metrics": {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5}
}"""
    )
    dl20, scifact = read_reports(path)
    assert (dl20.name, dl20.dataset, dl20.top_k, dl20.rel_threshold, dl20.num_queries) == (
        "colbert-T2",
        "dl20-dev",
        30,
        2,
        5,
    )
    assert dl20.metrics == {"MRR@10": 0.7, "nDCG@10": 0.6, "Recall@100": 1.0, "Recall@1000": 1.0, "MAP": 0.5}
    assert dl20.num_queries_missing_from_run == 0 and dl20.retrieval == "rerank"
    assert (scifact.dataset, scifact.metrics["nDCG@10"], scifact.num_queries) == ("scifact-test", 0.45, 10)


def test_reads_the_reproduction_record_and_flat_mappings_of_earlier_versions():
    record = {
        "name": "BM25",
        "metrics": {"dl20-dev": {"nDCG@10": 0.5, "MRR@10": 0.25, "num_queries": 5.0, "rel_threshold": 2.0}},
        "per_query_ndcg@10": {"dl20-dev": {"q1": 0.5, "q2": 0.5}},
    }
    (report,) = reports_from_json(record, "evaluation/BM25/metrics.json")
    assert (report.name, report.dataset, report.num_queries, report.rel_threshold) == ("BM25", "dl20-dev", 5, 2)
    assert report.retrieval == "rerank"
    assert report.metrics == {"MRR@10": 0.25, "nDCG@10": 0.5} and report.per_query_ndcg == {"q1": 0.5, "q2": 0.5}

    flat, listed = reports_from_json([{"dataset": "msmarco-dev", "MRR@10": 0.33}, rerank_report().to_json()])
    assert (flat.dataset, flat.metrics, flat.retrieval) == ("msmarco-dev", {"MRR@10": 0.33}, None)
    assert listed == rerank_report()


# ---- malformed files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{\n  "metrics": {"nDCG@10": 0.5,}\n}', r"^{path}:2:\d+: invalid JSON \(.*\)$"),
        ("42", r"^{path}: expected an evaluation report \(an object with a 'metrics' mapping.*got int$"),
        ('{"metrics": {"nDCG@10": "high"}}', r"^{path}: metric 'nDCG@10' is 'high', expected a number$"),
        ('{"metrics": [0.5]}', r"^{path}: 'metrics' must map metric names to numbers, got list$"),
        ('{"dataset": "scifact"}', r"^{path}: no metrics found; expected keys such as 'nDCG@10' and 'MRR@10'$"),
        ('{"metrics": {"nDCG@10": 0.5}, "top_k": "ten"}', r"^{path}: 'top_k' is 'ten', expected an integer$"),
        ('{"metrics": {"nDCG@10": 0.5}, "run": 3}', r"^{path}: 'run' is 3, expected a string$"),
        ('{"evaluations": {}}', r"^{path}: 'evaluations' must be a non-empty list of evaluation reports$"),
        ('{"evaluations": [{"metrics": {"MAP": null}}]}', r"^{path} \(entry 0\): metric 'MAP' is None, expected a"),
        ('[{"metrics": {"MAP": 0.1}}, "x"]', r"^{path} \(entry 1\): expected an evaluation report .* got str$"),
        ('{"metrics": {"MAP": 0.1}, "retrieval": "sparse"}', r"^{path}: 'retrieval' is 'sparse', expected one of"),
        ('{"metrics": {"MAP": 0.1}, "per_query": {"q1": 0.5}}', r"^{path}: 'per_query' must map query ids to"),
    ],
)
def test_malformed_file_is_one_line_naming_it(content, message, tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message.replace("{path}", re.escape(str(path)))) as error:
        read_reports(path)
    assert "\n" not in str(error.value)


# ---- the record in the checkpoint --------------------------------------------------------------------------


def test_record_keeps_the_report_without_per_query_values(tmp_path: Path):
    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    report = rerank_report()
    (tmp_path / "eval").mkdir()
    report.write(tmp_path / "eval" / "metrics.json")
    record_evaluation(checkpoint, tmp_path / "eval" / "metrics.json", report)
    (entry,) = recorded_evaluations(checkpoint)
    assert entry["metrics_file"] == str((tmp_path / "eval" / "metrics.json").resolve())
    assert "per_query" not in entry["report"]
    copy = EvaluationReport.from_json(entry["report"])
    report.per_query = None
    assert copy == report


# ---- kept evaluations (hf-kd reproduce, hf-kd adapt) ----------------------------------------------------------


def test_keep_reports_measures_what_is_missing_and_reads_back_the_rest(tmp_path: Path):
    calls = []

    def measure(missing):
        calls.append(list(missing))
        measured = {}
        for dataset, retrieval in missing:
            report = EvaluationReport(
                name="student", metrics={"nDCG@10": 0.5 if dataset == "a" else 0.25}, per_query={"q1": {"nDCG@10": 1.0}}
            )
            run = {"q1": {"p1": 2.0}} if retrieval == "rerank" else None
            measured[(dataset, retrieval)] = (report, run)
        return measured

    first = keep_reports(tmp_path / "student", [("a", "dense"), ("a", "rerank")], measure)
    assert calls == [[("a", "dense"), ("a", "rerank")]]
    assert {key: r.metrics["nDCG@10"] for key, r in first.items()} == {("a", "dense"): 0.5, ("a", "rerank"): 0.5}
    assert (first[("a", "dense")].dataset, first[("a", "dense")].retrieval) == ("a", "dense")
    # measured before: read back, not measured again; a new set is measured alone and added
    again = keep_reports(tmp_path / "student", [("a", "dense"), ("a", "rerank"), ("b", "rerank")], measure)
    assert calls[1:] == [[("b", "rerank")]]
    assert again[("a", "dense")] == first[("a", "dense")] and again[("b", "rerank")].metrics == {"nDCG@10": 0.25}
    kept = read_reports(tmp_path / "student" / "metrics.json")
    assert [(r.dataset, r.retrieval, r.per_query_ndcg) for r in kept] == [
        ("a", "dense", {"q1": 1.0}),
        ("a", "rerank", {"q1": 1.0}),
        ("b", "rerank", {"q1": 1.0}),
    ]
    assert kept_runs(tmp_path / "student") == {
        ("a", "rerank"): {"q1": {"p1": 2.0}},
        ("b", "rerank"): {"q1": {"p1": 2.0}},
    }
    with pytest.raises(ValueError, match=r"student: the evaluation returned no report for \[\('c', 'dense'\)\]"):
        keep_reports(tmp_path / "student", [("c", "dense")], lambda missing: {})


def test_keep_reports_reads_the_reproduction_record_of_earlier_versions(tmp_path: Path):
    folder = tmp_path / "BM25"
    folder.mkdir()
    record = {"name": "BM25", "metrics": {"dl20-dev": {"nDCG@10": 0.5, "num_queries": 5.0}}, "per_query_ndcg@10": {}}
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "runs.json").write_text(json.dumps({"dl20-dev": {"q1": {"p1": 1.0}}}))
    kept = keep_reports(folder, [("dl20-dev", "rerank")], lambda missing: pytest.fail(f"measured {missing}"))
    assert kept[("dl20-dev", "rerank")].metrics_and_counts() == {"nDCG@10": 0.5, "num_queries": 5.0}
    assert kept_runs(folder) == {("dl20-dev", "rerank"): {"q1": {"p1": 1.0}}}
