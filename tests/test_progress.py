"""Long stages show what they are doing: re-ranking an evaluation set shows a bar per query that names the set and
the model, for zoo models, for teachers and in `hf-kd evaluate` (the ci reproduction's bars are checked in
test_reproduce.py)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import wide_random_cat_teacher
from transformers import AutoModel, AutoTokenizer

from hf_kd.cli import main
from hf_kd.evaluation.reports import kept_runs
from hf_kd.evaluation.rerank_set import RerankSet
from hf_kd.reproduce.evaluation import evaluate_model, evaluate_teacher
from hf_kd.teachers import load_teacher


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dl20(ci_data) -> RerankSet:
    folder = ci_data / "msmarco-dl20"
    data = RerankSet.from_files(
        folder / "queries.tsv", folder / "collection.tsv", folder / "runs" / "bm25.top30.trec", folder / "qrels.txt",
        top_k=3, name="dl20-dev",
    )  # fmt: skip
    data.run = dict(list(data.run.items())[:4])  # 4 queries
    data.qrels = {qid: data.qrels[qid] for qid in data.run if qid in data.qrels}
    return data


def final_bar(stderr: str, desc: str) -> str:
    """The last state of the tqdm bar `desc` (bars redraw with carriage returns)."""
    states = [part for part in re.split(r"[\r\n]", stderr) if part.startswith(f"{desc}:")]
    assert states, f"no bar {desc!r} in {stderr!r}"
    return states[-1]


def test_evaluating_a_model_shows_the_set_and_the_model_per_query(dl20, tiny_dot_folder, tmp_path, capsys):
    model, tokenizer = AutoModel.from_pretrained(tiny_dot_folder), AutoTokenizer.from_pretrained(tiny_dot_folder)
    capsys.readouterr()
    metrics = evaluate_model("bert_dot-T1", model, tokenizer, [dl20], tmp_path)
    assert set(metrics) == {"dl20-dev"}
    err = capsys.readouterr().err
    bar = final_bar(err, "Re-ranking dl20-dev with bert_dot-T1")
    assert re.match(r"Re-ranking dl20-dev with bert_dot-T1: 100%\|\S+\| 4/4 \[", bar) and "query" in bar
    assert "| 12/12 [" in final_bar(err, "Encoding the passages of dl20-dev with bert_dot-T1")  # 4 queries x top 3
    # a set measured before is read back: nothing is re-ranked, no bar
    assert evaluate_model("bert_dot-T1", model, tokenizer, [dl20], tmp_path) == metrics
    assert "Re-ranking" not in capsys.readouterr().err


def test_evaluating_a_teacher_shows_the_set_and_the_teacher_per_query(dl20, tokenizer, tmp_path, capsys):
    teacher = load_teacher(wide_random_cat_teacher(tmp_path / "cat", tokenizer, seed=0), name="teacher_2")
    capsys.readouterr()
    metrics = evaluate_teacher("teacher_2", teacher, [dl20], tmp_path / "evaluation")
    err = capsys.readouterr().err
    bar = final_bar(err, "Re-ranking dl20-dev with teacher_2")
    assert re.match(r"Re-ranking dl20-dev with teacher_2: 100%\|\S+\| 4/4 \[", bar) and "query" in bar
    # the scores are the teacher's, pair by pair, whatever the batching
    runs = kept_runs(tmp_path / "evaluation" / "teacher_2")[("dl20-dev", "rerank")]
    qid = next(iter(runs))
    pids = list(runs[qid])
    expected = teacher.score([dl20.queries[qid]] * len(pids), [dl20.collection[p] for p in pids]).tolist()
    assert [runs[qid][p] for p in pids] == pytest.approx(expected, abs=1e-5)
    assert metrics["dl20-dev"]["num_queries"] >= 1


def test_hf_kd_evaluate_shows_the_set_and_the_model_per_query(ci_data, tiny_dot_folder, tmp_path, capsys):
    dl20 = ci_data / "msmarco-dl20"
    argv = ["evaluate", "--model", tiny_dot_folder, "--queries", dl20 / "queries.tsv"]
    argv += ["--collection", dl20 / "collection.tsv", "--qrels", dl20 / "qrels.txt"]
    argv += ["--run", dl20 / "runs" / "bm25.top30.trec", "--out", tmp_path / "eval", "--top-k", "2"]
    assert main([str(arg) for arg in [*argv, "--device", "cpu"]]) == 0
    err = capsys.readouterr().err
    num_queries = len({line.split()[0] for line in (dl20 / "runs" / "bm25.top30.trec").read_text().splitlines()})
    bar = final_bar(err, "Re-ranking msmarco-dl20 with tiny-dot")
    assert re.match(rf"Re-ranking msmarco-dl20 with tiny-dot: 100%\|\S+\| {num_queries}/{num_queries} \[", bar)
    assert final_bar(err, "Encoding the passages of msmarco-dl20 with tiny-dot").startswith(
        "Encoding the passages of msmarco-dl20 with tiny-dot: 100%"
    )
