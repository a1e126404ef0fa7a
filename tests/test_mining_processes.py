"""`hf-kd mine` under `accelerate launch --num_processes 2` on CPU: the processes share the teacher's pairs and the
main process writes the rows of a one-process run."""

from __future__ import annotations

import numpy as np
from conftest import launch_two_processes, wide_random_cat_teacher

from hf_kd.cli import main
from hf_kd.data import ScoreDataset


def test_two_processes_mine_the_rows_of_one_process(ci_data, tokenizer, tmp_path, capsys):
    dl20 = ci_data / "msmarco-dl20"
    teacher = wide_random_cat_teacher(tmp_path / "teacher", tokenizer, seed=0)
    args = [
        "mine", "--queries", dl20 / "queries.tsv", "--collection", dl20 / "collection.tsv", "--qrels",
        dl20 / "qrels.txt", "--run", dl20 / "runs" / "bm25.top30.trec", "--min-grade", "2", "--skip-missing",
        "--range", "3:30", "--num-negatives", "3", "--format", "nway", "--teacher", teacher, "--margin", "0.0",
        "--device", "cpu", "--batch-size", "16",
    ]  # fmt: skip
    args = [str(a) for a in args]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    done = launch_two_processes(["-m", "hf_kd.cli", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("n-way rows from") == 1  # the main process alone writes and reports

    one, two = ScoreDataset.open(tmp_path / "one"), ScoreDataset.open(tmp_path / "two")
    pairs = one.provenance.parameters["scoring"]["processes"][0]["pairs"]
    shares = two.provenance.parameters["scoring"]["processes"]
    assert shares == [{"rank": 0, "pairs": (pairs + 1) // 2}, {"rank": 1, "pairs": pairs // 2}]
    assert f"{shares[0]['pairs']:,} by process 0, {shares[1]['pairs']:,} by process 1" in done.stdout
    rows_one, rows_two = one.table(), two.table()
    assert rows_one.num_rows == rows_two.num_rows > 10
    for column in ("query", "passages"):
        assert rows_one.column(column).equals(rows_two.column(column))
    scores_one = np.array(rows_one.column("scores").to_pylist())
    # other batch-mates, other padding: equal to float32 rounding
    np.testing.assert_allclose(np.array(rows_two.column("scores").to_pylist()), scores_one, atol=1e-5)
    assert (scores_one[:, 1:] < scores_one[:, :1]).all()  # the margin filter: every negative below its positive


def test_two_processes_share_the_dense_first_stage(ci_data, tiny_dot_folder, tmp_path, capsys):
    dl20 = ci_data / "msmarco-dl20"
    args = [
        "mine", "--queries", dl20 / "queries.tsv", "--collection", dl20 / "collection.tsv", "--qrels",
        dl20 / "qrels.txt", "--retriever", tiny_dot_folder, "--min-grade", "2", "--skip-missing", "--range", "2:15",
        "--num-negatives", "2", "--sampling", "top", "--device", "cpu", "--batch-size", "16",
    ]  # fmt: skip
    args = [str(a) for a in args]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    done = launch_two_processes(["-m", "hf_kd.cli", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = ScoreDataset.open(tmp_path / "one"), ScoreDataset.open(tmp_path / "two")
    passages = sum(1 for _ in open(dl20 / "collection.tsv", encoding="utf-8"))
    record_one = one.provenance.parameters["retrieval"]["processes"]
    record_two = two.provenance.parameters["retrieval"]["processes"]
    queries = record_one[0]["queries"]
    assert record_one == [{"rank": 0, "queries": queries, "passages": passages}]
    assert record_two == [
        {"rank": 0, "queries": (queries + 1) // 2, "passages": (passages + 1) // 2},
        {"rank": 1, "queries": queries // 2, "passages": passages // 2},
    ]
    assert "first stage: " in done.stdout and " passages by process 1" in done.stdout
    # each process encoded half the collection; the exact search over the whole gives the same top-ranked negatives
    assert one.table().equals(two.table())


def test_two_processes_search_one_bm25_index_built_once(ci_data, tmp_path, monkeypatch, capsys):
    dl20 = ci_data / "msmarco-dl20"
    args = [
        "mine", "--queries", dl20 / "queries.tsv", "--collection", dl20 / "collection.tsv", "--qrels",
        dl20 / "qrels.txt", "--min-grade", "2", "--skip-missing", "--range", "2:20", "--num-negatives", "3",
        "--seed", "7", "--device", "cpu",
    ]  # fmt: skip
    args = [str(a) for a in args]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    done = launch_two_processes(["-m", "hf_kd.cli", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = ScoreDataset.open(tmp_path / "one"), ScoreDataset.open(tmp_path / "two")
    passages = sum(1 for _ in open(dl20 / "collection.tsv", encoding="utf-8"))
    queries = one.provenance.parameters["retrieval"]["processes"][0]["queries"]
    # the main process indexed the collection once; both searched that one index
    assert two.provenance.parameters["retrieval"]["processes"] == [
        {"rank": 0, "queries": (queries + 1) // 2, "passages": passages},
        {"rank": 1, "queries": queries // 2, "passages": 0},
    ]
    assert one.table().num_rows > 10 and one.table().equals(two.table())
    assert list((tmp_path / "tmp").glob("hf-kd-bm25-*")) == []  # the shared index's temporary folder is removed
