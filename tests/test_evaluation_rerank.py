"""Re-ranking, latency measurement and the efficiency report."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig

from hf_kd import (
    BertCatConfig,
    BertCatModel,
    BertDotConfig,
    BertDotModel,
    ColBERTConfig,
    ColBERTModel,
    EncodedBatch,
    PreTTConfig,
    PreTTModel,
    TKConfig,
    TKModel,
)
from hf_kd.data.ir_files import read_collection_tsv, read_qrels, read_queries_tsv, read_run, write_run
from hf_kd.evaluation.latency import LatencyResult, latency_candidates, measure_rerank_latency
from hf_kd.evaluation.metrics import compute_metrics
from hf_kd.evaluation.report import (
    EfficiencyRow,
    efficiency_markdown,
    format_bytes,
    join_efficiency,
    plot_efficiency,
    write_efficiency_report,
)
from hf_kd.evaluation.rerank import rerank, top_candidates


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models gain nothing from several threads; one avoids thread wake-up costs on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RunScoreModel:
    """A scorer whose scores are known: the first-stage score of the (query, passage) pair in the run.

    Its "representations" are the row numbers of the texts, so cached scoring looks the same pairs up.
    It records what it encodes, to check the caching contract.
    """

    def __init__(self, run, queries, collection, supports_caching: bool):
        self.supports_caching = supports_caching
        self.qid_of = {text: qid for qid, text in queries.items()}
        self.pid_of = {text: pid for pid, text in collection.items()}
        self.query_ids: list[str] = []
        self.passage_ids: list[str] = []
        self.run = run
        self.encoded_passage_batches: list[list[str]] = []
        self.score_calls = 0

    def score(self, queries, passages, tokenizer, batch_size=64):
        self.score_calls += 1
        return torch.tensor([self.run[self.qid_of[q]][self.pid_of[p]] for q, p in zip(queries, passages)])

    def encode_queries(self, texts, tokenizer, batch_size=64):
        rows = []
        for text in texts:
            self.query_ids.append(self.qid_of[text])
            rows.append(len(self.query_ids) - 1)
        return EncodedBatch(torch.tensor(rows, dtype=torch.float64)[:, None])

    def encode_passages(self, texts, tokenizer, batch_size=64):
        self.encoded_passage_batches.append([self.pid_of[text] for text in texts])
        rows = []
        for text in texts:
            self.passage_ids.append(self.pid_of[text])
            rows.append(len(self.passage_ids) - 1)
        return EncodedBatch(torch.tensor(rows, dtype=torch.float64)[:, None])

    def score_encoded(self, queries, passages):
        qids = [self.query_ids[int(row)] for row in queries.embeddings[:, 0]] * len(passages)
        pids = [self.passage_ids[int(row)] for row in passages.embeddings[:, 0]]
        return torch.tensor([self.run[qid][pid] for qid, pid in zip(qids, pids)])


@pytest.fixture(scope="module")
def ci_dl20(ci_data):
    folder = ci_data / "msmarco-dl20"
    return {
        "queries": read_queries_tsv(folder / "queries.tsv"),
        "collection": read_collection_tsv(folder / "collection.tsv"),
        "qrels": read_qrels(folder / "qrels.txt"),
        "run": read_run(folder / "runs" / "bm25.top30.trec"),
    }


def tiny_backbone() -> BertConfig:
    # a wide initialisation so that a random model's scores depend on the text
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=1.0,
    )


@pytest.mark.parametrize("caching", [True, False])
def test_known_scores_reproduce_the_input_run(ci_dl20, caching):
    model = RunScoreModel(ci_dl20["run"], ci_dl20["queries"], ci_dl20["collection"], supports_caching=caching)
    reranked = rerank(
        model,
        None,
        ci_dl20["queries"],
        ci_dl20["collection"],
        ci_dl20["run"],
        top_k=30,
        batch_size=16,
        show_progress=False,
    )
    assert reranked == ci_dl20["run"]
    assert compute_metrics(reranked, ci_dl20["qrels"]) == compute_metrics(ci_dl20["run"], ci_dl20["qrels"])
    if caching:
        distinct = {pid for candidates in ci_dl20["run"].values() for pid in candidates}
        assert sorted(model.passage_ids) == sorted(distinct)  # each candidate encoded exactly once
        lengths = [max(len(ci_dl20["collection"][pid]) for pid in batch) for batch in model.encoded_passage_batches]
        assert lengths == sorted(lengths)  # length-sorted batches
        assert model.score_calls == 0
    else:
        assert model.passage_ids == [] and model.score_calls == len(ci_dl20["run"])


def test_top_k_keeps_the_best_candidates(ci_dl20):
    model = RunScoreModel(ci_dl20["run"], ci_dl20["queries"], ci_dl20["collection"], supports_caching=True)
    reranked = rerank(
        model, None, ci_dl20["queries"], ci_dl20["collection"], ci_dl20["run"], top_k=10, show_progress=False
    )
    assert all(len(candidates) == 10 for candidates in reranked.values())
    assert reranked == {
        qid: {pid: ci_dl20["run"][qid][pid] for pid in pids} for qid, pids in top_candidates(ci_dl20["run"], 10).items()
    }
    before, after = compute_metrics(ci_dl20["run"], ci_dl20["qrels"]), compute_metrics(reranked, ci_dl20["qrels"])
    assert after["nDCG@10"] == before["nDCG@10"] and after["MRR@10"] == before["MRR@10"]
    assert after["Recall@100"] < before["Recall@100"]


@pytest.mark.parametrize(
    "model_class, config_class, overrides",
    [
        (BertDotModel, BertDotConfig, {}),
        (ColBERTModel, ColBERTConfig, {}),
        (PreTTModel, PreTTConfig, {"split_layer": 1}),
        (TKModel, TKConfig, {}),
    ],
)
def test_cached_and_uncached_reranking_agree(ci_dl20, tokenizer, model_class, config_class, overrides):
    torch.manual_seed(0)
    model = model_class(config_class(backbone_config=tiny_backbone(), **overrides))
    queries = {qid: ci_dl20["queries"][qid] for qid in list(ci_dl20["queries"])[:3]}
    run = {qid: ci_dl20["run"][qid] for qid in queries}
    args = (model, tokenizer, queries, ci_dl20["collection"], run)
    cached = rerank(*args, top_k=12, batch_size=5, cache_passages=True, show_progress=False)
    uncached = rerank(*args, top_k=12, batch_size=5, cache_passages=False, show_progress=False)
    assert cached.keys() == uncached.keys()
    assert all(cached[qid].keys() == uncached[qid].keys() for qid in cached)
    cached_scores = torch.tensor([score for qid in cached for score in cached[qid].values()], dtype=torch.float64)
    uncached_scores = torch.tensor([uncached[qid][pid] for qid in cached for pid in cached[qid]], dtype=torch.float64)
    spread = cached_scores.max() - cached_scores.min()
    assert spread > 0 and len(set(cached_scores.tolist())) > 30  # the random model does tell passages apart
    assert (cached_scores - uncached_scores).abs().max() <= 1e-4 * spread


def test_bad_runs_are_clear_errors(ci_dl20):
    model = RunScoreModel(ci_dl20["run"], ci_dl20["queries"], ci_dl20["collection"], supports_caching=True)
    queries, collection = ci_dl20["queries"], ci_dl20["collection"]
    qid = next(iter(ci_dl20["run"]))
    with pytest.raises(ValueError, match=r"2 candidate passages of the run \(2 query-passage pairs\) are missing"):
        rerank(
            model,
            None,
            queries,
            collection,
            {qid: {**ci_dl20["run"][qid], "nope1": 0.0, "nope2": 0.0}},
            show_progress=False,
        )
    with pytest.raises(ValueError, match="1 of 2 queries of the run are missing from the queries"):
        rerank(model, None, queries, collection, {qid: ci_dl20["run"][qid], "ghost": {"x": 1.0}}, show_progress=False)
    with pytest.raises(ValueError, match="the run is empty"):
        rerank(model, None, queries, collection, {}, show_progress=False)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        rerank(model, None, queries, collection, ci_dl20["run"], top_k=0, show_progress=False)


def test_latency_candidates_union_then_top_up(ci_dl20):
    run = ci_dl20["run"]
    other = {qid: dict(list(candidates.items())[::-1][:5]) | {"extra": 0.0} for qid, candidates in run.items()}
    collection = dict(ci_dl20["collection"])
    qids = list(run)[:3]
    candidates = latency_candidates([run, other], collection, qids, num_candidates=100, seed=1)
    for qid in qids:
        assert len(candidates[qid]) == len(set(candidates[qid])) == 100
        assert candidates[qid][:30] == top_candidates(run, 30)[qid]
        assert "extra" not in candidates[qid]  # not in the collection
        assert all(pid in collection for pid in candidates[qid])
    assert latency_candidates([run, other], collection, qids, num_candidates=100, seed=1) == candidates
    with pytest.raises(ValueError, match="fewer than num_candidates=1000"):
        latency_candidates([run], collection, qids, num_candidates=1000)


def test_measure_rerank_latency(ci_dl20, tokenizer):
    torch.manual_seed(0)
    queries = [ci_dl20["queries"][qid] for qid in list(ci_dl20["run"])[:2]]
    passages = [
        [ci_dl20["collection"][pid] for pid in list(ci_dl20["run"][qid])[:12]] for qid in list(ci_dl20["run"])[:2]
    ]
    dot = measure_rerank_latency(
        BertDotModel(BertDotConfig(backbone_config=tiny_backbone())),
        tokenizer,
        queries,
        passages,
        batch_size=5,
        name="DOT",
        show_progress=False,
    )
    cat = measure_rerank_latency(
        BertCatModel(BertCatConfig(backbone_config=tiny_backbone())),
        tokenizer,
        queries,
        passages,
        batch_size=5,
        show_progress=False,
    )
    assert (dot.name, dot.architecture, cat.name, cat.architecture) == ("DOT", "bert_dot", "BertCatModel", "bert_cat")
    assert dot.num_queries == 2 and dot.num_candidates == 12
    assert 0 < dot.median_ms <= dot.p90_ms and 0 < cat.median_ms <= cat.p90_ms
    assert dot.storage_bytes_per_passage == 32 * 4  # one float32 vector of the 32-d backbone
    assert cat.storage_bytes_per_passage == 0.0
    assert dot.peak_memory_bytes > 10 * 2**20 and dot.device == "cpu"
    with pytest.raises(ValueError, match="one candidate list per query"):
        measure_rerank_latency(None, tokenizer, queries, passages[:1])


def test_efficiency_report(tmp_path):
    latencies = [
        LatencyResult("BERT_CAT", "bert_cat", 20, 1000, 950.0, 990.0, 960.0, 2**30, 0.0, "cuda"),
        LatencyResult("BERT_DOT", "bert_dot", 20, 1000, 23.0, 25.0, 23.5, 2**29, 3072.0, "cuda").to_dict(),
        LatencyResult("TK", "tk", 20, 1000, 14.0, 15.0, 14.2, 2**28, 46080.0, "cuda"),
    ]
    effectiveness = {
        "BERT_CAT": {"nDCG@10": 0.747, "MRR@10": 0.391},
        "BERT_DOT": {"nDCG@10": 0.712, "MRR@10": 0.332},
        "ColBERT": {"nDCG@10": 0.744},
    }
    rows = join_efficiency(latencies, effectiveness)
    assert [row.name for row in rows] == ["BERT_CAT", "BERT_DOT", "TK", "ColBERT"]
    assert rows[2].metrics == {} and rows[3].median_ms is None
    table = efficiency_markdown(rows)
    assert "| BERT_DOT | 23.0 | 25.0 | 512.0 MB | 3.0 KB | 0.332 | 0.712 |" in table
    assert "| ColBERT | - | - | - | - | - | 0.744 |" in table
    paths = write_efficiency_report(rows, tmp_path / "report")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())[1]["metrics"]["nDCG@10"] == 0.712
    assert paths["markdown"].read_text() == table
    assert format_bytes(1536) == "1.5 KB" and format_bytes(100) == "100 B" and format_bytes(None) == "-"
    # a reference panel (a paper's numbers) doubles the width; only the run's drawable rows are counted
    width = lambda png: int.from_bytes(png.read_bytes()[16:20], "big")  # noqa: E731
    reference = [EfficiencyRow("paper DOT", median_ms=23.0, metrics={"nDCG@10": 0.712})]
    assert plot_efficiency(rows, tmp_path / "two.png", reference=reference) == 2
    assert width(tmp_path / "two.png") == 2 * width(paths["plot"])
    # nothing to draw without effectiveness: no plot, tables still written
    assert "plot" not in write_efficiency_report([EfficiencyRow("TK", median_ms=1.0)], tmp_path / "bare")


def test_written_run_reads_back_identically(tmp_path, ci_dl20):
    model = RunScoreModel(ci_dl20["run"], ci_dl20["queries"], ci_dl20["collection"], supports_caching=True)
    reranked = rerank(model, None, ci_dl20["queries"], ci_dl20["collection"], ci_dl20["run"], show_progress=False)
    write_run(reranked, tmp_path / "run.trec", tag="dummy")
    assert read_run(tmp_path / "run.trec") == reranked
