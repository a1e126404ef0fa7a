"""The IR file readers (`hf_kd.data.ir_files`) on the real ci data, and their errors on malformed lines."""

from __future__ import annotations

import pickle

import pytest

from hf_kd.data import (
    DataFormatError,
    read_beir,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    write_run,
)


@pytest.fixture(scope="module")
def dl20(ci_data):
    return ci_data / "msmarco-dl20"


def test_queries_and_collection(dl20):
    queries = read_queries_tsv(dl20 / "queries.tsv")
    collection = read_collection_tsv(dl20 / "collection.tsv")
    assert len(queries) == 10 and len(collection) == 300
    assert queries["23849"] == "are naturalization records public information"
    assert list(queries)[0] == "23849"  # file order
    # MS MARCO's mojibake is kept byte for byte, not "fixed"
    assert "Google\u00e2\u0080\u0099s Get Drive Everywhere" in collection["104800"]


def test_trec_qrels(dl20):
    qrels = read_qrels(dl20 / "qrels.txt")
    assert len(qrels) == 10
    assert sum(len(judged) for judged in qrels.values()) == 2252
    assert qrels["23849"]["1020327"] == 2 and qrels["23849"]["1034183"] == 3
    assert sum(grade >= 2 for judged in qrels.values() for grade in judged.values()) == 312


def test_beir_qrels_detected_by_header(ci_data):
    qrels = read_qrels(ci_data / "scifact-small" / "qrels" / "train.tsv")
    assert len(qrels) == 40
    assert sum(len(judged) for judged in qrels.values()) == 45  # 46 lines minus the header
    assert qrels["0"] == {"31715818": 1}


def test_run_and_write_run_round_trip(dl20, tmp_path):
    run = read_run(dl20 / "runs" / "bm25.top30.trec")
    assert len(run) == 10 and all(len(candidates) == 30 for candidates in run.values())
    assert run["23849"]["4348282"] == pytest.approx(10.066300392150879)
    out = tmp_path / "run.trec"
    write_run(run, out, tag="copy")
    assert read_run(out) == run
    lines = out.read_text().splitlines()
    first = [line.split() for line in lines[:30]]
    assert [int(columns[3]) for columns in first] == list(range(1, 31))
    scores = [float(columns[4]) for columns in first]
    assert scores == sorted(scores, reverse=True)
    assert all(columns[5] == "copy" for columns in first)
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temporary file left behind


def test_write_run_breaks_ties_by_passage_id(tmp_path):
    write_run({"q": {"b": 1.0, "a": 1.0, "c": 2.0}}, tmp_path / "run.trec")
    assert [line.split()[2] for line in (tmp_path / "run.trec").read_text().splitlines()] == ["c", "a", "b"]


def test_read_beir_split(ci_data):
    test = read_beir(ci_data / "scifact-small", split="test")
    train = read_beir(ci_data / "scifact-small", split="train")
    assert len(test.corpus) == len(train.corpus) == 400
    assert len(test.queries) == len(train.queries) == 40
    assert not set(test.queries) & set(train.queries)
    assert set(train.queries) == set(train.qrels)
    # title and text joined by a space
    assert train.corpus["103007"].startswith(
        "Cross sectional stature and weight reference curves for the UK, 1990. The current reference curves"
    )
    with pytest.raises(FileNotFoundError, match="splits available.*'test', 'train'"):
        read_beir(ci_data / "scifact-small", split="dev")


@pytest.mark.parametrize(
    ("reader", "content", "line", "expected"),
    [
        (
            read_queries_tsv,
            "1\tfirst\n2\tsecond\n3 third\n",
            3,
            "expected 2 tab-separated columns 'qid<TAB>text', got 1",
        ),
        (read_queries_tsv, "1\tfirst\n1\tagain\n", 2, "duplicate qid '1'"),
        (read_collection_tsv, "1\tone\n2\t  \n", 2, "expected a non-empty text for pid '2'"),
        (read_collection_tsv, "1\tone\n2\ttwo\tthree\n", 2, "got 3"),
        (read_qrels, "q 0 p 1\nq 0 p2\n", 2, "expected 4 whitespace-separated columns 'qid 0 pid grade', got 3"),
        (read_qrels, "q 0 p 1\nq 0 p2 high\n", 2, "expected an integer relevance grade, got 'high'"),
        (read_qrels, "q 0 p 1\nq 0 p 2\n", 2, "duplicate judgement for query 'q', passage 'p'"),
        (read_qrels, "query-id\tcorpus-id\tscore\nq\tp\t1\nq\tp2\n", 3, "expected 3 columns"),
        (read_qrels, "q 0 p 1\nquery-id\tcorpus-id\tscore\n", 2, "header 'query-id corpus-id score'"),
        (read_run, "q Q0 p 1 2.5 t\nq Q0 p2 2 nan t\n", 2, "expected a finite score, got 'nan'"),
        (read_run, "q Q0 p 1 2.5 t\nq Q0 p2 2 high t\n", 2, "expected a numeric score, got 'high'"),
        (read_run, "q Q0 p 1 2.5 t\nq Q0 p2 two 1.0 t\n", 2, "expected an integer rank"),
        (read_run, "q Q0 p 1 2.5 t\nq Q0 p 2 1.0 t\n", 2, "duplicate passage 'p' for query 'q'"),
        (read_run, "q Q0 p 1 2.5\n", 1, "expected 6 whitespace-separated columns"),
    ],
)
def test_malformed_line_names_file_line_and_expectation(tmp_path, reader, content, line, expected):
    path = tmp_path / "input.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        reader(path)
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert expected in str(info.value)
    assert info.value.line_number == line


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_bytes(b"1\tfine\n2\tcaf\xe9 latin-1\n")
    with pytest.raises(
        DataFormatError, match=r"collection.tsv, line 2: expected UTF-8 text, got invalid byte b'\\xe9'"
    ):
        read_collection_tsv(path)


def test_error_survives_pickling(tmp_path):
    error = DataFormatError(tmp_path / "x.tsv", 7, "expected 5 columns, got 4")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line_number == 7
