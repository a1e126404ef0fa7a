"""The teacher-score dataset folder (`hf_kd.data.ScoreDataset`): written from teachers' scores or record batches,
opened, read back in every form, and named wrongly."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hf_kd.data import ID_TRIPLES_FEATURES, SCORED_TRIPLES_FEATURES, Provenance, ScoreDataset, score_dataset

ROWS = 20


@pytest.fixture(scope="module")
def triples(ci_data: Path) -> pa.Table:
    lines = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8").splitlines()[:ROWS]
    query, positive, negative = zip(*(line.split("\t") for line in lines))
    return pa.table({"query": query, "positive": positive, "negative": negative})


@pytest.fixture(scope="module")
def two_teachers() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    generator = np.random.default_rng(0)
    return {
        name: (generator.normal(8, 2, ROWS).astype(np.float32), generator.normal(1, 2, ROWS).astype(np.float32))
        for name in ("cat_a", "cat_b")
    }


def _provenance(teachers: list[str], schema: str = "scored_triples") -> Provenance:
    return Provenance(format="test", schema=schema, source_files=[], teachers=teachers)


def test_two_teachers_written_opened_and_read_back(triples, two_teachers, tmp_path):
    ensemble = tuple((two_teachers["cat_a"][i] + two_teachers["cat_b"][i]) / 2 for i in (0, 1))
    written = ScoreDataset.write_teacher_scores(
        tmp_path / "scores", triples, two_teachers, _provenance(["org/cat-a", "org/cat-b"]), ensemble=ensemble
    )
    assert written.num_rows == ROWS

    scores = ScoreDataset.open(tmp_path / "scores")
    assert scores.path == tmp_path / "scores" and ScoreDataset.is_score_dataset(scores.path)
    assert scores.schema == "scored_triples"
    assert scores.teachers == ["cat_a", "cat_b"]
    assert scores.provenance.teachers == ["org/cat-a", "org/cat-b"] and scores.provenance.rows == ROWS
    assert [f.name for f in scores.shard_files()] == ["train-00000-of-00001.parquet"]
    assert scores.text_files() == {}

    by_teacher = scores.teacher_scores()
    assert list(by_teacher) == ["cat_a", "cat_b"]
    for name, (pos, neg) in two_teachers.items():
        np.testing.assert_array_equal(by_teacher[name][0], pos)
        np.testing.assert_array_equal(by_teacher[name][1], neg)

    columns = [*triples.column_names, "pos_score", "neg_score"]
    columns += [c for name in two_teachers for c in ScoreDataset.score_columns(name)]
    assert list(scores.features) == columns
    rows = scores.load(cache_dir=tmp_path / "cache")
    assert rows.column_names == columns
    assert rows["query"] == triples.column("query").to_pylist()
    assert rows["negative"] == triples.column("negative").to_pylist()
    np.testing.assert_allclose(rows["pos_score"], ensemble[0])
    np.testing.assert_array_equal(np.array(rows["neg_score_cat_b"], np.float32), two_teachers["cat_b"][1])
    assert list(scores.load(streaming=True)) == rows.to_list()
    assert scores.table().to_pylist() == rows.to_list()


def test_score_columns_name_each_teacher_and_the_default():
    assert ScoreDataset.score_columns() == ("pos_score", "neg_score")
    assert ScoreDataset.score_columns("bm25.top30") == ("pos_score_bm25.top30", "neg_score_bm25.top30")
    assert ScoreDataset.teacher_features(["only"]) == SCORED_TRIPLES_FEATURES
    per_teacher = ["pos_score_a", "neg_score_a", "pos_score_b", "neg_score_b"]
    assert list(ScoreDataset.teacher_features(["a", "b"])) == [*SCORED_TRIPLES_FEATURES, *per_teacher]
    with pytest.raises(ValueError, match="teacher names must be distinct"):
        ScoreDataset.teacher_features(["a", "a"])


def test_one_teacher_is_named_by_the_provenance_and_saved_to_disk(triples, two_teachers, tmp_path):
    batches = ScoreDataset.write_teacher_scores(
        tmp_path / "parquet", triples, {"cat_a": two_teachers["cat_a"]}, _provenance(["models/cat_a/"])
    ).load(cache_dir=tmp_path / "cache")
    folder = ScoreDataset.write(
        tmp_path / "disk",
        batches.data.to_batches(),
        features=SCORED_TRIPLES_FEATURES,
        provenance=_provenance(["models/cat_a/"]),
        save_to_disk=True,
    )
    assert ScoreDataset.is_score_dataset(tmp_path / "disk") and folder.shard_files() == []
    scores = ScoreDataset.open(tmp_path / "disk")
    assert scores.teachers == ["cat_a"] and scores.num_rows == ROWS
    pos, neg = scores.teacher_scores()["cat_a"]
    np.testing.assert_array_equal(pos, two_teachers["cat_a"][0])
    np.testing.assert_array_equal(neg, two_teachers["cat_a"][1])
    assert scores.load().to_list() == batches.to_list()


def test_id_form_keeps_its_texts_and_reads_as_text(triples, tmp_path):
    texts = {text: f"t{i}" for i, text in enumerate(dict.fromkeys(triples.column("query").to_pylist()))}
    passages = triples.column("positive").to_pylist() + triples.column("negative").to_pylist()
    passage_ids = {text: f"p{i}" for i, text in enumerate(dict.fromkeys(passages))}
    ids = pa.table(
        {
            "query_id": [texts[q] for q in triples.column("query").to_pylist()],
            "positive_id": [passage_ids[p] for p in triples.column("positive").to_pylist()],
            "negative_id": [passage_ids[n] for n in triples.column("negative").to_pylist()],
        },
        schema=ID_TRIPLES_FEATURES.arrow_schema,
    )
    ScoreDataset.write(
        tmp_path / "ids",
        ids.to_batches(),
        features=ID_TRIPLES_FEATURES,
        provenance=_provenance([], schema="triples_ids"),
        queries={i: text for text, i in texts.items()},
        collection={i: text for text, i in passage_ids.items()},
    )
    scores = ScoreDataset.open(tmp_path / "ids")
    assert scores.schema == "triples_ids" and scores.teachers == []
    assert sorted(scores.text_files()) == ["collection", "queries"]
    assert scores.load(with_texts=False, cache_dir=tmp_path / "cache")["query_id"] == ids.column("query_id").to_pylist()
    assert scores.table().to_pylist() == triples.to_pylist()
    with pytest.raises(ValueError, match=r"holds 'triples_ids' rows without the columns \['pos_score', 'neg_score'\]"):
        scores.teacher_scores()


def test_a_folder_that_is_not_a_score_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    assert not ScoreDataset.is_score_dataset(tmp_path / "plain")
    with pytest.raises(FileNotFoundError) as error:
        ScoreDataset.open(tmp_path / "plain")
    assert str(error.value) == (
        f"{tmp_path / 'plain' / 'hf_kd_provenance.json'} not found: {tmp_path / 'plain'} is not a teacher-score "
        "dataset written by hf-kd"
    )
    with pytest.raises(FileNotFoundError, match="holds no teacher scores"):
        next(ScoreDataset(tmp_path / "plain").record_batches())


def test_the_reproduction_trains_from_the_first_teachers_columns(triples, two_teachers, tmp_path):
    from hf_kd.reproduce.stages import _teacher_columns

    named = {"teacher_1": two_teachers["cat_a"], "teacher_2": two_teachers["cat_b"]}
    ScoreDataset.write_teacher_scores(
        tmp_path / "scores", triples, named, _provenance([]), ensemble=two_teachers["cat_a"]
    )
    assert _teacher_columns(tmp_path / "scores", ["teacher_1", "teacher_2"]) == {
        "T1": ("pos_score_teacher_1", "neg_score_teacher_1"),
        "T2": ("pos_score", "neg_score"),
    }
    with pytest.raises(ValueError, match=r"no scores of the first teacher teacher_3; columns: \['query', "):
        _teacher_columns(tmp_path / "scores", ["teacher_3", "teacher_1"])


def test_doctests():
    result = doctest.testmod(score_dataset)
    assert result.attempted > 0 and result.failed == 0
