"""Every script in `benchmarks/` runs end to end on tiny sizes: it prints its table and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _adapt_cost(paths: dict) -> list[str]:
    return [
        "--corpus", str(paths["dl20"].parent / "scifact-small"), "--budget", "ci", "--set", "settings=[teacher]",
        "--set", "max_documents=20", "--set", "steps=2", "--set", "checkpoint_every=null", "--out", paths["out"],
    ]  # fmt: skip


def _convert_scores(paths: dict) -> list[str]:
    return ["--rows", "1000", "--data", str(paths["dl20"]), "--tmp-dir", str(paths["tmp"]), "--out", paths["out"]]


def _dense_scale(paths: dict) -> list[str]:
    return [
        "--data", str(paths["dl20"]), "--sizes", "1000", "--num-passages", "8", "--pairs", "8", "--queries", "5",
        "--pq-nbits", "4", "--threads", "1", "--backbone", str(paths["tiny"]), "--out", paths["out"],
    ]  # fmt: skip


def _mining_scale(paths: dict) -> list[str]:
    return [
        "--data", str(paths["dl20"]), "--sizes", "200", "--candidates", "20", "--pairs", "8", "--query-repeats", "2",
        "--threads", "1", "--backbone", str(paths["tiny"]), "--out", paths["out"],
    ]  # fmt: skip


def _encode_throughput(paths: dict) -> list[str]:
    return [
        "--data", str(paths["dl20"]), "--num-passages", "8", "--batch-size", "4", "--repeats", "1",
        "--threads", "1", "--input-order", "--precisions", "bfloat16,int8,onnx-int8", "--backbone", str(paths["tiny"]),
        "--out", paths["out"],
    ]  # fmt: skip


def _rerank_latency(paths: dict) -> list[str]:
    return [
        "--data", str(paths["dl20"]), "--runs", "bm25.top30.trec", "--backbone", str(paths["tiny"]),
        "--num-queries", "1", "--num-candidates", "20", "--warmup", "0", "--threads", "1", "--in-process",
        "--out", paths["out"],
    ]  # fmt: skip


def _score_throughput(paths: dict) -> list[str]:
    return [
        "--data", str(paths["dl20"]), "--run", "bm25.top30.trec", "--pairs", "8", "--triples", "4",
        "--scifact", str(paths["dl20"].parent / "scifact-small"), "--scifact-pairs", "4",
        "--max-length", "64", "--threads", "1", "--no-bf16", "--onnx-int8", "--output-json", paths["out"],
    ]  # fmt: skip


def _train_from_ids(paths: dict) -> list[str]:
    return [
        "--rows", "500", "--passages", "1000", "--queries", "100", "--batches", "2", "--batch-size", "4",
        "--work", str(paths["tmp"] / "work"), "--out", paths["out"],
    ]  # fmt: skip


def _train_throughput(paths: dict) -> list[str]:
    tiny = str(paths["tiny"])
    return [
        "--data", "dl20", "--steps", "1", "--dtypes", "fp32", "--batch-size", "2", "--backbone", tiny,
        "--out", paths["out"],
    ]  # fmt: skip


# script -> (its smoke arguments, a line of its printed table, keys of its JSON)
SMOKE_RUNS = {
    "convert_scores": (_convert_scores, "rows/s", {"benchmark", "format", "data", "machine", "results"}),
    "dense_scale": (_dense_scale, "recall@100", {"benchmark", "models", "results", "at_scale", "assumptions"}),
    "adapt_cost": (
        _adapt_cost,
        "| stage | seconds |",
        {"benchmark", "processor", "budget", "wall_minutes", "peak_memory_gb", "within_targets"},
    ),
    "mining_scale": (_mining_scale, "search ms/q", {"benchmark", "results", "teacher_filter", "mining", "at_scale"}),
    "encode_throughput": (
        _encode_throughput,
        "passages/s",
        {"benchmark", "num_passages", "batch_size", "speedup_vs_peer", "vectors_equal_within_1e-5", "results"},
    ),
    "rerank_latency": (
        _rerank_latency,
        "| Model | Query latency (median ms)",
        {"device", "num_queries", "num_candidates", "batch_size", "query_ids", "results", "checks"},
    ),
    "score_throughput": (_score_throughput, "pairs/s", {"benchmark", "results", "scores_equal_within_1e-4"}),
    "train_from_ids": (_train_from_ids, "| rows | convert rows/s", {"passages", "queries", "results"}),
    "train_throughput": (_train_throughput, "hf-kd t/s", {"benchmark", "data", "batch_size", "results", "summary"}),
}


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, minilm_path: str) -> Path:
    """A tiny random BERT with the MiniLM tokenizer, saved as a backbone folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_backbone")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def test_every_benchmark_has_a_smoke_run():
    assert {path.stem for path in BENCHMARKS.glob("*.py")} == set(SMOKE_RUNS)


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_smoke_run(script: str, tmp_path: Path, ci_data: Path, tiny_backbone: Path):
    arguments, table_line, keys = SMOKE_RUNS[script]
    out = tmp_path / f"{script}.json"
    paths = {"dl20": ci_data / "msmarco-dl20", "tiny": tiny_backbone, "tmp": tmp_path, "out": str(out)}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *arguments(paths)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=ENV, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert table_line in result.stdout, result.stdout[-4000:]
    record = json.loads(out.read_text(encoding="utf-8"))
    assert keys <= set(record), sorted(record)
    assert record["results"], "no measurements in the JSON"
