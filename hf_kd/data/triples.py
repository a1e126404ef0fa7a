"""Building training triples from relevance judgements and candidate runs (`hf-kd data build-triples`).

Judged triples ([`build_triples`]): positives are the judged passages of grade >= `min_grade`; negatives are drawn
from the candidates of one or more runs that are not judged relevant (unjudged, or judged below `min_grade`).
Candidate pairs ([`build_candidate_pairs`]): two candidates of the same query, drawn at random, for a teacher to
label; no judgement is needed. Sampling uses one random generator per query seeded from `(seed, query id)`, so a
query's triples do not depend on which other queries are built, and the same inputs and seed always give the same
triples.
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

__all__ = ["TripleStats", "build_candidate_pairs", "build_triples", "read_query_id_list", "save_triples"]


@dataclass
class TripleStats:
    """What [`build_triples`] or [`build_candidate_pairs`] kept and skipped, per query."""

    queries: int = 0
    triples: int = 0
    excluded_queries: int = 0
    queries_without_text: int = 0
    queries_without_positive: int = 0
    queries_without_negative: int = 0
    positives_without_text: int = 0
    short_of_negatives: int = 0
    """Positives that got fewer than `negatives_per_positive` negatives because the pool was smaller."""
    short_of_pairs: int = 0
    """Queries that got fewer than `pairs_per_query` candidate pairs because they have few candidates."""
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
        if not _selected(qid, include_queries, exclude_queries):
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


def _selected(qid: str, include_queries: Collection[str] | None, exclude_queries: Collection[str] | None) -> bool:
    return (include_queries is None or qid in include_queries) and (
        exclude_queries is None or qid not in exclude_queries
    )


def _random_pairs(pool: Sequence[str], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` distinct unordered pairs of `pool` (all of them when there are fewer), each side in random order."""
    n = len(pool)
    total = n * (n - 1) // 2
    if count >= total:
        chosen = [(i, j) for i in range(n) for j in range(i + 1, n)]
        rng.shuffle(chosen)
    else:
        seen: set[tuple[int, int]] = set()
        chosen = []
        while len(chosen) < count:
            i, j = rng.sample(range(n), 2)
            if (min(i, j), max(i, j)) not in seen:
                seen.add((min(i, j), max(i, j)))
                chosen.append((i, j))
    return [(pool[i], pool[j]) if rng.random() < 0.5 else (pool[j], pool[i]) for i, j in chosen]


def build_candidate_pairs(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    *,
    pairs_per_query: int,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    min_grade: int = 1,
    seed: int = 0,
    query_ids: Container[str] | None = None,
    passage_ids: Container[str] | None = None,
    include_queries: Collection[str] | None = None,
    exclude_queries: Collection[str] | None = None,
    max_rank: int | None = None,
) -> tuple[list[tuple[str, str, str]], TripleStats]:
    """Builds `(query_id, passage_a, passage_b)` pairs of candidates for a teacher to label.

    A teacher scores any pair, judged or not, so its training data need not be anchored on judged positives: the
    candidates of a query are the union of the runs' top `max_rank` (plus, with `qrels`, its judged passages of
    grade >= `min_grade`), and `pairs_per_query` distinct pairs of them are drawn at random. The two sides of a
    pair are in random order (stored as `positive_id` / `negative_id`): the teacher's margin says which is better,
    so train them with a teacher loss (`margin_mse`, `pointwise_mse`, `weighted_ranknet` with
    `negative_margins="flip"`), not with judgement-only RankNet.

    Args:
        runs (`Sequence[Mapping[str, Mapping[str, float]]]`): candidate runs (see `read_run`); their queries, in
            order of first appearance, are the queries built.
        pairs_per_query (`int`): pairs drawn per query (all pairs when a query has fewer).
        qrels (`Mapping[str, Mapping[str, int]]`, *optional*): judged passages of grade >= `min_grade` join the
            candidates (a judged positive that no run retrieved is still worth a teacher's label).
        min_grade, seed, query_ids, passage_ids, include_queries, exclude_queries, max_rank: as in
            [`build_triples`].

    Returns:
        `(triples, stats)`: pairs grouped by query, and a [`TripleStats`] (`queries_without_negative` counts
        queries with fewer than two candidates).
    """
    if pairs_per_query < 1:
        raise ValueError(f"pairs_per_query must be >= 1, got {pairs_per_query}")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    stats = TripleStats(
        parameters={
            "pairs_per_query": pairs_per_query,
            "pair_order": "random",
            "min_grade": min_grade if qrels is not None else None,
            "seed": seed,
            "max_rank": max_rank,
        }
    )
    triples: list[tuple[str, str, str]] = []
    for qid in dict.fromkeys(qid for run in runs for qid in run):
        if not _selected(qid, include_queries, exclude_queries):
            stats.excluded_queries += 1
            continue
        if query_ids is not None and qid not in query_ids:
            stats.queries_without_text += 1
            continue
        pool = _candidate_pool(qid, runs, {}, min_grade, passage_ids, max_rank)
        retrieved = set(pool)
        judged = (qrels or {}).get(qid, {})
        pool += sorted(
            pid
            for pid, grade in judged.items()
            if grade >= min_grade and pid not in retrieved and (passage_ids is None or pid in passage_ids)
        )
        if len(pool) < 2:
            stats.queries_without_negative += 1
            continue
        pairs = _random_pairs(pool, pairs_per_query, random.Random(f"{seed}/{qid}"))
        stats.short_of_pairs += len(pairs) < pairs_per_query
        triples.extend((qid, a, b) for a, b in pairs)
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
