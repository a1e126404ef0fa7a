"""The base of the teacher-score readers: [`ScoreReader`], the [`RejectedRows`] side file, and id checks.

A reader yields `pyarrow.RecordBatch`es in its `features`; a bad line raises [`DataFormatError`] or, given a
[`RejectedRows`], is recorded there and skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Container, Iterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features

from .errors import DataFormatError

__all__ = ["ColumnKind", "RejectedRows", "ScoreReader"]

_MAX_PRESENCE_TABLE = 1 << 27  # ids below this are looked up in a bool table (at most 128 MiB)
_FLOAT32_MAX = 3.4028234663852886e38

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
