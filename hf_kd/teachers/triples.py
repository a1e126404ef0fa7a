"""Reading the triples to score, and finding their distinct (query, passage) pairs, each scored once per teacher."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, load_from_disk

from ..data.schemas import ID_SCHEMAS, TRIPLES_FEATURES
from ..data.score_dataset import ScoreDataset
from ..data.tsv_readers import TriplesReader

__all__ = ["DistinctPairs", "find_distinct_pairs", "read_triples"]

_TRIPLE_COLUMNS = list(TRIPLES_FEATURES)


# --------------------------------------------------------------------------------------------------------------------
# Distinct pairs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DistinctPairs:
    """The distinct (query, passage) pairs of a set of pairs, in order of first appearance.

    Attributes:
        queries (`pa.Array`): the distinct query texts.
        passages (`pa.Array`): the distinct passage texts.
        query_index (`np.ndarray`): (n_pairs,) index into `queries` of each pair.
        passage_index (`np.ndarray`): (n_pairs,) index into `passages` of each pair.
    """

    queries: pa.Array
    passages: pa.Array
    query_index: np.ndarray
    passage_index: np.ndarray

    def __len__(self) -> int:
        return len(self.query_index)

    def texts(self, start: int = 0, stop: int | None = None) -> tuple[list[str], list[str]]:
        """The (queries, passages) texts of pairs `start` to `stop`."""
        query_index = self.query_index[start:stop]
        passage_index = self.passage_index[start:stop]
        return self.queries.take(query_index).to_pylist(), self.passages.take(passage_index).to_pylist()

    def fingerprint(self) -> str:
        """SHA-256 of the pairs' texts in order: the identity of a scoring run's work."""
        digest = hashlib.sha256()
        for texts in (self.queries, self.passages):
            _hash_strings(digest, texts)
        digest.update(self.query_index.astype(np.int64).tobytes())
        digest.update(self.passage_index.astype(np.int64).tobytes())
        return digest.hexdigest()


def _hash_strings(digest, texts: pa.Array) -> None:
    texts = texts.cast(pa.large_string())
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    digest.update(len(texts).to_bytes(8, "little"))
    digest.update((offsets - offsets[0]).tobytes())
    data = texts.buffers()[2]
    if data is not None:
        digest.update(memoryview(data)[offsets[0] : offsets[-1]])


def _dictionary_encode(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(list(texts), pa.large_string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.cast(pa.large_string()).combine_chunks()
    return pc.dictionary_encode(texts)


def _distinct_from_codes(
    queries: pa.Array, query_codes: np.ndarray, passages: pa.Array, passage_codes: np.ndarray
) -> tuple[DistinctPairs, np.ndarray]:
    keys = query_codes.astype(np.int64) * len(passages) + passage_codes.astype(np.int64)
    unique_keys, first_seen, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first_seen, kind="stable")  # distinct pairs in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ordered_keys = unique_keys[order]
    pairs = DistinctPairs(queries, passages, ordered_keys // len(passages), ordered_keys % len(passages))
    return pairs, rank[inverse.reshape(-1)]


def find_distinct_pairs(
    queries: Sequence[str] | pa.Array | pa.ChunkedArray, passages: Sequence[str] | pa.Array | pa.ChunkedArray
) -> tuple[DistinctPairs, np.ndarray]:
    """Finds the distinct pairs among aligned (query, passage) pairs.

    Args:
        queries: n query texts.
        passages: n passage texts, `passages[i]` paired with `queries[i]`.

    Returns:
        `tuple[DistinctPairs, np.ndarray]`: the distinct pairs, and for each input pair the index of its
        distinct pair, so that `scores_of_inputs = scores_of_distinct[index]`.

    Example:
        ```python
        >>> pairs, index = find_distinct_pairs(["q1", "q1", "q2", "q1"], ["a", "b", "a", "a"])
        >>> len(pairs), index.tolist()
        (3, [0, 1, 2, 0])
        ```
    """
    if len(queries) != len(passages):
        raise ValueError(f"queries and passages must be aligned, got {len(queries)} and {len(passages)}")
    encoded_queries, encoded_passages = _dictionary_encode(queries), _dictionary_encode(passages)
    return _distinct_from_codes(
        encoded_queries.dictionary,
        encoded_queries.indices.to_numpy(),
        encoded_passages.dictionary,
        encoded_passages.indices.to_numpy(),
    )


def _distinct_pairs_of_triples(triples: pa.Table) -> tuple[DistinctPairs, np.ndarray]:
    """The distinct pairs of triples, and a (n_triples, 2) index of each triple's positive and negative pair."""
    n = triples.num_rows
    queries = _dictionary_encode(triples.column("query"))
    passages = _dictionary_encode(
        pa.chunked_array(
            triples.column("positive").cast(pa.large_string()).chunks
            + triples.column("negative").cast(pa.large_string()).chunks,
            type=pa.large_string(),
        )
    )
    passage_codes = passages.indices.to_numpy()
    # interleaved (q, pos), (q, neg) per triple, so that pairs are numbered in reading order
    query_codes = np.repeat(queries.indices.to_numpy(), 2)
    passage_codes = np.stack([passage_codes[:n], passage_codes[n:]], axis=1).reshape(-1)
    pairs, index = _distinct_from_codes(queries.dictionary, query_codes, passages.dictionary, passage_codes)
    return pairs, index.reshape(n, 2)


# --------------------------------------------------------------------------------------------------------------------
# Reading triples
# --------------------------------------------------------------------------------------------------------------------


def _triples_of_dataset(dataset: Dataset, source: str) -> pa.Table:
    if set(_TRIPLE_COLUMNS) <= set(dataset.column_names):
        return dataset.select_columns(_TRIPLE_COLUMNS).with_format("arrow")[:]
    rows = dataset[:]  # an id form with lazily joined texts
    if not set(_TRIPLE_COLUMNS) <= set(rows):
        raise ValueError(
            f"{source}: columns {dataset.column_names} hold no triples; expected {_TRIPLE_COLUMNS} (or their id form)"
        )
    return pa.table({c: pa.array(rows[c], pa.string()) for c in _TRIPLE_COLUMNS})


def _check_triples_table(table: pa.Table, source: str) -> pa.Table:
    missing = [c for c in _TRIPLE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; triples need the columns {_TRIPLE_COLUMNS}")
    table = table.select(_TRIPLE_COLUMNS)
    for column in _TRIPLE_COLUMNS:
        values = table.column(column)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise ValueError(f"{source}: column {column!r} has type {values.type}, expected string")
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise ValueError(f"{source}, row {row + 1}: {column} is missing (null); every triple needs three texts")
    return table


def read_triples(source: str | os.PathLike | Dataset | pa.Table) -> tuple[pa.Table, str | None]:
    """Reads the (query, positive, negative) texts of triples to score.

    Args:
        source: a `query<TAB>positive<TAB>negative` TSV file (read with `hf_kd.data.TriplesReader`, whose
            errors name the file and line), a Parquet file, a dataset folder (written by `hf_kd.data`, by
            `Dataset.save_to_disk`, or holding Parquet files; an id form is joined to its texts), a
            `datasets.Dataset`, or a `pyarrow.Table`. Extra columns (e.g. earlier scores) are ignored.

    Returns:
        `tuple[pa.Table, str | None]`: the `query`, `positive`, `negative` columns, and the absolute path of
        the source when it is a file or folder.
    """
    if isinstance(source, pa.Table):
        return _check_triples_table(source, "the triples table"), None
    if isinstance(source, Dataset):
        return _check_triples_table(_triples_of_dataset(source, "the triples dataset"), "the triples dataset"), None
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"triples not found: {path}")
    if path.is_dir():
        if ScoreDataset.is_score_dataset(path):
            scores = ScoreDataset.open(path)
            # an id form is joined to its stored texts
            table = _triples_of_dataset(scores.load(), str(path)) if scores.schema in ID_SCHEMAS else scores.table()
        elif (path / "state.json").is_file():
            table = _triples_of_dataset(load_from_disk(str(path)), str(path))
        else:
            files = [f for f in sorted(path.rglob("*.parquet")) if "texts" not in f.relative_to(path).parts]
            if not files:
                raise ValueError(f"{path}: a folder of triples needs Parquet files or a saved dataset, found neither")
            table = pa.concat_tables([pq.read_table(f) for f in files])
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
    else:
        reader = TriplesReader(path)
        table = pa.Table.from_batches(list(reader), schema=reader.schema)
    return _check_triples_table(table, str(path)), str(path.resolve())
