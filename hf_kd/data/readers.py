"""Streaming readers of every teacher-score format, yielding Arrow record batches in a declared schema.

Each reader reads its input in fixed-size chunks (constant memory) and yields `pyarrow.RecordBatch`es
whose schema is the reader's `features` (see `hf_kd.data.schemas`). Clean chunks of the TSV formats are
parsed and validated with pyarrow; a chunk that fails any check is re-read line by line to find the exact
line and reason. A bad line raises [`DataFormatError`], or, when the reader is given a [`RejectedRows`],
is written there and skipped, so that `rows_read + rejected == lines_read`.

| format          | input                                                         | schema               |
|-----------------|---------------------------------------------------------------|----------------------|
| `paper-ids`     | TSV `pos_score neg_score qid pos_pid neg_pid`                  | `scored_triples_ids` |
| `paper-text`    | TSV `pos_score neg_score query pos_text neg_text`              | `scored_triples`     |
| `triples`       | TSV `query pos_text neg_text`                                  | `triples`            |
| `st-margin-mse` | Parquet `query_id positive_id negative_id score` (score = margin) | `margin_triples_ids` |
| `st-mse`        | Parquet `query_id passage_id score`                           | `pointwise_ids`      |
| `nway-jsonl`    | JSONL `{"query_id", "document_ids", "scores"}` or `[qid, [pid, score], ...]` | `nway_ids` |

[`READERS`] maps each format name to its reader class and [`open_reader`] opens a file in a format.
"""

from __future__ import annotations

import os

from .jsonl_readers import NwayJsonlReader
from .parquet_readers import StMarginMseReader, StMseReader
from .reader_base import RejectedRows, ScoreReader
from .tsv_readers import PaperIdsReader, PaperTextReader, TriplesReader

__all__ = [
    "READERS",
    "NwayJsonlReader",
    "PaperIdsReader",
    "PaperTextReader",
    "RejectedRows",
    "ScoreReader",
    "StMarginMseReader",
    "StMseReader",
    "TriplesReader",
    "open_reader",
]


READERS: dict[str, type[ScoreReader]] = {
    reader.format: reader
    for reader in (
        PaperIdsReader,
        PaperTextReader,
        TriplesReader,
        StMarginMseReader,
        StMseReader,
        NwayJsonlReader,
    )
}
"""Reader classes by format name (the `--format` choices of `hf-kd data convert`)."""


def open_reader(format: str, path: str | os.PathLike, **kwargs) -> ScoreReader:
    """Instantiates the reader of `format` (a key of [`READERS`]) on `path`; `kwargs` go to the reader."""
    if format not in READERS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(READERS)}")
    return READERS[format](path, **kwargs)
