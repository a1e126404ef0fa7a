"""The `hf-kd` evaluation subcommands, end to end on the ci data with a tiny saved BERT_DOT."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import run_evaluation_command

from hf_kd.data.errors import DataFormatError
from hf_kd.data.ir_files import read_beir, read_collection_tsv, read_qrels, read_queries_tsv, read_run
from hf_kd.evaluation.commands import add_subcommands, load_model
from hf_kd.evaluation.dense import DenseIndex, dense_retrieve, encode_texts
from hf_kd.evaluation.metrics import METRIC_NAMES, compute_metrics
from hf_kd.evaluation.reports import EvaluationReport

pytestmark = pytest.mark.usefixtures("single_torch_thread")

run_command = run_evaluation_command


@pytest.fixture(scope="module")
def model_dir(tiny_dot_folder):
    return tiny_dot_folder


@pytest.fixture(scope="module")
def dl20(ci_data):
    folder = ci_data / "msmarco-dl20"
    return {
        "queries": folder / "queries.tsv",
        "collection": folder / "collection.tsv",
        "qrels": folder / "qrels.txt",
        "run": folder / "runs" / "bm25.top30.trec",
    }


def test_subcommands_are_registered():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    add_subcommands(subparsers)
    assert {"evaluate", "bm25", "index", "retrieve", "benchmark"} <= set(subparsers.choices)
    args = parser.parse_args(["evaluate", "--model", "m", "--run", "r", "--out", "o"])
    assert callable(args.func) and args.top_k == 100 and args.rel_threshold is None


def test_bm25_then_evaluate_on_beir(tmp_path, ci_data, model_dir, capsys):
    beir = ci_data / "scifact-small"
    run_path = tmp_path / "bm25.trec"
    assert run_command("bm25", "--beir", beir, "--split", "test", "--out", run_path, "--k", "50") == 0
    data = read_beir(beir, "test")
    bm25_run = read_run(run_path)
    assert set(bm25_run) == set(data.queries)
    expected = compute_metrics(bm25_run, data.qrels, rel_threshold=1)
    assert expected["nDCG@10"] > 0.5
    assert f"nDCG@10 {expected['nDCG@10']:.4f}" in capsys.readouterr().out

    out = tmp_path / "eval"
    assert (
        run_command("evaluate", "--model", model_dir, "--beir", beir, "--run", run_path, "--out", out, "--top-k", "5")
        == 0
    )
    report = json.loads((out / "metrics.json").read_text())
    assert report["rel_threshold"] == 1 and report["top_k"] == 5
    assert report["first_stage_metrics"] == pytest.approx(expected, abs=1e-12)
    reranked = read_run(out / "run.trec")
    assert all(len(candidates) == 5 for candidates in reranked.values())
    assert report["metrics"] == pytest.approx(compute_metrics(reranked, data.qrels, rel_threshold=1), abs=1e-12)
    read_back = EvaluationReport.read(out / "metrics.json")
    assert (read_back.dataset, read_back.split, read_back.retrieval) == ("scifact-small", "test", "rerank")
    assert read_back.to_json() == report


def test_evaluate_index_retrieve_benchmark(tmp_path, dl20, model_dir, capsys):
    out = tmp_path / "eval"
    assert (
        run_command(
            "evaluate",
            "--model",
            model_dir,
            "--queries",
            dl20["queries"],
            "--collection",
            dl20["collection"],
            "--qrels",
            dl20["qrels"],
            "--run",
            dl20["run"],
            "--out",
            out,
            "--top-k",
            "10",
            "--batch-size",
            "16",
        )
        == 0
    )
    report = json.loads((out / "metrics.json").read_text())
    qrels = read_qrels(dl20["qrels"])
    assert report["name"] == "tiny-dot" and report["architecture"] == "bert_dot" and report["rel_threshold"] == 2
    assert report["first_stage_metrics"] == compute_metrics(read_run(dl20["run"]), qrels)
    assert report["metrics"] == pytest.approx(compute_metrics(read_run(out / "run.trec"), qrels), abs=1e-12)
    assert set(report["per_query"]) == set(qrels) and set(report["metrics"]) == set(METRIC_NAMES)
    read_back = EvaluationReport.read(out / "metrics.json")
    assert (read_back.dataset, read_back.retrieval, read_back.run, read_back.top_k) == (
        "msmarco-dl20",
        "rerank",
        str(dl20["run"]),
        10,
    )
    assert read_back.per_query_ndcg == {qid: values["nDCG@10"] for qid, values in report["per_query"].items()}

    index_dir = tmp_path / "index"
    assert (
        run_command(
            "index",
            "--model",
            model_dir,
            "--collection",
            dl20["collection"],
            "--out",
            index_dir,
            "--index-type",
            "hnsw",
            "--hnsw-m",
            "8",
            "--ef-search",
            "64",
        )
        == 0
    )
    assert json.loads((index_dir / "index_config.json").read_text())["factory"] == "HNSW8,Flat"
    retrieved = tmp_path / "retrieved"
    assert (
        run_command(
            "retrieve",
            "--model",
            model_dir,
            "--index",
            index_dir,
            "--queries",
            dl20["queries"],
            "--qrels",
            dl20["qrels"],
            "--out",
            retrieved,
            "--k",
            "100",
        )
        == 0
    )
    dense = json.loads((retrieved / "metrics.json").read_text())
    assert dense["num_passages"] == 300 and dense["index_bytes"] > 300 * 32 * 4
    assert dense["metrics"]["Recall@1000"] == pytest.approx(
        compute_metrics(read_run(retrieved / "run.trec"), qrels)["Recall@1000"], abs=1e-12
    )
    assert all(len(candidates) == 100 for candidates in read_run(retrieved / "run.trec").values())
    dense_report = EvaluationReport.read(retrieved / "metrics.json")
    assert (dense_report.retrieval, dense_report.index, dense_report.top_k, dense_report.run) == (
        "dense",
        str(index_dir),
        100,
        None,
    )
    assert dense_report.index_factory == "HNSW8,Flat" and dense_report.dataset == "msmarco-dl20"

    sharded_dir, sharded_run = tmp_path / "sharded", tmp_path / "sharded-run"
    args = ("--model", model_dir, "--collection", dl20["collection"], "--out", sharded_dir, "--index-shards", "3")
    assert run_command("index", *args) == 0
    assert json.loads((sharded_dir / "index_config.json").read_text())["shards"] == 3
    args = ("--model", model_dir, "--index", sharded_dir, "--queries", dl20["queries"], "--out", sharded_run)
    assert run_command("retrieve", *args, "--k", "100") == 0
    model, tokenizer = load_model(str(model_dir), "cpu")
    collection = read_collection_tsv(dl20["collection"])
    vectors = encode_texts(model, tokenizer, list(collection.values()), "passages", show_progress=False)
    queries = read_queries_tsv(dl20["queries"])
    flat = dense_retrieve(model, tokenizer, DenseIndex.build(vectors, list(collection)), queries, show_progress=False)
    sharded = read_run(sharded_run / "run.trec")
    assert {qid: list(ranked)[:100] for qid, ranked in flat.items()} == {qid: list(r) for qid, r in sharded.items()}

    bench = tmp_path / "bench"
    assert (
        run_command(
            "benchmark",
            "--metrics",
            out / "metrics.json",
            "--queries",
            dl20["queries"],
            "--collection",
            dl20["collection"],
            "--runs",
            dl20["run"],
            "--num-queries",
            "2",
            "--num-candidates",
            "40",
            "--out",
            bench,
        )
        == 0
    )
    rows = json.loads((bench / "efficiency.json").read_text())
    assert rows[0]["name"] == "tiny-dot" and rows[0]["median_ms"] > 0
    assert rows[0]["storage_bytes_per_passage"] == 128 and rows[0]["metrics"] == report["metrics"]
    assert (bench / "efficiency.png").stat().st_size > 1000
    assert "| tiny-dot |" in capsys.readouterr().out

    # precomputed latency is reused instead of measured
    latency = tmp_path / "latency.json"
    latency.write_text(json.dumps({"results": [{**rows[0], "median_ms": 12.5}]}))
    assert run_command("benchmark", "--metrics", out / "metrics.json", "--latency", latency, "--out", bench) == 0
    assert json.loads((bench / "efficiency.json").read_text())[0]["median_ms"] == 12.5
    with pytest.raises(ValueError, match="no latency for tiny-dot"):
        run_command("benchmark", "--metrics", out / "metrics.json", "--out", bench)


def test_bad_inputs(tmp_path, dl20, model_dir, ci_data):
    base = [
        "evaluate",
        "--model",
        model_dir,
        "--queries",
        dl20["queries"],
        "--collection",
        dl20["collection"],
        "--qrels",
        dl20["qrels"],
        "--out",
        tmp_path / "out",
    ]
    malformed = tmp_path / "malformed.trec"
    malformed.write_text("23849 Q0 4348282 1 10.07 BM25\n23849 Q0 2674124 two 9.87 BM25\n")
    with pytest.raises(DataFormatError, match=r"malformed\.trec, line 2: expected an integer rank, got 'two'"):
        run_command(*base, "--run", malformed)
    unknown = tmp_path / "unknown.trec"
    unknown.write_text("23849 Q0 4348282 1 10.07 BM25\n23849 Q0 999999999 2 9.87 BM25\n")
    with pytest.raises(ValueError, match=r"1 candidate passages of the run \(1 query-passage pairs\) are missing"):
        run_command(*base, "--run", unknown)
    empty = tmp_path / "empty.trec"
    empty.write_text("")
    with pytest.raises(ValueError, match="the run is empty"):
        run_command(*base, "--run", empty)
    with pytest.raises(ValueError, match="--beir provides the queries"):
        run_command(*base, "--run", dl20["run"], "--beir", ci_data / "scifact-small")
    assert not (tmp_path / "out").exists()
