"""Triples from judgements and candidate runs, and the `hf-kd data` commands, on ci DL20 and ci SciFact."""

from __future__ import annotations

import argparse
import os

import bm25s
import pytest

from hf_kd.data import (
    ScoreDataset,
    build_triples,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    write_run,
)
from hf_kd.data.commands import add_subcommands
from hf_kd.jobs import output_lock


@pytest.fixture(scope="module")
def dl20(ci_data):
    folder = ci_data / "msmarco-dl20"
    return {
        "folder": folder,
        "qrels": read_qrels(folder / "qrels.txt"),
        "run": read_run(folder / "runs" / "bm25.top30.trec"),
        "queries": read_queries_tsv(folder / "queries.tsv"),
        "collection": read_collection_tsv(folder / "collection.tsv"),
    }


@pytest.fixture(scope="module")
def scifact_run(ci_data, tmp_path_factory):
    """A BM25 top-20 run (bm25s) of the ci SciFact train queries over its 400 documents, as a TREC file."""
    train = read_beir(ci_data / "scifact-small", split="train")
    doc_ids = list(train.corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([train.corpus[d] for d in doc_ids], show_progress=False), show_progress=False)
    query_ids = list(train.queries)
    tokens = bm25s.tokenize([train.queries[q] for q in query_ids], show_progress=False)
    documents, scores = retriever.retrieve(tokens, k=20, show_progress=False)
    run = {qid: {doc_ids[d]: float(s) for d, s in zip(documents[i], scores[i])} for i, qid in enumerate(query_ids)}
    path = tmp_path_factory.mktemp("scifact") / "bm25.train.trec"
    write_run(run, path, tag="bm25s")
    return path


def _dl20_triples(dl20, **kwargs):
    kwargs.setdefault("query_ids", dl20["queries"])
    kwargs.setdefault("passage_ids", dl20["collection"])
    return build_triples(dl20["qrels"], [dl20["run"]], **kwargs)


def test_dl20_triples_follow_the_judgements(dl20):
    triples, stats = _dl20_triples(dl20, min_grade=2, negatives_per_positive=3, seed=13)
    qrels = dl20["qrels"]
    assert stats.queries == 10 and stats.triples == len(triples) == 3 * 48
    for qid, positive, negative in triples:
        assert qrels[qid][positive] >= 2
        assert qrels[qid].get(negative, 0) < 2  # unjudged or judged below the grade, never relevant
        assert negative in dl20["run"][qid] and negative in dl20["collection"]
    # grade 1 passages are allowed as negatives at min_grade 2, never at min_grade 1
    assert any(qrels[q].get(n) == 1 for q, _, n in triples)
    strict, _ = _dl20_triples(dl20, min_grade=1, negatives_per_positive=3, seed=13)
    assert all(qrels[q].get(n, 0) == 0 for q, _, n in strict)
    # each positive gets distinct negatives
    per_positive = {}
    for qid, positive, negative in triples:
        per_positive.setdefault((qid, positive), []).append(negative)
    assert all(len(set(negatives)) == 3 for negatives in per_positive.values())


def test_dl20_triples_are_deterministic_by_seed(dl20):
    first, _ = _dl20_triples(dl20, min_grade=2, negatives_per_positive=2, seed=1)
    again, _ = _dl20_triples(dl20, min_grade=2, negatives_per_positive=2, seed=1)
    other, _ = _dl20_triples(dl20, min_grade=2, negatives_per_positive=2, seed=2)
    assert first == again
    assert first != other
    assert [t[:2] for t in first] == [t[:2] for t in other]  # same positives, other negatives


def test_query_filters_keep_dev_queries_out(dl20):
    all_triples, _ = _dl20_triples(dl20, min_grade=2)
    dev = {"23849", "42255"}
    kept, stats = _dl20_triples(dl20, min_grade=2, exclude_queries=dev)
    assert stats.excluded_queries == 2 and not {q for q, _, _ in kept} & dev
    # a query's triples do not depend on which other queries are built
    assert kept == [t for t in all_triples if t[0] not in dev]
    only, _ = _dl20_triples(dl20, min_grade=2, include_queries=dev)
    assert {q for q, _, _ in only} == dev


def test_max_rank_limits_the_candidate_pool(dl20):
    triples, _ = _dl20_triples(dl20, min_grade=2, negatives_per_positive=2, max_rank=10)
    for qid, _, negative in triples:
        ranked = sorted(dl20["run"][qid], key=dl20["run"][qid].get, reverse=True)
        assert ranked.index(negative) < 10


def test_scifact_triples_from_a_caller_run(ci_data, scifact_run):
    train = read_beir(ci_data / "scifact-small", split="train")
    run = read_run(scifact_run)
    triples, stats = build_triples(
        train.qrels, [run], negatives_per_positive=2, seed=0, query_ids=train.queries, passage_ids=train.corpus
    )
    again, _ = build_triples(
        train.qrels, [run], negatives_per_positive=2, seed=0, query_ids=train.queries, passage_ids=train.corpus
    )
    assert triples == again
    assert stats.queries == 40 and stats.triples == 2 * 45
    assert all(train.qrels[q].get(p) == 1 and n not in train.qrels[q] for q, p, n in triples)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-kd")
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_build_triples_command_dl20(dl20, tmp_path, capsys):
    folder = dl20["folder"]
    exclude = tmp_path / "dev_queries.txt"
    exclude.write_text("23849\n\n42255\n")
    out = tmp_path / "triples"
    argv = [
        "data",
        "build-triples",
        "--qrels",
        str(folder / "qrels.txt"),
        "--run",
        str(folder / "runs" / "bm25.top30.trec"),
    ]
    argv += ["--collection", str(folder / "collection.tsv"), "--queries", str(folder / "queries.tsv")]
    argv += ["--out", str(out), "--min-grade", "2", "--negatives-per-positive", "2", "--seed", "7"]
    assert _run([*argv, "--exclude-queries", str(exclude)]) == 0
    expected, stats = _dl20_triples(
        dl20, min_grade=2, negatives_per_positive=2, seed=7, exclude_queries={"23849", "42255"}
    )
    assert f"{stats.triples:,} triples from 8 queries" in capsys.readouterr().out
    dataset = ScoreDataset.open(out).load(cache_dir=tmp_path / "cache")
    collection, queries = dl20["collection"], dl20["queries"]
    assert list(dataset) == [
        {"query": queries[q], "positive": collection[p], "negative": collection[n]} for q, p, n in expected
    ]
    provenance = ScoreDataset.open(out).provenance
    assert provenance.format == "build-triples" and provenance.parameters["seed"] == 7
    assert _run([*argv]) == 1  # the folder exists: refused
    assert "already exists" in capsys.readouterr().err


def test_build_triples_command_beir(ci_data, scifact_run, tmp_path):
    out = tmp_path / "scifact_triples"
    argv = ["data", "build-triples", "--beir", str(ci_data / "scifact-small"), "--split", "train"]
    assert _run([*argv, "--run", str(scifact_run), "--out", str(out), "--save-to-disk"]) == 0
    train = read_beir(ci_data / "scifact-small", split="train")
    rows = list(ScoreDataset.open(out).load(streaming=True))
    assert len(rows) == 45
    assert all(row["query"] in train.queries.values() and row["positive"] in train.corpus.values() for row in rows)


def test_convert_command(ci_data, tmp_path, capsys):
    source = tmp_path / "triples.tsv"
    source.write_bytes((ci_data / "msmarco-train-100.triples.tsv").read_bytes() + b"only one column\n")
    out = tmp_path / "converted"
    argv = ["data", "convert", "--format", "triples", str(source), "--out", str(out)]
    assert _run(argv) == 1
    assert f"{source}, line 101: expected 3 tab-separated columns 'query positive negative', got 1" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    assert _run([*argv, "--skip-bad-rows", "--teacher", "none"]) == 0
    printed = capsys.readouterr().out
    assert "input lines: 101  converted: 100  rejected: 1" in printed
    assert "column-count: 1" in printed and f"{out}.rejected.tsv" in printed
    assert len(ScoreDataset.open(out).load(cache_dir=tmp_path / "cache")) == 100


def test_commands_parse_the_documented_options():
    args = _parser().parse_args(
        ["data", "convert", "--format", "paper-ids", "in.tsv", "--out", "o", "--queries", "q", "--collection", "c"]
        + ["--skip-bad-rows", "--shard-rows", "5"]
    )
    assert (args.format, args.skip_bad_rows, args.shard_rows, str(args.queries)) == ("paper-ids", True, 5, "q")
    with pytest.raises(SystemExit):
        _parser().parse_args(["data", "convert", "--format", "csv", "in.tsv", "--out", "o"])


def test_build_triples_into_a_locked_output_is_refused_naming_the_holder(dl20, tmp_path, capsys):
    folder, out = dl20["folder"], tmp_path / "triples"
    argv = ["data", "build-triples", "--qrels", str(folder / "qrels.txt")]
    argv += ["--run", str(folder / "runs" / "bm25.top30.trec"), "--collection", str(folder / "collection.tsv")]
    argv += ["--queries", str(folder / "queries.tsv"), "--out", str(out)]
    with output_lock(out):
        assert _run(argv) == 1
    assert f"{out} is being written by pid {os.getpid()} on " in capsys.readouterr().err
    assert not out.exists()
