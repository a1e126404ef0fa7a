"""Building training triples from relevance judgements and candidate runs (`hf-kd data build-triples`).

Positives are the judged passages of grade >= `min_grade`; negatives are drawn from the candidates of
one or more runs that are not judged relevant (unjudged, or judged below `min_grade`). Sampling uses one
random generator per query seeded from `(seed, query id)`, so a query's triples do not depend on which
other queries are built, and the same inputs and seed always give the same triples.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from .provenance import Provenance
from .schemas import ID_TRIPLES_FEATURES
from .score_dataset import ScoreDataset
from .writers import DEFAULT_SHARD_ROWS

__all__ = ["TripleStats", "build_triples", "read_query_id_list", "save_triples"]


@dataclass
class TripleStats:
    """What [`build_triples`] kept and skipped, per query."""

    queries: int = 0
    triples: int = 0
    excluded_queries: int = 0
    queries_without_text: int = 0
    queries_without_positive: int = 0
    queries_without_negative: int = 0
    positives_without_text: int = 0
    short_of_negatives: int = 0
    """Positives that got fewer than `negatives_per_positive` negatives because the pool was smaller."""
    parameters: dict = field(default_factory=dict)


def read_query_id_list(path: str | os.PathLike) -> set[str]:
    """Query ids from a file with one id per line; only the first column is read, so a `queries.tsv`
    (`qid<TAB>text`) or a TREC qrels file also works. Blank lines are ignored."""
    ids = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            columns = line.split()
            if columns:
                ids.add(columns[0])
    return ids


def _candidate_pool(
    qid: str,
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    judged: Mapping[str, int],
    min_grade: int,
    passage_ids: Container[str] | None,
    max_rank: int | None,
) -> list[str]:
    pool = set()
    for run in runs:
        candidates = run.get(qid, {})
        ranked = sorted(candidates, key=lambda pid: (-candidates[pid], pid))
        pool.update(ranked[:max_rank] if max_rank is not None else ranked)
    return sorted(
        pid
        for pid in pool
        if judged.get(pid, min_grade - 1) < min_grade and (passage_ids is None or pid in passage_ids)
    )


def build_triples(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    *,
    min_grade: int = 1,
    negatives_per_positive: int = 1,
    seed: int = 0,
    query_ids: Container[str] | None = None,
    passage_ids: Container[str] | None = None,
    include_queries: Collection[str] | None = None,
    exclude_queries: Collection[str] | None = None,
    max_rank: int | None = None,
) -> tuple[list[tuple[str, str, str]], TripleStats]:
    """Builds `(query_id, positive_id, negative_id)` triples from judgements and candidate runs.

    Args:
        qrels (`Mapping[str, Mapping[str, int]]`): query id -> {passage id -> grade} (see `read_qrels`).
        runs (`Sequence[Mapping[str, Mapping[str, float]]]`): candidate runs (see `read_run`), e.g. BM25;
            negatives come from the union of their candidates.
        min_grade (`int`, *optional*, defaults to 1): grade from which a judged passage is relevant: a
            positive, and never a negative.
        negatives_per_positive (`int`, *optional*, defaults to 1): negatives drawn without replacement per
            positive (fewer when the candidate pool is smaller).
        seed (`int`, *optional*, defaults to 0): the sampling seed.
        query_ids (`Container[str]`, *optional*): queries that have a text; others are skipped.
        passage_ids (`Container[str]`, *optional*): passages that have a text; others are never used.
        include_queries (`Collection[str]`, *optional*): build only these queries.
        exclude_queries (`Collection[str]`, *optional*): never build these queries (e.g. dev queries).
        max_rank (`int`, *optional*): use only the top `max_rank` candidates of each run.

    Returns:
        `(triples, stats)`: triples in qrels order (positives by id, negatives in sampled order), and a
        [`TripleStats`].
    """
    if negatives_per_positive < 1:
        raise ValueError(f"negatives_per_positive must be >= 1, got {negatives_per_positive}")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    stats = TripleStats(
        parameters={
            "min_grade": min_grade,
            "negatives_per_positive": negatives_per_positive,
            "seed": seed,
            "max_rank": max_rank,
        }
    )
    triples: list[tuple[str, str, str]] = []
    for qid, judged in qrels.items():
        if (include_queries is not None and qid not in include_queries) or (
            exclude_queries is not None and qid in exclude_queries
        ):
            stats.excluded_queries += 1
            continue
        if query_ids is not None and qid not in query_ids:
            stats.queries_without_text += 1
            continue
        relevant = sorted(pid for pid, grade in judged.items() if grade >= min_grade)
        positives = [pid for pid in relevant if passage_ids is None or pid in passage_ids]
        stats.positives_without_text += len(relevant) - len(positives)
        if not positives:
            stats.queries_without_positive += 1
            continue
        pool = _candidate_pool(qid, runs, judged, min_grade, passage_ids, max_rank)
        if not pool:
            stats.queries_without_negative += 1
            continue
        rng = random.Random(f"{seed}/{qid}")
        take = min(negatives_per_positive, len(pool))
        for positive in positives:
            stats.short_of_negatives += take < negatives_per_positive
            triples.extend((qid, positive, negative) for negative in rng.sample(pool, take))
        stats.queries += 1
    stats.triples = len(triples)
    return triples, stats


def _batches(triples: Sequence[tuple[str, str, str]], batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    schema = ID_TRIPLES_FEATURES.arrow_schema
    for start in range(0, len(triples), batch_rows):
        chunk = triples[start : start + batch_rows]
        columns = list(zip(*chunk))
        yield pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in columns], schema=schema)


def save_triples(
    triples: Sequence[tuple[str, str, str]],
    out: str | os.PathLike,
    *,
    queries: Mapping[str, str],
    collection: Mapping[str, str],
    provenance: Provenance,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    save_to_disk: bool = False,
    overwrite: bool = False,
) -> int:
    """Writes triples as an id-form dataset folder (`triples_ids`) with the texts they use.

    Args:
        triples (`Sequence[tuple[str, str, str]]`): from [`build_triples`].
        out (`str` or `os.PathLike`): the dataset folder.
        queries (`Mapping[str, str]`): query texts; those used are stored in `texts/queries.parquet`.
        collection (`Mapping[str, str]`): passage texts; those used are stored in `texts/collection.parquet`.
        provenance (`Provenance`): recorded with the dataset.
        shard_rows, save_to_disk, overwrite: see `hf_kd.data.ScoreDataset.write`.

    Returns:
        `int`: rows written.
    """
    used_queries = {qid for qid, _, _ in triples}
    used_passages = {pid for _, pos, neg in triples for pid in (pos, neg)}
    return ScoreDataset.write(
        out,
        _batches(triples),
        features=ID_TRIPLES_FEATURES,
        provenance=provenance,
        queries={qid: text for qid, text in queries.items() if qid in used_queries},
        collection={pid: text for pid, text in collection.items() if pid in used_passages},
        shard_rows=shard_rows,
        save_to_disk=save_to_disk,
        overwrite=overwrite,
    ).num_rows
