"""Input files with a byte order mark, empty inputs and duplicate rows (`hf-kd data convert`)."""

from __future__ import annotations

import json

import pytest

from hf_kd.data import (
    DataFormatError,
    NwayJsonlReader,
    PaperTextReader,
    ScoreDataset,
    convert,
    read_run,
)
from hf_kd.files import UTF8_BOM

BOM = UTF8_BOM.decode("utf-8")


@pytest.fixture(scope="module")
def paper_text_lines(ci_data) -> list[str]:
    """Ten ci triples in the paper's text format, one line each, with a newline."""
    lines = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8").splitlines()[:10]
    return [f"{9 + i * 0.5}\t{-1 - i * 0.25}\t{line}\n" for i, line in enumerate(lines)]


def _rows(reader) -> list[dict]:
    return [row for batch in reader for row in batch.to_pylist()]


def test_bom_first_line_is_data_and_bad_line_keeps_its_number(tmp_path, paper_text_lines):
    lines = list(paper_text_lines)
    lines[6] = "9.5\tnot-a-number\tq\tp\tn\n"
    path = tmp_path / "scores.tsv"
    path.write_text(BOM + "".join(lines), encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        _rows(PaperTextReader(path))
    assert str(error.value) == f"{path}, line 7: expected a numeric neg_score, got 'not-a-number'"

    convert("paper-text", path, tmp_path / "out", skip_bad_rows=True)
    rejected = (tmp_path / "out.rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[1] for line in rejected[1:]] == ["7"]
    kept = ScoreDataset.open(tmp_path / "out").load()
    assert len(kept) == 9
    assert kept[0]["query"] == paper_text_lines[0].split("\t")[2]  # the BOM is not part of the first row


def test_bom_in_nway_jsonl_and_run_files(tmp_path):
    nway = tmp_path / "nway.jsonl"
    records = [{"query_id": "1", "document_ids": ["7", "8"], "scores": [3.0, 1.0]}, ["2", ["9", 2.0], ["10", 0.5]]]
    nway.write_text(BOM + "".join(json.dumps(r) + "\n" for r in records) + "{bad\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"nway\.jsonl, line 3: "):
        _rows(NwayJsonlReader(nway))
    nway.write_text(BOM + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert [row["query_id"] for row in _rows(NwayJsonlReader(nway))] == ["1", "2"]

    run = tmp_path / "run.trec"
    run.write_text(BOM + "q1 Q0 p1 1 2.5 bm25\nq1 Q0 p2 2 1.5 bm25\n", encoding="utf-8")
    assert read_run(run) == {"q1": {"p1": 2.5, "p2": 1.5}}


def test_empty_input_is_one_line_error_at_conversion(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError) as error:
        convert("paper-text", empty, tmp_path / "out")
    assert str(error.value) == f"{empty}: the file is empty; nothing to convert"
    assert not (tmp_path / "out").exists()

    bom_only = tmp_path / "bom.tsv"
    bom_only.write_bytes(UTF8_BOM)
    with pytest.raises(DataFormatError, match="the file is empty"):
        convert("paper-text", bom_only, tmp_path / "out")

    from hf_kd.cli import main

    bad = tmp_path / "bad.tsv"
    bad.write_text("x\n", encoding="utf-8")
    assert (
        main(["data", "convert", "--format", "paper-text", str(bad), "--out", str(tmp_path / "o"), "--skip-bad-rows"])
        == 1
    )


def test_duplicates_are_counted_and_dropped_on_request(tmp_path, paper_text_lines, capsys):
    path = tmp_path / "dup.tsv"
    path.write_text("".join(paper_text_lines + paper_text_lines[:3] + paper_text_lines[:1]), encoding="utf-8")
    kept = convert("paper-text", path, tmp_path / "kept")
    assert (kept.rows, kept.duplicates) == (14, 4)
    assert "duplicate rows (equal to an earlier row in every column): 4, kept" in kept.summary()
    dropped = convert("paper-text", path, tmp_path / "dropped", drop_duplicates=True)
    assert (dropped.rows, dropped.duplicates) == (10, 4)
    kept = ScoreDataset.open(tmp_path / "kept").load()
    assert ScoreDataset.open(tmp_path / "dropped").load().to_list() == kept.select(range(10)).to_list()
    assert ScoreDataset.open(tmp_path / "dropped").provenance.parameters["duplicate_rows"] == 4
