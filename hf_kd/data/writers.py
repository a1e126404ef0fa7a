"""Writing teacher-score dataset folders (Parquet shards or `save_to_disk`); `hf_kd.data.ScoreDataset` reads and
writes them through this module.

A dataset folder written here holds:

```
OUT/
  data/train-00000-of-00004.parquet ...   the rows (Parquet layout), or
  data-00000-of-00004.arrow, state.json, dataset_info.json   (the `save_to_disk` layout)
  texts/queries.parquet, texts/collection.parquet   id forms only: the texts the rows refer to (`id`, `text`)
  hf_kd_provenance.json                   teachers, sources, format, time, hf-kd version, row counts
```

The provenance is also kept in the metadata: in each Parquet shard's schema (`hf_kd_provenance`, written
before the row counts are known) and in the `DatasetInfo.description` of the `save_to_disk` layout.

The folder is written under a temporary name beside `OUT` and renamed at the end, so a failed run
leaves no partial dataset.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetInfo, Features
from datasets.arrow_writer import ArrowWriter

from ..files import atomic_folder
from .provenance import Provenance
from .schemas import TEXTS_FEATURES

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "TEXT_FILES",
    "ParquetShardWriter",
    "check_output_folder",
    "write_scores",
    "write_texts",
]

DEFAULT_SHARD_ROWS = 1_000_000
ROW_GROUP_ROWS = 131_072
_PROVENANCE_METADATA_KEY = b"hf_kd_provenance"
TEXT_FILES = {"queries": "texts/queries.parquet", "collection": "texts/collection.parquet"}
"""Where an id form's folder keeps its texts, by kind."""


def _schema_with_provenance(features: Features, provenance: Provenance) -> pa.Schema:
    schema = features.arrow_schema
    return schema.with_metadata({**(schema.metadata or {}), _PROVENANCE_METADATA_KEY: provenance.to_json().encode()})


class ParquetShardWriter:
    """Writes record batches into `folder/data/` as shards of at most `shard_rows` rows.

    Small input batches are gathered into row groups of about `ROW_GROUP_ROWS` rows, which keeps memory
    bounded while giving readers row groups of a useful size.
    """

    def __init__(self, folder: Path, schema: pa.Schema, shard_rows: int):
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.folder = folder / "data"
        self.folder.mkdir(parents=True)
        self.schema = schema
        self.shard_rows = shard_rows
        self.rows = 0
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None or self._rows_in_shard == self.shard_rows:
                self._next_shard()
            take = min(batch.num_rows, self.shard_rows - self._rows_in_shard)
            self._pending.append(batch.slice(0, take))
            self._pending_rows += take
            self._rows_in_shard += take
            self.rows += take
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()
            batch = batch.slice(take)

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema))
            self._pending, self._pending_rows = [], 0

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
        path = self.folder / f"shard-{len(self._shards):05d}.parquet"
        self._shards.append(path)
        # dictionary-encode only the query column, whose values repeat across many rows; passage ids and
        # texts are mostly distinct, where dictionary encoding costs time and gains little
        repeated = [name for name in ("query_id", "query") if name in self.schema.names]
        self._writer = pq.ParquetWriter(path, self.schema, use_dictionary=repeated or False)
        self._rows_in_shard = 0

    def close(self) -> list[Path]:
        """Closes the last shard and names the shards `train-XXXXX-of-YYYYY.parquet`."""
        if self._writer is None:
            self._next_shard()  # an empty dataset still gets one (empty) shard that carries the schema
        self._flush()
        self._writer.close()
        final = []
        for index, path in enumerate(self._shards):
            target = path.with_name(f"train-{index:05d}-of-{len(self._shards):05d}.parquet")
            path.rename(target)
            final.append(target)
        return final


def _prefetch(batches: Iterable[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Produces `batches` in a background thread, so that parsing overlaps writing (both release the GIL)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        """Puts `item` on the queue unless the consumer has stopped; False when it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as error:  # handed over to the consuming thread, which raises it
            offer(error)

    thread = threading.Thread(target=produce, name="hf_kd-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def write_texts(texts: Mapping[str, str], path: str | os.PathLike) -> None:
    """Writes id -> text as a Parquet file of [`TEXTS_FEATURES`] (`id`, `text`)."""
    table = pa.table({"id": list(texts.keys()), "text": list(texts.values())}, schema=TEXTS_FEATURES.arrow_schema)
    pq.write_table(table, path)


def check_output_folder(out: str | os.PathLike, overwrite: bool) -> None:
    """Raises `FileExistsError` when `out` exists, is not an empty folder, and `overwrite` is not set."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")


def write_scores(
    batches: Iterable[pa.RecordBatch],
    out: str | os.PathLike,
    *,
    features: Features,
    provenance: Provenance,
    queries: Mapping[str, str] | None = None,
    collection: Mapping[str, str] | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    save_to_disk: bool = False,
    overwrite: bool = False,
) -> int:
    """The writer behind [`ScoreDataset.write`] (its arguments are documented there; `out` is its `path`).
    Returns the number of rows written."""
    out = Path(out)
    check_output_folder(out, overwrite)
    with atomic_folder(out) as tmp:
        if save_to_disk:
            rows = _write_save_to_disk(batches, tmp, out.parent, features, provenance, shard_rows)
        else:
            writer = ParquetShardWriter(tmp, _schema_with_provenance(features, provenance), shard_rows)
            for batch in _prefetch(batches):
                writer.write(batch)
            writer.close()
            rows = writer.rows
        for kind, texts in (("queries", queries), ("collection", collection)):
            if texts is not None:
                (tmp / TEXT_FILES[kind]).parent.mkdir(exist_ok=True)
                write_texts(texts, tmp / TEXT_FILES[kind])
        provenance.rows = rows
        provenance.save(tmp)
    return rows


def _write_save_to_disk(
    batches: Iterable[pa.RecordBatch],
    folder: Path,
    scratch_parent: Path,
    features: Features,
    provenance: Provenance,
    shard_rows: int,
) -> int:
    # stream into one Arrow file first (constant memory), then let `save_to_disk` shard it
    scratch = Path(tempfile.mkdtemp(dir=scratch_parent, prefix=".hf_kd-arrow-"))
    try:
        arrow_path = scratch / "scores.arrow"
        with ArrowWriter(features=features, path=str(arrow_path)) as writer:
            for batch in _prefetch(batches):
                writer.write_table(pa.Table.from_batches([batch]))
            rows, _ = writer.finalize()
        provenance.rows = rows
        info = DatasetInfo(description=provenance.to_json(), features=features)
        dataset = Dataset.from_file(str(arrow_path), info=info)
        dataset.save_to_disk(str(folder), num_shards=max(1, math.ceil(rows / shard_rows)))
        del dataset
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows
