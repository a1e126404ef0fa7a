"""Schemas, the lazy text join, and the round trip files -> Parquet / save_to_disk -> datasets."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, Features, IterableDataset, Value

import hf_kd
from hf_kd.data import (
    ID_SCHEMAS,
    NWAY_ID_FEATURES,
    SCHEMAS,
    SCORED_TRIPLES_FEATURES,
    TEXT_SCHEMAS,
    TEXTS_FEATURES,
    DataFormatError,
    ScoreDataset,
    convert,
    detect_schema,
    join_texts,
    read_collection_tsv,
    read_queries_tsv,
    text_schema_of,
)


@pytest.fixture(scope="module")
def dl20_texts(ci_data):
    dl20 = ci_data / "msmarco-dl20"
    return read_queries_tsv(dl20 / "queries.tsv"), read_collection_tsv(dl20 / "collection.tsv")


def test_schemas_declare_the_trainer_columns():
    assert list(SCHEMAS["scored_triples"]) == ["query", "positive", "negative", "pos_score", "neg_score"]
    assert list(SCHEMAS["margin_triples"]) == ["query", "positive", "negative", "margin"]
    assert list(SCHEMAS["nway"]) == ["query", "passages", "scores"]
    assert list(SCHEMAS["triples"]) == ["query", "positive", "negative"]
    assert list(SCHEMAS["scored_triples_ids"]) == ["query_id", "positive_id", "negative_id", "pos_score", "neg_score"]
    assert list(SCHEMAS["nway_ids"]) == ["query_id", "passage_ids", "scores"]
    assert list(TEXTS_FEATURES) == ["id", "text"]
    assert SCORED_TRIPLES_FEATURES["pos_score"] == Value("float32")
    assert NWAY_ID_FEATURES["scores"].feature == Value("float32")
    assert {text_schema_of(name) for name in ID_SCHEMAS} == set(TEXT_SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_detect_schema(name):
    assert detect_schema(SCHEMAS[name]) == name
    empty = Dataset.from_dict({column: [] for column in SCHEMAS[name]}, features=SCHEMAS[name])
    assert detect_schema(empty) == name


def test_detect_schema_rejects_unknown_columns_and_wrong_types():
    with pytest.raises(ValueError, match=r"columns \['query', 'score'\] match no teacher-score schema"):
        detect_schema(Features({"query": Value("string"), "score": Value("float32")}))
    wrong = Features({**SCORED_TRIPLES_FEATURES, "pos_score": Value("string")})
    with pytest.raises(ValueError, match=r"match schema 'scored_triples' but \['pos_score'\] have types"):
        detect_schema(wrong)


def test_join_texts_map_style_and_streaming(dl20_texts):
    queries, collection = dl20_texts
    pids = list(collection)
    ids = Dataset.from_dict(
        {"query_id": ["23849", "42255"], "passage_ids": [pids[:3], pids[3:5]], "scores": [[3.0, 2.0, 1.0], [5.0, 4.0]]},
        features=NWAY_ID_FEATURES,
    )
    expected = [
        {"query": queries["23849"], "passages": [collection[p] for p in pids[:3]], "scores": [3.0, 2.0, 1.0]},
        {"query": queries["42255"], "passages": [collection[p] for p in pids[3:5]], "scores": [5.0, 4.0]},
    ]
    joined = join_texts(ids, queries, collection)
    assert [joined[0], joined[1]] == expected
    assert ids[0]["query_id"] == "23849"  # the source dataset is untouched
    streamed = join_texts(ids.to_iterable_dataset(), queries, collection)
    assert isinstance(streamed, IterableDataset)
    assert list(streamed) == expected
    assert list(streamed.features) == ["query", "passages", "scores"]
    # texts given as (id, text) datasets work the same way
    as_datasets = [
        Dataset.from_dict({"id": list(t), "text": list(t.values())}, features=TEXTS_FEATURES) for t in dl20_texts
    ]
    assert [row for row in join_texts(ids, *as_datasets)] == expected


def test_join_texts_missing_id_raises_on_read(dl20_texts):
    ids = Dataset.from_dict(
        {"query_id": ["23849"], "positive_id": ["no-such-passage"], "negative_id": ["104800"]},
        features=SCHEMAS["triples_ids"],
    )
    joined = join_texts(ids, *dl20_texts)
    with pytest.raises(KeyError, match="id 'no-such-passage' not found in the collection"):
        joined[0]
    with pytest.raises(ValueError, match="expects an id form"):
        join_texts(Dataset.from_dict({"query": ["q"], "positive": ["p"], "negative": ["n"]}), *dl20_texts)


def _triples_with_scores(ci_data, tmp_path):
    lines = (ci_data / "msmarco-train-100.triples.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "paper_text.tsv"
    path.write_text("".join(f"{10 + i / 8}\t{i / 16}\t{line}\n" for i, line in enumerate(lines)), encoding="utf-8")
    return path


@pytest.mark.parametrize("save_to_disk", [False, True], ids=["parquet", "save_to_disk"])
def test_round_trip_streaming_equals_in_memory(ci_data, tmp_path, save_to_disk):
    source = _triples_with_scores(ci_data, tmp_path)
    out = tmp_path / "scores"
    report = convert(
        "paper-text", source, out, shard_rows=32, save_to_disk=save_to_disk, teachers=["bert-cat", "bert-cat-large"]
    )
    assert report.rows == 100
    in_memory = ScoreDataset.open(out).load(cache_dir=tmp_path / "cache")
    streamed = ScoreDataset.open(out).load(streaming=True, cache_dir=tmp_path / "cache")
    assert isinstance(in_memory, Dataset) and isinstance(streamed, IterableDataset)
    rows = list(in_memory)
    assert list(streamed) == rows
    assert detect_schema(in_memory) == "scored_triples"
    first_line = source.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert rows[0] == {
        "query": first_line[2],
        "positive": first_line[3],
        "negative": first_line[4],
        "pos_score": 10.0,
        "neg_score": 0.0,
    }
    assert rows[99]["pos_score"] == 10 + 99 / 8
    shards = list(out.glob("data-*.arrow")) if save_to_disk else list((out / "data").glob("train-*-of-00004.parquet"))
    assert len(shards) == 4
    provenance = ScoreDataset.open(out).provenance
    assert provenance.teachers == ["bert-cat", "bert-cat-large"]
    assert provenance.format == "paper-text" and provenance.schema == "scored_triples"
    assert provenance.source_files == [str(source.resolve())]
    assert provenance.rows == 100 and provenance.hf_kd_version == hf_kd.__version__
    assert json.loads(in_memory.info.description)["teachers"] == ["bert-cat", "bert-cat-large"]


def test_parquet_shards_carry_schema_and_provenance(ci_data, tmp_path):
    convert("triples", ci_data / "msmarco-train-100.triples.tsv", tmp_path / "triples", teachers=[])
    (shard,) = (tmp_path / "triples" / "data").glob("*.parquet")
    metadata = pq.read_schema(shard).metadata
    assert json.loads(metadata[b"hf_kd_provenance"])["format"] == "triples"
    assert b"huggingface" in metadata  # the datasets Features, so any datasets loader gets the schema
    assert pq.read_table(shard).num_rows == 100


def test_id_form_stores_only_the_texts_it_uses(tmp_path, ci_data, dl20_texts):
    queries, collection = dl20_texts
    dl20 = ci_data / "msmarco-dl20"
    source = tmp_path / "scores.tsv"
    source.write_text("5.5\t1.5\t23849\t104800\t104801\n6.5\t0.5\t23849\t104801\t85987\n")
    out = tmp_path / "scores"
    convert("paper-ids", source, out, queries=dl20 / "queries.tsv", collection=dl20 / "collection.tsv")
    stored = pq.read_table(out / "texts" / "collection.parquet").to_pylist()
    assert stored == [{"id": pid, "text": collection[pid]} for pid in ("85987", "104800", "104801")]
    assert pq.read_table(out / "texts" / "queries.parquet").to_pylist() == [{"id": "23849", "text": queries["23849"]}]
    ids_only = ScoreDataset.open(out).load(with_texts=False, cache_dir=tmp_path / "cache")
    assert ids_only[1] == {
        "query_id": "23849",
        "positive_id": "104801",
        "negative_id": "85987",
        "pos_score": 6.5,
        "neg_score": 0.5,
    }
    assert ScoreDataset.open(out).load(cache_dir=tmp_path / "cache")[1]["negative"] == collection["85987"]


def test_existing_output_is_kept_unless_overwrite(ci_data, tmp_path):
    triples = ci_data / "msmarco-train-100.triples.tsv"
    out = tmp_path / "triples"
    convert("triples", triples, out)
    with pytest.raises(FileExistsError, match="already exists"):
        convert("triples", triples, out)
    convert("triples", triples, out, overwrite=True)
    # no temporary folder left behind; the lock file stays (an OS lock on it keeps a second job off `out`)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triples", "triples.lock"]


def test_failed_conversion_leaves_nothing(tmp_path):
    source = tmp_path / "triples.tsv"
    source.write_text("q\tp\tn\nq\tp\n")
    with pytest.raises(DataFormatError, match="line 2"):
        convert("triples", source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.lock", "triples.tsv"]  # no dataset, no staging


def test_texts_are_refused_for_text_formats(ci_data, tmp_path):
    dl20 = ci_data / "msmarco-dl20"
    with pytest.raises(ValueError, match="--queries and --collection are for id formats only"):
        convert("triples", ci_data / "msmarco-train-100.triples.tsv", tmp_path / "o", queries=dl20 / "queries.tsv")


def test_per_teacher_columns_ride_along_with_the_schema(tmp_path):
    import pyarrow as pa

    from hf_kd.data import SCORED_TRIPLES_FEATURES, Provenance, detect_schema

    table = pa.table(
        {
            "query": ["q1", "q2"],
            "positive": ["p1", "p2"],
            "negative": ["n1", "n2"],
            "pos_score": pa.array([1.5, 2.5], pa.float32()),
            "neg_score": pa.array([0.5, 0.0], pa.float32()),
            "pos_score_a": pa.array([1.0, 2.0], pa.float32()),
            "neg_score_a": pa.array([0.0, 0.5], pa.float32()),
        }
    )
    features = SCORED_TRIPLES_FEATURES.copy()
    features["pos_score_a"] = features["pos_score"]
    features["neg_score_a"] = features["neg_score"]
    provenance = Provenance(format="hf-kd-score", schema="scored_triples", source_files=[], teachers=["a", "b"])
    ScoreDataset.write(tmp_path / "scores", table.to_batches(), features=features, provenance=provenance)
    dataset = ScoreDataset.open(tmp_path / "scores").load()
    assert detect_schema(dataset) == "scored_triples"
    assert dataset["pos_score_a"] == [1.0, 2.0]
    streamed = list(ScoreDataset.open(tmp_path / "scores").load(streaming=True))
    assert [row["neg_score_a"] for row in streamed] == [0.0, 0.5]
