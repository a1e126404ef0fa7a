"""The teacher-score dataset folder written by hf-kd, and the one class that reads and writes it: [`ScoreDataset`].

```
OUT/
  data/train-00000-of-00004.parquet ...   the rows (Parquet layout), or
  data-00000-of-00004.arrow, state.json, dataset_info.json   (the `save_to_disk` layout)
  texts/queries.parquet, texts/collection.parquet   id forms only: the texts the rows refer to (`id`, `text`)
  hf_kd_provenance.json                   teachers, sources, format, time, hf-kd version, row counts
```

The rows have one of the schemas of `hf_kd.data.SCHEMAS`. Scored by several teachers, the rows keep each teacher's
raw scores in `pos_score_<teacher>` / `neg_score_<teacher>` (see [`ScoreDataset.score_columns`]) beside the
ensemble's `pos_score` / `neg_score`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, IterableDataset, Value, load_dataset, load_from_disk

from .provenance import PROVENANCE_FILENAME, Provenance, read_provenance
from .schemas import ID_SCHEMAS, SCHEMAS, SCORED_TRIPLES_FEATURES, schema_of_columns, with_per_teacher_columns
from .text_join import join_texts
from .texts import TextStore
from .writers import DEFAULT_SHARD_ROWS, TEXT_FILES, ParquetShardWriter, write_scores

__all__ = ["ScoreDataset", "TeacherScores"]

TeacherScores = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Teacher name -> (scores of the positives, scores of the negatives), one entry per triple each."""

_TRIPLE_COLUMNS = ("query", "positive", "negative")
_WRITE_BATCH_ROWS = 100_000
_SAVE_TO_DISK_STATE = "state.json"


class ScoreDataset:
    """A teacher-score dataset folder: its rows (Parquet shards or the `save_to_disk` layout), the texts of an id
    form and its provenance.

    [`ScoreDataset.open`] opens a folder written by hf-kd, [`ScoreDataset.write`] and
    [`ScoreDataset.write_teacher_scores`] write one.

    Args:
        path (`str` or `os.PathLike`): the folder.
        provenance ([`Provenance`], *optional*): its provenance; by default read from the folder, or `None` for a
            folder hf-kd did not write (a `Dataset.save_to_disk` folder or Parquet files whose columns match a
            schema), which can be pushed but not loaded.

    Example:
        ```python
        >>> import tempfile
        >>> import pyarrow as pa
        >>> from hf_kd.data import Provenance, ScoreDataset
        >>> triples = pa.table({"query": ["q"], "positive": ["p"], "negative": ["n"]})
        >>> scores = {"a": ([2.0], [0.0]), "b": ([4.0], [1.0])}
        >>> provenance = Provenance(format="example", schema="scored_triples", source_files=[])
        >>> ensemble = ([3.0], [0.5])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     written = ScoreDataset.write_teacher_scores(tmp + "/scores", triples, scores, provenance, ensemble)
        ...     folder = ScoreDataset.open(written.path)
        ...     folder.schema, folder.teachers, folder.num_rows
        ...     {name: (pos.tolist(), neg.tolist()) for name, (pos, neg) in folder.teacher_scores().items()}
        ('scored_triples', ['a', 'b'], 1)
        {'a': ([2.0], [0.0]), 'b': ([4.0], [1.0])}

        ```
    """

    def __init__(self, path: str | os.PathLike, provenance: Provenance | None = None):
        self.path = Path(path)
        if provenance is None and self.is_score_dataset(self.path):
            provenance = read_provenance(self.path)
        self.provenance = provenance

    def __repr__(self) -> str:
        return f"ScoreDataset({str(self.path)!r})"

    # ----------------------------------------------------------------------------------------------------------------
    # Opening and naming
    # ----------------------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> ScoreDataset:
        """Opens a teacher-score dataset folder written by hf-kd.

        Raises:
            FileNotFoundError: `path` has no provenance: it is not a teacher-score dataset written by hf-kd.
        """
        return cls(path, read_provenance(path))

    @staticmethod
    def is_score_dataset(path: str | os.PathLike) -> bool:
        """Whether `path` is a teacher-score dataset folder written by hf-kd (it has `hf_kd_provenance.json`)."""
        return Path(path).is_dir() and (Path(path) / PROVENANCE_FILENAME).is_file()

    @staticmethod
    def score_columns(teacher: str | None = None) -> tuple[str, str]:
        """The (positive, negative) score columns of one teacher of a teacher-score dataset, or of what training
        reads by default (`None`: the ensemble's mean with several teachers, the scores of the only one otherwise).

        Example:
            ```python
            >>> ScoreDataset.score_columns("mpnet"), ScoreDataset.score_columns()
            (('pos_score_mpnet', 'neg_score_mpnet'), ('pos_score', 'neg_score'))

            ```
        """
        if teacher is None:
            return "pos_score", "neg_score"
        return f"pos_score_{teacher}", f"neg_score_{teacher}"

    @classmethod
    def teacher_features(cls, teachers: list[str]) -> Features:
        """The `scored_triples` features, plus [`score_columns`] per teacher when there are several."""
        if len(teachers) < 2:
            return SCORED_TRIPLES_FEATURES
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"teacher names must be distinct to name their score columns, got {teachers}")
        columns = dict(SCORED_TRIPLES_FEATURES)
        for name in teachers:
            pos_column, neg_column = cls.score_columns(name)
            columns[pos_column], columns[neg_column] = Value("float32"), Value("float32")
        return Features(columns)

    @classmethod
    def _teachers_of_columns(cls, columns: list[str]) -> list[str]:
        """The teachers with a (`pos_score_<t>`, `neg_score_<t>`) pair among `columns`, in column order."""
        prefix = cls.score_columns("")[0]
        names = [column[len(prefix) :] for column in columns if column.startswith(prefix)]
        return [name for name in names if cls.score_columns(name)[1] in columns]

    # ----------------------------------------------------------------------------------------------------------------
    # What the folder holds
    # ----------------------------------------------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        """The hf-kd schema of the rows, a key of `hf_kd.data.SCHEMAS` (e.g. `"scored_triples_ids"`)."""
        if self.provenance is not None:
            return self.provenance.schema
        return schema_of_columns(self.features)

    @property
    def features(self) -> Features:
        """The stored columns (ids for an id form), per-teacher score columns included."""
        if self._is_save_to_disk():
            return load_from_disk(str(self.path)).features
        return Features.from_arrow_schema(pq.read_schema(self._stored_shards()[0]))

    @property
    def num_rows(self) -> int:
        """The number of rows, as the provenance records them, or else as stored."""
        if self.provenance is not None and self.provenance.rows is not None:
            return self.provenance.rows
        if self._is_save_to_disk():
            return load_from_disk(str(self.path)).num_rows
        return sum(pq.ParquetFile(file).metadata.num_rows for file in self._stored_shards())

    @property
    def teachers(self) -> list[str]:
        """The names of the teachers whose scores the rows hold: those of the per-teacher score columns, or, without
        them, the only teacher's name from the provenance; empty for rows without `pos_score` / `neg_score`."""
        columns = list(self.features)
        names = self._teachers_of_columns(columns)
        if names:
            return names
        if all(column in columns for column in self.score_columns()):
            return [self._single_teacher_name()]
        return []

    def shard_files(self) -> list[Path]:
        """The Parquet shards of the Parquet layout (`data/*.parquet`, or `*.parquet` beside); empty for the
        `save_to_disk` layout."""
        return sorted((self.path / "data").glob("*.parquet")) or sorted(self.path.glob("*.parquet"))

    def text_files(self) -> dict[str, Path]:
        """The texts an id form's folder stores, by kind (`queries`, `collection`): only those present."""
        return {kind: self.path / name for kind, name in TEXT_FILES.items() if (self.path / name).is_file()}

    def texts(self, cache_dir: str | os.PathLike | None = None) -> dict[str, TextStore]:
        """The stored texts of an id form as memory-mapped [`TextStore`]s, by kind."""
        cache = str(cache_dir) if cache_dir is not None else None
        return {kind: TextStore.from_parquet(file, kind, cache) for kind, file in self.text_files().items()}

    def _is_save_to_disk(self) -> bool:
        return (self.path / _SAVE_TO_DISK_STATE).is_file()

    def _stored_shards(self) -> list[Path]:
        files = self.shard_files()
        if not files:
            raise FileNotFoundError(
                f"{self.path} holds no teacher scores: expected Parquet shards (data/*.parquet or *.parquet) or a "
                "save_to_disk folder (state.json)"
            )
        return files

    def _required_provenance(self) -> Provenance:
        return self.provenance if self.provenance is not None else read_provenance(self.path)

    # ----------------------------------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------------------------------

    def load(
        self,
        streaming: bool = False,
        with_texts: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> Dataset | IterableDataset:
        """The rows as a `datasets` dataset, from either layout.

        Args:
            streaming (`bool`, *optional*, defaults to `False`): return an `IterableDataset` that reads the
                shards lazily instead of a memory-mapped `Dataset`; both yield the same rows in the same order.
            with_texts (`bool`, *optional*, defaults to `True`): for an id form whose folder stores texts, join
                them lazily, batch by batch, from memory-mapped Arrow (see `hf_kd.data.join_texts`), giving the
                text form the trainer reads.
            cache_dir (`str` or `os.PathLike`, *optional*): the `datasets` cache for the Parquet layout (the
                non-streaming mode converts the shards to Arrow there); defaults to the `datasets` cache.

        Returns:
            `Dataset` or `IterableDataset` whose `info.description` holds the provenance JSON.
        """
        provenance = self._required_provenance()
        features = SCHEMAS[provenance.schema]
        if self._is_save_to_disk():
            dataset = load_from_disk(str(self.path))
            if streaming:
                dataset = dataset.to_iterable_dataset()
        else:
            files = [str(f) for f in self.shard_files()]
            if not files:
                raise FileNotFoundError(f"no Parquet shards in {self.path / 'data'}")
            features = with_per_teacher_columns(features, pq.read_schema(files[0]).names)
            cache = str(cache_dir) if cache_dir is not None else None
            if streaming:
                dataset = load_dataset(
                    "parquet",
                    data_files={"train": files},
                    split="train",
                    features=features,
                    streaming=True,
                    cache_dir=cache,
                )
            else:
                dataset = Dataset.from_parquet(files, features=features, cache_dir=cache)
        if with_texts and len(self.text_files()) == len(TEXT_FILES):
            texts = self.texts(cache_dir)
            dataset = join_texts(dataset, texts["queries"], texts["collection"], source=str(self.path))
        dataset.info.description = provenance.to_json()
        return dataset

    def table(self) -> pa.Table:
        """The rows in memory, in their text form: an id form is joined to its stored texts; per-teacher columns are
        kept."""
        provenance = self._required_provenance()
        if provenance.schema in ID_SCHEMAS:
            return pa.Table.from_pydict(self.load()[:])
        if self._is_save_to_disk():
            return load_from_disk(str(self.path)).data.table
        files = self.shard_files()
        if not files:
            raise FileNotFoundError(f"no Parquet shards in {self.path / 'data'}")
        return pa.concat_tables([pq.read_table(f) for f in files]).replace_schema_metadata(None)

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        """The stored rows (ids for an id form) as record batches, read lazily, at constant memory."""
        if self._is_save_to_disk():
            yield from load_from_disk(str(self.path)).data.to_batches()
            return
        for file in self._stored_shards():
            yield from pq.ParquetFile(file).iter_batches()

    def teacher_scores(self, table: pa.Table | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each teacher's (pos, neg) raw scores: those of the per-teacher score columns, or, without them,
        `pos_score` / `neg_score` under the only teacher's name from the provenance.

        Args:
            table (`pa.Table`, *optional*): rows of this dataset as [`table`] returns them (e.g. a slice of them);
                by default all its rows.

        Raises:
            ValueError: the rows lack the `scored_triples` columns.
        """
        provenance = self._required_provenance()
        table = self.table() if table is None else table
        missing = [c for c in SCORED_TRIPLES_FEATURES if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{self.path} holds {provenance.schema!r} rows without the columns {missing}; teacher scores need the "
                f"'scored_triples' columns {list(SCORED_TRIPLES_FEATURES)}"
            )
        names = self._teachers_of_columns(table.column_names)
        if names:
            return {name: tuple(_numpy(table, c) for c in self.score_columns(name)) for name in names}
        return {self._single_teacher_name(): tuple(_numpy(table, c) for c in self.score_columns())}

    def _single_teacher_name(self) -> str:
        provenance = self.provenance
        if provenance is None:
            return "teacher"
        described = provenance.parameters.get("teachers") or []
        if len(described) == 1 and described[0].get("name"):
            return described[0]["name"]
        if len(provenance.teachers) == 1:
            return Path(provenance.teachers[0].rstrip("/")).name
        return "teacher"

    # ----------------------------------------------------------------------------------------------------------------
    # Writing and publishing
    # ----------------------------------------------------------------------------------------------------------------

    @classmethod
    def write(
        cls,
        path: str | os.PathLike,
        batches: Iterable[pa.RecordBatch],
        *,
        features: Features,
        provenance: Provenance,
        queries: Mapping[str, str] | None = None,
        collection: Mapping[str, str] | None = None,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        save_to_disk: bool = False,
        overwrite: bool = False,
    ) -> ScoreDataset:
        """Writes a teacher-score dataset folder from a stream of record batches, at constant memory.

        The folder is written under a temporary name beside `path` and renamed at the end, so a failed run leaves
        no partial dataset. The provenance is also kept in the metadata: in each Parquet shard's schema and in the
        `DatasetInfo.description` of the `save_to_disk` layout.

        Args:
            path (`str` or `os.PathLike`): the dataset folder to create.
            batches (`Iterable[pa.RecordBatch]`): rows whose schema is `features` (e.g. a `hf_kd.data` reader).
            features (`Features`): one of `hf_kd.data.SCHEMAS`, with any per-teacher score columns.
            provenance ([`Provenance`]): recorded beside the rows and in the file metadata; its `rows` is filled in
                here.
            queries (`Mapping[str, str]`, *optional*): query texts to store beside an id form.
            collection (`Mapping[str, str]`, *optional*): passage texts to store beside an id form.
            shard_rows (`int`, *optional*, defaults to 1,000,000): rows per Parquet or Arrow shard.
            save_to_disk (`bool`, *optional*, defaults to `False`): write the `Dataset.save_to_disk` layout
                instead of Parquet shards.
            overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `path`.

        Returns:
            [`ScoreDataset`]: the folder written (its `num_rows` are the rows written).
        """
        write_scores(
            batches,
            path,
            features=features,
            provenance=provenance,
            queries=queries,
            collection=collection,
            shard_rows=shard_rows,
            save_to_disk=save_to_disk,
            overwrite=overwrite,
        )
        return cls(path, provenance)

    @classmethod
    def write_teacher_scores(
        cls,
        path: str | os.PathLike,
        triples: pa.Table,
        teacher_scores: TeacherScores,
        provenance: Provenance,
        ensemble: tuple[np.ndarray, np.ndarray] | None = None,
        overwrite: bool = False,
    ) -> ScoreDataset:
        """Writes the `scored_triples` folder of triples scored by one or several teachers.

        Args:
            path (`str` or `os.PathLike`): the dataset folder to create.
            triples (`pa.Table`): the `query`, `positive` and `negative` columns, one row per triple.
            teacher_scores ([`TeacherScores`]): each teacher's raw scores, aligned with `triples`.
            provenance ([`Provenance`]): what the folder records about its making.
            ensemble (`tuple[np.ndarray, np.ndarray]`, *optional*): the ensemble's (pos, neg) scores; required
                with several teachers, ignored with one (whose scores are then `pos_score` / `neg_score`).
            overwrite (`bool`, *optional*, defaults to `False`): replace an existing non-empty `path`.

        Returns:
            [`ScoreDataset`]: the folder written (its `num_rows` are the rows written).
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
        columns.update(zip(cls.score_columns(), ensemble))
        if len(names) > 1:
            for name, scores in teacher_scores.items():
                columns.update(zip(cls.score_columns(name), scores))
        features = cls.teacher_features(names)
        return cls.write(
            path,
            _record_batches(columns, features.arrow_schema),
            features=features,
            provenance=provenance,
            overwrite=overwrite,
        )

    @staticmethod
    def write_shards(
        batches: Iterable[pa.RecordBatch], features: Features, out: str | os.PathLike, max_shard_rows: int
    ) -> list[str]:
        """Writes record batches cast to `features` as the Parquet shards of a dataset folder
        (`data/train-XXXXX-of-YYYYY.parquet`, at most `max_shard_rows` rows each) without provenance, at constant
        memory; returns the shard paths relative to `out`."""
        out = Path(out)
        schema = features.arrow_schema
        writer = ParquetShardWriter(out, schema, max_shard_rows)
        for batch in batches:
            for cast in pa.Table.from_batches([batch]).select(list(features)).cast(schema).to_batches():
                writer.write(cast)
        return [path.relative_to(out).as_posix() for path in writer.close()]


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


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.float32, copy=False)
