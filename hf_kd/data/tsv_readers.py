"""Readers of the tab-separated teacher-score formats: `paper-ids`, `paper-text` and `triples`.

Blocks of lines are parsed and validated with pyarrow; a block that fails any check is re-read line by line
to find the exact line and reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ..files import skip_bom
from .reader_base import _FLOAT32_MAX, ColumnKind, ScoreReader, _all_non_blank, _BadRow
from .schemas import SCORED_ID_TRIPLES_FEATURES, SCORED_TRIPLES_FEATURES, TRIPLES_FEATURES

__all__ = ["DEFAULT_BLOCK_BYTES", "PaperIdsReader", "PaperTextReader", "TriplesReader"]

DEFAULT_BLOCK_BYTES = 1024 * 1024
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
