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
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Collection, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from datasets import Features

from ..files import skip_bom
from .errors import DataFormatError
from .schemas import (
    MARGIN_ID_TRIPLES_FEATURES,
    NWAY_ID_FEATURES,
    POINTWISE_ID_FEATURES,
    SCORED_ID_TRIPLES_FEATURES,
    SCORED_TRIPLES_FEATURES,
    TRIPLES_FEATURES,
)

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

DEFAULT_BLOCK_BYTES = 1024 * 1024
_MAX_PRESENCE_TABLE = 1 << 27  # ids below this are looked up in a bool table (at most 128 MiB)
_FLOAT32_MAX = 3.4028234663852886e38
# what pyarrow's CSV float parser accepts, so that the line-by-line path agrees with the vectorised one
_FINITE_NUMBER = re.compile(r" *[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)? *", re.ASCII)
_NON_FINITE = re.compile(r" *[+-]?(?:nan|inf|infinity) *", re.ASCII | re.IGNORECASE)
_HEADER_WORDS = frozenset(
    {
        "query", "queries", "positive", "negative", "passage", "passages", "document", "documents", "doc",
        "pos", "neg", "qid", "pid", "docid", "doc_id", "pos_pid", "neg_pid", "pos_id", "neg_id", "query_id",
        "positive_id", "negative_id", "passage_id", "passage_ids", "document_ids", "pos_score", "neg_score",
        "score", "scores", "margin", "label", "pos_text", "neg_text", "query_text", "text", "id",
    }
)  # fmt: skip
_HEADER_ARRAY = pa.array(sorted(_HEADER_WORDS))

ColumnKind = Literal["score", "query_id", "passage_id", "text"]


class RejectedRows:
    """Collects rejected input lines in a side TSV file: `source<TAB>line<TAB>kind<TAB>reason<TAB>content`.

    The file is created on the first rejected line and replaced atomically on [`close`].

    Args:
        path (`str` or `os.PathLike`): the side file, conventionally `<out>.rejected.tsv`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, source: str | os.PathLike, line_number: int, kind: str, reason: str, content: bytes | str) -> None:
        """Records one rejected line; `content` is the raw line (invalid UTF-8 is written escaped)."""
        if self._file is None:
            # kept open across calls: rejected lines arrive one at a time while the input streams
            self._file = open(self._tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._file.write("source\tline\tkind\treason\tcontent\n")
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="backslashreplace")
        content = content.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        self._file.write(f"{source}\t{line_number}\t{kind}\t{reason}\t{content}\n")
        self.counts[kind] += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)


class _BadRow(Exception):
    """One line failed a check; carries the kind (for counts) and the reason (for messages)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class ScoreReader:
    """Base of the readers: a re-iterable stream of record batches in `features`, with line accounting.

    Args:
        path (`str` or `os.PathLike`): the input.
        query_ids (`Container[str]`, *optional*): known query ids; rows naming another query are bad.
        passage_ids (`Container[str]`, *optional*): known passage ids; rows naming another passage are bad.
        rejected (`RejectedRows`, *optional*): where bad lines go; without it the first bad line raises
            [`DataFormatError`].

    Attributes:
        lines_read (`int`): input lines (rows for Parquet inputs) seen by the last iteration.
        rows_read (`int`): rows yielded by the last iteration.
        rejected_count (`int`): input lines rejected by the last iteration.
    """

    format: ClassVar[str]
    features: ClassVar[Features]
    unit: ClassVar[str] = "line"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        query_ids: Container[str] | None = None,
        passage_ids: Container[str] | None = None,
        rejected: RejectedRows | None = None,
    ):
        self.path = Path(path)
        self.query_ids = query_ids
        self.passage_ids = passage_ids
        self._known = {
            "query_id": _KnownIds(query_ids) if query_ids is not None else None,
            "passage_id": _KnownIds(passage_ids) if passage_ids is not None else None,
        }
        self.rejected = rejected
        self.lines_read = 0
        self.rows_read = 0
        self.rejected_count = 0

    @property
    def schema(self) -> pa.Schema:
        return self.features.arrow_schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        self.lines_read = self.rows_read = self.rejected_count = 0
        for batch in self._batches():
            self.rows_read += batch.num_rows
            yield batch

    def _batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def _reject(self, line_number: int, bad: _BadRow, content: bytes | str, source: Path | None = None) -> None:
        source = source or self.path
        if self.rejected is None:
            raise DataFormatError(source, line_number, bad.reason, unit=self.unit)
        self.rejected.add(source, line_number, bad.kind, bad.reason, content)
        self.rejected_count += 1

    def _known_ids(self, kind: ColumnKind) -> Container[str] | None:
        return self.query_ids if kind == "query_id" else self.passage_ids

    def _check_id(self, value: str, kind: ColumnKind, name: str) -> str:
        if not value or value.isspace():
            raise _BadRow("empty-id", f"expected a non-empty {name}")
        known = self._known_ids(kind)
        if known is not None and value not in known:
            texts = "queries" if kind == "query_id" else "collection"
            raise _BadRow("unknown-id", f"{name} {value!r} is not in the {texts}")
        return value

    def _all_known(self, column: pa.Array, kind: ColumnKind) -> bool:
        known = self._known[kind]
        return known is None or known.contains_all(column)


class _KnownIds:
    """Checks whole Arrow columns of ids against a set of known ids.

    Collections with integer ids (MS MARCO, most BEIR sets) are checked vectorised: through a table of
    present ids when they are small non-negative integers, else by binary search over the sorted ids. Other
    collections are checked one distinct id at a time.
    """

    def __init__(self, ids: Container[str]):
        self.ids = ids
        self._present: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        if isinstance(ids, Collection) and len(ids):
            as_integers = _canonical_integers(pa.array(list(ids), pa.string()))
            if as_integers is not None:
                values = as_integers.to_numpy()
                if values.min() >= 0 and values.max() < _MAX_PRESENCE_TABLE:
                    self._present = np.zeros(values.max() + 1, dtype=bool)
                    self._present[values] = True
                else:
                    self._sorted = np.sort(values)

    def contains_all(self, column: pa.Array) -> bool:
        if self._present is None and self._sorted is None:
            return all(value in self.ids for value in pc.unique(column).to_pylist())
        as_integers = _canonical_integers(column)
        if as_integers is None:
            return False  # some id is not an integer, so it is not among the known ones
        values = as_integers.to_numpy()
        if len(values) == 0:
            return True
        if self._present is not None:
            if values.min() < 0 or values.max() >= len(self._present):
                return False
            return bool(self._present[values].all())
        found = np.searchsorted(self._sorted, values).clip(max=len(self._sorted) - 1)
        return bool(np.all(self._sorted[found] == values))


def _canonical_integers(strings: pa.Array) -> pa.Array | None:
    """The ids as int64 when each is the canonical decimal form of an integer ("7", not "07" or "+7")."""
    if strings.null_count:
        return None
    if len(strings) == 0:
        return pa.array([], pa.int64())
    try:
        integers = strings.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return integers if pc.all(pc.equal(integers.cast(pa.string()), strings)).as_py() else None


def _all_non_blank(values: pa.Array) -> bool:
    return len(values) == 0 or pc.min(pc.utf8_length(pc.utf8_trim_whitespace(values))).as_py() > 0


def _parse_score(value: str, name: str) -> float:
    if _FINITE_NUMBER.fullmatch(value):
        score = float(value)
        if abs(score) <= _FLOAT32_MAX:
            return score
        raise _BadRow("non-finite-score", f"expected a {name} within float32 range, got {value!r}")
    if _NON_FINITE.fullmatch(value):
        raise _BadRow("non-finite-score", f"expected a finite {name}, got {value!r}")
    raise _BadRow("non-numeric-score", f"expected a numeric {name}, got {value!r}")


def _iter_blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yields `(first_line_number, block, ends_with_newline)`: whole lines, about `block_bytes` at a time."""
    first_line, rest = 1, b""
    with open(path, "rb") as f:
        skip_bom(f)
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                if rest:
                    yield first_line, rest, False
                return
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield first_line, block, True
            first_line += block.count(b"\n")


def _split_block(block: bytes, first_line: int, piece_bytes: int = 65_536) -> Iterator[tuple[int, bytes, bool]]:
    """Cuts a block into pieces of whole lines of about `piece_bytes`: `(first_line, piece, ends_with_newline)`."""
    start = 0
    while start < len(block):
        cut = block.find(b"\n", min(start + piece_bytes, len(block)) - 1) + 1 or len(block)
        piece = block[start:cut]
        yield first_line, piece, piece.endswith(b"\n")
        first_line += piece.count(b"\n")
        start = cut


@dataclass(frozen=True)
class _Column:
    name: str
    kind: ColumnKind
    output: str


class _TsvReader(ScoreReader):
    """Tab-separated lines with a fixed number of columns and no header."""

    columns: ClassVar[tuple[_Column, ...]]

    def __init__(self, path: str | os.PathLike, *, block_bytes: int = DEFAULT_BLOCK_BYTES, **kwargs):
        super().__init__(path, **kwargs)
        self.block_bytes = block_bytes

    @property
    def expected(self) -> str:
        names = " ".join(c.name for c in self.columns)
        return f"{len(self.columns)} tab-separated columns '{names}'"

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for first_line, block, ends_with_newline in _iter_blocks(self.path, self.block_bytes):
            self.lines_read += block.count(b"\n") + (0 if ends_with_newline else 1)
            batch = self._parse_block_fast(block) if ends_with_newline else None
            if batch is not None:
                yield batch
                continue
            # something in the block needs a closer look: retry the fast path on small pieces first, so
            # that only the pieces holding bad lines are parsed line by line
            for piece_first_line, piece, piece_ends_with_newline in _split_block(block, first_line):
                batch = self._parse_block_fast(piece) if piece_ends_with_newline else None
                if batch is None:
                    batch = self._parse_block_slow(piece, piece_first_line, piece_ends_with_newline)
                if batch.num_rows:
                    yield batch

    def _parse_block_fast(self, block: bytes) -> pa.RecordBatch | None:
        """Parses and validates whole lines with pyarrow; `None` when any line needs a closer look."""
        line_count = block.count(b"\n")
        invalid_rows = []

        def on_invalid_row(row: pa_csv.InvalidRow) -> str:
            invalid_rows.append(row)
            return "skip"

        column_types = {c.name: pa.float64() if c.kind == "score" else pa.string() for c in self.columns}
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=pa_csv.ReadOptions(column_names=[c.name for c in self.columns], use_threads=True),
                parse_options=pa_csv.ParseOptions(
                    delimiter="\t",
                    quote_char=False,
                    double_quote=False,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid_row,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=column_types, null_values=[], strings_can_be_null=False, check_utf8=True
                ),
            )
        except pa.ArrowInvalid:
            return None
        if invalid_rows or table.num_rows != line_count:
            return None
        arrays = {}
        for column in self.columns:
            values = table[column.name].combine_chunks()
            if values.null_count:
                return None
            if column.kind == "score":
                values = values.cast(pa.float32())
                if not pc.all(pc.is_finite(values)).as_py():
                    return None
            elif column.kind == "text":
                if not _all_non_blank(values) or pc.any(pc.is_in(pc.utf8_lower(values), _HEADER_ARRAY)).as_py():
                    return None
            elif self._known_ids(column.kind) is None:
                if not _all_non_blank(values):
                    return None
            elif not self._all_known(values, column.kind):  # known ids are never blank
                return None
            arrays[column.output] = values
        return pa.RecordBatch.from_pydict({name: arrays[name] for name in self.schema.names}, schema=self.schema)

    def _looks_like_header(self, fields: list[str]) -> bool:
        words = [f.strip().lower() for f in fields]
        if all(w in _HEADER_WORDS for w in words):
            return True
        has_scores = any(c.kind == "score" for c in self.columns)
        return has_scores and len(fields) == len(self.columns) and not any(_FINITE_NUMBER.fullmatch(f) for f in fields)

    def _parse_line(self, raw: bytes, is_unterminated_last: bool) -> list[str | float]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadRow(
                "bad-encoding",
                f"expected UTF-8 text, got invalid byte {raw[e.start : e.start + 1]!r} "
                f"at byte {e.start + 1} of the line",
            ) from None
        fields = line.split("\t")
        try:
            values = self._parse_fields(fields, is_unterminated_last)
        except _BadRow:
            if self._looks_like_header(fields):
                raise self._header_error(fields) from None
            raise
        if fields[0].strip().lower() in _HEADER_WORDS and self._looks_like_header(fields):
            raise self._header_error(fields)
        return values

    def _header_error(self, fields: list[str]) -> _BadRow:
        return _BadRow(
            "header",
            f"expected a data line ({self.expected}), got a header {fields}; this format has no header",
        )

    def _parse_fields(self, fields: list[str], is_unterminated_last: bool) -> list[str | float]:
        if len(fields) != len(self.columns):
            if is_unterminated_last and len(fields) < len(self.columns):
                raise _BadRow(
                    "truncated-line",
                    f"truncated last line: expected {self.expected}, got {len(fields)} and no newline at end of file",
                )
            raise _BadRow("column-count", f"expected {self.expected}, got {len(fields)}")
        values: list[str | float] = []
        for column, value in zip(self.columns, fields):
            if column.kind == "score":
                values.append(_parse_score(value, column.name))
            elif column.kind == "text":
                if not value.strip():
                    raise _BadRow("empty-text", f"expected a non-empty {column.name}")
                values.append(value)
            else:
                values.append(self._check_id(value, column.kind, column.name))
        return values

    def _parse_block_slow(self, block: bytes, first_line: int, ends_with_newline: bool) -> pa.RecordBatch:
        lines = block.split(b"\n")
        if ends_with_newline:
            lines.pop()
        rows = []
        for offset, raw in enumerate(lines):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            is_unterminated_last = not ends_with_newline and offset == len(lines) - 1
            try:
                rows.append(self._parse_line(raw, is_unterminated_last))
            except _BadRow as bad:
                self._reject(first_line + offset, bad, raw)
        columns = list(zip(*rows)) if rows else [[] for _ in self.columns]
        arrays = {
            c.output: pa.array(values, pa.float64()).cast(pa.float32())
            if c.kind == "score"
            else pa.array(values, pa.string())
            for c, values in zip(self.columns, columns)
        }
        return pa.RecordBatch.from_pydict({name: arrays[name] for name in self.schema.names}, schema=self.schema)


class PaperIdsReader(_TsvReader):
    """The paper's teacher-score TSV by ids: `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`."""

    format = "paper-ids"
    features = SCORED_ID_TRIPLES_FEATURES
    columns = (
        _Column("pos_score", "score", "pos_score"),
        _Column("neg_score", "score", "neg_score"),
        _Column("qid", "query_id", "query_id"),
        _Column("pos_pid", "passage_id", "positive_id"),
        _Column("neg_pid", "passage_id", "negative_id"),
    )


class PaperTextReader(_TsvReader):
    """The paper's teacher-score TSV by text: `pos_score<TAB>neg_score<TAB>query<TAB>pos_text<TAB>neg_text`."""

    format = "paper-text"
    features = SCORED_TRIPLES_FEATURES
    columns = (
        _Column("pos_score", "score", "pos_score"),
        _Column("neg_score", "score", "neg_score"),
        _Column("query", "text", "query"),
        _Column("pos_text", "text", "positive"),
        _Column("neg_text", "text", "negative"),
    )


class TriplesReader(_TsvReader):
    """Plain MS MARCO training triples: `query<TAB>positive passage<TAB>negative passage`."""

    format = "triples"
    features = TRIPLES_FEATURES
    columns = (
        _Column("query", "text", "query"),
        _Column("positive", "text", "positive"),
        _Column("negative", "text", "negative"),
    )


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


class NwayJsonlReader(ScoreReader):
    """N-way teacher scores, one JSON value per line, in either common shape:

    - `{"query_id": "q1", "document_ids": ["p1", "p2", ...], "scores": [12.1, 3.4, ...]}`
    - `["q1", ["p1", 12.1], ["p2", 3.4], ...]`

    The first passage of a line is the positive. Ids may be strings or integers; they are stored as strings.
    """

    format = "nway-jsonl"
    features = NWAY_ID_FEATURES
    expected = (
        'expected {"query_id": ..., "document_ids": [...], "scores": [...]} or [qid, [pid, score], ...] '
        "with at least 2 passages"
    )

    def __init__(self, path: str | os.PathLike, *, batch_rows: int = 16_384, **kwargs):
        super().__init__(path, **kwargs)
        self.batch_rows = batch_rows

    def _batches(self) -> Iterator[pa.RecordBatch]:
        rows: dict[str, list] = {"query_id": [], "passage_ids": [], "scores": []}
        with open(self.path, "rb") as f:
            skip_bom(f)
            for line_number, raw in enumerate(f, start=1):
                self.lines_read += 1
                terminated = raw.endswith(b"\n")
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                try:
                    qid, pids, scores = self._parse_line(raw, terminated)
                except _BadRow as bad:
                    self._reject(line_number, bad, raw)
                    continue
                rows["query_id"].append(qid)
                rows["passage_ids"].append(pids)
                rows["scores"].append(scores)
                if len(rows["query_id"]) >= self.batch_rows:
                    yield pa.RecordBatch.from_pydict(rows, schema=self.schema)
                    rows = {name: [] for name in rows}
        if rows["query_id"]:
            yield pa.RecordBatch.from_pydict(rows, schema=self.schema)

    def _id(self, value, kind: ColumnKind, name: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _BadRow("bad-value", f"expected a string or integer {name}, got {value!r}")
        return self._check_id(str(value), kind, name)

    def _parse_line(self, raw: bytes, terminated: bool) -> tuple[str, list[str], list[float]]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadRow(
                "bad-encoding", f"expected UTF-8 text, got invalid byte {raw[e.start : e.start + 1]!r}"
            ) from None
        if not line.strip():
            raise _BadRow("empty-line", f"{self.expected}, got an empty line")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if not terminated:
                raise _BadRow(
                    "truncated-line",
                    f"truncated last line: {self.expected}, got incomplete JSON and no newline at end of file",
                ) from None
            raise _BadRow("bad-json", f"{self.expected}, got invalid JSON ({e.msg} at column {e.colno})") from None
        if isinstance(record, dict):
            missing = [k for k in ("query_id", "document_ids", "scores") if k not in record]
            if missing:
                raise _BadRow("bad-value", f"{self.expected}, missing keys {missing}")
            qid, pids, scores = record["query_id"], record["document_ids"], record["scores"]
            if not isinstance(pids, list) or not isinstance(scores, list) or len(pids) != len(scores):
                raise _BadRow("bad-value", f"{self.expected}: document_ids and scores must be lists of equal length")
        elif isinstance(record, list) and record:
            qid, pairs = record[0], record[1:]
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise _BadRow("bad-value", f"{self.expected}: every item after the query id must be [pid, score]")
            pids, scores = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            raise _BadRow("bad-value", f"{self.expected}, got a JSON {type(record).__name__}")
        if len(pids) < 2:
            raise _BadRow("bad-value", f"{self.expected}, got {len(pids)} passages")
        qid = self._id(qid, "query_id", "query id")
        pids = [self._id(p, "passage_id", "passage id") for p in pids]
        if len(set(pids)) != len(pids):
            raise _BadRow("duplicate-id", "expected distinct passage ids, got a passage listed twice")
        for score in scores:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise _BadRow("non-numeric-score", f"expected numeric scores, got {score!r}")
            if not math.isfinite(score) or abs(score) > _FLOAT32_MAX:
                raise _BadRow("non-finite-score", f"expected finite float32 scores, got {score!r}")
        return qid, pids, [float(s) for s in scores]


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
