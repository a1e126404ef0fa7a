"""Scoring triples with one or several teachers into a teacher-score dataset, resumably.

Triples share passages (a positive appears in many triples, a negative under several queries), so every
distinct (query, passage) pair is scored once per teacher, and the triples' scores are gathered from those.
Pairs are scored in shards of `shard_size`; inside a shard they are sorted by input length so that batches
carry little padding. Each finished shard is written at once (temporary file, then `os.replace`) into a
work folder beside the output:

```
OUT.partial/
  manifest.json                    the fingerprint of the work: the pairs' texts, every teacher's weights
                                   (file hashes, Hub commit or run-file hash) and the options that change scores
  teacher-0/pairs-00000.parquet    columns `pair` (distinct pair index) and `score`
  teacher-1/...
```

A killed run started again with the same arguments skips the finished shards; a rerun whose fingerprint differs
(a teacher swapped at the same path, other triples, bf16) refuses with the list of what changed, or starts over
with `overwrite=True`. A work folder without a manifest is never resumed from. `OUT.lock` keeps a second run off
the same output (see `hf_kd.jobs.output_lock`). When every shard is there, the dataset is written to `OUT` (see
[`write_teacher_scores`]) and the work folder is removed.

Under `accelerate launch --num_processes N` (or `torchrun`), the processes share the work: the main process takes
the lock and opens the work folder, the shards left to do are dealt out in turn to the N processes, each writes its
own shards into the same work folder, and once all are done the main process alone checks that every shard is there
and was written for this work (each shard records the fingerprint of the manifest and its teacher), then writes the
one dataset, the same as a single process would. A shard missing or written for other work is refused, never merged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm

from ..data.provenance import PROVENANCE_FILENAME, Provenance, read_provenance
from ..data.readers import TriplesReader
from ..data.schemas import ID_SCHEMAS, TRIPLES_FEATURES
from ..data.writers import load_scores
from ..jobs import model_files_fingerprint, open_work_folder
from ..processes import JobProcesses, job_processes, lock_job_output
from .ensemble import check_normalization, check_rescale, mean_ensemble
from .loading import Teacher, load_teacher
from .score_dataset import write_teacher_scores

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SHARD_SIZE",
    "MISSING_POLICIES",
    "DistinctPairs",
    "ScoringResult",
    "find_distinct_pairs",
    "read_triples",
    "score_pairs",
    "score_triples",
]

DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_SIZE = 50_000
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
        if (path / PROVENANCE_FILENAME).is_file() and read_provenance(path).schema in ID_SCHEMAS:
            table = _triples_of_dataset(load_scores(path), str(path))  # joins the stored texts
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


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def _score_length_sorted(
    teacher: Teacher,
    queries: list[str],
    passages: list[str],
    batch_size: int,
    bf16: bool,
    progress: tqdm,
) -> np.ndarray:
    """Scores aligned pairs in batches of similar length (longest first); returns the scores in input order."""
    order = np.argsort(-np.asarray(teacher.pair_lengths(queries, passages)), kind="stable")
    scores = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        with torch.autocast(device_type=teacher.device.type, dtype=torch.bfloat16, enabled=bf16):
            batch_scores = teacher.score([queries[i] for i in batch], [passages[i] for i in batch])
        scores[batch] = batch_scores.numpy()
        progress.update(len(batch))
    bad = np.flatnonzero(np.isinf(scores) if not teacher.covers_every_pair else ~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"teacher {teacher.name_or_path!r} gave non-finite scores to {len(bad)} pairs, e.g. query "
            f"{queries[bad[0]][:80]!r} with passage {passages[bad[0]][:80]!r}" + (" (try without bf16)" if bf16 else "")
        )
    return scores


def score_pairs(
    teacher: Teacher,
    queries: Sequence[str],
    passages: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    bf16: bool = False,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """Scores aligned (query, passage) pairs, each distinct pair once, in length-sorted batches.

    Args:
        teacher ([`Teacher`]): the scorer.
        queries (`Sequence[str]`): n query texts.
        passages (`Sequence[str]`): n passage texts, `passages[i]` paired with `queries[i]`.
        batch_size (`int`, *optional*, defaults to 64): pairs per forward pass.
        bf16 (`bool`, *optional*, defaults to `False`): run under bfloat16 autocast.
        show_progress_bar (`bool`, *optional*, defaults to `False`): show a tqdm bar with the ETA.

    Returns:
        `np.ndarray`: (n,) float32 raw scores, in input order; NaN for pairs a run teacher does not hold.
    """
    _check_positive("batch_size", batch_size)
    pairs, index = find_distinct_pairs(list(queries), list(passages))
    with tqdm(total=len(pairs), unit="pair", desc=f"scoring ({teacher.name})", disable=not show_progress_bar) as bar:
        scores = _score_length_sorted(teacher, *pairs.texts(), batch_size, bf16, bar)
    return scores[index]


@dataclass
class ScoringResult:
    """What [`score_triples`] did.

    Attributes:
        out (`Path`): the teacher-score dataset folder.
        triples (`int`): rows written.
        distinct_pairs (`int`): distinct (query, passage) pairs among the triples.
        scored_pairs (`int`): pairs scored by this call, over all teachers.
        resumed_pairs (`int`): pairs whose scores an earlier, interrupted call had written.
        seconds (`float`): wall time of the call.
        dropped_triples (`int`): triples left out because a teacher (a run file) has no score for one of their
            pairs.
        missing_by_teacher (`dict[str, int]`): for each teacher, the triples it has no score for.
        processes (`list[dict]`): for each process (one, or those of `accelerate launch`), its `rank` and the
            `pairs` it scored in this call.
    """

    out: Path
    triples: int
    distinct_pairs: int
    scored_pairs: int
    resumed_pairs: int
    seconds: float
    dropped_triples: int = 0
    missing_by_teacher: dict[str, int] | None = None
    processes: list[dict] | None = None


MISSING_POLICIES = ("drop", "error", "partial")
"""What [`score_triples`] does with a triple a teacher has no score for: leave it out (counted), fail, or keep it
when another teacher scores it (the ensemble is then the mean of the teachers that do)."""


def _missing_scores(
    teacher_scores: dict[str, tuple[np.ndarray, np.ndarray]], triples: pa.Table, missing: str
) -> tuple[np.ndarray, dict[str, int]]:
    """The triples every teacher scores, and the count each teacher lacks; fails on a gap with `missing="error"`."""
    keep = np.ones(triples.num_rows, dtype=bool)
    scored_by_any = np.zeros(triples.num_rows, dtype=bool)
    counts = {}
    for name, (pos, neg) in teacher_scores.items():
        lacking = np.isnan(pos) | np.isnan(neg)
        counts[name] = int(lacking.sum())
        scored_by_any |= ~lacking
        if counts[name] and missing == "error":
            row = int(np.flatnonzero(lacking)[0])
            raise ValueError(
                f"teacher {name!r} has no score for {counts[name]} of {triples.num_rows} triples, first at row "
                f"{row + 1} (query {triples.column('query')[row].as_py()[:60]!r}); pass missing='drop' "
                "(--missing drop) to leave such triples out"
            )
        keep &= ~lacking
    if missing == "partial":
        keep = scored_by_any
    if not keep.any():
        raise ValueError(
            f"no triple is scored by every teacher (triples lacking a score: {counts}); a run teacher scores only "
            "the pairs its run file holds"
        )
    return keep, counts


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _distinct_names(teachers: Sequence[Teacher]) -> list[str]:
    names: list[str] = []
    for teacher in teachers:
        name, index = teacher.name, 2
        while name in names:
            name, index = f"{teacher.name}_{index}", index + 1
        names.append(name)
    return names


def _teacher_weights(teacher: Teacher) -> str | None:
    """The identity of what a teacher computes: the SHA-256 of a run file, of a local folder's weight, config and
    tokenizer files, or the Hub commit; `None` when none is known."""
    sha256 = getattr(teacher, "sha256", None)
    if sha256:
        return f"sha256:{sha256}"
    if Path(teacher.name_or_path).is_dir():
        return model_files_fingerprint(teacher.name_or_path)
    return f"commit:{teacher.revision}" if teacher.revision else None


# --------------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------------


def _device_of(teachers: Sequence[Teacher | str | os.PathLike]) -> torch.device | None:
    return next((teacher.device for teacher in teachers if isinstance(teacher, Teacher)), None)


# --------------------------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------------------------

_WORK_KEY, _TEACHER_KEY, _TEACHER_NAME_KEY = b"hf_kd.work", b"hf_kd.teacher", b"hf_kd.teacher_name_or_path"


def _work_id(manifest: dict) -> str:
    """The identity of the work a manifest describes, recorded in each of its shards."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def _shard_stamp(work_id: str, teacher_index: int, teacher: Teacher) -> dict[bytes, bytes]:
    """What a shard records of the work and teacher it was scored for (Parquet schema metadata)."""
    return {
        _WORK_KEY: work_id.encode(),
        _TEACHER_KEY: str(teacher_index).encode(),
        _TEACHER_NAME_KEY: str(teacher.name_or_path).encode(),
    }


def _shard_path(work: Path, teacher_index: int, shard: int) -> Path:
    return work / f"teacher-{teacher_index}" / f"pairs-{shard:05d}.parquet"


def _write_shard(path: Path, start: int, scores: np.ndarray, stamp: dict[bytes, bytes]) -> None:
    table = pa.table(
        {
            "pair": pa.array(np.arange(start, start + len(scores)), pa.int64()),
            "score": pa.array(scores, pa.float32()),
        }
    ).replace_schema_metadata(stamp)
    path.parent.mkdir(exist_ok=True)  # never the work folder itself: the main process made it, with its manifest
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_shard(path: Path, table: pa.Table, stamp: dict[bytes, bytes]) -> None:
    """Refuses a shard not written for this work and teacher (copied from another work folder, or scored by a
    process with other triples, weights or options)."""
    found = table.schema.metadata or {}
    if found.get(_WORK_KEY) == stamp[_WORK_KEY] and found.get(_TEACHER_KEY) == stamp[_TEACHER_KEY]:
        return
    if _WORK_KEY not in found:
        origin = "it records no scoring run"
    else:
        work = "this run" if found[_WORK_KEY] == stamp[_WORK_KEY] else "another scoring run"
        origin = f"it holds scores of teacher {found.get(_TEACHER_NAME_KEY, b'?').decode()!r} of {work}"
    raise ValueError(
        f"{path} is not a shard of teacher {stamp[_TEACHER_NAME_KEY].decode()!r} of this scoring run: {origin}; "
        "nothing was merged: delete the file to score that shard again"
    )


def _read_shards(
    work: Path, teacher_index: int, num_pairs: int, shard_size: int, stamp: dict[bytes, bytes]
) -> np.ndarray:
    scores = np.empty(num_pairs, dtype=np.float32)
    for shard, start in enumerate(range(0, num_pairs, shard_size)):
        path = _shard_path(work, teacher_index, shard)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: no process wrote that shard; nothing was merged, rerun with the same arguments "
                "to score it"
            )
        table = pq.read_table(path)
        _check_shard(path, table, stamp)
        expected = np.arange(start, min(start + shard_size, num_pairs))
        pairs = table.column("pair").to_numpy()
        if not np.array_equal(pairs, expected):
            raise ValueError(
                f"{path} holds pairs {pairs[:1].tolist()}..{pairs[-1:].tolist()} ({len(pairs)} rows), expected "
                f"{start}..{expected[-1]}; delete it to score that shard again"
            )
        scores[start : start + len(pairs)] = table.column("score").to_numpy()
    return scores


def _pairs_in(todo: list) -> int:
    return sum(stop - start for _, (_, start, stop) in todo)


def _score_shards(teachers, names, pairs, todo, work, stamps, batch_size, bf16, bar, shard_count) -> int:
    """Scores the shards `todo` and writes each as it is done; returns the pairs scored."""
    for teacher_index, (shard, start, stop) in todo:
        bar.set_postfix_str(f"{names[teacher_index]}, shard {shard + 1}/{shard_count}")
        queries, passages = pairs.texts(start, stop)
        scores = _score_length_sorted(teachers[teacher_index], queries, passages, batch_size, bf16, bar)
        _write_shard(_shard_path(work, teacher_index, shard), start, scores, stamps[teacher_index])
    return _pairs_in(todo)


# --------------------------------------------------------------------------------------------------------------------
# Scoring triples
# --------------------------------------------------------------------------------------------------------------------


def score_triples(
    teachers: Sequence[Teacher | str | os.PathLike],
    triples_dataset: str | os.PathLike | Dataset | pa.Table,
    out_dir: str | os.PathLike,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bf16: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    normalize: str = "none",
    rescale_to: str | None = None,
    missing: str = "drop",
    overwrite: bool = False,
    show_progress_bar: bool = True,
) -> ScoringResult:
    """Scores triples with one or several teachers and writes the teacher-score dataset (`hf-kd score`).

    Every distinct (query, passage) pair is scored once per teacher, in length-sorted batches, shard by
    shard; an interrupted call resumes from its finished shards when called again with the same arguments.
    Called in every process of `accelerate launch --num_processes N`, the processes share the shards and the
    main process writes the dataset, the same as one process would (see `hf_kd.processes.job_processes`).

    The dataset has the `scored_triples` text form of `hf_kd.data` (`query, positive, negative, pos_score,
    neg_score`). With several teachers, each teacher's raw scores are kept in `pos_score_<teacher>` /
    `neg_score_<teacher>`, and `pos_score` / `neg_score` hold their mean (see `hf_kd.teachers.mean_ensemble`).
    Its provenance records the teachers (names, paths or Hub ids, revisions), the source, the creation time,
    the hf-kd version, and the pairs each process scored (`parameters["scoring"]["processes"]`).

    Args:
        teachers (`Sequence[Teacher | str]`): loaded teachers, or checkpoints for [`load_teacher`].
        triples_dataset: the triples, anything [`read_triples`] reads (TSV, Parquet, dataset folder, `Dataset`).
        out_dir (`str` or `os.PathLike`): the dataset folder to create; `<out_dir>.partial` holds the work.
        batch_size (`int`, *optional*, defaults to 64): pairs per forward pass.
        bf16 (`bool`, *optional*, defaults to `False`): run the teachers under bfloat16 autocast.
        shard_size (`int`, *optional*, defaults to 50,000): distinct pairs per resumable shard.
        normalize (`str`, *optional*, defaults to `"none"`): per-teacher normalisation before averaging several
            teachers: `none` (the paper's T2), `zscore`, `minmax`, `query_zscore` or `query_minmax` (see
            `hf_kd.teachers.ensemble`).
        rescale_to (`str`, *optional*): the name of a teacher whose units the normalised ensemble is given back
            (see `hf_kd.teachers.mean_ensemble`), e.g. a cosine teacher, so that a cosine student learns from the
            ensemble as from that teacher.
        missing (`str`, *optional*, defaults to `"drop"`): a triple that a teacher has no score for (a pair missing
            from a run file) is left out and counted (`drop`; the counts go into the provenance), fails the call
            (`error`), or is kept when another teacher scores it (`partial`): the ensemble columns hold the mean of
            the teachers that score it, and the lacking teacher's own columns hold NaN. No score is ever invented.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out_dir`.
        show_progress_bar (`bool`, *optional*, defaults to `True`): show a tqdm bar with the ETA (main process).

    Returns:
        [`ScoringResult`]: the output folder and the counts of triples and pairs, in every process.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    if not teachers:
        raise ValueError("pass at least one teacher")
    _check_positive("batch_size", batch_size)
    _check_positive("shard_size", shard_size)
    check_normalization(normalize, len(teachers))
    check_rescale(rescale_to, normalize)
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    processes = JobProcesses(job_processes(_device_of(teachers)))
    with contextlib.ExitStack() as lock:
        processes.from_main(lambda: lock_job_output(lock, out, overwrite))
        return _score_triples_locked(
            teachers,
            triples_dataset,
            out,
            batch_size,
            bf16,
            shard_size,
            normalize,
            rescale_to,
            missing,
            overwrite,
            show_progress_bar,
            started,
            processes,
        )


def _manifest(source, triples, pairs, shard_size, bf16, teachers, descriptions) -> dict:
    return {
        "source": source,
        "triples": triples.num_rows,
        "distinct_pairs": len(pairs),
        "pairs_sha256": pairs.fingerprint(),
        "shard_size": shard_size,
        "bf16": bf16,
        "teachers": [
            {
                "name_or_path": d["name_or_path"],
                "weights": _teacher_weights(teacher),
                "max_length": d.get("max_length"),
                "dtype": d.get("dtype"),
            }
            for teacher, d in zip(teachers, descriptions)
        ],
    }


def _open_work(work: Path, manifest: dict, overwrite: bool, shards: list, teacher_count: int) -> list:
    """Creates or resumes the work folder (main process); returns the shards left to score, by teacher."""
    open_work_folder(work, manifest, overwrite, "scoring run", "triples, teachers and options")
    return [(t, shard) for t in range(teacher_count) for shard in shards if not _shard_path(work, t, shard[0]).exists()]


def _score_triples_locked(
    teachers,
    triples_dataset,
    out,
    batch_size,
    bf16,
    shard_size,
    normalize,
    rescale_to,
    missing,
    overwrite,
    show_progress_bar,
    started,
    processes,
) -> ScoringResult:
    triples, source = read_triples(triples_dataset)
    pairs, triple_pairs = _distinct_pairs_of_triples(triples)
    teachers = [t if isinstance(t, Teacher) else load_teacher(t, device=processes.device) for t in teachers]
    names = _distinct_names(teachers)
    descriptions = [{**teacher.describe(), "name": name} for teacher, name in zip(teachers, names)]
    check_rescale(rescale_to, normalize, names)
    if missing == "partial" and len(teachers) < 2:
        raise ValueError("missing='partial' keeps triples that another teacher scores: it needs several teachers")

    work = out.with_name(f"{out.name}.partial")
    manifest = _manifest(source, triples, pairs, shard_size, bf16, teachers, descriptions)
    stamps = [_shard_stamp(_work_id(manifest), index, teacher) for index, teacher in enumerate(teachers)]
    starts = range(0, len(pairs), shard_size)
    shards = [(i, start, min(start + shard_size, len(pairs))) for i, start in enumerate(starts)]
    todo = processes.from_main(lambda: _open_work(work, manifest, overwrite, shards, len(teachers)))
    mine = processes.share(todo)  # after every process has the same list, whatever the others write meanwhile
    total = len(pairs) * len(teachers)
    bar_total, done = (total, total - _pairs_in(todo)) if processes.count == 1 else (_pairs_in(mine), 0)
    desc = "scoring" if processes.count == 1 else f"scoring (main of {processes.count} processes)"
    with tqdm(
        total=bar_total, initial=done, unit="pair", desc=desc, disable=not (show_progress_bar and processes.is_main)
    ) as bar:
        scored = _score_shards(teachers, names, pairs, mine, work, stamps, batch_size, bf16, bar, len(shards))
    split = processes.gather({"rank": processes.rank, "pairs": scored})  # also waits for every process's shards

    def merge_and_write() -> ScoringResult:
        teacher_scores = _merge_shards(work, stamps, names, len(pairs), shard_size, triple_pairs)
        parameters = {"distinct_pairs": len(pairs), "batch_size": batch_size, "bf16": bf16}
        parameters["scoring"] = {"processes": split}
        rows, dropped, missing_counts = _write_scores(
            out, triples, pairs, triple_pairs, teacher_scores, descriptions, source, parameters, normalize,
            rescale_to, missing, overwrite,
        )  # fmt: skip
        shutil.rmtree(work)
        scored_here = sum(process["pairs"] for process in split)
        return ScoringResult(
            out=out,
            triples=rows,
            distinct_pairs=len(pairs),
            scored_pairs=scored_here,
            resumed_pairs=total - scored_here,
            seconds=time.perf_counter() - started,
            dropped_triples=dropped,
            missing_by_teacher=missing_counts,
            processes=split,
        )

    return processes.from_main(merge_and_write)


def _merge_shards(work, stamps, names, num_pairs, shard_size, triple_pairs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every teacher's (positive, negative) scores of the triples, from the shards of every process (main process)."""
    teacher_scores = {}
    for teacher_index, name in enumerate(names):
        pair_scores = _read_shards(work, teacher_index, num_pairs, shard_size, stamps[teacher_index])
        teacher_scores[name] = (pair_scores[triple_pairs[:, 0]], pair_scores[triple_pairs[:, 1]])
    return teacher_scores


def _write_scores(
    out, triples, pairs, triple_pairs, teacher_scores, descriptions, source, parameters, normalize, rescale_to,
    missing, overwrite,
) -> tuple[int, int, dict[str, int]]:  # fmt: skip
    """Writes the dataset of the triples every teacher scores (or some, with `missing="partial"`); returns the rows
    written, the triples left out and the triples each teacher has no score for."""
    keep, missing_counts = _missing_scores(teacher_scores, triples, missing)
    if not keep.all():
        triples = triples.filter(pa.array(keep))
        teacher_scores = {name: (pos[keep], neg[keep]) for name, (pos, neg) in teacher_scores.items()}
    provenance = Provenance(
        format="hf-kd-score",
        schema="scored_triples",
        source_files=[source] if source else [],
        teachers=[d["name_or_path"] for d in descriptions],
        parameters={
            "teachers": descriptions,
            "ensemble": "mean" if len(descriptions) > 1 else None,
            "normalize": normalize,
            "rescale_to": rescale_to,
            **parameters,
            "missing": missing,
            "triples_in": len(keep),
            "dropped_triples": int((~keep).sum()),
            "missing_by_teacher": missing_counts,
        },
    )
    groups = pairs.query_index[triple_pairs[keep, 0]] if normalize.startswith("query_") else None
    ensemble = mean_ensemble(teacher_scores, normalize, groups, rescale_to) if len(descriptions) > 1 else None
    rows = write_teacher_scores(out, triples, teacher_scores, provenance, ensemble=ensemble, overwrite=overwrite)
    return rows, int((~keep).sum()), missing_counts
