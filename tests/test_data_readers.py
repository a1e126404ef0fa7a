"""The teacher-score readers (`hf_kd.data.readers`) on real ci rows, and every kind of bad input."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_kd.data import (
    DataFormatError,
    NwayJsonlReader,
    PaperIdsReader,
    PaperTextReader,
    RejectedRows,
    ScoreDataset,
    StMarginMseReader,
    StMseReader,
    TriplesReader,
    convert,
    read_collection_tsv,
    read_qrels,
    read_queries_tsv,
    read_run,
    rejected_path_for,
)

PAPER_IDS_EXPECTED = "expected 5 tab-separated columns 'pos_score neg_score qid pos_pid neg_pid'"


def _rows(reader) -> list[dict]:
    return [row for batch in reader for row in batch.to_pylist()]


def _float32(value: float) -> float:
    return pa.array([value], pa.float32())[0].as_py()


@pytest.fixture(scope="module")
def ci_triples(ci_data) -> list[list[str]]:
    text = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines()]


@pytest.fixture(scope="module")
def id_files(ci_triples, tmp_path_factory) -> dict:
    """The 100 ci triples as the paper's id-based TSV, with the queries.tsv and collection.tsv it refers to."""
    folder = tmp_path_factory.mktemp("paper_ids")
    query_ids: dict[str, str] = {}
    passage_ids: dict[str, str] = {}
    lines, expected = [], []
    for i, (query, positive, negative) in enumerate(ci_triples):
        qid = query_ids.setdefault(query, str(1000 + len(query_ids)))
        pos = passage_ids.setdefault(positive, str(7_000_000 + len(passage_ids)))
        neg = passage_ids.setdefault(negative, str(7_000_000 + len(passage_ids)))
        pos_score, neg_score = 9.0 + (i % 13) * 0.3721, -2.0 + (i % 7) * 1.0937
        lines.append(f"{pos_score:.6f}\t{neg_score:.6f}\t{qid}\t{pos}\t{neg}\n")
        expected.append(
            {
                "query_id": qid,
                "positive_id": pos,
                "negative_id": neg,
                "pos_score": _float32(float(f"{pos_score:.6f}")),
                "neg_score": _float32(float(f"{neg_score:.6f}")),
                "texts": (query, positive, negative),
            }
        )
    (folder / "queries.tsv").write_text("".join(f"{qid}\t{q}\n" for q, qid in query_ids.items()), encoding="utf-8")
    (folder / "collection.tsv").write_text("".join(f"{pid}\t{p}\n" for p, pid in passage_ids.items()), encoding="utf-8")
    (folder / "scores.tsv").write_text("".join(lines), encoding="utf-8")
    return {
        "folder": folder,
        "scores": folder / "scores.tsv",
        "queries": folder / "queries.tsv",
        "collection": folder / "collection.tsv",
        "lines": lines,
        "expected": expected,
    }


def _paper_ids_reader(id_files, path, **kwargs) -> PaperIdsReader:
    return PaperIdsReader(
        path,
        query_ids=read_queries_tsv(id_files["queries"]),
        passage_ids=read_collection_tsv(id_files["collection"]),
        **kwargs,
    )


def test_paper_ids_reader_on_real_rows(id_files):
    reader = _paper_ids_reader(id_files, id_files["scores"])
    rows = _rows(reader)
    assert reader.lines_read == reader.rows_read == 100 and reader.rejected_count == 0
    assert rows == [{k: v for k, v in e.items() if k != "texts"} for e in id_files["expected"]]


def test_paper_ids_convert_joins_the_original_texts(id_files, ci_triples, tmp_path):
    report = convert(
        "paper-ids",
        id_files["scores"],
        tmp_path / "scores",
        queries=id_files["queries"],
        collection=id_files["collection"],
        teachers=["bert-cat-ensemble"],
    )
    assert (report.input_lines, report.rows, report.rejected) == (100, 100, 0)
    dataset = ScoreDataset.open(tmp_path / "scores").load(cache_dir=tmp_path / "cache")
    assert [(row["query"], row["positive"], row["negative"]) for row in dataset] == [tuple(t) for t in ci_triples]
    assert dataset[3]["pos_score"] == id_files["expected"][3]["pos_score"]


def test_paper_text_reader(ci_triples, tmp_path):
    path = tmp_path / "paper_text.tsv"
    path.write_text("".join(f"{i}.5\t-{i}.25\t{q}\t{p}\t{n}\n" for i, (q, p, n) in enumerate(ci_triples)), "utf-8")
    rows = _rows(PaperTextReader(path))
    assert len(rows) == 100
    assert rows[7] == {
        "query": ci_triples[7][0],
        "positive": ci_triples[7][1],
        "negative": ci_triples[7][2],
        "pos_score": 7.5,
        "neg_score": -7.25,
    }


def test_triples_reader_on_the_ci_triples(ci_data, ci_triples):
    reader = TriplesReader(ci_data / "msmarco-train-100.triples.tsv")
    rows = _rows(reader)
    assert [[r["query"], r["positive"], r["negative"]] for r in rows] == ci_triples
    assert rows[0]["query"] == "is a little caffeine ok during pregnancy"


def test_sentence_transformers_parquet_subsets(id_files, tmp_path):
    expected = id_files["expected"]
    margin_table = pa.table(
        {
            "query_id": [e["query_id"] for e in expected],
            "positive_id": [e["positive_id"] for e in expected],
            "negative_id": [e["negative_id"] for e in expected],
            "score": [e["pos_score"] - e["neg_score"] for e in expected],
        }
    )
    folder = tmp_path / "bert-ensemble-margin-mse"
    folder.mkdir()
    pq.write_table(margin_table.slice(0, 60), folder / "train-00000-of-00002.parquet")
    pq.write_table(margin_table.slice(60), folder / "train-00001-of-00002.parquet")
    rows = _rows(StMarginMseReader(folder, passage_ids=read_collection_tsv(id_files["collection"])))
    assert len(rows) == 100
    assert rows[61]["positive_id"] == expected[61]["positive_id"]
    assert rows[61]["margin"] == pytest.approx(expected[61]["pos_score"] - expected[61]["neg_score"], rel=1e-6)

    # bert-ensemble-mse: one score per (query, passage); integer ids are stored as strings
    mse_table = pa.table(
        {
            "query_id": [int(e["query_id"]) for e in expected for _ in range(2)],
            "passage_id": [int(e[key]) for e in expected for key in ("positive_id", "negative_id")],
            "score": [e[key] for e in expected for key in ("pos_score", "neg_score")],
        }
    )
    pq.write_table(mse_table, tmp_path / "mse.parquet")
    rows = _rows(StMseReader(tmp_path / "mse.parquet"))
    assert len(rows) == 200
    assert rows[1] == {
        "query_id": expected[0]["query_id"],
        "passage_id": expected[0]["negative_id"],
        "score": expected[0]["neg_score"],
    }


def test_nway_jsonl_both_shapes_agree(ci_data, tmp_path):
    dl20 = ci_data / "msmarco-dl20"
    qrels, run = read_qrels(dl20 / "qrels.txt"), read_run(dl20 / "runs" / "bm25.top30.trec")
    records = []
    for qid, candidates in run.items():
        ranked = sorted(candidates, key=candidates.get, reverse=True)
        positive = next(pid for pid in ranked if qrels[qid].get(pid, 0) >= 2)
        negatives = [pid for pid in ranked if qrels[qid].get(pid, 0) < 2][:4]
        records.append((qid, [positive, *negatives], [candidates[pid] for pid in [positive, *negatives]]))
    objects, lists = tmp_path / "objects.jsonl", tmp_path / "lists.jsonl"
    objects.write_text(
        "".join(json.dumps({"query_id": q, "document_ids": p, "scores": s}) + "\n" for q, p, s in records)
    )
    lists.write_text("".join(json.dumps([int(q), *([int(i), x] for i, x in zip(p, s))]) + "\n" for q, p, s in records))
    from_objects, from_lists = _rows(NwayJsonlReader(objects)), _rows(NwayJsonlReader(lists))
    assert from_objects == from_lists
    assert len(from_objects) == 10 and all(len(r["passage_ids"]) == len(r["scores"]) == 5 for r in from_objects)
    first = from_objects[0]
    assert first["query_id"] == "23849"
    assert first["scores"][0] == _float32(run["23849"][first["passage_ids"][0]])


# --- bad input -------------------------------------------------------------------------------------------


def _with_bad_line(id_files, tmp_path, bad: bytes, at: int = 3, terminated: bool = True):
    """The first 5 good lines with line `at` replaced by `bad`."""
    lines = [line.encode() for line in id_files["lines"][:5]]
    lines[at - 1] = bad + (b"\n" if terminated else b"")
    path = tmp_path / "scores.tsv"
    path.write_bytes(b"".join(lines[:at] if not terminated else lines))
    return path


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (b"9.5\t1.0\t1000\t7000000", f"{PAPER_IDS_EXPECTED}, got 4"),
        (b"9.5\t1.0\t1000\t7000000\t7000001\textra", f"{PAPER_IDS_EXPECTED}, got 6"),
        (b"", f"{PAPER_IDS_EXPECTED}, got 1"),
        (b"high\t1.0\t1000\t7000000\t7000001", "expected a numeric pos_score, got 'high'"),
        (b"9.5\t1,5\t1000\t7000000\t7000001", "expected a numeric neg_score, got '1,5'"),
        (b"9.5\tNaN\t1000\t7000000\t7000001", "expected a finite neg_score, got 'NaN'"),
        (b"-inf\t1.0\t1000\t7000000\t7000001", "expected a finite pos_score, got '-inf'"),
        (b"1e39\t1.0\t1000\t7000000\t7000001", "expected a pos_score within float32 range, got '1e39'"),
        (b"9.5\t1.0\t1000\t7000000\t424242", "neg_pid '424242' is not in the collection"),
        (b"9.5\t1.0\t999\t7000000\t7000001", "qid '999' is not in the queries"),
        (b"9.5\t1.0\t1000\t07000000\t7000001", "pos_pid '07000000' is not in the collection"),
        (b"9.5\t1.0\t1000\t+7000000\t7000001", "pos_pid '+7000000' is not in the collection"),
        (b"9.5\t1.0\t1000\tp7000000\t7000001", "pos_pid 'p7000000' is not in the collection"),
        (b"9.5\t1.0\t1000\t\t7000001", "expected a non-empty pos_pid"),
        (b"9.5\t1.0\t1000\t7000000\t70\xff01", "expected UTF-8 text, got invalid byte b'\\xff' at byte 24"),
        (b"pos_score\tneg_score\tqid\tpos_pid\tneg_pid", "got a header"),
    ],
)
def test_paper_ids_bad_line(id_files, tmp_path, bad, expected):
    path = _with_bad_line(id_files, tmp_path, bad)
    with pytest.raises(DataFormatError) as info:
        _rows(_paper_ids_reader(id_files, path))
    assert str(info.value).startswith(f"{path}, line 3: ")
    assert expected in str(info.value)


def test_ids_that_are_not_integers(tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_text("1.5\t0.5\tq-a\tdoc-1\tdoc-2\n2.5\t0.5\tq-a\tdoc-2\tdoc-1\n")
    reader = PaperIdsReader(path, query_ids={"q-a": "a query"}, passage_ids={"doc-1": "one", "doc-2": "two"})
    assert [row["positive_id"] for row in _rows(reader)] == ["doc-1", "doc-2"]
    path.write_text("1.5\t0.5\tq-a\tdoc-1\tdoc-2\n2.5\t0.5\tq-a\tdoc-3\tdoc-1\n")
    with pytest.raises(DataFormatError, match=r"line 2: pos_pid 'doc-3' is not in the collection"):
        _rows(PaperIdsReader(path, query_ids={"q-a": "a query"}, passage_ids={"doc-1": "one", "doc-2": "two"}))


def test_header_on_the_first_line(id_files, tmp_path):
    path = _with_bad_line(id_files, tmp_path, b"pos_score\tneg_score\tqid\tpos_pid\tneg_pid", at=1)
    with pytest.raises(
        DataFormatError, match=r"line 1: expected a data line .* got a header .*this format has no header"
    ):
        _rows(_paper_ids_reader(id_files, path))
    triples = tmp_path / "triples.tsv"
    triples.write_text("query\tpositive\tnegative\nwhat is kd\tdistillation is\ta cat\n")
    with pytest.raises(
        DataFormatError, match=r"triples.tsv, line 1: .*got a header \['query', 'positive', 'negative'\]"
    ):
        _rows(TriplesReader(triples))


def test_truncated_last_line(id_files, tmp_path):
    path = _with_bad_line(id_files, tmp_path, b"9.5\t1.0\t10", at=5, terminated=False)
    with pytest.raises(DataFormatError) as info:
        _rows(_paper_ids_reader(id_files, path))
    assert str(info.value) == (
        f"{path}, line 5: truncated last line: {PAPER_IDS_EXPECTED}, got 3 and no newline at end of file"
    )
    # a complete last line without a trailing newline is fine
    path.write_bytes("".join(id_files["lines"][:5]).rstrip("\n").encode())
    assert len(_rows(_paper_ids_reader(id_files, path))) == 5


def test_empty_text_and_bad_encoding_in_text_formats(ci_triples, tmp_path):
    lines = [f"{q}\t{p}\t{n}\n".encode() for q, p, n in ci_triples[:4]]
    path = tmp_path / "triples.tsv"
    path.write_bytes(b"".join([*lines[:2], b"a query\t   \ta negative\n", *lines[2:]]))
    with pytest.raises(DataFormatError, match=r"triples.tsv, line 3: expected a non-empty positive$"):
        _rows(TriplesReader(path))
    path.write_bytes(b"".join([*lines, b"caf\xe9\tpassage\tother\n"]))
    with pytest.raises(DataFormatError, match=r"triples.tsv, line 5: expected UTF-8 text, got invalid byte b'\\xe9'"):
        _rows(TriplesReader(path))
    paper = tmp_path / "paper_text.tsv"
    paper.write_text("1.0\t0.5\tq\tp\tn\n2.0\t0.5\tq\tp\t\n")
    with pytest.raises(DataFormatError, match=r"paper_text.tsv, line 2: expected a non-empty neg_text"):
        _rows(PaperTextReader(paper))


def test_line_numbers_are_exact_across_blocks(id_files, tmp_path):
    lines = [line.encode() for line in id_files["lines"]]
    lines[76] = b"9.5\t1.0\t1000\t7000000\n"
    path = tmp_path / "scores.tsv"
    path.write_bytes(b"".join(lines))
    for block_bytes in (300, 4096, 1 << 20):
        with pytest.raises(DataFormatError, match=rf"scores.tsv, line 77: {PAPER_IDS_EXPECTED}, got 4"):
            _rows(_paper_ids_reader(id_files, path, block_bytes=block_bytes))


def test_line_by_line_path_gives_the_same_rows_as_the_vectorised_one(id_files, tmp_path):
    clean = _rows(_paper_ids_reader(id_files, id_files["scores"]))
    path = tmp_path / "scores.tsv"
    path.write_bytes("".join(id_files["lines"]).encode() + b"oops\n")  # forces the line-by-line path
    rejected = RejectedRows(tmp_path / "rejected.tsv")
    assert _rows(_paper_ids_reader(id_files, path, rejected=rejected)) == clean
    rejected.close()


def test_skip_bad_rows_accounts_for_every_line(id_files, tmp_path):
    lines = [line.encode() for line in id_files["lines"]]
    bad = {
        1: (b"pos_score\tneg_score\tqid\tpos_pid\tneg_pid", "header"),
        10: (b"9.5\t1.0\t1000\t7000000", "column-count"),
        20: (b"x\t1.0\t1000\t7000000\t7000001", "non-numeric-score"),
        30: (b"nan\t1.0\t1000\t7000000\t7000001", "non-finite-score"),
        40: (b"9.5\t1.0\t1000\t7000000\t1", "unknown-id"),
        50: (b"9.5\t1.0\t1000\t7000000\t7\xc3", "bad-encoding"),
        107: (b"9.5\t1.0", "truncated-line"),
    }
    for line_number in sorted(bad):
        lines.insert(line_number - 1, bad[line_number][0] + b"\n")
    lines[-1] = lines[-1].rstrip(b"\n")
    source = tmp_path / "scores.tsv"
    source.write_bytes(b"".join(lines))
    out = tmp_path / "dataset"
    report = convert(
        "paper-ids",
        source,
        out,
        queries=id_files["queries"],
        collection=id_files["collection"],
        skip_bad_rows=True,
        shard_rows=30,
    )
    assert (report.input_lines, report.rows, report.rejected) == (107, 100, 7)
    assert report.rows + report.rejected == report.input_lines
    assert report.rejected_by_kind == {kind: 1 for _, kind in bad.values()}
    assert report.rejected_path == str(rejected_path_for(out)) == f"{out}.rejected.tsv"
    rejected = [line.split("\t") for line in (tmp_path / "dataset.rejected.tsv").read_text().splitlines()]
    assert rejected[0] == ["source", "line", "kind", "reason", "content"]
    assert [(int(r[1]), r[2]) for r in rejected[1:]] == [(n, kind) for n, (_, kind) in sorted(bad.items())]
    assert rejected[5][4] == "9.5\\t1.0\\t1000\\t7000000\\t1"  # the raw line, tabs escaped
    assert rejected[6][4] == "9.5\\t1.0\\t1000\\t7000000\\t7\\\\xc3"  # invalid bytes escaped
    dataset = ScoreDataset.open(out).load(with_texts=False, cache_dir=tmp_path / "cache")
    assert dataset["negative_id"] == [e["negative_id"] for e in id_files["expected"]]
    assert len(list((out / "data").glob("*.parquet"))) == 4


def test_nway_jsonl_bad_lines(tmp_path):
    path = tmp_path / "nway.jsonl"
    good = json.dumps({"query_id": "q", "document_ids": ["a", "b"], "scores": [2.0, 1.0]})
    cases = [
        ('{"query_id": "q", "document_ids": ["a", "b"], "scores": [2.0]}', "lists of equal length"),
        ('["q", ["a", 2.0]]', "with at least 2 passages, got 1 passages"),
        ('["q", ["a", 2.0], ["b", "high"]]', "expected numeric scores, got 'high'"),
        ('["q", ["a", 2.0], ["b", NaN]]', "expected finite float32 scores, got nan"),
        ('["q", ["a", 2.0], ["a", 1.0]]', "expected distinct passage ids"),
        ('{"query_id": "q", "scores": [1, 2]}', "missing keys ['document_ids']"),
        ("", "got an empty line"),
        ('{"query_id": "q", "document_ids": ["a", "b"], "scores": [2.0, 1.0]', "got invalid JSON"),
    ]
    for bad, expected in cases:
        path.write_text(f"{good}\n{bad}\n{good}\n")
        with pytest.raises(DataFormatError) as info:
            _rows(NwayJsonlReader(path))
        assert str(info.value).startswith(f"{path}, line 2: ") and expected in str(info.value), bad
    path.write_text(f"{good}\n{good[:-3]}")
    with pytest.raises(DataFormatError, match=r"line 2: truncated last line: .*no newline at end of file"):
        _rows(NwayJsonlReader(path))


def test_parquet_bad_rows_name_the_row(tmp_path):
    path = tmp_path / "margin.parquet"
    table = pa.table(
        {
            "query_id": ["1", "2", "3", "4"],
            "positive_id": ["10", "20", None, "40"],
            "negative_id": ["11", "21", "31", "41"],
            "score": [1.0, 2.0, 3.0, math.inf],
        }
    )
    pq.write_table(table, path)
    with pytest.raises(DataFormatError, match=r"margin.parquet, row 3: expected a non-null positive_id"):
        _rows(StMarginMseReader(path))
    rejected = RejectedRows(tmp_path / "rejected.tsv")
    reader = StMarginMseReader(path, rejected=rejected)
    assert [r["query_id"] for r in _rows(reader)] == ["1", "2"]
    rejected.close()
    assert (reader.lines_read, reader.rejected_count, dict(rejected.counts)) == (
        4,
        2,
        {"null-value": 1, "non-finite-score": 1},
    )
    pq.write_table(table.drop(["score"]), path)
    with pytest.raises(DataFormatError, match=r"expected columns .* missing \['score'\]"):
        _rows(StMarginMseReader(path))
