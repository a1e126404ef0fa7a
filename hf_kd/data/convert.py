"""Converting a teacher-score file of any supported format into a dataset folder (`hf-kd data convert`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..files import remove_staging_leftovers
from ..jobs import output_lock
from .errors import DataFormatError
from .ir_files import read_collection_tsv, read_queries_tsv
from .provenance import Provenance
from .reader_base import RejectedRows, ScoreReader
from .readers import READERS, open_reader
from .schemas import ID_SCHEMAS, detect_schema
from .score_dataset import ScoreDataset
from .writers import DEFAULT_SHARD_ROWS, check_output_folder

__all__ = ["ConversionReport", "convert", "rejected_path_for"]

_QUERY_ID_COLUMNS = ("query_id",)
_PASSAGE_ID_COLUMNS = ("positive_id", "negative_id", "passage_id", "passage_ids")


@dataclass
class ConversionReport:
    """What a conversion read, wrote and rejected; `rows + rejected (+ duplicates, when dropped) == input_lines`
    always holds. `duplicates` counts rows equal in every column to an earlier row."""

    format: str
    source: str
    out: str
    input_lines: int
    rows: int
    rejected: int
    seconds: float
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    rejected_path: str | None = None
    duplicates: int = 0
    duplicates_dropped: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        lines = [
            f"{self.format} {self.source} -> {self.out}",
            (
                f"  input lines: {self.input_lines:,}  converted: {self.rows:,}  rejected: {self.rejected:,}"
                f"  ({self.seconds:.1f} s, {self.rows_per_second:,.0f} rows/s)"
            ),
        ]
        if self.rejected:
            kinds = ", ".join(f"{kind}: {count:,}" for kind, count in sorted(self.rejected_by_kind.items()))
            lines.append(f"  rejected by reason: {kinds}; every rejected line is in {self.rejected_path}")
        if self.duplicates:
            action = "dropped" if self.duplicates_dropped else "kept (pass --drop-duplicates to drop them)"
            lines.append(f"  duplicate rows (equal to an earlier row in every column): {self.duplicates:,}, {action}")
        return "\n".join(lines)


def rejected_path_for(out: str | os.PathLike) -> Path:
    """The side file of rejected lines for the dataset folder `out`: `<out>.rejected.tsv`."""
    out = Path(out)
    return out.with_name(f"{out.name}.rejected.tsv")


class _SeenIds:
    """The distinct ids seen in a stream of Arrow columns, kept as Arrow arrays and deduplicated in bulk."""

    def __init__(self):
        self._chunks: list[pa.Array] = []
        self._length = 0
        self._compacted_length = 0

    def add(self, values: pa.Array) -> None:
        distinct = pc.unique(values)
        self._chunks.append(distinct)
        self._length += len(distinct)
        if self._length > 2 * self._compacted_length + 100_000:
            self._compact()

    def _compact(self) -> None:
        if len(self._chunks) > 1:
            self._chunks = [pc.unique(pa.concat_arrays(self._chunks))]
        self._length = self._compacted_length = sum(len(c) for c in self._chunks)

    def to_set(self) -> set[str]:
        self._compact()
        return set(self._chunks[0].to_pylist()) if self._chunks else set()


class _ReferencedTexts(Mapping):
    """The texts of the ids seen in the stream, in the order of the source; read after the rows are written."""

    def __init__(self, texts: Mapping[str, str], seen: _SeenIds):
        self._texts = texts
        self._seen = seen
        self._ids: set[str] | None = None

    @property
    def ids(self) -> set[str]:
        if self._ids is None:
            self._ids = self._seen.to_set()
        return self._ids

    def __getitem__(self, item_id: str) -> str:
        if item_id not in self.ids:
            raise KeyError(item_id)
        return self._texts[item_id]

    def __iter__(self) -> Iterator[str]:
        return (item_id for item_id in self._texts if item_id in self.ids)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each row over all its columns (lists are joined into one string per row)."""
    combined = np.zeros(batch.num_rows, dtype=np.uint64)
    for column in batch.columns:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.binary_join(column.cast(pa.list_(pa.string())), "\x1f")
        values = column.to_numpy(zero_copy_only=False)
        hashes = pd.util.hash_array(values.astype(object) if values.dtype.kind in "OUS" else values)
        combined = combined * np.uint64(1_000_003) ^ hashes
    return combined


class _Duplicates:
    """Counts rows equal to an earlier row (by a 64-bit hash of all columns), and drops them when asked."""

    def __init__(self, drop: bool):
        self.drop = drop
        self.count = 0
        self._seen = np.empty(0, dtype=np.uint64)  # sorted

    def filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        hashes = _row_hashes(batch)
        _, first = np.unique(hashes, return_index=True)
        new = np.zeros(len(hashes), dtype=bool)
        new[first] = True
        if len(self._seen):
            positions = np.searchsorted(self._seen, hashes).clip(max=len(self._seen) - 1)
            new &= self._seen[positions] != hashes
        self.count += int((~new).sum())
        self._seen = np.union1d(self._seen, hashes[new])
        return batch.filter(pa.array(new)) if self.drop and not new.all() else batch


def _stream(
    reader: ScoreReader,
    provenance: Provenance,
    seen_queries: _SeenIds | None,
    seen_passages: _SeenIds | None,
    duplicates: _Duplicates,
) -> Iterator[pa.RecordBatch]:
    """Yields the reader's batches, noting the ids they use and counting duplicate rows; records the rejected and
    duplicate counts once exhausted, and fails when no row is left."""
    rows = 0
    for batch in reader:
        batch = duplicates.filter(batch)
        rows += batch.num_rows
        for name in batch.schema.names:
            column = batch.column(name)
            if seen_passages is not None and name in _PASSAGE_ID_COLUMNS:
                seen_passages.add(pc.list_flatten(column) if pa.types.is_list(column.type) else column)
            elif seen_queries is not None and name in _QUERY_ID_COLUMNS:
                seen_queries.add(column)
        yield batch
    provenance.rejected_rows = reader.rejected_count
    provenance.parameters["duplicate_rows"] = duplicates.count
    if not rows:
        what = "is empty" if not reader.lines_read else f"has no valid row (all {reader.lines_read:,} lines rejected)"
        raise DataFormatError(reader.path, None, f"the file {what}; nothing to convert")


def convert(
    format: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    queries: str | os.PathLike | None = None,
    collection: str | os.PathLike | None = None,
    skip_bad_rows: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    save_to_disk: bool = False,
    teachers: Sequence[str] = (),
    overwrite: bool = False,
    drop_duplicates: bool = False,
) -> ConversionReport:
    """Converts a teacher-score file into a dataset folder (see `hf_kd.data.writers`).

    Args:
        format (`str`): a key of `hf_kd.data.READERS`, e.g. `"paper-ids"`.
        source (`str` or `os.PathLike`): the input file (a file or folder of Parquet files for `st-*`).
        out (`str` or `os.PathLike`): the dataset folder to write.
        queries (`str` or `os.PathLike`, *optional*): MS MARCO `queries.tsv` for id formats: every query id
            must be in it, and the texts of those used are stored with the dataset.
        collection (`str` or `os.PathLike`, *optional*): MS MARCO `collection.tsv` for id formats, likewise.
        skip_bad_rows (`bool`, *optional*, defaults to `False`): instead of raising on the first bad line,
            write every bad line with its reason to `<out>.rejected.tsv` and carry on.
        shard_rows (`int`, *optional*, defaults to 1,000,000): rows per output shard.
        save_to_disk (`bool`, *optional*, defaults to `False`): write the `save_to_disk` layout instead of
            Parquet shards.
        teachers (`Sequence[str]`, *optional*): names of the teacher models, for the provenance.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing dataset folder.
        drop_duplicates (`bool`, *optional*, defaults to `False`): leave out rows equal in every column to an
            earlier row; by default they are kept. Either way they are counted in the report and the provenance.

    Returns:
        [`ConversionReport`]

    Raises:
        DataFormatError: on the first bad line, unless `skip_bad_rows`; when the file holds no valid row.
    """
    reader_class = READERS.get(format)
    if reader_class is None:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(READERS)}")
    id_form = detect_schema(reader_class.features) in ID_SCHEMAS
    if not id_form and (queries is not None or collection is not None):
        raise ValueError(f"format {format!r} holds texts; --queries and --collection are for id formats only")
    check_output_folder(out, overwrite)
    with output_lock(out):
        check_output_folder(out, overwrite)  # another job may have written it while this one started
        remove_staging_leftovers(out)
        return _convert_locked(
            format,
            source,
            out,
            queries=queries,
            collection=collection,
            skip_bad_rows=skip_bad_rows,
            shard_rows=shard_rows,
            save_to_disk=save_to_disk,
            teachers=teachers,
            overwrite=overwrite,
            drop_duplicates=drop_duplicates,
        )


def _convert_locked(
    format: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    queries: str | os.PathLike | None,
    collection: str | os.PathLike | None,
    skip_bad_rows: bool,
    shard_rows: int,
    save_to_disk: bool,
    teachers: Sequence[str],
    overwrite: bool,
    drop_duplicates: bool,
) -> ConversionReport:
    """[`convert`] once it holds the output's lock."""
    start = time.perf_counter()
    reader_class = READERS[format]
    query_texts = read_queries_tsv(queries) if queries is not None else None
    passage_texts = read_collection_tsv(collection) if collection is not None else None
    rejected_path = rejected_path_for(out)
    rejected = None
    if skip_bad_rows:
        rejected_path.unlink(missing_ok=True)
        rejected = RejectedRows(rejected_path)
    reader = open_reader(format, source, query_ids=query_texts, passage_ids=passage_texts, rejected=rejected)
    seen_queries = _SeenIds() if query_texts is not None else None
    seen_passages = _SeenIds() if passage_texts is not None else None
    sources = [source, queries, collection]
    provenance = Provenance(
        format=format,
        schema=detect_schema(reader_class.features),
        source_files=[str(Path(s).resolve()) for s in sources if s is not None],
        teachers=list(teachers),
        parameters={"skip_bad_rows": skip_bad_rows, "drop_duplicates": drop_duplicates},
    )
    duplicates = _Duplicates(drop_duplicates)
    try:
        rows = ScoreDataset.write(
            out,
            _stream(reader, provenance, seen_queries, seen_passages, duplicates),
            features=reader_class.features,
            provenance=provenance,
            queries=_ReferencedTexts(query_texts, seen_queries) if query_texts is not None else None,
            collection=_ReferencedTexts(passage_texts, seen_passages) if passage_texts is not None else None,
            shard_rows=shard_rows,
            save_to_disk=save_to_disk,
            overwrite=overwrite,
        ).num_rows
    finally:
        if rejected is not None:
            rejected.close()
    dropped = duplicates.count if drop_duplicates else 0
    if rows + reader.rejected_count + dropped != reader.lines_read:
        raise RuntimeError(
            f"line accounting failed for {source}: {rows} converted + {reader.rejected_count} rejected "
            f"+ {dropped} duplicates dropped != {reader.lines_read} input lines"
        )
    return ConversionReport(
        format=format,
        source=str(source),
        out=str(out),
        input_lines=reader.lines_read,
        rows=rows,
        rejected=reader.rejected_count,
        seconds=time.perf_counter() - start,
        rejected_by_kind=dict(rejected.counts) if rejected is not None else {},
        rejected_path=str(rejected_path) if rejected is not None and rejected.total else None,
        duplicates=duplicates.count,
        duplicates_dropped=drop_duplicates,
    )
