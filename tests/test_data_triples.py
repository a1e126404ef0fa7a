"""Triples from judgements and candidate runs, and the `hf-kd data` commands, on ci DL20 and ci SciFact."""

from __future__ import annotations

import argparse
import os

import bm25s
import pytest

from hf_kd.data import (
    ScoreDataset,
    build_candidate_pairs,
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


def test_candidate_pairs_are_distinct_pairs_of_the_top_candidates(dl20):
    run = dl20["run"]
    pairs, stats = build_candidate_pairs(
        [run], pairs_per_query=12, max_rank=10, seed=3, query_ids=dl20["queries"], passage_ids=dl20["collection"]
    )
    assert stats.queries == len(run) and stats.triples == len(pairs) == 12 * len(run)
    for qid in run:
        top10 = sorted(run[qid], key=lambda pid: (-run[qid][pid], pid))[:10]
        mine = [(a, b) for q, a, b in pairs if q == qid]
        assert len(mine) == 12
        assert all(a != b and a in top10 and b in top10 for a, b in mine)
        assert len({frozenset(pair) for pair in mine}) == 12  # no pair twice, in either order
    # random order of the two sides: the better-ranked candidate is first about half the time
    first_better = sum(run[q][a] > run[q][b] for q, a, b in pairs) / len(pairs)
    assert 0.3 < first_better < 0.7
    again, _ = build_candidate_pairs(
        [run], pairs_per_query=12, max_rank=10, seed=3, query_ids=dl20["queries"], passage_ids=dl20["collection"]
    )
    assert again == pairs
    other, _ = build_candidate_pairs([run], pairs_per_query=12, max_rank=10, seed=4)
    assert other != pairs


def test_candidate_pairs_take_every_pair_of_a_small_pool_and_add_judged_positives(dl20):
    qid = next(q for q in dl20["qrels"] if q in dl20["run"])
    run = {qid: dict(list(dl20["run"][qid].items())[:3])}
    missing = next(p for p, g in dl20["qrels"][qid].items() if g >= 2 and p not in run[qid] and p in dl20["collection"])
    pairs, stats = build_candidate_pairs([run], pairs_per_query=10_000, qrels=dl20["qrels"], min_grade=2)
    pool = set(run[qid]) | {p for p, g in dl20["qrels"][qid].items() if g >= 2}
    assert {frozenset((a, b)) for _, a, b in pairs} == {frozenset((a, b)) for a in pool for b in pool if a != b}
    assert missing in {p for _, a, b in pairs for p in (a, b)}
    assert stats.short_of_pairs == 1
    lone, stats = build_candidate_pairs([{qid: {missing: 1.0}}], pairs_per_query=5)
    assert lone == [] and stats.queries_without_negative == 1
    with pytest.raises(ValueError, match="pairs_per_query must be >= 1"):
        build_candidate_pairs([run], pairs_per_query=0)


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


def test_build_triples_command_candidate_pairs_without_qrels(dl20, tmp_path, capsys):
    folder, out = dl20["folder"], tmp_path / "pairs"
    argv = ["data", "build-triples", "--run", str(folder / "runs" / "bm25.top30.trec"), "--pairs-per-query", "5"]
    argv += ["--collection", str(folder / "collection.tsv"), "--queries", str(folder / "queries.tsv")]
    assert _run([*argv, "--out", str(out), "--max-rank", "8", "--negatives-per-positive", "2"]) == 1
    assert "do not combine it with --negatives-per-positive" in capsys.readouterr().err
    assert _run([*argv, "--out", str(out), "--max-rank", "8", "--seed", "2"]) == 0
    expected, _ = build_candidate_pairs(
        [dl20["run"]],
        pairs_per_query=5,
        max_rank=8,
        seed=2,
        query_ids=dl20["queries"],
        passage_ids=dl20["collection"],
    )
    assert f"{len(expected):,} triples from {len(dl20['run'])} queries" in capsys.readouterr().out
    collection, queries = dl20["collection"], dl20["queries"]
    assert list(ScoreDataset.open(out).load(cache_dir=tmp_path / "cache")) == [
        {"query": queries[q], "positive": collection[a], "negative": collection[b]} for q, a, b in expected
    ]
    parameters = ScoreDataset.open(out).provenance.parameters
    assert (parameters["pairs_per_query"], parameters["pair_order"]) == (5, "random")


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
