"""Teacher-score datasets with one score column pair per teacher: writing them and reading them back.

The rows are the `scored_triples` text form of `hf_kd.data` (`query, positive, negative, pos_score,
neg_score`). With several teachers, each one also gets its raw scores in `pos_score_<teacher>` and
`neg_score_<teacher>`, and `pos_score` / `neg_score` hold their ensemble.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Value, load_from_disk

from ..data.provenance import Provenance, read_provenance
from ..data.schemas import SCORED_TRIPLES_FEATURES
from ..data.writers import load_scores, write_scores

__all__ = [
    "TeacherScores",
    "load_teacher_scores",
    "score_features",
    "split_teacher_scores",
    "write_teacher_scores",
]

TeacherScores = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Teacher name -> (scores of the positives, scores of the negatives), one entry per triple each."""

_TRIPLE_COLUMNS = ("query", "positive", "negative")
_WRITE_BATCH_ROWS = 100_000


def score_features(teacher_names: list[str]) -> Features:
    """The `scored_triples` features, plus `pos_score_<t>` / `neg_score_<t>` per teacher when there are several."""
    if len(teacher_names) < 2:
        return SCORED_TRIPLES_FEATURES
    if len(set(teacher_names)) != len(teacher_names):
        raise ValueError(f"teacher names must be distinct to name their score columns, got {teacher_names}")
    columns = dict(SCORED_TRIPLES_FEATURES)
    for name in teacher_names:
        pos_column, neg_column = score_columns(name)
        columns[pos_column], columns[neg_column] = Value("float32"), Value("float32")
    return Features(columns)


def _record_batches(columns: dict[str, pa.Array | np.ndarray], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    rows = len(next(iter(columns.values())))
    for start in range(0, max(rows, 1), _WRITE_BATCH_ROWS):
        stop = min(start + _WRITE_BATCH_ROWS, rows)
        arrays = []
        for field in schema:
            values = columns[field.name]
            if isinstance(values, pa.Array):
                arrays.append(values.slice(start, stop - start).cast(field.type))
            else:
                arrays.append(pa.array(values[start:stop], type=field.type))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_teacher_scores(
    out: str | os.PathLike,
    triples: pa.Table,
    teacher_scores: TeacherScores,
    provenance: Provenance,
    ensemble: tuple[np.ndarray, np.ndarray] | None = None,
    overwrite: bool = False,
) -> int:
    """Writes the teacher-score dataset folder (Parquet shards and provenance, via `hf_kd.data.write_scores`).

    Args:
        out (`str` or `os.PathLike`): the dataset folder to create.
        triples (`pa.Table`): the `query`, `positive` and `negative` columns, one row per triple.
        teacher_scores ([`TeacherScores`]): each teacher's raw scores, aligned with `triples`.
        provenance (`Provenance`): what the folder records about its making.
        ensemble (`tuple[np.ndarray, np.ndarray]`, *optional*): the ensemble's (pos, neg) scores; required
            with several teachers, ignored with one (whose scores are then `pos_score` / `neg_score`).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `out`.

    Returns:
        `int`: rows written.
    """
    names = list(teacher_scores)
    if not names:
        raise ValueError("no teacher scores to write")
    for name, (pos, neg) in teacher_scores.items():
        if len(pos) != triples.num_rows or len(neg) != triples.num_rows:
            raise ValueError(
                f"teacher {name!r} has {len(pos)} positive and {len(neg)} negative scores for "
                f"{triples.num_rows} triples"
            )
    if len(names) == 1:
        ensemble = teacher_scores[names[0]]
    elif ensemble is None:
        raise ValueError(f"{len(names)} teachers: pass their ensemble scores")
    columns: dict[str, pa.Array | np.ndarray] = {c: triples.column(c).combine_chunks() for c in _TRIPLE_COLUMNS}
    columns.update(zip(score_columns(), ensemble))
    if len(names) > 1:
        for name, scores in teacher_scores.items():
            columns.update(zip(score_columns(name), scores))
    features = score_features(names)
    return write_scores(
        _record_batches(columns, features.arrow_schema),
        out,
        features=features,
        provenance=provenance,
        overwrite=overwrite,
    )


def load_teacher_scores(path: str | os.PathLike) -> tuple[pa.Table, Provenance]:
    """Reads a teacher-score dataset folder written by hf-kd into memory, in its text form.

    Per-teacher columns are kept. An id form (`scored_triples_ids` with stored texts) is joined to its texts.

    Args:
        path (`str` or `os.PathLike`): the dataset folder.

    Returns:
        `tuple[pa.Table, Provenance]`: the rows (with at least `query, positive, negative, pos_score,
        neg_score`) and the folder's provenance.
    """
    path = Path(path)
    provenance = read_provenance(path)
    if provenance.schema == "scored_triples_ids":
        dataset = load_scores(path)
        table = pa.Table.from_pydict(dataset[:])
    elif (path / "state.json").is_file():
        table = load_from_disk(str(path)).data.table
    else:
        files = sorted((path / "data").glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no Parquet shards in {path / 'data'}")
        table = pa.concat_tables([pq.read_table(f) for f in files]).replace_schema_metadata(None)
    missing = [c for c in SCORED_TRIPLES_FEATURES if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path} holds {provenance.schema!r} rows without the columns {missing}; teacher scores need the "
            f"'scored_triples' columns {list(SCORED_TRIPLES_FEATURES)}"
        )
    return table, provenance


def score_columns(teacher: str | None = None) -> tuple[str, str]:
    """The (positive, negative) score columns of one teacher of a teacher-score dataset, or of what training reads
    by default (`None`: the ensemble's mean with several teachers, the scores of the only one otherwise).

    Example:
        ```python
        >>> score_columns("mpnet"), score_columns()
        (('pos_score_mpnet', 'neg_score_mpnet'), ('pos_score', 'neg_score'))

        ```
    """
    if teacher is None:
        return "pos_score", "neg_score"
    return f"pos_score_{teacher}", f"neg_score_{teacher}"


def split_teacher_scores(table: pa.Table, provenance: Provenance) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each teacher's (pos, neg) raw scores: the `pos_score_<t>` / `neg_score_<t>` pairs, or, without them,
    `pos_score` / `neg_score` under the teacher's name from the provenance."""
    scores = {}
    prefix = score_columns("")[0]
    for column in table.column_names:
        name = column[len(prefix) :]
        if column.startswith(prefix) and score_columns(name)[1] in table.column_names:
            scores[name] = tuple(_numpy(table, c) for c in score_columns(name))
    if scores:
        return scores
    return {_single_teacher_name(provenance): (_numpy(table, "pos_score"), _numpy(table, "neg_score"))}


def _single_teacher_name(provenance: Provenance) -> str:
    described = provenance.parameters.get("teachers") or []
    if len(described) == 1 and described[0].get("name"):
        return described[0]["name"]
    if len(provenance.teachers) == 1:
        return Path(provenance.teachers[0].rstrip("/")).name
    return "teacher"


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.float32, copy=False)
