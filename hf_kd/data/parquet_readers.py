"""Readers of the Parquet teacher-score subsets of `sentence-transformers/msmarco`: `st-margin-mse` and `st-mse`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DataFormatError
from .reader_base import _FLOAT32_MAX, ColumnKind, ScoreReader, _all_non_blank, _BadRow
from .schemas import MARGIN_ID_TRIPLES_FEATURES, POINTWISE_ID_FEATURES

__all__ = ["StMarginMseReader", "StMseReader"]


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no .parquet files found at {path}")
    return files


class _ParquetReader(ScoreReader):
    """Parquet file(s) of a `sentence-transformers/msmarco` subset; `path` is a file or a folder of them.

    Download a subset with e.g. `hf download sentence-transformers/msmarco --repo-type dataset
    --include "bert-ensemble-margin-mse/*" --local-dir msmarco` and pass `msmarco/bert-ensemble-margin-mse`.
    """

    unit = "row"
    # input column -> (kind, output column)
    input_columns: ClassVar[dict[str, tuple[ColumnKind, str]]]

    def __init__(self, path: str | os.PathLike, *, batch_rows: int = 131_072, **kwargs):
        super().__init__(path, **kwargs)
        self.batch_rows = batch_rows

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for file in _parquet_files(self.path):
            parquet = pq.ParquetFile(file)
            missing = [c for c in self.input_columns if c not in parquet.schema_arrow.names]
            if missing:
                raise DataFormatError(
                    file,
                    None,
                    f"expected columns {list(self.input_columns)}, missing {missing}"
                    f" (found {parquet.schema_arrow.names})",
                )
            first_row = 1
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=list(self.input_columns)):
                self.lines_read += batch.num_rows
                out = self._convert_fast(batch)
                if out is None:
                    out = self._convert_slow(batch, file, first_row)
                first_row += batch.num_rows
                if out.num_rows:
                    yield out

    def _convert_fast(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        arrays = {}
        for name, (kind, output) in self.input_columns.items():
            values = batch.column(name)
            if values.null_count:
                return None
            try:
                values = values.cast(pa.float32() if kind == "score" else pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
            if kind == "score":
                if not pc.all(pc.is_finite(values)).as_py():
                    return None
            elif not _all_non_blank(values) or not self._all_known(values, kind):
                return None
            arrays[output] = values
        return pa.RecordBatch.from_pydict({n: arrays[n] for n in self.schema.names}, schema=self.schema)

    def _convert_slow(self, batch: pa.RecordBatch, file: Path, first_row: int) -> pa.RecordBatch:
        rows = batch.to_pylist()
        kept: dict[str, list] = {output: [] for _, output in self.input_columns.values()}
        for offset, row in enumerate(rows):
            try:
                values = {
                    output: self._check_value(row[name], kind, name)
                    for name, (kind, output) in self.input_columns.items()
                }
            except _BadRow as bad:
                self._reject(first_row + offset, bad, json.dumps(row, default=str), source=file)
                continue
            for output, value in values.items():
                kept[output].append(value)
        return pa.RecordBatch.from_pydict(kept, schema=self.schema)

    def _check_value(self, value, kind: ColumnKind, name: str) -> str | float:
        if value is None:
            raise _BadRow("null-value", f"expected a non-null {name}")
        if kind == "score":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _BadRow("non-numeric-score", f"expected a numeric {name}, got {value!r}")
            if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                raise _BadRow("non-finite-score", f"expected a finite float32 {name}, got {value!r}")
            return float(value)
        return self._check_id(str(value), kind, name)


class StMarginMseReader(_ParquetReader):
    """`sentence-transformers/msmarco` subset `bert-ensemble-margin-mse`: ids and `score` = pos - neg."""

    format = "st-margin-mse"
    features = MARGIN_ID_TRIPLES_FEATURES
    input_columns: ClassVar[dict[str, tuple[ColumnKind, str]]] = {
        "query_id": ("query_id", "query_id"),
        "positive_id": ("passage_id", "positive_id"),
        "negative_id": ("passage_id", "negative_id"),
        "score": ("score", "margin"),
    }


class StMseReader(_ParquetReader):
    """`sentence-transformers/msmarco` subset `bert-ensemble-mse`: one `score` per (query_id, passage_id)."""

    format = "st-mse"
    features = POINTWISE_ID_FEATURES
    input_columns: ClassVar[dict[str, tuple[ColumnKind, str]]] = {
        "query_id": ("query_id", "query_id"),
        "passage_id": ("passage_id", "passage_id"),
        "score": ("score", "score"),
    }
